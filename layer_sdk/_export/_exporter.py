"""One client's export pipeline, from the door of the queue to the server, and its lifecycle.

``Exporter`` puts together what one ``init()`` builds: the ``ExportQueue``
(``_queue``), the sender threads of the ``ExportWorker`` (``_worker``), the
``Transport`` they share with the synchronous path (``_transport``) and the
``LossLog`` (``_losses``). It also owns what happens to them across the life
of a process:

- **exit**: an ``atexit`` hook closes every exporter and drains it, each
  within its ``shutdown_timeout``, side by side; ``multiprocessing`` children,
  which end with ``os._exit`` past ``atexit``, drain through
  ``multiprocessing.util.Finalize`` instead;
- **fork**: a child rebuilds every exporter in place (an empty queue, fresh
  locks, new connections, its own sender thread), so that it never re-sends
  its parent's events nor waits on a lock a parent thread held. A fork that
  runs no Python hook (one made by a C extension or an embedding server) is
  caught at the door of the queue before any lock is taken: a byte of a page
  the kernel wipes in a forked child (``_entropy.fork_mark``, ~20 ns);
- **feeders**: what hands events to the clients from a thread of its own
  (the OpenTelemetry span processor's backlog, ``otel/_backlog.py``) is a
  ``Feeder``: every flush, shutdown and exit drain first waits for what the
  feeders hold to reach the queues, so that a span that ended before
  ``flush()`` or the interpreter's exit is delivered like an event appended then.

Waiting: ``flush`` waits on the queue's ``FlushWait`` (a ``Pending`` the queue
settles when the events are resolved). ``aflush`` awaits the same ``Pending``
on its event loop, holding no thread; what feeders hold is waited for on a
thread of the SDK's own (``run_on_sdk_thread``), never on the loop's default
executor, which belongs to the application.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol, TypeVar

import msgspec

from .._config import DEFAULT_FLUSH_TIMEOUT, Config
from .._daemon_pool import DaemonPool
from .._entropy import fork_mark
from .._exceptions import LayerRequestError
from .._logging import debug_logging
from .._oversize import fit
from ._backends import Backend, Response
from ._event import Event
from ._losses import RECURSION, SHUTDOWN, LossLog, sdk_thread
from ._queue import ExportQueue, ExportStats, Put
from ._spool import Spool, forsake
from ._transport import BodySplicer, Transport
from ._trouble import TroubleLog, duration
from ._worker import ExportWorker

logger = logging.getLogger("layer_sdk")

T = TypeVar("T")

#: What ``put`` answers when all went as usual (read once: an enum member is slower).
_ACCEPTED = Put.ACCEPTED
_WOKE = Put.WOKE
#: Seconds a shutdown drains quietly; events still undelivered then are a wait worth
#: explaining (one line), since it may last until ``shutdown_timeout``.
QUIET_DRAIN = 0.5
#: ``[0]`` is 1 in the process whose exporters were built or rebuilt, 0 in a child
#: forked since (with or without the at-fork hook).
_this_process = fork_mark()
_this_process[0] = 1


class Exporter:
    """The queue, the senders and the transport of one client."""

    def __init__(
        self,
        config: Config,
        backend: Backend | None = None,
        splicer: BodySplicer | None = None,
        between_requests: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._backend = backend  # None: the one the config calls for (see _backends)
        self._splicer = splicer  # fills in an application ID resolved from a name
        # Work a sender does between requests for the callers (minting session IDs ahead).
        self._between_requests = between_requests
        self._debugging = config.debug  # holds the debug handler until finish()
        if config.debug:
            debug_logging.acquire()
        self._build()
        _live.add(self)
        drain_at_multiprocessing_exit()

    def _build(self) -> None:
        config = self.config
        # An action larger than this is cut to fit (oversize="truncate"); with
        # "refuse", none is: the queue refuses it as too large.
        self._cut_above = config.max_event_bytes if config.oversize == "truncate" else sys.maxsize
        self._truncated = 0
        self._truncated_lock = threading.Lock()
        trouble = TroubleLog(
            config.base_url,
            authenticated=config.auth_provider is not None,
            queued=lambda: self.queue.stats().queued,
        )
        self.losses = LossLog(config.on_drop, last_error=lambda: trouble.last_error)
        self.spool = None if config.spool_dir is None else self._spool(config)
        self.queue = ExportQueue(
            max_events=config.max_queue_size,
            max_bytes=config.max_queue_bytes,
            max_event_bytes=config.max_event_bytes,
            batch_size=config.max_batch_size,
            max_request_bytes=config.max_request_bytes,
            max_pipelined=config.max_pipelined_requests,
            flush_interval=config.flush_interval,
            on_loss=self.losses,
            store=self.spool,
        )
        if self.spool is not None and config.spool_max_age > config.max_retry_time:
            # What waits in a spool is retried as long as the spool keeps it.
            config = dataclasses.replace(config, max_retry_time=config.spool_max_age)
        self.transport = Transport(config, self._backend, self._splicer, trouble)
        self.worker = ExportWorker(
            self.queue,
            self.transport,
            max_senders=config.max_concurrent_requests,
            losses=self.losses,
            between_requests=self._between_requests,
        )
        self.worker.start(durable=self.spool is not None)

    def _spool(self, config: Config) -> Spool:
        assert config.spool_dir is not None
        return Spool(
            config.spool_dir,
            sync=config.spool_sync,
            max_bytes=config.spool_max_bytes,
            max_age=config.spool_max_age,
            losses=self.losses,
        )

    @property
    def closed(self) -> bool:
        """Whether the door is shut (shutdown has begun): new events are dropped."""
        return self.queue.closed

    # -- the caller's side -------------------------------------------------------------

    def put(self, event: Event) -> Put:
        """Queue ``event`` (never blocks, never raises); what became of it."""
        if sdk_thread.active and not sdk_thread.recording:
            # A logging handler (say) run by one of the SDK's threads: never fed back.
            self.queue.refuse(event, RECURSION)
            return Put.DROPPED
        if not _this_process[0]:
            _restart_in_child()  # forked without the at-fork hook: before any lock is taken
        if len(event.body) > self._cut_above and not event.creates_session:
            self._cut(event)  # else refused by the queue, as too large
        outcome = self.queue.put(event)
        if outcome is _WOKE:
            self.worker.ensure_running()
        return outcome

    def _cut(self, event: Event) -> None:
        """Cut the content of an action over ``max_event_bytes`` so that it fits, if it can."""
        limit = self.config.max_event_bytes
        try:
            fitted = fit(event.body, limit)
        except Exception:  # a bug of ours: the event is refused as too large, not the call
            logger.exception("layer-sdk failed to cut an action to fit max_event_bytes")
            return
        if fitted is None:
            return
        with self._truncated_lock:
            self._truncated += 1
        self.losses.truncated(len(event.body), limit, fitted.characters)
        event.body = fitted.body

    def send_now(
        self, session_id: str, path: str, body: bytes, *, creates: bool = False
    ) -> Response:
        """The synchronous path: send now, after the session's queued events; raises
        (``creates``: see ``Transport.send``)."""
        if not _this_process[0]:
            _restart_in_child()
        if self.closed:
            raise LayerRequestError("the client is shut down; call init() to use it again")
        # Earlier buffered events of this session go first, so the order holds on the wire.
        if not self.queue.wait_for_session(session_id, DEFAULT_FLUSH_TIMEOUT):
            raise LayerRequestError(f"earlier events of session {session_id} are still queued")
        return self.transport.send(path, body, creates=creates)

    def flush(self, timeout: float, session_id: str | None = None) -> bool:
        """Wait for every event queued (or held by a feeder) before the call, of
        ``session_id`` only when given; True when all were delivered."""
        if not _this_process[0]:
            _restart_in_child()
        if self.closed:
            return True
        deadline = time.monotonic() + timeout
        fed = drain_feeders(deadline)
        self.worker.ensure_running()
        return self.queue.flush(max(0.0, deadline - time.monotonic()), session_id) and fed

    async def aflush(self, timeout: float, session_id: str | None = None) -> bool:
        """:meth:`flush` on an event loop: it awaits the queue's settling, holding no thread."""
        if self.closed:
            return True
        deadline = time.monotonic() + timeout
        fed = True
        if _feeders:
            fed = await run_on_sdk_thread(lambda: drain_feeders(deadline), timeout)
        self.worker.ensure_running()
        wait = self.queue.begin_flush(max(0.0, deadline - time.monotonic()), session_id)
        try:
            await wait.pending.wait_async()
        finally:  # also when the awaiting task is cancelled: the queue forgets the wait
            delivered = self.queue.end_flush(wait)
        return delivered and fed

    def count_loss(self, reason: str, detail: str) -> None:
        """Count one event lost before it reached the door (``detail``: why, for the log
        line), told to ``on_drop`` and logged like the losses at the door."""
        self.losses.explain(reason, detail)
        self.queue.refuse(Event("", b"", False), reason)

    def stats(self) -> ExportStats:
        """A consistent snapshot of the counts."""
        stats = self.queue.stats()
        truncated = self._truncated
        return msgspec.structs.replace(stats, truncated=truncated) if truncated else stats

    # -- the end -----------------------------------------------------------------------

    def close(self) -> bool:
        """Shut the door to new events; False when it was shut already."""
        if self.queue.closed:
            return False
        self.queue.close()
        return True

    def finish(self, deadline: float) -> bool:
        """Deliver what is queued until ``deadline`` (monotonic), give up on the rest, stop.

        A drain that takes longer than ``QUIET_DRAIN`` says once what it waits for
        (the application's exit is held meanwhile), and the loss line of what is
        left at the deadline says why.
        """
        queue = self.queue
        self.transport.trouble.closing(deadline)
        delivered = queue.flush(min(QUIET_DRAIN, max(0.0, deadline - time.monotonic())))
        waiting = queue.stats().queued
        if waiting:
            left = deadline - time.monotonic()
            if left > 0:
                logger.warning(
                    "layer-sdk is shutting down: waiting up to %s to deliver %d event(s)",
                    duration(left),
                    waiting,
                )
            # (The first flush timed out: it kept its losses for this one to tell.)
            delivered = queue.flush(max(0.0, deadline - time.monotonic()))
            self.losses.explain(SHUTDOWN, "still queued at the shutdown deadline")
        queue.persist(deadline)  # with a spool: what is undelivered waits there
        queue.abandon()
        self.losses.unexplain(SHUTDOWN)
        self.worker.stop(deadline)
        queue.close_store()
        if self._debugging:
            self._debugging = False
            debug_logging.release()
        return delivered

    # -- fork --------------------------------------------------------------------------

    def _restart_in_child(self) -> None:
        """In a forked child: fresh locks, an empty queue, new connections, a new worker."""
        if self.worker.pid == os.getpid():
            return
        if self.queue.closed:
            # Shut down in the parent: it stays shut, but a lock some parent
            # thread held at fork time must not block the child.
            self.queue.forget_locks()
            self.worker.pid = os.getpid()
            return
        session = self.config.http_session
        if session is not None:
            # The parent's pooled sockets must not be shared by two processes.
            for adapter in getattr(session, "adapters", {}).values():
                if hasattr(adapter, "poolmanager"):
                    adapter.poolmanager.clear()
        if self._splicer is not None:
            self._splicer.restart_in_child()
        if self.spool is not None:
            forsake(self.spool)  # the parent's files stay the parent's; the child gets its own
        self._build()


