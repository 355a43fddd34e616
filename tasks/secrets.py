"""Credentials for flows: read at run time, passed to the library, never logged or saved."""

from __future__ import annotations

import os


def hf_token(block_name: str = "hf-token") -> str | None:
    """The Hugging Face token from HF_TOKEN, or a Prefect Secret block, or None (offline)."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        from prefect.blocks.system import Secret

        return Secret.load(block_name).get()
    except Exception:  # noqa: BLE001  (no server, no block: run without a token)
        return None
