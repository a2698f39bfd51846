"""The benchmark cases, one function each, each run in a fresh process.

``python benchmarks/_cases.py CASE [--quick]`` runs one case and prints its
results as one JSON line (the last line of stdout); ``benchmarks/run.py``
runs every case this way, repeats it and makes the table. Every case starts its
own server process (``_server.py``) and reads delivery counts from it: the
headline figures never come from the SDK's own counters.

Each case measures the buffered SDK and, in the same process, the synchronous
path (``sync=True``: one blocking round trip per call, as the original SDK did).
Only the public API is used, plus ``Client.stats()``.

``python benchmarks/_cases.py app-exit ...`` is the small application that the
exit cases start and time, and ``spool-app`` the one the spool's replay case
starts; neither is a case of its own.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPLICATION_ID = "benchmark-app"
KIND = "completion_prompt"
ACTIONS_PER_SESSION = 4
EVENTS_PER_SESSION = 1 + ACTIONS_PER_SESSION

#: A typical LLM action: 5 attributes, 2 messages of about 200 characters.
ATTRIBUTES: dict[str, Any] = {
    "model.id": "gpt-4o-mini",
    "model.provider": "openai",
    "temperature": 0.2,
    "max_tokens": 512,
    "user.id": "user-0042",
}
DATA: dict[str, Any] = {
    "messages": [
        {
            "role": "system",
            "content": (
                "You are a helpful travel assistant. Answer briefly, cite the tours by "
                "their code, never invent prices, and ask one clarifying question when the "
                "dates or the group size are missing from the request of the customer."
            ),
        },
        {
            "role": "user",
            "content": (
                "We are four adults and two children looking for a guided hiking tour in "
                "the Dolomites during the last week of June. Which tours would you suggest, "
                "and do any of them include mountain huts with family rooms?"
            ),
        },
    ]
}
SESSION_ATTRIBUTES = {"user.id": "user-0042", "feature": "trip-planner"}

#: Provider SDKs that ``import layer_sdk`` must not pull in.
PROVIDERS = ("openai", "anthropic", "httpx", "cohere", "mistralai", "groq", "litellm")


def env() -> dict[str, str]:
    """The environment of a child process: ``layer_sdk`` importable from the work tree."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


# -- the server process ----------------------------------------------------------


