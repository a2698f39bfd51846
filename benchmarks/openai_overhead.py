"""What the OpenAI instrumentation adds: per non-streamed call and per streamed chunk.

The real ``openai`` client calls a local OpenAI-compatible server
(``tests/openai_server.py``) with and without the instrumentation, in the
same run, in alternating blocks (plain, instrumented, instrumented, plain, ...)
so that drift in the machine's load hits both alike. Both servers (OpenAI and
the Layer collector, ``_server.py``) run in processes of their own: their CPU
is not the client's.

End to end, the figures carry the noise of a 3 ms HTTP call; so the
instrumentation's own work is also timed directly, in-process and without
network, on the real response objects of that run: ``direct`` rows. Those
run hot, in a tight loop; inside a real call the same code finds the CPU
caches cooled by the client's own work, so the end-to-end caller-CPU delta is
about twice the direct one. Both are real: the first is what the code costs,
the second what an application sees.

Two figures for each end-to-end row:

- **wall**: the time the caller waits (includes the SDK worker thread taking
  the GIL now and then to send what was recorded);
- **caller CPU**: CPU time of the calling thread only (``time.thread_time``):
  the mapping, encoding and enqueueing done on the hot path.

A call is ``chat.completions.create`` with 2 messages; a stream is
``stream=True`` with ``--chunks`` chunks, each ``next()`` timed alone. Calls
run inside ``layer.session_context()``, the documented way to bind them.
At the end, the events the collector received are checked against the count
expected, so the figures are those of an instrumentation that recorded all.

    python benchmarks/openai_overhead.py            # about a minute
    python benchmarks/openai_overhead.py --quick    # a few seconds
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402

from layer_sdk import Client  # noqa: E402

APPLICATION_ID = "benchmark-app"
MESSAGES = [
    {"role": "system", "content": "You are a helpful travel assistant. Answer briefly. " * 4},
    {"role": "user", "content": "Which tours leave from Lisbon on Saturday mornings? " * 4},
]


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


def direct(client: Any, layer: Client, stream_model: str) -> dict[str, list[int]]:
    """Nanoseconds of the instrumentation's own work, on real openai objects, no network.

    ``call``: preparing the record of a call and recording its prompt and
    output (``_begin`` + ``succeeded``), as the wrapper does around the request.
    ``chunk``: one ``next()`` through the observing generator, beside
    ``plain_chunk``, the same chunk through a bare iterator.
    """
    from layer_sdk.instrumentation import _streams as streams
    from layer_sdk.instrumentation._openai import chat, request

    result = client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    chunks = list(
        client.chat.completions.create(model=stream_model, messages=MESSAGES, stream=True)
    )
    samples: dict[str, list[int]] = {"call": [], "chunk": [], "plain_chunk": []}

    def timed_next(source: Iterator[Any], into: list[int]) -> None:
        while True:
            start = time.perf_counter_ns()
            try:
                next(source)
            except StopIteration:
                return
            into.append(time.perf_counter_ns() - start)

    with layer.session_context():
        for number in range(2200):
            kwargs = {"model": "gpt-test", "messages": MESSAGES}
            start = time.perf_counter_ns()
            request._begin(layer, "chat", "chat.completions.create", kwargs).succeeded(
                result, False
            )
            if number >= 200:  # the first ones warm up
                samples["call"].append(time.perf_counter_ns() - start)
        call = request._begin(layer, "chat", "chat.completions.create", {"model": "m"})
        for _ in range(20):
            timed_next(iter(chunks), samples["plain_chunk"])
            record = streams._StreamRecord(call, chat._ChatStream(), "m")
            timed_next(streams._observe(iter(chunks), record), samples["chunk"])
    layer.flush(60)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        process("-m", "tests.openai_server") as (_, openai_url),
    ):
        client = openai.OpenAI(base_url=openai_url, api_key="sk-bench", max_retries=0)
        layer = Client()
        stream_model = f"words-{options.chunks}"

        def call() -> Any:
            return client.chat.completions.create(model="gpt-test", messages=MESSAGES)

        def stream() -> Any:
            return client.chat.completions.create(
                model=stream_model, messages=MESSAGES, stream=True
            )

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
                assert received == options.chunks + 2, received  # the role chunk, words, finish

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
        own = direct(client, layer, stream_model)
        layer.shutdown()
        client.close()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"openai {openai.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load {load:.2f}; "
        f"{options.rounds} rounds of {options.calls} calls and {options.streams} streams "
        f"of {options.chunks} chunks per mode"
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
        ("streamed chunk, wall", chunks.wall),
        ("streamed chunk, caller CPU", chunks.cpu),
        ("direct: per call (map + 2 actions)", {"plain": [0], "instrumented": own["call"]}),
        ("direct: per chunk next()", {"plain": own["plain_chunk"], "instrumented": own["chunk"]}),
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
    print(f"mean caller CPU added per call: {mean_call / 1000:.1f} µs")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
