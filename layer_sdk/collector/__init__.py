"""A local stand-in for the Layer API, for tests, demos and benchmarks.

:class:`LocalCollector` is a real HTTP/1.1 server on a local port. It speaks the
Layer API wire contract (``POST /v1/sessions`` and
``POST /v1/sessions/{session_id}/actions``; the firewall's
``GET /v1/sessions/{session_id}``; ``GET``/``POST /v1/applications``, see
``collector/_registry.py``), validates every body against that contract,
keeps what it accepted in memory for inspection, and can inject faults:
error answers, dropped connections, slow answers, hung requests,
authentication failures and a server that goes down and comes back::

    from layer_sdk.collector import LocalCollector

    with LocalCollector() as collector:
        run_my_app(base_url=collector.url)       # anything that reports to Layer
        assert collector.wait_for_events(5)
        assert collector.actions()[0]["kind"] == "completion_prompt"

        collector.fail_next(2, 503, retry_after=0.1)   # the next two requests fail

Two options reach beyond memory. ``on_event`` is called with a
:class:`StoredEvent` for each session and action just stored (the
``layer-sdk collector`` command prints them with it): it runs on the server's
thread with the collector's lock held, so it must be quick and must not block
or wait for requests (hand the event to a queue); an exception it raises is
logged and otherwise ignored. ``db`` keeps everything in an SQLite file as it is
stored, and a collector made on the same file starts with what it holds (see
``collector/_store.py`` for the schema)::

    collector = LocalCollector(db="layer.sqlite", on_event=events.put)

Without either option, and while no page watches, no event is made: the
request path costs what it did.

The collector also serves a page at ``/`` (``url`` + ``/``): what it received,
live, each session as a conversation, what it refused and why, and a control
to rehearse the firewall's decisions; the page reads a JSON API under
``/api/`` (see ``collector/_page.py``). It answers at once, whatever the faults
below, and is not recorded in ``requests``.

It answers only the ``Host`` names it knows as its own (its address, and
``localhost``, ``127.0.0.1`` and ``[::1]`` when that is a loopback one, each
with its port; ``allowed_hosts`` adds others): a page of another site whose
name now resolves to 127.0.0.1 (DNS rebinding) is refused with 403 on every
endpoint, the Layer API's and the page's (``collector/_hosts.py``).

How a request is answered, step by step. Faults are decided once the request
has been read, so each one affects only requests read after it was set.

0. A ``Host`` the collector does not answer to: 403 at once, whatever the
   faults. Then the page and its API are answered.
1. ``hang()``: held until ``release()`` or ``stop()``.
2. ``delay``: waits that many seconds.
3. ``drop_next()``: the connection is closed without an answer.
4. ``fail_next()``, else ``fail_for()``, else ``fail_rate``: the injected status is answered.
5. ``require_bearer()``: 401 when the bearer token is missing or refused;
   ``max_body_bytes``: 413 for a larger body. The limit applies as the body is
   read: a ``Content-Length`` over it is refused before the body arrives, a
   chunked body as soon as it passes it; neither is read further (nor kept:
   the request's ``body`` is empty) and the connection closes after the answer.
6. Routing: 404 for an unknown path, 405 for a method the path does not take.
   A ``GET`` (a firewall decision, the applications) is answered here.
7. ``X-Request-Id`` already answered with 2xx (whatever the path): that answer
   again, nothing stored, counted in ``duplicates``.
8. Validation: 415 unless the body is ``application/json``, 400 unless it is
   JSON, 422 unless it keeps the wire contract's types (the message ends with
   the field's path, e.g. ``$.actions[0].error.code``).
9. Storage: 404 for an action of an unknown session, 409 for a session (or an
   application name) that already exists; else 200 (session), 202 (action) or
   201 (application).

Every answer to a request that carried an ``X-Request-Id`` carries it back, as
many gateways and frameworks do, so that a client can match each answer to its
request (the SDK pipelines a session's actions only to a server that does);
``echo_request_ids = False`` stands for a server that echoes nothing.

The server is an asyncio event loop in one daemon thread (``collector/_server.py``):
a held or delayed request costs no thread, and a connection's requests are
answered one at a time, in order.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import msgspec

from .._schemas import APPLICATIONS_PATH, SESSIONS_PATH
from . import _page
from ._hosts import HostCheck
from ._records import ReceivedRequest, Records, error_reply
from ._registry import Registry
from ._schema import canonical_uuid
from ._server import Answered, HttpServer, Reply, Request
from ._store import SqliteStore, StoredEvent

__all__ = ["LocalCollector", "ReceivedRequest", "StoredEvent"]

logger = logging.getLogger("layer_sdk")

STOP_TIMEOUT = 2.0
"""Longest ``stop()`` waits for open connections to end."""

_ACTIONS_PATH = re.compile(re.escape(SESSIONS_PATH) + r"/([^/]+)/actions")
_SESSION_PATH = re.compile(re.escape(SESSIONS_PATH) + r"/([^/]+)")
_APPLICATION = "application"  # what _accept is given to create an application
_NOT_JSON = object()  # stands for a body that does not decode


#: An injected fault: the reply (None: drop the connection) and the bytes that a
#: request's body must contain for it to apply (None: any request).
_Fault = tuple[Reply | None, bytes | None]


def _take(faults: deque[_Fault], body: bytes) -> _Fault | None:
    """The first fault that applies to ``body``, taken off the list."""
    for index, fault in enumerate(faults):
        if fault[1] is None or fault[1] in body:
            del faults[index]
            return fault
    return None


def _fault(status: int, retry_after: float | None, body: bytes | None) -> Reply:
    """The reply of an injected failure."""
    if not 200 <= status <= 599 or (retry_after or 0) < 0:
        raise ValueError(f"invalid fault: {status=}, {retry_after=}")
    headers: tuple[tuple[str, str], ...] = ()
    if retry_after is not None:
        # Whole seconds as HTTP spells them; a fraction is kept so tests can stay fast.
        seconds = float(retry_after)
        headers = (("Retry-After", str(int(seconds)) if seconds.is_integer() else str(seconds)),)
    payload = b'{"error":"injected"}' if body is None else body
    return Reply(status, b"" if status in (204, 304) else payload, headers)


_error = error_reply
_RATE_FAILURE = Reply(503, b'{"error":"injected by fail_rate"}')
_UNAUTHORIZED = Reply(401, b'{"error":"unauthorized"}', (("WWW-Authenticate", "Bearer"),))
_NOT_ALLOWED = Reply(405, b'{"error":"method not allowed: use POST"}', (("Allow", "POST"),))


class LocalCollector:
    """An in-process Layer API server that records what it receives.

    Every inspection method returns a copy and is safe to call from any thread.
    Everything received is kept until ``clear()``, including each request's
    body: a long benchmark should clear now and then.

    ``db``: an SQLite file where sessions and actions are kept as they are
    stored; those it already holds are loaded at once, so ``sessions`` and
    ``actions()`` include what a previous run kept. Writing is done by a thread
    of the collector's while it serves; ``stop()`` commits what is left, and
    ``clear()`` empties the file too. ``on_event``: see the module doc.
    ``allowed_hosts``: ``Host`` names to answer besides its own (see the module doc).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        db: str | os.PathLike[str] | None = None,
        on_event: Callable[[StoredEvent], None] | None = None,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self._host = host
        self._port = port  # 0 until the first start() picks a free port
        self._allowed_hosts = tuple(allowed_hosts)
        self._hosts = HostCheck(host, port, self._allowed_hosts)  # checks the entries now
        self._lifecycle = threading.Lock()
        self._server: HttpServer | None = None
        # One lock guards all the state below. It is re-entrant, so that a
        # wait_for() predicate, run with the lock held, can inspect the collector.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._records = Records()
        self._unanswered = 0  # requests read whose answer is not recorded yet
        # fail_next(): the replies to inject, each with the bytes a body must contain (or None).
        self._failures: deque[_Fault] = deque()
        self._failing_until = 0.0  # fail_for(): every request read before this time fails
        self._window_failure: Reply | None = None
        self._drops: deque[_Fault] = deque()  # drop_next(): (None, the bytes to match or None)
        self._delay = 0.0
        self._max_body_bytes: int | None = None
        self._fail_rate = 0.0
        self._echo_request_ids = True
        self._hanging = False
        self._hang_matching: bytes | None = None  # hang(matching=...): only such bodies
        self._releases = 0  # bumped by release(): a held request waits for it to change
        self._bearer_check: Callable[[str], bool] | None = None
        self._registry = Registry()
        self._page = _page.Page()
        self._on_event = on_event
        self._store = None if db is None else SqliteStore(db)
        if self._store is not None:
            self._records.load(*self._store.load())
        # What storage calls: None while there is neither a hook, nor a file, nor a page
        # watching (the first page that watches turns it on).
        if db is not None or on_event is not None:
            self._records.emit = self._emit_event

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LocalCollector:
        """Serve from a daemon thread (no-op when serving); a restart reuses the port."""
        with self._lifecycle:
            if self._server is None:
                server = HttpServer(
                    (self._host, self._port), self._admit, lambda: self._max_body_bytes
                )
                self._port = server.port
                self._hosts = HostCheck(self._host, self._port, self._allowed_hosts)
                if self._store is not None:
                    self._store.start()
                server.start(f"LocalCollector:{self._port}")
                self._server = server
        return self

    def stop(self) -> None:
        """Go down like a dead server: refuse new connections, close open ones.

        Held and delayed requests are dropped unanswered, and hang mode ends.
        With ``db``, what was stored is committed to the file before it returns.
        Returns within about ``STOP_TIMEOUT`` seconds (plus the commit); idempotent.
        """
        with self._lifecycle:
            server, self._server = self._server, None
            if server is None:
                return
            server.stop(STOP_TIMEOUT)
            if self._store is not None:
                self._store.stop()
            with self._lock:
                self._hanging = False
                self._releases += 1

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
        """Base URL to give the SDK, e.g. ``http://127.0.0.1:8123``; its page is there too."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # -- inspection --------------------------------------------------------

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """Stored sessions as received, each with all its ``actions`` in arrival order."""
        with self._lock:
            return copy.deepcopy(list(self._records.sessions.values()))

    def session(self, session_id: str) -> dict[str, Any] | None:
        """One stored session (as in ``sessions``), or None."""
        with self._lock:
            return copy.deepcopy(self._records.sessions.get(canonical_uuid(session_id)))

    def actions(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """Stored actions (of one session, or all) in arrival order, with ``session_id`` added."""
        key = None if session_id is None else canonical_uuid(session_id)
        with self._lock:
            pairs = zip(self._records.action_sessions, self._records.actions, strict=True)
            chosen = [(sid, action) for sid, action in pairs if key in (None, sid)]
            return [{**copy.deepcopy(action), "session_id": sid} for sid, action in chosen]

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request read, in the order it was answered (or dropped)."""
        with self._lock:
            return list(self._records.requests)

    @property
    def event_count(self) -> int:
        """Stored sessions plus stored actions."""
        with self._lock:
            return len(self._records.sessions) + len(self._records.actions)

    @property
    def duplicates(self) -> int:
        """Requests answered again from their ``X-Request-Id`` without being stored."""
        with self._lock:
            return self._records.duplicates

    @property
    def unanswered(self) -> int:
        """Requests read and not answered yet: held by ``hang()``, delayed, or being answered.

        ``wait_for`` sees it change: a test can wait until a request has
        reached a hung server before it acts.
        """
        with self._lock:
            return self._unanswered

    def totals(self) -> dict[str, Any]:
        """What was received, counted: as the page's ``GET /api/totals`` answers it.

        ``sessions``; ``actions`` (all) and ``actions_by_kind``; ``failed_actions``
        (with an ``error``); ``requests`` read; ``refused`` (answered 4xx);
        ``duplicates`` (answered again from ``X-Request-Id``).
        """
        with self._lock:
            return _page.totals(self._records)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``event_count >= count``; False if ``timeout`` passes first."""
        return self.wait_for(lambda collector: collector.event_count >= count, timeout)

    def wait_for(self, predicate: Callable[[LocalCollector], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(self)`` holds, checking it as each request is read and answered.

        The predicate runs with the collector's lock held: it may inspect the
        collector but must not wait for requests to it.
        """
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def clear(self) -> None:
        """Forget every session, action and request received (faults stay), in ``db`` too."""
        with self._lock:
            if self._store is not None:
                self._store.clear()
            self._records.clear()
            self._changed.notify_all()
        self._publish(_page.CLEARED)

    # -- firewall decisions and applications -------------------------------

    def set_firewall_decision(
        self,
        session_id: str,
        decision: str,
        *,
        policies: list[dict[str, Any]] | None = None,
    ) -> None:
        """Answer ``decision`` to the firewall look-ups of ``session_id`` from now on.

        ``decision`` is one of ``no_data``, ``pass``, ``skip``, ``alert``,
        ``block``; ``policies`` the violated policies, each
        ``{"id": int, "name": str, "severity": str, "action": str}``. A session
        nobody set is answered ``no_data``. Raises ``ValueError`` (or msgspec's
        ``ValidationError``) for anything else.
        """
        key = canonical_uuid(session_id)
        with self._lock:
            self._registry.set_decision(key, str(getattr(decision, "value", decision)), policies)
            message = _page.decision_message(self._registry.decisions[key])
        self._publish(message)

    def add_application(self, name: str, application_id: str | None = None) -> str:
        """Register an application (as if created earlier); returns its ID."""
        with self._lock:
            return self._registry.add(name, application_id)

    @property
    def applications(self) -> list[dict[str, Any]]:
        """The applications, as ``GET /v1/applications`` lists them."""
        with self._lock:
            return copy.deepcopy(self._registry.applications)

    # -- fault injection ---------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 503,
        *,
        retry_after: float | None = None,
        body: bytes | None = None,
        matching: bytes | None = None,
    ) -> None:
        """Answer the next ``count`` requests with ``status``, storing nothing.

        Calls add up: ``fail_next(1, 500); fail_next(1, 429)`` fails two requests.
        With ``matching``, only requests whose body contains those bytes count
        (e.g. ``matching=b'"n":3'`` fails the action whose data has ``n`` 3).
        """
        if count < 0:
            raise ValueError(f"invalid fault: {count=}")
        reply = _fault(status, retry_after, body)
        with self._lock:
            self._failures.extend([(reply, matching)] * count)

    def fail_for(
        self,
        seconds: float,
        status: int = 503,
        *,
        retry_after: float | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer every request read in the next ``seconds`` with ``status``, storing nothing.

        An outage (503) or an overload (429 with ``retry_after``) of a given
        length, after the faults of ``fail_next``; a new call replaces the window.
        """
        if seconds < 0:
            raise ValueError(f"invalid fault: {seconds=}")
        reply = _fault(status, retry_after, body)
        with self._lock:
            self._failing_until = time.monotonic() + seconds
            self._window_failure = reply

    def drop_next(self, count: int, *, matching: bytes | None = None) -> None:
        """Read the next ``count`` requests, then close their connections unanswered.

        With ``matching``, only requests whose body contains those bytes count.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        with self._lock:
            self._drops.extend([(None, matching)] * count)

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

    @property
    def max_body_bytes(self) -> int | None:
        """Bodies larger than this are refused with 413, like a proxy's limit (None: none)."""
        return self._max_body_bytes

    @max_body_bytes.setter
    def max_body_bytes(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"max_body_bytes must be >= 0 or None, got {limit}")
        with self._lock:
            self._max_body_bytes = limit

    @property
    def echo_request_ids(self) -> bool:
        """Whether answers carry the request's ``X-Request-Id`` back (True by default);
        False stands for a server that echoes nothing."""
        return self._echo_request_ids

    @echo_request_ids.setter
    def echo_request_ids(self, echo: bool) -> None:
        with self._lock:
            self._echo_request_ids = bool(echo)

    @property
    def fail_rate(self) -> float:
        """The fraction of requests answered 503 at random (0 by default), after ``fail_next``."""
        return self._fail_rate

    @fail_rate.setter
    def fail_rate(self, fraction: float) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fail_rate must be between 0 and 1, got {fraction}")
        with self._lock:
            self._fail_rate = float(fraction)

    def hang(self, *, matching: bytes | None = None) -> None:
        """Hold every request read from now on, until ``release()`` or ``stop()``.

        With ``matching``, only requests whose body contains those bytes are held
        (e.g. one session's, by a marker in its data); the others are answered.
        """
        with self._lock:
            self._hanging = True
            self._hang_matching = matching

    def release(self) -> None:
        """Let the held requests go on, and stop holding new ones."""
        with self._lock:
            self._hanging = False
            self._releases += 1
        server = self._server
        if server is not None:
            server.recheck()

    def require_bearer(self, check: Callable[[str], bool] | None) -> None:
        """Answer 401 unless ``Authorization: Bearer <t>`` has ``check(t)`` true; None: off."""
        with self._lock:
            self._bearer_check = check

    # -- request path (runs on the server's event loop) --------------------

    def _admit(self, request: Request) -> _Exchange | Answered:
        """A request just read, with every fault decided for it at once (see the module doc).

        The page and its API are answered at once, past the faults (which
        rehearse the Layer API) and unrecorded; a foreign ``Host`` is refused
        first, whatever the path.
        """
        host = request.headers.get("host")
        foreign = not self._hosts.allows(host)
        if not foreign and _page.serves(request.path):
            return Answered(self._page_reply(request))
        exchange = _Exchange(self, request, received_at=time.monotonic())
        with self._lock:
            self._unanswered += 1
            self._changed.notify_all()
            if foreign:
                exchange.refusal = _error(
                    f"this collector does not answer to Host {host!r} (a defence against"
                    " DNS rebinding): it answers to its own address; allow another name with"
                    " allowed_hosts= (layer-sdk collector --allow-host NAME)",
                    403,
                )
                return exchange
            if request.framing_error is not None:  # answered 400 at once, whatever the faults
                return exchange
            exchange.echo = self._echo_request_ids
            matching = self._hang_matching
            held = self._hanging and (matching is None or matching in request.body)
            exchange.hold = self._releases if held else None
            exchange.delay = self._delay
            exchange.drop = bool(self._drops) and _take(self._drops, request.body) is not None
            if exchange.drop:
                pass
            elif self._failures and (found := _take(self._failures, request.body)) is not None:
                exchange.failure = found[0]
            elif exchange.received_at < self._failing_until:
                exchange.failure = self._window_failure
            elif self._fail_rate and random.random() < self._fail_rate:
                exchange.failure = _RATE_FAILURE
            exchange.check = self._bearer_check
        return exchange

    def _answer(self, exchange: _Exchange, dropped: bool) -> Reply | None:
        """The reply to one request (None: drop the connection), recorded before it is sent.

        Recording first means that a client holding its answer already finds
        the request in ``requests`` and its data in ``sessions``.
        """
        request = exchange.request
        try:
            parsed: Any = msgspec.json.decode(request.body)
        except (ValueError, RecursionError):  # (nested deeper than the decoder goes)
            parsed = _NOT_JSON
        reply: Reply | None
        if exchange.refusal is not None:
            reply = exchange.refusal
        elif request.framing_error is not None:
            reply = _error(request.framing_error)
        elif exchange.drop or dropped:
            reply = None
        else:
            try:
                reply = self._respond(exchange, parsed)
            except Exception as exc:  # a bug or a raising bearer check: answered, not fatal
                reply = _error(f"internal error: {exc!r}", 500)
        json = None if parsed is _NOT_JSON else parsed
        status = 0 if reply is None else reply.status
        request_id = request.headers.get("x-request-id")
        if reply is not None and exchange.echo and _echoable(request_id):
            assert request_id is not None
            reply = reply._replace(headers=(*reply.headers, ("X-Request-Id", request_id)))
        method, path, headers, body = request.method, request.path, request.headers, request.body
        self._record(
            ReceivedRequest(method, path, headers, body, json, status, exchange.received_at),
            reply,
        )
        return reply

    def _record(self, request: ReceivedRequest, reply: Reply | None) -> None:
        with self._lock:
            self._unanswered -= 1
            records = self._records
            records.record(request, reply)
            self._changed.notify_all()
            if reply is not None and 400 <= reply.status < 500:
                self._publish(_page.refusal_message(records.refusals[-1]))

    def _respond(self, exchange: _Exchange, parsed: Any) -> Reply:
        if exchange.failure is not None:
            return exchange.failure
        headers = exchange.request.headers
        check = exchange.check
        if check is not None and not _authorized(headers.get("authorization", ""), check):
            return _UNAUTHORIZED
        if exchange.request.oversize:  # refused as it was read, by the limit of that moment
            return _error(f"the body is larger than {self._max_body_bytes} bytes", 413)
        route = exchange.request.path.partition("?")[0]
        if exchange.request.method == "GET":
            return self._read(route)
        session_id = None  # None: create a session; otherwise append to this one
        if route == APPLICATIONS_PATH:
            session_id = _APPLICATION
        elif route != SESSIONS_PATH:
            match = _ACTIONS_PATH.fullmatch(route)
            if match is None:
                return _error(f"no such endpoint: {route}", 404)
            session_id = match[1]
        if exchange.request.method != "POST":
            return _NOT_ALLOWED
        request_id = headers.get("x-request-id")
        records = self._records
        with self._lock:  # look-up and storage in one step: a racing retry cannot store twice
            if request_id is not None and (seen := records.replies.get(request_id)) is not None:
                records.duplicates += 1
                return seen
            reply = self._accept(session_id, headers, parsed)
            if request_id is not None and 200 <= reply.status < 300:
                records.replies[request_id] = reply
            return reply

    def _accept(self, session_id: str | None, headers: dict[str, str], parsed: Any) -> Reply:
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return _error(f"Content-Type must be application/json, got {media_type!r}", 415)
        if parsed is _NOT_JSON:
            return _error("the body is not valid UTF-8 JSON")
        try:
            if session_id is None:
                return self._records.create_session(parsed)
            if session_id is _APPLICATION:
                return self._registry.create(parsed)
            return self._records.append_action(session_id, parsed)
        except msgspec.ValidationError as exc:  # the message names the field: "- at `$.x`"
            return _error(str(exc), 422)

    def _read(self, route: str) -> Reply:
        """A GET: the applications, or the firewall's decision on a session."""
        with self._lock:
            if route == APPLICATIONS_PATH:
                return self._registry.listing()
            match = _SESSION_PATH.fullmatch(route)
            if match is None:
                if route == SESSIONS_PATH or _ACTIONS_PATH.fullmatch(route):
                    return _NOT_ALLOWED
                return _error(f"no such endpoint: {route}", 404)
            try:
                session_id = str(uuid.UUID(match[1]))
            except ValueError:
                return _error(f"session_id {match[1]!r} is not a UUID - at `session_id`", 422)
            return self._registry.lookup(session_id)

    def _emit_event(self, event: StoredEvent) -> None:
        """Hand a stored session or action to the file, the hook and the page (lock held)."""
        if self._store is not None:
            self._store.put(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # the request was served all the same
                logger.exception("LocalCollector: the on_event hook raised")
        server = self._server
        if server is not None and server.streams:
            server.publish(_page.stored_message(event, self._records))

    # -- the page (runs on the server's event loop) ------------------------

    def _page_reply(self, request: Request) -> Reply:
        """The answer of the page or of its API: see ``collector/_page.py``."""
        with self._lock:
            answer = self._page.answer(request, self._records, self._registry, self._hosts)
            if answer.watching:  # a page opens its live stream: storage tells it from now on
                self._records.emit = self._emit_event
            if answer.message is not None:
                self._publish(answer.message)
            return answer.reply

    def _publish(self, message: bytes) -> None:
        """Write ``message`` to the pages watching, if any (from any thread)."""
        server = self._server
        if server is not None and server.streams:
            server.publish(message)


@dataclass(slots=True)
class _Exchange:
    """A request as read, and the faults decided for it then: an Exchange of the HTTP engine."""

    collector: LocalCollector
    request: Request
    received_at: float
    hold: int | None = None  # held while the collector's release count is still this
    delay: float = 0.0
    drop: bool = False
    refusal: Reply | None = None  # answered at once, whatever the faults (a foreign Host)
    failure: Reply | None = None
    check: Callable[[str], bool] | None = None  # the bearer check
    echo: bool = True  # the answer carries the request's X-Request-Id back

    def held(self) -> bool:
        return self.hold is not None and self.hold == self.collector._releases

    def answer(self, dropped: bool) -> Reply | None:
        return self.collector._answer(self, dropped)


def _echoable(request_id: str | None) -> bool:
    """Whether a request's ID may go back in an answer's head: printable ASCII, short."""
    return (
        request_id is not None
        and 0 < len(request_id) <= 200
        and request_id.isascii()
        and request_id.isprintable()
    )


def _authorized(header: str, check: Callable[[str], bool]) -> bool:
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return scheme.lower() == "bearer" and bool(token) and bool(check(token))
