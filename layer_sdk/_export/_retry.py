"""When a failed request is tried again, and how long to wait before it.

Three pieces: ``RetryPolicy`` says how long one request waits before its next
attempt (capped exponential backoff with jitter, or the server's
``Retry-After``); ``RetryState`` is what a request's attempts came to so far,
kept with it while it waits in the queue; ``SendGate`` is shared by all the
sender threads of a client, judges the API by its recent attempts, and
decides when any of them may send at all, so that an unreachable or
overloaded API sees a trickle of probes instead of every sender retrying on
its own, while a fraction of failures stops no one.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import threading
import time
from collections import deque
from datetime import timezone
from email.utils import parsedate_to_datetime

from .._exceptions import LayerSDKException

#: Statuses that say "try again later". Connection errors are retried as well:
#: with the request ID header a repeated request is safe even if the server did
#: see the first one.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

#: A request that merged a session with its actions and was refused with one of
#: these is resent event by event, so that one bad event does not take the others.
SPLIT_STATUSES = frozenset({400, 409, 413, 422})

#: How many of the latest attempts (across all senders) the send gate judges the API by,
#: once it has answered at all: enough that a fraction of failures, even nine in ten, is
#: told from an outage (among 200 attempts of which one in ten succeeds, four or fewer
#: succeed about once in 10^5). Until the API first answers there is nothing to weigh
#: the failures against, and the attempts so far are judged as they are (a client
#: started against a dead API learns it from its first few).
RECENT = 200
#: A request's backoff grows with its failures (else it stays at the first step)
#: once this share of the recent attempts failed: the API as a whole is in trouble.
#: Below it a failure is taken as local (one bad backend, a blip), so that partial
#: failures slow delivery by their fraction instead of holding events back for long.
FAILING_SHARE = 0.95
#: The API counts as unreachable (only probes go out) once this many of the
#: recent attempts failed...
OUTAGE_AFTER = 20
#: ...and they are at least this share of them: (nearly) none answers. A fraction of
#: failures (one bad backend in five, or nine in ten) is not an outage: it must not
#: stall every sender.
OUTAGE_SHARE = 0.98
#: Every sender pauses for a ``Retry-After`` once this many of the recent attempts
#: were answered with one...
PAUSE_AFTER = 3
#: ...and they are at least this share of them: (nearly) every answer asks to wait, so
#: the API as a whole says so. One backend in five (or half of them) draining delays
#: only the requests it refused.
PAUSE_SHARE = 0.9


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


class RetryState:
    """What the attempts of one request came to so far, kept with the request between them."""

    __slots__ = ("error", "reauthenticated", "retries", "started")

    def __init__(self, started: float) -> None:
        #: When the first attempt began (monotonic): the retry budget counts from it.
        self.started = started
        #: Attempts that failed for now (the backoff's exponent); a retry of a body
        #: the server may have taken already when this is not 0.
        self.retries = 0
        #: Whether new credentials were fetched after a 401 (once per request).
        self.reauthenticated = False
        #: Why the last attempt that failed did (told when the request is given up on).
        self.error: LayerSDKException | None = None


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


# What an attempt came to, as the gate keeps it among the recent outcomes.
_ANSWERED, _FAILED, _ASKED_TO_WAIT = 0, 1, 2


class SendGate:
    """When the senders of one client may send, shared by all of them.

    It judges the API by the outcomes of the latest ``RECENT`` attempts, not
    by the last few: with many senders in parallel, a few failures in a row
    are common when a fraction of the answers fail, and a fraction of failures
    must slow delivery by that fraction, not stop it. Its shares are of a full
    ``RECENT`` once the API answered an attempt; before that, of the attempts
    so far (nothing answered: a dead API is told from the first few).

    - Healthy: everyone sends at will. A request that failed waits its own
      backoff in the queue, without holding a sender (``_queue``).
    - Unreachable: at least ``OUTAGE_AFTER`` of the recent attempts failed
      (no answer, or only "try later" answers), and they are at least
      ``OUTAGE_SHARE`` of them. Then one request at a time probes the API,
      spaced by the policy's backoff; the others wait here. Any answer that
      shows the API is up (a success, even a 4xx) ends it: everyone resumes,
      and the requests waiting in the queue for a retry are made due
      (``recoveries`` tells the worker).
    - Paused: a ``Retry-After`` delays the request it answered. It pauses
      every sender only when the API as a whole says so: at least
      ``PAUSE_AFTER`` of the recent attempts were answered with one, and
      they are at least ``PAUSE_SHARE`` of them. Then everyone waits that
      long (clamped), so that a fleet of processes backs off together.

    ``close()`` (shutdown) wakes every waiter at once. Every wait has a deadline.
    The gate logs nothing: what the attempts came to is told by the transport's
    ``TroubleLog`` (``_trouble``), the one voice on the API's condition.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._recent: deque[int] = deque()  # the outcomes of the latest attempts, oldest first
        self._failures = 0  # failed attempts among them
        self._asked_to_wait = 0  # ...of which answered with a Retry-After
        self._judged_on = 0  # how many attempts their shares are taken of (``_record``)
        self._answered = False  # whether the API answered an attempt yet
        self._outage = False
        self._paused_until = 0.0
        self._failed_probes = 0
        self._next_probe = 0.0
        self._probing = False
        self._closed = False
        #: How many outages ended so far: the requests that waited for a retry meanwhile
        #: need not wait any longer (the worker makes them due when this changes).
        self.recoveries = 0

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (shutdown)."""
        return self._closed

    @property
    def healthy(self) -> bool:
        """Whether the API is taken to be reachable and nothing pauses sending."""
        return not self._outage and self._paused_until <= time.monotonic()

    @property
    def failing(self) -> bool:
        """Whether at least ``FAILING_SHARE`` of the recent attempts failed.

        A request's backoff grows with its own failures only then: while the
        API mostly answers, a failure is taken as local (one bad backend, a
        blip), and waiting longer at each one would only hold its events back.
        """
        return self._failures >= FAILING_SHARE * self._judged_on

    def admit(self, deadline: float) -> Admission:
        """Wait until this sender may send, at most until ``deadline`` (monotonic seconds).

        A ``PROBE`` admission must be answered by ``passed()``, ``failed(probe=True)``
        or ``abandon(probe=True)``.
        """
        if not self._outage and not self._paused_until and not self._closed:
            return Admission.SEND  # healthy, the common case: no lock needed to say so
        with self._lock:
            while True:
                if self._closed:
                    return Admission.CLOSED
                now = time.monotonic()
                if self._paused_until and self._paused_until <= now:
                    self._paused_until = 0.0
                start = self._paused_until
                if self._outage:
                    start = max(start, self._next_probe)
                if now >= start and not (self._outage and self._probing):
                    if not self._outage:
                        return Admission.SEND
                    self._probing = True
                    return Admission.PROBE
                if now >= deadline:
                    return Admission.EXPIRED
                # Woken early by passed(), failed() or close(); else at the time computed.
                until = deadline if now >= start else min(start, deadline)
                self._changed.wait(until - now)

    def passed(self, *, probe: bool = False) -> None:
        """The API answered an attempt (with a status that is not "try later"): it is up."""
        if not self._failures and not self._probing and len(self._recent) == RECENT:
            return  # nothing to change: the common case, without the lock
        with self._lock:
            self.recoveries += self._outage
            if self._outage or self._probing or probe:
                # It was taken to be unreachable, and answers: everyone resumes at once.
                self._recent.clear()
                self._failures = self._asked_to_wait = self._failed_probes = 0
                self._outage = self._probing = False
                self._answered, self._judged_on = True, RECENT
                self._changed.notify_all()
            else:
                self._record(_ANSWERED)

    def failed(self, *, probe: bool, retry_after: float | None) -> None:
        """An attempt failed for now: no answer, or "try later" (``retry_after``: the
        server's wish in seconds, if it said)."""
        with self._lock:
            now = time.monotonic()
            self._record(_FAILED if retry_after is None else _ASKED_TO_WAIT)
            if probe:
                self._probing = False
                self._failed_probes += 1
                self._next_probe = now + self._policy.backoff(self._failed_probes)
            elif (
                not self._outage
                and self._failures >= OUTAGE_AFTER
                and self._failures >= OUTAGE_SHARE * self._judged_on
            ):
                self._outage = True
                self._next_probe = now + self._policy.backoff(0)
            if (
                retry_after is not None
                and self._asked_to_wait >= PAUSE_AFTER
                and self._asked_to_wait >= PAUSE_SHARE * self._judged_on
            ):
                pause = min(retry_after, self._policy.retry_after_max)
                self._paused_until = max(self._paused_until, now + pause)
            self._changed.notify_all()

    def _record(self, outcome: int) -> None:
        recent = self._recent
        if len(recent) == RECENT:
            oldest = recent.popleft()
            self._failures -= oldest != _ANSWERED
            self._asked_to_wait -= oldest == _ASKED_TO_WAIT
        recent.append(outcome)
        self._failures += outcome != _ANSWERED
        self._asked_to_wait += outcome == _ASKED_TO_WAIT
        self._answered = self._answered or outcome == _ANSWERED
        # Once the API answered, shares are of a full window: a few failures in a row
        # after a success (or after an outage ended) are not (nearly) all of them.
        self._judged_on = RECENT if self._answered else len(recent)

    def abandon(self, *, probe: bool) -> None:
        """An admitted attempt ended without an answer either way (a bug, a cancel)."""
        if probe:
            with self._lock:
                self._probing = False
                self._changed.notify_all()

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` (a synchronous call's backoff); False when ``close()`` cut it short."""
        with self._lock:
            return not self._changed.wait_for(lambda: self._closed, seconds)

    def close(self) -> None:
        """Refuse every waiting and future admission, and end every sleep (shutdown)."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()
