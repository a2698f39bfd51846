"""RetryPolicy (backoff, Retry-After) and SendGate (when any sender may send).

Unit tests of ``layer_sdk/_export/_retry.py``, which had none.
The gate's tests use threads where its waiting is the point: each thread's wait
has a deadline, every join is bounded, and a test knows a thread is parked in
the gate by looking at the gate's condition, never by sleeping.
"""

from __future__ import annotations

import math
import threading
import time
import types
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from layer_sdk._export import _retry
from layer_sdk._export._retry import (
    FAILING_SHARE,
    OUTAGE_AFTER,
    OUTAGE_SHARE,
    PAUSE_AFTER,
    PAUSE_SHARE,
    RECENT,
    Admission,
    RetryPolicy,
    SendGate,
    parse_retry_after,
)

from .helpers import wait_until

# -- RetryPolicy.backoff ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries_done", "ceiling"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (6, 10.0), (10**6, 10.0)],
)
def test_backoff_is_half_fixed_half_jitter_doubling_up_to_backoff_max(
    monkeypatch: pytest.MonkeyPatch, retries_done: int, ceiling: float
) -> None:
    """Between half the ceiling and the ceiling, which doubles from
    backoff_factor and stops at backoff_max (a huge retry count does not overflow)."""
    policy = RetryPolicy(backoff_factor=0.5, backoff_max=10.0)
    # The jitter at either end of its range: the bounds, exactly.
    monkeypatch.setattr(_retry, "random", types.SimpleNamespace(uniform=lambda a, b: a))
    assert policy.backoff(retries_done) == ceiling / 2
    monkeypatch.setattr(_retry, "random", types.SimpleNamespace(uniform=lambda a, b: b))
    assert policy.backoff(retries_done) == ceiling


def test_backoff_jitter_spreads_and_is_never_zero() -> None:
    """Real jitter: every value within its bounds, spread out, never 0."""
    policy = RetryPolicy(backoff_factor=0.5, backoff_max=10.0)
    waits = [policy.backoff(3) for _ in range(500)]
    assert all(2.0 <= wait <= 4.0 for wait in waits)
    assert max(waits) - min(waits) > 1.0  # spread over most of [2, 4]
    tiny = RetryPolicy(backoff_factor=1e-9, backoff_max=10.0)
    assert all(tiny.backoff(0) > 0 for _ in range(100))


def test_retry_after_replaces_the_backoff_and_is_clamped() -> None:
    """The server's wish wins over the backoff, longer or shorter, up to
    retry_after_max."""
    policy = RetryPolicy(backoff_factor=0.5, backoff_max=10.0, retry_after_max=60.0)
    assert policy.backoff(0, retry_after=7.5) == 7.5  # longer than the backoff's 0.5
    assert policy.backoff(8, retry_after=0.1) == 0.1  # shorter than the backoff's 5..10
    assert policy.backoff(0, retry_after=0.0) == 0.0
    assert policy.backoff(0, retry_after=3600.0) == 60.0
    assert policy.backoff(0, retry_after=math.inf) == 60.0
    assert RetryPolicy(retry_after_max=5.0).backoff(0, retry_after=30.0) == 5.0


# -- parse_retry_after ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-5", 0.0),  # negative: no wait, not a negative one
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("NaN", None),
        ("Wed, 21 Oct 2015 25:28:00 GMT", None),  # no such hour
        ("Sat, 01 Jan 10000 00:00:00 GMT", None),  # past the datetime range
    ],
)
def test_retry_after_as_seconds_or_a_date_and_garbage_as_none(
    header: str | None, seconds: float | None
) -> None:
    """Delta-seconds, HTTP dates in the past, and what is neither."""
    assert parse_retry_after(header) == seconds


def test_an_infinite_retry_after_is_clamped_by_the_policy() -> None:
    """What parses as huge is cut to retry_after_max, not waited for."""
    policy = RetryPolicy(retry_after_max=60.0)
    for header in ("inf", "1e12"):
        assert policy.backoff(0, parse_retry_after(header)) == 60.0


