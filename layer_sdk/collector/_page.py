"""The collector's page and its JSON API: what the SDK reported, live, in a browser.

``GET /`` is a page of plain HTML, JavaScript and CSS shipped in the package
(``collector/page/``: no build step, nothing fetched from elsewhere). It reads
the collector through this JSON API, every answer ``application/json``:

``GET /api/sessions``
    The sessions, newest first: ``{"sessions": [summary, ...], "total", "next"}``.
    Query: ``limit`` (default 100, at most 1,000), ``before`` (the ``next`` of
    the previous answer, to read on), ``application`` (an application ID),
    ``q`` (text that the session's ID, application ID or attribute names and
    values contain, any case), ``failed=1`` (only sessions with a failed
    action). ``total`` counts the sessions that match. A summary is
    ``{"session_id", "application_id", "environment", "start_time",
    "end_time", "stored_at", "actions", "failed", "attributes", "preview",
    "cursor"}``: ``actions`` and ``failed`` count its actions and those with
    an ``error``; ``preview`` is the start of its first prompt; ``stored_at``
    a Unix time.
``GET /api/sessions/{session_id}``
    ``{"session": summary, "actions": [...], "from", "firewall"}``: the
    actions as received, in order, from index ``from`` (query ``from``,
    default 0); ``firewall`` is what a firewall look-up answers now.
``POST /api/sessions/{session_id}/firewall``
    Body ``{"decision": "pass" | "alert" | "block" | ..., "policy": str | null}``:
    from now on the firewall answers that decision for the session (as
    ``LocalCollector.set_firewall_decision``), with the policy as the one
    violated. Answers the decision. Only from the page's own origin: the body
    must be JSON and an ``Origin`` header, when sent, must be the collector's.
``GET /api/refusals``
    Requests answered 4xx, newest first: ``{"refusals": [...], "total"}``,
    each ``{"refused_at", "method", "path", "status", "message", "field",
    "body", "body_bytes"}`` (``field``: the path a 422 names, e.g.
    ``$.actions[0].error.code``; ``body``: its start, as text). The newest
    ``MAX_REFUSALS`` are kept; ``total`` counts all. Query: ``limit``.
``GET /api/totals``
    ``LocalCollector.totals()``: sessions, actions by kind, failed actions,
    requests, refusals, duplicates, sessions per application.
``GET /api/events``
    A server-sent event stream (``text/event-stream``): ``session`` (a new
    session's summary), ``action`` (``{"session_id", "actions", "kind",
    "failed", "preview"}``: a session's action count after one was stored, and
    the start of that action if it is a prompt), ``refusal``,
    ``firewall`` (a decision set) and ``clear``.

Every answer carries a strict Content-Security-Policy (scripts and styles from
the collector's own files only: no inline script, no ``eval``), and the page
renders every recorded text as text, never as HTML. The collector answers
only its own ``Host`` names (``_hosts.py``).
"""

from __future__ import annotations

import importlib.resources
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

import msgspec

from ._hosts import HostCheck
from ._records import Records, Refusal, error_reply
from ._registry import Registry
from ._schema import canonical_uuid
from ._server import Reply, Request
from ._store import StoredEvent

__all__ = [
    "CLEARED",
    "Page",
    "PageAnswer",
    "decision_message",
    "refusal_message",
    "serves",
    "stored_message",
    "totals",
]

#: The headers of every answer of the page and its API.
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)

#: The page's files (in ``collector/page/``), by path, with their media types.
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/static/page.css": ("page.css", "text/css; charset=utf-8"),
    "/static/icon.svg": ("icon.svg", "image/svg+xml"),
}

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PREVIEW_CHARS = 160

_SESSION = re.compile(r"/api/sessions/([^/]+)")
_FIREWALL = re.compile(r"/api/sessions/([^/]+)/firewall")
_STREAM_START = b"retry: 1000\n\n"  # the browser reconnects a second after the stream ends
CLEARED = b"event: clear\ndata: {}\n\n"


def serves(path: str) -> bool:
    """Whether ``path`` is the page's or its API's (else, the Layer API's)."""
    route = path.partition("?")[0]
    return route in STATIC_FILES or route.startswith(("/api/", "/static/"))


@dataclass(frozen=True, slots=True)
class PageAnswer:
    """An answer of the page, what to tell the pages watching (if anything), and
    whether the request opened a stream that storage must now feed."""

    reply: Reply
    message: bytes | None = None
    watching: bool = False


class _DecisionIn(msgspec.Struct, forbid_unknown_fields=True):
    decision: Literal["no_data", "pass", "skip", "alert", "block"]
    policy: str | None = None


