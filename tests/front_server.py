"""A server in front of the local collector that misbehaves as a test tells it, request by
request: what a load balancer with one bad backend, a proxy that loses answers, or a
server with a framing bug does to a client.

``Front(collector, act)`` reads the requests of each connection in order (pipelined
ones too) and asks ``act(n, head, body)`` what to do with each (``n`` counts the
requests read, from 0, across connections). The answer is an ``Act``:

- ``Act()``: forward the request to the collector (on a kept-alive connection of
  this client connection's own) and write its answer back, as a proxy would;
- ``Act(answer=raw)``: write ``raw`` instead, without forwarding;
- ``after=raw``: write ``raw`` right after the answer (a stray CRLF, an answer too many);
- ``close=True``: close the connection after that (with ``answer=b""``: the request
  is forwarded, the collector stores it, and its answer is lost).

``strip_request_ids=True`` forwards requests without their ``X-Request-Id``: an
API that does not de-duplicate retries.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from typing import NamedTuple

from layer_sdk.collector import LocalCollector

from .helpers import TCPServer, read_request


class Act(NamedTuple):
    """What the front does with one request (see the module docstring)."""

    answer: bytes | None = None
    after: bytes = b""
    close: bool = False


def raw_answer(status: int, body: bytes = b"{}", *headers: str) -> bytes:
    """An HTTP/1.1 answer with a JSON body, byte by byte."""
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json", *headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Front(TCPServer):
    """See the module docstring."""

    def __init__(
        self,
        collector: LocalCollector,
        act: Callable[[int, bytes, bytes], Act],
        *,
        strip_request_ids: bool = False,
    ) -> None:
        self._collector = collector
        self._act = act
        self._strip = strip_request_ids
        self._lock = threading.Lock()
        self.requests_read = 0
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        buffer = b""
        with client, contextlib.suppress(OSError):
            client.settimeout(30)
            while (request := read_request(client, buffer)) is not None:
                head, body, buffer = request
                with self._lock:
                    n = self.requests_read
                    self.requests_read += 1
                act = self._act(n, head, body)
                answer = act.answer
                if answer is None or (act.close and answer == b""):
                    if upstream is None:
                        upstream = socket.create_connection(("127.0.0.1", self._collector.port))
                        upstream.settimeout(30)
                    relayed = self._forward(upstream, head, body)
                    answer = relayed if answer is None else answer
                client.sendall(answer + act.after)
                if act.close:
                    break
        if upstream is not None:
            upstream.close()

    def _forward(self, upstream: socket.socket, head: bytes, body: bytes) -> bytes:
        """The collector's answer to the request (framed by Content-Length, as it answers).

        The request's ``Host`` becomes the collector's own, as a reverse proxy sets it
        (the collector refuses a foreign one)."""
        dropped = (b"host:", b"x-request-id:") if self._strip else (b"host:",)
        request_line, *lines = head.split(b"\r\n")
        kept = [line for line in lines if not line.lower().startswith(dropped)]
        host = f"Host: 127.0.0.1:{self._collector.port}".encode()
        head = b"\r\n".join([request_line, host, *kept])
        upstream.sendall(head + b"\r\n\r\n" + body)
        answer = read_request(upstream)  # an answer reads like a request: head, body
        assert answer is not None, "the collector closed the connection"
        answer_head, answer_body, rest = answer
        assert not rest
        return answer_head + b"\r\n\r\n" + answer_body