@pytest.fixture(params=["UTC0", "JST-9", "EST+5"])
def local_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process's local time zone set to the param (POSIX TZ strings need no tzdata)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is Unix-only")
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("layout", ["IMF-fixdate", "RFC 850", "asctime", "-0000"])
def test_an_http_date_is_read_as_utc_whatever_the_local_zone(local_zone: str, layout: str) -> None:
    """RFC 9110 §5.6.7's three date formats, all in UTC (asctime names no
    zone, and must not be read in the machine's), and the "-0000" of Python's own
    ``email.utils.formatdate()`` (UTC too, RFC 5322 §3.3), 30 s from now."""
    when = time.time() + 30
    gmt = time.gmtime(when)
    header = {
        "IMF-fixdate": formatdate(when, usegmt=True),
        "RFC 850": time.strftime("%A, %d-%b-%y %H:%M:%S GMT", gmt),
        "asctime": time.asctime(gmt),
        "-0000": formatdate(when),
    }[layout]
    seconds = parse_retry_after(header)
    assert seconds is not None and 28.0 <= seconds <= 30.0, (header, seconds)


# -- SendGate ----------------------------------------------------------------------------

#: Probes spaced by milliseconds, so that the tests wait for outcomes, not for backoffs.
QUICK = RetryPolicy(backoff_factor=0.01, backoff_max=0.02, retry_after_max=60.0)


def outage(gate: SendGate) -> None:
    for _ in range(OUTAGE_AFTER):
        gate.failed(probe=False, retry_after=None)


def parked(gate: SendGate, count: int) -> bool:
    """Whether ``count`` threads are waiting inside the gate (within a bounded wait).

    A ``threading.Condition`` keeps its waiters in ``_waiters``: the one way to
    know a thread is parked in the wait rather than about to call it.
    """
    return wait_until(lambda: len(gate._changed._waiters) >= count, timeout=5)  # type: ignore[attr-defined]


class Senders:
    """Threads that each ask ``gate.admit`` once, now, with ``deadline`` seconds to wait."""

    def __init__(self, gate: SendGate, count: int, deadline: float) -> None:
        self.admissions: list[Admission] = []
        self._lock = threading.Lock()
        until = time.monotonic() + deadline
        self._threads = [
            threading.Thread(target=self._admit, args=(gate, until), daemon=True)
            for _ in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _admit(self, gate: SendGate, deadline: float) -> None:
        admission = gate.admit(deadline)
        with self._lock:
            self.admissions.append(admission)

    def done(self) -> int:
        with self._lock:
            return len(self.admissions)

    def join(self, timeout: float = 5.0) -> list[Admission]:
        """What each got, once all have returned (within ``timeout``)."""
        until = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()))
        assert not any(thread.is_alive() for thread in self._threads), "still in the gate"
        return sorted(self.admissions, key=lambda admission: admission.value)


def now_plus(seconds: float) -> float:
    return time.monotonic() + seconds


def test_a_healthy_gate_admits_without_waiting() -> None:
    """Healthy, and after fewer than OUTAGE_AFTER failures, a sender is admitted at once
    (a deadline of now would otherwise expire)."""
    gate = SendGate(QUICK)
    assert gate.healthy
    assert gate.admit(time.monotonic()) is Admission.SEND
    for _ in range(OUTAGE_AFTER - 1):
        gate.failed(probe=False, retry_after=None)
        assert gate.healthy
        assert gate.admit(time.monotonic()) is Admission.SEND


def attempts(gate: SendGate, pattern: str) -> None:
    """Tell the gate of attempts in order: "." answered, "x" failed, "r" failed with a
    Retry-After of 30 s."""
    for outcome in pattern:
        if outcome == ".":
            gate.passed()
        else:
            gate.failed(probe=False, retry_after=30.0 if outcome == "r" else None)


