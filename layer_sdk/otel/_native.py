"""No call recorded twice: the spans of calls that the native instrumentation records.

Layer's own OpenAI and Anthropic instrumentation records a call from the
call itself; an OpenTelemetry instrumentation of the same SDK (or of a
framework above it, such as LangChain) makes a span of the same call. Both
wrap the same method, in either order, and the span is told apart here:

- **the span wraps our wrapper** (the OpenTelemetry instrumentation patched
  last): when our wrapper begins recording, it calls the hook that this
  module puts in ``instrumentation._patch.recorded_call_hook``, which marks
  the current span and the last span started on this thread while it is
  still open (OpenLLMetry starts its spans without making them current);
- **our wrapper wraps the span** (ours patched last): the span starts while
  a recorded call runs (``_patch.in_recorded_call()``), which the processor
  notes in ``on_start``.

A marked span is not recorded, and neither is a call span above it (a
framework's span of the same call): the processor passes the mark up to the
parent as each span ends (``_processor``). Without a ``LayerSpanProcessor``
the hook is not set, and the instrumentation's cost is one global read.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry import trace

from ..instrumentation import _patch
from . import _backlog

#: At most this many marks are kept; the oldest go first (a span never ended).
MAX_MARKS = 4096

_lock = threading.Lock()
_marked: dict[int, None] = {}
_started = threading.local()


def install() -> None:
    """Put the hook in place (once per process: the marks are shared by every processor)."""
    _patch.recorded_call_hook = _mark_call_spans


def span_started(span: Any) -> None:
    """Note the last span started on this thread (``on_start``, on the caller's thread)."""
    _started.span = span


def in_recorded_call() -> bool:
    return _patch.in_recorded_call()


def take_mark(span_id: int) -> bool:
    """Whether ``span_id`` was marked as the span of a natively recorded call; forgets it."""
    if span_id not in _marked:
        return False
    with _lock:
        return _marked.pop(span_id, False) is None


def _mark_call_spans() -> None:
    """The hook: our instrumentation begins recording a call (on the caller's thread).

    Besides the marks: the spans that ended before the call and still wait to be
    read are read now, so that their actions come before the call's."""
    try:
        current = trace.get_current_span().get_span_context()
        last = getattr(_started, "span", None)
        with _lock:
            if current.is_valid:
                _mark(current.span_id)
            if last is not None and getattr(last, "end_time", 0) is None:
                _mark(last.get_span_context().span_id)
        _backlog.catch_up()
    except Exception:  # never the caller's problem; at worst a call is recorded twice
        return


def _mark(span_id: int) -> None:
    """Called with ``_lock`` held."""
    _marked[span_id] = None
    if len(_marked) > MAX_MARKS:
        del _marked[next(iter(_marked))]


def _restart_in_child() -> None:
    """A fresh lock in a forked child: a thread of the parent may have held it at fork."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_restart_in_child)
