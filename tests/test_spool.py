"""The durable spool (``spool_dir``): what a crash, a restart, an outage or a bad disk may
not lose, and what it may not do to the host.

Real processes, killed with SIGKILL at random moments; real files and real SQLite; the
collector counts what it stored, and the duplicates it answered from ``X-Request-Id``
without storing them again.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from layer_sdk import AuthProvider, Client
from layer_sdk._export._event import Event
from layer_sdk._export._losses import EXPIRED, QUEUE_FULL, SESSION_FAILED, SPOOL_FULL, LossLog
from layer_sdk._export._queue import EVENT_OVERHEAD, ExportQueue
from layer_sdk._export._spool import Spool
from layer_sdk._export._spool_file import SpoolFile
from layer_sdk._schemas import action_body
from layer_sdk.cli import main as cli
from layer_sdk.collector import LocalCollector

from .helpers import (
    APP_ID,
    FAST,
    PROMPT,
    ROOT,
    MakeClient,
    closed_port,
    run_python,
    wait_until,
)

APP = ROOT / "tests" / "spool_app.py"
#: The flush_interval of the processes killed: what a kill may lose is what was appended
#: within this many seconds before it.
INTERVAL = 0.5


class App:
    """A ``tests/spool_app.py`` process, and what it printed."""

    def __init__(self, url: str, directory: Path, tag: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(APP), url, str(directory), tag, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        #: Each action appended, with the time its append_action() had returned by.
        self.appended: dict[str, float] = {}
        self.pid = 0
        self._said: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            name, _, rest = line.strip().partition(" ")
            if name in ("ready", "written", "stats"):
                if name == "ready":
                    self.pid = int(rest)
                self._said.put(line.strip())
            elif rest:
                self.appended[name] = float(rest)

    def wait_for(self, word: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._said.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{word!r} not said; stderr: {self.stderr()}") from None
            if line.startswith(word):
                return line

    def kill(self) -> float:
        """SIGKILL; the time of the kill."""
        killed_at = time.time()
        self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        return killed_at

    def finish(self) -> dict[str, Any]:
        """Close its stdin: it flushes, shuts down and says its stats."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        stats = json.loads(self.wait_for("stats").partition(" ")[2])
        self.process.wait(20)
        return stats  # type: ignore[no-any-return]

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()[-3000:]


def spool_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".spool"))


def drain(directory: Path, url: str, timeout: float = 60.0) -> None:
    """A new process on ``directory`` (this one): it replays every file left there."""
    client = Client()
    client.init(base_url=url, application_id=APP_ID, spool_dir=str(directory), **FAST)
    try:
        assert wait_until(
            lambda: not spool_files(directory) and client.stats().queued == 0, timeout
        ), (spool_files(directory), client.stats())
    finally:
        client.shutdown()


def stored_actions(*collectors: LocalCollector) -> Counter[str]:
    return Counter(a["data"]["n"] for c in collectors for a in c.actions())


# -- crashes ------------------------------------------------------------------------------


KILLS = 20


