"""A real HTTP file server on 127.0.0.1 for download tests: Range requests, and faults scripted per file. Files
are served at their path under the root (`a/b/c.json` at /a/b/c.json), so a tree can mirror a real host's URL paths.

    with FileServer(root) as server:
        server.script("shard_00001.parquet", "drop", "truncate")  # next two requests of that file misbehave
        download_file(server.url("shard_00001.parquet"), dest)

Faults (each consumes one request of its file; later requests are served normally):
  drop          send the headers and half of the body, then close the connection
  truncate      send only the first half of the file, as if it were the whole file (valid HTTP, corrupt parquet)
  corrupt       send the file with a byte in its middle and its parquet footer length flipped (same length)
  stall         send the headers and half of the body, then go silent (the client must time out)
  ignore_range  answer 200 with the whole file even when a Range was asked for
  error503      answer 503 Service Unavailable
`server.always(name, fault)` applies a fault to every request of that file. `server.log` records
(file name, Range header or None, status) for each request.

Every response carries the file's ETag (a hash of its bytes on disk: rewrite the file to publish a new version) and
a Range request with a stale `If-Range` gets the whole file with 200, as HTTP says. `FileServer(root, etags=False)`
sends no ETag; `if_range=False` ignores If-Range (a server that resumes whatever version it has now).
`server.requests` records (file name, request headers) for each request.

As the Hugging Face Hub: `hub=True` adds the Hub's headers to every answer, `X-Linked-Etag` (the file's sha256, or
what `server.published[name]` says instead) and `X-Repo-Commit` (`server.commit`); `cdn=True` also answers a request
under datasets/ as the Hub does for an LFS file: a 302 carrying those headers, to the same file on another host
name (http://localhost:PORT/cdn/<name>), whose answer has none of them.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAULTS = ("drop", "stall", "truncate", "corrupt", "ignore_range", "error503")


class FileServer:
    def __init__(
        self, root: str | Path, *, etags: bool = True, if_range: bool = True, hub: bool = False, cdn: bool = False
    ):
        self.root = Path(root)
        self.etags, self.if_range, self.hub, self.cdn = etags, if_range, hub or cdn, cdn
        self.published: dict[str, str] = {}  # name -> the sha256 to publish instead of the true one
        self.commit = "c0ffee" * 6 + "c0de"  # a commit id's shape: 40 hex digits
        self.log: list[tuple[str, str | None, int]] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._always: dict[str, str] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()  # wakes stalled handlers on shutdown
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="test-http", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def script(self, name: str, *faults: str) -> None:
        assert all(f in FAULTS for f in faults), faults
        with self._lock:
            self._scripts[name].extend(faults)

    def always(self, name: str, fault: str) -> None:
        assert fault in FAULTS, fault
        self._always[name] = fault

    def requests_for(self, name: str) -> list[tuple[str, str | None, int]]:
        return [entry for entry in self.log if entry[0] == name]

    def _next_fault(self, name: str) -> str | None:
        with self._lock:
            if name in self._always:
                return self._always[name]
            queue = self._scripts.get(name)
            return queue.popleft() if queue else None

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _handler_for(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            name = self.path.split("?", 1)[0].lstrip("/")
            server.requests.append((name, dict(self.headers)))
            self._etag, self._hub_headers = None, {}
            range_header = self.headers.get("Range")
            on_cdn = server.cdn and name.startswith("cdn/")
            path = (server.root / name.removeprefix("cdn/" if on_cdn else "")).resolve()
            if not path.is_file() or server.root.resolve() not in path.parents:  # nested paths, never outside root
                return self._reply(name, range_header, 404, b"not found")
            data = path.read_bytes()
            etag = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
            self._etag = etag if server.etags else None
            if server.hub and not on_cdn:
                sha256 = server.published.get(name, hashlib.sha256(data).hexdigest())
                self._hub_headers = {"X-Linked-Etag": f'"{sha256}"', "X-Repo-Commit": server.commit}
            if server.cdn and not on_cdn and name.startswith("datasets/"):
                port = server._httpd.server_address[1]
                location = {"Location": f"http://localhost:{port}/cdn/{name}"}
                return self._reply(name, range_header, 302, b"", location)
            fault = server._next_fault(name)
            if fault == "error503":
                return self._reply(name, range_header, 503, b"try again")
            if fault == "truncate":
                data = data[: len(data) // 2]
            if fault == "corrupt":
                data = bytearray(data)
                for i in (len(data) // 2, len(data) - 5):  # len-5: high byte of the footer length
                    data[i] ^= 0xFF
                data = bytes(data)
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
            stale = server.if_range and self.headers.get("If-Range") not in (None, self._etag)
            if match and fault != "ignore_range" and not stale:
                start = int(match.group(1))
                if start >= len(data):
                    return self._reply(name, range_header, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status = 206 if start else 200
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
            body = data[start:]
            if fault in ("drop", "stall"):
                self._reply(name, range_header, status, body, headers, send=len(body) // 2)
                if fault == "stall":
                    server._closing.wait(timeout=30)
                self.close_connection = True
                return
            self._reply(name, range_header, status, body, headers)

        do_HEAD = do_GET

        def _reply(self, name, range_header, status, body, headers=None, send=None) -> None:
            server.log.append((name, range_header, status))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            if self._etag:
                self.send_header("ETag", self._etag)
            for key, value in self._hub_headers.items():
                self.send_header(key, value)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":  # the headers a GET would have, as huggingface_hub asks for first
                return
            self.wfile.write(body if send is None else body[:send])
            self.wfile.flush()

    return Handler