class Page:
    """Answers the page's requests from a collector's records (its lock held)."""

    def __init__(self) -> None:
        self._files: dict[str, Reply] = {}

    def answer(
        self, request: Request, records: Records, registry: Registry, hosts: HostCheck
    ) -> PageAnswer:
        route, _, query_text = request.path.partition("?")
        query = {name: values[-1] for name, values in parse_qs(query_text).items()}
        method = request.method
        if route in STATIC_FILES or route.startswith("/static/"):
            if method not in ("GET", "HEAD"):
                return PageAnswer(_not_allowed("GET"))
            return PageAnswer(self._file(route))
        if (match := _FIREWALL.fullmatch(route)) is not None:
            if method != "POST":
                return PageAnswer(_not_allowed("POST"))
            return _set_decision(request, unquote(match[1]), registry)
        if method not in ("GET", "HEAD"):
            return PageAnswer(_not_allowed("GET"))
        try:
            if route == "/api/events":
                return PageAnswer(_stream(), watching=True)
            if route == "/api/sessions":
                return PageAnswer(_json(session_list(records, query)))
            if (match := _SESSION.fullmatch(route)) is not None:
                return PageAnswer(_session(records, registry, unquote(match[1]), query))
            if route == "/api/refusals":
                return PageAnswer(_json(refusal_list(records, _limit(query))))
            if route == "/api/totals":
                return PageAnswer(_json(totals(records)))
        except ValueError as exc:  # a query parameter that does not read
            return PageAnswer(_page_error(str(exc), 422))
        return PageAnswer(_page_error(f"no such endpoint: {route}", 404))

    def _file(self, route: str) -> Reply:
        found = self._files.get(route)
        if found is None:
            if route not in STATIC_FILES:
                return _page_error(f"no such file: {route}", 404)
            name, media_type = STATIC_FILES[route]
            data = (importlib.resources.files(__package__) / "page" / name).read_bytes()
            found = self._files[route] = Reply(200, data, SECURITY_HEADERS, media_type)
        return found


# -- the API's answers -----------------------------------------------------------------


def session_list(records: Records, query: dict[str, str]) -> dict[str, Any]:
    """The answer of ``GET /api/sessions`` (see the module doc)."""
    limit = _limit(query)
    before = query.get("before")
    application = query.get("application") or None
    text = (query.get("q") or "").strip().lower()
    failed_only = query.get("failed") in ("1", "true")
    sessions = records.sessions
    ids = list(sessions)
    end = len(ids) if before is None else max(0, min(_integer(before, "before"), len(ids)))
    filtered = application is not None or bool(text) or failed_only

    def matches(session: dict[str, Any]) -> bool:
        if application is not None and session.get("application_id") != application:
            return False
        if text and text not in _searchable(session):
            return False
        return not failed_only or any(_failed(action) for action in session["actions"])

    picked: list[dict[str, Any]] = []
    next_cursor: int | None = None
    for index in range(end - 1, -1, -1):
        session = sessions[ids[index]]
        if filtered and not matches(session):
            continue
        if len(picked) == limit:
            next_cursor = index + 1
            break
        picked.append(summary(session, records.stored_at.get(ids[index], 0.0), index))
    total = sum(1 for s in sessions.values() if matches(s)) if filtered else len(ids)
    return {"sessions": picked, "total": total, "next": next_cursor}


def summary(session: dict[str, Any], stored_at: float, index: int) -> dict[str, Any]:
    """What the list shows of a session."""
    attributes = session.get("attributes") or {}
    actions = session["actions"]
    return {
        "session_id": session["session_id"],
        "application_id": session.get("application_id"),
        "environment": attributes.get("environment"),
        "start_time": session.get("start_time"),
        "end_time": session.get("end_time"),
        "stored_at": stored_at,
        "actions": len(actions),
        "failed": sum(1 for action in actions if _failed(action)),
        "attributes": attributes,
        "preview": _preview(actions),
        "cursor": index,
    }


def _session(records: Records, registry: Registry, session_id: str, query: dict[str, str]) -> Reply:
    key = canonical_uuid(session_id)
    session = records.sessions.get(key)
    if session is None:
        return _page_error(f"no session {session_id}", 404)
    start = _integer(query.get("from", "0"), "from")
    index = list(records.sessions).index(key)
    body = {
        "session": summary(session, records.stored_at.get(key, 0.0), index),
        "actions": session["actions"][start:],
        "from": start,
        "firewall": _decision(registry, key),
    }
    return _json(body)


def _decision(registry: Registry, session_id: str) -> dict[str, Any]:
    found = registry.decisions.get(session_id)
    return found or {"session_id": session_id, "decision": "no_data", "context": {}}


