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

import openai
from _overhead import Provider, measure  # also puts the work tree on sys.path

from layer_sdk.instrumentation._openai import call, chat

MESSAGES = [
    {"role": "system", "content": "You are a helpful travel assistant. Answer briefly. " * 4},
    {"role": "user", "content": "Which tours leave from Lisbon on Saturday mornings? " * 4},
]


OPENAI = Provider(
    version=f"openai {openai.__version__}",
    server="tests.openai_server",
    client=lambda url: openai.OpenAI(base_url=url, api_key="sk-bench", max_retries=0),
    call=lambda c: c.chat.completions.create(model="gpt-test", messages=MESSAGES),
    stream=lambda c, model: c.chat.completions.create(model=model, messages=MESSAGES, stream=True),
    events=lambda n: n + 2,  # the role chunk, the words, the finish
    arguments=lambda: {"model": "gpt-test", "messages": MESSAGES},
    begin=lambda layer, kwargs: call.Call.begin(layer, ("chat", "chat.completions.create"), kwargs),
    accumulator=chat._ChatStream,
)


def main() -> None:
    measure(OPENAI, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
