"""When a failed request is tried again, and how long to wait before it."""

from __future__ import annotations

import dataclasses
import random
import time
from email.utils import parsedate_to_datetime

#: Statuses that say "try again later". Connection errors are retried as well:
#: with the request ID header a repeated request is safe even if the server did
#: see the first one.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, honoring (and clamping) ``Retry-After``."""

    #: Attempts after the first one.
    max_retries: int = 3
    #: First backoff, seconds; it doubles on each retry.
    backoff_factor: float = 0.5
    #: No backoff is longer than this, seconds.
    backoff_max: float = 30.0
    #: A server's Retry-After longer than this is cut to it, seconds.
    retry_after_max: float = 60.0

    def can_retry(self, retries_done: int) -> bool:
        """Whether another attempt is allowed after ``retries_done`` retries."""
        return retries_done < self.max_retries

    def backoff(self, retries_done: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number ``retries_done + 1``."""
        server_asks = parse_retry_after(retry_after)
        if server_asks is not None:
            return min(server_asks, self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff_factor * 2.0**retries_done)
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
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)
