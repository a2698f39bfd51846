"""What the local provider servers share (``openai_server.py``, ``anthropic_server.py``).

A real HTTP/1.1 server on 127.0.0.1 (threads, keep-alive, chunked SSE), so
that a provider's real client talks to it through its real transport. Every
request is kept (path, lower-cased headers, decoded body) for the tests to
assert on. A subclass of :class:`ProviderHandler` answers; two stream models
behave alike on every provider:

=======================  ================================================
``slow``                 ``SLOW_DELAY`` seconds between events
``drop``                 the stream cut off (connection closed) after
                         ``drop_after`` events
``refuse-key-<style>``   401, its message quoting the API key the request
                         carried, in one of the ``KEY_QUOTES`` styles (as
                         a provider or a gateway in front of it may)
``stream-error-key-<s>`` a stream whose error event quotes the API key, in
                         style ``<s>`` (each server's ``stream-error``, in
                         other words)
=======================  ================================================

Run alone (``python -m tests.<provider>_server``, through :func:`serve`),
a server prints its base URL and serves until its standard input ends: the
benchmarks use it that way, so that the server's CPU is not counted as the
client's.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar

SLOW_DELAY = 0.05
#: How a refusal may quote the API key it refused (``refuse-key-<style>`` models).
KEY_QUOTES = {
    "openai": "Incorrect API key provided: {key}. You can find your API key at "
    "https://platform.openai.com/account/api-keys.",
    "anthropic": "invalid x-api-key: {key}",
    "gateway": "upstream refused the request; it carried Authorization: Bearer {key}",
    "plain": "the key {key} was revoked on 2024-01-01",
}


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


Self = TypeVar("Self", bound="ProviderServer")


class ProviderServer:
    """``with Server() as server: Client(base_url=server.url, ...)``."""

    #: The handler class that answers; the path the client's base URL ends with.
    handler: type[ProviderHandler]
    base_path = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.chunk_delay = 0.0

    def start(self: Self) -> Self:
        httpd = _Server(("127.0.0.1", 0), self.handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        httpd.owner = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self: Self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.base_path}"

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def _received(self, request: Received) -> None:
        with self._lock:
            self._requests.append(request)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many concurrent calls connect at once (socketserver: 5)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that resets an idle keep-alive connection is no news


class ProviderHandler(BaseHTTPRequestHandler):
    """Reads and keeps each POST, then :meth:`answer` answers it."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes
    #: The response header that carries the request's ID.
    request_id_header = "x-request-id"
    #: How many events a ``drop`` stream sends before it is cut off.
    drop_after = 2

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet

    @property
    def owner(self) -> ProviderServer:
        return self.server.owner  # type: ignore[attr-defined, no-any-return]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.owner._received(Received("POST", path, headers, body))
        try:
            self.answer(path, body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-stream

    def answer(self, path: str, body: Any) -> None:
        raise NotImplementedError

    def key_refusal(self, model: str) -> str | None:
        """For a ``refuse-key-<style>`` model, the refusal quoting the request's API key."""
        return self.key_quote(model, "refuse-key-")

    def stream_error(self, model: str, otherwise: str) -> str | None:
        """What the error event of a ``stream-error`` stream says (``otherwise``), or of a
        ``stream-error-key-<style>`` one (its API key quoted); None for another model."""
        if model == "stream-error":
            return otherwise
        return self.key_quote(model, "stream-error-key-")

    def key_quote(self, model: str, prefix: str) -> str | None:
        """For a ``<prefix><style>`` model, a text quoting the request's API key in that style."""
        if not model.startswith(prefix):
            return None
        return KEY_QUOTES[model.removeprefix(prefix)].format(key=self.api_key())

    def api_key(self) -> str:
        """The API key the request carried."""
        authorization = self.headers.get("Authorization") or ""
        return self.headers.get("X-Api-Key") or authorization.removeprefix("Bearer ")

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header(self.request_id_header, f"req_{time.monotonic_ns()}")
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: Any, model: str) -> None:
        """Send ``events`` (an iterable of (event name or None, payload)) as chunked SSE."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header(self.request_id_header, f"req_{time.monotonic_ns()}")
        self.end_headers()
        delay = SLOW_DELAY if model == "slow" else self.owner.chunk_delay
        for count, (name, payload) in enumerate(events):
            if model == "drop" and count == self.drop_after:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(2)  # cut off: no terminating chunk
                return
            text = payload if isinstance(payload, str) else json.dumps(payload)
            frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            self._chunk(frame.encode())
            if delay:
                time.sleep(delay)  # the fault it plays: a model that streams slowly
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def serve(server: ProviderServer) -> None:
    """Print the server's URL and serve until standard input ends (for the benchmarks)."""
    with server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the parent closes it (or exits)
