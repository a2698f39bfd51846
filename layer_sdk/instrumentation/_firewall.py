"""The firewall's word before a prompt leaves the process, for every provider's wrapper.

A provider wrapper calls :func:`check_before_prompt` once, after it has read
the call's session and before it calls the provider. With
``enable_firewall_instrumentation=True`` the client asks the firewall afresh,
bounded by ``firewall_check_timeout`` (in an ``async`` call too: that many
seconds at most of the event loop, the price of deciding before the prompt is
sent), and ``LayerFirewallSessionBlocked`` propagates to the caller: the
provider is never called. A call without a session yet (a new one is created
for it) has no decision to ask for.
"""

from __future__ import annotations

from typing import Any

from .._context import Recorder


def check_before_prompt(client: Recorder, session_id: str | None) -> None:
    """Raise ``LayerFirewallSessionBlocked`` when the firewall blocks ``session_id`` now."""
    if session_id is None:
        return
    check: Any = getattr(client, "_check_before_prompt", None)
    if check is not None:
        check(session_id)
