"""A stand-in for the AWS Lambda runtime, run as a process of its own by the tests.

``python -m tests.lambda_runtime MODE``: one invocation per line of standard
input (a JSON event), its answer on standard output as soon as the handler
has returned or raised, as the runtime hands it back; the test then freezes
this process (SIGSTOP), as Lambda freezes the sandbox. MODE picks the handler:
``sync`` and ``async`` are decorated with ``flush_after``, ``bare`` is not.

The SDK is set to send nothing on its own for a minute (``flush_interval``):
what the collector holds at the freeze was delivered before the handler
returned. An event ``{"actions": n, "fail": bool, "remaining_ms": ms}``
records a session of ``n`` actions, then raises when ``fail``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from layer_sdk import SessionActionKind, layer
from layer_sdk.integrations.aws_lambda import flush_after


class Context:
    """What the handler reads of the runtime's context object."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def work(event: dict[str, Any]) -> dict[str, Any]:
    session_id = layer.create_session(attributes={"invocation": str(event["number"])})
    for number in range(event["actions"]):
        layer.append_action(
            session_id, kind=SessionActionKind.COMPLETION_PROMPT, data={"number": number}
        )
    if event.get("fail"):
        raise RuntimeError(f"invocation {event['number']} failed")
    return {"session_id": session_id}


def bare(event: dict[str, Any], context: Context) -> dict[str, Any]:
    return work(event)


@flush_after
def handler(event: dict[str, Any], context: Context) -> dict[str, Any]:
    return work(event)


@flush_after
async def async_handler(event: dict[str, Any], context: Context) -> dict[str, Any]:
    await asyncio.sleep(0)
    return work(event)


def invoke(mode: str, event: dict[str, Any]) -> dict[str, Any]:
    context = Context(event.get("remaining_ms", 60_000))
    try:
        if mode == "async":
            return asyncio.run(async_handler(event, context))
        return (handler if mode == "sync" else bare)(event, context)
    except RuntimeError as exc:
        return {"error": str(exc)}


def main() -> None:
    mode = sys.argv[1]
    layer.init(flush_interval=60.0)
    for line in sys.stdin:
        answer = invoke(mode, json.loads(line))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
