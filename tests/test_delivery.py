"""Delivery under faults: outages, backpressure, bad events, colliding IDs, forks.

A test that needs the server to
misbehave for a while uses the collector's ``fail_for`` window; waits are on
conditions with deadlines, and the counts are exact.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, PROMPT, ROOT, MakeClient, run_python, wait_until


def sender_threads() -> int:
    return sum(thread.name.startswith("layer-sdk-sender") for thread in threading.enumerate())


def arrivals_between(collector: LocalCollector, start: float, end: float) -> int:
    return sum(start <= request.received_at < end for request in collector.requests)


# -- §1 outages -------------------------------------------------------------------


def test_an_outage_longer_than_three_retries_loses_nothing(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Buffered requests are retried until a time budget runs out, not 3 times."""
    client = make_client()
    collector.stop()
    client.create_session()
    # Three retries used to be the end of it (then: retries_exhausted). Wait for a fourth.
    assert wait_until(lambda: client.stats().retried >= 4, timeout=20)
    assert client.stats().failed == 0
    collector.start()
    assert client.flush(30) is True
    assert len(collector.sessions) == 1
    stats = client.stats()
    assert (stats.sent, stats.failed, stats.queued) == (1, 0, 0)


def test_buffered_retries_end_when_max_retry_time_runs_out(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """The time budget ends the retries, then the events count as exhausted."""
    client = make_client(max_retry_time=1.0)
    collector.fail_for(60, 503)
    client.create_session()
    assert client.flush(10) is False
    stats = client.stats()
    assert stats.failed_by_reason == {"retries_exhausted": 1}
    first, last = collector.requests[0].received_at, collector.requests[-1].received_at
    assert last - first <= 1.0 + 0.2  # no attempt starts after the budget
    assert len(collector.requests) >= 2


def test_during_an_outage_one_request_probes_and_the_others_wait(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """While the API fails, a trickle of probes reaches it, then everything."""
    client = make_client(flush_interval=0.01)
    outage = 3.0
    collector.fail_for(outage, 503)
    started = time.monotonic()
    session_ids = [client.create_session() for _ in range(100)]
    for session_id in session_ids:
        client.append_action(session_id, kind=PROMPT)
        client.append_action(session_id, kind=PROMPT)
    assert client.flush(30) is True
    during = arrivals_between(collector, started, started + outage)
    # 100 merged creates, each retried on its own, would make hundreds of requests here.
    assert during <= 40, f"{during} requests reached the API during the outage"
    assert len(collector.sessions) == 100
    assert len(collector.actions()) == 200
    stats = client.stats()
    assert (stats.sent, stats.failed, stats.queued) == (300, 0, 0)


def test_shutdown_during_an_outage_keeps_its_bound_and_counts_what_is_left(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Shutdown(timeout) cuts the waits for a probe short."""
    client = make_client()
    collector.fail_for(60, 503)
    for _ in range(20):
        client.create_session()
    assert wait_until(lambda: client.stats().retried >= 3)
    started = time.monotonic()
    assert client.shutdown(timeout=1.0) is False
    assert time.monotonic() - started < 1.5
    stats = client.stats()
    assert stats.failed_by_reason == {"shutdown": 20}
    assert (stats.sent, stats.queued) == (0, 0)


def test_extra_sender_threads_exit_when_the_load_is_light(
    make_client: MakeClient, collector: LocalCollector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a burst against a slow server, the extra senders go away
    even while a trickle of events keeps a few of them busy."""
    monkeypatch.setattr("layer_sdk._export._worker.EXTRA_IDLE_TIMEOUT", 0.5)
    client = make_client(flush_interval=0.01)
    before = sender_threads()
    collector.delay = 0.2
    for _ in range(300):
        client.create_session()
    assert wait_until(lambda: sender_threads() - before >= 16)
    assert client.flush(30) is True
    collector.delay = 0.0

    stop = threading.Event()

    def trickle() -> None:  # one event every 10 ms: work for one sender, not sixteen
        while not stop.wait(0.01):
            client.create_session()

    producer = threading.Thread(target=trickle)
    producer.start()
    try:
        assert wait_until(lambda: sender_threads() - before <= 3, timeout=10), sender_threads()
    finally:
        stop.set()
        producer.join()
    assert client.flush(10) is True
    assert client.stats().failed == 0


# -- §2 backpressure --------------------------------------------------------------


def test_retry_after_is_honoured_on_the_default_transport(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A 503 with Retry-After: 1 is retried after one second, not the backoff."""
    client = make_client()
    collector.fail_next(1, 503, retry_after=1)
    client.create_session()
    assert client.flush(10) is True
    first, second = (request.received_at for request in collector.requests)
    assert second - first >= 1.0  # the backoff alone would retry after 0.25-0.5 s


def test_retry_after_is_honoured_on_the_requests_transport(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through requests (a proxy in the environment; a collector
    stands in for the proxy, as it accepts the absolute form of a request line, told to
    answer the API's name)."""
    with LocalCollector(allowed_hosts=["layer-api.test"]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "")
        client = make_client(base_url="http://layer-api.test")
        assert type(client._exporter.transport._backend).__name__ == "RequestsBackend"  # type: ignore[union-attr]
        proxy.fail_next(1, 503, retry_after=1)
        client.create_session()
        assert client.flush(10) is True
        first, second = (request.received_at for request in proxy.requests)
        assert second - first >= 1.0
        assert len(proxy.sessions) == 1


def test_when_most_answers_carry_retry_after_every_sender_pauses(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """The API as a whole answers 429 with Retry-After, while several senders are busy
    and new sessions keep coming: once such answers are most of the recent ones, every
    sender pauses; after the requests already on their way, nothing reaches the API
    until the pause is over; then everything is delivered."""
    client = make_client(flush_interval=0.01)
    collector.delay = 0.05  # several senders busy at once
    pause = 3.0  # longer than the first probes of an outage would wait: those would show
    stop = threading.Event()
    created = 0

    def produce() -> None:
        nonlocal created
        while not stop.wait(0.002):  # a steady producer, not synchronization
            client.create_session()
            created += 1

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert collector.wait_for(lambda c: len(c.requests) >= 20)
        collector.fail_for(pause, 429, retry_after=pause)
        assert collector.wait_for(lambda c: any(r.status == 429 for r in c.requests))
        window_ends = next(r.received_at for r in collector.requests if r.status == 429) + pause
        assert wait_until(lambda: any(r.received_at >= window_ends for r in collector.requests))
    finally:
        stop.set()
        producer.join()
    refused = [r.received_at for r in collector.requests if r.status == 429]
    # Once the refusals were most of the recent answers (about half of RECENT after as
    # many successes, with the requests on their way meanwhile), everyone paused.
    paused_at = max(refused) + collector.delay  # the last refusal was answered
    assert paused_at < refused[0] + pause / 2, "the senders went on while the API asked to wait"
    during = arrivals_between(collector, paused_at + 0.1, window_ends)
    assert during == 0, f"{during} requests were sent while the API asked to wait"
    assert client.flush(30) is True
    assert len(collector.sessions) == created
    assert client.stats().failed == 0


def test_one_backend_s_retry_after_delays_its_requests_and_no_others(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """One backend in five answers 503 with Retry-After: 30 (draining, or a limit of its
    own): the requests it refused wait their 30 s in the queue, and everything else is
    delivered meanwhile; no sender pauses."""
    from .front_server import Act, Front, raw_answer

    refusal = raw_answer(503, b'{"error":"draining"}', "Retry-After: 30")
    refused: list[bytes] = []

    def act(n: int, head: bytes, body: bytes) -> Act:
        if n % 5 == 4:
            refused.append(body)
            return Act(answer=refusal)
        return Act()

    front = Front(collector, act)
    try:
        client = make_client(base_url=front.url, flush_interval=0.01)
        for _ in range(200):
            client.create_session()
        # Well within the 30 s: the others are not held back by the refusals (and the
        # client has read the answers to those the collector stored).
        assert wait_until(
            lambda: (
                len(collector.sessions) + len(refused) == 200
                and client.stats().sent == len(collector.sessions)
            ),
            timeout=15,
        )
        assert len(refused) >= 30
        assert client._exporter.transport.gate.healthy  # type: ignore[union-attr]
        assert client.stats().queued == len(refused)  # waiting for their retry
        assert front.requests_read == 200  # none of them sent again yet
    finally:
        front.close()


def test_a_failed_request_waits_for_its_retry_in_the_queue_not_on_its_sender(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """With one sender: session A's create is answered 503; while it waits its backoff,
    the sender sends session B's, then A's again."""
    client = make_client(max_concurrent_requests=1, flush_interval=30)
    first, second = client.create_session(), client.create_session()
    collector.fail_next(1, 503, matching=first.encode())
    assert client.flush(10) is True
    sent = [(r.json["session_id"], r.status) for r in collector.requests]
    assert sent == [(first, 503), (second, 200), (first, 200)]


def test_a_fraction_of_failed_requests_is_not_an_outage(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """One request in five fails (503), three in a row at times, across parallel
    senders: delivery slows by that fraction, the API never counts as unreachable (no
    probing one request at a time), and everything arrives once."""
    from .front_server import Act, Front, raw_answer

    failure = raw_answer(503, b'{"error":"bad backend"}')
    front = Front(collector, lambda n, head, body: Act(failure) if n % 15 < 3 else Act())
    client = make_client(base_url=front.url, flush_interval=0.01)
    gate = client._exporter.transport.gate  # type: ignore[union-attr]
    unhealthy = threading.Event()
    done = threading.Event()

    def watch() -> None:  # samples the gate while the events are delivered
        while not done.is_set():
            if not gate.healthy:
                unhealthy.set()
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        for _ in range(300):
            client.create_session()
        assert client.flush(30) is True
    finally:
        done.set()
        watcher.join(5)
        front.close()
    assert len(collector.sessions) == 300
    assert collector.duplicates == 0
    assert not unhealthy.is_set(), "the API was taken as unreachable"
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


@pytest.mark.parametrize("failing", [8, 9], ids=["80%", "90%"])
def test_most_requests_failing_while_others_are_answered_slows_delivery_and_is_no_outage(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    failing: int,
) -> None:
    """After a first answer, eight or nine requests in ten fail (503) across parallel
    senders: a fair share is still answered, so delivery slows by that fraction and never
    halts (each failure waits the first backoff step, no probing one request at a time),
    everything arrives once, and the log does not flap between failures and
    recoveries."""
    from .front_server import Act, Front, raw_answer

    failure = raw_answer(503, b'{"error":"bad backend"}')
    answered = 10 - failing  # the first of every ten requests, then failing of them fail
    front = Front(collector, lambda n, head, body: Act(failure) if n % 10 >= answered else Act())
    client = make_client(base_url=front.url, flush_interval=0.01)
    gate = client._exporter.transport.gate  # type: ignore[union-attr]
    unhealthy = threading.Event()
    done = threading.Event()

    def watch() -> None:  # samples the gate while the events are delivered
        while not done.is_set():
            if not gate.healthy:
                unhealthy.set()
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        client.create_session()
        assert client.flush(10) is True  # the API answered
        watcher.start()
        for _ in range(300):
            client.create_session()
        assert client.flush(60) is True
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join(5)
        front.close()
    assert len(collector.sessions) == 301
    assert collector.duplicates == 0
    assert not unhealthy.is_set(), "the API was taken as unreachable"
    assert gate.recoveries == 0
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [line for line in lines if "answered 503" in line], lines
    # No flapping: a line that the API takes events again after each failure said. One
    # may close the run: the last few events, failing round after round with nothing
    # else to deliver, are a second or more without a delivery, as a short outage is.
    assert len([line for line in lines if "takes events again" in line]) <= 1, lines


def test_a_create_retried_after_its_answer_was_lost_and_answered_409_counts_as_created(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """The API stored the create but its answer was lost; the retry (same request ID) is
    answered 409 by an API that does not de-duplicate. The session exists: the create
    counts as sent, and its actions are sent after it."""
    from .front_server import Act, Front

    def act(n: int, head: bytes, body: bytes) -> Act:
        return Act(answer=b"", close=True) if n == 0 else Act()  # stored; the answer lost

    front = Front(collector, act, strip_request_ids=True)
    try:
        client = make_client(base_url=front.url, flush_interval=30)
        session_id = client.create_session()
        assert client.flush(10) is True
        for n in range(3):
            client.append_action(session_id, kind=PROMPT, data={"n": n})
        assert client.flush(10) is True
    finally:
        front.close()
    assert [r.status for r in collector.requests][:2] == [200, 409]
    assert [a["data"]["n"] for a in collector.actions(session_id)] == [0, 1, 2]
    stats = client.stats()
    assert (stats.sent, stats.failed) == (4, 0)


FLEET_SCRIPT = """
import json, sys, time
from layer_sdk import Client
client = Client()
client.init(flush_interval=0.01)
created = 0
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    client.create_session(attributes={"n": created})
    created += 1
    time.sleep(0.01)  # pacing: a steady producer, not synchronization
delivered = client.flush(30)
stats = client.stats()
print(json.dumps({"created": created, "delivered": delivered, "sent": stats.sent}))
"""


def test_a_fleet_of_processes_backs_off_together_on_retry_after(
    collector: LocalCollector,
) -> None:
    """Four processes keep producing through a 429 + Retry-After window
    longer than a few backoffs: few requests reach the API in the window, and
    everything is delivered after it."""
    window = 4.0
    collector.fail_for(window, 429, retry_after=window)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAYER_BASE_URL": collector.url,
        "LAYER_APPLICATION_ID": APP_ID,
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FLEET_SCRIPT, str(window + 0.5)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    assert all(report["delivered"] for report in reports), reports
    created = sum(report["created"] for report in reports)
    assert len(collector.sessions) == created
    refused = [r for r in collector.requests if r.status == 429]
    # Each process learns of the pause from its first answer(s): a few each, not one per
    # session (about 4 x 200 were created during the window).
    assert len(refused) <= 4 * 8, f"{len(refused)} requests were refused in the window"


# -- §3 one bad event never takes healthy ones with it ----------------------------


def test_a_refused_merged_create_is_resent_event_by_event(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A create carrying one action the server refuses (413 here) is split:
    the session and the healthy actions are delivered, only the refused one fails."""
    collector.max_body_bytes = 100_000
    client = make_client(flush_interval=30)
    session_id = client.create_session()
    client.append_action(session_id, kind=PROMPT, data={"n": 0})
    client.append_action(session_id, kind=PROMPT, data={"n": 1, "text": "x" * 150_000})
    client.append_action(session_id, kind=PROMPT, data={"n": 2})
    assert client.flush(10) is False
    assert [a["data"]["n"] for a in collector.actions(session_id)] == [0, 2]
    stats = client.stats()
    assert stats.failed_by_reason == {"rejected": 1}
    assert (stats.sent, stats.queued) == (3, 0)
    statuses = [(r.path.rsplit("/", 1)[-1], r.status) for r in collector.requests]
    assert statuses == [
        ("sessions", 413),  # the merged create
        ("sessions", 200),  # the create alone
        ("actions", 202),
        ("actions", 413),  # only the refused action fails
        ("actions", 202),
    ]


@pytest.mark.parametrize("status", [400, 409, 413, 422])
def test_each_refusal_of_a_merged_create_splits_it(
    make_client: MakeClient, collector: LocalCollector, status: int
) -> None:
    """400, 409, 413 and 422 on a merged create resend its events one by one."""
    client = make_client(flush_interval=30)
    collector.fail_next(1, status)
    session_id = client.create_session()
    client.append_action(session_id, kind=PROMPT)
    client.append_action(session_id, kind=PROMPT)
    assert client.flush(10) is True
    assert len(collector.actions(session_id)) == 2
    assert [r.status for r in collector.requests] == [status, 200, 202, 202]
    stats = client.stats()
    assert (stats.sent, stats.failed, stats.retried) == (3, 0, 3)


def test_a_merged_create_stays_under_max_request_bytes(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Behind a 1 MiB proxy limit, a session with four 300 KB actions
    travels as a create under 1 MiB followed by the rest; nothing is refused."""
    collector.max_body_bytes = 1024 * 1024
    client = make_client(flush_interval=30)
    session_id = client.create_session()
    for n in range(4):
        client.append_action(session_id, kind=PROMPT, data={"n": n, "text": "x" * 300_000})
    assert client.flush(10) is True
    assert all(len(r.body) <= 1024 * 1024 for r in collector.requests)
    assert [r.status for r in collector.requests] == [200, 202]
    assert [a["data"]["n"] for a in collector.actions(session_id)] == [0, 1, 2, 3]


# -- §4 session IDs never collide -------------------------------------------------

MINT_SCRIPT = """
import json, random
from layer_sdk import Client
random.seed(42)
client = Client()
client.init(base_url="http://127.0.0.1:9", application_id="app", shutdown_timeout=0)
print(json.dumps([client.create_session() for _ in range(50)]))
"""


def test_two_processes_that_seed_random_mint_disjoint_session_ids() -> None:
    """IDs come from the OS, not from the host's seeded global random."""
    first, second = (run_python(MINT_SCRIPT) for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    ids_one, ids_two = json.loads(first.stdout), json.loads(second.stdout)
    assert len(set(ids_one)) == 50
    assert set(ids_one).isdisjoint(ids_two)


def test_a_forked_child_never_mints_what_its_parent_mints() -> None:
    """Random bytes are drawn from the OS in bulk; a forked child drops the
    parent's unused ones, so that the two never hand out the same bytes (IDs)."""
    from layer_sdk._entropy import random_16

    random_16()  # the pool is full now: a child that kept it would mint the same IDs
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, b"".join(random_16() for _ in range(8)))
        os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 4096):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = b"".join(random_16() for _ in range(8))
    assert len(child) == 8 * 16
    assert {child[i : i + 16] for i in range(0, 128, 16)}.isdisjoint(
        parent[i : i + 16] for i in range(0, 128, 16)
    )


RAW_FORK_SCRIPT = """
import ctypes, json, os, sys
from layer_sdk import _entropy
from layer_sdk._schemas import SessionIdFactory
from layer_sdk._entropy import random_16
if sys.argv[1] == "pid":  # as on a system whose kernel wipes no page at fork
    _entropy.drawn_here = _entropy._PidMark()
assert type(_entropy.drawn_here).__name__ == {"page": "mmap", "pid": "_PidMark"}[sys.argv[1]]
mint = SessionIdFactory("app")
mint()  # the pool of random bytes is full now
mint.top_up()  # and session IDs are minted ahead, as the senders keep them
# fork() from C, as an extension or an embedding server calls it: no at-fork hook
# of Python runs. PyDLL keeps the GIL across the call, so the child resumes with it.
read, write = os.pipe()
pid = ctypes.PyDLL(None).fork()
if pid == 0:
    mine = [mint() for _ in range(8)] + [random_16().hex() for _ in range(8)]
    os.write(write, json.dumps(mine).encode())
    os._exit(0)
os.close(write)
child = b""
while chunk := os.read(read, 65536):
    child += chunk
os.waitpid(pid, 0)
parent = [mint() for _ in range(8)] + [random_16().hex() for _ in range(8)]
print(json.dumps({"child": json.loads(child), "parent": parent}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
@pytest.mark.parametrize("check", ["page", "pid"])
def test_a_child_forked_without_python_hooks_never_mints_what_its_parent_mints(
    check: str,
) -> None:
    """Session IDs and request IDs alike: the pooled random bytes (and the session IDs
    minted ahead from them) are drawn anew in a process that did not draw them, told by
    a page the kernel wipes at fork, or by the pid."""
    if check == "page" and not sys.platform.startswith("linux"):
        pytest.skip("the page wiped at fork is Linux's")
    result = run_python(RAW_FORK_SCRIPT, args=[check])
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert len(found["child"]) == len(found["parent"]) == 16
    assert set(found["child"]).isdisjoint(found["parent"])


RAW_FORK_DELIVERY_SCRIPT = """
import json, os, signal, sys, threading, weakref
from layer_sdk import Client, SessionActionKind
from layer_sdk._export import _exporter
client = Client()
# Events wait in the inbox for a minute: the parent's are there when it forks.
client.init(base_url=sys.argv[1], application_id=sys.argv[2], flush_interval=60)
parent_session = client.create_session()
assert client.flush(15)  # the session is known to the API; its actions will wait
for n in range(3):
    client.append_action(parent_session, kind=SessionActionKind.COMPLETION_PROMPT,
                         data={"who": "parent", "n": n})
# A thread of the parent holds the queue's lock when the process forks: a child that
# took it would wait forever.
held, release = threading.Event(), threading.Event()
def hold():
    with client._exporter.queue._lock:
        held.set()
        release.wait()
holder = threading.Thread(target=hold)
holder.start()
held.wait()
# A fork that runs none of the SDK's hooks, as fork() called from C does: the hook finds
# no exporter and marks a stand-in, so the page the kernel wipes in the child is all the
# child has to go by. (os.fork itself, unlike a C extension's fork, repairs CPython's own
# state in the child, which such a fork leaves to luck.)
live, mark = _exporter._live, _exporter._this_process
_exporter._live, _exporter._this_process = weakref.WeakSet(), [1]
read, write = os.pipe()
pid = os.fork()
_exporter._live, _exporter._this_process = live, mark
if pid == 0:
    signal.alarm(20)  # a child stuck on the lock dies instead of hanging the test
    child_session = client.create_session()
    for n in range(3):
        client.append_action(parent_session, kind=SessionActionKind.COMPLETION_PROMPT,
                             data={"who": "child", "n": n})
        client.append_action(child_session, kind=SessionActionKind.COMPLETION_PROMPT,
                             data={"who": "child", "n": n})
    flushed = client.flush(15)
    stats = client.stats()
    os.write(write, json.dumps({"session": child_session, "flushed": flushed,
                                "enqueued": stats.enqueued, "sent": stats.sent}).encode())
    os._exit(0)
os.close(write)
release.set()
holder.join()
child = b""
while chunk := os.read(read, 65536):
    child += chunk
os.waitpid(pid, 0)
print(json.dumps({"parent_session": parent_session, "parent_flushed": client.flush(15),
                  "child": json.loads(child or b"null")}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_child_forked_without_python_hooks_delivers_its_first_events(
    collector: LocalCollector,
) -> None:
    """A fork that runs no hook of the SDK (as one from C), while the parent's events wait
    in its inbox and a parent thread holds the queue's lock: the child's first call, told
    by a page the kernel wiped, rebuilds its pipeline before taking a lock, so it never
    hangs, and every event of the child is delivered, its first included, exactly once;
    the parent's are delivered once, by the parent."""
    result = run_python(RAW_FORK_DELIVERY_SCRIPT, args=[collector.url, APP_ID], timeout=60)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    child = found["child"]
    assert child is not None, "the child died before it reported (stuck on a lock)"
    assert child["flushed"] and found["parent_flushed"]
    assert (child["enqueued"], child["sent"]) == (7, 7)
    assert collector.session(child["session"]) is not None
    assert [a["data"]["n"] for a in collector.actions(child["session"])] == [0, 1, 2]
    by_who = [
        (a["data"]["who"], a["data"]["n"]) for a in collector.actions(found["parent_session"])
    ]
    assert sorted(by_who) == [(who, n) for who in ("child", "parent") for n in range(3)]
    assert collector.duplicates == 0


# -- §5 multiprocessing children deliver their events -----------------------------

MULTIPROCESSING_SCRIPT = """
import json, sys
import multiprocessing as mp
from tests import mp_tasks

def main():
    method, shape = sys.argv[1], sys.argv[2]
    context = mp.get_context(method)
    if method == "fork":
        mp_tasks.ensure_initialized()  # in the parent: the children inherit the client
    if shape == "pool":
        pool = context.Pool(2)
        pids = pool.map(mp_tasks.record, range(10))
        pool.close()
        pool.join()
    else:
        processes = [context.Process(target=mp_tasks.record, args=(n,)) for n in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        pids = [process.pid for process in processes]
    print(json.dumps(sorted(set(pids))))

if __name__ == "__main__":
    main()
"""


@pytest.fixture
def script_file(tmp_path: Any) -> Iterator[str]:
    path = tmp_path / "multiprocessing_app.py"  # spawn and forkserver re-import the main module
    path.write_text(MULTIPROCESSING_SCRIPT)
    yield str(path)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
@pytest.mark.parametrize("shape", ["pool", "process"])
def test_multiprocessing_children_deliver_their_events_at_exit(
    collector: LocalCollector, script_file: str, method: str, shape: str
) -> None:
    """A child ends with os._exit, past atexit; its events are drained anyway."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAYER_BASE_URL": collector.url,
        "LAYER_APPLICATION_ID": APP_ID,
    }
    result = subprocess.run(
        [sys.executable, script_file, method, shape],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tasks = 10 if shape == "pool" else 2
    assert collector.wait_for_events(2 * tasks, timeout=5), collector.event_count
    assert sorted(int(s["attributes"]["n"]) for s in collector.sessions) == list(range(tasks))
    assert len(collector.actions()) == tasks
    assert {int(s["attributes"]["pid"]) for s in collector.sessions} <= set(
        json.loads(result.stdout)
    )