@pytest.mark.parametrize(
    "pattern",
    [
        "....x....x....xxx...." * 5,  # one in five, with three in a row now and then
        ".x" * 50,  # half of them
        "xxxx." * 20,  # four in five: delivery slows, it does not stop
        "...." * 5 + "x" * (OUTAGE_AFTER - 1),  # fewer than OUTAGE_AFTER
    ],
    ids=["20%", "50%", "80%", "few"],
)
def test_a_fraction_of_failed_attempts_is_not_an_outage(pattern: str) -> None:
    """Being "unreachable" needs nearly every recent attempt failing, not three in a row: with
    many senders in parallel, runs of failures are common when a fraction fails."""
    gate = SendGate(QUICK)
    for end in range(1, len(pattern) + 1):
        attempts(gate, pattern[end - 1])
        assert gate.healthy, f"an outage after {pattern[:end]!r}"
        assert gate.admit(time.monotonic()) is Admission.SEND


def test_nearly_every_recent_attempt_failing_is_an_outage() -> None:
    """At least OUTAGE_AFTER failures that are OUTAGE_SHARE of the latest RECENT attempts:
    the API counts as unreachable, whatever came before them."""
    needed = math.ceil(OUTAGE_SHARE * RECENT)  # failures among the latest RECENT
    assert OUTAGE_AFTER <= needed < RECENT
    gate = SendGate(QUICK)
    answered = RECENT - needed
    attempts(gate, "." * 100 + "x" * (needed - 2) + "." * answered + "x")  # needed - 1
    assert gate.healthy
    attempts(gate, "x")  # needed failures of the latest RECENT
    assert not gate.healthy
    assert gate.admit(now_plus(5)) is Admission.PROBE  # after the first backoff step

    # From the start: the first OUTAGE_AFTER attempts all failed.
    gate = SendGate(QUICK)
    attempts(gate, "x" * (OUTAGE_AFTER - 1))
    assert gate.healthy
    attempts(gate, "x")
    assert not gate.healthy