#: Every exporter not yet garbage-collected: drained at exit, rebuilt after fork.
_live: weakref.WeakSet[Exporter] = weakref.WeakSet()
_lifecycle = threading.Lock()


class Feeder(Protocol):
    """Hands events to a client from a thread of its own (see the module docstring)."""

    def drain(self, deadline: float) -> bool:
        """Wait until what it held at the call reached its client (at most until
        ``deadline``, monotonic); True when it did. Never raises."""
        ...


#: Every feeder not yet garbage-collected.
_feeders: weakref.WeakSet[Feeder] = weakref.WeakSet()


def add_feeder(feeder: Feeder) -> None:
    """Drain ``feeder`` first at every flush, shutdown and exit (held weakly)."""
    _feeders.add(feeder)


def drain_feeders(deadline: float) -> bool:
    """Drain every feeder, until ``deadline`` at most; True when all were drained."""
    drained = True
    for feeder in list(_feeders):
        drained = feeder.drain(deadline) and drained
    return drained


#: The SDK's threads for waits an event loop must not make itself (``run_on_sdk_thread``).
SDK_THREADS_FOR_WAITS = 8
#: How much longer than its own bound ``run_on_sdk_thread`` waits for a call to return.
RETURN_GRACE = 0.25
_waits = DaemonPool("layer-sdk-wait", SDK_THREADS_FOR_WAITS)


