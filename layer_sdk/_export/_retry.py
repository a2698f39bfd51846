"""When a failed request is tried again, and how long to wait before it.

Two pieces: ``RetryPolicy`` says how long one request waits before its next
attempt (capped exponential backoff with jitter, or the server's
``Retry-After``); ``SendGate`` is shared by all the sender threads of a client
and decides when any of them may send at all, so that an unreachable or
overloaded API sees a trickle of probes instead of every sender retrying on
its own.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import threading
import time
from datetime import timezone
from email.utils import parsedate_to_datetime

#: Statuses that say "try again later". Connection errors are retried as well:
#: with the request ID header a repeated request is safe even if the server did
#: see the first one.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

#: A request that merged a session with its actions and was refused with one of
#: these is resent event by event, so that one bad event does not take the others.
SPLIT_STATUSES = frozenset({400, 409, 413, 422})

#: Consecutive transient failures (across all senders, with no success in
#: between) after which the API counts as unreachable and only probes go out.
#: One failure is not an outage: a single 503 from one bad backend must not
#: stall every sender.
OUTAGE_AFTER = 3


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, honoring (and clamping) ``Retry-After``."""

    #: Attempts after the first one, on the synchronous path (the original SDK's 3).
    max_retries: int = 3
    #: How long a buffered request keeps being retried, seconds from its first attempt.
    max_retry_time: float = 600.0
    #: First backoff, seconds; it doubles on each retry.
    backoff_factor: float = 0.5
    #: No backoff is longer than this, seconds. It is also the longest gap
    #: between two probes of an unreachable API, so it bounds how late delivery
    #: resumes once the API is back.
    backoff_max: float = 10.0
    #: A server's Retry-After longer than this is cut to it, seconds.
    retry_after_max: float = 60.0

    def backoff(self, retries_done: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retries_done + 1``."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        # min(): past the ceiling, a larger exponent only risks overflow.
        ceiling = min(self.backoff_max, self.backoff_factor * 2.0 ** min(retries_done, 32))
        # Half fixed, half random: spreads out clients that failed together
        # without ever retrying immediately.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def is_retryable(status: int) -> bool:
    """Whether a response with this status is worth sending again."""
    return status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            # asctime dates (and "-0000") name no zone: HTTP dates are UTC, never local.
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class Admission(enum.Enum):
    """What ``SendGate.admit`` answers."""

    SEND = "send"  # the API is healthy: send
    PROBE = "probe"  # the API seemed unreachable: send, as the one probe
    EXPIRED = "expired"  # the deadline passed before sending was allowed
    CLOSED = "closed"  # shutting down: do not send


class SendGate:
    """When the senders of one client may send, shared by all of them.

    - Healthy: everyone sends at will (a request that failed still waits its
      own backoff).
    - A 429 or 503 with ``Retry-After`` pauses everyone for that long, so that
      a fleet of processes backs off together when the API says it is overloaded.
    - After ``OUTAGE_AFTER`` consecutive transient failures the API counts as
      unreachable: one request at a time probes it, spaced by the policy's
      backoff; the others wait. A success, or any answer that shows the API is
      up (even a 4xx), ends the outage and everyone resumes at once.

    ``close()`` (shutdown) wakes every waiter at once. Every wait has a deadline.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._paused_until = 0.0
        self._failures = 0  # consecutive transient failures
        self._failed_probes = 0
        self._next_probe = 0.0
        self._probing = False
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (shutdown)."""
        return self._closed

    @property
    def healthy(self) -> bool:
        """Whether the API is taken to be reachable and nothing pauses sending."""
        return self._failures < OUTAGE_AFTER and self._paused_until <= time.monotonic()

    def admit(self, not_before: float, deadline: float) -> Admission:
        """Wait until this sender may send (not before ``not_before``, monotonic seconds).

        A ``PROBE`` admission must be answered by ``passed()`` or ``failed(probe=True)``.
        """
        if (
            not self._failures
            and not self._paused_until
            and not self._closed
            and not_before <= time.monotonic()
        ):
            return Admission.SEND  # healthy, the common case: no lock needed to say so
        with self._lock:
            while True:
                if self._closed:
                    return Admission.CLOSED
                now = time.monotonic()
                start = max(not_before, self._paused_until)
                outage = self._failures >= OUTAGE_AFTER
                if outage:
                    start = max(start, self._next_probe)
                if now >= start and not (outage and self._probing):
                    if not outage:
                        return Admission.SEND
                    self._probing = True
                    return Admission.PROBE
                if now >= deadline:
                    return Admission.EXPIRED
                # Woken early by passed(), failed() or close(); else at the time computed.
                until = deadline if now >= start else min(start, deadline)
                self._changed.wait(until - now)

    def passed(self) -> None:
        """The API answered (with any status that is not "try later"): it is up."""
        if not self._failures and not self._probing:
            return  # nothing to clear: the common case, without the lock
        with self._lock:
            woke = self._failures >= OUTAGE_AFTER or self._probing
            self._failures = self._failed_probes = 0
            self._probing = False
            if self._paused_until <= time.monotonic():
                self._paused_until = 0.0
            if woke:
                self._changed.notify_all()

    def failed(self, *, probe: bool, retry_after: float | None) -> None:
        """A transient failure; ``retry_after`` is the server's wish in seconds, if any."""
        with self._lock:
            now = time.monotonic()
            if retry_after is not None:
                pause = min(retry_after, self._policy.retry_after_max)
                self._paused_until = max(self._paused_until, now + pause)
            self._failures += 1
            if probe:
                self._probing = False
                self._failed_probes += 1
            if probe or self._failures == OUTAGE_AFTER:
                # Failures of requests that were already in flight when the
                # outage began do not move the next probe further away.
                self._next_probe = now + self._policy.backoff(self._failed_probes)
            self._changed.notify_all()

    def abandon(self, *, probe: bool) -> None:
        """An admitted attempt ended without an answer either way (a bug, a cancel)."""
        if probe:
            with self._lock:
                self._probing = False
                self._changed.notify_all()

    def close(self) -> None:
        """Refuse every waiting and future admission (shutdown)."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()
