"""The exporter's lifecycle: exit, fork, a dead worker, recursion, gevent, shutdown, flush.

These pin the invariants of docs/architecture.md (Invariants: Threads, Exit, Fork)
that only show across a process's life rather than within one call:

- interpreter exit drains the queue (also where Python 3.12+ refuses to start
  threads at exit), and a hung or dead server cannot hold the exit longer
  than ``shutdown_timeout`` (+ 0.5 s);
- a forked child starts empty, never re-sends the parent's events and never
  deadlocks on a lock that another thread of the parent held at fork time;
- a sender thread that dies is restarted, loudly;
- the SDK's own logging never feeds events back into the SDK;
- it works under gevent's ``monkey.patch_all()``;
- ``shutdown`` is idempotent, and ``flush``/``shutdown`` keep their deadlines.

Every count is exact. Nothing sleeps and hopes: waits are on conditions with a
deadline. The only timed assertions are the exit bound, which is the contract,
and generous "returned within its timeout" checks on flush and shutdown.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from layer_sdk import Client, LayerRequestPreparationError
from layer_sdk.collector import LocalCollector

from .helpers import (
    APP_ID,
    PROMPT,
    MakeClient,
    ReportingHandler,
    held_by_another_thread,
    in_multiprocessing_child,
    run_python,
    wait_until,
)

#: How long a forked child may take to do its work and exit, seconds.
CHILD_DEADLINE = 10.0
#: Bound on the interpreter's exit beyond ``shutdown_timeout`` (docs/architecture.md, Exit).
EXIT_SLACK = 0.5

#: Stats fields reported by children and subprocesses.
STAT_FIELDS = ("enqueued", "sent", "dropped", "failed", "retried", "queued")


# -- helpers ----------------------------------------------------------------------


def stats_dict(client: Client) -> dict[str, Any]:
    stats = client.stats()
    report: dict[str, Any] = {name: getattr(stats, name) for name in STAT_FIELDS}
    report["dropped_by_reason"] = dict(stats.dropped_by_reason)
    report["failed_by_reason"] = dict(stats.failed_by_reason)
    return report


def wait_for_child(pid: int, timeout: float) -> int | None:
    """The exit code of forked child ``pid``; None (and the child killed) past ``timeout``."""
    statuses: list[int] = []

    def exited() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            statuses.append(status)
        return bool(done)

    if wait_until(exited, timeout):
        return os.waitstatus_to_exitcode(statuses[0])
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def tagged(output: str, tag: str) -> Any:
    """The JSON printed by a subprocess on the line ``<tag> <json>``."""
    for line in output.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise AssertionError(f"no {tag!r} line in the subprocess output:\n{output}")


def assert_each_event_once(collector: LocalCollector) -> None:
    """No request was refused and no session was created twice (a re-sent create shows as 409)."""
    requests = collector.requests
    assert [r.status for r in requests if not 200 <= r.status < 300] == []
    creates = Counter(r.json["session_id"] for r in requests if r.path == "/v1/sessions")
    assert [sid for sid, count in creates.items() if count != 1] == []
    assert collector.duplicates == 0


def layer_env(collector: LocalCollector) -> dict[str, str]:
    return {"LAYER_BASE_URL": collector.url, "LAYER_APPLICATION_ID": APP_ID}


#: Subprocess prelude: reports the stats of ``layer`` once its exit drain is over.
#: atexit runs handlers last-registered-first, and this one is registered before
#: layer_sdk is imported (which registers the drain), so it runs after the drain.
REPORT_AFTER_DRAIN = f"""
import atexit, json

def _report_after_drain():
    from layer_sdk import layer
    s = layer.stats()
    fields = {{name: getattr(s, name) for name in {STAT_FIELDS!r}}}
    fields["failed_by_reason"] = dict(s.failed_by_reason)
    print("AFTER-DRAIN " + json.dumps(fields), flush=True)

