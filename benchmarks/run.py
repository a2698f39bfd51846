"""Measure every figure the SDK promises and print them as one markdown table.

    python benchmarks/run.py [--quick] [--write] [--case NAME ...]
    python benchmarks/run.py --spool [--quick] [--write]

Each case of ``_cases.py`` runs in a fresh subprocess (with its own server
process), 3 times (once with ``--quick``); the table shows the median of the
repetitions, beside the synchronous path (``sync=True``, one blocking round
trip per call) measured in the same runs, the target, and whether it was met.
``--write`` also saves the table to ``benchmarks/RESULTS.md``.

``--spool`` runs the durable spool's cases instead (the spool on beside the
spool off, in the same runs) and ``--write`` then saves their table as its own
section of ``RESULTS.md``, between its markers, leaving the rest as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = (
    "hot_path",
    "firewall",
    "throughput",
    "slow_server",
    "flush_concurrency",
    "long_session",
    "flood",
    "flood_20k",
    "server_down",
    "outage",
    "fleet",
    "partial_failures",
    "exit_healthy",
    "exit_hung",
    "import",
)
#: The durable spool's cases (``--spool``): a section of RESULTS.md of their own.
SPOOL_CASES = ("spool_hot_path", "spool_throughput", "spool_replay")
SPOOL_BEGIN = "<!-- spool: begin -->"
SPOOL_END = "<!-- spool: end -->"

Result = dict[str, Any]


# -- running the cases -----------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of a case: ``layer_sdk`` importable from the work tree."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)}


def run_case(name: str, quick: bool, timeout: float) -> Result:
    """One repetition of one case in a fresh interpreter; its JSON line, or ``{"error": ...}``."""
    args = [sys.executable, str(HERE / "_cases.py"), name, *(["--quick"] if quick else [])]
    try:
        done = subprocess.run(
            args, env=child_env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit status {done.returncode}: {' | '.join(tail)}"}
    result: Result = json.loads(lines[-1])
    return result


def merge(runs: Sequence[Any]) -> Any:
    """Median of numbers across repetitions; ``all`` of booleans; dicts merged key by key."""
    first = runs[0]
    if isinstance(first, bool):
        return all(runs)
    if isinstance(first, (int, float)) and all(isinstance(r, (int, float)) for r in runs):
        return statistics.median(runs)
    if isinstance(first, dict) and all(isinstance(r, dict) for r in runs):
        keys = {key for run in runs for key in run}
        return {
            key: merge([run[key] for run in runs if key in run])
            for key in keys
            if any(key in run for run in runs)
        }
    return first  # lists, strings, None: the first repetition's


# -- the table -------------------------------------------------------------------


def get(result: Result, path: str) -> Any:
    """``result["a"]["b"]`` for ``path="a.b"``; None where something is missing."""
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def num(value: Any, unit: str = "") -> str:
    """A number for the table: thousands separated, a few significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: how to read its figures from a case's merged result."""

    source: str  # the case of _cases.py whose result it reads
    case: str
    metric: str
    value: Callable[[Result], str]
    baseline: Callable[[Result], str]
    target: str = "reported"
    met: Callable[[Result], bool] | None = None


def us(path: str) -> Callable[[Result], str]:
    return lambda r: num(get(r, path), "µs")


def at_most(path: str, limit: float) -> Callable[[Result], bool]:
    return lambda r: get(r, path) is not None and get(r, path) <= limit


def at_least(path: str, limit: float) -> Callable[[Result], bool]:
    return lambda r: get(r, path) is not None and get(r, path) >= limit


def _decorator_overhead(r: Result, prefix: str = "") -> float | None:
    decorated = get(r, f"{prefix}decorated_action.median")
    plain = get(r, f"{prefix}append_action.median")
    return None if decorated is None or plain is None else decorated - plain


def _bare_over_encode(r: Result) -> float | None:
    bare, encode = get(r, "floor.bare_call"), get(r, "floor.encode_action")
    return None if bare is None or not encode else bare / encode


def _waits_ms(r: Result, scope: str, quantiles: Sequence[str] = ("median", "p90", "p99")) -> str:
    """Waits recorded in µs, shown in ms."""
    values = [get(r, f"{scope}.{q}") for q in quantiles]
    return " / ".join(num(None if v is None else v / 1000) for v in values) + " ms"


