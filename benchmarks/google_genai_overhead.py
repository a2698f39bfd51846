"""What the google-genai instrumentation adds: per non-streamed call and per streamed chunk.

The real ``google-genai`` client calls a local Gemini API server
(``tests/google_genai_server.py``) with and without the instrumentation, in
the same run, in alternating blocks, both servers in processes of their own
(``_overhead.py``: how, and the columns of the table). A call is
``models.generate_content`` with a system instruction and one user turn; a
stream is ``generate_content_stream`` with ``--chunks`` chunks (google-genai
streams through a plain generator: the instrumentation's generator relays
each chunk), each ``next()`` timed alone. The ``direct`` rows time the
instrumentation's own work in-process, on the real response objects of the
run. At the end, the events the collector received are checked against the
count expected.

    python benchmarks/google_genai_overhead.py            # about a minute
    python benchmarks/google_genai_overhead.py --quick    # a few seconds
"""

from __future__ import annotations

from typing import Any

from _overhead import Provider, measure  # also puts the work tree on sys.path
from google import genai
from google.genai import types

from layer_sdk.instrumentation._google_genai import call, content

SYSTEM = "You are a helpful travel assistant. Answer briefly. " * 4
CONTENTS = "Which tours leave from Lisbon on Saturday mornings? " * 4
CONFIG = types.GenerateContentConfig(system_instruction=SYSTEM)


class _Client:
    """A genai client whose ``close()`` closes it (1.x has none), keeping it alive."""

    def __init__(self, url: str) -> None:
        self.client = genai.Client(api_key="gk-bench", http_options=types.HttpOptions(base_url=url))
        self.models = self.client.models

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def _arguments() -> dict[str, Any]:
    return {"model": "gemini-test", "contents": CONTENTS, "config": CONFIG}


GOOGLE_GENAI = Provider(
    version=f"google-genai {genai.__version__}",
    server="tests.google_genai_server",
    client=_Client,
    call=lambda c: c.models.generate_content(**_arguments()),
    stream=lambda c, model: c.models.generate_content_stream(
        model=model, contents=CONTENTS, config=CONFIG
    ),
    events=lambda n: n,  # one chunk a word
    arguments=_arguments,
    begin=lambda layer, kwargs: call.Call.begin(
        layer, ("generate", "models.generate_content"), kwargs
    ),
    accumulator=content.ResponseStream,
)


def main() -> None:
    measure(GOOGLE_GENAI, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