atexit.register(_report_after_drain)
"""


# -- interpreter exit ---------------------------------------------------------------

SHORT_SCRIPT = REPORT_AFTER_DRAIN + textwrap.dedent(
    """
    from layer_sdk import layer

    layer.init()  # LAYER_BASE_URL and LAYER_APPLICATION_ID; default flush_interval
    for n in range(200):
        sid = layer.create_session(attributes={"n": n})
        for step in range(3):
            layer.append_action(sid, kind="completion_prompt", data={"n": n, "step": step})
    s = layer.stats()
    print("AT-END " + json.dumps({"enqueued": s.enqueued, "queued": s.queued}), flush=True)
    # no flush(), no shutdown(): the exit drain must deliver everything
    """
)


def test_a_short_script_that_never_flushes_delivers_every_event_at_exit(
    collector: LocalCollector,
) -> None:
    """The atexit drain delivers exactly the 200 sessions and 600 actions of a script that ends."""
    result = run_python(SHORT_SCRIPT, env=layer_env(collector), timeout=60)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    at_end = tagged(result.stdout, "AT-END")
    assert at_end["enqueued"] == 800
    after = tagged(result.stdout, "AFTER-DRAIN")
    counts = {name: after[name] for name in ("enqueued", "sent", "queued", "failed", "dropped")}
    assert counts == {"enqueued": 800, "sent": 800, "queued": 0, "failed": 0, "dropped": 0}, (
        f"{at_end['queued']} still queued when the script ended"
    )

    sessions = collector.sessions
    assert len(sessions) == 200
    assert len(collector.actions()) == 600
    assert sorted(int(s["attributes"]["n"]) for s in sessions) == list(range(200))
    for session in sessions:
        n = int(session["attributes"]["n"])
        assert [a["data"] for a in session["actions"]] == [{"n": n, "step": s} for s in range(3)]
    assert_each_event_once(collector)


#: Python 3.12+ refuses to start a thread once the interpreter is finalizing
#: ("can't create new thread at interpreter shutdown"). This hook, registered
#: after layer_sdk's drain and so run before it, makes 3.10/3.11 behave alike.
REFUSE_THREADS_AT_EXIT = textwrap.dedent(
    """
    import threading

    def _refuse_threads_like_python_312():
        def start(self):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        threading.Thread.start = start

    atexit.register(_refuse_threads_like_python_312)
    """
)


def test_the_exit_drain_delivers_everything_when_threads_cannot_start_at_exit(
    collector: LocalCollector,
) -> None:
    """The exit drain delivers every event although no thread can start at exit (3.12+)."""
    script = SHORT_SCRIPT.replace(
        "layer.init()", "layer.init(shutdown_timeout=2.0)\n" + REFUSE_THREADS_AT_EXIT
    )
    assert script != SHORT_SCRIPT
    result = run_python(script, env=layer_env(collector), timeout=60)

    assert result.returncode == 0, result.stderr
    after = tagged(result.stdout, "AFTER-DRAIN")
    assert (after["sent"], after["failed"]) == (800, 0), after
    assert collector.event_count == 800
    assert "Traceback" not in result.stderr, result.stderr


STUCK_SCRIPT = REPORT_AFTER_DRAIN + textwrap.dedent(
    """
    import time
    from layer_sdk import layer

    layer.init(shutdown_timeout=1.0)
    for n in range(20):
        sid = layer.create_session(attributes={"n": n})
        layer.append_action(sid, kind="completion_prompt", data=n)
    print("MAIN-DONE " + json.dumps(time.time()), flush=True)
    """
)

#: The same exit without anything to drain: what the interpreter's own teardown costs.
IDLE_SCRIPT = textwrap.dedent(
    """
    import json, time
    import layer_sdk
    print("MAIN-DONE " + json.dumps(time.time()), flush=True)
    """
)


def exit_duration(script: str, collector: LocalCollector) -> tuple[float, Any]:
    """Seconds from the end of ``script``'s main code to its process's end, and its result."""
    result = run_python(script, env=layer_env(collector), timeout=30)
    exited_at = time.time()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return exited_at - tagged(result.stdout, "MAIN-DONE"), result


@pytest.mark.parametrize("server", ["hung", "down"])
def test_exit_with_an_unresponsive_server_is_bounded_by_shutdown_timeout(
    collector: LocalCollector, server: str
) -> None:
    """A hung or dead server holds the exit at most shutdown_timeout + 0.5 s; the events fail."""
    if server == "hung":
        collector.hang()
    else:
        collector.stop()  # the port is closed: every connection is refused, and retried

    teardown, _ = exit_duration(IDLE_SCRIPT, collector)
    exit_took, result = exit_duration(STUCK_SCRIPT, collector)

    assert exit_took - teardown <= 1.0 + EXIT_SLACK, (
        f"the exit took {exit_took:.2f} s, of which {teardown:.2f} s is a bare interpreter's"
    )
    after = tagged(result.stdout, "AFTER-DRAIN")
    counts = {name: after[name] for name in ("enqueued", "sent", "failed", "queued")}
    assert counts == {"enqueued": 40, "sent": 0, "failed": 40, "queued": 0}
    if server == "hung":
        # Nothing could be retried within 1 s: every event was given up on by the deadline.
        assert after["failed_by_reason"] == {"shutdown": 40}
        # The exit was held by a real request to the hung server, now let go.
        collector.release()
        assert collector.wait_for(lambda c: len(c.requests) >= 1, timeout=5)
    else:
        assert after["retried"] > 0  # the exit cut a retry loop short
        assert collector.event_count == 0


# -- fork -------------------------------------------------------------------------

#: Forking a process that runs threads is the very case under test (gunicorn
#: --preload, celery prefork); Python 3.12+ warns about it.
forks_with_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

PARENT_SESSIONS = 5
CHILD_SESSIONS = 3
ACTIONS_PER_SESSION = 2


def produce(client: Client, who: str, sessions: int) -> list[str]:
    ids = []
    for n in range(sessions):
        sid = client.create_session(attributes={"who": who, "n": n})
        for step in range(ACTIONS_PER_SESSION):
            client.append_action(sid, kind=PROMPT, data={"who": who, "n": n, "step": step})
        ids.append(sid)
    return ids


def child_work(client: Client) -> dict[str, Any]:
    """What a forked child does with the client it inherited: no init, just use it."""
    ids = produce(client, "child", CHILD_SESSIONS)
    delivered = client.flush(timeout=10)
    return {"delivered": delivered, "ids": ids, "stats": stats_dict(client)}


def in_forked_child(
    work: Callable[..., dict[str, Any]], *args: Any
) -> tuple[int | None, dict[str, Any] | None]:
    """Run ``work(*args)`` in a forked child: its exit code (None: hung, killed) and report."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, and never return into pytest
        code = 2
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(work(*args)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    code = wait_for_child(pid, CHILD_DEADLINE)
    output = read_all(read_end)
    return code, json.loads(output) if output else None


def fork_child(client: Client) -> tuple[int | None, dict[str, Any] | None]:
    return in_forked_child(child_work, client)


def multiprocessing_child(client: Client) -> tuple[int | None, dict[str, Any] | None]:
    return in_multiprocessing_child(child_work, client, timeout=CHILD_DEADLINE)


@forks_with_threads
@pytest.mark.parametrize("start", [fork_child, multiprocessing_child], ids=["os.fork", "mp-fork"])
def test_a_forked_child_sends_only_its_own_events_and_the_parent_keeps_its_own(
    make_client: MakeClient,
    collector: LocalCollector,
    start: Callable[[Client], tuple[int | None, dict[str, Any] | None]],
) -> None:
    """After fork each parent and child event reaches the server exactly once."""
    client = make_client(flush_interval=60.0)  # nothing leaves before a flush
    parent_ids = produce(client, "parent", PARENT_SESSIONS)
    parent_events = PARENT_SESSIONS * (1 + ACTIONS_PER_SESSION)
    child_events = CHILD_SESSIONS * (1 + ACTIONS_PER_SESSION)
    assert client.stats().queued == parent_events
    assert collector.event_count == 0

    code, report = start(client)

    assert code == 0, f"the child did not exit cleanly (None: killed at the deadline): {code}"
    assert report is not None
    assert report["delivered"] is True
    assert report["stats"] == {
        "enqueued": child_events,
        "sent": child_events,
        "dropped": 0,
        "failed": 0,
        "retried": 0,
        "queued": 0,
        "dropped_by_reason": {},
        "failed_by_reason": {},
    }
    # Only the child's own events reached the server: the parent's are still queued here.
    assert collector.event_count == child_events
    assert {s["attributes"]["who"] for s in collector.sessions} == {"child"}

    assert client.flush(timeout=10) is True
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.queued) == (parent_events, parent_events, 0)
    assert collector.event_count == parent_events + child_events
    assert {s["session_id"] for s in collector.sessions} == {*parent_ids, *report["ids"]}
    actions = Counter(
        (a["data"]["who"], a["data"]["n"], a["data"]["step"]) for a in collector.actions()
    )
    assert actions == Counter(
        (who, n, step)
        for who, sessions in (("parent", PARENT_SESSIONS), ("child", CHILD_SESSIONS))
        for n in range(sessions)
        for step in range(ACTIONS_PER_SESSION)
    )
    assert_each_event_once(collector)