def test_kill_9_at_random_moments_loses_nothing_appended_before_the_last_flush_interval(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A process appending to a live, a down or a slow API is killed with SIGKILL at a
    random moment, again and again, each one on the spool the one before left (and
    replaying it as it goes). Once a last process has replayed what they all left, every
    action appended more than flush_interval before its process's kill is stored at the
    collector, and no action is stored twice (a body sent before the kill and again by
    the replay carries the same request ID: the collector answers it without storing)."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    directory = tmp_path / "spool"
    required: set[str] = set()
    for kill in range(KILLS):
        mode = ("live", "down", "slow")[kill % 3]
        collector.fail_for(60 if mode == "down" else 0, 503)
        collector.delay = 0.3 if mode == "slow" else 0.0
        app = App(collector.url, directory, f"k{kill}", "--flush-interval", str(INTERVAL))
        app.wait_for("ready")
        time.sleep(rng.uniform(0.2, 1.2))  # the random moment of the kill
        killed_at = app.kill()
        required |= {name for name, at in app.appended.items() if at < killed_at - INTERVAL}
    collector.fail_for(0)
    collector.delay = 0.0

    drain(directory, collector.url)
    stored = stored_actions(collector)
    twice = sorted(name for name, count in stored.items() if count > 1)
    missing = sorted(required - set(stored))
    assert len(required) > 1000, len(required)
    print("required", len(required), "stored", len(stored), "duplicates", collector.duplicates)
    assert not twice, f"stored twice (seed {seed}): {twice[:10]}"
    assert not missing, f"{len(missing)} lost (seed {seed}): {missing[:10]}"


def test_a_body_the_server_took_before_the_kill_is_replayed_under_its_request_id(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Actions of a known session, pipelined, reached the server while it held them; the
    process died before it heard back. The replay sends each body again with its request
    ID: the collector answers them from it, and stores none of them twice."""
    directory = tmp_path / "spool"
    app = App(collector.url, directory, "a", "--sessions", "1", "--flush-interval", "0.05")
    app.wait_for("written")
    assert collector.wait_for(lambda c: len(c.actions()) == 4)
    app.finish()  # session a-0 is known to the server now
    collector.clear()

    second = App(collector.url, directory, "b", "--sessions", "3", "--flush-interval", "0.05")
    collector.hang()  # what it sends now is read, and held
    second.wait_for("written")
    assert collector.wait_for(lambda c: c.unanswered >= 1)
    second.kill()
    collector.release()  # stored now; the answers go nowhere
    assert collector.wait_for(lambda c: c.unanswered == 0)
    taken = len(collector.actions())

    drain(directory, collector.url)
    stored = stored_actions(collector)
    assert taken >= 1
    assert stored == Counter({f"b-{s}-{a}": 1 for s in range(3) for a in (0, 1, 2, "lasting")})
    assert collector.duplicates >= 1  # sent again, answered from the request ID


# -- an outage longer than memory ---------------------------------------------------------


@pytest.mark.parametrize("spooled", [True, False], ids=["spool", "memory"])
def test_an_outage_five_times_longer_than_the_queue_holds(
    collector: LocalCollector, make_client: MakeClient, tmp_path: Path, spooled: bool
) -> None:
    """While the API is down, the application appends five times what max_queue_bytes
    holds, at the pace the spool takes it. With a spool nothing is lost: what memory
    cannot hold waits on disk and goes, in order, once the API is back. Without one, the
    queue keeps what it holds and drops the rest, counted as queue_full."""
    at = datetime(2024, 1, 1, tzinfo=timezone.utc)  # fixed times: every action the same size
    size = len(action_body(PROMPT, at, at, None, {"n": "00000", "pad": "x" * 300}, None, None))
    capacity = 40
    options: dict[str, Any] = {
        "max_queue_bytes": capacity * (size + EVENT_OVERHEAD),
        "max_event_bytes": 4 * size,
        "max_batch_size": 8,
    }
    if spooled:
        options["spool_dir"] = str(tmp_path / "spool")
    client = make_client(**options)
    session_id = client.create_session(sync=True)
    collector.fail_for(600, 503)
    total, chunk = 5 * capacity, capacity // 4
    room = options["max_queue_bytes"] - chunk * (size + EVENT_OVERHEAD)
    most_spooled = 0
    for start in range(0, total, chunk):
        if spooled:
            # At the pace the spool takes it: room in memory for the next chunk.
            assert wait_until(lambda: client.stats().queued_bytes <= room), client.stats()
        for n in range(start, start + chunk):
            data = {"n": f"{n:05d}", "pad": "x" * 300}
            client.append_action(session_id, kind=PROMPT, start_time=at, end_time=at, data=data)
        most_spooled = max(most_spooled, client.stats().spooled)
    collector.fail_for(0)
    client.flush(30)

    stats = client.stats()
    delivered = [a["data"]["n"] for a in collector.actions(session_id)]
    if spooled:
        assert most_spooled > capacity  # the spool held more than memory can
        assert stats.dropped == 0 and stats.failed == 0, stats
        assert delivered == [f"{n:05d}" for n in range(total)]  # all of them, in order
    else:
        assert stats.dropped_by_reason == {QUEUE_FULL: total - capacity}
        assert delivered == [f"{n:05d}" for n in range(capacity)]


# -- processes sharing a directory ----------------------------------------------------------


def _dead_processes(directory: Path, count: int, tag: str) -> set[str]:
    """``count`` processes killed with events in their spool (the API unreachable); what
    they appended."""
    down = f"http://127.0.0.1:{closed_port()}"
    appended: set[str] = set()
    for dead in range(count):
        app = App(down, directory, f"{tag}{dead}", "--sessions", "150", "--pause", "0")
        app.wait_for("written")
        app.kill()
        appended |= set(app.appended)
    return appended


def test_live_processes_sharing_a_directory_never_send_the_same_event(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Three processes die with events in one spool directory; four start on it at once
    and replay what they left: each file is replayed by one of them only. No request
    reaches the collector twice (it would answer it from its request ID), and every
    event is stored once."""
    directory = tmp_path / "spool"
    appended = _dead_processes(directory, 3, "d")
    assert len(spool_files(directory)) == 3
    apps = [App(collector.url, directory, f"p{n}", "--sessions", "5") for n in range(4)]
    for app in apps:
        app.wait_for("written")
        appended |= set(app.appended)
    assert wait_until(lambda: appended <= set(stored_actions(collector)), 60)
    stats = [app.finish() for app in apps]

    assert sum(each["replayed"] for each in stats) == 3 * 751  # each dead file once
    assert collector.duplicates == 0
    assert stored_actions(collector) == Counter(dict.fromkeys(appended, 1))
    assert not spool_files(directory)


def test_what_a_process_killed_while_it_replays_left_is_replayed_by_another(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Four processes replay what three dead ones left; two of them are killed in the
    middle of it. The two others take over what those left (their own events and what
    they had not finished replaying): every event is stored, none twice."""
    directory = tmp_path / "spool"
    appended = _dead_processes(directory, 3, "d")
    collector.delay = 0.05  # a replay that lasts long enough to be cut short
    apps = [
        App(collector.url, directory, f"p{n}", "--sessions", "5", "--flush-interval", "0.1")
        for n in range(4)
    ]
    for app in apps:
        app.wait_for("ready")
    assert wait_until(lambda: len(collector.actions()) >= 50, 30)
    for app in apps[:2]:
        killed_at = app.kill()
        appended |= {name for name, at in app.appended.items() if at < killed_at - 0.1}
    collector.delay = 0.0
    for app in apps[2:]:
        app.wait_for("written")
        appended |= set(app.appended)
    survivors = [f"-{app.pid}-" for app in apps[2:]]

    def replayed() -> bool:
        """Every event stored; no file left but the survivors' own."""
        left = [name for name in spool_files(directory) if not any(s in name for s in survivors)]
        return not left and appended <= set(stored_actions(collector))

    assert wait_until(replayed, 60), (
        (spool_files(directory), survivors),  # which files were left, and whose
        sorted(appended - set(stored_actions(collector)))[:10],
    )
    for app in apps[2:]:
        app.finish()

    assert all(count == 1 for count in stored_actions(collector).values())
    assert not spool_files(directory)


# -- fork ---------------------------------------------------------------------------------


def test_a_forked_child_spools_on_its_own_and_never_replays_its_parents_events(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A process with events in its spool forks. The child writes its own file (named for
    its pid, through its own connection) and never takes over its living parent's; the
    parent goes on with its file after the child is gone. Replayed by a new process,
    each event is stored once."""
    directory = tmp_path / "spool"
    down = f"http://127.0.0.1:{closed_port()}"
    code = """
import json, os, sys, time
from layer_sdk import AuthProvider, Client

directory, url = sys.argv[1], sys.argv[2]
client = Client()
client.init(base_url=url, application_id="app", spool_dir=directory, flush_interval=0.05)

def append(name):
    session_id = client.create_session()
    client.append_action(session_id, kind="completion_prompt", data={"n": name})

def spooled(count):
    deadline = time.monotonic() + 20
    while client.stats().spooled < count:
        assert time.monotonic() < deadline, client.stats()
        time.sleep(0.01)

for n in range(10):
    append(f"parent-{n}")
spooled(20)
pid = os.fork()
if pid == 0:
    append("child-0")
    spooled(2)  # written by its spool's thread, which took over what it could first
    stats = client.stats()
    print(json.dumps({"pid": os.getpid(), "replayed": stats.replayed,
                      "enqueued": stats.enqueued, "files": sorted(os.listdir(directory))}))
    sys.stdout.flush()
    os._exit(0)  # its events stay in its spool, as if it were killed
_, status = os.waitpid(pid, 0)
for n in range(10, 15):
    append(f"parent-{n}")
spooled(30)
print(json.dumps({"pid": os.getpid(), "status": status}))
sys.stdout.flush()
os._exit(0)
"""
    result = run_python(code, args=[str(directory), down])
    assert result.returncode == 0, result.stderr
    child, parent = (json.loads(line) for line in result.stdout.splitlines())
    assert parent["status"] == 0
    assert child["replayed"] == 0 and child["enqueued"] == 2
    own = [
        name for name in child["files"] if f"-{child['pid']}-" in name and name.endswith(".spool")
    ]
    theirs = [name for name in child["files"] if f"-{parent['pid']}-" in name]
    assert len(own) == 1 and theirs

    drain(directory, collector.url)
    stored = stored_actions(collector)
    assert stored == Counter({"child-0": 1, **{f"parent-{n}": 1 for n in range(15)}})


# -- a disk that cannot be used -----------------------------------------------------------


SPOOL_WARNING = "layer-sdk cannot use its spool"
REPORTING = """
import json, logging, os, sys, time
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from layer_sdk import AuthProvider, Client
client = Client()
client.init(base_url=sys.argv[1], application_id="app", spool_dir=sys.argv[2],
            flush_interval=0.05, max_batch_size=20)
for n in range(40):
    session_id = client.create_session()
    for action in range(3):
        client.append_action(session_id, kind="completion_prompt",
                             data={"n": f"{n}-{action}", "pad": "x" * 2000})
    time.sleep(0.01)  # a batch every few sessions: the spool is written many times
delivered = client.flush(20)
stats = client.stats()

def spool_files():
    return [name for name in os.listdir(sys.argv[2]) if name.endswith(".spool")]

deadline = time.monotonic() + 3  # for a spool that turned to memory, its file goes now
while spool_files() and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"delivered": delivered, "dropped": stats.dropped, "failed": stats.failed,
                  "files": spool_files()}))
client.shutdown()
"""


def _report_through(
    collector: LocalCollector, directory: Path, **popen: Any
) -> tuple[dict[str, Any], list[str]]:
    """Run an application that reports 160 events through a spool in ``directory``;
    what it said, and its warnings."""
    result = subprocess.run(
        [sys.executable, "-c", REPORTING, collector.url, str(directory)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        **popen,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    return json.loads(result.stdout), warnings


def _all_delivered(outcome: dict[str, Any], collector: LocalCollector) -> None:
    assert (outcome["delivered"], outcome["dropped"], outcome["failed"]) == (True, 0, 0)
    assert len(collector.sessions) == 40 and len(collector.actions()) == 120


def test_a_damaged_spool_file_is_set_aside_with_one_warning(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A file of a dead process that is not a database: renamed aside, said once; the
    application's events go through its own spool all the same."""
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "0000-1-dead.spool").write_bytes(b"not a database " * 1000)
    outcome, warnings = _report_through(collector, directory)
    _all_delivered(outcome, collector)
    assert len(warnings) == 1 and "set aside a spool file" in warnings[0], warnings
    assert [n for n in os.listdir(directory) if ".spool.unusable-" in n]
    assert not spool_files(directory)


