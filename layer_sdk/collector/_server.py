"""The HTTP/1.1 engine of :class:`~layer_sdk.collector.LocalCollector`.

An asyncio server on an event loop of its own, run by one daemon thread, with a
minimal hand-written request parser: request line, headers, a body framed by
``Content-Length`` or chunked, keep-alive and ``Connection: close``. It knows
nothing of the Layer API: each request read goes to a handler, which returns
an :class:`Exchange` saying whether the request is held or delayed and, once
it is neither, what to answer. Waiting costs no thread: a held request waits
for :meth:`HttpServer.recheck`, a delayed one for a timer of the loop.

A body larger than the limit the server is given (``body_limit``) is not
read: the request is handed over at once with an empty body and ``oversize``
set, whether its ``Content-Length`` says so or a chunked body passes the limit
as it arrives; its answer closes the connection, after the server has read and
dropped what the client still sends for a while (so that the client, still
writing, gets the answer rather than a reset). An answer may also be an event
stream (``Reply.stream``): the connection then stays open, and every
:meth:`HttpServer.publish` is written to it until the client goes.

Pipelined requests (several written on one connection before their answers
are read) are read as they arrive and handed to the handler at once, so that
their delays run side by side, as they would on a server that far away; their
answers go out in the order the requests came. A request whose answer closes
the connection (``Connection: close``, a dropped request) ends it: the requests
read after it are not answered, and the handler is told they were dropped, as
a server handling them one by one would never have seen them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import NamedTuple, Protocol, cast

import msgspec

__all__ = ["Answered", "Exchange", "HttpServer", "Reply", "Request"]

_MAX_HEAD = 65536  # bytes of request line and headers
_MAX_HEADERS = 100
_BACKLOG = 128
_RECEIVE_SIZE = 65536
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,8}")
_LINGER = 2.0  # seconds an answered connection reads and drops a body it refused
_STREAM_BACKLOG = 4 << 20  # bytes an event stream may fall behind before it is cut
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


# Request and Reply are named tuples: cheap to make, and a reply kept for its
# X-Request-Id (one per request) is soon left alone by the garbage collector.


class Request(NamedTuple):
    """One request as read. ``headers`` has lower-cased names; the last of a repeated one wins.

    ``framing_error`` says why the body could not be read (it is then empty):
    the connection is closed after the answer, as the next request cannot be found.
    ``oversize``: the body passed the server's ``body_limit`` and was not read
    (it is empty); the connection is closed after the answer too.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    framing_error: str | None = None
    oversize: bool = False


class Reply(NamedTuple):
    """An answer: ``body`` of ``content_type``, with ``headers`` added.

    ``stream``: the body is the start of an event stream, sent without a
    length; the connection stays open for what :meth:`HttpServer.publish`
    writes, until the client closes it.
    """

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    stream: bool = False


class Exchange(Protocol):
    """A request on its way to an answer, as the handler decided on reading it."""

    @property
    def delay(self) -> float:
        """Seconds to wait, on the loop's timers, once the request is no longer held."""

    def held(self) -> bool:
        """Whether the request must wait for a :meth:`HttpServer.recheck`."""

    def answer(self, dropped: bool) -> Reply | None:
        """The answer (None: close the connection unanswered), once waiting is over.

        ``dropped``: the server is going down and the answer will not be sent.
        """


Handler = Callable[[Request], Exchange]


