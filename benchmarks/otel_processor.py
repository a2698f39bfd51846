"""What ``LayerSpanProcessor`` costs per GenAI span, beside ``append_action`` of the same content.

A typical chat span of the current conventions (provider, models, usage,
finish reasons, two input messages of about 200 characters and the answer as
``gen_ai.*.messages`` JSON) is made with a real SDK tracer, then handed to the
processor as a provider hands it: ``on_start`` is timed on the started span,
``on_end`` on the same span once ended. Both run on the caller's thread;
``on_end`` only hands the span to the processor's reader thread, which reads
it and appends its two actions meanwhile. In alternating blocks of the same
run, the same two actions are appended directly with ``append_action``;
between the blocks (untimed) ``force_flush()`` lets the reader catch up.
Spans come 100 to a trace (one session each). Then spans are ended back to
back with nothing else to do, to show how many the reader can take: what
its backlog cannot hold is lost, counted.

Then the reader's work per span is timed on this thread: after
``shutdown()`` the processor reads each span on the thread that ends it, so
``on_end`` is then the whole work (copying the attributes, reading the call
with its JSON messages, choosing the session and appending two actions); its
parts are timed alone on the same spans. The client delivers to a
``LocalCollector`` in its own process; the server's count is checked
against what the timed blocks and the reader's phase produced.

    python benchmarks/otel_processor.py            # under a minute
    python benchmarks/otel_processor.py --quick    # a few seconds
    python benchmarks/otel_processor.py --write    # ...and save to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import opentelemetry.sdk  # noqa: E402
from _cases import Server  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.trace import set_span_in_context  # noqa: E402

import layer_sdk  # noqa: E402
from layer_sdk import Client, SessionActionKind  # noqa: E402
from layer_sdk.otel import LayerSpanProcessor  # noqa: E402

MARK_BEGIN = "<!-- otel_processor: begin -->"
MARK_END = "<!-- otel_processor: end -->"
APP_ID = "0c7f6b4e-2f39-4d1b-9a55-6b1f0f0a1d2e"
BLOCK = 500
PER_TRACE = 100

SYSTEM = "You are a helpful travel assistant. Answer briefly and precisely. " * 3
QUESTION = "Which tours leave from Lisbon on Saturday mornings, and how long are they? " * 3
ANSWER = "Two tours leave on Saturday mornings: the Alfama walk and the Sintra day trip."
INPUT = [
    {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
    {"role": "user", "parts": [{"type": "text", "content": QUESTION}]},
]
OUTPUT = [
    {"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "stop"}
]
START_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.request.temperature": 0.2,
    "server.address": "api.openai.com",
}
END_ATTRIBUTES = {
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 120,
    "gen_ai.usage.output_tokens": 24,
    "gen_ai.input.messages": json.dumps(INPUT),
    "gen_ai.output.messages": json.dumps(OUTPUT),
}
#: The same content as the processor appends, for the direct calls.
PROMPT = {
    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
}
REPLY = {"messages": [{"role": "assistant", "content": ANSWER}]}
BASE = {"model.id": "gpt-4o-mini", "model.provider": "openai", "gen_ai.operation.name": "chat"}


def chat_spans(tracer: Any, count: int) -> Iterator[tuple[Any, Any]]:
    """``count`` started chat spans, 100 to a trace, each with its parent context."""
    for index in range(count):
        if index % PER_TRACE == 0:
            context = set_span_in_context(tracer.start_span("request"))
        yield tracer.start_span("chat gpt-4o-mini", context, attributes=START_ATTRIBUTES), context


def measure(spans: int) -> dict[str, Any]:
    with Server() as server:
        client = Client()
        client.init(
            base_url=server.url,
            application_id=APP_ID,
            disable_instrumentations=["openai", "anthropic"],
        )
        processor = LayerSpanProcessor(client)
        tracer = TracerProvider().get_tracer("bench")  # spans made here; handed over by hand
        clock = time.perf_counter_ns
        starts: list[int] = []
        ends: list[int] = []
        direct: list[int] = []
        session = client.create_session()
        produced = 1
        made = chat_spans(tracer, spans)
        for _ in range(spans // BLOCK):
            for span, context in itertools.islice(made, BLOCK):
                t0 = clock()
                processor.on_start(span, context)
                t1 = clock()
                span.set_attributes(END_ATTRIBUTES)
                span.end()
                t2 = clock()
                processor.on_end(span)
                t3 = clock()
                starts.append(t1 - t0)
                ends.append(t3 - t2)
            produced += BLOCK * 2 + BLOCK // PER_TRACE
            # Untimed: the reader catches up (it read alongside, as the GIL let it).
            processor.force_flush(60_000)
            for _ in range(BLOCK):
                t0 = clock()
                client.append_action(
                    session,
                    kind=SessionActionKind.COMPLETION_PROMPT,
                    attributes={**BASE, "temperature": 0.2},
                    data=PROMPT,
                )
                client.append_action(
                    session,
                    kind=SessionActionKind.COMPLETION_OUTPUT,
                    attributes={**BASE, "response.id": "chatcmpl-123", "finish_reason": "stop"},
                    data=REPLY,
                    scanners=[
                        {"name": "usage", "data": {"input_tokens": 120, "output_tokens": 24}}
                    ],
                )
                direct.append(clock() - t0)
            produced += BLOCK * 2
        load = os.getloadavg()[0]
        delivered = client.flush(60) and server.count() == produced
        lost = client.stats().dropped_by_reason.get("span_backlog", 0)
        flood = back_to_back(client, processor, tracer, spans // 2)
        count = server.count()
        reading = read_on_this_thread(client, processor, tracer, spans // 4)
        read_spans = len(reading["whole"])
        produced = read_spans * 2 + read_spans // PER_TRACE + 1 + read_spans * 2
        delivered = delivered and client.flush(60) and server.count() - count == produced
        client.shutdown()
    return {
        "on_start": starts,
        "on_end": ends,
        "direct": direct,
        **reading,
        **flood,
        "load": load,
        "lost": lost,
        "delivered": delivered,
    }


def back_to_back(client: Client, processor: Any, tracer: Any, spans: int) -> dict[str, Any]:
    """``spans`` chat spans ended back to back by one thread with nothing else to do: the
    reader's share of the GIL is then all it gets. How many were lost, at what rate."""
    before = client.stats()
    started = time.perf_counter()
    for span, context in chat_spans(tracer, spans):
        processor.on_start(span, context)
        span.set_attributes(END_ATTRIBUTES)
        span.end()
        processor.on_end(span)
    elapsed = time.perf_counter() - started
    processor.force_flush(60_000)
    after = client.stats()
    lost = after.dropped_by_reason.get("span_backlog", 0)
    lost -= before.dropped_by_reason.get("span_backlog", 0)
    return {"flood_spans": spans, "flood_rate": spans / elapsed, "flood_lost": lost}


