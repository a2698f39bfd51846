"""How an integration picks the session of one unit of work: a request, a connection, a task.

In this order:

1. the application's own choice, when it gave a ``session_id=`` function and
   that function names a session for this unit of work;
2. the session the caller named (a request's ``X-Layer-Session-Id`` header, a
   task's ``layer_session_id`` header), unless the integration is told not to
   trust callers with that;
3. else a new session, *pending*: it is created at Layer, with the unit's
   start time and attributes, when the first action is recorded in it, so that
   a request that records nothing (a health check, a static file, most of a
   web application's traffic) leaves no empty session behind.

A session named by the application or the caller must exist already (an
earlier request of the same conversation created it): the unit of work is
bound to it and nothing is created, since the API refuses a second create of
the same ID. Any UUID is taken, as the provider instrumentation takes one
from ``extra_headers``.

Nothing here raises into the host's request or task. A name that is no UUID,
a ``session_id=`` or ``attributes=`` function that raises, a session that
cannot be created: each is logged (a warning at once, then at most one line
per kind every ``ThrottledLog.INTERVAL`` seconds, with how many were left
unsaid) and the unit of work gets a new session, or none.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._context import PendingSession
from .._exceptions import LayerSchemaValidationError
from .._schemas import session_id_text

if TYPE_CHECKING:
    from .._client import Client

logger = logging.getLogger("layer_sdk")

Work = TypeVar("Work")
"""A unit of work as the framework hands it over: an ASGI scope, a WSGI environ, a task."""


class ThrottledLog:
    """Warnings about what the host or its callers hand the integrations.

    Callers control these (a client sending a bad header on every request): the
    first of each kind is logged at once, then at most one line every
    ``INTERVAL`` seconds, which says how many were left unsaid meanwhile.
    """

    INTERVAL = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}
        os.register_at_fork(after_in_child=self._reset)

    def warn(self, kind: str, message: str, *args: Any) -> None:
        """Log ``message % args`` as a warning, unless ``kind`` was logged in the last interval."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.INTERVAL:
                self._unsaid[kind] = self._unsaid.get(kind, 0) + 1
                return
            self._last[kind] = now
            unsaid = self._unsaid.pop(kind, 0)
        if unsaid:
            message += " (and %d more like it since the last such line)"
            args = (*args, unsaid)
        logger.warning(message, *args)

    def _reset(self) -> None:
        # A forked child may have been made while another thread held the lock.
        self._lock = threading.Lock()


#: The warnings of every integration of this process.
throttled_log = ThrottledLog()


def describe(problem: BaseException) -> str:
    """``Type: message`` of an exception raised by the host's code, whatever its ``__str__``."""
    try:
        return f"{type(problem).__name__}: {problem}"[:300]
    except Exception:
        return type(problem).__name__


def check_callable(name: str, value: Any) -> None:
    """Refuse an option that must be a function and is not, naming it."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function, got {type(value).__name__}")


class PathFilter:
    """The paths whose requests run without a session (health checks, metrics).

    ``/health`` matches ``/health`` and everything under ``/health/``, not ``/healthy``.
    """

    __slots__ = ("_exact", "_prefixes")

    def __init__(self, paths: Iterable[str]) -> None:
        if isinstance(paths, (str, bytes)):
            raise TypeError(f"exclude_paths must be a list of paths, got the string {paths!r}")
        exact = []
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(
                    f"each of exclude_paths must be a path starting with /, got {path!r}"
                )
            exact.append(path.rstrip("/") or "/")
        self._exact = frozenset(exact)
        self._prefixes = tuple(path.rstrip("/") + "/" for path in exact)

    def __bool__(self) -> bool:
        return bool(self._exact)

    def excludes(self, path: str) -> bool:
        """Whether a request to ``path`` runs without a session."""
        return path in self._exact or path.startswith(self._prefixes)


class SessionPicker(Generic[Work]):
    """Picks the session of each unit of work of one integration (see the module doc).

    ``where`` names the integration in log lines; ``named_by`` says where a
    caller names the session (e.g. "the X-Layer-Session-Id header").
    """

    def __init__(
        self,
        client: Client,
        *,
        where: str,
        named_by: str,
        session_id: Callable[[Work], Any] | None,
        attributes: Callable[[Work], Mapping[str, Any]],
    ) -> None:
        check_callable("session_id", session_id)
        check_callable("attributes", attributes)
        self.client = client
        self._where = where
        self._named_by = named_by
        self._chosen = session_id
        self._attributes = attributes

    def pick(self, work: Work, named: Any) -> str | PendingSession:
        """The session of ``work``; ``named``: what the caller sent to name one, or None."""
        chosen = self._chosen
        if chosen is not None:
            try:
                value = chosen(work)
            except Exception as problem:
                throttled_log.warn(
                    f"{self._where}:session_id-raised",
                    "layer-sdk %s: the session_id function raised %s; the work gets a new session",
                    self._where,
                    describe(problem),
                )
                value = None
            if value is not None:
                found = self._known(value, "the session_id function returned")
                if found is not None:
                    return found
        if named is not None:
            found = self._known(named, f"{self._named_by} is")
            if found is not None:
                return found
        started = datetime.now(timezone.utc)
        return PendingSession(lambda: self._create(work, started))

    def _known(self, value: Any, what: str) -> str | None:
        try:
            return session_id_text(value)
        except LayerSchemaValidationError:
            throttled_log.warn(
                f"{self._where}:{what}",
                "layer-sdk %s: %s %.60r, which is not a session ID (a UUID); "
                "the work gets a new session",
                self._where,
                what,
                value,
            )
            return None

    def _create(self, work: Work, started: datetime) -> str | None:
        """Create the pending session of ``work``: called once, by its first action."""
        try:
            attributes: Mapping[str, Any] | None = self._attributes(work)
        except Exception as problem:
            throttled_log.warn(
                f"{self._where}:attributes-raised",
                "layer-sdk %s: the attributes function raised %s; "
                "the session is created without attributes",
                self._where,
                describe(problem),
            )
            attributes = None
        try:
            try:
                return self.client.create_session(
                    attributes=attributes, start_time=started, sync=False
                )
            except LayerSchemaValidationError as problem:
                if not attributes:
                    raise
                throttled_log.warn(
                    f"{self._where}:bad-attributes",
                    "layer-sdk %s: the session's attributes were refused (%s); "
                    "it is created without them",
                    self._where,
                    problem,
                )
                return self.client.create_session(start_time=started, sync=False)
        except Exception as problem:
            throttled_log.warn(
                f"{self._where}:create",
                "layer-sdk %s: could not create the session of a request or task: %s; "
                "what it records is not reported",
                self._where,
                describe(problem),
            )
            return None