def _rss_bound(r: Result) -> float:
    return float(get(r, "queue_bytes_bound_mb") or 0) + 20


def _flood_losses(r: Result) -> str:
    stats = get(r, "stats") or {}
    reasons = {**stats.get("dropped_by_reason", {}), **stats.get("failed_by_reason", {})}
    why = ", ".join(f"{reason} {count:,.0f}" for reason, count in sorted(reasons.items()))
    return f"{num(get(r, 'lost'))} of {num(get(r, 'events'))} ({why or 'none'})"


def _sync_flood(r: Result) -> str:
    return f"0 lost; caller blocked {num(get(r, 'sync_blocked_seconds'), 's')}"


def _sync_hung(r: Result) -> str:
    sync = get(r, "sync") or {}
    if sync.get("killed"):
        return f"one call still blocked after {num(sync.get('limit_seconds'), 's')} (killed)"
    return f"one call blocked {num(sync.get('total_seconds'), 's')}"


FLUSHES = "200 handlers flush at once, 20 ms server, 4,000 other events/s"
OUTAGE = "API answers 503 for 60 s (quick: 10 s), 200 sessions/s"

ROWS: tuple[Row, ...] = (
    # 1. caller-thread cost, while the worker exports
    Row("hot_path", "hot path", "`append_action` median", us("append_action.median"),
        us("sync_append_action.median"), "≤ 3 µs", at_most("append_action.median", 3)),
    Row("hot_path", "hot path", "`append_action` p99", us("append_action.p99"),
        us("sync_append_action.p99"), "≤ 15 µs", at_most("append_action.p99", 15)),
    Row("hot_path", "hot path", "`append_action` p99.9", us("append_action.p999"),
        us("sync_append_action.p999"), "≤ 1,000 µs", at_most("append_action.p999", 1000)),
    Row("hot_path", "hot path", "`append_action` max", us("append_action.max"),
        us("sync_append_action.max")),
    Row("hot_path", "hot path", "`create_session` median", us("create_session.median"),
        us("sync_create_session.median"), "≤ 4 µs", at_most("create_session.median", 4)),
    Row("hot_path", "hot path", "`create_session` p99 / p99.9 / max",
        lambda r: " / ".join(num(get(r, f"create_session.{q}")) for q in ("p99", "p999", "max"))
        + " µs",
        lambda r: " / ".join(
            num(get(r, f"sync_create_session.{q}")) for q in ("p99", "p999", "max")
        ) + " µs"),
    Row("hot_path", "hot path, beside the floor",
        "floor in the same loop: msgspec encode of the action's struct, median / p99 / p99.9",
        lambda r: " / ".join(
            num(get(r, f"floor_append_action.{q}")) for q in ("median", "p99", "p999")
        ) + " µs",
        lambda r: "n/a"),
    Row("hot_path", "hot path, beside the floor", "`append_action` median over the floor's",
        lambda r: num(get(r, "append_action.median_ratio"), "x"), lambda r: "n/a", "≤ 1.5x",
        at_most("append_action.median_ratio", 1.5)),
    Row("hot_path", "hot path, beside the floor", "`append_action` p99 over the floor's",
        lambda r: num(get(r, "append_action.p99_ratio"), "x"), lambda r: "n/a", "≤ 3x",
        at_most("append_action.p99_ratio", 3)),
    Row("hot_path", "hot path, beside the floor",
        "floor in the same loop: msgspec encode of a session's body, median / p99 / p99.9",
        lambda r: " / ".join(
            num(get(r, f"floor_create_session.{q}")) for q in ("median", "p99", "p999")
        ) + " µs",
        lambda r: "n/a"),
    Row("hot_path", "hot path, beside the floor", "`create_session` median over the floor's",
        lambda r: num(get(r, "create_session.median_ratio"), "x"), lambda r: "n/a", "≤ 2x",
        at_most("create_session.median_ratio", 2)),
    Row("hot_path", "hot path", "p99.9 of `append_action` / `create_session` while exporting",
        lambda r: f"{num(get(r, 'append_action.p999'))} / {num(get(r, 'create_session.p999'))} µs",
        lambda r: "n/a", "≤ 50 µs each",
        lambda r: (get(r, "append_action.p999") or 1e9) <= 50
        and (get(r, "create_session.p999") or 1e9) <= 50),
    Row("hot_path", "hot path", "`append_action` / `create_session` median, back to back",
        lambda r: f"{num(get(r, 'burst_append_action.median'))} / "
        f"{num(get(r, 'burst_create_session.median'))} µs",
        lambda r: "n/a"),
    Row("hot_path", "hot path", "back to back, over the floor's (blocks alternating in one loop)",
        lambda r: f"{num(get(r, 'burst_append_action.median_ratio'), 'x')} / "
        f"{num(get(r, 'burst_create_session.median_ratio'), 'x')}",
        lambda r: "n/a"),
    Row("hot_path", "hot path", "floor alone (best of 5): encode of the action; deque append",
        lambda r: f"{num(get(r, 'floor.encode_action'))}; {num(get(r, 'floor.deque_append'))} µs",
        lambda r: "n/a"),
    Row("hot_path", "hot path",
        "the least a Python `append_action` can do (call, struct, encode, queue; no check,"
        " clock or lock), best of 5; over the encode alone",
        lambda r: f"{num(get(r, 'floor.bare_call'))} µs; {num(_bare_over_encode(r))} x",
        lambda r: "n/a"),
    Row("hot_path", "hot path", "`@layer.action` call median / p99 / p99.9 / max",
        lambda r: " / ".join(
            num(get(r, f"decorated_action.{q}")) for q in ("median", "p99", "p999", "max")
        ) + " µs",
        lambda r: " / ".join(
            num(get(r, f"sync_decorated_action.{q}")) for q in ("median", "p99", "p999", "max")
        ) + " µs"),
    Row("hot_path", "hot path", "decorator overhead (decorated minus `append_action`, medians)",
        lambda r: num(_decorator_overhead(r), "µs"),
        lambda r: num(_decorator_overhead(r, "sync_"), "µs"), "≤ 2 µs",
        lambda r: (_decorator_overhead(r) or 99) <= 2),
    Row("firewall", "hot path, firewall on", "`append_action` median, firewall on / off, same run",
        lambda r: f"{num(get(r, 'firewall.median'))} / {num(get(r, 'plain.median'))} µs",
        lambda r: "n/a (the original: one lookup round trip per call)"),
    Row("firewall", "hot path, firewall on",
        "firewall cost on `append_action` (difference of medians)",
        us("cost_us"), lambda r: "n/a", "≤ 1 µs", at_most("cost_us", 1)),
    Row("firewall", "hot path, firewall on", "`append_action` p99 firewall on / off",
        lambda r: f"{num(get(r, 'firewall.p99'))} / {num(get(r, 'plain.p99'))} µs",
        lambda r: "n/a"),
    Row("hot_path", "hot path", "load offered meanwhile (events/s, all delivered?)",
        lambda r: f"{num(get(r, 'offered_events_per_s'))}, {num(get(r, 'all_delivered'))}",
        lambda r: "n/a", "all delivered", lambda r: bool(get(r, "all_delivered"))),
    # 2. throughput to a local server
    Row("throughput", "throughput, local server", "delivered events/s (counted at the server)",
        lambda r: num(get(r, "events_per_s")), lambda r: num(get(r, "sync.events_per_s")),
        "≥ 20,000", at_least("events_per_s", 20_000)),
    Row("throughput", "throughput, local server", "process CPU per event",
        us("cpu_us_per_event"), us("sync.cpu_us_per_event"), "≤ 40 µs",
        at_most("cpu_us_per_event", 40)),
    Row("throughput", "throughput, local server", "nothing lost (server count = produced)",
        lambda r: num(get(r, "nothing_lost")), lambda r: "yes", "yes",
        lambda r: bool(get(r, "nothing_lost"))),
    Row("throughput", "throughput, local server", "events per request; server CPU share",
        lambda r: f"{num(get(r, 'events_per_request'))}; {num(get(r, 'server_cpu_share'))}",
        lambda r: "1"),
    # 3. throughput to a slow server
    Row("slow_server", "throughput, 20 ms server", "delivered events/s (counted at the server)",
        lambda r: num(get(r, "events_per_s")), lambda r: num(get(r, "sync.events_per_s")),
        "≥ 5,000", at_least("events_per_s", 5_000)),
    Row("slow_server", "throughput, 20 ms server", "process CPU per event",
        us("cpu_us_per_event"), us("sync.cpu_us_per_event")),
    # 3c. a request handler's flush, of its session or of everything
    Row("flush_concurrency", FLUSHES, "`aflush(session_id=...)` wait, median / p90 / p99",
        lambda r: _waits_ms(r, "session"),
        lambda r: f"{_waits_ms(r, 'sync', ('median',))} (its session with `sync=True`)",
        "all delivered",
        lambda r: bool(get(r, "session.all_true")) and bool(get(r, "all_delivered"))),
    Row("flush_concurrency", FLUSHES, "`aflush()` (everything) wait, median / p90 / p99",
        lambda r: _waits_ms(r, "everything"), lambda r: "n/a"),
    Row("flush_concurrency", FLUSHES, "a session's flush over a flush of everything (medians)",
        lambda r: num(get(r, "median_ratio"), "x"), lambda r: "n/a"),
    # 3b. long sessions
    *(
        Row("long_session", f"{label}", "delivered in (events/s); in append order?",
            lambda r, key=key: f"{num(get(r, f'{key}.seconds'), 's')} "
            f"({num(get(r, f'{key}.events_per_s'))}); {num(get(r, f'{key}.in_order'))}",
            lambda r, key=key: f"{num(get(r, f'{key}.sync.seconds_for_all'), 's')} "
            f"({num(get(r, f'{key}.sync.events_per_s'))})",
            target,
            lambda r, key=key, limit=limit: bool(get(r, f"{key}.in_order"))
            and bool(get(r, f"{key}.nothing_lost"))
            and (get(r, f"{key}.events_per_s") or 0) >= limit)
        for key, label, target, limit in (
            ("one_20ms", "one session of 5,000 actions, 20 ms server",
             "≤ 1.5 s, in order", 5_000 / 1.5),
            ("one_100ms", "one session of 5,000 actions, 100 ms server",
             "≥ 2,000/s, in order", 2_000),
            ("many_20ms", "5,000 actions over 100 sessions, 20 ms server",
             "in order", 0),
            ("one_20ms_no_echo", "one session of 5,000 actions, 20 ms server echoing no "
             "request ID", "in order", 0),
            ("one_100ms_no_echo", "one session of 5,000 actions, 100 ms server echoing no "
             "request ID", "in order", 0),
        )
    ),
    # 4. flood
    Row("flood", "flood of 100,000", "lost (and why)", _flood_losses, _sync_flood),
    Row("flood", "flood of 100,000", "`stats()` agrees exactly with the server",
        lambda r: f"{num(get(r, 'stats_agree'))} (sent {num(get(r, 'stats.sent'))}, "
        f"server {num(get(r, 'delivered'))})",
        lambda r: "n/a", "yes", lambda r: bool(get(r, "stats_agree"))),
    Row("flood", "flood of 100,000", "produced per second (one thread)",
        lambda r: num(get(r, "produced_per_s")), lambda r: num(get(r, "sync.events_per_s"))),
    Row("flood_20k", "flood of 20,000", "lost", _flood_losses, _sync_flood, "0",
        lambda r: get(r, "lost") == 0 and bool(get(r, "stats_agree"))),
    # 5. server down
    Row("server_down", "server down", "peak RSS growth vs `max_queue_bytes`",
        lambda r: f"{num(get(r, 'rss_growth_mb'), 'MB')} (queue held "
        f"{num(get(r, 'peak_queued_mb'), 'MB')}, {num(get(r, 'events'))} events produced)",
        lambda r: f"nothing held; each call blocks {num(get(r, 'sync_call_seconds'), 's')}, "
        f"then raises {get(r, 'sync_error')}",
        "≤ bound + 20 MB", lambda r: (get(r, "rss_growth_mb") or 1e9) <= _rss_bound(r)),
    Row("server_down", "server down", "longest gen-2 GC pause during the run (collections)",
        lambda r: f"{num(get(r, 'gc2_longest_ms'), 'ms')} ({num(get(r, 'gc2_count'))})",
        lambda r: "n/a", "≤ 5 ms", at_most("gc2_longest_ms", 5)),
    Row("server_down", "server down",
        "full GC at the peak backlog, minus before it (each right after another)",
        lambda r: f"{num(get(r, 'full_gc_backlog_ms'), 'ms')} ("
        f"{num(get(r, 'full_gc_at_peak_ms'), 'ms')} - {num(get(r, 'full_gc_before_ms'), 'ms')})",
        lambda r: "n/a", "≤ 5 ms", at_most("full_gc_backlog_ms", 5)),
    Row("server_down", "server down", "the first full GC at the peak (caches cold after producing)",
        lambda r: num(get(r, "full_gc_first_at_peak_ms"), "ms"), lambda r: "n/a"),
    Row("server_down", "server down", "longest GC pause of any generation during the run",
        lambda r: num(get(r, "gc_any_longest_ms"), "ms"), lambda r: "n/a"),
    # 5b. outage and fleet backpressure
    Row("outage", OUTAGE, "delivered after it came back",
        lambda r: f"{num(get(r, 'delivered'))} of {num(get(r, 'events'))} in "
        f"{num(get(r, 'recovery_seconds'), 's')}",
        lambda r: f"each call blocks {num(get(r, 'sync_call_seconds'), 's')}, "
        f"then raises {get(r, 'sync_error')}",
        "all", lambda r: bool(get(r, "nothing_lost"))),
    Row("outage", OUTAGE,
        "requests that reached the API during the outage",
        lambda r: num(get(r, "requests_during_outage")), lambda r: "n/a",
        "a few hundred at most", at_most("requests_during_outage", 300)),
    Row("outage", OUTAGE,
        "process CPU during the outage (share of a core; per event produced)",
        lambda r: f"{num(get(r, 'cpu_share_during_outage'))}; "
        f"{num(get(r, 'cpu_us_per_event_during_outage'), 'µs')}",
        lambda r: "n/a"),
    Row("fleet", "fleet of 4 processes, 429 + Retry-After window",
        "requests in the window per process (sessions made in it)",
        lambda r: f"{num(get(r, 'requests_in_window_per_process'))} "
        f"({num(get(r, 'sessions_in_window_per_process'))})",
        lambda r: "n/a", "a few", at_most("requests_in_window_per_process", 10)),
    Row("fleet", "fleet of 4 processes, 429 + Retry-After window", "delivered after the window",
        lambda r: f"{num(get(r, 'delivered'))} of {num(get(r, 'events'))}", lambda r: "n/a",
        "all", lambda r: bool(get(r, "nothing_lost"))),
    *(
        Row("partial_failures", f"{label} of the answers 503, 8,000 events",
            "delivered events/s (delivered, in s)",
            lambda r, key=key: f"{num(get(r, f'{key}.events_per_s'))} "
            f"({num(get(r, f'{key}.delivered'))} in {num(get(r, f'{key}.seconds'), 's')})",
            lambda r: "n/a", "all", lambda r, key=key: bool(get(r, f"{key}.nothing_lost")))
        for label, key in (
            ("none", "none"),
            ("20 %", "fifth"),
            ("50 %", "half"),
            ("75 %", "three_quarters"),
            ("90 %", "nine_tenths"),
        )
    ),
    # 6. exit
    Row("exit_healthy", "exit, healthy server", "delivered of 10,000 (queued at exit)",
        lambda r: f"{num(get(r, 'delivered'))} ({num(get(r, 'queued_at_exit'))})",
        lambda r: f"{num(get(r, 'sync.delivered'))} of {num(get(r, 'sync.events'))}",
        "all", lambda r: get(r, "delivered") == get(r, "events")),
    Row("exit_healthy", "exit, healthy server", "exit time after the last call",
        lambda r: num(get(r, "exit_seconds"), "s"),
        lambda r: f"{num(get(r, 'sync.exit_seconds'), 's')}, but the calls block "
        f"{num(get(r, 'sync.blocked_seconds_for_10k'), 's')} per 10,000"),
    Row("exit_hung", "exit, hung server", "exit time after the last call",
        lambda r: num(get(r, "exit_seconds"), "s"), _sync_hung,
        "≤ `shutdown_timeout` + 0.5 s = 1.5 s",
        lambda r: get(r, "exit_seconds") is not None
        and get(r, "exit_seconds") <= get(r, "bound_seconds")),
    # 7. import
    Row("import", "import", "`import layer_sdk` (median of fresh interpreters)",
        lambda r: f"{num(get(r, 'ms'), 'ms')} ({num(get(r, 'modules_added'))} modules"
        f"{', requests among them' if get(r, 'requests_imported') else ''})",
        lambda r: f"`import requests` alone: {num(get(r, 'import_requests_ms'), 'ms')}"),
    Row("import", "import", "provider SDKs imported",
        lambda r: ", ".join(get(r, "providers_imported") or []) or "none",
        lambda r: "n/a", "none", lambda r: not get(r, "providers_imported")),
)  # fmt: skip


