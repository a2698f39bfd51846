"""What ``LayerSpanProcessor`` costs per GenAI span, beside ``append_action`` of the same content.

A typical chat span of the current conventions (provider, models, usage,
finish reasons, two input messages of about 200 characters and the answer as
``gen_ai.*.messages`` JSON) is made with a real SDK tracer, then handed to the
processor: ``on_start`` is timed on a started span (the caller's thread, as
the provider calls it), ``on_end`` on the same span once ended (where the
work is: reading the span, two ``append_action`` calls). In alternating
blocks of the same run, the same two actions are appended directly with
``append_action``. Spans come 100 to a trace (one session each). The
client delivers to a ``LocalCollector`` in its own process; at the end the
server's count is checked against what was produced.

    python benchmarks/otel_processor.py            # about 20 s
    python benchmarks/otel_processor.py --quick    # a few seconds
    python benchmarks/otel_processor.py --write    # ...and save to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
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
        for block in range(spans // BLOCK):
            for index in range(BLOCK):
                if (block * BLOCK + index) % PER_TRACE == 0:
                    parent = tracer.start_span("request")
                    context = set_span_in_context(parent)
                span = tracer.start_span("chat gpt-4o-mini", context, attributes=START_ATTRIBUTES)
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
        delivered = client.flush(60)
        count = server.count()
        client.shutdown()
    return {
        "on_start": starts,
        "on_end": ends,
        "direct": direct,
        "delivered": delivered and count == produced,
        "count": count,
        "produced": produced,
    }


def figures(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def report(result: dict[str, Any], spans: int) -> str:
    on_start, on_end, direct = (figures(result[k]) for k in ("on_start", "on_end", "direct"))
    both = [s + e for s, e in zip(result["on_start"], result["on_end"], strict=True)]
    total = figures(both)
    lines = [
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"1-minute load average {os.getloadavg()[0]:.2f} at the end",
        f"- Python {platform.python_version()} ({platform.python_implementation()}); "
        f"layer_sdk {layer_sdk.__version__}, "
        f"opentelemetry-sdk {opentelemetry.sdk.version.__version__}",
        f"- {spans:,} spans, {PER_TRACE} to a trace, in blocks of {BLOCK} alternating with the "
        f"direct calls; run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        "| caller's thread, per span | median | p99 |",
        "| --- | --- | --- |",
        f"| `on_start` | {on_start[0]:.2f} µs | {on_start[1]:.2f} µs |",
        f"| `on_end` (read the span, append a prompt and an output) | {on_end[0]:.2f} µs "
        f"| {on_end[1]:.2f} µs |",
        f"| both | {total[0]:.2f} µs | {total[1]:.2f} µs |",
        f"| beside it: two `append_action` of the same content | {direct[0]:.2f} µs "
        f"| {direct[1]:.2f} µs |",
        f"| the processor's own work (median of both minus the direct calls') "
        f"| {total[0] - direct[0]:.2f} µs | — |",
        "",
        f"Delivered: {result['count']:,} events of {result['produced']:,} produced "
        f"({'all' if result['delivered'] else 'NOT all'}).",
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