def read_on_this_thread(
    client: Client, processor: Any, tracer: Any, spans: int
) -> dict[str, list[int]]:
    """The reader's work per span, timed here: ``on_end`` after ``shutdown()`` (the whole),
    then its parts alone on the same spans (the actions appended again, to one session)."""
    from layer_sdk.otel import _spans
    from layer_sdk.otel._actions import record
    from layer_sdk.otel._problems import PROBLEMS

    processor.shutdown()  # from now on, a span is read on the thread that ends it
    clock = time.perf_counter_ns
    ended = []
    for span, context in chat_spans(tracer, spans):
        processor.on_start(span, context)
        span.set_attributes(END_ATTRIBUTES)
        span.end()
        ended.append(span)
    whole, copy, read, append = [], [], [], []
    for span in ended:
        t0 = clock()
        processor.on_end(span)
        whole.append(clock() - t0)
    session = client.create_session()
    for span in ended:
        t0 = clock()
        attributes = _spans.attributes_of(span)
        t1 = clock()
        call = _spans.read(span, attributes, ("completion", "chat"))
        t2 = clock()
        record(client, session, call, PROBLEMS)
        t3 = clock()
        copy.append(t1 - t0)
        read.append(t2 - t1)
        append.append(t3 - t2)
    return {"whole": whole, "copy": copy, "read": read, "append": append}