def test_a_spool_file_of_an_unknown_format_is_set_aside_with_one_warning(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """A spool file of a format this version does not read (a newer one's): renamed aside,
    said once, never sent."""
    directory = tmp_path / "spool"
    directory.mkdir()
    path = directory / "0000-1-newer.spool"
    SpoolFile.create(str(path), "normal").close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    outcome, warnings = _report_through(collector, directory)
    _all_delivered(outcome, collector)
    assert len(warnings) == 1 and "format 99" in warnings[0], warnings
    assert [n for n in os.listdir(directory) if ".spool.unusable-" in n]


def test_a_full_disk_falls_back_to_memory_with_one_warning(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Files may not grow past 64 KiB (the file size limit of the process): the spool
    stops taking events after its first writes, says so once, and every event goes
    through memory; what it had written is deleted with the file once delivered."""
    directory = tmp_path / "spool"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    outcome, warnings = _report_through(collector, directory, preexec_fn=small_files)
    _all_delivered(outcome, collector)
    assert len(warnings) == 1 and SPOOL_WARNING in warnings[0], warnings
    assert outcome["files"] == []  # deleted whole, while the application runs


@pytest.fixture
def read_only_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory no file can be made in: without write permission, or for root (whom
    permissions do not stop) a read-only mount of it."""
    directory = tmp_path / "spool"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", directory, directory], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", directory], check=True)
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True)


