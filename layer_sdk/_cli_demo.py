"""``layer-sdk demo``: the SDK at work on a simulated LLM workload.

Starts an embedded local collector (unless ``--base-url`` points elsewhere),
reports sessions of four actions from a few threads through a real client, and
prints what the caller paid per call and what the server received.
"""

from __future__ import annotations

import statistics
import threading
import time

from ._client import Client
from ._schemas import SessionActionKind
from .collector import LocalCollector

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


def demo(sessions: int, threads: int, base_url: str | None, application_id: str) -> int:
    """Run the demo; returns the exit code (0 when everything was delivered)."""
    collector = None if base_url else LocalCollector().start()
    client = Client()
    client.init(base_url=base_url or collector.url, application_id=application_id)  # type: ignore[union-attr]
    where = base_url or f"the embedded collector at {collector.url}"  # type: ignore[union-attr]
    print(f"Reporting {sessions} sessions of 4 actions from {threads} threads to {where}")

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
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    produced = time.perf_counter()
    delivered_all = client.flush(timeout=60)
    drained = time.perf_counter()
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
        ("throughput, enqueue to delivered", f"{stats.sent / (drained - began):,.0f} events/s"),
        ("time to drain after the last call", f"{(drained - produced) * 1e3:.0f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if collector is not None:
        sample = collector.sessions[0]
        print(
            f"A delivered session: {sample['session_id']} with {len(sample['actions'])} actions,"
            f" attributes {sample['attributes']}"
        )
        collector.stop()
    ok = delivered_all and received == stats.enqueued
    print("OK: everything was delivered." if ok else "Some events were not delivered.")
    return 0 if ok else 1