def figures(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def report(result: dict[str, Any], spans: int) -> str:
    on_start, on_end, direct = (figures(result[k]) for k in ("on_start", "on_end", "direct"))
    both = [s + e for s, e in zip(result["on_start"], result["on_end"], strict=True)]
    total = figures(both)
    whole, copy, read, append = (figures(result[k]) for k in ("whole", "copy", "read", "append"))
    rest = whole[0] - copy[0] - read[0] - append[0]
    lines = [
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, 1-minute load average "
        f"{result['load']:.2f} after the timed blocks (shared with other work: "
        f"{'loaded' if result['load'] > 1.5 else 'quiet'})",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); "
        f"layer_sdk {layer_sdk.__version__}, "
        f"opentelemetry-sdk {opentelemetry.sdk.version.__version__}",
        f"- {spans:,} spans, {PER_TRACE} to a trace, in blocks of {BLOCK} alternating with the "
        f"direct calls; run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        "| on the caller's thread, per span | median | p99 |",
        "| --- | --- | --- |",
        f"| `on_start` | {on_start[0]:.2f} µs | {on_start[1]:.2f} µs |",
        f"| `on_end` (hands the span to the reader thread) | {on_end[0]:.2f} µs "
        f"| {on_end[1]:.2f} µs |",
        f"| both | {total[0]:.2f} µs | {total[1]:.2f} µs |",
        f"| beside it, same run: two `append_action` of the same content | {direct[0]:.2f} µs "
        f"| {direct[1]:.2f} µs |",
        f"| both / two `append_action` | {total[0] / direct[0]:.2f} | {total[1] / direct[1]:.2f} |",
        "",
        f"| on the reader thread, per span ({len(result['whole']):,} spans read "
        "on this thread after `shutdown()`) | median | p99 |",
        "| --- | --- | --- |",
        f"| the whole: read the span, append a prompt and an output | {whole[0]:.2f} µs "
        f"| {whole[1]:.2f} µs |",
        f"| of which: copy the attributes | {copy[0]:.2f} µs | {copy[1]:.2f} µs |",
        f"| of which: read the call (model, usage, the JSON messages decoded) | {read[0]:.2f} µs "
        f"| {read[1]:.2f} µs |",
        f"| of which: append the prompt and the output (`append_action` twice) "
        f"| {append[0]:.2f} µs | {append[1]:.2f} µs |",
        f"| of which: the rest (hand-over, notes, the session), by difference "
        f"| {rest:.2f} µs | — |",
        "",
        f"Spans lost to a full backlog in the timed blocks: {result['lost']}; every event of "
        f"the timed blocks and of the reader's phase delivered: "
        f"{'yes' if result['delivered'] else 'NO'}.",
        "",
        f"Beyond its pace: {result['flood_spans']:,} spans ended back to back by one thread "
        f"doing nothing else ({result['flood_rate']:,.0f} spans/s): "
        f"{result['flood_lost']:,} lost to the full backlog (`span_backlog`, counted). "
        "The reader needs the GIL; a thread that waits on anything (a model's answer) "
        "leaves it that time.",
    ]
    return "\n".join(lines)


def write_results(text: str) -> None:
    """Replace the section between the markers of RESULTS.md (appended when missing)."""
    results = HERE / "RESULTS.md"
    current = results.read_text()
    section = (
        f"{MARK_BEGIN}\n## OpenTelemetry: `LayerSpanProcessor` per GenAI span\n\n"
        f"`python benchmarks/otel_processor.py --write` (see `benchmarks/README.md`).\n\n"
        f"{text}\n{MARK_END}"
    )
    if MARK_BEGIN in current and MARK_END in current:
        head, _, rest = current.partition(MARK_BEGIN)
        _, _, tail = rest.partition(MARK_END)
        current = f"{head}{section}{tail}"
    else:
        current = f"{current.rstrip()}\n\n{section}\n"
    results.write_text(current)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 spans instead of 20,000")
    parser.add_argument("--write", action="store_true", help="save to benchmarks/RESULTS.md")
    options = parser.parse_args()
    spans = 2_000 if options.quick else 20_000
    result = measure(spans)
    text = report(result, spans)
    print(text)
    if options.write:
        write_results(text)
        print(f"\nsaved to {HERE / 'RESULTS.md'}", file=sys.stderr)
    return 0 if result["delivered"] else 1


if __name__ == "__main__":
    sys.exit(main())