def _set_decision(request: Request, session_id: str, registry: Registry) -> PageAnswer:
    """``POST /api/sessions/{id}/firewall``, refused unless it comes from the page itself.

    A page of another site can send a form's POST here (the browser does not
    ask first for a plain form): a JSON body cannot be sent that way without
    the browser asking the collector first, which it never allows, and an
    ``Origin`` that is not the collector's own is refused outright.
    """
    headers = request.headers
    origin = headers.get("origin")
    if origin is not None and origin != f"http://{headers.get('host', '')}":
        return PageAnswer(_page_error(f"requests from {origin!r} may not set decisions", 403))
    media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        return PageAnswer(_page_error("Content-Type must be application/json", 415))
    try:
        wanted = msgspec.json.decode(request.body, type=_DecisionIn)
    except msgspec.ValidationError as exc:
        return PageAnswer(_page_error(str(exc), 422))
    except msgspec.DecodeError:
        return PageAnswer(_page_error("the body is not valid UTF-8 JSON", 400))
    try:
        key = str(uuid.UUID(session_id))
    except ValueError:
        return PageAnswer(_page_error(f"{session_id!r} is not a UUID - at `session_id`", 422))
    policies = []
    if wanted.policy:
        policies = [{"id": 1, "name": wanted.policy, "severity": "high", "action": wanted.decision}]
    registry.set_decision(key, wanted.decision, policies)
    decision = registry.decisions[key]
    return PageAnswer(_json(decision), decision_message(decision))


def refusal_list(records: Records, limit: int) -> dict[str, Any]:
    """The answer of ``GET /api/refusals``."""
    newest = list(records.refusals)[-limit:][::-1]
    return {"refusals": [msgspec.structs.asdict(r) for r in newest], "total": records.refused}


def totals(records: Records) -> dict[str, Any]:
    """What ``LocalCollector.totals()`` and ``GET /api/totals`` answer."""
    actions = records.actions
    return {
        "sessions": len(records.sessions),
        "actions": len(actions),
        "actions_by_kind": dict(Counter(action.get("kind") for action in actions)),
        "failed_actions": sum(1 for action in actions if _failed(action)),
        "requests": len(records.requests),
        "refused": records.refused,
        "duplicates": records.duplicates,
        "applications": dict(
            Counter(session.get("application_id") for session in records.sessions.values())
        ),
    }


# -- the live stream's messages -------------------------------------------------------


def stored_message(event: StoredEvent, records: Records) -> bytes:
    """The message telling the pages of a session or an action just stored."""
    session = records.sessions[event.session_id]
    if event.kind == "session":
        index = len(records.sessions) - 1
        data = summary(session, event.stored_at, index)
        return _message("session", data)
    data = {
        "session_id": event.session_id,
        "actions": len(session["actions"]),
        "kind": event.body.get("kind"),
        "failed": _failed(event.body),
        # This action's start, if it is a prompt: the list shows it for a session that
        # had none (the first prompt of a session created before it). Not the session's
        # first prompt, found by going through its actions at each one stored.
        "preview": _preview([event.body]),
    }
    return _message("action", data)


def refusal_message(refusal: Refusal) -> bytes:
    return _message("refusal", msgspec.structs.asdict(refusal))


def decision_message(decision: dict[str, Any]) -> bytes:
    return _message("firewall", decision)


def _message(event: str, data: Any) -> bytes:
    # msgspec writes JSON on one line (a newline in a string is escaped): one data line.
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


def _stream() -> Reply:
    return Reply(200, _STREAM_START, SECURITY_HEADERS, "text/event-stream", stream=True)


# -- helpers ---------------------------------------------------------------------------


def _failed(action: Any) -> bool:
    return isinstance(action, dict) and action.get("error") is not None


def _searchable(session: dict[str, Any]) -> str:
    attributes = session.get("attributes") or {}
    words = [session["session_id"], str(session.get("application_id"))]
    for name, value in attributes.items():
        words.append(f"{name}={value}")
    return " ".join(words).lower()


def _preview(actions: list[dict[str, Any]]) -> str | None:
    """The start of the first prompt's last message: what the session was asked."""
    for action in actions:
        if action.get("kind") != "completion_prompt":
            continue
        data = action.get("data")
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not messages:
            return None
        content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
        if not isinstance(content, str):
            return None
        return content[:PREVIEW_CHARS]
    return None


def _limit(query: dict[str, str]) -> int:
    return max(1, min(_integer(query.get("limit", str(DEFAULT_LIMIT)), "limit"), MAX_LIMIT))


def _integer(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{name} must be a whole number, got {text[:40]!r} - at `{name}`")
    return int(text)


def _json(body: Any) -> Reply:
    return Reply(200, msgspec.json.encode(body), SECURITY_HEADERS)


def _page_error(message: str, status: int) -> Reply:
    reply = error_reply(message, status)
    return reply._replace(headers=SECURITY_HEADERS)


def _not_allowed(method: str) -> Reply:
    reply = _page_error(f"method not allowed: use {method}", 405)
    return reply._replace(headers=(*SECURITY_HEADERS, ("Allow", method)))