def one_child_session(client: Client, round_: int) -> dict[str, Any]:
    """A forked child's work: one session of two actions, flushed."""
    sid = client.create_session(attributes={"who": "child", "round": round_})
    for step in range(2):
        client.append_action(sid, kind=PROMPT, data={"who": "child", "step": step})
    delivered = client.flush(timeout=5)
    return {"sid": sid, "delivered": delivered, "stats": stats_dict(client)}


def assert_child_delivered_its_session(code: int | None, report: dict[str, Any] | None) -> None:
    assert code == 0, f"the child exited with {code} (None: hung, killed at the deadline)"
    assert report is not None
    assert report["delivered"] is True, report
    stats = report["stats"]
    assert (stats["enqueued"], stats["sent"], stats["queued"]) == (3, 3, 0), report


FORK_ROUNDS = 20


@forks_with_threads
def test_forking_while_another_thread_produces_never_deadlocks_the_child(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Twenty forks amid a producer thread: every child delivers its 3 events and exits."""
    client = make_client()
    stop = threading.Event()
    produced = [0]

    def producer() -> None:
        # As fast as it can, so that forks often land while it holds the queue's
        # lock; it pauses only when the server falls behind, so nothing is dropped.
        while not stop.is_set():
            for _ in range(20):
                sid = client.create_session(attributes={"who": "producer"})
                client.append_action(sid, kind=PROMPT, data={"who": "producer"})
                produced[0] += 2
            if client.stats().queued > 2_000:
                stop.wait(0.001)

    thread = threading.Thread(target=producer, name="producer", daemon=True)
    thread.start()
    reports = []
    try:
        assert wait_until(lambda: produced[0] >= 100, timeout=5)
        for round_ in range(FORK_ROUNDS):
            code, report = in_forked_child(one_child_session, client, round_)
            assert_child_delivered_its_session(code, report)
            reports.append(report)
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()

    assert client.flush(timeout=10) is True
    stats = client.stats()
    total = produced[0]
    assert (stats.enqueued, stats.sent, stats.dropped, stats.failed) == (total, total, 0, 0)
    sessions = collector.sessions
    by_who = Counter(s["attributes"]["who"] for s in sessions)
    assert by_who == {"producer": total // 2, "child": FORK_ROUNDS}
    rounds = sorted(int(s["attributes"]["round"]) for s in sessions if "round" in s["attributes"])
    assert rounds == list(range(FORK_ROUNDS))
    assert {r["sid"] for r in reports} <= {s["session_id"] for s in sessions}
    assert collector.event_count == total + 3 * FORK_ROUNDS
    assert_each_event_once(collector)


LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def sdk_locks(client: Client) -> list[Any]:
    """Every lock held by the client and the layer_sdk objects it reaches (names unknown)."""
    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if id(obj) in seen or not hasattr(obj, "__dict__"):
            return
        seen.add(id(obj))
        for value in vars(obj).values():
            if isinstance(value, LOCK_TYPES):
                found.append(value)
            elif type(value).__module__.startswith("layer_sdk"):
                visit(value)

    visit(client)
    return found


@forks_with_threads
def test_a_fork_while_another_thread_holds_every_sdk_lock_never_deadlocks_the_child(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Locks held by another thread at fork time (forever, in the child) never block the child."""
    client = make_client()
    client.create_session(attributes={"who": "parent"})
    locks = sdk_locks(client)
    assert locks, "found no lock to hold: the test would prove nothing"
    with held_by_another_thread(*locks):
        code, report = in_forked_child(one_child_session, client, 0)
    assert_child_delivered_its_session(code, report)
    assert client.flush(timeout=5) is True
    assert Counter(s["attributes"]["who"] for s in collector.sessions) == {"parent": 1, "child": 1}
    assert collector.event_count == 1 + 3
    assert_each_event_once(collector)


# -- a dead worker ----------------------------------------------------------------


class DieOnSender(logging.Handler):
    """Ends the sender thread that logs the first loss line for ``reason``.

    The user's code that a sender thread runs is the logging of its loss lines
    (``on_drop`` runs on a notifier thread): a handler that raises SystemExit,
    which is no Exception, ends the thread, and threading reports nothing for it.
    ``before_dying`` runs first, on that thread.
    """

    def __init__(self, reason: str, before_dying: Callable[[], None] | None = None) -> None:
        super().__init__(logging.WARNING)
        self.reason = reason
        self.before_dying = before_dying
        self.dead: list[threading.Thread] = []

    def emit(self, record: logging.LogRecord) -> None:
        thread = threading.current_thread()
        if self.dead or not thread.name.startswith("layer-sdk-sender"):
            return
        if not record.getMessage().startswith(f"layer-sdk lost 1 event(s): {self.reason}"):
            return
        self.dead.append(thread)
        if self.before_dying is not None:
            self.before_dying()
        raise SystemExit("bye")


@pytest.fixture
def die_on_sender() -> Iterator[Callable[..., DieOnSender]]:
    """Attach ``DieOnSender`` handlers to the SDK's logger for the test."""
    sdk_logger = logging.getLogger("layer_sdk")
    handlers: list[DieOnSender] = []

    def attach(reason: str, before_dying: Callable[[], None] | None = None) -> DieOnSender:
        handler = DieOnSender(reason, before_dying)
        handlers.append(handler)
        sdk_logger.addHandler(handler)
        return handler

    yield attach
    for handler in handlers:
        sdk_logger.removeHandler(handler)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_sender_thread_that_dies_replaces_itself_and_says_so(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    die_on_sender: Callable[..., DieOnSender],
) -> None:
    """A sender killed by a BaseException logs one ERROR and is replaced at once."""
    dead = die_on_sender("rejected").dead
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    client = make_client(max_concurrent_requests=1, flush_interval=30.0)
    collector.fail_next(1, status=400)
    client.create_session()
    assert client.flush(timeout=5) is False  # rejected: the only sender logs it, and dies
    assert wait_until(lambda: dead, timeout=5)
    dead[0].join(5)
    assert not dead[0].is_alive()

    sid = client.create_session()
    client.append_action(sid, kind=PROMPT, data="after the restart")

    assert client.flush(timeout=5) is True
    session = collector.session(sid)
    assert session is not None
    assert [a["data"] for a in session["actions"]] == [{"value": "after the restart"}]
    died = [r for r in caplog.records if "sender thread had died" in r.getMessage()]
    assert [(r.name, r.levelno) for r in died] == [("layer_sdk", logging.ERROR)]
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.failed) == (3, 2, 1)
    assert stats.failed_by_reason == {"rejected": 1}


