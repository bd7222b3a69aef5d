"""Robust HTTP downloads on the standard library: resume, retry, validate, then rename into place.

A download writes `<dest>.partial`, and beside it `<dest>.partial.json`: the ETag and size of the remote version
those bytes came from. A dropped connection keeps the partial file and the next attempt asks for the rest with an
HTTP Range request and `If-Range: <etag>`; when the remote file has changed since (another ETag or size, whether the
server says so with a full 200 or we see it in its 206), the attempt starts over from byte 0, so a file never mixes
two versions. A partial file without that record (whose version is unknown) is not resumed. A file larger than
`max_bytes` (announced, or as received) is refused at once. Only a file that has the announced length, the expected
sha256 and passes `validate` is renamed to `dest`, so a later run can trust any file it finds at a final path; a file
that fails those checks is deleted, never kept.

On the Hugging Face Hub (nanocode.data.hub) the request carries $HF_TOKEN, and the sha256 the Hub publishes for an
LFS file (on its answer or on the redirect to its CDN) is checked as well: the digest is computed while the bytes
arrive, and a whole download that does not match is refused at once. A resumed one is first retried from byte 0.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanocode.core.errors import DataError
from nanocode.core.io import write_json
from nanocode.core.progress import Progress
from nanocode.data import hub

USER_AGENT = "nanocode-downloader/0.1 (+urllib)"
CHUNK_BYTES = 1 << 20
# No single file nanocode downloads comes near this (a pretraining shard is ~100 MB, a conversation set < 1 GB): a
# larger one is a wrong URL or a hostile server filling the disk.
MAX_BYTES = 8 << 30
# HTTP statuses worth retrying: timeouts, rate limits and server-side failures. Any other 4xx is final.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
# What the Hub says about a file; on an LFS file it says so on the redirect to the CDN, not on the CDN's answer.
HUB_HEADERS = ("X-Linked-Etag", "X-Repo-Commit")


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix. `keep_partial` says whether resuming is safe."""

    def __init__(self, reason: str, keep_partial: bool = True):
        super().__init__(reason)
        self.keep_partial = keep_partial


class _Final(Exception):
    """Another attempt cannot help (a file over the size cap, bytes that contradict their sha256): nothing is kept."""


@dataclass(frozen=True)
class DownloadJob:
    url: str
    dest: Path
    sha256: str | None = None
    meta: dict = field(default_factory=dict, compare=False)  # filled by the download: see `download_file`


@dataclass(frozen=True)
class _Fetched:
    digest: str  # sha256 of the whole partial file, computed as its bytes arrived
    resumed: bool  # whether some of those bytes came from an earlier attempt
    published: str | None  # the sha256 the Hub publishes for the file
    commit: str | None  # the commit the Hub resolved the revision to


class _KeepHubHeaders(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping the Hub's headers of each redirect in `request.hub_headers` (one
    dict shared along the chain). Headers added with `add_unredirected_header` (the token) are not forwarded."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        kept = getattr(req, "hub_headers", {})
        kept.update({k: headers[k] for k in HUB_HEADERS if headers.get(k)})
        if new is not None:
            new.hub_headers = kept
        return new


_OPENER = urllib.request.build_opener(_KeepHubHeaders())


def one_line(exc: BaseException) -> str:
    """An exception as one short line (pyarrow and http errors can span lines)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def origin_path(partial: Path) -> Path:
    """The record of which remote version (ETag, size) a partial file's bytes came from."""
    return partial.with_name(partial.name + ".json")


def _read_origin(partial: Path) -> dict | None:
    try:
        origin = json.loads(origin_path(partial).read_text())
    except (OSError, ValueError):
        return None
    return origin if isinstance(origin, dict) else None


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    origin_path(partial).unlink(missing_ok=True)


