"""The background side: sender threads that deliver what the ExportQueue hands them.

A daemon sender thread is started by ``init``. When requests are ready that no
idle sender can take, more senders are started, up to
``max_concurrent_requests``, so that a slow, far-away server does not cap
throughput at one request per round trip; extra senders exit after a while
without work. Every send goes through the shared ``Transport`` (retries,
backoff, authentication), and its outcome resolves the request in the queue.

Nothing here ever raises into the application or waits without a deadline.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from ._exceptions import LayerAuthError, LayerHTTPError, LayerRequestError
from ._losses import INTERNAL_ERROR, REJECTED, RETRIES_EXHAUSTED, SHUTDOWN, LossLog
from ._queue import ExportQueue, Request
from ._retry import is_retryable
from ._transport import Transport

logger = logging.getLogger("layer_sdk")

#: The first sender re-checks for work this often even when nothing wakes it, seconds.
PRIMARY_IDLE_TIMEOUT = 5.0
#: An extra sender without work for this long exits, seconds.
EXTRA_IDLE_TIMEOUT = 30.0


class _ThreadRole(threading.local):
    #: True in the SDK's own threads, so that whatever they trigger (a logging
    #: handler that reports to Layer, say) is never enqueued again. A class
    #: default keeps the hot path's read cheap in every other thread.
    active = False


sdk_thread = _ThreadRole()


class ExportWorker:
    """Runs the sender threads of one client."""

    def __init__(
        self, queue: ExportQueue, transport: Transport, *, max_senders: int, losses: LossLog
    ) -> None:
        self._queue = queue
        self._transport = transport
        self._max_senders = max_senders
        self._losses = losses
        self._lock = threading.Lock()
        self._senders: list[threading.Thread] = []
        self._running = 0  # senders started and not yet exited
        self._primary: threading.Thread | None = None
        self._stopping = False
        self._cancel = threading.Event()  # cuts backoff sleeps short at shutdown
        self.pid = os.getpid()

    def start(self) -> None:
        """Start the first sender thread."""
        with self._lock:
            self._primary = self._spawn(primary=True)

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

    def _replace_primary(self) -> None:
        try:
            self._primary = self._spawn(primary=True)
        except RuntimeError:
            self._senders.pop()  # the interpreter is exiting: no thread can start

    def stop(self, deadline: float) -> None:
        """Cut backoff sleeps short and let the senders exit, waiting at most until ``deadline``."""
        with self._lock:
            self._stopping = True
            senders = list(self._senders)
        self._cancel.set()
        for thread in senders:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            thread.join(remaining)
        self._transport.close()

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
        idle_timeout = PRIMARY_IDLE_TIMEOUT if primary else EXTRA_IDLE_TIMEOUT
        while True:
            request = self._queue.take(idle_timeout)
            if request is None:
                if self._stopping or not primary or self._queue.closed:
                    return
                continue
            outcome: str | None = INTERNAL_ERROR
            attempted = False
            try:
                self._queue.report()
                if self._queue.needs_more_senders():
                    self._add_sender()
                attempted = True
                outcome = self._deliver(request)
            finally:
                # On every way out, so that no request is stranded in flight:
                # resolved once sending began, else handed back for the next sender.
                if attempted:
                    self._queue.complete(request, outcome)
                else:
                    self._queue.give_back(request)

    def _deliver(self, request: Request) -> str | None:
        """Send one request; None when delivered, else the reason it was given up on.

        When no credentials can be had (the token endpoint refuses the client),
        the events are not at fault: the request keeps them (still counted as
        queued) and is tried again with backoff until it goes through or
        shutdown cuts the wait short. Each try counts in ``retried``.
        """
        refusals = 0
        while True:
            try:
                self._transport.send(
                    request.path,
                    request.body,
                    cancel=self._cancel,
                    on_retry=lambda: self._queue.count_retry(request),
                )
                return None
            except LayerAuthError as exc:
                # min(): past the backoff's ceiling, a larger exponent only risks overflow.
                delay = self._transport.retry.backoff(min(refusals, 16))
                self._losses.credentials_refused(str(exc), delay)
                if self._cancel.wait(delay):
                    reason, detail = SHUTDOWN, f"still no credentials: {exc}"
                    break
                refusals += 1
                self._queue.count_retry(request)
            except LayerHTTPError as exc:
                reason = RETRIES_EXHAUSTED if is_retryable(exc.status_code) else REJECTED
                detail = f"{request.path} answered {exc.status_code}: {exc.message}"
                break
            except LayerRequestError as exc:
                reason = SHUTDOWN if self._cancel.is_set() else RETRIES_EXHAUSTED
                detail = str(exc)
                break
            except Exception:
                # A bug of ours must cost the events of this request, not the worker.
                logger.exception("layer-sdk failed to send a request")
                reason, detail = INTERNAL_ERROR, ""
                break
        if detail:
            self._losses.explain(reason, detail)
        return reason