def test_a_read_only_directory_falls_back_to_memory_with_one_warning(
    collector: LocalCollector, read_only_directory: Path
) -> None:
    """No file can be made: one warning, every event through memory, no exception."""
    outcome, warnings = _report_through(collector, read_only_directory)
    _all_delivered(outcome, collector)
    assert len(warnings) == 1 and SPOOL_WARNING in warnings[0], warnings
    assert "ermission denied" in warnings[0] or "ead-only" in warnings[0], warnings
    assert os.listdir(read_only_directory) == []


# -- bounds -------------------------------------------------------------------------------


def _dead_file(directory: Path, sessions: int, *, written: float) -> None:
    """A spool file left by a process that is gone: sessions of a create and 3 actions."""
    directory.mkdir(exist_ok=True)
    file = SpoolFile.create(str(directory / "0000-1-gone.spool"), "normal")
    rows: list[tuple[object, ...]] = []
    for n in range(sessions):
        session_id = f"00000000-0000-5000-8000-{n:012d}"
        create = json.dumps(
            {"application_id": APP_ID, "session_id": session_id, "attributes": {}}
        ).encode()
        rows.append((len(rows) + 1, n + 1, session_id, 1, 3, f"c{n:031d}", 0, written, create))
        for action in range(3):
            body = json.dumps(
                {
                    "kind": "completion_prompt",
                    "start_time": "2024-01-01T00:00:00Z",
                    "end_time": "2024-01-01T00:00:00Z",
                    "attributes": {},
                    "data": {"n": f"{n}-{action}"},
                }
            ).encode()
            rows.append(
                (len(rows) + 1, n + 1, session_id, 0, 0, f"a{n:028d}{action:03d}", 0, written, body)
            )
    file.insert(rows, [])
    file.close()