def download_file(
    url: str,
    dest: str | Path,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    timeout: float = 60.0,
    validate: Callable[[Path], Any] | None = None,
    sha256: str | None = None,
    cancel: threading.Event | None = None,
    max_bytes: int | None = MAX_BYTES,
    meta: dict | None = None,
) -> Path:
    """Download `url` to `dest` (skipped when `dest` already exists).

    `meta`, when given, receives what a fresh download learnt: `sha256` (of the file), `published_sha256` and
    `commit` (what the Hub said, None elsewhere).

    Up to `retries` retries after the first attempt, sleeping `backoff * 2**k` seconds (at most `max_backoff`)
    between them. `timeout` bounds every socket operation, so a stalled connection counts as a failed attempt.
    Raises a one-line DataError when every attempt failed, or at once for a file over `max_bytes` (None: no cap);
    then nothing is left at `dest` or `dest.partial` except a partial file that is still a valid prefix of the
    remote version it records (the next run resumes it). A sha256 mismatch (against `sha256` or the Hub's) on a
    whole download is also final.
    """
    dest = Path(dest)
    if dest.exists():  # trusted: only files that passed every check are ever renamed to a final path
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)
    reason = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(max_backoff, backoff * 2 ** (attempt - 1)))
        try:
            fetched = _fetch(url, partial, timeout=timeout, cancel=cancel, max_bytes=max_bytes)
            _check(partial, fetched, sha256, validate)
            os.replace(partial, dest)
            origin_path(partial).unlink(missing_ok=True)
            if meta is not None:
                meta.update(sha256=fetched.digest, published_sha256=fetched.published, commit=fetched.commit)
            return dest
        except _Retry as e:
            reason = str(e)
            if not e.keep_partial:
                _discard(partial)
        except _Final as e:
            _discard(partial)
            raise DataError(f"{url}: {e}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            # connection refused/reset/dropped, timeouts: the bytes we already have are good, resume from them
            reason = f"{type(e).__name__}: {one_line(e)}"
    raise DataError(f"{url}: download failed after {retries + 1} attempts ({reason})")


def _fetch(
    url: str, partial: Path, *, timeout: float, cancel: threading.Event | None, max_bytes: int | None
) -> _Fetched:
    """One attempt: append the missing bytes to `partial`, checking the length the server announced and that the
    remote file is still the version the partial bytes came from."""
    origin = _read_origin(partial) if partial.exists() else None
    if partial.exists() and origin is None:  # bytes of an unknown version: resuming could mix two files
        _discard(partial)
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    for key, value in hub.auth_headers(url).items():
        request.add_unredirected_header(key, value)  # never sent on to the CDN a redirect leads to
    request.hub_headers = {}
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        if _strong(origin.get("etag")):  # the server sends the whole (new) file if its version changed
            request.add_header("If-Range", origin["etag"])
    try:
        response = _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and offset:  # our partial file is as long as the file, or longer: check it as is
                total = _total_from_content_range(e.headers.get("Content-Range"))
                said = _hub_said(request, e.headers)
                if total == offset and not _changed(origin, e.headers.get("ETag"), total, said):
                    return _Fetched(_sha256_of(partial).hexdigest(), True, *said)
                raise _Retry(f"HTTP 416 for a {offset}-byte partial file", keep_partial=False) from None
            if e.code in RETRYABLE_STATUS:
                raise _Retry(f"HTTP {e.code} {e.reason}") from None
            raise DataError(f"{url}: HTTP {e.code} {e.reason}{_access_hint(url, e.code)}") from None
    with response:
        etag = response.headers.get("ETag")
        said = _hub_said(request, response.headers)
        if response.status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                raise _Retry(f"server resumed at byte {start}, not {offset}", keep_partial=False)
            if _changed(origin, etag, total, said):
                raise _Retry(
                    f"the remote file changed since the partial download began (ETag {origin.get('etag')} -> {etag}, "
                    f"size {origin.get('size')} -> {total}, sha256 {origin.get('sha256')} -> {said[0]}); starting over",
                    keep_partial=False,
                )
            mode, digest = "ab", _sha256_of(partial)
        else:  # 200: the server ignored Range, the version changed, or there was nothing to resume; start over
            offset, mode, digest = 0, "wb", hashlib.sha256()
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise _Final(f"the remote file has {total:,} bytes, over the {max_bytes:,}-byte download cap")
        if mode == "wb":  # before any byte: the partial file always has its origin beside it
            record = {"url": url, "etag": etag, "size": total, "sha256": said[0], "commit": said[1]}
            write_json(origin_path(partial), record)
        received = offset
        with open(partial, mode) as f:
            # read1: whatever has arrived, so a timeout mid-file loses no received bytes (read(n) would drop them)
            while chunk := response.read1(CHUNK_BYTES):
                if cancel is not None and cancel.is_set():
                    raise DataError(f"{url}: download cancelled ({received} bytes kept in {partial.name})")
                if max_bytes is not None and received + len(chunk) > max_bytes:
                    raise _Final(f"more than the {max_bytes:,}-byte download cap received")
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
    if total is not None and received < total:
        # http.client returns a short body without raising when the peer closes early
        raise _Retry(f"connection closed after {received} of {total} bytes")
    if total is not None and received > total:
        raise _Retry(f"received {received} bytes, more than the {total} announced", keep_partial=False)
    return _Fetched(digest.hexdigest(), mode == "ab", *said)


def _access_hint(url: str, status: int) -> str:
    """What to do about a refusal by the Hub (a gated or private dataset)."""
    if status not in (401, 403) or not url.startswith(hub.endpoint() + "/"):
        return ""
    if hub.token() is None:
        return " (a gated or private dataset: set $HF_TOKEN to a token with access to it)"
    return " (the token in $HF_TOKEN has no access to this dataset: accept its terms on the Hub, or use another)"


def _hub_said(request: urllib.request.Request, headers) -> tuple[str | None, str | None]:
    """(published sha256, commit) from the Hub's redirect, or else from the final answer."""
    said = {k: headers[k] for k in HUB_HEADERS if headers.get(k)}
    said.update(request.hub_headers)
    return hub.published_sha256(said), hub.repo_commit(said)


def _sha256_of(path: Path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            h.update(block)
    return h


def _strong(etag: str | None) -> bool:
    """A strong ETag (If-Range must not be sent with a weak one)."""
    return bool(etag) and not etag.startswith("W/")


def _changed(origin: dict | None, etag: str | None, total: int | None, said: tuple = (None, None)) -> bool:
    """Whether the remote file is no longer the version recorded for the partial bytes (the Hub's sha256, ETag,
    then size)."""
    if origin is None:
        return False
    if origin.get("sha256") and said[0] and origin["sha256"] != said[0]:
        return True
    if origin.get("etag") and etag and origin["etag"] != etag:
        return True
    return origin.get("size") is not None and total is not None and origin["size"] != total


def _check(partial: Path, fetched: _Fetched, sha256: str | None, validate: Callable[[Path], Any] | None) -> None:
    for want, whose in ((sha256, "expected"), (fetched.published, "published by the Hub")):
        if want is not None and fetched.digest != want.lower():
            reason = f"sha256 mismatch (got {fetched.digest[:16]}..., {whose} {want[:16]}...)"
            if fetched.resumed:  # the earlier bytes may be the culprit: one more try, from byte 0
                raise _Retry(reason, keep_partial=False)
            raise _Final(reason)
    if validate is not None:
        try:
            validate(partial)
        except Exception as e:
            raise _Retry(f"validation failed: {one_line(e)}", keep_partial=False) from e


def file_sha256(path: Path) -> str:
    return _sha256_of(path).hexdigest()


def _parse_content_range(header: str | None) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if not match:
        raise _Retry(f"206 response with unusable Content-Range {header!r}", keep_partial=False)
    total = match.group(3)
    return int(match.group(1)), None if total == "*" else int(total)


def _total_from_content_range(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", (header or "").strip())
    return int(match.group(1)) if match else None


def download_many(
    jobs: Sequence[DownloadJob], *, workers: int = 4, progress: bool = True, desc: str = "download", **kwargs: Any
) -> list[Path]:
    """Download every job in parallel threads (keyword arguments go to `download_file`), with a progress bar.

    Returns the destination paths in job order. When some jobs fail, the others still finish, and one DataError
    names the failures in a single line.
    """
    jobs = list(jobs)
    cancel = threading.Event()
    failures: dict[int, str] = {}
    done_bytes = 0
    start = time.monotonic()
    with (
        Progress(len(jobs), desc, unit="file", enabled=progress) as bar,
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
    ):
        futures = {
            pool.submit(download_file, job.url, job.dest, sha256=job.sha256, cancel=cancel, meta=job.meta, **kwargs): i
            for i, job in enumerate(jobs)
        }
        try:
            for future in as_completed(futures):
                i = futures[future]
                try:
                    done_bytes += future.result().stat().st_size
                except Exception as e:
                    failures[i] = one_line(e)
                rate = done_bytes / max(time.monotonic() - start, 1e-9) / 1e6
                bar.update(1, postfix=f"{done_bytes / 1e6:,.1f} MB, {rate:.1f} MB/s, {len(failures)} failed")
        except BaseException:  # Ctrl-C: stop the workers at their next chunk; partial files stay resumable
            cancel.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    if failures:
        shown = "; ".join(f"{jobs[i].dest.name}: {failures[i]}" for i in sorted(failures)[:3])
        more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
        raise DataError(f"{len(failures)} of {len(jobs)} downloads failed: {shown}{more}")
    return [job.dest for job in jobs]
