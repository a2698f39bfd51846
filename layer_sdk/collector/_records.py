"""What a local collector has stored and answered: the data its inspection and its page read.

:class:`Records` holds the sessions and actions stored, every request read
(:class:`ReceivedRequest`), the answers kept for ``X-Request-Id`` and the
refusals (each request answered 4xx, with the reason). It stores a session or
an action once the body passed the contract's check (``_schema``), and hands
each one stored to ``emit`` when that is set (the SQLite file, the
``on_event`` hook, the page's live stream). The collector holds its lock
around every use.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ._schema import canonical_uuid, check_action, check_session
from ._server import Reply
from ._store import StoredEvent

__all__ = ["MAX_REFUSALS", "ReceivedRequest", "Records", "Refusal", "error_reply"]

MAX_REFUSALS = 1000
"""Refusals kept for the page (the newest; ``Records.refused`` counts them all)."""

_REFUSED_BODY = 16384  # bytes of a refused body kept with its refusal
_FIELD = re.compile(r" - at `([^`]*)`$")  # the field path that ends a 422's message


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One HTTP request as the collector read it, and the status it answered.

    ``headers`` has lower-cased names (a repeated header keeps its last value),
    ``json`` is the decoded body or None, and ``status`` is 0 when the
    connection was closed without an answer. A body refused unread for its
    size (``max_body_bytes``) is empty.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    received_at: float


class Refusal(msgspec.Struct, frozen=True, gc=False):
    """A request answered 4xx, as the page shows it.

    ``message`` is the answer's ``error`` text; ``field`` the path of the
    field that broke the contract when the message names one (a 422, e.g.
    ``$.actions[0].error.code``); ``body`` the start of the request's body, as
    text. No header is kept: a client's credentials stay out of it.
    """

    refused_at: float  # Unix time
    method: str
    path: str
    status: int
    message: str
    field: str | None
    body: str
    body_bytes: int


def error_reply(message: str, status: int = 400) -> Reply:
    """An answer ``{"error": message}``."""
    return Reply(status, msgspec.json.encode({"error": message}))


_ACCEPTED = Reply(202, b"{}")


class Records:
    """Sessions, actions, requests and refusals, in arrival order."""

    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.stored_at: dict[str, float] = {}  # session id -> Unix time it was stored
        # Every action in arrival order, and the id of its session: two lists rather
        # than one of pairs, as a long run stores many (a pair would be one more
        # object for the garbage collector to go through, for each).
        self.actions: list[dict[str, Any]] = []
        self.action_sessions: list[str] = []
        self.requests: list[ReceivedRequest] = []
        self.replies: dict[str, Reply] = {}  # X-Request-Id -> its 2xx answer
        self.duplicates = 0
        self.refusals: deque[Refusal] = deque(maxlen=MAX_REFUSALS)
        self.refused = 0  # every request answered 4xx
        # Told of each session and action stored (None: nobody listens).
        self.emit: Callable[[StoredEvent], None] | None = None

    def load(
        self,
        sessions: list[tuple[dict[str, Any], float]],
        actions: list[tuple[str, dict[str, Any]]],
    ) -> None:
        """Take what a file kept: (session, stored at) and (session id, action) pairs."""
        for stored, stored_at in sessions:
            session_id = stored["session_id"]
            self.sessions[session_id] = {**stored, "actions": []}
            self.stored_at[session_id] = stored_at
        for session_id, action in actions:
            self.sessions[session_id]["actions"].append(action)
            self.actions.append(action)
            self.action_sessions.append(session_id)

    def clear(self) -> None:
        self.sessions.clear()
        self.stored_at.clear()
        self.actions.clear()
        self.action_sessions.clear()
        self.requests.clear()
        self.replies.clear()
        self.duplicates = 0
        self.refusals.clear()
        self.refused = 0

    def record(self, request: ReceivedRequest, reply: Reply | None) -> None:
        """Keep a request read and answered (``reply`` None: dropped); a 4xx as a refusal too."""
        self.requests.append(request)
        if reply is not None and 400 <= reply.status < 500:
            self.refused += 1
            self.refusals.append(_refusal(request, reply))

    # -- storage ---------------------------------------------------------------------

    def create_session(self, body: Any) -> Reply:
        """Store a session (and the actions it carries); raises ValidationError (422)."""
        # A random id with the version bits of a UUID 5 (cheaper than hashing a uuid4).
        session_id = check_session(body) or str(uuid.UUID(bytes=os.urandom(16), version=5))
        if session_id in self.sessions:
            return error_reply(f"session {session_id} already exists - at `$.session_id`", 409)
        actions = body.get("actions") or []
        now = time.time()
        self.sessions[session_id] = {**body, "session_id": session_id, "actions": list(actions)}
        self.stored_at[session_id] = now
        self.actions.extend(actions)
        self.action_sessions.extend([session_id] * len(actions))
        if self.emit is not None:
            fields = {key: value for key, value in body.items() if key != "actions"}
            self.emit(StoredEvent("session", session_id, {**fields, "session_id": session_id}, now))
            for stored in actions:
                self.emit(StoredEvent("action", session_id, stored, now))
        return Reply(200, msgspec.json.encode({"session_id": session_id}))

    def append_action(self, session_id: str, body: Any) -> Reply:
        """Store an action of a known session; raises ValidationError (422)."""
        check_action(body)
        session = self.sessions.get(session_id) or self.sessions.get(canonical_uuid(session_id))
        if session is None:
            return error_reply(f"no session {session_id}", 404)
        session["actions"].append(body)
        self.actions.append(body)
        self.action_sessions.append(session["session_id"])
        if self.emit is not None:
            self.emit(StoredEvent("action", session["session_id"], body, time.time()))
        return _ACCEPTED


def _refusal(request: ReceivedRequest, reply: Reply) -> Refusal:
    try:
        message = str(msgspec.json.decode(reply.body).get("error", ""))
    except (ValueError, AttributeError):
        message = reply.body[:200].decode("utf-8", "replace")
    field = _FIELD.search(message)
    return Refusal(
        refused_at=time.time(),
        method=request.method,
        path=request.path,
        status=reply.status,
        message=message,
        field=None if field is None else field[1],
        body=request.body[:_REFUSED_BODY].decode("utf-8", "replace"),
        body_bytes=len(request.body),
    )