def test_what_waited_longer_than_spool_max_age_is_given_up_as_expired(
    collector: LocalCollector,
    make_client: MakeClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead process's file written an hour ago, spool_max_age a minute: its events are
    counted as expired (and logged), never sent, and the file goes."""
    directory = tmp_path / "spool"
    _dead_file(directory, 5, written=time.time() - 3600)
    with caplog.at_level(logging.WARNING, logger="layer_sdk"):
        client = make_client(spool_dir=str(directory), spool_max_age=60.0)
        assert wait_until(lambda: client.stats().failed == 20)
    stats = client.stats()
    assert stats.failed_by_reason == {EXPIRED: 20} and stats.replayed == 20
    assert stats.enqueued == stats.sent + stats.failed + stats.queued
    assert collector.event_count == 0
    assert any("lost 20 event(s): expired" in r.getMessage() for r in caplog.records)
    assert wait_until(lambda: not spool_files(directory))


def test_a_full_spool_gives_up_its_oldest_events_whole_sessions_at_a_time(
    collector: LocalCollector, make_client: MakeClient, tmp_path: Path
) -> None:
    """An outage outlasts memory and spool_max_bytes: the oldest events that waited on
    disk go (spool_full; the actions of a session whose create went fail with it), the
    spool stays within its bound, and the rest is delivered."""
    directory = tmp_path / "spool"
    pad = "x" * 1000
    limit = 120_000
    client = make_client(
        spool_dir=str(directory),
        spool_max_bytes=limit,
        max_queue_bytes=40_000,
        max_event_bytes=10_000,
        max_batch_size=8,
    )
    collector.fail_for(600, 503)
    largest = 0
    for n in range(120):
        assert wait_until(lambda: client.stats().queued_bytes <= 30_000)
        session_id = client.create_session()
        for action in range(3):
            client.append_action(session_id, kind=PROMPT, data={"n": f"{n}-{action}", "p": pad})
        largest = max(largest, client.stats().spooled_bytes)
    collector.fail_for(0)
    client.flush(30)

    stats = client.stats()
    assert largest <= limit
    assert stats.failed_by_reason.get(SPOOL_FULL, 0) > 0, stats
    assert set(stats.failed_by_reason) <= {SPOOL_FULL, SESSION_FAILED}
    assert stats.dropped == 0 and stats.enqueued == stats.sent + stats.failed
    by_session = Counter(a["data"]["n"].split("-")[0] for a in collector.actions())
    assert set(by_session.values()) == {3}  # whole sessions, or nothing of them
    assert len(collector.sessions) == len(by_session) == stats.sent // 4


# -- the seam -----------------------------------------------------------------------------


def test_a_create_refused_with_its_actions_travels_alone_under_a_new_id_on_disk_too(
    tmp_path: Path,
) -> None:
    """A merged create split after a refusal gets a new request ID, and the spool records
    it (and that it travels alone) before it can be sent: a replay never sends the merged
    body again under an ID the server may know for the create alone."""
    spool = Spool(str(tmp_path), sync="normal", max_bytes=10**9, max_age=3600.0, losses=LossLog())
    queue_ = ExportQueue(
        max_events=100,
        max_bytes=10**6,
        max_event_bytes=10**5,
        batch_size=100,
        max_request_bytes=10**6,
        max_pipelined=100,
        flush_interval=0.0,
        on_loss=lambda reason, count: None,
        store=spool,
    )
    for event in (Event("s", b'{"c":1}', True), Event("s", b'{"a":1}', False)):
        queue_.put(event)
    assert queue_.keep_store(0)  # tend
    assert queue_.keep_store(0)  # write
    request = queue_.take(0)
    assert request is not None and len(request.events) == 2
    (merged_id,) = request.request_ids()
    assert queue_.split(request)
    alone = queue_.take(0)
    assert alone is not None
    (alone_id,) = alone.request_ids()
    assert alone_id != merged_id
    (path,) = [p for p in tmp_path.iterdir() if p.suffix == ".spool"]
    with sqlite3.connect(path) as connection:
        first = connection.execute("SELECT creates, joined, request_id FROM events ORDER BY seq")
        assert tuple(first.fetchone()) == (1, 0, alone_id)
    spool.close()


# -- visible --------------------------------------------------------------------------------


def test_stats_and_the_command_line_show_what_is_spooled(
    collector: LocalCollector,
    make_client: MakeClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """stats() counts what this client holds in its spool and what it replays; ``layer-sdk
    spool`` shows the directory (whose files live), and ``--purge`` empties it, leaving the
    files of live processes unless forced."""
    directory = tmp_path / "spool"
    down = f"http://127.0.0.1:{closed_port()}"
    dead = App(down, directory, "d", "--sessions", "5", "--pause", "0")
    dead.wait_for("written")
    dead.kill()
    client = make_client(base_url=down, spool_dir=str(directory))
    session_id = client.create_session()
    client.append_action(session_id, kind=PROMPT, data={"n": "live"})
    assert wait_until(lambda: client.stats().spooled == 28), client.stats()
    stats = client.stats()
    assert stats.replayed == 26 and stats.queued == 28 and stats.spooled_bytes > 0
    assert stats.spooled_oldest_age > 0

    assert cli(["spool", "--dir", str(directory)]) == 0
    shown = capsys.readouterr().out
    assert "28 event(s) waiting" in shown
    assert shown.count("a live process") == 2  # its own file, and the one it replays

    assert cli(["spool", "--dir", str(directory), "--purge"]) == 1
    assert "a live process holds it" in capsys.readouterr().out
    assert len(spool_files(directory)) == 2
    assert cli(["spool", "--dir", str(directory), "--purge", "--force"]) == 0
    assert not spool_files(directory)


# -- options, secrets -------------------------------------------------------------------


def test_the_spool_options_are_checked_and_read_from_the_environment(
    collector: LocalCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LAYER_SPOOL_DIR turns the spool on, in a directory and files for the owner only; a
    wrong spool_sync or bound raises at init(), naming the option; spool_sync="full" syncs
    every write."""
    for wrong in ({"spool_sync": "always"}, {"spool_max_bytes": 0}, {"spool_max_age": -1.0}):
        with pytest.raises(ValueError, match=next(iter(wrong))):
            Client().init(base_url=collector.url, application_id=APP_ID, **wrong)
    monkeypatch.setenv("LAYER_SPOOL_DIR", str(tmp_path / "from-env"))
    client = Client()
    client.init(base_url=collector.url, application_id=APP_ID, spool_sync="full", **FAST)
    try:
        client.append_action(client.create_session(), kind=PROMPT, data={"n": "x"})
        assert client.flush(10)
        (path,) = (tmp_path / "from-env").glob("*.spool")
        assert (tmp_path / "from-env").stat().st_mode & 0o777 == 0o700  # made by the SDK
        modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "from-env").iterdir()}
        assert set(modes.values()) == {0o600}, modes  # the file, its WAL, its lock
        with sqlite3.connect(path) as connection:
            assert connection.execute("SELECT COUNT(*) FROM events").fetchone() == (2,)
        spool = client._exporter.spool  # type: ignore[union-attr]
        assert spool is not None and spool._own is not None
        assert spool._own.file.connection.execute("PRAGMA synchronous").fetchone() == (2,)
    finally:
        client.shutdown()


def test_no_credential_reaches_the_disk(tmp_path: Path) -> None:
    """Only event bodies are written: never the Authorization header or a token."""

    class Token(AuthProvider):
        def get_headers(self) -> dict[str, str]:
            return {"Authorization": "Bearer token-that-must-stay-in-memory"}

    down = f"http://127.0.0.1:{closed_port()}"
    client = Client()
    client.init(
        base_url=down, application_id=APP_ID, auth_provider=Token(), spool_dir=str(tmp_path), **FAST
    )
    try:
        client.append_action(client.create_session(), kind=PROMPT, data={"n": "x"})
        assert wait_until(lambda: client.stats().spooled == 2)
        written = b"".join(path.read_bytes() for path in tmp_path.iterdir())
        assert b'"n":"x"' in written
        assert b"token-that-must-stay" not in written and b"Authorization" not in written
    finally:
        client.shutdown(timeout=0.5)

