"""A small HTTP/1.1 client for one job: POST a JSON body, read the answer.

Why not urllib3 or requests here? Per request they spend 5 to 10 times the CPU
this does (header objects, hooks, pool bookkeeping), and the exporter's cost
per event is dominated by its requests. What the SDK needs is narrow: one host,
``POST`` with a ``Content-Length`` body, keep-alive, TLS, timeouts, and answers
framed by ``Content-Length``, chunked encoding or connection close. Anything
beyond that (proxies, a user's adapters) goes through ``requests``; see
``_transport``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from urllib.parse import urlsplit

#: The most a status line plus headers may take, bytes.
MAX_HEAD_BYTES = 64 * 1024
_READ_SIZE = 64 * 1024


class RemoteDisconnected(ConnectionError):
    """The server closed the connection without answering."""


class ProtocolError(OSError):
    """The server's answer was not valid HTTP/1.1, or broke off midway."""


class Answer:
    """Status, headers (lower-case names) and body of a response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class ConnectionPool:
    """Keep-alive connections to the host of ``base_url``, reused last-in first-out."""

    def __init__(self, base_url: str, timeout: float, max_idle: int) -> None:
        parts = urlsplit(base_url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._timeout = timeout
        self._max_idle = max_idle
        self._ssl = ssl.create_default_context() if self._tls else None
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.host_header = host if default_port else f"{host}:{self._port}"
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._closed = False

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """Send one request and return the answer; raises OSError subclasses on failure."""
        head = [f"POST {path} HTTP/1.1\r\nHost: {self.host_header}\r\n"]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise ValueError(f"header {name} contains a line break")
            head.append(f"{name}: {value}\r\n")
        head.append(f"Content-Length: {len(body)}\r\n\r\n")
        request = "".join(head).encode("latin-1") + body

        connection = self._checkout()
        try:
            answer, keep_alive = connection.exchange(request)
        except ConnectionError:
            connection.close()
            if not connection.reused:
                raise
            # A kept-alive connection that the server had closed meanwhile (no
            # byte of an answer came back): one more try on a new connection.
            connection = self._connect()
            try:
                answer, keep_alive = connection.exchange(request)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()
            raise
        if keep_alive:
            self._checkin(connection)
        else:
            connection.close()
        return answer

    def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _checkout(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _checkin(self, connection: _Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> _Connection:
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)


class _Connection:
    """One socket and the bytes read past the last answer."""

    __slots__ = ("_buffer", "_sock", "reused")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self.reused = False

    def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send ``request``; return the answer and whether the connection can be reused."""
        self._sock.sendall(request)
        while True:
            status, headers, keep_alive = self._read_head()
            if status >= 200:
                break  # 1xx answers are interim: the real one follows
        try:
            body, keep_alive = self._read_body(headers, keep_alive, status)
        except ConnectionError:
            raise ProtocolError("the server closed the connection mid-answer") from None
        self.reused = True
        return Answer(status, headers, body), keep_alive

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def _receive(self) -> bytes:
        data = self._sock.recv(_READ_SIZE)
        if not data:
            raise RemoteDisconnected("the server closed the connection")
        return data

    def _read_head(self) -> tuple[int, dict[str, str], bool]:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ProtocolError("the answer's headers are too long")
            try:
                buffer += self._receive()
            except ConnectionError:
                if buffer:
                    raise ProtocolError("the server closed the connection mid-answer") from None
                raise
            end = buffer.find(b"\r\n\r\n", max(0, len(buffer) - _READ_SIZE - 3))
        lines = buffer[:end].decode("latin-1").split("\r\n")
        self._buffer = buffer[end + 4 :]
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ProtocolError(f"not an HTTP/1.x answer: {lines[0][:100]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        return int(rest[:3]), headers, keep_alive

    def _read_body(
        self, headers: dict[str, str], keep_alive: bool, status: int
    ) -> tuple[bytes, bool]:
        if status in (204, 304):
            return b"", keep_alive
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked(), keep_alive
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ProtocolError(f"invalid Content-Length: {length[:40]!r}")
            return self._read_exactly(int(length)), keep_alive
        # Neither length nor chunks: the body ends when the server closes.
        chunks = [self._buffer]
        self._buffer = b""
        while data := self._sock.recv(_READ_SIZE):
            chunks.append(data)
        return b"".join(chunks), False

    def _read_exactly(self, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            buffer += self._receive()
        self._buffer = buffer[size:]
        return buffer[:size]

    def _read_line(self) -> bytes:
        buffer = self._buffer
        while (end := buffer.find(b"\r\n")) < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ProtocolError("a chunk header is too long")
            buffer += self._receive()
        self._buffer = buffer[end + 2 :]
        return buffer[:end]

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"invalid chunk size: {size_text[:40]!r}") from None
            if size == 0:
                while self._read_line():  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            chunks.append(self._read_exactly(size))
            self._read_exactly(2)  # the CRLF after each chunk
