"""``LayerSpanProcessor``: the finished GenAI spans of a ``TracerProvider`` as Layer actions.

On the thread that starts a span, ``on_start`` notes two things and no
more: the ``session_context()`` session active as the span starts, and
whether the span starts inside a call the native instrumentation records
(``_native``). On the thread that ends it, ``on_end`` takes what was noted
about the span (those notes, a native mark, message events emitted as log
records, content the completion hook kept) and puts it with the span in the
``_backlog``, a bounded hand-off: that is all the application's thread pays.
The backlog's reader thread reads the span (``_spans``, ``_content``),
chooses its session (``_sessions``) and appends its actions (``_actions``:
encode and enqueue, no network), in the order the spans ended. A span that
finds the backlog full is counted as lost (``span_backlog``). Nothing raises
into the tracer: a failure of ours is logged, throttled (``_problems``).

The same object is a ``LogRecordProcessor``: added to a ``LoggerProvider``,
it reads the message events that instrumentations of the conventions before
1.37 emit as log records, joined to their span by its ID.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from .._client import Client
from .._config import DEFAULT_SHUTDOWN_TIMEOUT
from .._context import PendingSession, current_session_id
from .._export._losses import SPAN_BACKLOG, sdk_thread
from . import _native, _spans
from ._actions import record
from ._backlog import Backlog
from ._completion_hook import plain_content, take_kept
from ._content import EVENT_NAMES
from ._problems import PROBLEMS
from ._sessions import Sessions

logger = logging.getLogger("layer_sdk")

#: Spans started and not ended that the processor keeps a note of (a session, a mark), and
#: spans with message events or claims waiting: at most this many each, oldest dropped.
MAX_PENDING = 4096
#: Ended spans waiting for the reader thread, by default: past this many, a span is lost
#: (``span_backlog``). The reader reads one in some tens of microseconds.
MAX_BACKLOG = 2048


class LayerSpanProcessor(SpanProcessor, LogRecordProcessor):
    """Records the GenAI calls of the spans of the ``TracerProvider`` it is added to.

    ``client`` is the Layer client the actions go to (default: the global
    ``layer``, which must be initialized before spans end). Add it to your own
    provider (``provider.add_span_processor(LayerSpanProcessor())``): it never
    sets or replaces the global tracer provider. Ended spans are read on a
    thread of the processor; at most ``max_backlog`` wait for it (more are
    counted as lost, ``span_backlog``). See ``docs/opentelemetry.md``.
    """

    def __init__(self, client: Client | None = None, *, max_backlog: int = MAX_BACKLOG) -> None:
        if type(max_backlog) is not int or max_backlog < 1:
            raise ValueError(f"max_backlog must be a positive integer, got {max_backlog!r}")
        if client is None:
            from .. import layer

            client = layer
        self._client = client
        self._sessions = Sessions(client)
        self._lock = threading.Lock()
        #: span ID -> (the context's session at start, started inside a recorded call).
        self._started: dict[int, tuple[str | PendingSession | None, bool]] = {}
        #: span ID -> (event name, body) of its message events emitted as log records.
        self._events: dict[int, list[tuple[str, Any]]] = {}
        #: span ID -> True: a call below this span was recorded (natively or from its span).
        #: The reader's alone: no lock.
        self._claimed: dict[int, bool] = {}
        self._max_backlog = max_backlog
        self._backlog = Backlog(self._read, max_backlog)
        _native.install()
        _live.add(self)

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

    # -- the span's end: the caller's thread ----------------------------------------------

    def on_end(self, span: ReadableSpan) -> None:
        """Hand the finished span to the reader thread, with what was noted about it."""
        try:
            context = span.context
            if context is None:
                return
            span_id = context.span_id
            noted = events = None
            if span_id in self._started:
                with self._lock:
                    noted = self._started.pop(span_id, None)
            if span_id in self._events:
                with self._lock:
                    events = self._events.pop(span_id, None)
            marked = _native.take_mark(span_id)
            kept = take_kept(span_id)
            if (
                not marked
                and events is None
                and kept is None
                and not (noted is not None and noted[1])
                and _spans.CALL_KEYS.isdisjoint(span.attributes or ())
            ):
                # No GenAI call: an application's web and database spans never take the
                # backlog's room from the calls (the check costs about 0.3 µs).
                return
            if not self._backlog.put((span, noted, marked, events, kept)):
                self._lost()
        except Exception as exc:
            PROBLEMS("handing a span over", exc)

    def _lost(self) -> None:
        """A span found the backlog full: counted and told like the losses at the door."""
        exporter = self._client._exporter
        if exporter is None:
            if not self._client.stats().disabled:  # a disabled client records and says nothing
                PROBLEMS("handing a span over", RuntimeError("the client is not initialized"))
            return
        exporter.count_loss(
            SPAN_BACKLOG,
            f"{self._max_backlog} ended OpenTelemetry spans were already waiting to be read",
        )

    # -- the reader thread -------------------------------------------------------------

    def _read(self, item: tuple[Any, ...]) -> None:
        try:
            self._ended(*item)
        except Exception as exc:
            PROBLEMS("recording a span", exc)

    def _ended(
        self,
        span: ReadableSpan,
        noted: tuple[str | PendingSession | None, bool] | None,
        marked: bool,
        events: list[tuple[str, Any]] | None,
        kept: tuple[Any, Any, Any] | None,
    ) -> None:
        session, native = noted or (None, False)
        native = native or marked
        attributes = _spans.attributes_of(span)
        found = _spans.kind_of(attributes)
        is_call = found is not None and found[0] != _spans.TOOL
        claimed = self._claimed.pop(span.context.span_id, False)
        if is_call or native or claimed:
            self._claim_parent(span)
        if found is None or (is_call and (native or claimed)):
            return
        hooked = None if kept is None else plain_content(kept)
        call = _spans.read(span, attributes, found, events or (), hooked)
        recording = sdk_thread.recording
        sdk_thread.recording = True  # the application's events, though on an SDK thread
        try:
            self.record(call, session)
        finally:
            sdk_thread.recording = recording

    def record(self, call: _spans.GenAICall, session: str | PendingSession | None) -> None:
        """Append the actions of ``call`` in its session (``session``: the context's at start)."""
        session_id = self._sessions.of(call, session)
        record(self._client, session_id, call, PROBLEMS)

    def _claim_parent(self, span: ReadableSpan) -> None:
        """A call below the parent is recorded: a call span above it is the same call."""
        parent = span.parent
        if parent is not None and not parent.is_remote:
            _bounded(self._claimed)[parent.span_id] = True

    # -- lifecycle -----------------------------------------------------------------------

    def shutdown(self) -> None:
        """Read the spans still waiting (within the client's ``shutdown_timeout``), then end
        the reader thread; a span that ends later is read on the thread that ends it. The
        client stays up: ``layer.shutdown()`` delivers what was recorded."""
        try:
            exporter = self._client._exporter
            timeout = DEFAULT_SHUTDOWN_TIMEOUT
            if exporter is not None:
                timeout = exporter.config.shutdown_timeout
            self._backlog.stop(time.monotonic() + timeout)
        except Exception as exc:
            PROBLEMS("shutting down", exc)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Read the spans that ended before the call, then wait until what was recorded is
        delivered to Layer; at most ``timeout_millis`` in all. True when all was."""
        try:
            deadline = time.monotonic() + timeout_millis / 1000
            read = self._backlog.drain(deadline)
            return self._client.flush(max(0.0, deadline - time.monotonic())) and read
        except Exception as exc:
            PROBLEMS("flushing", exc)
            return False

    def _restart_in_child(self) -> None:
        """In a forked child: fresh locks (a parent thread may have held them at fork)."""
        self._lock = threading.Lock()
        self._sessions.restart_in_child()


def _bounded(pending: dict[int, Any]) -> dict[int, Any]:
    """``pending``, its oldest entry dropped when full (a span that never ended). With the lock."""
    if len(pending) >= MAX_PENDING:
        del pending[next(iter(pending))]
    return pending


#: Every processor not yet garbage-collected: given fresh locks after fork (``_backlog``
#: empties its backlog and starts its reader).
_live: weakref.WeakSet[LayerSpanProcessor] = weakref.WeakSet()


def _restart_in_child() -> None:
    for processor in list(_live):
        processor._restart_in_child()


os.register_at_fork(after_in_child=_restart_in_child)


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