async def run_on_sdk_thread(call: Callable[[], bool], timeout: float) -> bool:
    """Run ``call`` (bounded by ``timeout`` itself) on a thread of the SDK's; await what
    it returns, at most ``timeout`` and ``RETURN_GRACE`` more (then False). The event
    loop runs on meanwhile; its default executor, the application's, is not used."""
    pending = _waits.submit(call, max(0.0, timeout) + RETURN_GRACE)
    await pending.wait_async()
    return pending.done() and pending.error is None and pending.value is True


def lifecycle_lock() -> threading.Lock:
    """The lock of every client's ``init()`` and ``shutdown()``; a fresh one after fork."""
    return _lifecycle


@atexit.register
def drain_at_exit() -> None:
    """Close every exporter, then drain each within its own ``shutdown_timeout``.

    The feeders are drained first (within the longest ``shutdown_timeout``),
    while the doors are open. Closing all first lets their senders drain side
    by side, so that several clients do not add their bounds up. No thread is
    started here (Python 3.12+ refuses to at exit).
    """
    started = time.monotonic()
    live = [exporter for exporter in list(_live) if not exporter.closed]
    if live:
        # Spans a span processor has not read yet become events before the doors shut.
        drain_feeders(started + max(exporter.config.shutdown_timeout for exporter in live))
    closing = [exporter for exporter in live if exporter.close()]
    for exporter in closing:
        exporter.finish(started + exporter.config.shutdown_timeout)


