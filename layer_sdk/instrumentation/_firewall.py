"""The firewall's word before a prompt leaves the process, for every provider's wrapper.

A provider wrapper asks once, after it has read the call's session and right
before the request is sent: :func:`check_before_prompt` in a plain call,
:func:`check_before_prompt_async` in an ``async`` one. With
``enable_firewall_instrumentation=True`` the client asks the firewall afresh,
and ``LayerFirewallSessionBlocked`` propagates to the caller: the provider is
never called. Either way the call waits about ``firewall_check_timeout`` at
most: the look-up runs on a thread of the firewall's own, and an ``async``
call awaits it on its event loop, which serves other tasks meanwhile (the
loop's default executor, the application's, is not used). A call without a
session yet (a new one is created for it) has no decision to ask for.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from .._context import Recorder


class PromptGuard(Protocol):
    """What the client enforces before a prompt leaves (its firewall)."""

    def check_fresh(self, session_id: str) -> None:
        """Raise ``LayerFirewallSessionBlocked`` when the firewall blocks the session now."""

    async def check_fresh_async(self, session_id: str) -> None:
        """:meth:`check_fresh`, awaited without holding up the event loop."""


def _guard(client: Recorder) -> PromptGuard | None:
    """The client's firewall, or None when it is not enforced."""
    prompt_guard: Any = getattr(client, "_prompt_guard", None)
    return None if prompt_guard is None else prompt_guard()


def check_before_prompt(client: Recorder, session_id: str | None) -> None:
    """Raise ``LayerFirewallSessionBlocked`` when the firewall blocks ``session_id`` now."""
    guard = _guard(client)
    if guard is not None and session_id is not None:
        guard.check_fresh(session_id)


async def check_before_prompt_async(client: Recorder, session_id: str | None) -> None:
    """:func:`check_before_prompt` without holding up the event loop."""
    guard = _guard(client)
    if guard is None or session_id is None:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio): asked here, as in a plain call
        guard.check_fresh(session_id)
        return
    await guard.check_fresh_async(session_id)
