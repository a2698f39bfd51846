"""A local stand-in for the Layer API, for tests, demos and benchmarks.

:class:`LocalCollector` is a real HTTP/1.1 server on a local port. It speaks the
Layer API wire contract (``POST /v1/sessions`` and
``POST /v1/sessions/{session_id}/actions``), validates every body against that
contract, keeps what it accepted in memory for inspection, and can inject
faults: error answers, dropped connections, slow answers, hung requests,
authentication failures and a server that goes down and comes back::

    from layer_sdk.collector import LocalCollector

    with LocalCollector() as collector:
        run_my_app(base_url=collector.url)       # anything that reports to Layer
        assert collector.wait_for_events(5)
        assert collector.actions()[0]["kind"] == "completion_prompt"

        collector.fail_next(2, 503, retry_after=0.1)   # the next two requests fail

How a request is answered, step by step. Faults are decided once the request
has been read, so each one affects only requests read after it was set.

1. ``hang()``: held until ``release()`` or ``stop()``.
2. ``delay``: waits that many seconds.
3. ``drop_next()``: the connection is closed without an answer.
4. ``fail_next()``: the injected status is answered.
5. ``require_bearer()``: 401 when the bearer token is missing or refused.
6. Routing: 404 for an unknown path, 405 for a method other than POST.
7. ``X-Request-Id`` already answered with 2xx (whatever the path): that answer
   again, nothing stored, counted in ``duplicates``.
8. Validation: 415 unless the body is ``application/json``, 400 for a bad body.
9. Storage: 404 for an action of an unknown session, 409 for a session that
   already exists; else 200 (session) or 202 (action).
"""

from __future__ import annotations

import contextlib
import copy
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Annotated, Any, Literal, cast

import msgspec

__all__ = ["LocalCollector", "ReceivedRequest"]

STOP_TIMEOUT = 2.0
"""Longest ``stop()`` waits for open connections to end."""

# How often the accept loop checks for stop() where closing its socket does not wake it.
_POLL_INTERVAL = 0.05
_ACTIONS_PATH = re.compile(r"/v1/sessions/([^/]+)/actions")
_NOT_JSON = object()  # stands for a body that does not decode
_Request = socket.socket | tuple[bytes, socket.socket]  # what socketserver hands a server


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One HTTP request as the collector read it, and the status it answered.

    ``headers`` has lower-cased names (a repeated header keeps its last value),
    ``json`` is the decoded body or None, and ``status`` is 0 when the
    connection was closed without an answer.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    received_at: float


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


def _error(message: str, status: int = 400) -> _Reply:
    return _Reply(status, msgspec.json.encode({"error": message}))


_ACCEPTED = _Reply(202, b"{}")
_UNAUTHORIZED = _Reply(401, b'{"error":"unauthorized"}', (("WWW-Authenticate", "Bearer"),))
_NOT_ALLOWED = _Reply(405, b'{"error":"method not allowed: use POST"}', (("Allow", "POST"),))


