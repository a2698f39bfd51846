"""WSGI middleware: each request runs in a Layer session.

Works with any WSGI application (Flask, Django, Pyramid, Bottle...)::

    app.wsgi_app = LayerMiddleware(app.wsgi_app)            # Flask
    application = LayerMiddleware(get_wsgi_application())   # Django, in wsgi.py

How the session is picked is ``_sessions``'s: the application's
``session_id=`` function, else the request's ``X-Layer-Session-Id`` (or
``Layer-Session-Id``) header, else a new session, created when the first
action is recorded in it.

A WSGI application returns an iterable that the server consumes after the
call has returned (a streamed response: a generator that calls the model
chunk by chunk), and closes when it is done or the client went away. So the
request gets a context of its own (``contextvars.copy_context()``) in which
the session is current, and the application's call, each step of the
iteration and ``close()`` all run in it, whichever thread the server uses.
A list or tuple (already produced) and the server's ``wsgi.file_wrapper``
are handed back as they are.

The application's exceptions propagate unchanged; a failure of the middleware
itself is logged and the request runs without a session.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .. import layer
from .._client import Client
from .._context import current_session_id
from ._sessions import PathFilter, SessionPicker, describe, throttled_log

__all__ = ["LayerMiddleware", "request_attributes"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_HEADER_KEYS = ("HTTP_X_LAYER_SESSION_ID", "HTTP_LAYER_SESSION_ID")


def request_attributes(environ: Environ) -> dict[str, str]:
    """The session attributes the middleware records by default.

    ``http.request.method``, ``url.path`` (the script name and the path info)
    and ``url.scheme``. Never headers (they carry credentials and cookies) nor
    the query string (it may carry tokens).
    """
    return {
        "http.request.method": str(environ.get("REQUEST_METHOD", "")),
        "url.path": _text(environ.get("SCRIPT_NAME", "")) + _text(environ.get("PATH_INFO", "")),
        "url.scheme": str(environ.get("wsgi.url_scheme", "")),
    }


def _text(value: Any) -> str:
    """A path of the environ as the client sent it: WSGI gives its bytes as latin-1 text."""
    try:
        return str(value).encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a server that decoded it already
        return str(value)


class LayerMiddleware:
    """Runs each request of ``app`` in a Layer session.

    ``client``: the client sessions are created with (default: ``layer``).
    ``session_id``: a function of the WSGI environ that returns the ID of an
    existing session (e.g. the conversation's) or None; it is asked first.
    ``trust_session_header``: take the session named by the request's
    ``X-Layer-Session-Id`` / ``Layer-Session-Id`` header (turn off when the
    callers are not yours). ``attributes``: a function of the environ that
    returns a new session's attributes (default: :func:`request_attributes`).
    ``exclude_paths``: paths (``PATH_INFO``) whose requests run without a
    session (``/health`` excludes ``/health`` and what is under ``/health/``).
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        client: Client | None = None,
        session_id: Callable[[Environ], Any] | None = None,
        trust_session_header: bool = True,
        attributes: Callable[[Environ], Mapping[str, Any]] = request_attributes,
        exclude_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._picker = SessionPicker[Environ](
            layer if client is None else client,
            where="WSGI middleware",
            named_by="the request's X-Layer-Session-Id header",
            session_id=session_id,
            attributes=attributes,
        )
        self._trust_header = bool(trust_session_header)
        self._excluded = PathFilter(exclude_paths)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            context = self._context_of(environ)
        except Exception as problem:  # a bug of ours costs the session, not the request
            throttled_log.warn(
                "WSGI middleware:bug",
                "layer-sdk WSGI middleware failed (%s); the request runs without a session",
                describe(problem),
            )
            context = None
        if context is None:
            return self.app(environ, start_response)
        result = context.run(self.app, environ, start_response)
        if type(result) in (list, tuple):
            return result
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            return result  # the server may send it with sendfile; nothing of ours runs there
        return _InContext(result, context)

    def _context_of(self, environ: Environ) -> contextvars.Context | None:
        """A context in which the request's session is current; None: no session."""
        if self._excluded and self._excluded.excludes(_text(environ.get("PATH_INFO", ""))):
            return None
        named = None
        if self._trust_header:
            named = next((environ[key] for key in _HEADER_KEYS if key in environ), None)
        session = self._picker.pick(environ, named)
        context = contextvars.copy_context()
        context.run(current_session_id.set, session)
        return context


class _InContext:
    """The application's response iterable, consumed and closed in the request's context."""

    __slots__ = ("_context", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], context: contextvars.Context) -> None:
        self._result = result
        self._context = context
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._context.run(iter, self._result)
        return self._context.run(next, self._iterator)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            self._context.run(close)
