"""A local OpenAI-compatible HTTP server for the instrumentation tests and the benchmark.

A real HTTP/1.1 server on 127.0.0.1 (``provider_server.py``: threads,
keep-alive, chunked SSE), so the real ``openai`` client talks to it through
its real transport. It answers:

- ``POST /v1/chat/completions``: JSON, or SSE chunks with ``stream: true``
  (a usage chunk only when ``stream_options.include_usage`` is set);
- ``POST /v1/responses``: JSON, or the Responses API's typed SSE events;
- ``POST /v1/embeddings`` (``float`` or ``base64``) and ``POST /v1/moderations``.

The model name picks the behaviour:

==================  =====================================================
``fail-<status>``   that HTTP status with an OpenAI-style error body, whose
                    ``code`` is ``"injected"``; ``fail-<status>-<code>``
                    gives that ``code`` instead (digits: an integer;
                    ``none``: null)
``tool-call``       the answer is a call of the first tool given
``slow``            a long stream, ``SLOW_DELAY`` seconds between chunks
``drop``            a stream cut off (connection closed) after 2 chunks
                    (both as every provider server: ``provider_server.py``)
``stream-error``    a stream whose second event is an error event
                    (``stream-error-key-...``: its message quoting the API key)
``failed-key-...``  Responses API: a failed response (streamed: ending in
                    ``response.failed``) whose error quotes the API key
``sparse``          a JSON answer with most fields missing or null
``words-<n>``       a stream of ``n`` one-word chunks, at full speed
``refuse-key-...``  a 401 quoting the API key (``provider_server.py``)
anything else       a normal answer: ``ANSWER``, word by word when streamed
==================  =====================================================

Run alone (``python -m tests.openai_server``), it prints its base URL and
serves until its standard input ends: the benchmark uses it that way, so that
the server's CPU is not counted as the client's.

A request for structured output (a ``json_schema`` response format) is
answered with a JSON object that fits the schema's properties. Every request
is kept in ``requests`` (path, lower-cased headers, decoded body).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from .provider_server import ProviderHandler, ProviderServer, serve

ANSWER = "Layer is watching this conversation."
WORDS = ["Layer", " is", " watching", " this", " conversation."]
PROMPT_TOKENS = 11
CREATED = 1_700_000_000  # fixed, so that two runs of the same call answer the same
TOOL_ARGUMENTS = ['{"city":', ' "Paris"}']
SLOW_CHUNKS = 200
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class OpenAIServer(ProviderServer):
    """``with OpenAIServer() as server: OpenAI(base_url=server.url, api_key="test")``."""

    base_path = "/v1"

    def __init__(self) -> None:
        super().__init__()
        self.handler = _Handler


class _Handler(ProviderHandler):
    server_version = "fake-openai/1"

    def answer(self, path: str, body: Any) -> None:
        if not isinstance(body, dict):
            return self._error(400, "the body is not a JSON object")
        model = str(body.get("model") or "")
        if model.startswith("fail-"):
            status, _, code = model[5:].partition("-")
            return self._error(int(status), f"injected failure {status}", _error_code(code))
        refusal = self.key_refusal(model)
        if refusal is not None:
            return self._error(401, refusal, "invalid_api_key")
        routes = {
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
            "/v1/embeddings": self._embeddings,
            "/v1/moderations": self._moderations,
        }
        route = routes.get(path)
        if route is None:
            return self._error(404, f"no route {path}")
        route(body, model)

    def _error(self, status: int, message: str, code: Any = "injected") -> None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        self._json(
            status, {"error": {"message": message, "type": kind, "param": None, "code": code}}
        )

    # -- chat completions ----------------------------------------------------------

    def _chat(self, body: dict[str, Any], model: str) -> None:
        tool = _first_tool_name(body.get("tools")) if model == "tool-call" else None
        schema = _json_schema(body.get("response_format"))
        content = json.dumps(_fitting(schema)) if schema is not None else ANSWER
        created = CREATED
        if model == "sparse":
            return self._json(200, {"choices": [{"message": None}], "usage": None})
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
            if tool:
                message["content"] = None
                message["tool_calls"] = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": tool, "arguments": "".join(TOOL_ARGUMENTS)},
                    }
                ]
            return self._json(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "logprobs": None,
                            "finish_reason": "tool_calls" if tool else "stop",
                        }
                    ],
                    "usage": _chat_usage(),
                },
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                payload["usage"] = None
            return payload

        def events() -> Any:
            if tool:
                yield (
                    None,
                    chunk(
                        {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": tool, "arguments": ""},
                                }
                            ],
                        }
                    ),
                )
                for piece in TOOL_ARGUMENTS:
                    yield (
                        None,
                        chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    )
                yield None, chunk({}, "tool_calls")
            else:
                yield None, chunk({"role": "assistant", "content": ""})
                failure = self.stream_error(model, "the model fell over")
                if failure is not None:
                    yield None, {"error": {"message": failure, "type": "server_error"}}
                pieces = _pieces(model, schema is None, content)
                for piece in pieces:
                    yield None, chunk({"content": piece})
                yield None, chunk({}, "stop")
            if include_usage:
                yield (
                    None,
                    {
                        "id": "chatcmpl-1",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": _chat_usage(),
                    },
                )
            yield None, "[DONE]"

        self._sse(events(), model)

    # -- responses ----------------------------------------------------------------

    def _responses(self, body: dict[str, Any], model: str) -> None:
        tool = _first_tool_name(body.get("tools")) if model == "tool-call" else None
        text_format = (body.get("text") or {}).get("format") or {}
        schema = text_format.get("schema") if text_format.get("type") == "json_schema" else None
        content = json.dumps(_fitting(schema)) if schema is not None else ANSWER
        if model == "sparse":
            return self._json(200, {"object": "response", "output": None, "usage": None})
        created = CREATED
        if tool:
            item: dict[str, Any] = {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": tool,
                "arguments": "".join(TOOL_ARGUMENTS),
                "status": "completed",
            }
        else:
            item = {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
                ],
            }

        def response(status: str, output: list[Any], usage: Any) -> dict[str, Any]:
            return {
                "id": "resp_1",
                "object": "response",
                "created_at": created,
                "model": model,
                "status": status,
                "output": output,
                "usage": usage,
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "metadata": {},
                "parallel_tool_calls": True,
                "temperature": 1.0,
                "tool_choice": "auto",
                "tools": body.get("tools") or [],
                "top_p": 1.0,
                "text": body.get("text") or {"format": {"type": "text"}},
            }

        failed = self.key_quote(model, "failed-key-")
        if failed is not None:  # a response that failed, its error quoting the API key
            answer = response("failed", [], None)
            answer["error"] = {"code": "server_error", "message": failed}
        else:
            answer = response("completed", [item], _responses_usage())
        if not body.get("stream"):
            return self._json(200, answer)
        failure = self.stream_error(model, "the model fell over")

        def events() -> Any:
            number = iter(range(10_000))

            def event(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
                return kind, {"type": kind, "sequence_number": next(number), **fields}

            yield event("response.created", response=response("in_progress", [], None))
            yield event("response.in_progress", response=response("in_progress", [], None))
            if failure is not None:
                code = "server_error" if model == "stream-error" else failure
                yield event("error", message=failure, code=code, param=None)
                return
            if failed is not None:
                yield event("response.failed", response=answer)
                return
            if tool:
                yield event(
                    "response.output_item.added",
                    output_index=0,
                    item={**item, "arguments": "", "status": "in_progress"},
                )
                for piece in TOOL_ARGUMENTS:
                    yield event(
                        "response.function_call_arguments.delta",
                        item_id="fc_1",
                        output_index=0,
                        delta=piece,
                    )
                yield event(
                    "response.function_call_arguments.done",
                    item_id="fc_1",
                    output_index=0,
                    arguments=item["arguments"],
                )
            else:
                yield event(
                    "response.output_item.added",
                    output_index=0,
                    item={**item, "status": "in_progress", "content": []},
                )
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                yield event(
                    "response.content_part.added",
                    item_id="msg_1",
                    output_index=0,
                    content_index=0,
                    part=part,
                )
                pieces = _pieces(model, schema is None, content)
                for piece in pieces:
                    yield event(
                        "response.output_text.delta",
                        item_id="msg_1",
                        output_index=0,
                        content_index=0,
                        delta=piece,
                        logprobs=[],
                    )
                yield event(
                    "response.output_text.done",
                    item_id="msg_1",
                    output_index=0,
                    content_index=0,
                    text=content,
                    logprobs=[],
                )
                yield event(
                    "response.content_part.done",
                    item_id="msg_1",
                    output_index=0,
                    content_index=0,
                    part={**part, "text": content},
                )
            yield event("response.output_item.done", output_index=0, item=item)
            yield event("response.completed", response=answer)

        self._sse(events(), model)

    # -- embeddings and moderations ----------------------------------------------------------

    def _embeddings(self, body: dict[str, Any], model: str) -> None:
        given = body.get("input")
        inputs = [given] if isinstance(given, str) or _is_tokens(given) else list(given or [])
        size = int(body.get("dimensions") or 4)
        vector = [round(0.1 * (i + 1), 3) for i in range(size)]
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        self._json(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": encoded}
                    for i in range(len(inputs))
                ],
                "model": model,
                "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
            },
        )

    def _moderations(self, body: dict[str, Any], model: str) -> None:
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else list(given or [])
        results = []
        for item in inputs:
            text = item if isinstance(item, str) else str(item.get("text") or "")
            violent = "kill" in text.lower()
            categories = {name: violent and name == "violence" for name in CATEGORIES}
            scores = {name: (0.91 if categories[name] else 0.01) for name in CATEGORIES}
            results.append(
                {
                    "flagged": violent,
                    "categories": categories,
                    "category_scores": scores,
                    "category_applied_input_types": {name: ["text"] for name in CATEGORIES},
                }
            )
        self._json(
            200, {"id": "modr-1", "model": model or "omni-moderation-latest", "results": results}
        )


def _error_code(text: str) -> Any:
    """The ``code`` of an error body, as a ``fail-<status>-<code>`` model name spells it."""
    if not text:
        return "injected"
    if text == "none":
        return None
    return int(text) if text.isdigit() else text


def _pieces(model: str, plain: bool, content: str) -> list[str]:
    """The text chunks of a streamed answer."""
    if model == "slow":
        return [f" w{i}" for i in range(SLOW_CHUNKS)]
    if model.startswith("words-"):
        return [f" w{i}" for i in range(int(model[6:]))]
    return WORDS if plain else [content]


def _chat_usage() -> dict[str, Any]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": len(WORDS),
        "total_tokens": PROMPT_TOKENS + len(WORDS),
    }


def _responses_usage() -> dict[str, Any]:
    return {
        "input_tokens": PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(WORDS),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": PROMPT_TOKENS + len(WORDS),
    }


def _first_tool_name(tools: Any) -> str | None:
    for tool in tools or []:
        name = (tool.get("function") or {}).get("name") or tool.get("name")
        if name:
            return str(name)
    return None


def _json_schema(response_format: Any) -> dict[str, Any] | None:
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else {}
    return None


def _fitting(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON object that fits a (flat) JSON schema's properties."""
    samples = {"string": "42", "integer": 42, "number": 4.2, "boolean": True}
    return {
        name: samples.get(str(spec.get("type")), "42")
        for name, spec in (schema.get("properties") or {}).items()
    }


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) for v in value)


def main() -> None:
    serve(OpenAIServer())


if __name__ == "__main__":
    main()