def _on_off(path: str, unit: str = "µs") -> Callable[[Result], str]:
    """``spool on / off`` figures of the spool's hot path case."""
    return lambda r: f"{num(get(r, f'spool.{path}'))} / {num(get(r, f'memory.{path}'))} {unit}"


SPOOL_ROWS: tuple[Row, ...] = (
    Row("spool_hot_path", "hot path, spool on / off", "`append_action` median",
        _on_off("append_action.median"), lambda r: "n/a",
        "on ≤ 1.1x off", at_most("append_median_ratio", 1.1)),
    Row("spool_hot_path", "hot path, spool on / off", "`append_action` p99",
        _on_off("append_action.p99"), lambda r: "n/a",
        "on ≤ 1.1x off", at_most("append_p99_ratio", 1.1)),
    Row("spool_hot_path", "hot path, spool on / off",
        "ratio on / off (the median of each run's): median; p99",
        lambda r: f"{num(get(r, 'append_median_ratio'))}; {num(get(r, 'append_p99_ratio'))}",
        lambda r: "n/a"),
    Row("spool_hot_path", "hot path, spool on / off", "`append_action` p99.9; max",
        lambda r: f"{_on_off('append_action.p999', '')(r).strip()}; "
        f"{_on_off('append_action.max')(r)}", lambda r: "n/a"),
    Row("spool_hot_path", "hot path, spool on / off", "`create_session` median",
        _on_off("create_session.median"), lambda r: "n/a"),
    Row("spool_hot_path", "hot path, spool on / off", "all delivered (10,000 events/s offered)",
        lambda r: num(get(r, "nothing_lost")), lambda r: "n/a", "yes",
        lambda r: bool(get(r, "nothing_lost"))),
    Row("spool_throughput", "throughput, local server, spool on / off",
        "delivered events/s (counted at the server)",
        lambda r: f"{num(get(r, 'spool.events_per_s'))} / {num(get(r, 'memory.events_per_s'))}",
        lambda r: "n/a", "on ≥ 0.5x off", at_least("ratio", 0.5)),
    Row("spool_throughput", "throughput, local server, spool on / off",
        "ratio on / off; process CPU per event on / off",
        lambda r: f"{num(get(r, 'ratio'))}; {num(get(r, 'spool.cpu_us_per_event'))} / "
        f"{num(get(r, 'memory.cpu_us_per_event'))} µs", lambda r: "n/a"),
    Row("spool_throughput", "throughput, local server, spool on / off",
        "nothing lost", lambda r: num(get(r, "nothing_lost")), lambda r: "n/a", "yes",
        lambda r: bool(get(r, "nothing_lost"))),
    Row("spool_replay", "replay after a crash", "events/s delivered by the next process",
        lambda r: f"{num(get(r, 'events_per_s'))} ({num(get(r, 'events'))} in "
        f"{num(get(r, 'seconds'), 's')}; spool {num(get(r, 'spool_mb'), 'MiB')})",
        lambda r: "n/a"),
    Row("spool_replay", "replay after a crash", "all delivered; process CPU per event",
        lambda r: f"{num(get(r, 'nothing_lost'))}; {num(get(r, 'cpu_us_per_event'), 'µs')}",
        lambda r: "n/a", "all", lambda r: bool(get(r, "nothing_lost"))),
)  # fmt: skip


