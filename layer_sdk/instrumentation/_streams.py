"""Streamed calls: watching a provider's stream object and recording its output once.

A stream is returned as the very object the provider SDK built, of its own
class (``type(stream) is openai.Stream``, ``anthropic.MessageStream``):
nothing is patched on the class. Two things are set on the object itself:
its item iterator (``_iterator``, which ``__iter__``/``__next__`` read in
every openai and anthropic version, and the helpers' ``text_stream`` and
``get_final_message()`` through them) is wrapped, to see the items as the
caller reads them; and an instance attribute ``close`` calls the class's
``close()`` and then ends the record, to notice an early close (``with``
exit calls ``self.close()`` too).
The output is recorded exactly once, by the stream's :class:`StreamRecord`:
when the stream is exhausted, raises, is closed (``close()``, ``with``
exit, ``aclose()``: all call ``self.close()``), or is garbage-collected;
the last three mark it ``incomplete``.

Finalizers may run inside the garbage collector at any point, where taking
the export queue's lock could deadlock, so those records are handed (through
a reentrant ``SimpleQueue``) to a small daemon thread that records them.

A failure in here is reported through the record's call (``Call.problem``);
the call module imports this one, so this one knows the call only as the
``StreamingCall`` protocol, and an API's stream reader as an ``Accumulator``.
"""

from __future__ import annotations

import functools
import inspect
import os
import queue
import sys
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from datetime import datetime
from typing import Any, Protocol

from ._mapping import Output, _now


class Accumulator(Protocol):
    """Puts a stream's items back together (``_openai/chat._ChatStream``, ...)."""

    def add(self, item: Any) -> None: ...

    def output(self) -> Output: ...


class StreamingCall(Protocol):
    """What a stream's record needs of its call (``call.Call``)."""

    operation: str

    def problem(self, where: str, exc: BaseException) -> None: ...

    def error_of(self, exc: BaseException) -> dict[str, Any]: ...

    def record_output(
        self,
        output: Output,
        ended: datetime,
        *,
        model: Any,
        error: dict[str, Any] | None,
        streamed: bool,
    ) -> None: ...


class StreamRecord:
    """The output of one stream, finished exactly once."""

    __slots__ = ("_once", "accumulator", "broken", "call", "model")

    def __init__(self, call: StreamingCall, accumulator: Accumulator, model: Any):
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
                error=self.call.error_of(error) if error is not None else None,
                streamed=True,
            )
        except Exception as exc:
            self.call.problem(f"recording the output of a {self.call.operation} stream", exc)


def trace_stream(
    stream: Any, record: StreamRecord, is_async: bool, iterator_attribute: str = "_iterator"
) -> None:
    """Watch ``stream``'s items and ends; the object, and its class, stay the provider's.

    ``iterator_attribute``: the attribute of ``stream`` that its iteration reads items from.
    """
    try:
        inner = getattr(stream, iterator_attribute)
    except AttributeError:
        record.finish(True)  # a stream shape we do not know: record what we can, now
        return
    watched = _observe_async(inner, record) if is_async else _observe(inner, record)
    setattr(stream, iterator_attribute, watched)
    try:
        _hook_close(stream, record, is_async)
    except (AttributeError, TypeError) as exc:  # the close() hook is lost; GC still ends it
        record.call.problem("hooking a stream's close()", exc)
    _ensure_reaper()
    finalizer = weakref.finalize(stream, record.finish, True, None, True)
    finalizer.atexit = False


def observe_generator(stream: Any, record: StreamRecord) -> Any:
    """A generator (async when ``stream`` is) yielding ``stream``'s items, ending the record.

    A close and a collection both reach it as ``GeneratorExit``: the record is then
    finished on the reaper thread, as a collected stream's always is.
    """
    _ensure_reaper()
    if inspect.isasyncgen(stream):
        return _relay_async(stream, record)
    return _relay(stream, record)


# -- the chunks -------------------------------------------------------------------------


def _observe(inner: Iterator[Any], record: StreamRecord) -> Iterator[Any]:
    with _Ends(record):
        for item in inner:
            record.add(item)
            yield item


async def _observe_async(inner: AsyncIterator[Any], record: StreamRecord) -> AsyncIterator[Any]:
    with _Ends(record):
        async for item in inner:
            record.add(item)
            yield item


def _relay(inner: Generator[Any, Any, Any], record: StreamRecord) -> Generator[Any, Any, Any]:
    """``inner``'s items; closing this generator closes ``inner`` (its HTTP response)."""
    try:
        with _Ends(record):
            for item in inner:
                record.add(item)
                yield item
    finally:
        inner.close()


async def _relay_async(
    inner: AsyncGenerator[Any, Any], record: StreamRecord
) -> AsyncGenerator[Any, Any]:
    try:
        with _Ends(record):
            async for item in inner:
                record.add(item)
                yield item
    finally:
        await inner.aclose()


class _Ends:
    """Around the iteration of a stream: how it ends decides how its record finishes."""

    __slots__ = ("record",)

    def __init__(self, record: StreamRecord) -> None:
        self.record = record

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if exc is None:  # read to the end
            self.record.finish(False)
        elif isinstance(exc, GeneratorExit):  # closed or garbage-collected before the end
            self.record.finish(True, None, True)
        elif _is_cancellation(exc):
            # The caller's task was cancelled as it read (a timeout, or the event loop
            # closing the stream it abandoned): left early, not a failure of the stream.
            self.record.finish(True)
        else:
            self.record.finish(True, exc)


# -- close() ----------------------------------------------------------------------------

#: What of the class's ``close`` its stand-in on the instance shows (no ``__wrapped__``:
#: its signature is that of a bound method, without ``self``).
_CLOSE_ASSIGNED = ("__module__", "__name__", "__qualname__", "__doc__")


def _hook_close(stream: Any, record: StreamRecord, is_async: bool) -> None:
    """Shadow the class's ``close()`` on this one stream: it runs, then the record ends.

    The stand-in holds the stream weakly, so that it adds no reference cycle:
    a stream read to its end is still freed as soon as the caller drops it.
    """
    close = getattr(type(stream), "close", None)
    if not callable(close):
        return
    owner = weakref.ref(stream)
    if is_async:

        async def closer() -> None:
            try:
                target = owner()
                if target is not None:
                    await close(target)
            finally:
                record.finish(True)

    else:

        def closer() -> None:  # type: ignore[misc]
            try:
                target = owner()
                if target is not None:
                    close(target)
            finally:
                record.finish(True)

    functools.update_wrapper(closer, close, assigned=_CLOSE_ASSIGNED, updated=())
    stream.close = closer


# -- records finished inside the garbage collector ------------------------------------

# They are recorded by this thread.
_deferred: queue.SimpleQueue[tuple[StreamRecord, bool, BaseException | None, datetime]] = (
    queue.SimpleQueue()
)
_reaper_pid = 0
_lock = threading.Lock()


def _defer(
    record: StreamRecord, incomplete: bool, error: BaseException | None, ended: datetime
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
        thread = threading.Thread(target=_reap, name="layer-sdk-streams", daemon=True)
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


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is asyncio's ``CancelledError``, without importing asyncio (where
    it was never imported, no task can have been cancelled)."""
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)
