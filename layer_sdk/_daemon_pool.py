"""Daemon threads that run calls which may hang, for callers that wait a bounded time.

A look-up through a user's ``requests`` session, or a token endpoint that
drips its answer a byte at a time, can last far longer than its caller may
wait: ``requests`` bounds each read, never the whole exchange. A
:class:`DaemonPool` runs such a call on a thread of its own; the caller waits
for the :class:`Pending` it gets back until the call's deadline, then goes on
without it. The call ends on its own (its outcome still reaches whoever asks
``Pending`` later).

- The threads are daemons: a call that hangs never holds the interpreter's
  exit (``concurrent.futures`` joins its workers at exit).
- At most ``max_threads`` calls run at once; a call still waiting for a thread
  when its deadline passes is dropped unrun (its outcome is :class:`Expired`),
  when a thread is free or the next call comes, whichever is first: the queue
  holds only calls whose deadline has not passed (the pools here give every
  call the same timeout, so the oldest is the first due).
  A thread idle for ``IDLE_TIMEOUT`` seconds ends.
- An ``async`` caller awaits the outcome on its own event loop
  (:meth:`Pending.wait_async`), using no thread of the loop's default
  executor, which belongs to the application.
- Fork: the owner builds a new pool in a child (its parent's threads are not
  there, and a lock they held would never be released).
- A caller's wait can be cut short by an :class:`Interrupt` that applies to
  its thread (a client shutting down ends the sync calls waiting for a token,
  whose provider knows nothing of that client).

The outcome of a call that raised is that exception, without its traceback
(whose frames may hold what the call handled, and which waiters on several
threads would otherwise share): waiters read it as a value (``error``) and
raise exceptions of their own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

#: Seconds a thread of the pool waits for a call before it ends.
IDLE_TIMEOUT = 30.0


class Expired(Exception):
    """The call's deadline passed before a thread was free to run it, or the pool closed."""


class Pending(Generic[T]):
    """The outcome of a call that runs on a pool's thread: a value, or the error it raised."""

    def __init__(self, timeout: float) -> None:
        #: ``time.monotonic()`` after which its callers stop waiting.
        self.deadline = time.monotonic() + timeout
        self.value: T | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def done(self) -> bool:
        """Whether the call has ended (or was dropped unrun)."""
        return self._done.is_set()

    def overdue(self) -> bool:
        """Whether the deadline has passed and the call has not ended."""
        return not self._done.is_set() and time.monotonic() >= self.deadline

    def wait(self) -> bool:
        """Wait until the call ends or its deadline passes, or the :class:`Interrupt` that
        applies to this thread fires; whether the call ended."""
        interrupt: Interrupt | None = getattr(_applying, "interrupt", None)
        if interrupt is None:
            return self._done.wait(max(0.0, self.deadline - time.monotonic()))
        woken = threading.Event()
        self.add_callback(woken.set)
        if interrupt.watch(woken.set):
            try:
                woken.wait(max(0.0, self.deadline - time.monotonic()))
            finally:
                interrupt.unwatch(woken.set)
        return self.done()

    async def wait_async(self) -> bool:
        """:meth:`wait` for a coroutine: the event loop runs on meanwhile."""
        if self.done():
            return True
        import asyncio  # loaded already: the caller runs on its loop

        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # on the loop's thread
            if not woken.done():
                woken.set_result(None)

        def from_pool() -> None:  # on the pool's thread
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(wake)

        self.add_callback(from_pool)
        timer = loop.call_later(max(0.0, self.deadline - time.monotonic()), wake)
        try:
            await woken
        finally:
            timer.cancel()
        return self.done()

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the call has ended: now, if it has."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def settle(self, value: T | None, error: BaseException | None) -> None:
        """Record the outcome and tell whoever waits."""
        with self._lock:
            self.value = value
            self.error = None if error is None else error.with_traceback(None)
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


#: The Interrupt that applies to this thread, if any (``Interrupt.applies``).
_applying = threading.local()


class Interrupt:
    """Cuts short the waits on a :class:`Pending` of the threads it applies to, once fired
    (and every later one): their ``wait()`` returns at once, the call not ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fired = False
        self._wakers: list[Callable[[], None]] = []

    @property
    def fired(self) -> bool:
        """Whether :meth:`fire` was called."""
        return self._fired

    def fire(self) -> None:
        """End every wait it applies to, now and from now on."""
        with self._lock:
            self._fired = True
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    @contextlib.contextmanager
    def applies(self) -> Iterator[None]:
        """Within: this interrupt applies to the waits of the calling thread."""
        previous = getattr(_applying, "interrupt", None)
        _applying.interrupt = self
        try:
            yield
        finally:
            _applying.interrupt = previous

    def watch(self, wake: Callable[[], None]) -> bool:
        """Call ``wake()`` when fired; False (and no call) when it has fired already."""
        with self._lock:
            if not self._fired:
                self._wakers.append(wake)
        return not self._fired

    def unwatch(self, wake: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._wakers.remove(wake)


def interrupted() -> bool:
    """Whether an :class:`Interrupt` that applies to this thread has fired."""
    interrupt: Interrupt | None = getattr(_applying, "interrupt", None)
    return interrupt is not None and interrupt.fired


class DaemonPool:
    """Up to ``max_threads`` daemon threads named ``name``, started as calls come."""

    def __init__(self, name: str, max_threads: int) -> None:
        self._name = name
        self._max_threads = max_threads
        self._ready = threading.Condition(threading.Lock())
        self._calls: deque[tuple[Pending[object], Callable[[], object]]] = deque()
        self._threads = 0
        self._idle = 0
        self._closed = False

    def submit(self, call: Callable[[], T], timeout: float) -> Pending[T]:
        """Run ``call`` on a thread of the pool, unless ``timeout`` seconds pass first."""
        pending: Pending[T] = Pending(timeout)
        expired: list[Pending[object]] = []
        with self._ready:
            if self._closed:
                start = False
                pending.settle(None, Expired("the pool is closed"))
            else:
                # Calls whose deadline passed while every thread was busy go now, so that
                # threads held for long (a dripping server) cannot make the queue grow.
                calls = self._calls
                while calls and calls[0][0].overdue():
                    expired.append(calls.popleft()[0])
                calls.append((pending, call))  # type: ignore[arg-type]
                start = self._idle < len(calls) and self._threads < self._max_threads
                if start:
                    self._threads += 1
                elif self._idle >= len(calls):
                    self._ready.notify()
        for late in expired:
            late.settle(None, Expired("no thread was free before the deadline"))
        if start:
            thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
            thread.start()
        return pending

    def close(self) -> None:
        """Drop the calls not started yet; threads end once their call has."""
        with self._ready:
            self._closed = True
            dropped = list(self._calls)
            self._calls.clear()
            self._ready.notify_all()
        for pending, _ in dropped:
            pending.settle(None, Expired("the pool is closed"))

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._calls:
                    if self._closed:
                        self._threads -= 1
                        return
                    self._idle += 1
                    woken = self._ready.wait(IDLE_TIMEOUT)
                    self._idle -= 1
                    if not woken and not self._calls:
                        self._threads -= 1  # idle for IDLE_TIMEOUT
                        return
                pending, call = self._calls.popleft()
            if time.monotonic() >= pending.deadline:
                pending.settle(None, Expired("no thread was free before the deadline"))
                continue
            try:
                value = call()
            except BaseException as exc:  # the outcome, for whoever waits
                pending.settle(None, exc)
            else:
                pending.settle(value, None)