def table(results: dict[str, Result], rows: Sequence[Row] = ROWS) -> str:
    """The markdown table of every row whose case ran; a failed case gets one line."""
    lines = [
        "| case | metric | layer-sdk | sync baseline | target | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    failed_shown: set[str] = set()
    for row in rows:
        result = results.get(row.source)
        if result is None:
            continue
        if "error" in result:
            if row.source not in failed_shown:
                failed_shown.add(row.source)
                lines.append(f"| {row.case} | (failed) | {result['error']} | | | **no** |")
            continue
        met = "—" if row.met is None else ("yes" if row.met(result) else "**no**")
        lines.append(
            f"| {row.case} | {row.metric} | {row.value(result)} | {row.baseline(result)} "
            f"| {row.target} | {met} |"
        )
    return "\n".join(lines)


# -- the header ------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def sdk_version() -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import layer_sdk; print(layer_sdk.__version__)"],
        env=child_env(),
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "not importable"


def header(quick: bool, reps: int, load_before: float) -> str:
    load_now = os.getloadavg()[0]
    return "\n".join(
        [
            f"- machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
            f"{platform.release()}; 1-minute load average {load_before:.2f} at the start, "
            f"{load_now:.2f} at the end",
            f"- Python {platform.python_version()} ({platform.python_implementation()})",
            f"- packages: layer_sdk {sdk_version()}, msgspec {version('msgspec')}, "
            f"urllib3 {version('urllib3')}, requests {version('requests')}",
            f"- mode: {'quick' if quick else 'full'}, {reps} repetition(s) per case, "
            "medians across repetitions; "
            f"run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        ]
    )


RESULTS_PREAMBLE = """# Benchmark results

The last full run of `python benchmarks/run.py --write`. What each case
measures, and how, is in `benchmarks/README.md`. The sync baseline is the
`sync=True` path of the same SDK, measured in the same processes.
"""


def write_section(begin: str, end: str, text: str) -> None:
    """Put ``text`` between the markers in RESULTS.md (added at the end when missing)."""
    path = HERE / "RESULTS.md"
    old = path.read_text() if path.exists() else RESULTS_PREAMBLE
    section = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + section + old[old.index(end) + len(end) :]
    else:
        new = f"{old.rstrip()}\n\n{section}\n"
    path.write_text(new)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition, smaller sizes")
    parser.add_argument("--write", action="store_true", help="save to benchmarks/RESULTS.md")
    parser.add_argument("--reps", type=int, help="repetitions per case (default 3, quick 1)")
    parser.add_argument("--case", action="append", choices=CASES, help="run only these cases")
    parser.add_argument(
        "--spool", action="store_true", help="the durable spool's cases: a section of their own"
    )
    parser.add_argument("--json", type=Path, help="also save every repetition's raw results")
    options = parser.parse_args(argv)
    reps = options.reps or (1 if options.quick else 3)
    timeout = 120.0 if options.quick else 300.0
    load_before = os.getloadavg()[0]
    if load_before > 1.0:
        print(
            f"note: load average {load_before:.2f} on {os.cpu_count()} cores: "
            "other work on this machine will show in the figures",
            file=sys.stderr,
        )

    started = time.perf_counter()
    raw: dict[str, list[Result]] = {}
    results: dict[str, Result] = {}
    cases = SPOOL_CASES if options.spool else options.case or CASES
    for name in cases:
        runs = []
        for rep in range(reps):
            t0 = time.perf_counter()
            run = run_case(name, options.quick, timeout)
            runs.append(run)
            status = run.get("error", "ok")
            print(
                f"{name} {rep + 1}/{reps}: {status} ({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
            )
        raw[name] = runs
        good = [run for run in runs if "error" not in run]
        results[name] = merge(good) if good else runs[0]
    elapsed = time.perf_counter() - started

    report = "\n\n".join(
        [
            header(options.quick, reps, load_before),
            table(results, SPOOL_ROWS if options.spool else ROWS),
            f"Total time: {elapsed:.0f} s.",
        ]
    )
    print(report)
    if options.write and options.spool:
        write_section(SPOOL_BEGIN, SPOOL_END, f"## The durable spool, on beside off\n\n{report}")
        print(f"\nsaved to {HERE / 'RESULTS.md'}", file=sys.stderr)
    elif options.write:
        results = HERE / "RESULTS.md"
        # Sections other benchmarks write between their markers stay (http_clients.py's).
        kept = ""
        if results.exists():
            old = results.read_text()
            start = old.find("<!-- ")
            kept = f"\n{old[start:].rstrip()}\n" if start >= 0 else ""
        results.write_text(f"{RESULTS_PREAMBLE}\n{report}\n{kept}")
        print(f"\nsaved to {HERE / 'RESULTS.md'}", file=sys.stderr)
    if options.json:
        options.json.write_text(json.dumps(raw, indent=1))
    return 1 if any("error" in run for runs in raw.values() for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
