"""What the provider overhead benchmarks share (``openai_overhead.py``, ``anthropic_overhead.py``).

A provider's real client calls its local server (``tests/<provider>_server.py``)
with and without the instrumentation, in the same run, in alternating blocks
(plain, instrumented, instrumented, plain, ...) so that drift in the machine's
load hits both alike. Both servers (the provider's and the Layer collector,
``_server.py``) run in processes of their own: their CPU is not the client's.
:func:`measure` runs the blocks and prints the table; a :class:`Provider`
says how to call one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from layer_sdk import Client  # noqa: E402

APPLICATION_ID = "benchmark-app"


@dataclass(frozen=True)
class Provider:
    """How the benchmark calls one provider."""

    #: As printed, e.g. "openai 3.57.0"; the module of its local server.
    version: str
    server: str
    #: ``client(url)``; ``call(client)`` a non-streamed call; ``stream(client, model)``
    #: a streamed one, of ``events(n)`` items for a ``words-<n>`` model.
    client: Callable[[str], Any]
    call: Callable[[Any], Any]
    stream: Callable[[Any, str], Any]
    events: Callable[[int], int]
    #: For the ``direct`` rows: the arguments of ``call`` (a fresh dict each time),
    #: ``begin(layer, arguments)`` the instrumentation's record of such a call, and
    #: ``accumulator()`` its reader of a stream's items.
    arguments: Callable[[], dict[str, Any]]
    begin: Callable[[Client, dict[str, Any]], Any]
    accumulator: Callable[[], Any]
    #: What one streamed item is called: "chunk" (openai), "event" (anthropic).
    item: str = "chunk"


@contextmanager
def process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A helper process that prints its URL first and stops when its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"{args} did not start: {url!r}")
        yield child, url
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()


def ask(collector: subprocess.Popen[str], command: str) -> str:
    assert collector.stdin is not None and collector.stdout is not None
    collector.stdin.write(command + "\n")
    collector.stdin.flush()
    return collector.stdout.readline().strip()


class Samples:
    """Wall and caller-CPU nanoseconds of one measured thing, plain and instrumented."""

    def __init__(self) -> None:
        self.wall: dict[str, list[int]] = {"plain": [], "instrumented": []}
        self.cpu: dict[str, list[int]] = {"plain": [], "instrumented": []}

    def timed(self, mode: str, work: Callable[[], Any]) -> Any:
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        result = work()
        self.wall[mode].append(time.perf_counter_ns() - wall)
        self.cpu[mode].append(time.thread_time_ns() - cpu)
        return result


def quantile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def direct(
    provider: Provider, client: Any, layer: Client, stream_model: str
) -> dict[str, list[int]]:
    """Nanoseconds of the instrumentation's own work, on real provider objects, no network.

    ``call``: preparing the record of a call and recording its prompt and
    output (``begin`` + ``succeeded``), as the wrapper does around the request.
    ``chunk``: one ``next()`` through the observing generator, beside
    ``plain_chunk``, the same item through a bare iterator.
    """
    from layer_sdk.instrumentation import _streams as streams

    result = provider.call(client)
    items = list(provider.stream(client, stream_model))
    samples: dict[str, list[int]] = {"call": [], "chunk": [], "plain_chunk": []}
    with layer.session_context():
        for number in range(2200):
            arguments = provider.arguments()
            start = time.perf_counter_ns()
            provider.begin(layer, arguments).succeeded(result, False)
            if number >= 200:  # the first ones warm up
                samples["call"].append(time.perf_counter_ns() - start)
        call = provider.begin(layer, {"model": "m"})
        for _ in range(20):
            timed_next(iter(items), samples["plain_chunk"])
            record = streams.StreamRecord(call, provider.accumulator(), "m")
            timed_next(streams._observe(iter(items), record), samples["chunk"])
    layer.flush(60)
    return samples


def timed_next(source: Iterator[Any], into: list[int]) -> None:
    """Nanoseconds of each ``next(source)``, appended to ``into``."""
    while True:
        start = time.perf_counter_ns()
        try:
            next(source)
        except StopIteration:
            return
        into.append(time.perf_counter_ns() - start)


def measure(provider: Provider, description: str) -> None:
    """Parse the command line, run the blocks, print the table."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--calls", type=int, default=600, help="calls per block")
    parser.add_argument("--streams", type=int, default=30, help="streams per block")
    parser.add_argument("--chunks", type=int, default=100, help="chunks per stream")
    parser.add_argument("--rounds", type=int, default=4, help="plain/instrumented block pairs")
    parser.add_argument("--quick", action="store_true", help="small sizes: a few seconds")
    options = parser.parse_args()
    if options.quick:
        options.calls, options.streams, options.rounds = 100, 5, 2

    calls, chunks, stream_starts = Samples(), Samples(), Samples()
    expected_events = 0
    with (
        process(str(HERE / "_server.py")) as (collector, collector_url),
        process("-m", provider.server) as (_, provider_url),
    ):
        client = provider.client(provider_url)
        layer = Client()
        stream_model = f"words-{options.chunks}"

        def call() -> Any:
            return provider.call(client)

        def stream() -> Any:
            return provider.stream(client, stream_model)

        def block(mode: str, calls_n: int, streams_n: int, record: bool = True) -> None:
            for _ in range(calls_n):
                if record:
                    calls.timed(mode, call)
                else:
                    call()
            for _ in range(streams_n):
                opened = stream_starts.timed(mode, stream) if record else stream()
                iterator = iter(opened)
                received = 0
                while True:
                    try:
                        if record:
                            chunks.timed(mode, lambda: next(iterator))  # noqa: B023
                        else:
                            next(iterator)
                        received += 1
                    except StopIteration:
                        break
                assert received == provider.events(options.chunks), received

        # Warm up both paths (imports, connection pool, caches).
        block("plain", 30, 2, record=False)
        layer.init(base_url=collector_url, application_id=APPLICATION_ID, flush_interval=0.2)
        with layer.session_context():
            block("instrumented", 30, 2, record=False)
        layer.flush(30)
        layer.shutdown()
        ask(collector, "clear")

        for round_number in range(options.rounds):
            order = ["plain", "instrumented"]
            if round_number % 2:
                order.reverse()
            for mode in order:
                if mode == "plain":
                    block(mode, options.calls, options.streams)
                    continue
                layer.init(
                    base_url=collector_url, application_id=APPLICATION_ID, flush_interval=0.2
                )
                with layer.session_context():
                    block(mode, options.calls, options.streams)
                expected_events += 1 + 2 * (options.calls + options.streams)
                delivered = layer.flush(60)
                layer.shutdown()
                if not delivered:
                    raise SystemExit("the collector did not receive everything in time")
        received = int(ask(collector, "count"))
        layer.init(
            base_url=collector_url,
            application_id=APPLICATION_ID,
            max_queue_size=100_000,
            max_queue_bytes=1 << 30,
        )
        own = direct(provider, client, layer, stream_model)
        layer.shutdown()
        client.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{provider.version}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {load:.2f}; "
        f"{options.rounds} rounds of {options.calls} calls and {options.streams} streams "
        f"of {options.chunks} {provider.item}s per mode"
    )
    print()
    width = 40
    header = f"| {'what (µs)':<{width}} | {'plain':>9} | {'instrumented':>12} | {'added':>9} |"
    print(header)
    print("|" + "|".join("-" * (len(part)) for part in header.split("|")[1:-1]) + "|")
    rows = [
        ("non-streamed call, wall", calls.wall),
        ("non-streamed call, caller CPU", calls.cpu),
        ("stream start (create), wall", stream_starts.wall),
        ("stream start (create), caller CPU", stream_starts.cpu),
        (f"streamed {provider.item}, wall", chunks.wall),
        (f"streamed {provider.item}, caller CPU", chunks.cpu),
        ("direct: per call (map + 2 actions)", {"plain": [0], "instrumented": own["call"]}),
        (
            f"direct: per {provider.item} next()",
            {"plain": own["plain_chunk"], "instrumented": own["chunk"]},
        ),
    ]
    for label, samples in rows:
        for name, q in (("median", 0.5), ("p99", 0.99)):
            plain = quantile(samples["plain"], q)
            instrumented = quantile(samples["instrumented"], q)
            print(
                f"| {label + ' ' + name:<{width}} | {plain:>9.1f} | {instrumented:>12.1f} "
                f"| {instrumented - plain:>+9.1f} |"
            )
    print()
    ok = received == expected_events
    print(
        f"events at the collector: {received} of {expected_events} expected"
        f" ({'all recorded' if ok else 'MISMATCH'})"
    )
    mean_call = statistics.fmean(calls.cpu["instrumented"]) - statistics.fmean(calls.cpu["plain"])
    mean_item = statistics.fmean(chunks.cpu["instrumented"]) - statistics.fmean(chunks.cpu["plain"])
    print(f"mean caller CPU added per call: {mean_call / 1000:.1f} µs")
    print(f"mean caller CPU added per streamed {provider.item}: {mean_item / 1000:.1f} µs")
    if not ok:
        raise SystemExit(1)
