"""``LayerSpanProcessor``: the finished GenAI spans of a ``TracerProvider`` as Layer actions.

On the caller's thread, ``on_start`` notes two things and no more: the
``session_context()`` session active as the span starts, and whether the
span starts inside a call the native instrumentation records (``_native``).
The rest happens in ``on_end``, on whichever thread ends the span: the span
is read (``_spans``, ``_content``), its session chosen (``_sessions``), its
actions appended (``_actions``: encode and enqueue, no network). Nothing
raises into the tracer: a failure of ours is logged, throttled (``_problems``).

The same object is a ``LogRecordProcessor``: added to a ``LoggerProvider``,
it reads the message events that instrumentations of the conventions before
1.37 emit as log records, joined to their span by its ID.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from .._client import Client
from .._context import PendingSession, current_session_id
from . import _native, _spans
from ._actions import record
from ._completion_hook import take_content
from ._content import EVENT_NAMES
from ._problems import PROBLEMS
from ._sessions import Sessions

logger = logging.getLogger("layer_sdk")

#: Spans started and not ended that the processor keeps a note of (a session, a mark), and
#: spans with message events or claims waiting: at most this many each, oldest dropped.
MAX_PENDING = 4096


class LayerSpanProcessor(SpanProcessor, LogRecordProcessor):
    """Records the GenAI calls of the spans of the ``TracerProvider`` it is added to.

    ``client`` is the Layer client the actions go to (default: the global
    ``layer``, which must be initialized before spans end). Add it to your own
    provider (``provider.add_span_processor(LayerSpanProcessor())``): it never
    sets or replaces the global tracer provider. See ``docs/opentelemetry.md``.
    """

    def __init__(self, client: Client | None = None) -> None:
        if client is None:
            from .. import layer

            client = layer
        self._client = client
        self._sessions = Sessions(client)
        self._lock = threading.Lock()
        #: span ID -> (the context's session at start, started inside a recorded call).
        self._started: dict[int, tuple[str | PendingSession | None, bool]] = {}
        #: span ID -> True: a call below this span was recorded (natively or from its span).
        self._claimed: dict[int, bool] = {}
        #: span ID -> (event name, body) of its message events emitted as log records.
        self._events: dict[int, list[tuple[str, Any]]] = {}
        _native.install()

    # -- the caller's thread ---------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Note the context's session and whether a natively recorded call is running."""
        try:
            _native.span_started(span)
            session = current_session_id.get()
            native = _native.in_recorded_call()
            if session is None and not native:
                return
            with self._lock:
                _bounded(self._started)[span.get_span_context().span_id] = (session, native)
        except Exception as exc:
            PROBLEMS("noting a span's start", exc)

    def on_emit(self, log_record: Any) -> None:
        """A log record: kept when it is a message event of a span (read when the span ends)."""
        try:
            record_ = getattr(log_record, "log_record", log_record)
            name = getattr(record_, "event_name", None)
            if name is None:
                attributes = getattr(record_, "attributes", None) or {}
                name = attributes.get("event.name")
            if name not in EVENT_NAMES:
                return
            span_id = getattr(record_, "span_id", None)
            if not span_id:
                return
            with self._lock:
                _bounded(self._events).setdefault(span_id, []).append((name, record_.body))
        except Exception as exc:
            PROBLEMS("reading a log record", exc)

    #: The name of ``on_emit`` in the SDKs before 1.39.
    emit = on_emit

    # -- the span's end ----------------------------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        """Read a finished span; record its call unless it was recorded already."""
        try:
            self._ended(span)
        except Exception as exc:
            PROBLEMS("recording a span", exc)

    def _ended(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        span_id = context.span_id
        with self._lock:
            session, native = self._started.pop(span_id, (None, False))
            claimed = self._claimed.pop(span_id, False)
            events = self._events.pop(span_id, ())
        native = native or _native.take_mark(span_id)
        attributes = _spans.attributes_of(span)
        found = _spans.kind_of(attributes)
        is_call = found is not None and found[0] != _spans.TOOL
        hooked = take_content(span_id) if found is not None else None
        if is_call or native or claimed:
            self._claim_parent(span)
        if found is None or (is_call and (native or claimed)):
            return
        call = _spans.read(span, attributes, found, events, hooked)
        self.record(call, session)

    def record(self, call: _spans.GenAICall, session: str | PendingSession | None) -> None:
        """Append the actions of ``call`` in its session (``session``: the context's at start)."""
        session_id = self._sessions.of(call, session)
        record(self._client, session_id, call, PROBLEMS)

    def _claim_parent(self, span: ReadableSpan) -> None:
        """A call below the parent is recorded: a call span above it is the same call."""
        parent = span.parent
        if parent is not None and not parent.is_remote:
            with self._lock:
                _bounded(self._claimed)[parent.span_id] = True

    # -- lifecycle -----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Nothing to release: the client delivers what was recorded (``layer.shutdown()``)."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until what was recorded is delivered to Layer (at most ``timeout_millis``)."""
        try:
            return self._client.flush(timeout_millis / 1000)
        except Exception as exc:
            PROBLEMS("flushing", exc)
            return False


def _bounded(pending: dict[int, Any]) -> dict[int, Any]:
    """``pending``, its oldest entry dropped when full (a span that never ended). With the lock."""
    if len(pending) >= MAX_PENDING:
        del pending[next(iter(pending))]
    return pending


def install(client: Client | None = None) -> bool:
    """Add a ``LayerSpanProcessor`` to the global tracer provider, when the application set one.

    Returns True when added. When the global provider is not an SDK
    ``TracerProvider`` (none was set, or another SDK's), nothing is changed:
    a warning says so and False is returned. The global provider is never set
    or replaced here.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        logger.warning(
            "layer-sdk: no OpenTelemetry TracerProvider is set (the global provider is %s); "
            "set yours with trace.set_tracer_provider() first, or add "
            "LayerSpanProcessor() to it yourself",
            type(provider).__name__,
        )
        return False
    provider.add_span_processor(LayerSpanProcessor(client))
    return True
