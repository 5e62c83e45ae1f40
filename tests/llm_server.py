"""A real HTTP server on loopback that speaks the OpenAI chat-completions protocol.

It answers with a schema-valid profile built from the prompt, and can be told to answer
slowly, with HTTP 500s, or with malformed JSON, for every request or for some of them.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatServer:
    def __init__(self) -> None:
        self.mode = "ok"  # ok | slow | error500 | malformed_content | malformed_body
        self.fail_first = 0  # with a failing mode: only the first N requests fail
        self.fail_if_prompt_contains: str | None = None  # fail only matching prompts
        self.delay_s = 0.0
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    n = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server.answer(self, body, n)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _failing(self, body: dict, n: int) -> bool:
        if self.mode == "ok":
            return False
        if self.fail_if_prompt_contains is not None:
            prompt = json.dumps(body["messages"])
            return self.fail_if_prompt_contains in prompt
        return self.fail_first == 0 or n <= self.fail_first

    def answer(self, handler: BaseHTTPRequestHandler, body: dict, n: int) -> None:
        time.sleep(self.delay_s)
        failing = self._failing(body, n)
        if failing and self.mode == "slow":
            time.sleep(5.0)
        if failing and self.mode == "error500":
            return self._send(handler, 500, b'{"error": {"message": "overloaded"}}')
        if failing and self.mode == "malformed_body":
            return self._send(handler, 200, b"<html>not json")
        content = json.dumps(
            {
                "identity": "shopper",
                "interests": [self._first_category(body)],
                "consumption_style": "balanced",
            }
        )
        if failing and self.mode == "malformed_content":
            content = content[: len(content) // 2]  # cut mid-object: invalid JSON
        payload = {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
        self._send(handler, 200, json.dumps(payload).encode())

    @staticmethod
    def _first_category(body: dict) -> str:
        user = body["messages"][-1]["content"]
        for line in user.splitlines():
            if line.startswith("- ") and ":" in line:
                return line[2:].split(":")[0][:40]
        return "browsing"

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
