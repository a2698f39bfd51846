"""``layer-sdk demo``: the SDK at work on a simulated LLM workload.

Starts an embedded local collector (unless ``--base-url`` points elsewhere),
reports sessions of four actions from a few threads through a real client, and
prints what the caller paid per call and what the server received. With rich
installed (the ``cli`` extra) and a terminal, a progress bar shows the calls and
deliveries as they happen, and the summary is a table.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .._client import Client
from .._schemas import SessionActionKind
from ..collector import LocalCollector
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


def demo(
    sessions: int, threads: int, base_url: str | None, application_id: str, console: Any = None
) -> int:
    """Run the demo; returns the exit code (0 when everything was delivered).

    ``console``: a rich Console to show progress and the table on (default: one
    on stdout when rich is installed and stdout is a terminal; else plain text).
    """
    console = rich_console(sys.stdout) if console is None else console
    say: Callable[[str], None] = print if console is None else console.print
    collector = None if base_url else LocalCollector().start()
    client = Client()
    client.init(base_url=base_url or collector.url, application_id=application_id)  # type: ignore[union-attr]
    where = base_url or f"the embedded collector at {collector.url}"  # type: ignore[union-attr]
    plural = "s" if threads != 1 else ""
    say(f"Reporting {sessions} sessions of 4 actions from {threads} thread{plural} to {where}")

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
    drained: list[float] = []
    flushed: list[bool] = []

    def drain() -> None:
        flushed.append(client.flush(timeout=60))
        drained.append(time.perf_counter())

    flusher = threading.Thread(target=drain)
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    if console is None:
        for worker in workers:
            worker.join()
        produced = time.perf_counter()
        drain()
    else:
        total = sessions * (1 + len(_KINDS))
        with _Progress(console, total) as progress:
            for worker in workers:
                while worker.is_alive():
                    worker.join(0.1)
                    progress.show(sum(map(len, costs)), client.stats().sent)
            produced = time.perf_counter()
            flusher.start()
            while flusher.is_alive():
                flusher.join(0.1)
                progress.show(total, client.stats().sent)
    delivered_all = flushed[0]
    stats = client.stats()
    client.shutdown()

    calls = sorted(cost for mine in costs for cost in mine)
    received = collector.event_count if collector else stats.sent
    delivered = "events delivered (counted by the server)" if collector else "events delivered"
    rows = [
        ("events enqueued", f"{stats.enqueued:,}"),
        (delivered, f"{received:,}"),
        ("dropped / failed", f"{stats.dropped:,} / {stats.failed:,}"),
        ("caller cost per call, median", f"{statistics.median(calls) * 1e6:.1f} µs"),
        ("caller cost per call, p99", f"{calls[int(len(calls) * 0.99)] * 1e6:.1f} µs"),
        ("throughput, enqueue to delivered", f"{stats.sent / (drained[0] - began):,.0f} events/s"),
        ("time to drain after the last call", f"{(drained[0] - produced) * 1e3:.0f} ms"),
    ]
    if console is None:
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"  {name:<{width}}  {value}")
    else:
        console.print(_table(rows))
    if collector is not None:
        sample = collector.sessions[0]
        line = (
            f"A delivered session: {sample['session_id']} with {len(sample['actions'])} actions,"
            f" attributes {sample['attributes']}"
        )
        if console is None:
            print(line)
        else:
            console.print(line, markup=False)
        collector.stop()
    ok = delivered_all and received == stats.enqueued
    verdict = "OK: everything was delivered." if ok else "Some events were not delivered."
    if console is None:
        print(verdict)
    else:
        console.print(verdict, style="bold green" if ok else "bold red", markup=False)
    return 0 if ok else 1


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
