"""Which session a call belongs to, and what records into a session.

A leaf module: the decorators and the provider instrumentation depend on it,
not on the client, so that the client can depend on them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

current_session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "layer_session_id", default=None
)
"""The session of the innermost ``@layer.session`` call or ``session_context()`` block."""


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
