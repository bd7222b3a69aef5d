"""Addresses of files on the Hugging Face Hub: `{endpoint}/datasets/{repo}/resolve/{revision}/{file}`.

The endpoint is $HF_ENDPOINT when set (a mirror, or a local server in tests), else https://huggingface.co — read
each time an address is made, as huggingface_hub does, so setting it needs no change to any experiment.
"""

from __future__ import annotations

import os

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def dataset_url(repo: str, file: str = "", revision: str = "main") -> str:
    """The download address of `file` in dataset `repo` (without `file`: the directory its files are under)."""
    base = f"{endpoint()}/datasets/{repo}/resolve/{revision}"
    return f"{base}/{file}" if file else base
