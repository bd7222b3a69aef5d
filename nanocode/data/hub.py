"""The Hugging Face Hub as a plain HTTP host: addresses, credentials, and what its answers say about a file.

A file is at `{endpoint}/datasets/{repo}/resolve/{revision}/{file}`. The endpoint is $HF_ENDPOINT when set (a
mirror, or a local server in tests), else https://huggingface.co; the token is $HF_TOKEN (or the legacy
$HUGGING_FACE_HUB_TOKEN). Both are read each time they are needed, as huggingface_hub does, so setting them needs
no change to any experiment. The token goes only to addresses under the endpoint: never to another mirror, and
never along a redirect (the Hub sends file bytes from a CDN on another host, by a signed address).

For a file stored in LFS the Hub's answer carries `X-Linked-Etag` (the file's sha256) and `X-Repo-Commit` (the
commit the revision resolved to); huggingface_hub's `get_hf_file_metadata` reads the same headers. The revision
and those commits are recorded beside the downloaded files (`revision.json`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from nanocode.core.errors import DataError
from nanocode.core.io import write_json

DEFAULT_ENDPOINT = "https://huggingface.co"
# A branch or tag name follows the dataset until pinned: a flagship gin file binds a commit id here when known.
DEFAULT_REVISION = "main"
_SHA256 = re.compile(r"[0-9a-f]{64}")
REVISION_RECORD = "revision.json"  # beside downloaded files: the repo, revision and commits they came from


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or DEFAULT_ENDPOINT


def token() -> str | None:
    return (os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or "").strip() or None


def dataset_url(repo: str, file: str = "", revision: str = DEFAULT_REVISION) -> str:
    """The download address of `file` in dataset `repo` at `revision` (without `file`: the directory of its files)."""
    base = f"{endpoint()}/datasets/{repo}/resolve/{revision}"
    return f"{base}/{file}" if file else base


def auth_headers(url: str) -> dict[str, str]:
    """`Authorization` for a request to `url` when it is on the Hub (or $HF_ENDPOINT) and a token is set."""
    secret = token()
    if secret is None or not url.startswith(endpoint() + "/"):
        return {}
    return {"Authorization": f"Bearer {secret}"}


def published_sha256(headers: Mapping[str, str]) -> str | None:
    """The sha256 the Hub publishes for an LFS file (`X-Linked-Etag`); None for a file kept in git, whose ETag is a
    git object id, or for any other host."""
    value = (headers.get("X-Linked-Etag") or "").removeprefix("W/").strip('"').lower()
    return value if _SHA256.fullmatch(value) else None


def repo_commit(headers: Mapping[str, str]) -> str | None:
    """The commit the requested revision resolved to (`X-Repo-Commit`), when the host says."""
    return headers.get("X-Repo-Commit") or None


def check_revision(directory: Path, repo: str, revision: str) -> None:
    """Refuse to add files of `revision` to a directory holding files of another revision of `repo` (a run would
    silently train on two versions of the dataset)."""
    record = read_revision(directory)
    if record and record.get("repo") == repo and record.get("revision") not in (None, revision):
        raise DataError(
            f"{directory}: its files came from {repo} at revision {record['revision']!r}, this run asks for "
            f"{revision!r} (delete them, or give the source another directory)"
        )


def record_revision(directory: Path, repo: str, revision: str, commits: Iterable[str | None]) -> None:
    """Write which revision of `repo` the files in `directory` came from, and the commit(s) the Hub resolved it to
    (more than one: the branch moved while they were downloaded)."""
    before = read_revision(directory)
    same = before.get("repo") == repo and before.get("revision") == revision
    known = set(before.get("commits") or []) if same else set()
    known.update(c for c in commits if c)
    write_json(directory / REVISION_RECORD, {"repo": repo, "revision": revision, "commits": sorted(known)})


def read_revision(directory: Path) -> dict:
    try:
        record = json.loads((directory / REVISION_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}
