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

from typing import Any

import anthropic
from _overhead import Provider, measure  # also puts the work tree on sys.path

from layer_sdk.instrumentation._anthropic import call, messages

SYSTEM = "You are a helpful travel assistant. Answer briefly. " * 4
MESSAGES = [{"role": "user", "content": "Which tours leave from Lisbon on Saturday mornings? " * 4}]


def create(client: Any, model: str = "claude-test", **kwargs: Any) -> Any:
    return client.messages.create(
        model=model, max_tokens=256, system=SYSTEM, messages=MESSAGES, **kwargs
    )


ANTHROPIC = Provider(
    version=f"anthropic {anthropic.__version__}",
    server="tests.anthropic_server",
    client=lambda url: anthropic.Anthropic(base_url=url, api_key="sk-bench", max_retries=0),
    call=create,
    stream=lambda c, model: create(c, model, stream=True),
    # message_start, content_block_start, the deltas, content_block_stop, message_delta,
    # message_stop (anthropic skips the ping)
    events=lambda n: n + 5,
    arguments=lambda: {
        "model": "claude-test",
        "max_tokens": 256,
        "system": SYSTEM,
        "messages": MESSAGES,
    },
    begin=lambda layer, kwargs: call.Call.begin(layer, ("messages", "messages.create"), kwargs),
    accumulator=messages._MessageStream,
    item="event",
)


def main() -> None:
    measure(ANTHROPIC, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
