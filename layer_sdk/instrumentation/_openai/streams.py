"""Streamed calls: watching a ``Stream``/``AsyncStream`` and recording its output once.

A stream is returned as the same object OpenAI built. Its chunk iterator is
wrapped (to see the chunks as the caller reads them) and its class is swapped
for a subclass that only overrides ``close()`` (to notice an early close).
The output is recorded exactly once, by the stream's :class:`_StreamRecord`:
when the stream is exhausted, raises, is closed (``close()``, ``aclose()``,
``with`` exit), or is garbage-collected; the last three mark it
``incomplete``.

Finalizers may run inside the garbage collector at any point, where taking
the export queue's lock could deadlock, so those records are handed (through
a reentrant ``SimpleQueue``) to a small daemon thread that records them.

A failure in here is reported through the record's call (``_Call.problem``):
``call.py`` imports this module, so this one does not import it back.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .mapping import _error, _now

if TYPE_CHECKING:
    from .call import _Call
    from .chat import _ChatStream
    from .responses import _ResponsesStream


class _StreamRecord:
    """The output of one stream, finished exactly once."""

    __slots__ = ("_once", "accumulator", "broken", "call", "model")

    def __init__(self, call: _Call, accumulator: _ChatStream | _ResponsesStream, model: Any):
        self.call = call
        self.accumulator = accumulator
        self.model = model
        self.broken = False
        # list.pop() is atomic: the first finish() takes the token, later ones find none.
        self._once = [True]

    def add(self, item: Any) -> None:
        if self.broken:
            return
        try:
            self.accumulator.add(item)
        except Exception as exc:
            self.broken = True
            self.call.problem(f"reading a {self.call.operation} stream", exc)

    def finish(
        self, incomplete: bool, error: BaseException | None = None, defer: bool = False
    ) -> None:
        try:
            self._once.pop()
        except IndexError:
            return
        ended = _now()
        if defer:
            _defer(self, incomplete, error, ended)
        else:
            self.emit(incomplete, error, ended)

    def emit(self, incomplete: bool, error: BaseException | None, ended: datetime) -> None:
        try:
            output = self.accumulator.output()
            output.incomplete = output.incomplete or incomplete
            self.call.record_output(
                output,
                ended,
                model=self.model,
                error=_error(error) if error is not None else None,
                streamed=True,
            )
        except Exception as exc:
            self.call.problem(f"recording the output of a {self.call.operation} stream", exc)


def _trace_stream(stream: Any, record: _StreamRecord, is_async: bool) -> None:
    """Watch ``stream``'s chunks and ends; the object stays the one OpenAI returned."""
    try:
        inner = stream._iterator
    except AttributeError:
        record.finish(True)  # a stream shape we do not know: record what we can, now
        return
    base = type(stream)
    if not getattr(base, "__layer_traced__", False):
        try:
            stream.__class__ = _traced_class(base, is_async)
        except TypeError as exc:  # layout differs: the close() hook is lost, GC still ends it
            record.call.problem("hooking a stream's close()", exc)
    stream._layer_record = record
    stream._iterator = _observe_async(inner, record) if is_async else _observe(inner, record)
    _ensure_reaper()
    finalizer = weakref.finalize(stream, record.finish, True, None, True)
    finalizer.atexit = False


# -- the chunks -------------------------------------------------------------------------


def _observe(inner: Iterator[Any], record: _StreamRecord) -> Iterator[Any]:
    with _Ends(record):
        for item in inner:
            record.add(item)
            yield item


async def _observe_async(inner: AsyncIterator[Any], record: _StreamRecord) -> AsyncIterator[Any]:
    with _Ends(record):
        async for item in inner:
            record.add(item)
            yield item


class _Ends:
    """Around the iteration of a stream: how it ends decides how its record finishes."""

    __slots__ = ("record",)

    def __init__(self, record: _StreamRecord) -> None:
        self.record = record

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if exc is None:  # read to the end
            self.record.finish(False)
        elif isinstance(exc, GeneratorExit):  # closed or garbage-collected before the end
            self.record.finish(True, None, True)
        else:
            self.record.finish(True, exc)


# -- close() ----------------------------------------------------------------------------

_lock = threading.Lock()
_traced_classes: dict[type, type] = {}


def _traced_class(base: type, is_async: bool) -> type:
    """A subclass of ``base`` (same name and module) whose ``close()`` ends the record."""
    traced = _traced_classes.get(base)
    if traced is not None:
        return traced
    namespace: dict[str, Any] = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "__layer_traced__": True,
    }
    base_close = getattr(base, "close", None)
    if base_close is not None:
        if is_async:

            async def close(self: Any) -> None:
                try:
                    await base_close(self)
                finally:
                    _closed(self)

        else:

            def close(self: Any) -> None:  # type: ignore[misc]
                try:
                    base_close(self)
                finally:
                    _closed(self)

        functools.update_wrapper(close, base_close)
        namespace["close"] = close
    traced = type(base.__name__, (base,), namespace)
    with _lock:
        return _traced_classes.setdefault(base, traced)


def _closed(stream: Any) -> None:
    record = stream.__dict__.get("_layer_record")
    if record is not None:
        record.finish(True)


# -- records finished inside the garbage collector ------------------------------------

# They are recorded by this thread.
_deferred: queue.SimpleQueue[tuple[_StreamRecord, bool, BaseException | None, datetime]] = (
    queue.SimpleQueue()
)
_reaper_pid = 0


def _defer(
    record: _StreamRecord, incomplete: bool, error: BaseException | None, ended: datetime
) -> None:
    _deferred.put((record, incomplete, error, ended))  # reentrant: safe inside the GC


def _ensure_reaper() -> None:
    global _reaper_pid
    pid = os.getpid()
    if _reaper_pid == pid:
        return
    with _lock:
        if _reaper_pid == pid:
            return
        thread = threading.Thread(target=_reap, name="layer-sdk-openai-streams", daemon=True)
        thread.start()
        _reaper_pid = pid


def _reap() -> None:
    while True:
        record, incomplete, error, ended = _deferred.get()
        record.emit(incomplete, error, ended)
        del record, error


def _after_fork_in_child() -> None:
    global _deferred, _reaper_pid
    _deferred = queue.SimpleQueue()  # the parent's pending records are the parent's
    _reaper_pid = 0


os.register_at_fork(after_in_child=_after_fork_in_child)