class LocalCollector:
    """An in-process Layer API server that records what it receives.

    Every inspection method returns a copy and is safe to call from any thread.
    Everything received is kept until ``clear()``, including each request's
    body: a long benchmark should clear now and then.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port  # 0 until the first start() picks a free port
        self._lifecycle = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # One lock guards all the state below. It is re-entrant and shared by
        # both conditions, so a wait_for() predicate can inspect the collector.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._released = threading.Condition(self._lock)
        self._sessions: dict[str, dict[str, Any]] = {}
        self._actions: list[tuple[str, dict[str, Any]]] = []  # (session id, action)
        self._requests: list[ReceivedRequest] = []
        self._replies: dict[str, _Reply] = {}  # X-Request-Id -> its 2xx answer
        self._duplicates = 0
        self._failures: deque[_Reply] = deque()
        self._drops = 0
        self._delay = 0.0
        self._hanging = False
        self._releases = 0  # bumped by release(): a held request waits for it to change
        self._bearer_check: Callable[[str], bool] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LocalCollector:
        """Serve from a daemon thread (no-op when serving); a restart reuses the port."""
        with self._lifecycle:
            if self._server is None:
                self._server = _Server((self._host, self._port), self)
                self._port = self._server.server_port
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    args=(_POLL_INTERVAL,),
                    name=f"LocalCollector:{self._port}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def stop(self) -> None:
        """Go down like a dead server: refuse new connections, close open ones.

        Held and delayed requests are dropped unanswered, and hang mode ends.
        Returns within about ``STOP_TIMEOUT`` seconds; idempotent.
        """
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            if server is None or thread is None:
                return
            deadline = time.monotonic() + STOP_TIMEOUT
            server.stopping.set()  # wakes delayed requests
            with contextlib.suppress(OSError):
                # On Linux this wakes the accept loop at once instead of at its next poll.
                server.socket.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._hanging = False
                self._releases += 1
                self._released.notify_all()
            server.shutdown()
            server.server_close()
            server.close_connections(deadline)
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> LocalCollector:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port served on (known once started, or when given)."""
        if not self._port:
            raise RuntimeError("the collector has not been started: its port is not chosen yet")
        return self._port

    @property
    def url(self) -> str:
        """Base URL to give the SDK, e.g. ``http://127.0.0.1:8123``."""
        return f"http://{self._host}:{self.port}"

    # -- inspection --------------------------------------------------------

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Stored sessions as received, each with all its ``actions`` in arrival order."""
        with self._lock:
            return copy.deepcopy(list(self._sessions.values()))

    def session(self, session_id: str) -> dict[str, Any] | None:
        """One stored session (as in ``sessions``), or None."""
        with self._lock:
            return copy.deepcopy(self._sessions.get(_canonical_uuid(session_id)))

    def actions(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Stored actions (of one session, or all) in arrival order, with ``session_id`` added."""
        key = None if session_id is None else _canonical_uuid(session_id)
        with self._lock:
            chosen = [(sid, action) for sid, action in self._actions if key in (None, sid)]
            return [{**copy.deepcopy(action), "session_id": sid} for sid, action in chosen]

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request read, in the order it was answered (or dropped)."""
        with self._lock:
            return list(self._requests)

    @property
    def event_count(self) -> int:
        """Stored sessions plus stored actions."""
        with self._lock:
            return len(self._sessions) + len(self._actions)

    @property
    def duplicates(self) -> int:
        """Requests answered again from their ``X-Request-Id`` without being stored."""
        with self._lock:
            return self._duplicates

    def wait_for_events(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``event_count >= count``; False if ``timeout`` passes first."""
        return self.wait_for(lambda collector: collector.event_count >= count, timeout)

    def wait_for(self, predicate: Callable[[LocalCollector], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(self)`` holds, checking it after every request.

        The predicate runs with the collector's lock held: it may inspect the
        collector but must not wait for requests to it.
        """
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def clear(self) -> None:
        """Forget every session, action and request received (faults stay)."""
        with self._lock:
            self._sessions.clear()
            self._actions.clear()
            self._requests.clear()
            self._replies.clear()
            self._duplicates = 0
            self._changed.notify_all()

    # -- fault injection ---------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 503,
        *,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status``, storing nothing.

        Calls add up: ``fail_next(1, 500); fail_next(1, 429)`` fails two requests.
        """
        if count < 0 or not 200 <= status <= 599 or (retry_after or 0) < 0:
            raise ValueError(f"invalid fault: {count=}, {status=}, {retry_after=}")
        headers: tuple[tuple[str, str], ...] = ()
        if retry_after is not None:
            # Whole seconds as HTTP spells them; a fraction is kept so tests can stay fast.
            seconds = float(retry_after)
            headers = (
                ("Retry-After", str(int(seconds)) if seconds.is_integer() else str(seconds)),
            )
        payload = b'{"error":"injected"}' if body is None else body
        reply = _Reply(status, b"" if status in (204, 304) else payload, headers)
        with self._lock:
            self._failures.extend([reply] * count)

    def drop_next(self, count: int) -> None:
        """Read the next ``count`` requests, then close their connections unanswered."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        with self._lock:
            self._drops += count

    @property
    def delay(self) -> float:
        """Seconds every request waits before it is answered (0 by default)."""
        return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"delay must be >= 0, got {seconds}")
        with self._lock:
            self._delay = float(seconds)

    def hang(self) -> None:
        """Hold every request read from now on, until ``release()`` or ``stop()``."""
        with self._lock:
            self._hanging = True

    def release(self) -> None:
        """Let the held requests go on, and stop holding new ones."""
        with self._lock:
            self._hanging = False
            self._releases += 1
            self._released.notify_all()

    def require_bearer(self, check: Callable[[str], bool] | None) -> None:
        """Answer 401 unless ``Authorization: Bearer <t>`` has ``check(t)`` true; None: off."""
        with self._lock:
            self._bearer_check = check

    # -- request path (runs on handler threads) ----------------------------

    def _answer(
        self, server: _Server, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> _Reply | None:
        """The reply to one request (None: drop the connection), recorded before it is sent.

        Recording first means that a client holding its answer already finds
        the request in ``requests`` and its data in ``sessions``.
        """
        received_at = time.monotonic()
        try:
            parsed: Any = msgspec.json.decode(body)
        except ValueError:
            parsed = _NOT_JSON
        try:
            reply = self._decide(server, method, path, headers, parsed)
        except Exception as exc:  # a bug or a raising bearer check must not end the thread
            reply = _error(f"internal error: {exc!r}", 500)
        json = None if parsed is _NOT_JSON else parsed
        status = 0 if reply is None else reply.status
        self._record(ReceivedRequest(method, path, headers, body, json, status, received_at))
        return reply

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._changed.notify_all()

    def _decide(
        self, server: _Server, method: str, path: str, headers: dict[str, str], parsed: Any
    ) -> _Reply | None:
        with self._lock:  # all faults are decided at once, when the request arrives
            held = self._releases if self._hanging else None
            delay = self._delay
            drop = self._drops > 0
            if drop:
                self._drops -= 1
            failure = self._failures.popleft() if self._failures and not drop else None
            check = self._bearer_check
        if held is not None:
            with self._lock:
                self._released.wait_for(lambda: self._releases != held or server.stopping.is_set())
        if delay:
            server.stopping.wait(delay)
        if drop or server.stopping.is_set():
            return None
        if failure is not None:
            return failure
        if check is not None and not _authorized(headers.get("authorization", ""), check):
            return _UNAUTHORIZED
        route = path.partition("?")[0]
        session_id = None  # None: create a session; otherwise append to this one
        if route != "/v1/sessions":
            match = _ACTIONS_PATH.fullmatch(route)
            if match is None:
                return _error(f"no such endpoint: {route}", 404)
            session_id = match[1]
        if method != "POST":
            return _NOT_ALLOWED
        request_id = headers.get("x-request-id")
        with self._lock:  # look-up and storage in one step: a racing retry cannot store twice
            if request_id is not None and (seen := self._replies.get(request_id)) is not None:
                self._duplicates += 1
                return seen
            reply = self._accept(session_id, headers, parsed)
            if request_id is not None and 200 <= reply.status < 300:
                self._replies[request_id] = reply
            return reply

    def _accept(self, session_id: str | None, headers: dict[str, str], parsed: Any) -> _Reply:
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return _error(f"Content-Type must be application/json, got {media_type!r}", 415)
        if parsed is _NOT_JSON:
            return _error("the body is not valid UTF-8 JSON")
        try:
            if session_id is None:
                return self._create_session(parsed)
            return self._append_action(session_id, parsed)
        except msgspec.ValidationError as exc:
            return _error(str(exc))

    def _create_session(self, body: Any) -> _Reply:
        session_id = _check_session(body) or str(uuid.uuid5(uuid.NAMESPACE_URL, str(uuid.uuid4())))
        if session_id in self._sessions:
            return _error(f"session {session_id} already exists - at `$.session_id`", 409)
        actions = body.get("actions") or []
        self._sessions[session_id] = {**body, "session_id": session_id, "actions": list(actions)}
        self._actions.extend((session_id, action) for action in actions)
        return _Reply(200, msgspec.json.encode({"session_id": session_id}))

    def _append_action(self, session_id: str, body: Any) -> _Reply:
        _check_times(msgspec.convert(body, _ActionIn), "$")
        session = self._sessions.get(session_id) or self._sessions.get(_canonical_uuid(session_id))
        if session is None:
            return _error(f"no session {session_id}", 404)
        session["actions"].append(body)
        self._actions.append((session["session_id"], body))
        return _ACCEPTED


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() waits for the handlers itself, with a deadline
    allow_reuse_address = True  # a restart rebinds the port despite TIME_WAIT sockets

    def __init__(self, address: tuple[str, int], collector: LocalCollector) -> None:
        self.collector = collector
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()  # open client connections
        self._idle = threading.Condition()
        super().__init__(address, _Handler)

    def process_request(self, request: _Request, client_address: Any) -> None:
        with self._idle:
            stopping = self.stopping.is_set()
            if not stopping:
                self._connections.add(cast(socket.socket, request))  # TCP: always a socket
        if stopping:
            self.shutdown_request(request)
        else:
            super().process_request(request, client_address)

    def shutdown_request(self, request: _Request) -> None:
        super().shutdown_request(request)
        with self._idle:
            self._connections.discard(cast(socket.socket, request))
            self._idle.notify_all()

    def handle_error(self, request: _Request, client_address: Any) -> None:
        """Stay quiet about clients that go away; handler errors were answered 500."""

    def close_connections(self, deadline: float) -> None:
        """Shut every open connection down; wait (until ``deadline``) for their handlers."""
        with self._idle:
            for connection in self._connections:
                # Wakes a handler blocked reading. OSError: its handler just closed it.
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._idle.wait_for(lambda: not self._connections, deadline - time.monotonic())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # a small answer leaves at once, no delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a line per request would drown test and benchmark output."""

    def _handle(self) -> None:
        # raw_items(): the values as read, without the email policy's costly re-parsing.
        headers = {name.lower(): value for name, value in self.headers.raw_items()}
        collector = self.server.collector
        try:
            body = self._read_body(headers)
        except ValueError as exc:
            # A body that cannot be framed leaves no way to find the next request either.
            self.close_connection = True
            reply: _Reply | None = _error(str(exc))
            now = time.monotonic()
            collector._record(
                ReceivedRequest(self.command, self.path, headers, b"", None, 400, now)
            )
        else:
            reply = collector._answer(self.server, self.command, self.path, headers, body)
        if reply is None:
            self.close_connection = True
            return
        phrase = self.responses.get(reply.status, ("Unknown",))[0]
        lines = [
            f"HTTP/1.1 {reply.status} {phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(reply.body)}",
            *(f"{name}: {value}" for name, value in reply.headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        # One write per answer: a small reply leaves as a single segment.
        self.wfile.write(head if self.command == "HEAD" else head + reply.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def _read_body(self, headers: dict[str, str]) -> bytes:
        """The body framed by Content-Length or chunked; ValueError when it cannot be framed."""
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise ValueError(f"unsupported Transfer-Encoding {encoding!r}")
            return self._read_chunked()
        length = headers.get("content-length", "0")
        if not (length.isascii() and length.isdigit()):
            raise ValueError(f"invalid Content-Length {length!r}")
        return self._read_exactly(int(length))

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9a-fA-F]{1,8}", line):
                raise ValueError(f"invalid chunk size {line[:20]!r}")
            if (size := int(line, 16)) == 0:
                break
            chunks.append(self._read_exactly(size))
            self.rfile.readline(1024)  # the CRLF that closes a chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields are ignored
        return b"".join(chunks)

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise ConnectionError("the client went away in the middle of a body")
        return data


# -- validation: the request bodies of the wire contract ------------------------
# msgspec checks types, required and unknown fields (a misspelt field is an
# error rather than lost data) and names the field in its message; times are
# plain strings here, checked by _check_times for the Z suffix and a real date.

_Kind = Literal[
    "embeddings",
    "moderation",
    "completion_prompt",
    "completion_output",
    "completion_prompt_attachment",
    "completion_tool_call",
]


class _ErrorIn(msgspec.Struct, forbid_unknown_fields=True):
    message: str
    code: Any = None
    details: Any = None


class _ScannerIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    data: Any = None


class _ActionIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: _Kind
    start_time: str
    end_time: str
    attributes: dict[str, Any]  # required, and never null
    data: Any = None
    error: _ErrorIn | None = None
    scanners: list[_ScannerIn] | None = None


class _SessionIn(msgspec.Struct, forbid_unknown_fields=True):
    application_id: Annotated[str, msgspec.Meta(min_length=1)]
    session_id: str | None = None
    attributes: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    actions: list[_ActionIn] | None = None


def _check_session(body: Any) -> str | None:
    """Validate a create body; returns its session id in canonical form, or None."""
    session = msgspec.convert(body, _SessionIn)
    _check_times(session, "$")
    for i, action in enumerate(session.actions or ()):
        _check_times(action, f"$.actions[{i}]")
    if session.session_id is None:
        return None
    try:
        version = uuid.UUID(session.session_id).version
    except ValueError:
        version = None
    if version != 5:
        raise msgspec.ValidationError(
            f"Expected a UUID version 5, got {session.session_id!r} - at `$.session_id`"
        )
    return _canonical_uuid(session.session_id)


def _check_times(item: _SessionIn | _ActionIn, where: str) -> None:
    for name in ("start_time", "end_time"):
        value = getattr(item, name)
        if value is not None and not _is_time(value):
            raise msgspec.ValidationError(
                f"Expected an RFC 3339 UTC time ending in Z, got {value!r} - at `{where}.{name}`"
            )


_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")


def _is_time(value: str) -> bool:
    if not _TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:19])  # the pattern lets 2024-13-45 through
    except ValueError:
        return False
    return True


def _canonical_uuid(value: str) -> str:
    """The lower-case hyphenated form of a UUID, so that any spelling finds its session."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def _authorized(header: str, check: Callable[[str], bool]) -> bool:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return scheme.lower() == "bearer" and bool(token) and bool(check(token))