def _restart_in_child() -> None:
    """Rebuild every exporter in a forked child (by the at-fork hook, or by the first
    call after a fork that ran none)."""
    global _lifecycle, _waits
    _this_process[0] = 1
    _lifecycle = threading.Lock()
    _waits = DaemonPool("layer-sdk-wait", SDK_THREADS_FOR_WAITS)
    for exporter in list(_live):
        exporter._restart_in_child()


_multiprocessing_hooked = False


def drain_at_multiprocessing_exit() -> None:
    """Drain at the exit of ``multiprocessing`` children too.

    A child process of ``multiprocessing`` ends with ``os._exit``, past
    ``atexit``, but first runs the finalizers of ``multiprocessing.util``
    (after a clean return from its target: a worker killed by
    ``Pool.terminate()`` runs nothing). A forked child inherits no finalizer
    (its registry is cleared when it starts), so one is registered in every
    child as it starts, through ``register_after_fork``; a child that
    initializes a client itself (spawn, forkserver) registers one then.
    """
    global _multiprocessing_hooked
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return  # not in use: a process cannot be started without it
    if not _multiprocessing_hooked:
        _multiprocessing_hooked = True
        util.register_after_fork(drain_at_exit, _finalize_in_child)
    if sys.modules["multiprocessing"].parent_process() is not None:
        _finalize_in_child(drain_at_exit)


def _finalize_in_child(drain: Callable[[], None]) -> None:
    sys.modules["multiprocessing.util"].Finalize(None, drain, exitpriority=10)


os.register_at_fork(before=drain_at_multiprocessing_exit, after_in_child=_restart_in_child)
