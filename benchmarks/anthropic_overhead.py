"""What the Anthropic instrumentation adds: per non-streamed call and per streamed event.

The real ``anthropic`` client calls a local Anthropic-compatible server
(``tests/anthropic_server.py``) with and without the instrumentation, in the
same run, in alternating blocks, both servers in processes of their own
(``_overhead.py``: how, and the columns of the table). A call is
``messages.create`` with a system prompt and one message; a stream is
``stream=True`` with ``--chunks`` text deltas (plus the five events around
them), each ``next()`` timed alone. The ``direct`` rows time the
instrumentation's own work in-process, on the real response objects of the
run. At the end, the events the collector received are checked against the
count expected.

    python benchmarks/anthropic_overhead.py            # about a minute
    python benchmarks/anthropic_overhead.py --quick    # a few seconds
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
from _overhead import Provider, measure, timed_next  # also puts the work tree on sys.path

from layer_sdk import Client

SYSTEM = "You are a helpful travel assistant. Answer briefly. " * 4
MESSAGES = [{"role": "user", "content": "Which tours leave from Lisbon on Saturday mornings? " * 4}]


def create(client: Any, model: str = "claude-test", **kwargs: Any) -> Any:
    return client.messages.create(
        model=model, max_tokens=256, system=SYSTEM, messages=MESSAGES, **kwargs
    )


def direct(client: Any, layer: Client, stream_model: str) -> dict[str, list[int]]:
    """Nanoseconds of the instrumentation's own work, on real anthropic objects, no network.

    ``call``: preparing the record of a call and recording its prompt and
    output (``_begin`` + ``succeeded``), as the wrapper does around the request.
    ``chunk``: one ``next()`` through the observing generator (an event), beside
    ``plain_chunk``, the same event through a bare iterator.
    """
    from layer_sdk.instrumentation import _streams as streams
    from layer_sdk.instrumentation._anthropic import call, messages

    result = create(client)
    events = list(create(client, stream_model, stream=True))
    samples: dict[str, list[int]] = {"call": [], "chunk": [], "plain_chunk": []}
    with layer.session_context():
        for number in range(2200):
            kwargs = {"model": "claude-test", "max_tokens": 256, "system": SYSTEM}
            kwargs["messages"] = MESSAGES
            start = time.perf_counter_ns()
            call._begin(layer, "messages.create", kwargs).succeeded(result, False)
            if number >= 200:  # the first ones warm up
                samples["call"].append(time.perf_counter_ns() - start)
        record_of = call._begin(layer, "messages.create", {"model": "m"})
        for _ in range(20):
            timed_next(iter(events), samples["plain_chunk"])
            record = streams._StreamRecord(record_of, messages._MessageStream(), "m")
            timed_next(streams._observe(iter(events), record), samples["chunk"])
    layer.flush(60)
    return samples


ANTHROPIC = Provider(
    version=f"anthropic {anthropic.__version__}",
    server="tests.anthropic_server",
    client=lambda url: anthropic.Anthropic(base_url=url, api_key="sk-bench", max_retries=0),
    call=create,
    stream=lambda c, model: create(c, model, stream=True),
    # message_start, content_block_start, the deltas, content_block_stop, message_delta,
    # message_stop (anthropic skips the ping)
    events=lambda n: n + 5,
    direct=direct,
    item="event",
)


def main() -> None:
    measure(ANTHROPIC, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
