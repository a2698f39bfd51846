"""What the OpenTelemetry tests share: a tracer provider with Layer's processor beside another.

``traced`` (a fixture of the test modules) gives a :class:`Traced`: a real SDK
``TracerProvider`` (never the global one) with a ``LayerSpanProcessor`` for a
client of the local collector, and an in-memory exporter behind a
``SimpleSpanProcessor``, the stand-in for the application's own exporter
(Sentry's, an OTLP one): it must receive every span, whatever Layer does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from layer_sdk import Client
from layer_sdk.collector import LocalCollector
from layer_sdk.otel import LayerSpanProcessor

from .helpers import MakeClient


class Traced:
    """A provider, its Layer processor, the other exporter, and the Layer client and collector."""

    def __init__(self, client: Client, collector: LocalCollector, **provider: Any) -> None:
        self.client = client
        self.collector = collector
        self.provider = TracerProvider(**provider)
        self.exported = InMemorySpanExporter()
        self.processor = LayerSpanProcessor(client)
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exported))
        self.tracer = self.provider.get_tracer("tests.otel")

    def span(
        self,
        name: str,
        attributes: dict[str, Any],
        *,
        events: list[tuple[str, dict[str, Any]]] = (),  # type: ignore[assignment]
        error: str | None = None,
    ) -> Any:
        """A finished span with ``attributes`` and ``events``; ``error``: its status description."""
        from opentelemetry.trace import Status, StatusCode

        span = self.tracer.start_span(name, attributes=attributes)
        for event_name, event_attributes in events:
            span.add_event(event_name, event_attributes)
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        return span

    def actions(self, count: int) -> list[dict[str, Any]]:
        """Exactly ``count`` actions, once delivered; the collector refused nothing."""
        assert self.client.flush(10)
        assert_all_accepted(self.collector)
        found = self.collector.actions()
        assert len(found) == count, [(a["kind"], a.get("data")) for a in found]
        return found


def assert_all_accepted(collector: LocalCollector) -> None:
    """Every request the collector read passed its strict check of the wire contract."""
    refused = [(r.path, r.status, r.body[:300]) for r in collector.requests if r.status // 100 != 2]
    assert not refused, refused


def make_traced(make_client: MakeClient, collector: LocalCollector, **options: Any) -> Traced:
    """A :class:`Traced` whose client records no provider call natively (unless told)."""
    options.setdefault("disable_instrumentations", ["openai", "anthropic"])
    provider = options.pop("provider", {})
    return Traced(make_client(**options), collector, **provider)


def traced_fixture() -> Any:
    """The ``traced`` fixture, for a test module to bind (``traced = traced_fixture()``)."""

    @pytest.fixture(name="traced")
    def traced(make_client: MakeClient, collector: LocalCollector) -> Iterator[Traced]:
        setup = make_traced(make_client, collector)
        yield setup
        setup.provider.shutdown()

    return traced