class Server:
    """A LocalCollector in a separate process (``_server.py``), driven through its stdin."""

    def __init__(self, delay: float = 0.0, hang: bool = False) -> None:
        args = [sys.executable, str(HERE / "_server.py"), "--delay", str(delay)]
        if hang:
            args.append("--hang")
        self._process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env()
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout
        self.url = self._stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"the server did not start: {self.url!r}")

    def command(self, line: str) -> str:
        """Send one command line; returns the server's one-line answer."""
        self._stdin.write(line + "\n")
        self._stdin.flush()
        return self._stdout.readline().strip()

    def count(self) -> int:
        """Events (sessions + actions) the server has stored."""
        return int(self.command("count"))

    def requests(self) -> int:
        """HTTP requests the server has read."""
        return int(self.command("requests"))

    def cpu(self) -> float:
        """CPU seconds the server process has used."""
        return float(self.command("cpu"))

    def close(self) -> None:
        """Stop the server process (waits a few seconds at most)."""
        if self._process.poll() is None:
            try:
                self.command("quit")
                self._process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dead_url() -> str:
    """A URL where nothing listens: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- measuring -------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time of this process, all threads, user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def distribution(samples_ns: Sequence[int]) -> dict[str, float]:
    """Median, p99, p99.9 and max of durations in ns, as µs."""
    ordered = sorted(samples_ns)

    def quantile(q: float) -> float:
        return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))] / 1000

    return {
        "median": quantile(0.5),
        "p90": quantile(0.9),
        "p99": quantile(0.99),
        "p999": quantile(0.999),
        "max": ordered[-1] / 1000,
        "n": len(ordered),
    }


def floor_us() -> dict[str, float]:
    """What this machine needs for the least an event must cost: the "floor" column.

    A msgspec encode of the typical action (as a dict, with its two times), an
    append to a deque, and the bare call (``Bare`` below); best of several rounds,
    µs per operation.
    """
    import collections
    import timeit
    from datetime import datetime, timezone

    import msgspec

    encoder = msgspec.json.Encoder()
    now = datetime.now(timezone.utc)
    action = {"kind": KIND, "start_time": now, "end_time": now, "attributes": ATTRIBUTES}
    action["data"] = DATA
    line: collections.deque[Any] = collections.deque(maxlen=1000)
    body = encoder.encode(action)
    rounds = 20_000

    def best(call: Callable[[], object]) -> float:
        return min(timeit.repeat(call, number=rounds, repeat=5)) / rounds * 1e6

    from layer_sdk import SessionActionRequest
    from layer_sdk._export._event import Event

    class Bare:
        """The least a Python ``append_action`` of this signature can do: take the
        call, build the struct, encode it, queue it. No check, no clock, no lock."""

        def append_action(
            self,
            session_id: str,
            *,
            kind: Any,
            start_time: Any = None,
            end_time: Any = None,
            attributes: Any = None,
            data: Any = None,
            error: Any = None,
            scanners: Any = None,
            sync: Any = None,
        ) -> None:
            struct = SessionActionRequest(kind, now, now, attributes, data)
            line.append(Event(session_id, encoder.encode(struct), False))

    bare = Bare()
    return {
        "encode_action": best(lambda: encoder.encode(action)),
        "deque_append": best(lambda: line.append(body)),
        "bare_call": best(
            lambda: bare.append_action("s", kind=KIND, attributes=ATTRIBUTES, data=DATA)
        ),
        "action_bytes": len(body),
    }


def timer_overhead_ns() -> float:
    """Median cost of the ``perf_counter_ns()`` pair around each timed call."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(20_000):
        t0 = clock()
        t1 = clock()
        samples.append(t1 - t0)
    samples.sort()
    return float(samples[len(samples) // 2])


class GCPauses:
    """Records how long each garbage collection took (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __enter__(self) -> GCPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)

    def longest_ms(self, generation: int) -> float:
        return max(self.pauses[generation], default=0.0) * 1000


def timed_full_collection() -> float:
    """How long one full ``gc.collect()`` takes, ms."""
    t0 = time.perf_counter()
    gc.collect()
    return (time.perf_counter() - t0) * 1000


def stats_dict(client: Any) -> dict[str, Any]:
    """``client.stats()`` as a plain dict."""
    stats = client.stats()
    return {
        name: getattr(stats, name)
        for name in (
            "enqueued",
            "sent",
            "dropped",
            "failed",
            "retried",
            "queued",
            "dropped_by_reason",
            "failed_by_reason",
        )
    }


def produce(client: Any, sessions: int, *, sync: bool | None = None) -> int:
    """Report ``sessions`` sessions of 4 typical actions each; returns the events made."""
    for _ in range(sessions):
        session_id = client.create_session(attributes=SESSION_ATTRIBUTES, sync=sync)
        for _ in range(ACTIONS_PER_SESSION):
            client.append_action(session_id, kind=KIND, attributes=ATTRIBUTES, data=DATA, sync=sync)
    return sessions * EVENTS_PER_SESSION


def new_client(url: str, **options: Any) -> Any:
    """A freshly initialized ``layer_sdk.Client``."""
    from layer_sdk import Client

    client = Client()
    client.init(base_url=url, application_id=APPLICATION_ID, **options)
    return client


def one_sync_call(url: str) -> tuple[float, str]:
    """How long one ``sync=True`` create blocks against ``url``, and what it raised."""
    client = new_client(url, sync=True)
    started = time.perf_counter()
    try:
        client.create_session(attributes=SESSION_ATTRIBUTES)
        error = "none"
    except Exception as exc:
        error = type(exc).__name__
    seconds = time.perf_counter() - started
    client.shutdown(timeout=0.1)
    return seconds, error


def sync_rate(client: Any, server: Server, sessions: int) -> dict[str, float]:
    """Deliver ``sessions`` sessions of 4 actions with ``sync=True`` calls: the baseline."""
    before, cpu0, t0 = server.count(), cpu_seconds(), time.perf_counter()
    made = produce(client, sessions, sync=True)
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    delivered = server.count() - before
    return {
        "events": made,
        "delivered": delivered,
        "seconds": elapsed,
        "events_per_s": delivered / elapsed,
        "us_per_event": elapsed / made * 1e6,
        "cpu_us_per_event": cpu / made * 1e6,
    }


# -- 1. caller-thread cost -------------------------------------------------------


def floor_bodies(client: Any) -> tuple[Any, Any]:
    """The structs the hot path's floor encodes: the typical action, as ``append_action``
    makes it, and the body of a session as ``create_session`` makes it.

    The session's attributes are the caller's plus those the SDK adds to every session
    (its ``_platform``: read here, not part of the public API), so that the floor
    encodes as many bytes as the call does.
    """
    from datetime import datetime, timezone

    from layer_sdk import SessionActionKind, SessionActionRequest, SessionRequest
    from layer_sdk._platform import platform_attributes

    now = datetime.now(timezone.utc)
    action = SessionActionRequest(
        kind=SessionActionKind(KIND), start_time=now, end_time=now, attributes=ATTRIBUTES, data=DATA
    )
    session = SessionRequest(
        application_id=APPLICATION_ID,
        attributes={**platform_attributes(None, None), **SESSION_ATTRIBUTES},
        session_id=client.create_session(),
    )
    return action, session


def case_hot_path(quick: bool) -> dict[str, Any]:
    """Caller-thread cost of create_session, append_action and @layer.action while exporting,
    beside the floor: msgspec's encode of the same bodies, in the same loop.

    Sessions of 4 actions are produced at a steady rate (half the throughput
    target), alternating a session of direct calls with a ``@layer.session``
    function making 4 ``@layer.action`` calls, so the worker is exporting to the
    server all along. Half way between two of them, after a pause as long, a
    floor tick makes the same calls' encodes alone: ``msgspec.json.encode`` of the
    session's body, then of the action's struct 4 times. So the floor and the
    calls are timed alike (each first after a pause, the same clock, the same
    load), and their ratio is measured side by side. Every call is timed with
    ``perf_counter_ns``. A burst of 1,000 sessions made back to back follows,
    in blocks alternating with blocks of floor encodes, for the cost with warm caches.
    """
    import msgspec

    from layer_sdk import Client

    rate = 10_000  # events/s offered
    iterations = 2_000 if quick else 6_000  # 10 events each
    warmup = 200
    sync_sessions = 60 if quick else 200
    period = 2 * EVENTS_PER_SESSION / rate

    with Server() as server:
        client = new_client(server.url)
        creates: list[int] = []
        appends: list[int] = []
        decorated: list[int] = []
        floor_creates: list[int] = []
        floor_appends: list[int] = []
        clock = time.perf_counter_ns
        encode = msgspec.json.encode
        action_struct, session_struct = floor_bodies(client)

        @client.action(kind=KIND, attributes=ATTRIBUTES)
        def call_model() -> dict[str, Any]:
            return DATA

        def make_conversation(samples: list[int]) -> Callable[[], None]:
            @client.session(attributes=SESSION_ATTRIBUTES)
            def conversation() -> None:
                for _ in range(ACTIONS_PER_SESSION):
                    t0 = clock()
                    call_model()
                    t1 = clock()
                    samples.append(t1 - t0)

            return conversation

        def floor_tick(session_samples: list[int], action_samples: list[int]) -> None:
            t0 = clock()
            encode(session_struct)
            t1 = clock()
            session_samples.append(t1 - t0)
            for _ in range(ACTIONS_PER_SESSION):
                t0 = clock()
                encode(action_struct)
                t1 = clock()
                action_samples.append(t1 - t0)

        def pause_until(due: float) -> None:
            ahead = due - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)

        def undecorated() -> dict[str, Any]:
            return DATA

        conversation = make_conversation(decorated)
        throwaway: list[int] = []
        warm_conversation = make_conversation(throwaway)
        start = time.perf_counter()
        for i in range(warmup + iterations):
            recording = i >= warmup
            c, a = (creates, appends) if recording else (throwaway, throwaway)
            t0 = clock()
            session_id = client.create_session(attributes=SESSION_ATTRIBUTES)
            t1 = clock()
            c.append(t1 - t0)
            for _ in range(ACTIONS_PER_SESSION):
                t0 = clock()
                client.append_action(session_id, kind=KIND, attributes=ATTRIBUTES, data=DATA)
                t1 = clock()
                a.append(t1 - t0)
            (conversation if recording else warm_conversation)()
            pause_until(start + (i + 0.5) * period)
            if recording:
                floor_tick(floor_creates, floor_appends)
            else:
                floor_tick(throwaway, throwaway)
            pause_until(start + (i + 1) * period)
        produced = (warmup + iterations) * 2 * EVENTS_PER_SESSION
        offered_per_s = produced / (time.perf_counter() - start)
        # The same calls back to back, without pauses: caches stay warm. Blocks of
        # 50 sessions alternate with blocks of as many floor ticks.
        burst_creates: list[int] = []
        burst_appends: list[int] = []
        burst_floor_creates: list[int] = []
        burst_floor_appends: list[int] = []
        for _ in range(20):
            for _ in range(50):
                t0 = clock()
                session_id = client.create_session(attributes=SESSION_ATTRIBUTES)
                t1 = clock()
                burst_creates.append(t1 - t0)
                for _ in range(ACTIONS_PER_SESSION):
                    t0 = clock()
                    client.append_action(session_id, kind=KIND, attributes=ATTRIBUTES, data=DATA)
                    t1 = clock()
                    burst_appends.append(t1 - t0)
            for _ in range(50):
                floor_tick(burst_floor_creates, burst_floor_appends)
        produced += 1_000 * EVENTS_PER_SESSION + 1  # the floor's session ID came from one
        delivered_all = client.flush(120)
        delivered = server.count()
        buffered_stats = stats_dict(client)

        plain: list[int] = []
        for _ in range(20_000):
            t0 = clock()
            undecorated()
            t1 = clock()
            plain.append(t1 - t0)

        # The synchronous path: one blocking round trip per call.
        sync_creates: list[int] = []
        sync_appends: list[int] = []
        for _ in range(sync_sessions):
            t0 = clock()
            session_id = client.create_session(attributes=SESSION_ATTRIBUTES, sync=True)
            t1 = clock()
            sync_creates.append(t1 - t0)
            for _ in range(ACTIONS_PER_SESSION):
                t0 = clock()
                client.append_action(
                    session_id, kind=KIND, attributes=ATTRIBUTES, data=DATA, sync=True
                )
                t1 = clock()
                sync_appends.append(t1 - t0)
        sync_client = Client()
        sync_client.init(base_url=server.url, application_id=APPLICATION_ID, sync=True)

        @sync_client.action(kind=KIND, attributes=ATTRIBUTES)
        def sync_call_model() -> dict[str, Any]:
            return DATA

        sync_decorated: list[int] = []

        @sync_client.session(attributes=SESSION_ATTRIBUTES)
        def sync_conversation() -> None:
            for _ in range(ACTIONS_PER_SESSION):
                t0 = clock()
                sync_call_model()
                t1 = clock()
                sync_decorated.append(t1 - t0)

        for _ in range(sync_sessions // 2):
            sync_conversation()
        sync_client.shutdown()
        client.shutdown()

    result = {
        "offered_events_per_s": offered_per_s,
        "produced": produced,
        "delivered": delivered,
        "all_delivered": delivered_all and delivered == produced,
        "stats": buffered_stats,
        "timer_overhead_ns": timer_overhead_ns(),
        "floor": floor_us(),
        "append_action": distribution(appends),
        "create_session": distribution(creates),
        "floor_append_action": distribution(floor_appends),
        "floor_create_session": distribution(floor_creates),
        "decorated_action": distribution(decorated),
        "undecorated_call": distribution(plain),
        "burst_append_action": distribution(burst_appends),
        "burst_create_session": distribution(burst_creates),
        "burst_floor_append_action": distribution(burst_floor_appends),
        "burst_floor_create_session": distribution(burst_floor_creates),
        "sync_append_action": distribution(sync_appends),
        "sync_create_session": distribution(sync_creates),
        "sync_decorated_action": distribution(sync_decorated),
    }
    # Each call over its floor, per repetition (run.py takes the median across them).
    for call in ("append_action", "create_session"):
        for prefix in ("", "burst_"):
            for q in ("median", "p99", "p999"):
                result[f"{prefix}{call}"][f"{q}_ratio"] = (
                    result[f"{prefix}{call}"][q] / result[f"{prefix}floor_{call}"][q]
                )
    return result


def case_firewall(quick: bool) -> dict[str, Any]:
    """Caller-thread cost of append_action with ``enable_firewall_instrumentation=True``,
    beside the plain call in the same run.

    Rounds alternate between a plain client and one with the firewall on (its
    firewall is the same local server, looking the active sessions up every
    50 ms), each round a new session of back-to-back calls, so that a drift in
    the machine's speed hits both alike. The firewall's cost is the difference
    of the medians.
    """
    rounds = 20 if quick else 40
    per_round = 250
    clock = time.perf_counter_ns
    with Server() as server:
        plain = new_client(server.url)
        guarded = new_client(
            server.url,
            firewall_base_url=server.url,
            enable_firewall_instrumentation=True,
            firewall_refresh_interval=0.05,
        )
        samples: dict[str, list[int]] = {"plain": [], "firewall": []}
        clients = {"plain": plain, "firewall": guarded}
        for i in range(rounds):
            order = ("plain", "firewall") if i % 2 else ("firewall", "plain")
            for name in order:
                client, out = clients[name], samples[name]
                session_id = client.create_session(attributes=SESSION_ATTRIBUTES)
                for _ in range(per_round):
                    t0 = clock()
                    client.append_action(session_id, kind=KIND, attributes=ATTRIBUTES, data=DATA)
                    t1 = clock()
                    out.append(t1 - t0)
        delivered = plain.flush(60) and guarded.flush(60)
        firewall_stats = guarded.firewall_stats()
        plain.shutdown()
        guarded.shutdown()
    result = {name: distribution(values) for name, values in samples.items()}
    return {
        **result,
        "cost_us": result["firewall"]["median"] - result["plain"]["median"],
        "lookups": firewall_stats.lookups,
        "lookup_failures": firewall_stats.failures,
        "all_delivered": delivered,
    }


# -- 2, 3. delivered throughput --------------------------------------------------


def _throughput(delay: float, events: int, sync_sessions: int) -> dict[str, Any]:
    """Produce ``events`` (sessions of 4) as fast as possible, then flush; count at the server."""
    with Server(delay=delay) as server:
        client = new_client(server.url)
        gc.collect()
        server_cpu0, cpu0, t0 = server.cpu(), cpu_seconds(), time.perf_counter()
        made = produce(client, events // EVENTS_PER_SESSION)
        produced_at = time.perf_counter()
        flushed = client.flush(300)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        server_cpu = server.cpu() - server_cpu0
        delivered = server.count()
        requests = server.requests()
        stats = stats_dict(client)
        sync = sync_rate(client, server, sync_sessions)
        client.shutdown()
    return {
        "events": made,
        "delivered": delivered,
        "flushed": flushed,
        "nothing_lost": flushed and delivered == made and stats["dropped"] == 0,
        "seconds": elapsed,
        "produce_seconds": produced_at - t0,
        "events_per_s": delivered / elapsed,
        "cpu_us_per_event": cpu / made * 1e6,
        "events_per_request": delivered / max(1, requests),
        "server_cpu_share": server_cpu / elapsed,
        "stats": stats,
        "sync": sync,
    }


def case_throughput(quick: bool) -> dict[str, Any]:
    """Delivered events/s and CPU per event to a local server, sessions of 4 actions."""
    return _throughput(0.0, 10_000 if quick else 40_000, 100 if quick else 300)


def case_slow_server(quick: bool) -> dict[str, Any]:
    """The same against a server that takes 20 ms to answer each request."""
    return _throughput(0.02, 5_000 if quick else 20_000, 10 if quick else 30)


# -- 3c. flushing one session while many are in flight ------------------------------


def _flush_wave(client: Any, handlers: int, scope: str) -> dict[str, Any]:
    """``handlers`` concurrent asyncio request handlers, arriving over 0.1 s, each
    recording a session of 4 actions, then awaiting ``aflush`` of its session
    (``scope="session"``) or of everything (``"everything"``); how long each waited."""
    import asyncio
    import random

    waits: list[int] = []
    flushed: list[bool] = []

    async def handler(arrival: float) -> None:
        await asyncio.sleep(arrival)
        session_id = client.create_session(attributes=SESSION_ATTRIBUTES)
        for _ in range(ACTIONS_PER_SESSION):
            client.append_action(session_id, kind=KIND, attributes=ATTRIBUTES, data=DATA)
        t0 = time.perf_counter_ns()
        done = await client.aflush(
            timeout=60, session_id=session_id if scope == "session" else None
        )
        waits.append(time.perf_counter_ns() - t0)
        flushed.append(done)

    async def wave() -> None:
        arrivals = [random.uniform(0, 0.1) for _ in range(handlers)]
        await asyncio.gather(*(handler(arrival) for arrival in arrivals))

    asyncio.run(wave())
    return {**distribution(waits), "all_true": all(flushed)}


def case_flush_concurrency(quick: bool) -> dict[str, Any]:
    """How long a request handler waits for its flush, per session or of everything.

    A web service on asyncio, against a server that takes 20 ms per request: 200
    requests arrive within 0.1 s, and each records a session of 4 actions, then
    awaits ``aflush`` before answering. Meanwhile the rest of the service (work
    that does not flush) reports 4,000 events/s from a thread of its own. Waves
    alternate between ``aflush(session_id=...)`` (this request's events) and
    ``aflush()`` (everything queued before the call: other requests' and the
    background's too). Baseline: a handler recording its session with
    ``sync=True`` (5 round trips).
    """
    import threading

    handlers, background_rate = 200, 4_000
    waves = 2 if quick else 4
    with Server(delay=0.02) as server:
        client = new_client(server.url)
        stop = threading.Event()
        background = [0]

        def produce_meanwhile() -> None:
            start = time.perf_counter()
            while not stop.is_set():
                background[0] += produce(client, 1)
                ahead = start + background[0] / background_rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)

        thread = threading.Thread(target=produce_meanwhile, daemon=True)
        thread.start()
        time.sleep(0.5)  # the background's traffic is under way
        results: dict[str, list[dict[str, Any]]] = {"session": [], "everything": []}
        for n in range(waves):
            for scope in ("session", "everything") if n % 2 == 0 else ("everything", "session"):
                results[scope].append(_flush_wave(client, handlers, scope))
                time.sleep(0.3)  # the backlog of the wave drains
        stop.set()
        thread.join()
        produced = waves * 2 * handlers * EVENTS_PER_SESSION + background[0]
        delivered_all = client.flush(60) and server.count() == produced
        sync_waits: list[int] = []
        for _ in range(10 if quick else 30):
            t0 = time.perf_counter_ns()
            produce(client, 1, sync=True)
            sync_waits.append(time.perf_counter_ns() - t0)
        client.shutdown()

    def pooled(scope: str) -> dict[str, Any]:
        waves_of = results[scope]
        return {
            **{q: statistics.median([w[q] for w in waves_of]) for q in ("median", "p90", "p99")},
            "all_true": all(w["all_true"] for w in waves_of),
        }

    session, everything = pooled("session"), pooled("everything")
    return {
        "handlers": handlers,
        "background_events_per_s": background_rate,
        "session": session,
        "everything": everything,
        "median_ratio": session["median"] / everything["median"],
        "all_delivered": delivered_all,
        "sync": distribution(sync_waits),
    }


# -- 3b. long sessions -------------------------------------------------


def _one_session(delay: float, actions: int, sessions: int, echo: bool = True) -> dict[str, Any]:
    """``actions`` typical actions over ``sessions`` sessions, appended as fast as one thread
    can, against a server ``delay`` seconds away (that echoes each request's ID on its
    answer, unless ``echo`` is False); delivered when, and in order?"""
    with Server(delay=delay) as server:
        if not echo:
            server.command("echo off")
        client = new_client(server.url)
        ids = [client.create_session(attributes=SESSION_ATTRIBUTES) for _ in range(sessions)]
        client.flush(30)  # the server knows the sessions: what follows are appended actions
        before = server.count()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        for n in range(actions):
            client.append_action(
                ids[n % sessions], kind=KIND, attributes=ATTRIBUTES, data={**DATA, "n": n}
            )
        flushed = client.flush(300)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        delivered = server.count() - before
        in_order = server.command("order") == "yes"
        requests = server.requests()
        stats = stats_dict(client)
        client.shutdown()

        # The synchronous path: one round trip per call, in order by construction.
        sync_client = new_client(server.url, sync=True)
        sync_session = sync_client.create_session()
        calls = 10 if delay >= 0.1 else 25
        t1 = time.perf_counter()
        for _ in range(calls):
            sync_client.append_action(sync_session, kind=KIND, attributes=ATTRIBUTES, data=DATA)
        sync_seconds = time.perf_counter() - t1
        sync_client.shutdown()
    return {
        "actions": actions,
        "sessions": sessions,
        "delay": delay,
        "delivered": delivered,
        "nothing_lost": flushed and delivered == actions and stats["dropped"] == 0,
        "in_order": in_order,
        "seconds": elapsed,
        "events_per_s": delivered / elapsed,
        "cpu_us_per_event": cpu / actions * 1e6,
        "requests": requests,
        "stats": stats,
        "sync": {
            "events_per_s": calls / sync_seconds,
            "seconds_for_all": actions * sync_seconds / calls,
        },
    }


def case_long_session(quick: bool) -> dict[str, Any]:
    """One session, 5,000 actions, against servers 20 ms and 100 ms away; the same
    5,000 over 100 sessions beside it; one session against servers that echo no
    request ID (whose pipelined answers are trusted only after a quiet moment)."""
    actions = 2_000 if quick else 5_000
    return {
        "one_20ms": _one_session(0.02, actions, 1),
        "one_100ms": _one_session(0.1, actions, 1),
        "many_20ms": _one_session(0.02, actions, 100),
        "one_20ms_no_echo": _one_session(0.02, actions, 1, echo=False),
        "one_100ms_no_echo": _one_session(0.1, actions, 1, echo=False),
    }


# -- 4. flood --------------------------------------------------------------------


def _flood(events: int, quick: bool) -> dict[str, Any]:
    """``events`` typical events (sessions of 4) as fast as one thread can, default settings."""
    with Server() as server:
        client = new_client(server.url)
        t0 = time.perf_counter()
        made = produce(client, events // EVENTS_PER_SESSION)
        produce_seconds = time.perf_counter() - t0
        flushed = client.flush(300)
        elapsed = time.perf_counter() - t0
        delivered = server.count()
        stats = stats_dict(client)
        sync = sync_rate(client, server, 20 if quick else 60)
        client.shutdown()
    lost = made - delivered
    return {
        "events": made,
        "delivered": delivered,
        "lost": lost,
        "flushed": flushed,
        "produce_seconds": produce_seconds,
        "produced_per_s": made / produce_seconds,
        "seconds": elapsed,
        "stats": stats,
        # stats() agrees with the server: what it calls sent arrived, the rest is
        # accounted for as dropped (refused at the door) or failed (given up on).
        "stats_agree": (
            stats["sent"] == delivered
            and stats["dropped"] + stats["enqueued"] == made
            and stats["dropped"] + stats["failed"] == lost
            and stats["queued"] == 0
        ),
        "sync": sync,
        "sync_blocked_seconds": made * sync["us_per_event"] / 1e6,
    }


def case_flood(quick: bool) -> dict[str, Any]:
    """A flood of 100,000 events: what is dropped, why, and does stats() agree."""
    return _flood(100_000, quick)


def case_flood_20k(quick: bool) -> dict[str, Any]:
    """A flood of 20,000 events with default settings must lose nothing."""
    return _flood(20_000, quick)


# -- 5. server down --------------------------------------------------------------


def case_server_down(quick: bool) -> dict[str, Any]:
    """Memory and GC pauses while the server is down and the application keeps producing.

    The count bound is raised far out of the way so that the byte bound
    (``max_queue_bytes``) is what holds memory. What the backlog adds to a full
    collection is timed like for like: before producing and at the peak, a full
    collection made right after another (the caches in the same state), so that
    the difference is the collector's work for the backlog. The first collection
    at the peak is reported too: it also pays for the caches that producing a
    million events left cold, with or without a backlog.
    """
    events = 200_000 if quick else 1_000_000
    queue_bytes = 64 * 1024 * 1024
    url = dead_url()
    client = new_client(url, max_queue_size=10_000_000, max_queue_bytes=queue_bytes)
    produce(client, 20)  # warm up: first-call costs are not the backlog's
    gc.collect()
    full_gc_before_ms = timed_full_collection()
    rss_before = peak_rss_mb()
    peak_queued_bytes = 0
    chunk = 10_000 // EVENTS_PER_SESSION
    t0 = time.perf_counter()
    with GCPauses() as pauses:
        made = 0
        while made < events:
            made += produce(client, chunk)
            peak_queued_bytes = max(peak_queued_bytes, client.stats().queued_bytes)
    produce_seconds = time.perf_counter() - t0
    rss_after = peak_rss_mb()
    stats = stats_dict(client)
    full_gc_first_at_peak_ms = timed_full_collection()
    full_gc_at_peak_ms = timed_full_collection()
    client.shutdown(timeout=0.1)

    # The synchronous path against the same dead server: nothing is held, but
    # each call blocks through its retries and then raises.
    sync_seconds, sync_error = one_sync_call(url)
    return {
        "events": made,
        "produce_seconds": produce_seconds,
        "queue_bytes_bound_mb": queue_bytes / 2**20,
        "peak_queued_mb": peak_queued_bytes / 2**20,
        "rss_before_mb": rss_before,
        "peak_rss_mb": rss_after,
        "rss_growth_mb": rss_after - rss_before,
        "gc2_count": len(pauses.pauses[2]),
        "gc2_longest_ms": pauses.longest_ms(2),
        "gc_any_longest_ms": max(pauses.longest_ms(g) for g in (0, 1, 2)),
        "full_gc_before_ms": full_gc_before_ms,
        "full_gc_at_peak_ms": full_gc_at_peak_ms,
        "full_gc_first_at_peak_ms": full_gc_first_at_peak_ms,
        "full_gc_backlog_ms": full_gc_at_peak_ms - full_gc_before_ms,
        "stats": stats,
        "sync_call_seconds": sync_seconds,
        "sync_error": sync_error,
    }


# -- 5b. outage and fleet backpressure ----------------------------------


def _paced(client: Any, sessions_per_s: float, seconds: float) -> int:
    """Produce sessions of 4 actions at a steady rate for ``seconds``; returns the events."""
    made = 0
    started = time.perf_counter()
    interval = 1 / sessions_per_s
    n = 0
    while (now := time.perf_counter()) < started + seconds:
        due = started + n * interval
        if due > now:
            time.sleep(due - now)
        made += produce(client, 1)
        n += 1
    return made


def case_outage(quick: bool) -> dict[str, Any]:
    """The API answers 503 for a minute while the app reports 200 sessions/s, then recovers.

    Counts the requests that reached the API and the process CPU during the
    outage, and how long after the API came back everything was delivered.
    ``max_queue_size`` is raised so that the minute's 60,000 events fit in the
    queue (the byte bound, 64 MB by default, still holds them).
    """
    outage = 10.0 if quick else 60.0
    rate = 200.0
    with Server() as server:
        client = new_client(server.url, max_queue_size=200_000)
        produce(client, 20)
        client.flush(10)
        server.command("clear")
        server.command(f"fail {outage} 503")
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        made = _paced(client, rate, outage)
        cpu = cpu_seconds() - cpu0
        requests_during = server.requests()
        up_at = time.perf_counter()
        flushed = client.flush(300)
        recovered = time.perf_counter() - up_at
        delivered = server.count()
        stats = stats_dict(client)
        client.shutdown()

        # The synchronous path during an outage: each call retries 3 times, then raises.
        server.command(f"fail {outage} 503")
        sync_seconds, sync_error = one_sync_call(server.url)
    elapsed = up_at - t0
    return {
        "outage_seconds": outage,
        "sessions_per_s": rate,
        "events": made,
        "delivered": delivered,
        "nothing_lost": flushed and delivered == made and stats["failed"] == stats["dropped"] == 0,
        "requests_during_outage": requests_during,
        "cpu_seconds_during_outage": cpu,
        "cpu_share_during_outage": cpu / elapsed,
        "cpu_us_per_event_during_outage": cpu / made * 1e6,
        "recovery_seconds": recovered,
        "stats": stats,
        "sync_call_seconds": sync_seconds,
        "sync_error": sync_error,
    }


def _partial(fraction: float, events: int, limit: float) -> dict[str, Any]:
    """``events`` (sessions of 4) as fast as one thread can, while a fraction of the
    answers are 503 at random; flushed within ``limit`` seconds."""
    with Server() as server:
        server.command(f"rate {fraction}")
        client = new_client(server.url)
        t0 = time.perf_counter()
        made = produce(client, events // EVENTS_PER_SESSION)
        flushed = client.flush(limit)
        elapsed = time.perf_counter() - t0
        delivered = server.count()
        requests = server.requests()
        stats = stats_dict(client)
        client.shutdown(timeout=0.1)
    return {
        "fraction": fraction,
        "events": made,
        "delivered": delivered,
        "nothing_lost": flushed and delivered == made,
        "seconds": elapsed,
        "events_per_s": delivered / elapsed,
        "requests": requests,
        "stats": stats,
    }


def case_partial_failures(quick: bool) -> dict[str, Any]:
    """8,000 events while 20 % (then 50, 75, 90 %) of the answers are 503: delivery should
    slow by about that fraction, not stop. The same with none failing, for reference."""
    return {
        "none": _partial(0.0, 8_000, 60),
        "fifth": _partial(0.2, 8_000, 60),
        "half": _partial(0.5, 8_000, 60),
        "three_quarters": _partial(0.75, 8_000, 60),
        "nine_tenths": _partial(0.9, 8_000, 60),
    }


def fleet_app(url: str, seconds: float, sessions_per_s: float) -> None:
    """One process of the fleet case: report at a steady rate, flush, print what it made."""
    client = new_client(url)
    made = _paced(client, sessions_per_s, seconds)
    flushed = client.flush(120)
    print(json.dumps({"events": made, "flushed": flushed, "stats": stats_dict(client)}))


def case_fleet(quick: bool) -> dict[str, Any]:
    """Four processes report through a window of 429 + Retry-After: do they back off together?

    The API answers every request with 429 and ``Retry-After`` equal to the
    window for ``window`` seconds. Counts the requests that reached it in the
    window (each of them refused), and whether everything was delivered after.
    """
    processes, window, rate = 4, 5.0 if quick else 10.0, 50.0
    with Server() as server:
        server.command(f"fail {window} 429 {window}")
        started = time.perf_counter()
        args = [sys.executable, str(Path(__file__).resolve()), "fleet-app", server.url]
        args += [str(window + 2.0), str(rate)]
        apps = [
            subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env())
            for _ in range(processes)
        ]
        time.sleep(max(0.0, started + window - time.perf_counter()))
        refused_in_window = server.requests()
        reports = []
        for app in apps:
            out, _ = app.communicate(timeout=180)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        delivered = server.count()
    made = sum(report["events"] for report in reports)
    return {
        "processes": processes,
        "window_seconds": window,
        "events": made,
        "delivered": delivered,
        "nothing_lost": delivered == made and all(report["flushed"] for report in reports),
        "requests_in_window": refused_in_window,
        "requests_in_window_per_process": refused_in_window / processes,
        "sessions_in_window_per_process": rate * window,
        "seconds": time.perf_counter() - started,
    }


# -- 6. exit ---------------------------------------------------------------------


def app_exit(url: str, events: int, shutdown_timeout: float, sync: bool) -> None:
    """The application timed by the exit cases: report, print when done, return (and exit)."""
    from layer_sdk import layer

    layer.init(
        base_url=url, application_id=APPLICATION_ID, shutdown_timeout=shutdown_timeout, sync=sync
    )
    t0 = time.monotonic()
    produce(layer, events // EVENTS_PER_SESSION)
    done = time.monotonic()
    queued = layer.stats().queued
    print(json.dumps({"done": time.monotonic(), "calls_seconds": done - t0, "queued": queued}))
    sys.stdout.flush()
    # Returning ends the interpreter: the SDK's atexit drain runs now.


def _run_app(url: str, events: int, shutdown_timeout: float, sync: bool, limit: float) -> dict:
    """Start the application, time its exit (CLOCK_MONOTONIC is system-wide on Linux)."""
    args = [sys.executable, str(Path(__file__).resolve()), "app-exit", url, str(events)]
    args += [str(shutdown_timeout), "--sync"] if sync else [str(shutdown_timeout)]
    started = time.monotonic()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env())
    assert process.stdout is not None
    try:
        process.wait(limit)
        killed = False
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        killed = True
    ended = time.monotonic()
    line = process.stdout.read().strip().splitlines()
    report = json.loads(line[-1]) if line else {}
    return {
        "killed": killed,
        "returncode": process.returncode,
        "queued_at_exit": report.get("queued"),
        "calls_seconds": report.get("calls_seconds"),
        "exit_seconds": ended - report["done"] if "done" in report else None,
        "total_seconds": ended - started,
    }


def case_exit_healthy(quick: bool) -> dict[str, Any]:
    """A process exits with 10,000 events queued and a healthy server: all delivered?"""
    events = 10_000
    with Server() as server:
        buffered = _run_app(server.url, events, 5.0, sync=False, limit=60)
        buffered["delivered"] = server.count()
        server.command("clear")
        sync_events = 500 if quick else 1_000
        sync = _run_app(server.url, sync_events, 5.0, sync=True, limit=120)
        sync["delivered"] = server.count()
        sync["events"] = sync_events
        sync["blocked_seconds_for_10k"] = sync["calls_seconds"] * events / sync_events
    return {"events": events, **buffered, "sync": sync}


def case_exit_hung(quick: bool) -> dict[str, Any]:
    """A process exits with 10,000 events queued and a hung server: exit within the bound?"""
    events = 10_000
    shutdown_timeout = 1.0
    with Server(hang=True) as server:
        buffered = _run_app(server.url, events, shutdown_timeout, sync=False, limit=30)
        # The synchronous path with a hung server: one call, default timeouts,
        # given a few seconds before it is killed.
        sync_limit = shutdown_timeout + 3.0
        sync = _run_app(
            server.url, EVENTS_PER_SESSION, shutdown_timeout, sync=True, limit=sync_limit
        )
        sync["limit_seconds"] = sync_limit
        server.command("release")
    return {
        "events": events,
        "shutdown_timeout": shutdown_timeout,
        "bound_seconds": shutdown_timeout + 0.5,
        **buffered,
        "sync": sync,
    }


# -- 7. import -------------------------------------------------------------------

_IMPORT_PROBE = """
import json, sys, time
before = set(sys.modules)
t0 = time.perf_counter()
import layer_sdk
elapsed = time.perf_counter() - t0
added = set(sys.modules) - before
print(json.dumps({
    "seconds": elapsed,
    "modules_added": len(added),
    "providers": sorted(name for name in added if name.split(".")[0] in %r),
    "requests_imported": "requests" in sys.modules,
    "version": layer_sdk.__version__,
}))
"""


def _probe(code: str, environ: dict[str, str]) -> Any:
    """Run ``code`` in a fresh interpreter; its last line of output, decoded as JSON."""
    output = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def case_import(quick: bool) -> dict[str, Any]:
    """``import layer_sdk`` time in fresh interpreters, and whether provider SDKs came along.

    Bytecode is cached (in a temporary ``PYTHONPYCACHEPREFIX``, warmed by one
    run first) as it would be in an installed package. Provider SDKs that are
    not installed are stood in for by empty stub packages on ``sys.path``, so an
    eager ``import openai`` would show up all the same.
    """
    probe = _IMPORT_PROBE % (PROVIDERS,)
    requests_probe = (
        "import time; t = time.perf_counter(); import requests; print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as stubs:
        environ = env()
        environ.pop("PYTHONDONTWRITEBYTECODE", None)
        environ["PYTHONPYCACHEPREFIX"] = cache
        _probe(probe, environ)  # compiles into the cache
        runs = [_probe(probe, environ) for _ in range(5 if quick else 11)]
        _probe(requests_probe, environ)
        requests_seconds = sorted(_probe(requests_probe, environ) for _ in range(5))

        installed = []
        for name in PROVIDERS:
            if importlib.util.find_spec(name) is not None:
                installed.append(name)
            else:
                (Path(stubs) / name).mkdir()
                (Path(stubs) / name / "__init__.py").write_text("")
        stub_environ = {**environ, "PYTHONPATH": f"{environ['PYTHONPATH']}{os.pathsep}{stubs}"}
        with_stubs = _probe(probe, stub_environ)
    seconds = sorted(run["seconds"] for run in runs)
    providers = sorted({p for run in [*runs, with_stubs] for p in run["providers"]})
    return {
        "ms": seconds[len(seconds) // 2] * 1000,
        "runs": len(runs),
        "modules_added": runs[0]["modules_added"],
        "requests_imported": runs[0]["requests_imported"],
        "providers_imported": providers,
        "providers_installed": installed,
        "providers_stubbed": [p for p in PROVIDERS if p not in installed],
        "version": runs[0]["version"],
        # The reference point: the HTTP library the original SDK was built on.
        "import_requests_ms": requests_seconds[len(requests_seconds) // 2] * 1000,
    }


# -- 8. the durable spool (spool_dir) ---------------------------------------------


def _timed_sessions(
    client: Any, sessions: int, rate: float, creates: list[int], appends: list[int]
) -> None:
    """``sessions`` sessions of 4 typical actions at ``rate`` events/s, each call timed."""
    clock = time.perf_counter_ns
    start = time.perf_counter()
    for i in range(sessions):
        t0 = clock()
        session_id = client.create_session(attributes=SESSION_ATTRIBUTES)
        t1 = clock()
        creates.append(t1 - t0)
        for _ in range(ACTIONS_PER_SESSION):
            t0 = clock()
            client.append_action(session_id, kind=KIND, attributes=ATTRIBUTES, data=DATA)
            t1 = clock()
            appends.append(t1 - t0)
        ahead = start + (i + 1) * EVENTS_PER_SESSION / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)


def case_spool_hot_path(quick: bool) -> dict[str, Any]:
    """Caller-thread cost with the spool on and off, in alternating blocks of one run.

    Two clients report to the same server: one keeps its queue in memory, the
    other with ``spool_dir`` (a temporary directory, ``spool_sync="normal"``).
    Blocks of sessions of 4 actions go to each in turn, at 10,000 events/s, so
    that the spool's thread writes (and deletes) while the calls are timed, and
    whatever else the machine does falls on both alike.
    """
    blocks = 6 if quick else 16
    sessions = 200 if quick else 400
    rate = 10_000
    with Server() as server, tempfile.TemporaryDirectory() as directory:
        memory = new_client(server.url)
        spooled = new_client(server.url, spool_dir=directory)
        samples: dict[str, tuple[list[int], list[int]]] = {"memory": ([], []), "spool": ([], [])}
        throwaway: tuple[list[int], list[int]] = ([], [])
        for client in (memory, spooled):  # warm-up
            _timed_sessions(client, 100, rate, *throwaway)
        for block in range(blocks):
            name, client = ("memory", memory) if block % 2 == 0 else ("spool", spooled)
            _timed_sessions(client, sessions, rate, *samples[name])
        made = (2 * 100 + blocks * sessions) * EVENTS_PER_SESSION
        flushed = memory.flush(60) and spooled.flush(60)
        delivered = server.count()
        spool_stats = spooled.stats()
        memory.shutdown()
        spooled.shutdown()
    result: dict[str, Any] = {
        name: {
            "create_session": distribution(creates),
            "append_action": distribution(appends),
        }
        for name, (creates, appends) in samples.items()
    }
    for metric in ("median", "p99"):
        on, off = (result[n]["append_action"][metric] for n in ("spool", "memory"))
        result[f"append_{metric}_ratio"] = on / off
    result.update(
        events=made,
        delivered=delivered,
        nothing_lost=flushed and delivered == made,
        spool_failed=spool_stats.failed,
    )
    return result


def case_spool_throughput(quick: bool) -> dict[str, Any]:
    """Delivered events/s to a local server with the spool on and off, in one run.

    As the throughput case: sessions of 4 actions produced as fast as one
    thread can, then flushed; counted at the server. Each client delivers its
    share alone (in memory first, then with the spool, then once more each), so
    that both meet the same server and machine; the better of each pair counts.
    """
    events = 10_000 if quick else 40_000
    figures: dict[str, list[dict[str, float]]] = {"memory": [], "spool": []}
    with Server() as server, tempfile.TemporaryDirectory() as directory:
        for name in ("memory", "spool", "memory", "spool"):
            options = {"spool_dir": directory} if name == "spool" else {}
            client = new_client(server.url, **options)
            gc.collect()
            before, cpu0, t0 = server.count(), cpu_seconds(), time.perf_counter()
            made = produce(client, events // EVENTS_PER_SESSION)
            flushed = client.flush(300)
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
            delivered = server.count() - before
            client.shutdown()
            figures[name].append(
                {
                    "events_per_s": delivered / elapsed,
                    "cpu_us_per_event": cpu / made * 1e6,
                    "nothing_lost": float(flushed and delivered == made),
                }
            )
    best = {name: max(runs, key=lambda run: run["events_per_s"]) for name, runs in figures.items()}
    return {
        "events": events,
        "memory": best["memory"],
        "spool": best["spool"],
        "ratio": best["spool"]["events_per_s"] / best["memory"]["events_per_s"],
        "nothing_lost": all(run["nothing_lost"] for runs in figures.values() for run in runs),
    }


def spool_app(directory: str, sessions: int) -> None:
    """What the replay case starts: reports ``sessions`` sessions through a spool while the
    API is unreachable, then ends as a crash would (no shutdown, no exit hooks)."""
    client = new_client(dead_url(), spool_dir=directory)
    made = produce(client, sessions)
    deadline = time.monotonic() + 120
    while client.stats().spooled < made and time.monotonic() < deadline:
        time.sleep(0.01)
    sys.stdout.flush()
    os._exit(0)


def case_spool_replay(quick: bool) -> dict[str, Any]:
    """How fast a new process delivers what a crashed one left in the spool.

    A process reports sessions of 4 actions through a spool while the API is
    unreachable, and ends without a word (``os._exit``, as after ``kill -9``).
    A new client on the same directory, against a local server, replays them:
    from its ``init()`` until the server counted them all.
    """
    sessions = 2_000 if quick else 8_000
    events = sessions * EVENTS_PER_SESSION
    with Server() as server, tempfile.TemporaryDirectory() as directory:
        subprocess.run(
            [sys.executable, str(Path(__file__)), "spool-app", directory, str(sessions)],
            env=env(),
            check=True,
            timeout=300,
        )
        spooled = sum(
            os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)
        )
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        client = new_client(server.url, spool_dir=directory)
        while server.count() < events and time.perf_counter() - t0 < 120:
            time.sleep(0.005)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        delivered = server.count()
        replayed = client.stats().replayed
        client.shutdown()
    return {
        "events": events,
        "delivered": delivered,
        "replayed": replayed,
        "nothing_lost": delivered == events == replayed,
        "seconds": elapsed,
        "events_per_s": delivered / elapsed,
        "cpu_us_per_event": cpu / events * 1e6,
        "spool_mb": spooled / 2**20,
    }


CASES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "hot_path": case_hot_path,
    "firewall": case_firewall,
    "throughput": case_throughput,
    "slow_server": case_slow_server,
    "flush_concurrency": case_flush_concurrency,
    "long_session": case_long_session,
    "flood": case_flood,
    "flood_20k": case_flood_20k,
    "server_down": case_server_down,
    "outage": case_outage,
    "fleet": case_fleet,
    "partial_failures": case_partial_failures,
    "exit_healthy": case_exit_healthy,
    "exit_hung": case_exit_hung,
    "import": case_import,
    "spool_hot_path": case_spool_hot_path,
    "spool_throughput": case_spool_throughput,
    "spool_replay": case_spool_replay,
}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fleet-app"]:
        url, seconds, rate = argv[1], float(argv[2]), float(argv[3])
        fleet_app(url, seconds, rate)
        return
    if argv[:1] == ["spool-app"]:
        spool_app(argv[1], int(argv[2]))
        return
    if argv[:1] == ["app-exit"]:
        parser = argparse.ArgumentParser(prog="_cases.py app-exit")
        parser.add_argument("url")
        parser.add_argument("events", type=int)
        parser.add_argument("shutdown_timeout", type=float)
        parser.add_argument("--sync", action="store_true")
        options = parser.parse_args(argv[1:])
        app_exit(options.url, options.events, options.shutdown_timeout, options.sync)
        return
    parser = argparse.ArgumentParser(description="Run one benchmark case; print a JSON line.")
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    options = parser.parse_args(argv)
    started = time.perf_counter()
    result = CASES[options.case](options.quick)
    result["case_seconds"] = time.perf_counter() - started
    print(json.dumps(result))


if __name__ == "__main__":
    main()