def test_a_request_s_backoff_grows_only_while_the_api_is_failing() -> None:
    """``failing``: at least FAILING_SHARE of the recent attempts failed (the API as a
    whole in trouble). Until then a failure is taken as local, even four or nine in ten,
    and the transport keeps the first backoff step."""
    assert 0.9 < FAILING_SHARE < OUTAGE_SHARE
    gate = SendGate(QUICK)
    attempts(gate, "..x" * RECENT)
    assert not gate.failing
    attempts(gate, "xxxx." * RECENT)  # four in five
    assert not gate.failing
    attempts(gate, "xxxxxxxxx." * RECENT)  # nine in ten
    assert not gate.failing
    attempts(gate, ("x" * 19 + ".") * (RECENT // 20))  # then 19 in 20 of the latest RECENT
    assert gate.failing
    assert gate.healthy  # failing is not unreachable


@pytest.mark.parametrize(
    ("pattern", "share"),
    [("xxxx.", 0.8), ("xxxxxxxxx.", 0.9), ("x" * 45 + "." * 5, 0.9)],
    ids=["80%", "90%", "90%-in-runs-of-45"],
)
def test_a_large_fraction_of_failures_after_answers_is_judged_on_many_attempts(
    pattern: str, share: float
) -> None:
    """Once the API answered, four or nine failures in ten, even 45 in a row, are judged
    against a full RECENT of attempts: not an outage, not failing (no growing backoff),
    however long it goes on."""
    assert pattern.count("x") == share * len(pattern)
    gate = SendGate(QUICK)
    attempts(gate, ".")
    for _ in range(4 * RECENT // len(pattern)):
        for outcome in pattern:
            attempts(gate, outcome)
            assert gate.healthy and not gate.failing, f"judged unreachable at {share:.0%}"


def test_before_any_answer_the_first_attempts_are_judged_as_they_are() -> None:
    """A client started against a dead API: nothing answered yet, so OUTAGE_AFTER
    failures make an outage; the same failures after an answer are a fraction of a
    full RECENT and make none."""
    gate = SendGate(QUICK)
    attempts(gate, "x" * OUTAGE_AFTER)
    assert not gate.healthy
    gate = SendGate(QUICK)
    attempts(gate, "." + "x" * OUTAGE_AFTER)
    assert gate.healthy


def test_an_outage_lets_one_probe_through_at_a_time() -> None:
    """Once the API counts as unreachable, of senders asking together
    exactly one probes; the others wait, here until their deadline."""
    gate = SendGate(QUICK)
    outage(gate)
    assert not gate.healthy
    senders = Senders(gate, 4, deadline=0.5)
    assert senders.join() == [Admission.EXPIRED] * 3 + [Admission.PROBE]
    # The probe is still out (neither passed nor failed): no one else gets through.
    assert gate.admit(now_plus(0.1)) is Admission.EXPIRED
    # It failed: one new probe, after the backoff, and again only one.
    gate.failed(probe=True, retry_after=None)
    senders = Senders(gate, 3, deadline=0.5)
    assert senders.join() == [Admission.EXPIRED] * 2 + [Admission.PROBE]


def test_probes_are_spaced_by_the_backoff() -> None:
    """An unreachable API sees a trickle: the first probe waits the first
    backoff, the next one the backoff after the probes that failed so far."""
    gate = SendGate(RetryPolicy(backoff_factor=0.2, backoff_max=10.0))
    began = time.monotonic()
    outage(gate)
    assert gate.admit(began + 5) is Admission.PROBE
    assert time.monotonic() - began >= 0.1  # backoff(0): 0.1 to 0.2 s
    failed_at = time.monotonic()
    gate.failed(probe=True, retry_after=None)
    assert gate.admit(failed_at + 5) is Admission.PROBE
    assert time.monotonic() - failed_at >= 0.2  # backoff(1): 0.2 to 0.4 s


def test_the_others_wait_for_the_probe_and_its_success_releases_them_all() -> None:
    """While a probe is out the others wait; a failed probe lets one more
    probe through; a success (passed) releases every waiter at once as SEND."""
    gate = SendGate(QUICK)
    outage(gate)
    assert gate.admit(now_plus(5)) is Admission.PROBE
    senders = Senders(gate, 5, deadline=30)
    assert parked(gate, 5)
    gate.failed(probe=True, retry_after=None)
    assert wait_until(lambda: senders.done() == 1, timeout=5)
    assert senders.admissions == [Admission.PROBE]
    assert parked(gate, 4)
    gate.passed()  # the new probe got an answer: the API is up
    assert senders.join() == [Admission.PROBE] + [Admission.SEND] * 4
    assert gate.healthy
    assert gate.admit(time.monotonic()) is Admission.SEND


def asked_to_wait(gate: SendGate, seconds: float) -> None:
    """As many attempts answered with ``Retry-After: seconds`` as pause every sender."""
    for _ in range(PAUSE_AFTER):
        gate.failed(probe=False, retry_after=seconds)


def test_a_retry_after_from_the_api_as_a_whole_pauses_every_sender_for_that_long() -> None:
    """Most recent attempts answered 429/503 with Retry-After (at least PAUSE_AFTER): every
    sender waits, even after another request succeeded meanwhile; a deadline within the
    pause expires."""
    gate = SendGate(QUICK)
    paused_at = time.monotonic()
    asked_to_wait(gate, 1.0)
    gate.passed()  # a request already in flight succeeded: the pause holds all the same
    assert not gate.healthy
    assert gate.admit(now_plus(0.05)) is Admission.EXPIRED
    senders = Senders(gate, 3, deadline=5)
    assert senders.join() == [Admission.SEND] * 3
    assert time.monotonic() - paused_at >= 1.0
    assert gate.healthy


@pytest.mark.parametrize(
    "pattern",
    [
        "r",
        "rr",
        "....r" * 8,
        "..r.r..r.r" * 4,
        ".xr" * 7,
        ".r" * RECENT,
        "." + "rrrr." * RECENT,
        "." + "r" * PAUSE_AFTER * 4,
    ],
    ids=[
        "one",
        "two",
        "one-in-five",
        "two-in-five",
        "a-third-of-the-failures",
        "half",
        "four-in-five",
        "the-first-few-after-an-answer",
    ],
)
def test_a_retry_after_that_most_answers_do_not_carry_pauses_no_one(pattern: str) -> None:
    """A Retry-After from one bad backend delays the request it answered (the transport
    does that), not every sender: the gate pauses only when such answers are at least
    PAUSE_AFTER and PAUSE_SHARE of the recent attempts (of a full RECENT once the API
    answered): not half of them, not four in five, not the first few after an answer."""
    gate = SendGate(QUICK)
    attempts(gate, pattern)
    assert gate.healthy
    assert gate.admit(time.monotonic()) is Admission.SEND


def test_a_retry_after_pause_is_clamped_to_retry_after_max() -> None:
    """An hour's Retry-After pauses only retry_after_max."""
    gate = SendGate(RetryPolicy(retry_after_max=0.2))
    asked_to_wait(gate, 3600.0)
    start = time.monotonic()
    assert gate.admit(start + 5) is Admission.SEND
    assert 0.15 <= time.monotonic() - start < 4


def test_a_sleep_is_cut_short_by_close() -> None:
    """A synchronous call's backoff sleeps in the gate: close() (shutdown) ends it."""
    gate = SendGate(QUICK)
    assert gate.sleep(0.01) is True
    slept: list[bool] = []
    sleeper = threading.Thread(target=lambda: slept.append(gate.sleep(60)), daemon=True)
    sleeper.start()
    assert parked(gate, 1)
    gate.close()
    sleeper.join(5)
    assert slept == [False]
    assert gate.sleep(60) is False  # after close, at once


def test_close_refuses_waiters_and_newcomers() -> None:
    """Shutdown wakes every waiter at once with CLOSED, and refuses the next."""
    gate = SendGate(QUICK)
    outage(gate)
    assert gate.admit(now_plus(5)) is Admission.PROBE
    senders = Senders(gate, 3, deadline=30)
    assert parked(gate, 3)
    gate.close()
    assert senders.join() == [Admission.CLOSED] * 3
    assert gate.admit(now_plus(5)) is Admission.CLOSED
    healthy = SendGate(QUICK)
    healthy.close()
    assert healthy.admit(now_plus(5)) is Admission.CLOSED


def test_abandoning_a_probe_hands_the_probe_to_the_next_sender() -> None:
    """A probe that ends without an answer either way releases its token
    (else every sender would wait for it until its deadline)."""
    gate = SendGate(QUICK)
    outage(gate)
    assert gate.admit(now_plus(5)) is Admission.PROBE
    gate.abandon(probe=False)  # not the probe: changes nothing
    assert gate.admit(time.monotonic()) is Admission.EXPIRED
    senders = Senders(gate, 1, deadline=30)
    assert parked(gate, 1)
    gate.abandon(probe=True)
    assert senders.join() == [Admission.PROBE]


def test_nearly_every_recent_answer_asking_to_wait_pauses_every_sender() -> None:
    """After answers, a Retry-After pauses every sender once PAUSE_SHARE of a full RECENT
    of attempts carried one: nine in ten of them, not fewer."""
    needed = math.ceil(PAUSE_SHARE * RECENT)
    gate = SendGate(QUICK)
    attempts(gate, "." * RECENT + "r" * (needed - 1))
    assert gate.healthy
    attempts(gate, "r")
    assert not gate.healthy