def test_a_sender_that_vanished_is_restarted_by_the_next_enqueue_or_flush(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """The backstop: a sender gone without a word is noticed, restarted and logged."""
    caplog.set_level(logging.ERROR, logger="layer_sdk")
    client = make_client(flush_interval=30.0)
    first = client.create_session()  # waits in the inbox
    exporter = client._exporter
    assert exporter is not None
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    exporter.worker._primary = gone  # as if the real one had vanished

    assert client.flush(timeout=5) is True  # flush notices and restarts it
    assert collector.session(first) is not None
    died = [r for r in caplog.records if "sender thread had died" in r.getMessage()]
    assert len(died) == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_events_waiting_when_a_sender_died_are_still_delivered(
    make_client: MakeClient, collector: LocalCollector, die_on_sender: Callable[..., DieOnSender]
) -> None:
    """Events that wait while the only sender dies are sent by its replacement."""
    in_callback = threading.Event()
    let_die = threading.Event()

    def before_dying() -> None:
        in_callback.set()
        let_die.wait(5)

    dead = die_on_sender("rejected", before_dying).dead
    client = make_client(max_concurrent_requests=1, flush_interval=30.0)
    collector.fail_next(1, status=400)
    client.create_session()
    client.flush(timeout=0)  # make the batch due now
    assert in_callback.wait(5)
    first = client.create_session()  # wakes the sender, which is still alive (in the callback)
    let_die.set()
    dead[0].join(5)
    assert not dead[0].is_alive()

    second = client.create_session()

    # flush()'s answer is False either way (the rejected create is a loss it reports):
    # it is called to make the batch due, and the server tells what was delivered.
    client.flush(timeout=5)
    assert collector.session(first) is not None
    assert collector.session(second) is not None


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_events_held_by_a_sender_when_it_died_are_sent_by_its_replacement(
    make_client: MakeClient, collector: LocalCollector, die_on_sender: Callable[..., DieOnSender]
) -> None:
    """A request taken by a sender that died before sending it is sent by the next one."""
    dead = die_on_sender("session_failed").dead
    client = make_client(max_concurrent_requests=1, flush_interval=30.0, max_event_bytes=2_000)
    doomed = str(uuid.uuid5(uuid.NAMESPACE_URL, "a session whose create is refused"))
    client.append_action(doomed, kind=PROMPT)  # waits in the inbox...
    with pytest.raises(LayerRequestPreparationError):  # ...as its session's create is refused
        client.create_session(session_id=doomed, attributes={"big": "x" * 3_000})
    # The action fails as session_failed when the batch is sorted, by the take() that
    # hands this session's request over: that sender logs the loss, and dies.
    held = client.create_session()
    client.flush(timeout=0)  # make the batch due now
    assert wait_until(lambda: dead, timeout=5)
    dead[0].join(5)
    assert not dead[0].is_alive()

    later = client.create_session()

    client.flush(timeout=5)  # False either way: the doomed action is a loss it reports
    assert collector.session(later) is not None
    assert collector.session(held) is not None  # handed back, then sent by the replacement
    stats = client.stats()
    assert (stats.queued, stats.sent) == (0, 2)
    assert stats.failed_by_reason == {"session_failed": 1}
    assert stats.dropped_by_reason == {"too_large": 1}


# -- recursion --------------------------------------------------------------------


def test_the_sdks_own_log_records_are_never_enqueued_through_a_logging_hook(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """append_action called by a handler on an SDK thread is dropped as 'recursion', not sent."""
    client = make_client(flush_interval=30.0)  # batches leave only on flush: exact request counts
    target = client.create_session(attributes={"role": "log sink"})
    assert client.flush(timeout=5) is True

    sdk_logger = logging.getLogger("layer_sdk")
    handler = ReportingHandler(client, target)
    level = sdk_logger.level
    sdk_logger.setLevel(logging.DEBUG)
    sdk_logger.addHandler(handler)
    try:
        # Refused merged, then refused alone: the worker logs the loss from its own thread.
        collector.fail_next(2, status=400)
        client.create_session(actions=[{"kind": PROMPT, "data": n} for n in range(3)])
        assert client.flush(timeout=5) is False
        assert handler.settled.wait(5), "the worker logged nothing about the rejected request"
        # One log line for the refused create, one for its actions: each was dropped.
        assert wait_until(lambda: client.stats().dropped_by_reason.get("recursion", 0) >= 2)
        client.flush(timeout=5)  # reports (False) the handler's drops, made since the last flush

        accepted = client.create_session(actions=[{"kind": PROMPT, "data": n} for n in range(2)])
        assert client.flush(timeout=5) is True
        assert client.flush(timeout=5) is True  # and the delivery logged nothing that looped
    finally:
        sdk_logger.removeHandler(handler)
        sdk_logger.setLevel(level)

    assert handler.errors == []
    assert threading.get_ident() not in handler.threads
    stats = client.stats()
    assert stats.dropped_by_reason == {"recursion": len(handler.threads)}
    assert (stats.enqueued, stats.sent, stats.queued) == (1 + 4 + 3, 1 + 3, 0)
    assert stats.failed_by_reason == {"rejected": 1, "session_failed": 3}
    assert [r.status for r in collector.requests] == [200, 400, 400, 200]
    assert collector.actions(target) == []
    assert len(collector.actions(accepted)) == 2


# -- gevent -----------------------------------------------------------------------

GEVENT_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json

    import gevent

    from layer_sdk import layer

    layer.init(flush_interval=0.05)

    def produce(g):
        for s in range(10):
            sid = layer.create_session(attributes={"g": g, "s": s})
            for a in range(9):
                layer.append_action(sid, kind="completion_prompt", data=[g, s, a])
            gevent.sleep(0)  # let the other greenlets produce: not synchronization

    greenlets = [gevent.spawn(produce, g) for g in range(10)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    delivered = layer.flush(timeout=20)
    s = layer.stats()
    closed = layer.shutdown(timeout=5)
    print("RESULT " + json.dumps({
        "delivered": delivered, "closed": closed, "all_done": all(g.ready() for g in greenlets),
        "enqueued": s.enqueued, "sent": s.sent, "dropped": s.dropped, "failed": s.failed,
    }), flush=True)
    """
)


def test_under_gevent_monkey_patching_every_event_is_delivered_and_the_process_exits(
    collector: LocalCollector,
) -> None:
    """With gevent.monkey.patch_all(), 10 greenlets' 1,000 events arrive exactly once."""
    if importlib.util.find_spec("gevent") is None:
        pytest.skip("gevent is not installed (pip install gevent)")

    result = run_python(GEVENT_SCRIPT, env=layer_env(collector), timeout=60)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert tagged(result.stdout, "RESULT") == {
        "delivered": True,
        "closed": True,
        "all_done": True,
        "enqueued": 1000,
        "sent": 1000,
        "dropped": 0,
        "failed": 0,
    }
    assert collector.event_count == 1000
    assert len(collector.sessions) == 100
    assert sorted(tuple(a["data"]) for a in collector.actions()) == [
        (g, s, a) for g in range(10) for s in range(10) for a in range(9)
    ]
    assert_each_event_once(collector)


# -- shutdown and flush -----------------------------------------------------------


def test_shutdown_is_idempotent_refuses_later_events_and_allows_a_new_init(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """shutdown() twice is fine; later events are dropped as 'shutdown'; init() again delivers."""
    client = make_client()
    before = client.create_session()
    assert client.flush(timeout=5) is True

    assert client.shutdown() is True
    assert client.shutdown() is True

    late = client.create_session()
    assert uuid.UUID(late).version == 5
    client.append_action(late, kind=PROMPT, data="late")
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.queued) == (1, 1, 0)
    assert stats.dropped_by_reason == {"shutdown": 2}

    client.init(base_url=collector.url, application_id=APP_ID, flush_interval=0.05)
    again = client.create_session()
    assert client.flush(timeout=5) is True
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.dropped) == (1, 1, 0)
    assert {s["session_id"] for s in collector.sessions} == {before, again}
    assert collector.event_count == 2


def test_shutdown_with_a_hung_server_returns_false_within_its_timeout(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """shutdown(timeout=0.5) with a hung server returns False in time; they count as failed."""
    client = make_client()
    collector.hang()
    sid = client.create_session()
    client.append_action(sid, kind=PROMPT)

    started = time.monotonic()
    assert client.shutdown(timeout=0.5) is False
    took = time.monotonic() - started

    assert took < 2.0, f"shutdown(timeout=0.5) took {took:.2f} s"
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.failed, stats.queued) == (2, 0, 2, 0)
    assert stats.failed_by_reason == {"shutdown": 2}
    assert client.shutdown() is True  # nothing left to do


@pytest.mark.parametrize("server", ["hung", "down"])
def test_flush_against_an_unresponsive_server_returns_false_within_its_timeout(
    make_client: MakeClient, collector: LocalCollector, server: str
) -> None:
    """flush(timeout=0.5) never raises and returns False in time; the events stay queued."""
    client = make_client()
    if server == "hung":
        collector.hang()
    else:
        collector.stop()
    sid = client.create_session()
    client.append_action(sid, kind=PROMPT)

    started = time.monotonic()
    assert client.flush(timeout=0.5) is False
    took = time.monotonic() - started

    assert took < 2.0, f"flush(timeout=0.5) took {took:.2f} s"
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.failed, stats.queued) == (2, 0, 0, 2)
    if server == "hung":
        collector.release()
        assert client.flush(timeout=5) is True
        assert collector.event_count == 2
    else:
        assert client.shutdown(timeout=0) is False  # keep the fixture's teardown short
