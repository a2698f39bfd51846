"""Which session a call belongs to, and what records into a session.

A leaf module: the decorators, the provider instrumentation and the framework
integrations depend on it, not on the client, so that the client can depend on
them.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

#: Headers by which a caller names the session of a call (an OpenAI call's
#: ``extra_headers``, an HTTP request to an application with the integrations).
SESSION_HEADERS = frozenset({"x-layer-session-id", "layer-session-id"})


class PendingSession:
    """A session bound to a unit of work (a web request, a task) before it exists at Layer.

    It is created by the first call that records something in it, once,
    whichever thread or task asks first; a unit of work that records nothing
    leaves no empty session behind. ``create`` returns the new session's ID, or
    None when it could not be created (it logs why, and is not asked again).
    """

    __slots__ = ("_create", "_id", "_lock", "_settled")

    def __init__(self, create: Callable[[], str | None]) -> None:
        self._create = create
        self._id: str | None = None
        self._settled = False
        self._lock = threading.Lock()

    def resolve(self) -> str | None:
        """The session's ID, creating the session first if nobody has yet."""
        if self._settled:
            return self._id
        with self._lock:
            if not self._settled:
                try:
                    self._id = self._create()
                finally:
                    self._settled = True
            return self._id


current_session_id: contextvars.ContextVar[str | PendingSession | None] = contextvars.ContextVar(
    "layer_session_id", default=None
)
"""The session of the innermost ``@layer.session`` call, ``session_context()`` block, or
request or task run by an integration (then maybe still pending): read it with
:func:`current_session`."""


def current_session() -> str | None:
    """The ID of the current session (None outside one); a pending one is created now."""
    value = current_session_id.get()
    if isinstance(value, PendingSession):
        return value.resolve()
    return value


class Recorder(Protocol):
    """What the decorators and the instrumentation record through: a ``Client``."""

    def create_session(
        self,
        *,
        attributes: Mapping[str, Any] | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        session_id: Any = None,
        actions: Iterable[Any] | None = None,
        sync: bool | None = None,
    ) -> str:
        """Start a session; returns its ID."""

    def append_action(
        self,
        session_id: Any,
        *,
        kind: Any,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        attributes: Mapping[str, Any] | None = None,
        data: Any = None,
        error: Any = None,
        scanners: Iterable[Any] | None = None,
        sync: bool | None = None,
    ) -> None:
        """Record an action of a session."""

    def check_prompt(self, session_id: str) -> None:
        """The firewall's word right before a prompt of ``session_id`` leaves the process.

        Raises ``LayerFirewallSessionBlocked`` when the client enforces its firewall
        (``enable_firewall_instrumentation=True``) and the firewall, asked afresh, blocks
        the session: the provider is then never called. Waits about
        ``firewall_check_timeout`` at most; returns at once when nothing is enforced.
        """

    async def check_prompt_async(self, session_id: str) -> None:
        """:meth:`check_prompt` for an ``async`` call: its event loop runs on while it waits."""