class HttpServer:
    """Serves ``handler`` on ``address`` (bound at once) from a daemon thread, once started.

    ``body_limit`` is asked, as each request's head is read, for the largest
    body to read (None: no limit).
    """

    def __init__(
        self,
        address: tuple[str, int],
        handler: Handler,
        body_limit: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.handler = handler
        self.body_limit = body_limit
        # SO_REUSEADDR: a restart rebinds the port despite TIME_WAIT sockets.
        self._socket = socket.create_server(address, backlog=_BACKLOG)
        self._socket.setblocking(False)
        self.port: int = self._socket.getsockname()[1]
        # A selector loop whatever the event loop policy: the engine is the same everywhere.
        self.loop = asyncio.SelectorEventLoop()
        self._thread: threading.Thread | None = None
        # Touched on the loop only:
        self._accepting: asyncio.Task[None] | None = None
        self.stopping = False
        self.connections: set[_Connection] = set()  # made and not yet lost
        self.waiting: set[_Connection] = set()  # those whose request is held or delayed
        self.streams: set[_Connection] = set()  # those answered with an event stream
        # Where every connection receives: one at a time, as all run on the loop.
        self.inbox = memoryview(bytearray(_RECEIVE_SIZE))

    def start(self, thread_name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def recheck(self) -> None:
        """Let the held requests that are no longer held go on (from any thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing is held
            self.loop.call_soon_threadsafe(self._recheck)

    def publish(self, data: bytes) -> None:
        """Write ``data`` to every open event stream (from any thread).

        A stream that has fallen more than ``_STREAM_BACKLOG`` bytes behind is
        closed: its client reconnects and reads afresh, rather than the server
        holding more and more for it.
        """
        if threading.get_ident() == self._loop_thread:
            self._publish(data)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                self.loop.call_soon_threadsafe(self._publish, data)

    def stop(self, timeout: float) -> None:
        """Close the listener and every connection, dropping held and delayed requests.

        Returns once all is closed, or after about ``timeout`` seconds.
        """
        thread = self._thread
        if thread is None:
            self._socket.close()
            self.loop.close()
            return
        shutting_down = asyncio.run_coroutine_threadsafe(self._shut_down(timeout), self.loop)
        shutting_down.add_done_callback(lambda _: self.loop.call_soon_threadsafe(self.loop.stop))
        if thread is not threading.current_thread():  # else a handler stops it: no waiting
            thread.join(timeout)

    # -- on the loop -------------------------------------------------------------

    @property
    def _loop_thread(self) -> int | None:
        return None if self._thread is None else self._thread.ident

    def _publish(self, data: bytes) -> None:
        for connection in list(self.streams):
            connection.push(data)

    def _run(self) -> None:
        self._accepting = self.loop.create_task(self._accept())
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    async def _accept(self) -> None:
        # Not loop.sock_accept(): cancelled by stop() after it accepted a socket but
        # before this task resumed, it loses that socket, open until the garbage
        # collector finds it (on 3.10, seconds after stop() returned). Here the
        # task is cancelled only while it waits, holding no socket.
        listener = self._socket
        while True:
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                await self._acceptable()
                continue
            except OSError:  # out of file descriptors, say: try again shortly
                await asyncio.sleep(0.1)
                continue
            client.setblocking(False)
            try:
                # Cancelled while it runs, it closes the transport it made.
                await self.loop.connect_accepted_socket(lambda: _Connection(self), client)
            except OSError:  # the client is already gone
                client.close()

    async def _acceptable(self) -> None:
        """Return once the listener has a connection to accept."""
        ready: asyncio.Future[None] = self.loop.create_future()
        fd = self._socket.fileno()
        self.loop.add_reader(fd, _resolve, ready)
        try:
            await ready
        finally:
            self.loop.remove_reader(fd)

    def _recheck(self) -> None:
        for connection in list(self.waiting):
            connection.recheck()

    async def _shut_down(self, timeout: float) -> None:
        self.stopping = True
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting  # a connection being accepted is aborted once made
        self._socket.close()  # new connections are refused from now on
        for connection in list(self.waiting):
            connection.drop_pending()
        for connection in list(self.connections):
            connection.abort()
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.001)  # an aborted transport closes on a later iteration


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TooLarge(Exception):
    """A body larger than the server's limit: not read."""


class _BadHead(Exception):
    """A request head that cannot be read: answered with ``status``, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class _Head:
    method: str
    path: str
    headers: dict[str, str]
    keep_alive: bool
    expects_continue: bool


def _read_head(buffer: bytearray) -> _Head | None:
    """Consume the request line and headers from ``buffer``; None until all are in."""
    if buffer.startswith((b"\r", b"\n")):  # empty lines before a request are ignored
        del buffer[: len(buffer) - len(buffer.lstrip(b"\r\n"))]
    end, size = buffer.find(b"\r\n\r\n"), 4
    if end < 0:
        end, size = buffer.find(b"\n\n"), 2  # bare LF line ends are tolerated
    if end < 0 or end > _MAX_HEAD:
        if len(buffer) > _MAX_HEAD:
            raise _BadHead(431, "request head too large")
        return None
    request_line, *lines = buffer[:end].decode("latin-1").split("\n")
    del buffer[: end + size]
    words = request_line.split()
    if len(words) != 3 or not words[2].startswith("HTTP/"):
        raise _BadHead(400, f"bad request line {request_line.strip()[:100]!r}")
    method, path, version = words
    authority = None
    if path.lower().startswith(("http://", "https://")):
        # The absolute form, as a client sends it to a proxy (RFC 9112 3.2.2: a
        # server must accept it): so that the collector can stand in for a proxy too.
        # Its authority is the request's host: the Host header is ignored.
        authority = path.split("/", 3)[2].rpartition("@")[2]
        path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        if not authority:
            raise _BadHead(400, "an absolute request target needs a host")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise _BadHead(505, f"HTTP version not supported: {version[:20]!r}")
    if len(lines) > _MAX_HEADERS:
        raise _BadHead(431, "too many headers")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        # No space may end a name, nor start a line: folded lines are refused too.
        if not colon or not name or name[0] in " \t" or name[-1] in " \t":
            raise _BadHead(400, f"bad header line {line.strip()[:100]!r}")
        name = name.lower()
        if name == "host" and name in headers:  # RFC 9112 3.2: a server must refuse it
            raise _BadHead(400, "more than one Host header")
        headers[name] = value.strip()
    if version == "HTTP/1.1" and "host" not in headers:  # RFC 9112 3.2: a server must refuse it
        raise _BadHead(400, "an HTTP/1.1 request needs a Host header")
    if authority is not None:
        headers["host"] = authority
    # HTTP/1.1 keeps the connection unless told to close, HTTP/1.0 only when told to keep it.
    tokens = {token.strip() for token in headers.get("connection", "").lower().split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    expects_continue = version == "HTTP/1.1" and headers.get("expect", "").lower() == "100-continue"
    return _Head(method, path, headers, keep_alive, expects_continue)


class Answered:
    """The exchange of a request that could not be read: its answer is known at once."""

    delay = 0.0

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    def held(self) -> bool:
        return False

    def answer(self, dropped: bool) -> Reply | None:
        return self._reply


_UNREADABLE = _Head("", "", {}, keep_alive=False, expects_continue=False)


@dataclass(slots=True)
class _Pending:
    """A request read and handed to the handler, until its answer is written."""

    head: _Head
    exchange: Exchange
    timer: asyncio.TimerHandle | None = None  # set once its delay has begun
    ready: bool = False  # neither held nor delayed any more: its answer may go


class _Connection(asyncio.BufferedProtocol):
    """One client connection: reads requests, hands them over, writes the answers in order."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: _Head | None = None  # read, while its body is not all in
        self._chunks: list[bytes] = []  # of the chunked body being read
        self._trailers = False  # its last chunk is read: trailer fields follow
        self._chunked_size = 0  # bytes of the chunked body read so far
        self._limit: int | None = None  # the largest body to read, asked as each head is read
        self._unread = False  # a body was refused unread: linger before closing
        self._linger: asyncio.TimerHandle | None = None  # ends the lingering
        self._streaming = False  # answered with an event stream: publish() writes to it
        self._pending: deque[_Pending] = deque()  # read and not yet answered, in order
        self._last_read = False  # a request that closes the connection was read
        self._eof = False  # the client sends no more
        self._closed = False

    # -- asyncio.BufferedProtocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        if self._server.stopping:  # accepted just before the server went down
            self.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        # Into a buffer of our own: a plain Protocol gets each read in a new 256 KiB bytes.
        return self._server.inbox

    def buffer_updated(self, nbytes: int) -> None:
        if self._last_read:  # no request is read after the last one: dropped, not kept
            return
        self._buffer += self._server.inbox[:nbytes]
        self._serve()

    def eof_received(self) -> bool:
        self._eof = True
        if self._linger is not None:  # the client has sent all: close now
            self._linger.cancel()
            return False
        self._serve()  # answers what is buffered, then closes
        return True  # keep the transport: a request may still be waiting for its answer

    def connection_lost(self, exc: Exception | None) -> None:
        # Requests still held or delayed go on: they are recorded, their answers not sent.
        self._closed = True
        self._server.connections.discard(self)
        self._server.streams.discard(self)
        if self._linger is not None:
            self._linger.cancel()

    # -- the server's calls ------------------------------------------------------------

    def recheck(self) -> None:
        for pending in self._pending:
            self._start(pending)
        self._answer_ready()

    def drop_pending(self) -> None:
        self._server.waiting.discard(self)
        while self._pending:
            pending = self._pending.popleft()
            if pending.timer is not None:
                pending.timer.cancel()
            pending.exchange.answer(dropped=True)

    def abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def push(self, data: bytes) -> None:
        """Write ``data`` to this event stream; cut it when its client lags too far behind."""
        transport = self._transport
        if self._closed or transport is None:
            return
        if transport.get_write_buffer_size() > _STREAM_BACKLOG:
            self.abort()
            return
        transport.write(data)

    # -- requests ------------------------------------------------------------------------

    def _serve(self) -> None:
        """Read every whole request buffered and take each on; answer those that are ready."""
        while not self._closed and not self._last_read:
            try:
                read = self._read()
            except _BadHead as exc:
                # Answered after the requests before it; then the connection closes.
                reply = Reply(exc.status, msgspec.json.encode({"error": str(exc)}))
                self._pending.append(_Pending(_UNREADABLE, Answered(reply), ready=True))
                self._last_read = True
                break
            if read is None:
                break
            head, request = read
            pending = _Pending(head, self._server.handler(request))
            self._pending.append(pending)
            self._last_read = not head.keep_alive
            self._start(pending)
        self._answer_ready()
        if self._eof and not self._pending and not self._closed:
            self._close()

    def _start(self, pending: _Pending) -> None:
        """Take a request on once it is not held: start its delay, or make it ready."""
        if pending.ready or pending.timer is not None:
            return
        if pending.exchange.held():
            self._server.waiting.add(self)
        elif pending.exchange.delay > 0:
            self._server.waiting.add(self)
            pending.timer = self._server.loop.call_later(
                pending.exchange.delay, self._end_delay, pending
            )
        else:
            pending.ready = True

    def _end_delay(self, pending: _Pending) -> None:
        pending.ready = True
        self._answer_ready()
        self._serve()

    def _answer_ready(self) -> None:
        """Answer the requests at the front whose answers may go, in order."""
        pending = self._pending
        while pending and pending[0].ready:
            first = pending.popleft()
            reply = first.exchange.answer(dropped=False)
            if reply is None or not first.head.keep_alive or reply.stream:
                # This answer ends the connection (or keeps it for a stream): what was
                # read after it goes unanswered.
                self._send(reply, first.head)
                self.drop_pending()
                return
            self._send(reply, first.head)
        if not pending:
            self._server.waiting.discard(self)

    def _send(self, reply: Reply | None, head: _Head | None) -> None:
        """Write ``reply`` (None: close unanswered) to the request of ``head`` (None: unread)."""
        if self._closed or self._transport is None:
            return  # the client is gone
        if reply is None:
            self._close()
            return
        keep_alive = head is not None and head.keep_alive and not reply.stream
        lines = [
            f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, 'Unknown')}",
            f"Content-Type: {reply.content_type}",
            *(() if reply.stream else (f"Content-Length: {len(reply.body)}",)),
            *(f"{name}: {value}" for name, value in reply.headers),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write per answer: a small reply leaves as a single segment.
        head_only = head is not None and head.method == "HEAD"
        self._transport.write(data if head_only else data + reply.body)
        if reply.stream and not head_only:
            # Its end is the connection's end: nothing more is read from it.
            self._last_read = True
            self._streaming = True
            self._server.streams.add(self)
        elif not keep_alive:
            self._close()

    def _close(self) -> None:
        """Close once what was written has left.

        After a body refused unread, the client may still be writing it: closing
        with its bytes unread would reset the connection, and a reset can reach
        the client before the answer does. So the server first says it sends no
        more, then reads and drops what arrives, until the client is done or
        ``_LINGER`` seconds have passed (as web servers do: a lingering close).
        """
        self._closed = True
        transport = self._transport
        if transport is None:
            return
        if self._unread and not self._eof and transport.can_write_eof():
            self._unread = False
            transport.write_eof()
            self._linger = self._server.loop.call_later(_LINGER, transport.close)
            return
        transport.close()

    def _read(self) -> tuple[_Head, Request] | None:
        """The next whole request, consumed from the buffer; None until more arrives."""
        if self._head is None:
            if not self._buffer:
                return None
            self._head = _read_head(self._buffer)
            if self._head is None:
                return None
            self._limit = self._server.body_limit()
            length = self._head.headers.get("content-length", "")
            refused = self._limit is not None and length.isdigit() and int(length) > self._limit
            if self._head.expects_continue and self._transport is not None and not refused:
                self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        head = self._head
        try:
            body = self._read_body(head.headers)
        except ValueError as exc:
            # A body that cannot be framed leaves no way to find the next request either.
            head.keep_alive = False
            self._head = None
            return head, Request(head.method, head.path, head.headers, b"", str(exc))
        except _TooLarge:
            # What is left of the body is never read: this request is the connection's last.
            head.keep_alive = False
            self._head = None
            self._chunks, self._chunked_size, self._trailers = [], 0, False
            self._unread = True
            return head, Request(head.method, head.path, head.headers, b"", oversize=True)
        if body is None:
            return None
        self._head = None
        return head, Request(head.method, head.path, head.headers, body)

    def _read_body(self, headers: dict[str, str]) -> bytes | None:
        """The body framed by Content-Length or chunked; ValueError when it cannot be framed.

        _TooLarge as soon as it is known to pass the limit: from its Content-Length,
        or from a chunk's size line, before that chunk's data is read.
        """
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise ValueError(f"unsupported Transfer-Encoding {encoding!r}")
            return self._read_chunked()
        length = headers.get("content-length", "0")
        if not (length.isascii() and length.isdigit()):
            raise ValueError(f"invalid Content-Length {length!r}")
        size = int(length)
        if self._limit is not None and size > self._limit:
            raise _TooLarge
        buffer = self._buffer
        if len(buffer) < size:
            return None
        if len(buffer) == size:  # the usual case: nothing pipelined after it
            body = bytes(buffer)
            buffer.clear()
        else:
            body = bytes(buffer[:size])
            del buffer[:size]
        return body

    def _read_chunked(self) -> bytes | None:
        """Consume chunks as they arrive; the body once the last one and the trailer are in."""
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > 1024:
                    raise ValueError(f"invalid chunk size {bytes(buffer[:20])!r}")
                return None
            line = bytes(buffer[:end]).strip()
            if self._trailers:  # trailer fields are ignored, up to the empty line
                del buffer[: end + 1]
                if not line:
                    body = b"".join(self._chunks)
                    self._chunks, self._chunked_size, self._trailers = [], 0, False
                    return body
                continue
            size_field = line.split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_field):
                raise ValueError(f"invalid chunk size {size_field[:20]!r}")
            size = int(size_field, 16)
            if self._limit is not None and self._chunked_size + size > self._limit:
                raise _TooLarge
            if size == 0:
                del buffer[: end + 1]
                self._trailers = True
                continue
            data_end = end + 1 + size
            if len(buffer) < data_end + 2:
                return None
            if buffer[data_end : data_end + 2] != b"\r\n":
                raise ValueError("invalid chunk: its data does not end with CRLF")
            self._chunks.append(bytes(buffer[end + 1 : data_end]))
            self._chunked_size += size
            del buffer[: data_end + 2]
