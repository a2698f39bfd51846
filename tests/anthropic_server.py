"""A local Anthropic-compatible HTTP server for the instrumentation tests and the benchmark.

A real HTTP/1.1 server on 127.0.0.1 (``provider_server.py``: threads,
keep-alive, chunked SSE), so the real ``anthropic`` client talks to it
through its real transport, whatever that is in its version. It answers
``POST /v1/messages`` (also ``?beta=true``) with a ``Message`` as JSON, or
with ``stream: true`` as Anthropic's SSE events: ``message_start``,
``ping``, ``content_block_start``, ``content_block_delta`` (``text_delta``,
``input_json_delta``), ``content_block_stop``, ``message_delta``,
``message_stop``. Vertex's paths (``.../models/<model>:rawPredict`` and
``:streamRawPredict``, the model in the path) are answered the same way, and
Bedrock's ``/model/<model>/invoke`` (not its streams, which are in AWS's
binary event-stream encoding, that the client reads with botocore).

The model name picks the behaviour:

==================  =====================================================
``fail-<status>``   that HTTP status with Anthropic's error body, whose
                    ``error.type`` is the one Anthropic gives that status
                    (529: ``overloaded_error``)
``tool-use``        the answer is a short text and a call of the first tool
(structured output) a request with a ``json_schema`` format (``output_config``,
                    as ``messages.parse`` sends) is answered with a JSON
                    object that fits the schema's properties
``stream-error``    a stream whose third event is an ``error`` event
                    (``overloaded_error``), as Anthropic sends mid-stream
``slow``, ``drop``  as every provider server (``provider_server.py``); ``drop``
                    after two text deltas
``sparse``          a JSON answer with most fields missing or null
``words-<n>``       a stream of ``n`` one-word deltas, at full speed
``refuse-key-...``  a 401 quoting the API key (``provider_server.py``),
                    ``stream-error-key-...`` a stream error quoting it
anything else       a normal answer: ``ANSWER``, word by word when streamed
==================  =====================================================

Usage is reported with cache tokens (``CACHE_READ``, ``CACHE_CREATION``).
Every request is kept in ``requests`` (path, lower-cased headers, decoded body).
"""

from __future__ import annotations

import json
from typing import Any

from .provider_server import ProviderHandler, ProviderServer, serve

ANSWER = "Layer is watching this conversation."
WORDS = ["Layer", " is", " watching", " this", " conversation."]
INPUT_TOKENS = 13
CACHE_READ = 7
CACHE_CREATION = 3
TOOL_TEXT = "Let me check."
TOOL_INPUT = ['{"city":', ' "Paris"}']
SLOW_EVENTS = 200
MESSAGE_ID = "msg_01"
TOOL_ID = "toolu_01"
#: Anthropic's error type for each status it documents.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class AnthropicServer(ProviderServer):
    """``with AnthropicServer() as server: Anthropic(base_url=server.url, api_key="test")``."""

    def __init__(self) -> None:
        super().__init__()
        self.handler = _Handler


class _Handler(ProviderHandler):
    server_version = "fake-anthropic/1"
    request_id_header = "request-id"
    drop_after = 5  # message_start, ping, content_block_start, two text deltas

    def answer(self, path: str, body: Any) -> None:
        if not isinstance(body, dict):
            return self._error(400, "the body is not a JSON object")
        model = str(body.get("model") or "")
        if path.endswith((":rawPredict", ":streamRawPredict")):  # Vertex: the model in the path
            model = path.rsplit("/", 1)[-1].split(":", 1)[0]
            body = {**body, "stream": path.endswith(":streamRawPredict") or body.get("stream")}
        elif path.startswith("/model/") and path.endswith("/invoke"):  # Bedrock, not streamed
            model = path.split("/")[2]
        elif path != "/v1/messages":
            return self._error(404, f"no route {path}")
        if model.startswith("fail-"):
            status = int(model[5:])
            return self._error(status, f"injected failure {status}")
        refusal = self.key_refusal(model)
        if refusal is not None:
            return self._error(401, refusal)
        if model == "sparse":
            return self._json(200, {"type": "message", "content": None, "usage": None})
        tool = _first_tool_name(body.get("tools")) if model == "tool-use" else None
        text = _structured(body)
        if body.get("stream"):
            return self._sse(
                _events(model, tool, text, self.stream_error(model, "Overloaded")), model
            )
        self._json(200, _message(model, tool, text))

    def _error(self, status: int, message: str) -> None:
        kind = ERROR_TYPES.get(status, "api_error")
        self._json(status, {"type": "error", "error": {"type": kind, "message": message}})


def _usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": INPUT_TOKENS,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": CACHE_CREATION,
        "cache_read_input_tokens": CACHE_READ,
    }


def _structured(body: dict[str, Any]) -> str | None:
    """The JSON answer to a request for structured output, or None."""
    output_format = (body.get("output_config") or {}).get("format") or {}
    if output_format.get("type") != "json_schema":
        return None
    samples = {"string": "42", "integer": 42, "number": 4.2, "boolean": True}
    properties = (output_format.get("schema") or {}).get("properties") or {}
    return json.dumps({k: samples.get(str(v.get("type")), "42") for k, v in properties.items()})


def _message(model: str, tool: str | None, text: str | None = None) -> dict[str, Any]:
    answer = TOOL_TEXT if tool else text or ANSWER
    content: list[dict[str, Any]] = [{"type": "text", "text": answer}]
    if tool:
        content.append(
            {
                "type": "tool_use",
                "id": TOOL_ID,
                "name": tool,
                "input": json.loads("".join(TOOL_INPUT)),
            }
        )
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool else "end_turn",
        "stop_sequence": None,
        "usage": _usage(len(WORDS)),
    }


def _words(model: str) -> list[str]:
    if model.startswith("words-"):
        return [" word"] * int(model[6:])
    if model == "slow":
        return [" slow"] * SLOW_EVENTS
    return WORDS


def _events(model: str, tool: str | None, text: str | None, failure: str | None) -> Any:
    """The SSE events of a streamed message: (event name, payload). With ``failure``, an
    ``error`` event saying it in place of the second text delta."""

    def event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        return kind, {"type": kind, **fields}

    start = {**_message(model, tool, text), "content": [], "stop_reason": None, "usage": _usage(1)}
    yield event("message_start", message=start)
    yield event("ping")
    yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    words = [TOOL_TEXT] if tool else [text] if text else _words(model)
    for number, word in enumerate(words):
        if failure is not None and number == 1:
            yield event("error", error={"type": "overloaded_error", "message": failure})
            return
        yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": word})
    yield event("content_block_stop", index=0)
    if tool:
        block = {"type": "tool_use", "id": TOOL_ID, "name": tool, "input": {}}
        yield event("content_block_start", index=1, content_block=block)
        for piece in TOOL_INPUT:
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield event("content_block_delta", index=1, delta=delta)
        yield event("content_block_stop", index=1)
    reason = "tool_use" if tool else "end_turn"
    yield event(
        "message_delta",
        delta={"stop_reason": reason, "stop_sequence": None},
        usage={"output_tokens": len(words)},
    )
    yield event("message_stop")


def _first_tool_name(tools: Any) -> str | None:
    for tool in tools or []:
        name = tool.get("name") if isinstance(tool, dict) else None
        if name:
            return str(name)
    return None


def main() -> None:
    serve(AnthropicServer())


if __name__ == "__main__":
    main()
