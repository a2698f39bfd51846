"""Where a finished span waits between the thread that ends it and the thread that reads it.

``LayerSpanProcessor.on_end`` runs on the thread that ends a span: the
application's. All it does is put the span (immutable once ended) and what
was noted about it into a ``Backlog``, whose reader thread does the rest
(reading the attributes, decoding the messages, appending the actions). The
backlog keeps these promises:

- **a bound**: at most ``max_spans`` wait; ``put`` never blocks, and a span
  that finds the backlog full is refused (the processor counts it as lost);
- **order**: one reader at a time, first in first out: spans are read in the
  order they ended. A call that the native instrumentation records begins by
  reading what waits (``catch_up``), so that its actions, appended on its own
  thread, follow those of the spans that ended before it (a LangChain tool
  run, then the model call that reads its result);
- **drain**: ``drain(deadline)`` waits until every span put before the call
  has been read. The backlog is a feeder of the export pipeline
  (``_export.add_feeder``): every client's ``flush()``, ``shutdown()`` and
  exit drain wait for it first, so that the spans that ended before them are
  delivered;
- **threads**: the reader starts with the backlog, never later (Python 3.12+
  refuses to start a thread at exit), and is an SDK thread (``sdk_thread``:
  what it logs is never fed back to Layer). It holds the backlog weakly and
  ends when the backlog is stopped or collected. Without a reader (stopped,
  or none could start) a span is read on the thread that puts it;
- **fork**: a child starts with an empty backlog, fresh locks and a reader
  of its own; the parent's spans are never read there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from .._export import add_feeder
from .._export._losses import sdk_thread

logger = logging.getLogger("layer_sdk")

#: An idle reader looks again this often whether its backlog is still there, seconds (it is
#: woken at once when the backlog is stopped or collected; this is the backstop).
IDLE_WAIT = 30.0


class _Drained(threading.Event):
    """A mark that ``drain`` puts in the backlog: set when the reader reaches it."""


class Backlog:
    """Spans waiting for the reader thread, which calls ``read(item)`` on each, in order.

    ``read`` must not raise; what it raises all the same is logged and skipped.
    """

    def __init__(self, read: Callable[[Any], None], max_spans: int) -> None:
        self._read_one = read
        self._max_spans = max_spans
        self._start()
        _live.add(self)
        add_feeder(self)

    def _start(self) -> None:
        """Fresh state and a reader thread: at creation, and in a forked child."""
        self._items: deque[Any] = deque()
        # One reader at a time: the thread, or a putter. Re-entrant: what a putter's reading
        # runs (a log handler) may put or catch up again on the same thread.
        self._reading = threading.RLock()
        self._wake = threading.Event()
        wake = self._wake
        weakref.finalize(self, wake.set).atexit = False  # a collected backlog ends its reader
        reader = threading.Thread(
            target=_run, args=(weakref.ref(self), wake), name="layer-sdk-otel-reader", daemon=True
        )
        # Set before it starts: a reader that is not its backlog's ``_reader`` ends at once.
        self._reader: threading.Thread | None = reader
        #: True while the reader waits with nothing in hand (or when there is no reader):
        #: a put must wake it. Read and written without a lock; see ``_run``.
        self._idle = False
        try:
            reader.start()
        except RuntimeError:  # the interpreter is exiting: spans are read where they end
            self._reader = None
            self._idle = True

    # -- the thread that ends a span ---------------------------------------------------

    def put(self, item: Any) -> bool:
        """Leave ``item`` for the reader; False (and nothing kept) when the backlog is full."""
        items = self._items
        if len(items) >= self._max_spans:
            return False
        items.append(item)
        if self._idle:
            self._wake_reader()
        return True

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is None or not reader.is_alive():
            self._read_all()  # no reader: read here
            return
        self._idle = False
        self._wake.set()

    # -- flush, shutdown, exit -----------------------------------------------------------

    def drain(self, deadline: float) -> bool:
        """Wait until every span put before the call has been read, at most until ``deadline``
        (monotonic); True when all were. Never raises."""
        items = self._items
        if not items and self._idle:
            return True
        reader = self._reader
        if reader is None or not reader.is_alive():
            self._read_all()
            return True
        if reader is threading.current_thread():
            return not items  # what the reader runs (a log handler) cannot wait for it
        drained = _Drained()
        items.append(drained)
        self._idle = False
        self._wake.set()
        return drained.wait(max(0.0, deadline - time.monotonic()))

    def catch_up(self) -> None:
        """Read what waits now on this thread, after what the reader has in hand: for a
        caller whose own records must follow the spans that ended before (a natively
        recorded call, whose actions are appended on its own thread)."""
        if (self._items or not self._idle) and self._reader is not threading.current_thread():
            self._read_all()

    def stop(self, deadline: float) -> bool:
        """Drain (at most until ``deadline``), then end the reader thread: later spans are
        read on the thread that puts them. True when all were read."""
        drained = self.drain(deadline)
        self._reader = None
        self._idle = True
        self._wake.set()
        return drained

    # -- the reader ------------------------------------------------------------------------

    def _read_all(self) -> None:
        """Read what waits, in order, until nothing does."""
        items, read = self._items, self._read_one
        with self._reading:
            while items:
                item = items.popleft()
                if item.__class__ is _Drained:
                    item.set()
                    continue
                try:
                    read(item)
                except Exception:  # the reader's guard, not ``read``'s: never expected
                    logger.exception("layer-sdk failed to read an OpenTelemetry span")


def _run(backlog_ref: weakref.ref[Backlog], wake: threading.Event) -> None:
    """The reader thread: reads while there are spans, waits while there are none.

    It keeps no reference to its backlog while it waits. ``_idle`` has no lock:
    the reader sets it before looking for work a last time, a putter appends
    before reading it, so either the reader sees the span or the putter sees
    ``_idle`` and wakes it.
    """
    sdk_thread.active = True
    me = threading.current_thread()
    while True:
        backlog = backlog_ref()
        if backlog is None:
            return
        stopped = backlog._reader is not me
        # Stopped: from now on a put reads what it puts; what was put before is read here.
        backlog._idle = stopped
        try:
            backlog._read_all()
        except BaseException:  # even SystemExit from a log handler: the reader goes on
            logger.exception("layer-sdk's OpenTelemetry span reader failed; it goes on")
        if stopped:
            return
        wake.clear()
        backlog._idle = True
        if backlog._items or backlog._reader is not me:
            continue
        del backlog
        wake.wait(IDLE_WAIT)


#: Every backlog not yet garbage-collected: emptied and given a new reader after fork.
_live: weakref.WeakSet[Backlog] = weakref.WeakSet()


def catch_up() -> None:
    """``catch_up`` every backlog (a call recorded natively begins on this thread)."""
    for backlog in list(_live):
        backlog.catch_up()


def _restart_in_child() -> None:
    for backlog in list(_live):
        backlog._start()


os.register_at_fork(after_in_child=_restart_in_child)
