"""Test what an application reports: a client pointed at a local collector, and what it received.

The pytest plugin's fixtures (``layer_collector``, ``layer_client``,
``layer_records``; see ``docs/testing.md``) are built on these two, which work
as well without pytest::

    from layer_sdk import layer
    from layer_sdk.collector import LocalCollector
    from layer_sdk.testing import LayerRecords, reporting_to

    with LocalCollector() as collector, reporting_to(collector):
        run_my_app()  # reports through the global layer
        assert LayerRecords(layer, collector).prompts() == ["Plan a weekend in Lisbon"]

Nothing here imports pytest.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from ._client import Client
from .collector import LocalCollector

__all__ = ["APPLICATION_ID", "INIT_OPTIONS", "LayerRecords", "reporting_to"]

#: The application the sessions of a test are reported for.
APPLICATION_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "layer-sdk:testing"))
#: What ``reporting_to`` gives ``init()`` besides the collector's URL and the application:
#: on whatever ``LAYER_ENABLED`` says, and short delays so that a test waits little.
INIT_OPTIONS: Mapping[str, Any] = {"enabled": True, "flush_interval": 0.05, "shutdown_timeout": 5.0}
#: How long a read of ``LayerRecords`` waits for the client's queue to be delivered, seconds.
FLUSH_TIMEOUT = 10.0


@contextlib.contextmanager
def reporting_to(
    collector: LocalCollector, client: Client | None = None, **options: Any
) -> Iterator[Client]:
    """``client`` (default: the global ``layer``) initialized against ``collector`` for the
    block, then shut down (what is queued is delivered first, within ``shutdown_timeout``).

    ``options`` go to ``init()`` after ``INIT_OPTIONS``, the URL and ``APPLICATION_ID``.
    The ``LAYER_*`` variables are hidden while ``init()`` runs: a ``LAYER_ENABLED=false``
    or the ``LAYER_OIDC_*`` of a developer's shell must not reach a test. Raises
    ``LayerAlreadyInitializedError`` when the client is running already.
    """
    if client is None:
        from . import layer

        client = layer
    settings = {
        **INIT_OPTIONS,
        "base_url": collector.url,
        "application_id": APPLICATION_ID,
        **options,
    }
    hidden = {name: value for name, value in os.environ.items() if name.startswith("LAYER_")}
    try:
        for name in hidden:
            del os.environ[name]
        client.init(**settings)
    finally:
        os.environ.update(hidden)
    try:
        yield client
    finally:
        client.shutdown()


class LayerRecords:
    """What a collector received from a client, each read after a flush of the client.

    A read first flushes the client, so that a test may assert right after the
    code under test returns; it raises ``AssertionError`` when an event was
    lost on the way (refused by the collector, or not delivered within
    ``FLUSH_TIMEOUT``), with the client's counts by reason.
    """

    def __init__(self, client: Client, collector: LocalCollector) -> None:
        self.client = client
        self.collector = collector

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """The sessions received, each with its ``actions``, in the order they arrived."""
        self.flush()
        return self.collector.sessions

    def actions(self, kind: Any = None, *, session_id: str | None = None) -> list[dict[str, Any]]:
        """The actions received, in order; only those of ``kind`` (a ``SessionActionKind``
        or its value) and of one session when given."""
        self.flush()
        wanted = None if kind is None else getattr(kind, "value", kind)
        return [
            action
            for action in self.collector.actions(session_id)
            if wanted is None or action["kind"] == wanted
        ]

    def prompts(self, role: str | None = "user") -> list[str]:
        """For each ``completion_prompt``, the text of its last message of ``role`` (None:
        of any role): the turn it asked, as each prompt repeats the conversation so far."""
        texts = []
        for action in self.actions("completion_prompt"):
            messages = [m for m in _messages(action) if role is None or m.get("role") == role]
            texts.append(_text(messages[-1]) if messages else "")
        return texts

    def outputs(self) -> list[str]:
        """For each ``completion_output``, the text of its messages, joined by newlines."""
        return [
            "\n".join(_text(message) for message in _messages(action))
            for action in self.actions("completion_output")
        ]

    def flush(self) -> None:
        """Deliver what the client holds; raise ``AssertionError`` when something was lost."""
        if not self.client.flush(timeout=FLUSH_TIMEOUT):
            stats = self.client.stats()
            raise AssertionError(
                f"not every event reached the collector within {FLUSH_TIMEOUT:g} s: "
                f"{stats.queued} still queued, dropped {stats.dropped_by_reason}, "
                f"failed {stats.failed_by_reason}"
            )


def _messages(action: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = action.get("data")
    messages = data.get("messages") if isinstance(data, Mapping) else None
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, Mapping)]


def _text(message: Mapping[str, Any]) -> str:
    """A message's text: its content, or the text of its content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""
