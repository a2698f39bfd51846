"""Lost events: why each was lost, and the log line and callback that say so.

Every event the SDK accepted or refused ends in exactly one of: delivered,
dropped at the door (``QUEUE_FULL``, ``TOO_LARGE``, ``SHUTDOWN``,
``RECURSION``) or given up on after being accepted (``REJECTED``,
``RETRIES_EXHAUSTED``, ``SESSION_FAILED``, ``SHUTDOWN``, ``INTERNAL_ERROR``).
The counts live in the queue; this module names the reasons and tells people.
"""

from __future__ import annotations

import logging
import threading
import time

from ._config import DropCallback

logger = logging.getLogger("layer_sdk")

# Why an event was dropped at the door or given up on after being accepted.
QUEUE_FULL = "queue_full"
TOO_LARGE = "too_large"
SHUTDOWN = "shutdown"
REJECTED = "rejected"
RETRIES_EXHAUSTED = "retries_exhausted"
SESSION_FAILED = "session_failed"
INTERNAL_ERROR = "internal_error"
#: Dropped when an SDK thread (e.g. a logging handler run by it) tries to enqueue.
RECURSION = "recursion"

#: At most one log line per loss reason in this many seconds (the counts add up meanwhile).
LOSS_LOG_INTERVAL = 10.0


class LossLog:
    """Counts, reports (``on_drop``) and logs lost events, without flooding the log.

    Each kind of trouble gets its first log line at once, then at most one
    line every ``LOSS_LOG_INTERVAL`` that sums up what happened meanwhile.
    """

    def __init__(self, on_drop: DropCallback | None = None) -> None:
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self._details: dict[str, str] = {}

    def explain(self, reason: str, detail: str) -> None:
        """Remember why the next loss for ``reason`` happened, for its log line."""
        with self._lock:
            self._details[reason] = detail

    def __call__(self, reason: str, count: int) -> None:
        """Record that ``count`` events were lost for ``reason``."""
        if self._on_drop is not None:
            try:
                self._on_drop(reason, count)
            except Exception:
                logger.exception("the on_drop callback raised")
        total = self._due(reason, count)
        if total:
            detail = self._details.pop(reason, None)
            logger.warning(
                "layer-sdk lost %d event(s): %s%s", total, reason, f" ({detail})" if detail else ""
            )

    def credentials_refused(self, message: str, delay: float) -> None:
        """A request got no credentials; its events stay queued and are tried again."""
        total = self._due("credentials_refused", 1)
        if total:
            logger.warning(
                "layer-sdk has no credentials for the Layer API (%s); the events stay queued "
                "and are tried again (%d refusal(s) since the last report, next try in %.1f s)",
                message,
                total,
                delay,
            )

    def _due(self, key: str, count: int) -> int:
        """How many to report now for ``key`` (0: not yet, the count is kept for later)."""
        now = time.monotonic()
        with self._lock:
            total = self._unlogged.get(key, 0) + count
            last = self._last_logged.get(key)
            if last is not None and now - last < LOSS_LOG_INTERVAL:
                self._unlogged[key] = total
                return 0
            self._last_logged[key] = now
            self._unlogged[key] = 0
            return total
