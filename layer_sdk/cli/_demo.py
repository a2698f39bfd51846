"""``layer-sdk demo``: the SDK at work on a simulated LLM workload.

Starts an embedded local collector (unless ``--base-url`` points elsewhere),
reports sessions of four actions from a few threads through a real client, and
prints what the caller paid per call, what the server received, and each loss
with its reason explained. With rich installed (the ``cli`` extra) and a
terminal, a progress bar shows the calls and deliveries as they happen, and
the summary is a table; without it, a long run prints its progress once a
second.

A ``--base-url`` is probed first (one session sent with ``sync=True``, as
``check`` does): an API that cannot be reached is reported at once, with its
cause. Should the API stop taking events during the run, the demo stops
waiting once nothing has been delivered for ``STALL_TIMEOUT`` seconds.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .._client import Client
from .._config import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SHUTDOWN_TIMEOUT
from .._exceptions import LayerMissingRequiredConfigurationError
from .._export import _losses
from .._redact import mask_url
from .._schemas import SessionActionKind
from .._settings import resolve_settings
from ..collector import LocalCollector
from ._check import probe
from ._console import rich_console

_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant for a travel agency. " * 4},
    {"role": "user", "content": "Which of your tours visit the Dolomites in late June? " * 3},
]
_ATTRIBUTES = {
    "model.id": "gpt-4o-mini",
    "temperature": 0.2,
    "max_tokens": 512,
    "user.id": "demo-user",
    "feature": "trip-planner",
}
_KINDS = [
    SessionActionKind.COMPLETION_PROMPT,
    SessionActionKind.COMPLETION_OUTPUT,
    SessionActionKind.COMPLETION_TOOL_CALL,
    SessionActionKind.COMPLETION_OUTPUT,
]


#: Seconds without a single event delivered (or given up on) after which the demo
#: stops waiting and shuts the client down: the bound an exit drain would apply.
STALL_TIMEOUT = DEFAULT_SHUTDOWN_TIMEOUT
#: A run without rich prints its progress this often, seconds (from the first such period on).
PLAIN_PROGRESS_INTERVAL = 1.0

#: Why events are lost, in a line each (the reasons of ``_export._losses``).
LOSS_EXPLANATIONS = {
    _losses.QUEUE_FULL: (
        f"a tight loop outran the {DEFAULT_MAX_QUEUE_SIZE:,}-event queue (max_queue_size):"
        " events came faster than the API took them"
    ),
    _losses.TOO_LARGE: (
        f"an event was larger than max_event_bytes ({DEFAULT_MAX_EVENT_BYTES:,} bytes)"
    ),
    _losses.SHUTDOWN: "still queued when the client shut down: the API did not take them in time",
    _losses.RECURSION: (
        "recorded from one of the SDK's own threads (a logging handler?), refused to avoid a loop"
    ),
    _losses.REJECTED: "refused by the API with a 4xx answer (the log has its message)",
    _losses.RETRIES_EXHAUSTED: "the API could not be reached within max_retry_time",
    _losses.SESSION_FAILED: "their session's create was lost, so they were not sent",
    _losses.INTERNAL_ERROR: "a bug in the SDK cost their request (please report it, with the log)",
    _losses.SPAN_BACKLOG: (
        "OpenTelemetry spans ended faster than the span processor's reader could read them"
        " (max_backlog)"
    ),
    _losses.SPOOL_FULL: "the spool reached spool_max_bytes: its oldest sessions were given up",
    _losses.EXPIRED: "they waited in the spool longer than spool_max_age",
    _losses.SPOOL_UNREADABLE: (
        "only the spool held them, and it could not read them back (a disk error or a"
        " damaged file; the log says which)"
    ),
}


def demo(
    sessions: int,
    threads: int,
    base_url: str | None,
    application_id: str,
    console: Any = None,
    *,
    stall: float = STALL_TIMEOUT,
) -> int:
    """Run the demo; returns the exit code (0 when everything was delivered).

    ``console``: a rich Console to show progress and the table on (default: one
    on stdout when rich is installed and stdout is a terminal; else plain text).
    """
    console = rich_console(sys.stdout) if console is None else console
    say: Callable[[str], None] = (
        _flushed_print if console is None else lambda line: console.print(line, markup=False)
    )
    collector = None if base_url else LocalCollector().start()
    url = base_url or collector.url  # type: ignore[union-attr]
    # Explicitly on: a LAYER_ENABLED=false meant for an application must not empty the demo.
    options: dict[str, Any] = {"enabled": True, "base_url": url, "application_id": application_id}
    client = Client()
    try:
        config = resolve_settings(**options)
        client.init(**options, max_retries=0)  # the probe's verdict at once, not after backoff
    except (LayerMissingRequiredConfigurationError, ValueError) as error:
        say(f"FAILED: the configuration cannot be used: {error}")
        return 1
    try:
        if base_url is not None:
            problem = probe(client, config, say)
            if problem is not None:
                say(f"FAILED: {problem}")
                say("Nothing was reported.")
                return 1
        return _run(client, url, sessions, threads, collector, console, say, stall)
    finally:
        client.shutdown()
        if collector is not None:
            collector.stop()


def _run(
    client: Client,
    url: str,
    sessions: int,
    threads: int,
    collector: LocalCollector | None,
    console: Any,
    say: Callable[[str], None],
    stall: float,
) -> int:
    where = "the embedded collector at " if collector else ""
    plural = "s" if threads != 1 else ""
    say(
        f"Reporting {sessions} sessions of 4 actions from {threads} thread{plural}"
        f" to {where}{mask_url(url)}"
    )

    costs: list[list[float]] = [[] for _ in range(threads)]

    def produce(mine: list[float], count: int) -> None:
        clock = time.perf_counter
        for _ in range(count):
            started = clock()
            session_id = client.create_session(attributes={"user.id": "demo-user"})
            mine.append(clock() - started)
            for kind in _KINDS:
                started = clock()
                client.append_action(
                    session_id, kind=kind, attributes=_ATTRIBUTES, data={"messages": _MESSAGES}
                )
                mine.append(clock() - started)

    share, extra = divmod(sessions, threads)
    workers = [
        threading.Thread(target=produce, args=(costs[n], share + (n < extra)))
        for n in range(threads)
    ]
    total = sessions * (1 + len(_KINDS))
    progress = _Progress(console, total) if console else _PlainProgress(say, total)
    began = time.perf_counter()
    with progress:
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():
                worker.join(0.1)
                progress.show(sum(map(len, costs)), client.stats().sent)
        produced = time.perf_counter()
        stalled = not _wait_for_delivery(client, progress, total, stall)
        drained = time.perf_counter()
    if stalled:
        say(f"Nothing was delivered for {stall:g} s: stopping; what is still queued is lost.")
    client.shutdown(timeout=0 if stalled else None)
    stats = client.stats()

    calls = sorted(cost for mine in costs for cost in mine)
    received = collector.event_count if collector else stats.sent
    delivered = "events delivered (counted by the server)" if collector else "events delivered"
    rows = [
        ("events enqueued", f"{stats.enqueued:,}"),
        (delivered, f"{received:,}"),
        ("dropped / failed", f"{stats.dropped:,} / {stats.failed:,}"),
        ("caller cost per call, median", f"{statistics.median(calls) * 1e6:.1f} µs"),
        ("caller cost per call, p99", f"{calls[int(len(calls) * 0.99)] * 1e6:.1f} µs"),
        ("throughput, enqueue to delivered", f"{stats.sent / (drained - began):,.0f} events/s"),
        ("time to drain after the last call", f"{(drained - produced) * 1e3:.0f} ms"),
    ]
    if console is None:
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            say(f"  {name:<{width}}  {value}")
    else:
        console.print(_table(rows))
    losses = dict(stats.dropped_by_reason)
    for reason, count in stats.failed_by_reason.items():
        losses[reason] = losses.get(reason, 0) + count
    for line in loss_lines(losses):
        say(line)
    if collector is not None and collector.sessions:
        sample = collector.sessions[0]
        say(
            f"A delivered session: {sample['session_id']} with {len(sample['actions'])} actions,"
            f" attributes {sample['attributes']}"
        )
    ok = stats.dropped == stats.failed == 0 and received == stats.enqueued == total
    verdict = "OK: everything was delivered." if ok else "Some events were not delivered."
    if console is None:
        say(verdict)
    else:
        console.print(verdict, style="bold green" if ok else "bold red", markup=False)
    return 0 if ok else 1


def loss_lines(losses: dict[str, int]) -> list[str]:
    """Each reason events were lost for, with its count and what it means."""
    counted = {reason: count for reason, count in losses.items() if count}
    if not counted:
        return []
    width = max(len(reason) for reason in counted)
    lines = [f"Lost {sum(counted.values()):,} events:"]
    for reason, count in sorted(counted.items(), key=lambda item: -item[1]):
        explanation = LOSS_EXPLANATIONS.get(reason, "(no explanation for this reason)")
        lines.append(f"  {reason:<{width}}  {count:>9,}  {explanation}")
    return lines


def _wait_for_delivery(client: Client, progress: Any, total: int, stall: float) -> bool:
    """Wait while events keep being resolved; False when none was for ``stall`` seconds."""
    resolved, since = -1, time.monotonic()
    while True:
        client.flush(timeout=0.1)
        stats = client.stats()
        progress.show(total, stats.sent)
        if stats.queued == 0:
            return True
        if stats.sent + stats.failed != resolved:
            resolved, since = stats.sent + stats.failed, time.monotonic()
        elif time.monotonic() - since >= stall:
            return False


def _flushed_print(line: str) -> None:
    print(line, flush=True)


class _PlainProgress:
    """Without rich: a line of progress once a second, from the first second on."""

    def __init__(self, say: Callable[[str], None], total: int) -> None:
        self._say = say
        self._total = total
        self._next = time.monotonic() + PLAIN_PROGRESS_INTERVAL

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def show(self, calls: int, sent: int) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + PLAIN_PROGRESS_INTERVAL
            self._say(f"  ... {calls:,} of {self._total:,} calls made, {sent:,} events delivered")


class _Progress:
    """Two rich progress bars: the calls made, and the events the server has acknowledged."""

    def __init__(self, console: Any, total: int) -> None:
        from rich.progress import (  # type: ignore[import-not-found, unused-ignore]
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._calls = self._progress.add_task("calls", total=total)
        self._sent = self._progress.add_task("delivered", total=total)

    def __enter__(self) -> _Progress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def show(self, calls: int, sent: int) -> None:
        self._progress.update(self._calls, completed=calls)
        self._progress.update(self._sent, completed=sent)


def _table(rows: list[tuple[str, str]]) -> Any:
    from rich.table import Table  # type: ignore[import-not-found, unused-ignore]

    table = Table(title="Layer SDK demo", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right", style="bold")
    for name, value in rows:
        table.add_row(name, value)
    return table
