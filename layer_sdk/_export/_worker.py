"""The background side: sender threads that deliver what the ExportQueue hands them.

A daemon sender thread is started by ``init``. When requests are ready that no
idle sender can take, more senders are started, up to
``max_concurrent_requests``, so that a slow, far-away server does not cap
throughput at one request per round trip; extra senders exit after a while
without work. Every send goes through the shared ``Transport`` (retries,
backoff, authentication), and its outcome resolves the request in the queue.
A request that failed for now goes back to the queue until its retry is due:
its sender takes other work meanwhile, so that a fraction of failures slows
delivery by that fraction instead of taking senders out of service.

With a spool, one more thread hands the spool its work (``ExportQueue.keep_store``):
it writes each batch before the senders get it, deletes what they resolved,
reads back what waits on disk, and takes over what dead processes left. It is
a thread of its own so that the spool is written on time even while every
sender waits for an API that does not answer.

Nothing here ever raises into the application or waits without a deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from .._exceptions import LayerHTTPError
from ._losses import (
    INTERNAL_ERROR,
    REJECTED,
    SESSION_FAILED,
    SHUTDOWN,
    LossLog,
    Throttle,
    sdk_thread,
)
from ._queue import AGAIN, ExportQueue, Request
from ._retry import SPLIT_STATUSES
from ._transport import Delivery, Transport

logger = logging.getLogger("layer_sdk")

#: The first sender re-checks for work this often even when nothing wakes it, seconds.
PRIMARY_IDLE_TIMEOUT = 5.0
#: An extra sender without work for this long exits, seconds.
EXTRA_IDLE_TIMEOUT = 20.0
#: The spool's thread re-checks for work this often even when nothing wakes it, seconds.
STORE_IDLE_TIMEOUT = 5.0


class ExportWorker:
    """Runs the sender threads of one client."""

    def __init__(
        self,
        queue: ExportQueue,
        transport: Transport,
        *,
        max_senders: int,
        losses: LossLog,
        between_requests: Callable[[], None] | None = None,
    ) -> None:
        self._queue = queue
        self._between_requests = between_requests
        self._transport = transport
        self._max_senders = max_senders
        self._losses = losses
        self._existing = Throttle()  # sessions created elsewhere first, said at INFO
        self._lock = threading.Lock()
        self._senders: list[threading.Thread] = []
        self._running = 0  # senders started and not yet exited
        self._primary: threading.Thread | None = None
        self._keeper: threading.Thread | None = None  # the spool's thread (durable store)
        self._stopping = False
        self._recoveries = 0  # outages ended, as last seen (see SendGate.recoveries)
        self.pid = os.getpid()

    def start(self, *, durable: bool = False) -> None:
        """Start the first sender thread (and the spool's, for a ``durable`` store)."""
        with self._lock:
            self._primary = self._spawn(primary=True)
            if durable:
                self._keeper = self._start_keeper()

    def _start_keeper(self) -> threading.Thread:
        thread = threading.Thread(target=self._keep, name="layer-sdk-spool", daemon=True)
        thread.start()
        return thread

    def _keep(self) -> None:
        """The spool's thread: hands the store its work until the queue is abandoned."""
        sdk_thread.active = True
        try:
            while not self._stopping and self._queue.keep_store(STORE_IDLE_TIMEOUT):
                pass
        except BaseException:
            logger.exception("layer-sdk's spool thread had died; starting a new one")
            with self._lock:
                if not self._stopping:
                    with contextlib.suppress(RuntimeError):  # (the interpreter is exiting)
                        self._keeper = self._start_keeper()

    def ensure_running(self) -> None:
        """Restart the first sender if it is gone: a worker never stops silently.

        A sender that fails replaces itself (see ``_run``); this is the
        backstop for one that vanished without a word.
        """
        primary = self._primary
        if primary is not None and not primary.is_alive() and not self._stopping:
            with self._lock:
                if self._primary is primary and not self._stopping:
                    logger.error("layer-sdk's sender thread had died; starting a new one")
                    self._replace_primary()
        keeper = self._keeper
        if keeper is not None and not keeper.is_alive() and not self._stopping:
            with self._lock:
                if self._keeper is keeper and not self._stopping:
                    logger.error("layer-sdk's spool thread had died; starting a new one")
                    with contextlib.suppress(RuntimeError):
                        self._keeper = self._start_keeper()

    def _replace_primary(self) -> None:
        try:
            self._primary = self._spawn(primary=True)
        except RuntimeError:
            self._senders.pop()  # the interpreter is exiting: no thread can start

    def stop(self, deadline: float) -> None:
        """Cut backoff waits short and let the senders exit, waiting at most until ``deadline``."""
        with self._lock:
            self._stopping = True
            senders = list(self._senders)
            if self._keeper is not None:
                senders.append(self._keeper)
        self._transport.close()  # wakes every sender waiting in the send gate
        for thread in senders:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            thread.join(remaining)

    def _spawn(self, *, primary: bool) -> threading.Thread:
        number = len(self._senders) + 1
        thread = threading.Thread(
            target=self._run, args=(primary,), name=f"layer-sdk-sender-{number}", daemon=True
        )
        self._senders.append(thread)
        self._running += 1
        try:
            thread.start()
        except BaseException:
            self._running -= 1
            raise
        return thread

    def _add_sender(self) -> None:
        if self._running >= self._max_senders:
            return  # the common case under load, decided without the lock
        with self._lock:
            if self._stopping or self._running >= self._max_senders:
                return
            self._senders = [thread for thread in self._senders if thread.is_alive()]
            try:
                self._spawn(primary=False)
            except RuntimeError:
                # Python 3.12+ starts no thread once the interpreter is exiting:
                # the senders already running drain the queue.
                self._senders.pop()

    def _run(self, primary: bool) -> None:
        sdk_thread.active = True
        died = False
        try:
            self._send_until_idle(primary)
        except BaseException:
            # Whatever broke this thread (our bug, a callback raising
            # SystemExit), the exporter must not go quiet: log and replace it.
            logger.exception("layer-sdk's sender thread had died; starting a new one")
            died = True
        with self._lock:
            self._running -= 1
            current = self._primary is threading.current_thread()
            if died and current and not self._stopping:
                self._replace_primary()

    def _send_until_idle(self, primary: bool) -> None:
        while True:
            # Read at each wait (not once), so that a test can shorten it.
            request = self._queue.take(PRIMARY_IDLE_TIMEOUT if primary else EXTRA_IDLE_TIMEOUT)
            if request is None:
                if self._stopping or not primary or self._queue.finished:
                    return
                continue
            deliveries: list[Delivery] | None = None
            attempted = False
            try:
                self._queue.report()
                # No extra senders while the API is paused or unreachable: they would only wait.
                if self._queue.needs_more_senders() and self._transport.gate.healthy:
                    self._add_sender()
                attempted = True
                deliveries = self._transport.deliver(request)
                if self._transport.gate.recoveries != self._recoveries:
                    # The API answers again: what waited for a retry goes now.
                    self._recoveries = self._transport.gate.recoveries
                    self._queue.retry_now()
            except Exception:
                # A bug of ours must cost the events of this request, not the worker.
                logger.exception("layer-sdk failed to send a request")
            finally:
                # On every way out, so that no request is stranded in flight:
                # resolved once sending began, else handed back for the next sender.
                if deliveries is not None:
                    self._resolve(request, deliveries)
                elif attempted:
                    self._queue.complete(request, INTERNAL_ERROR)
                else:
                    self._queue.give_back(request)
            if self._between_requests is not None:
                try:
                    self._between_requests()
                except Exception:
                    logger.exception("layer-sdk's work between requests failed")

    def _resolve(self, request: Request, deliveries: list[Delivery]) -> None:
        """Settle a request in the queue by what became of each of its bodies."""
        refused = deliveries[0]
        first = request.events[0]
        if refused.loss == REJECTED and first.creates_session:
            merged = len(request.events) > 1
            # Sent before: retried after an attempt whose answer was lost, or replayed
            # from the spool of a process that died before it knew (the same body, under
            # the same request ID: its merged actions were taken with it).
            retried = request.retry is not None and request.retry.retries > 0
            sent_before = first.replayed or retried
            if refused.status == 409 and (sent_before or not merged):
                # The session exists: made by an earlier attempt (with the actions merged
                # into it), or by another client with the same ID (a deterministic ID, a
                # caller's session_id=). The create counts as sent, and the actions queued
                # behind it follow.
                if not sent_before:
                    self._existed(request.session_id)
                self._queue.complete(request)
                return
            if merged and refused.status in SPLIT_STATUSES and self._queue.split(request):
                return  # its events go again, one by one
        failures: list[str | None] = []
        again: Delivery | None = None
        for delivery in deliveries:
            if delivery.retry_at is not None:
                failures.append(AGAIN)
                again = delivery
            else:
                failures.append(delivery.loss)
                if delivery.loss is not None:
                    self._explain(request, delivery)
        retry_at = 0.0
        if again is not None:
            assert again.retry_at is not None
            retry_at = again.retry_at  # the same for every body sent again
        self._queue.complete_each(request, failures, retry_at)

    def _existed(self, session_id: str) -> None:
        """Say (at INFO, throttled) that a session created here existed on the server."""
        total = self._existing.due("existed", 1)
        if total:
            more = "" if total == 1 else f" ({total} such sessions since the last report)"
            logger.info(
                "layer-sdk: session %s already existed on the Layer API (409)%s: its actions "
                "are added to it; its attributes and times are the ones it was created with",
                session_id,
                more,
            )

    def _explain(self, request: Request, delivery: Delivery) -> None:
        """Tell the loss log why, for the log line of the loss."""
        assert delivery.loss is not None
        error = delivery.error
        if isinstance(error, LayerHTTPError):
            answered = f"{request.path} answered {error.status_code}"
            if delivery.loss == SHUTDOWN:
                answered = f"gave up: the client is shutting down; last error: {answered}"
            self._losses.explain_refusal(delivery.loss, answered, error.message, request.bodies)
        elif error is not None:
            # Its words may quote a malformed answer, which may quote the events.
            self._losses.explain(delivery.loss, str(error), request.bodies)
        if request.events[0].creates_session:
            # The actions queued behind it fail with it: their line says why.
            self._losses.explain(
                SESSION_FAILED, f"the create of their session was lost as {delivery.loss}"
            )
