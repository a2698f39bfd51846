"""ASGI middleware: each HTTP request and WebSocket connection runs in a Layer session.

Works with any ASGI 3 application (FastAPI, Starlette, Django's ASGI handler,
Quart...)::

    app.add_middleware(LayerMiddleware)            # FastAPI, Starlette
    application = LayerMiddleware(get_asgi_application())   # Django

How the session is picked is ``_sessions``'s: the application's
``session_id=`` function, else the request's ``X-Layer-Session-Id`` (or
``Layer-Session-Id``) header, else a new session, created when the first
action is recorded in it. The session is the current one (``_context``) for
the whole call of the application: its handler, a streamed body (the
application sends it before its call returns), background tasks run after
the response, and the tasks and threads the framework starts from it (they
copy the context). A WebSocket connection is one session, as a chat over it is
one conversation. ``lifespan`` and any other scope pass through untouched.

The application's exceptions propagate unchanged; a failure of the middleware
itself is logged and the request runs without a session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from .. import layer
from .._client import Client
from .._context import SESSION_HEADERS, current_session_id
from ._sessions import PathFilter, SessionPicker, describe, throttled_log

__all__ = ["LayerMiddleware", "request_attributes"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SESSION_SCOPES = frozenset({"http", "websocket"})
_HEADER_NAMES = frozenset(name.encode() for name in SESSION_HEADERS)


def request_attributes(scope: Scope) -> dict[str, str]:
    """The session attributes the middleware records by default.

    ``http.request.method``, ``url.path``, ``url.scheme``, and ``http.route``
    (the route's template, e.g. ``/chats/{chat_id}``) when the framework has
    matched one by the time the session is created. Never headers (they carry
    credentials and cookies) nor the query string (it may carry tokens).
    """
    attributes = {
        "url.path": str(scope.get("path", "")),
        "url.scheme": str(scope.get("scheme", "")),
    }
    method = scope.get("method")
    if isinstance(method, str):
        attributes["http.request.method"] = method
    route = getattr(scope.get("route"), "path", None)  # set by the routers of Starlette/FastAPI
    if isinstance(route, str):
        attributes["http.route"] = route
    return attributes


class LayerMiddleware:
    """Runs each HTTP request and WebSocket connection of ``app`` in a Layer session.

    ``client``: the client sessions are created with (default: ``layer``).
    ``session_id``: a function of the ASGI scope that returns the ID of an
    existing session (e.g. the conversation's) or None; it is asked first.
    ``trust_session_header``: take the session named by the request's
    ``X-Layer-Session-Id`` / ``Layer-Session-Id`` header (turn off when the
    callers are not yours). ``attributes``: a function of the scope that
    returns a new session's attributes (default: :func:`request_attributes`).
    ``exclude_paths``: paths whose requests run without a session (``/health``
    excludes ``/health`` and what is under ``/health/``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: Client | None = None,
        session_id: Callable[[Scope], Any] | None = None,
        trust_session_header: bool = True,
        attributes: Callable[[Scope], Mapping[str, Any]] = request_attributes,
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._picker = SessionPicker[Scope](
            layer if client is None else client,
            where="ASGI middleware",
            named_by="the request's X-Layer-Session-Id header",
            session_id=session_id,
            attributes=attributes,
        )
        self._trust_header = bool(trust_session_header)
        self._excluded = PathFilter(exclude_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _SESSION_SCOPES:  # lifespan, and scopes of later ASGI versions
            await self.app(scope, receive, send)
            return
        try:
            if self._excluded and self._excluded.excludes(scope["path"]):
                session = None
            else:
                named = _session_header(scope) if self._trust_header else None
                session = self._picker.pick(scope, named)
        except Exception as problem:  # a bug of ours costs the session, not the request
            throttled_log.warn(
                "ASGI middleware:bug",
                "layer-sdk ASGI middleware failed (%s); the request runs without a session",
                describe(problem),
            )
            session = None
        if session is None:
            await self.app(scope, receive, send)
            return
        token = current_session_id.set(session)
        try:
            await self.app(scope, receive, send)
        finally:
            current_session_id.reset(token)


def _session_header(scope: Scope) -> str | None:
    """The value of the request's session header, or None."""
    for name, value in scope.get("headers") or ():
        if name in _HEADER_NAMES:  # ASGI servers lower-case header names
            return bytes(value).decode("latin-1")
    return None
