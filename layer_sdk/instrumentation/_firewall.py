"""The firewall's word before a prompt leaves the process, for every provider's wrapper.

A provider wrapper asks once, after it has read the call's session and right
before the request is sent: :func:`check_before_prompt` in a plain call,
:func:`check_before_prompt_async` in an ``async`` one. With
``enable_firewall_instrumentation=True`` the client asks the firewall afresh,
bounded by ``firewall_check_timeout``, and ``LayerFirewallSessionBlocked``
propagates to the caller: the provider is never called. An ``async`` call
waits for that answer on a worker thread of the event loop, so that the loop
goes on serving other tasks meanwhile. A call without a session yet (a new one
is created for it) has no decision to ask for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._context import Recorder


def _fresh_check(client: Recorder) -> Callable[[str], None] | None:
    """The client's fresh check, or None when the firewall is not enforced."""
    prompt_check: Any = getattr(client, "_prompt_check", None)
    return None if prompt_check is None else prompt_check()


def check_before_prompt(client: Recorder, session_id: str | None) -> None:
    """Raise ``LayerFirewallSessionBlocked`` when the firewall blocks ``session_id`` now."""
    check = _fresh_check(client)
    if check is not None and session_id is not None:
        check(session_id)


async def check_before_prompt_async(client: Recorder, session_id: str | None) -> None:
    """:func:`check_before_prompt` without holding up the event loop."""
    check = _fresh_check(client)
    if check is None or session_id is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # another event loop (trio): asked here, as in a plain call
        check(session_id)
        return
    await loop.run_in_executor(None, check, session_id)
