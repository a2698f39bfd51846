"""A small HTTP/1.1 client for one job: POST a JSON body (or GET a resource), read the answer.

Why not urllib3 or requests here? Per request they spend 4 to 20 times the CPU
this does (``benchmarks/http_clients.py``), and the exporter's cost per event
is dominated by its requests. What the SDK needs is narrow: one host, ``POST``
with a ``Content-Length`` body, keep-alive, TLS and answers framed by
``Content-Length``, chunked encoding or connection close. Anything beyond that
(proxies, a user's adapters) goes through ``requests``; see ``_backends``.
A known session's actions are pipelined (``post_pipelined``).

Narrow, but held to a maintained library's standard:

- Answers are bounded: at most ``MAX_ANSWER_BYTES`` of body, read into one
  ``bytearray``, and ``MAX_HEAD_BYTES`` of everything else (status lines,
  interim 1xx answers, header fields, chunk-size lines, trailers). An answer
  over either bound raises ``AnswerTooLarge`` and its connection is closed.
- Each ``post`` has one deadline, ``timeout`` seconds after it starts, that
  covers connecting, the TLS handshake, sending and reading: every socket wait
  is bounded by the time left, so a server dripping one byte a second cannot
  hold it longer (``TimeoutError``). The system's name lookup is the one step
  it cannot cut short.
- A kept-alive connection is reused only when nothing unread is left on it:
  one holding bytes past its answer, or that the server wrote to or closed
  while it sat idle, is closed instead, so that answers never shift by one.
- A pipeline (``post_pipelined``) keeps the same rules: one deadline for the
  whole of it, what arrived parsed before an error is acted on, and bytes
  after its last answer make every answer of it suspect.
- Answers are matched to their requests, not only taken in order, where the
  server allows it: a server that echoes each request's ``X-Request-Id`` (the
  pool's ``echo`` header) on its answer has every answer checked against its
  request, so that a stray answer (one too many) cannot pass for another
  request's. Where it echoes nothing, only time can tell a shifted answer
  from a true one: a pipeline's answers are trusted once the connection
  stayed quiet a moment after the last one (``post_pipelined``).
- ``close()`` (shutdown) ends the connections in use too, so that no request
  outlives it by more than a moment.
- Framing follows RFC 9112 to the letter (heads are parsed by ``_framing``);
  chunk sizes are 1 to 20 hex digits, chunk data is followed by CRLF, and an
  unsolicited ``101`` is refused. Every refusal is a ``ProtocolError``.
  ``tests/test_http_parser.py`` holds this parser against h11's, answer by answer.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import threading
import time
from typing import Protocol
from urllib.parse import urlsplit

from .._tls import tls_context
from ._framing import (
    AnswerTooLarge,
    ClosedMidAnswer,
    PipelineClosed,
    ProtocolError,
    RemoteDisconnected,
    keeps_alive,
    parse_fields,
    parse_head,
)
from ._retry import is_retryable

#: The most an answer's body may take, bytes. The API's answers take a few hundred.
MAX_ANSWER_BYTES = 1024 * 1024
#: The most an answer may take besides its body (status lines, header fields,
#: interim answers, chunk-size lines and trailers), bytes.
MAX_HEAD_BYTES = 64 * 1024
#: The most that may be read ahead of the answer being parsed, while pipelined
#: requests are still being written, bytes.
MAX_UNREAD_BYTES = 8 * 1024 * 1024
#: A server that echoes no request ID: a pipeline's answers are trusted once nothing more
#: came for this long after the last one, seconds, or for twice the longest gap between
#: two of its answers when that is longer (an answer that a stray one pushed past the end
#: arrives about one gap after the last answer read).
QUIET_AFTER_PIPELINE = 0.01
#: A server that echoes request IDs sent one answer without its request's: it is trusted
#: (a proxy's own) once nothing more came for this long, seconds.
QUIET_AFTER_UNMATCHED = 0.1
_READ_SIZE = 64 * 1024

_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*")


class Answer:
    """Status, headers (lower-case names, repeated fields joined by ", ") and body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class ConnectionPool:
    """Keep-alive connections to the host of ``base_url``, reused last-in first-out.

    ``timeout`` bounds each ``post`` as a whole, seconds. ``base_url`` has been
    validated (``_config``); a ``user:password@`` in it is never sent. ``echo``:
    the request header whose value a server may echo on its answers (the
    request ID), by which answers are matched to their requests.
    """

    def __init__(
        self, base_url: str, timeout: float, max_idle: int, *, echo: str | None = None
    ) -> None:
        parts = urlsplit(base_url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._timeout = timeout
        self._max_idle = max_idle
        self._ssl = tls_context() if self._tls else None
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.host_header = host if default_port else f"{host}:{self._port}"
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()  # in use by a request: close() ends them too
        self._closed = False
        #: Whether several requests are written on a connection before their
        #: answers are read (``post_pipelined``); off for good once the server
        #: shows that it does not pipeline.
        self.pipelining = True
        self._echo = echo
        self._echoed = echo.lower() if echo else ""  # the answers' header names are lower-case
        #: Whether the server echoes ``echo`` on its answers: set by the first answer that
        #: carried a request ID (a proxy in front of it may still answer without one).
        self.echoes = False

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """Send one request and return the answer; raises OSError subclasses on failure."""
        return self.send("POST", path, body, headers)

    def send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """``post`` with another method: a ``GET`` (with an empty ``body``) carries no body."""
        deadline = time.monotonic() + self._timeout
        request = self._request(path, body, headers, method)
        sent = headers.get(self._echo) if self._echo else None
        connection: _Connection | None = None
        try:
            connection = self._checkout(deadline)
            first = not connection.reused
            try:
                answer, keep_alive = connection.exchange(request, deadline)
            except ConnectionError:
                self._release(connection)
                if not connection.reused:
                    raise
                # A kept-alive connection that the server closed as it was
                # reused (no byte of an answer came back): once more, anew.
                connection = None
                connection = self._connect(deadline)
                first = True
                answer, keep_alive = connection.exchange(request, deadline)
            if self._out_of_step(connection, answer, sent, first, deadline):
                # Another request's answer (a stray one the server wrote after an earlier
                # answer): this request's own is behind it. Once more on a new connection,
                # whose first answer can only be its own (the same request ID: a server
                # that de-duplicates by it stores the request once).
                self._release(connection)
                connection = None
                connection = self._connect(deadline)
                answer, keep_alive = connection.exchange(request, deadline)
                self._in_step(answer, sent, first=True)
        except BaseException as exc:
            if connection is not None:
                self._release(connection)
            if isinstance(exc, TimeoutError):
                raise TimeoutError(f"no complete answer within {self._timeout:g} s") from None
            raise
        if keep_alive:
            self._checkin(connection)
        else:
            self._release(connection)
        return answer

    def post_pipelined(
        self, path: str, requests: list[tuple[bytes, dict[str, str]]]
    ) -> tuple[list[Answer], Exception | None]:
        """Send several requests on one connection before reading their answers, in order.

        Returns the answers read, for the first requests in order, and what
        ended the exchange before the others were answered: None when all
        were; ``PipelineClosed`` when the server ended it in a way that says
        nothing against the requests left (they may go again at once); or the
        error met. Never raises for trouble on the network. One deadline,
        ``timeout`` seconds after the start, covers the whole exchange.

        It keeps the rules of the one-request path (``post``):

        - What arrived is parsed before an error is acted on: a server that
          answers one request and closes while the pipeline is still being
          written (the write fails with a reset) has its answer read.
        - A stray answer (one too many) shifts the answers after it onto the
          wrong requests. A server that echoes the request ID has each answer
          checked against its request: from the first that carries another's,
          nothing is trusted; the answers before it are returned, and the
          caller sends the rest again one at a time. Answers without an ID (a
          server that echoes nothing, or a proxy's own answers) are trusted
          once no byte came for ``QUIET_AFTER_PIPELINE`` (or twice the longest
          gap between two of them) after the last: bytes then, or left after the
          last answer, make every answer suspect but the first on a new
          connection (which can only be its request's): those are not
          returned. In either case the connection is not reused.
        - A kept-alive connection that fails before any answer came back is
          replaced once, within the same deadline.

        When the server shows that it does not pipeline, ``pipelining`` turns
        False for the life of the pool and the caller sends one request at a
        time (``post``) from then on: a reset while the pipeline is written,
        a malformed answer after a good one, an answer out of step or bytes
        after the last answer, or a first answer followed by a close or by
        silence.
        """
        data = b"".join(self._request(path, body, headers) for body, headers in requests)
        sent = [headers.get(self._echo) if self._echo else None for _, headers in requests]
        deadline = time.monotonic() + self._timeout
        for fresh in (False, True):
            try:
                connection = self._connect(deadline) if fresh else self._checkout(deadline)
            except (OSError, ValueError) as exc:
                return [], exc
            reused = connection.reused
            answers, error = self._pipeline(connection, data, sent, deadline)
            # Not a byte of an answer on a kept-alive connection: it was stale.
            stale = reused and not answers and not isinstance(error, PipelineClosed)
            if not (stale and isinstance(error, ConnectionError)) or self._closed:
                return answers, error
        return answers, error

    def _pipeline(
        self, connection: _Connection, data: bytes, sent: list[str | None], deadline: float
    ) -> tuple[list[Answer], Exception | None]:
        """One pipelined exchange on ``connection`` of the requests written as ``data``,
        whose IDs (the ``echo`` header's values) are ``sent``."""
        count = len(sent)
        answers: list[Answer] = []
        cut: Exception | None = None  # why writing stopped early
        error: Exception | None = None
        keep_alive = True
        first = not connection.reused
        proven = 0  # the answers known to be their requests' (in step)
        gap = last = 0.0  # the longest time between two answers; when the last came
        try:
            connection.write(data, deadline)
        except (OSError, ValueError) as exc:
            cut = exc
        try:
            # Also when the write failed: what arrived before is read and parsed.
            while len(answers) < count and keep_alive:
                answer, keep_alive = connection.read_answer(deadline)
                now = time.monotonic()
                gap, last = (max(gap, now - last) if answers else 0.0), now
                step = self._in_step(answer, sent[len(answers)], first and not answers)
                if step is False:
                    # Out of step: a stray answer came before this one. What it was the
                    # answer to is unknown, and so is every answer after it.
                    self._release(connection)
                    self.pipelining = False
                    return answers[:proven], PipelineClosed(
                        f"answer {len(answers) + 1} of {count} did not carry its request's "
                        f"{self._echo}: an answer no request asked for came before it"
                    )
                answers.append(answer)
                if step:
                    proven = len(answers)  # an answer in step: so is every one before it
        except (OSError, ValueError) as exc:
            error = exc
        if cut is None and error is None and len(answers) == count:
            if proven < count:
                # Nothing tells these answers from shifted ones but time: a stray answer
                # pushes the last true one past the end, about one gap behind.
                quiet = max(QUIET_AFTER_PIPELINE, 2 * gap)
                stray = not connection.stays_quiet(min(quiet, deadline - time.monotonic()))
            else:
                stray = connection.has_leftover()  # one too many after the last: none shifted
            if stray:
                self._release(connection)
                self.pipelining = False
                if proven < count:
                    return answers[:proven], PipelineClosed(
                        f"bytes came after the last of {count} answers"
                    )
                return answers, None
            if keep_alive:
                self._checkin(connection)
            else:
                self._release(connection)
            return answers, None
        self._release(connection)
        ended = cut or error
        if not answers:
            if isinstance(cut, ConnectionError) and not connection.reused:
                self.pipelining = False  # it closed while the pipeline was being written
            return [], ended
        if self._closed:
            return answers, ended  # shutting down: the caller gives up on the rest
        if not keep_alive:
            # The last answer said the connection ends there: a limit of requests per
            # connection (it pipelines), unless that was after the first answer.
            self.pipelining = len(answers) > 1 and self.pipelining
        elif isinstance(cut, ConnectionError) or (
            isinstance(error, ProtocolError) and not isinstance(error, ClosedMidAnswer)
        ):
            self.pipelining = False  # it closed while the pipeline was written, or garbled
        elif len(answers) == 1:
            self.pipelining = False  # it answered the first, then closed or went silent
        return answers, PipelineClosed(
            f"the server ended the exchange after {len(answers)} of {count} answers ({ended})"
        )

    def _out_of_step(
        self,
        connection: _Connection,
        answer: Answer,
        sent: str | None,
        first: bool,
        deadline: float,
    ) -> bool:
        """Whether the one answer read for the request whose ID was ``sent`` is another's.

        An answer without an ID from a server that echoes them is a proxy's own
        (a 503 while a backend drains) or a stray one that the server wrote
        late. Taken for a failure to retry, either is harmless (the request
        goes again with its ID, which the server de-duplicates by). A final one
        (2xx, 4xx) is trusted only when no bytes come within
        ``QUIET_AFTER_UNMATCHED``: a stray one has its request's true answer
        behind it.
        """
        step = self._in_step(answer, sent, first)
        if step is None and self.echoes and not is_retryable(answer.status):
            quiet = min(QUIET_AFTER_UNMATCHED, max(0.0, deadline - time.monotonic()))
            return not connection.stays_quiet(quiet)
        return step is False

    def _in_step(self, answer: Answer, sent: str | None, first: bool) -> bool | None:
        """Whether ``answer`` is the answer of the request whose ID was ``sent``.

        True when it carries that ID back, or is the first answer on its
        connection (no stray answer can come before that one); False when it
        carries another request's ID (a stray answer came before it); None when
        it carries none, as a server that echoes nothing answers, or a proxy
        in front of one that does, answering on its own (a 503 while a backend
        drains): nothing tells then.
        """
        echoed = answer.headers.get(self._echoed) if sent is not None else None
        if echoed is None:
            return True if first else None
        self.echoes = True
        return echoed == sent or first

    def _request(
        self, path: str, body: bytes, headers: dict[str, str], method: str = "POST"
    ) -> bytes:
        head = [f"{method} {path} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"header {name} contains a line break")
            head.append(f"{name}: {value}\r\n")
        if body or method != "GET":
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        return "".join(head).encode("latin-1") + body

    def close(self) -> None:
        """Close every connection, those in use too: a request under way ends at once
        (shutdown), and no new one starts."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for connection in idle:
            connection.close()
        for connection in busy:
            connection.abort()

    def _checkout(self, deadline: float) -> _Connection:
        """An idle connection the server left quiet, else a new one; marked in use."""
        while True:
            with self._lock:
                if self._closed:
                    raise ConnectionAbortedError("the client is shutting down")
                connection = self._idle.pop() if self._idle else None
                if connection is not None:
                    self._busy.add(connection)
            if connection is None:
                return self._connect(deadline)
            if connection.is_quiet():
                return connection
            self._release(connection)  # the server closed it, or wrote what no request asked for

    def _checkin(self, connection: _Connection) -> None:
        with self._lock:
            self._busy.discard(connection)
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _release(self, connection: _Connection) -> None:
        """Close a connection in use: it is not reused."""
        with self._lock:
            self._busy.discard(connection)
        connection.close()

    def _connect(self, deadline: float) -> _Connection:
        """A new connection, marked in use."""
        sock = _open(self._host, self._port, deadline)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock.settimeout(_time_left(deadline))  # bounds the whole handshake
                sock = self._ssl.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        connection = _Connection(sock, self._ssl is not None)
        with self._lock:
            if not self._closed:
                self._busy.add(connection)
                return connection
        connection.close()
        raise ConnectionAbortedError("the client is shutting down")


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _open(host: str, port: int, deadline: float) -> socket.socket:
    """A TCP connection to the first address of ``host`` that accepts one before ``deadline``."""
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_time_left(deadline))
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:  # e.g. a test's patched connect(): never leak the socket
            sock.close()
            raise
        return sock
    raise error or OSError(f"no address found for {host}")


def _waiter(sock: socket.socket, write: bool, read: bool = False) -> _Poll:
    """A ``poll`` object watching ``sock`` for reading, writing, or either.

    ``select`` stands in where there is no ``poll`` (Windows); elsewhere it
    fails on descriptors past 1023, which a busy server process easily has.
    """
    if not hasattr(select, "poll"):
        return _SelectPoll(sock, write, read or not write)
    waiter = select.poll()
    events = (select.POLLOUT if write else 0) | (select.POLLIN if read or not write else 0)
    waiter.register(sock, events)
    return waiter


class _Poll(Protocol):
    def poll(self, timeout: float) -> list[tuple[int, int]]: ...


class _SelectPoll:
    """``select.poll``'s one method used here, made of ``select.select``."""

    __slots__ = ("_read", "_sock", "_write")

    def __init__(self, sock: socket.socket, write: bool, read: bool) -> None:
        self._sock, self._write, self._read = sock, write, read

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        waiting = [self._sock]
        ready = select.select(
            waiting if self._read else [], waiting if self._write else [], waiting, timeout / 1000
        )
        return [(self._sock.fileno(), 1)] if any(ready) else []


class _Connection:
    """One socket, and what was read of it and not yet parsed.

    The socket is non-blocking: each wait is a ``poll`` bounded by the time
    left until the deadline of the current ``post``. (Setting a socket timeout
    before each call would cost a system call each time.)
    """

    __slots__ = (
        "_budget",
        "_buffer",
        "_deadline",
        "_either",
        "_in",
        "_out",
        "_sock",
        "_tls",
        "reused",
    )

    def __init__(self, sock: socket.socket, tls: bool) -> None:
        sock.settimeout(0)
        self._sock = sock
        self._tls = tls
        self._buffer = bytearray()
        self._deadline = 0.0
        self._budget = MAX_HEAD_BYTES
        self._in = _waiter(sock, write=False)
        self._out = _waiter(sock, write=True)
        self._either = _waiter(sock, write=True, read=True)
        self.reused = False

    def is_quiet(self) -> bool:
        """Whether the idle connection has nothing to read: no bytes, no end of stream."""
        if not self._tls:
            return not self._in.poll(0)
        sock = self._sock
        if sock.pending():  # type: ignore[attr-defined]
            return False
        if not self._in.poll(0):
            return True
        # A TLS record need not carry data (a TLS 1.3 session ticket): only reading tells.
        try:
            sock.recv(1)
        except ssl.SSLWantReadError:
            return True
        except OSError:
            return False
        return False

    def exchange(self, request: bytes, deadline: float) -> tuple[Answer, bool]:
        """Send ``request``; return the answer and whether the connection can be reused."""
        self.write(request, deadline)
        answer, keep_alive = self.read_answer(deadline)
        return answer, keep_alive and not self._buffer

    def write(self, data: bytes, deadline: float) -> None:
        """Send ``data`` (one request or several) by ``deadline``."""
        self._deadline = deadline
        try:
            sent = self._sock.send(data)  # all of it, nearly always
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            sent = 0
        if sent < len(data):
            self._send(memoryview(data)[sent:])

    def read_answer(self, deadline: float) -> tuple[Answer, bool]:
        """Read the next answer; also whether the connection may carry more after it.

        Bytes left in the buffer after it are the next answers of a pipeline
        (``exchange`` does not reuse a connection that has any).
        """
        self._deadline = deadline
        self._budget = MAX_HEAD_BYTES
        try:
            while True:
                status, headers, minor = parse_head(bytes(self._read_until(b"\r\n\r\n")))
                if status >= 200:
                    break
                if status == 101:
                    raise ProtocolError("the server switched protocols, which no request asked")
                # other 1xx answers are interim: the final one follows
            body, framed = self._read_body(status, headers)
        except ConnectionError:
            if self._budget == MAX_HEAD_BYTES and not self._buffer:
                raise  # not a byte of an answer: the server may never have seen the request
            raise ClosedMidAnswer("the server closed the connection mid-answer") from None
        self.reused = True
        if not framed:
            return Answer(status, headers, body), False
        connection = headers.get("connection")
        if connection is None:
            return Answer(status, headers, body), minor >= 1
        return Answer(status, headers, body), keeps_alive(connection, minor)

    def has_leftover(self) -> bool:
        """Whether bytes came after the answers read (in the buffer, or waiting to be read):
        answers no request asked for. The end of the stream is not a byte."""
        return self._peek() is True

    def stays_quiet(self, seconds: float) -> bool:
        """Whether no byte comes after the answers read, now or within ``seconds``. The
        end of the stream is not a byte: nothing can come after it."""
        until = time.monotonic() + seconds
        while True:
            came = self._peek()
            if came is not False:
                return came is None
            left = until - time.monotonic()
            if left <= 0 or not self._in.poll(left * 1000):
                return True

    def _peek(self) -> bool | None:
        """Whether bytes are there after the answers read (True: kept in the buffer), none
        now (False), or the stream ended (None)."""
        if self._buffer:
            return True
        sock = self._sock
        if self._tls and sock.pending():  # type: ignore[attr-defined]
            return True
        if not self._in.poll(0):
            return False
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False  # a TLS record without data (a session ticket)
        except OSError:
            return None
        if not data:
            return None
        self._buffer += data
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def abort(self) -> None:
        """End the connection from another thread (shutdown): the waits of the thread that
        uses it end at once. Shut down, not closed: that thread closes it, so that its
        descriptor is not reused by another file while that thread still polls it."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    # -- reading and writing, each wait bounded by the deadline --------------------

    def _wait(self, waiter: _Poll) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0 or not waiter.poll(left * 1000):
            raise TimeoutError("timed out")

    def _send(self, view: memoryview) -> None:
        sock = self._sock
        while view:
            try:
                sent = sock.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                self._wait_to_send()
                continue
            except ssl.SSLWantReadError:
                self._wait(self._in)
                continue
            view = view[sent:]

    def _wait_to_send(self) -> None:
        """Wait until the socket takes more, reading the answers that come meanwhile.

        A server answering pipelined requests stops reading them when its
        answers are not read: reading while writing keeps both moving.
        """
        left = self._deadline - time.monotonic()
        if left <= 0 or not self._either.poll(left * 1000):
            raise TimeoutError("timed out")
        if self._in.poll(0):
            if len(self._buffer) > MAX_UNREAD_BYTES:
                raise AnswerTooLarge(f"more than {MAX_UNREAD_BYTES} bytes of answers ahead")
            with contextlib.suppress(BlockingIOError, ssl.SSLWantReadError):
                self._fill()

    def _fill(self) -> None:
        """Read what the server has sent so far (at least one byte) into the buffer."""
        sock = self._sock
        if not self._tls:
            # Waiting first spares a failing recv: the answer has rarely arrived yet.
            left = self._deadline - time.monotonic()
            if left <= 0 or not self._in.poll(left * 1000):
                raise TimeoutError("timed out")
        while True:
            try:
                data = sock.recv(_READ_SIZE)
                break
            except (BlockingIOError, ssl.SSLWantReadError):
                self._wait(self._in)
            except ssl.SSLWantWriteError:
                self._wait(self._out)
        if not data:
            raise RemoteDisconnected("the server closed the connection")
        self._buffer += data

    def _read_until(self, separator: bytes) -> bytearray:
        """The bytes before ``separator``, which are consumed with it; counted as head bytes."""
        buffer = self._buffer
        end = buffer.find(separator)
        while end < 0:
            if len(buffer) >= self._budget:
                raise AnswerTooLarge(f"the answer's head is larger than {MAX_HEAD_BYTES} bytes")
            searched = len(buffer)
            self._fill()
            end = buffer.find(separator, max(0, searched - len(separator) + 1))
        size = end + len(separator)
        if size > self._budget:
            raise AnswerTooLarge(f"the answer's head is larger than {MAX_HEAD_BYTES} bytes")
        self._budget -= size
        data = buffer[:end]
        del buffer[:size]
        return data

    def _read_body(self, status: int, headers: dict[str, str]) -> tuple[bytes, bool]:
        """The body, and False when it ended with the connection (which is then spent)."""
        if status == 204 or status == 304:
            return b"", True
        length = headers.get("content-length")
        if length is not None:
            size = int(length)
            if size > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(
                    f"the answer's body ({size} bytes) is larger than {MAX_ANSWER_BYTES} bytes"
                )
            buffer = self._buffer
            while len(buffer) < size:
                self._fill()
            body = bytes(buffer[:size])
            del buffer[:size]
            return body, True
        if "transfer-encoding" in headers:
            return self._read_chunked(), True
        return self._read_to_close(), False

    def _read_to_close(self) -> bytes:
        """A body framed by neither length nor chunks: it ends when the server closes."""
        buffer = self._buffer
        while True:
            if len(buffer) > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(f"the answer's body is larger than {MAX_ANSWER_BYTES} bytes")
            try:
                self._fill()
            except RemoteDisconnected:
                break
        body = bytes(buffer)
        buffer.clear()
        return body

    def _read_chunked(self) -> bytes:
        body = bytearray()
        buffer = self._buffer
        while True:
            line = self._read_until(b"\r\n")
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise ProtocolError(f"invalid chunk size line: {bytes(line[:40])!r}")
            size = int(match[1], 16)
            if size == 0:
                self._read_trailers()
                return bytes(body)
            if len(body) + size > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(f"the answer's body is larger than {MAX_ANSWER_BYTES} bytes")
            while len(buffer) < size + 2:
                self._fill()
            if buffer[size : size + 2] != b"\r\n":
                raise ProtocolError("a chunk is not followed by CRLF")
            body += buffer[:size]
            del buffer[: size + 2]

    def _read_trailers(self) -> None:
        """Read (and check) the trailer fields after the last chunk; their values go unused."""
        buffer = self._buffer
        while len(buffer) < 2:
            self._fill()
        if buffer[:2] == b"\r\n":
            del buffer[:2]
            self._budget -= 2
            return
        parse_fields(b"\r\n" + self._read_until(b"\r\n\r\n"))
