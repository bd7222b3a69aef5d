"""The server's HTTP/1.1 front: asyncio connections parsed by h11, handlers run on a bounded pool of threads.

Why not http.server: ThreadingHTTPServer spends a thread per connection for as long as the connection lives, so a
thousand idle or trickling (slowloris) clients hold a thousand threads. Why not uvicorn: it has no deadline on
receiving a request (its keep-alive timer restarts on every byte), so a slowloris client holds its connection for
ever. Here a connection is a coroutine, parsing is h11's (python-hyper's sans-IO HTTP/1.1, what httpx and uvicorn
build on), and threads are spent only on handlers: `pool_size` at most, whatever the number of connections.

Limits, each answered in JSON and then the connection closed:
    max_connections     open connections; one more is answered 503 at once
    idle_timeout        seconds a connection may wait for the first byte of its next request (then closed, silently)
    request_timeout     seconds from a request's first byte until its whole body is in (408): slowloris ends here
    max_body_bytes      request body size (413; a body up to 16x the cap is read away first, so the client sees it)
    write_timeout       seconds a client may take to accept each part of a response (then it counts as gone)

A handler gets an `HttpRequest` whose `disconnected` event is set as soon as the client hangs up (EOF while the
handler works or a failed write while it streams), and returns an `HttpResponse` whose body is bytes, or an iterator
of byte chunks that is streamed (and closed when the client leaves). A client hang-up is never an error here: no
traceback is printed for it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus

import h11

from nanocode.agents.api_errors import RequestError, bad


@dataclass
class HttpRequest:
    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case names
    body: bytes
    disconnected: threading.Event = field(default_factory=threading.Event)


@dataclass
class HttpResponse:
    status: int
    body: bytes | Iterator[bytes]  # an iterator is streamed, chunk by chunk
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @staticmethod
    def json(status: int, payload, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
        return HttpResponse(status, json.dumps(payload).encode(), headers=headers or [])

    @staticmethod
    def error(err: RequestError) -> HttpResponse:
        headers = [("Retry-After", "1")] if err.status == 503 else []
        return HttpResponse.json(err.status, err.body(), headers)


Handler = Callable[[HttpRequest], HttpResponse]


def read_json(http: HttpRequest):
    try:
        return json.loads(http.body)
    except ValueError as e:
        raise bad(f"the request body is not valid JSON ({e})") from None


def sse(payload: dict, event: str | None = None) -> bytes:
    """One server-sent event (`event:` names it, as OpenAI's Responses stream does)."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


_READ = 65536


class _Closed(Exception):
    """The connection is over (the client left, timed out, or must not be read any more)."""


class HttpFront:
    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        pool_size: int = 32,
        max_connections: int = 1024,
        idle_timeout: float = 15.0,
        request_timeout: float = 10.0,
        write_timeout: float = 30.0,
        max_body_bytes: int = 4 << 20,
        verbose: bool = False,
    ):
        self.handler = handler
        self.pool = ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="nanocode-handler")
        self.max_connections, self.idle_timeout, self.request_timeout = max_connections, idle_timeout, request_timeout
        self.write_timeout, self.max_body_bytes, self.verbose = write_timeout, max_body_bytes, verbose
        self.open_connections = 0
        self.socket = socket.create_server((host, port), backlog=1024)  # an OSError here: cannot listen
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Serve on a background thread."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="nanocode-http", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)

    def serve_forever(self) -> None:
        """Serve on this (the main) thread until Ctrl-C or SIGTERM. The signals stop the loop between callbacks: a
        KeyboardInterrupt raised inside one can drop a wake-up, and the shutdown below then waits forever."""
        self._run(threading.Event(), stop_on=(signal.SIGINT, signal.SIGTERM))

    def _run(self, ready: threading.Event, stop_on: tuple[signal.Signals, ...] = ()) -> None:
        asyncio.set_event_loop(self.loop)
        self._server = self.loop.run_until_complete(asyncio.start_server(self._connection, sock=self.socket))
        for sig in stop_on:
            self.loop.add_signal_handler(sig, self.loop.stop)
        ready.set()
        try:
            self.loop.run_forever()
        finally:  # end every connection (their handlers' threads finish on their own), then the loop
            self._server.close()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            for sig in stop_on:
                self.loop.remove_signal_handler(sig)
            self.loop.close()

    def close(self) -> None:
        if self._thread is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        self._thread = None
        self.socket.close()
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _loop_error(self, loop, context) -> None:
        if self.verbose:
            print(f"nanocode serve: {context.get('message')}: {context.get('exception')!r}", file=sys.stderr)

    # -- one connection ---------------------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.max_connections:
            err = RequestError(503, "server busy: too many open connections", "server_overloaded")
            body = json.dumps(err.body()).encode()
            headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            writer.write(_raw_response(503, [*headers, ("Connection", "close"), ("Retry-After", "1")], body))
            await self._finish(writer)
            return
        self.open_connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader, writer)
                await self._respond(conn, reader, writer, request)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (_Closed, ConnectionError, OSError, h11.LocalProtocolError):
            pass
        finally:
            self.open_connections -= 1
            await self._finish(writer)

    async def _finish(self, writer: asyncio.StreamWriter) -> None:
        try:
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (TimeoutError, ConnectionError, OSError):
            pass

    async def _receive(self, conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> None:
        data = await asyncio.wait_for(reader.read(_READ), max(timeout, 0.0))  # TimeoutError when it runs out
        if not data:
            raise _Closed
        conn.receive_data(data)

    async def _read_request(self, conn: h11.Connection, reader, writer) -> HttpRequest:
        """The next whole request, or _Closed (client gone, idle too long, request refused)."""
        deadline = None  # set by the request's first byte
        request, body, discard = None, bytearray(), 0
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if deadline is None and not conn.trailing_data[0]:
                        try:  # idle: waiting for a request to begin
                            await self._receive(conn, reader, self.idle_timeout)
                        except TimeoutError:
                            raise _Closed from None
                        deadline = time.monotonic() + self.request_timeout
                    else:
                        deadline = deadline or time.monotonic() + self.request_timeout
                        await self._receive(conn, reader, deadline - time.monotonic())
                elif isinstance(event, h11.Request):
                    deadline = deadline or time.monotonic() + self.request_timeout
                    request = event
                    length = _content_length(event)
                    if length is not None and length > self.max_body_bytes:
                        if length > 16 * self.max_body_bytes:
                            raise self._too_large(length)
                        discard = length
                    if conn.client_is_waiting_for_100_continue and not discard:
                        writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                elif isinstance(event, h11.Data):
                    if discard:
                        continue
                    body += event.data
                    if len(body) > self.max_body_bytes:
                        raise self._too_large(len(body))
                elif isinstance(event, h11.EndOfMessage):
                    if discard:
                        raise self._too_large(discard)
                    break
                else:  # ConnectionClosed, PAUSED
                    raise _Closed
        except TimeoutError:
            await self._refuse(
                conn, writer, RequestError(408, f"the request did not arrive within {self.request_timeout:g} s")
            )
            raise _Closed from None
        except RequestError as err:
            await self._refuse(conn, writer, err)
            raise _Closed from None
        except h11.RemoteProtocolError as e:
            await self._refuse(conn, writer, RequestError(400, f"malformed HTTP request ({e})"))
            raise _Closed from None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers}
        path = request.target.decode("latin-1").split("?")[0]
        return HttpRequest(request.method.decode("latin-1"), path, headers, bytes(body))

    def _too_large(self, size: int) -> RequestError:
        return RequestError(
            413, f"request body of {size} bytes exceeds {self.max_body_bytes}", code="request_too_large"
        )

    async def _refuse(self, conn: h11.Connection, writer, err: RequestError) -> None:
        """Answer a request that cannot be read (through h11 when its state allows, else as raw bytes: a request
        whose head never completed) and give up on the connection."""
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # an answer is already under way
        body = json.dumps(err.body()).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]
        try:
            data = conn.send(h11.Response(status_code=err.status, headers=headers))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            data = _raw_response(err.status, headers, body)
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except (TimeoutError, ConnectionError, OSError):
            pass

    # -- one response -----------------------------------------------------------------------------------------------
    async def _respond(self, conn: h11.Connection, reader, writer, request: HttpRequest) -> None:
        watcher = asyncio.ensure_future(self._watch(conn, reader, request))
        try:
            response = await self.loop.run_in_executor(self.pool, self._call, request)
            headers = [("Content-Type", response.content_type), *response.headers]
            streamed = not isinstance(response.body, bytes | bytearray)
            if streamed:
                headers.append(("Cache-Control", "no-cache"))
            else:
                headers.append(("Content-Length", str(len(response.body))))
            await self._write(writer, conn.send(h11.Response(status_code=response.status, headers=headers)), request)
            if request.method == "HEAD":
                pass
            elif streamed:
                await self._stream(conn, writer, request, response.body)
            else:
                await self._write(writer, conn.send(h11.Data(data=response.body)), request)
            await self._write(writer, conn.send(h11.EndOfMessage()), request)
        finally:
            watcher.cancel()

    async def _stream(self, conn: h11.Connection, writer, request: HttpRequest, chunks: Iterator[bytes]) -> None:
        try:
            while True:
                try:
                    chunk = await self.loop.run_in_executor(self.pool, next, chunks, None)
                except Exception as e:  # a bug in a stream: one line, and the stream ends where it is
                    print(f"nanocode serve: {request.path} stream failed: {type(e).__name__}: {e}", file=sys.stderr)
                    return
                if chunk is None:
                    return
                await self._write(writer, conn.send(h11.Data(data=chunk)), request)
        finally:
            if request.disconnected.is_set():
                await self.loop.run_in_executor(self.pool, getattr(chunks, "close", lambda: None))

    async def _write(self, writer, data: bytes | None, request: HttpRequest) -> None:
        if request.disconnected.is_set():
            raise _Closed
        try:
            if data:
                writer.write(data)
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except (TimeoutError, ConnectionError, OSError):
            request.disconnected.set()
            raise _Closed from None

    async def _watch(self, conn: h11.Connection, reader, request: HttpRequest) -> None:
        """While the handler works: the client's EOF means it left. Bytes it sends meanwhile (a pipelined request)
        are kept for the next cycle, and watching stops there."""
        try:
            data = await reader.read(_READ)
        except (ConnectionError, OSError):
            data = b""
        if data:
            conn.receive_data(data)
        else:
            request.disconnected.set()

    def _call(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.handler(request)
        except Exception as e:  # a bug in a handler: one line, a 500, and the server carries on
            print(f"nanocode serve: {request.method} {request.path} failed: {type(e).__name__}: {e}", file=sys.stderr)
            return HttpResponse.error(RequestError(500, f"internal error: {type(e).__name__}", "server_error"))


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return None


def _raw_response(status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """A whole response, for when no h11 cycle can carry it (no request head was read)."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1") + body
