"""A local Gemini API server for the google-genai instrumentation tests and the benchmark.

A real HTTP/1.1 server on 127.0.0.1 (``provider_server.py``: threads,
keep-alive, chunked SSE), so the real ``google-genai`` client talks to it
through its real transport (``HttpOptions(base_url=server.url)``). It answers
the Gemini API's (``v1beta`` or ``v1``):

- ``POST /{version}/models/{model}:generateContent`` with a
  ``GenerateContentResponse`` as JSON;
- ``POST /{version}/models/{model}:streamGenerateContent?alt=sse`` with the
  same, a piece of the text in each ``data:`` event, the finish reason and
  the usage in the last;
- ``POST /{version}/models/{model}:embedContent`` and ``:batchEmbedContents``
  with one vector of ``DIMENSIONS`` values per content.

The model name picks the behaviour:

==================  =====================================================
``fail-<status>``   that HTTP status with Google's error body (``code``,
                    ``message``, ``status``: ``STATUSES``)
``tool-call``       the answer is a short text and a ``functionCall`` of
                    the first function declared
``slow``, ``drop``  as every provider server (``provider_server.py``); ``drop``
                    after two text pieces
``sparse``          a JSON answer with most fields missing or null
``words-<n>``       a stream of ``n`` one-word pieces, at full speed
``stream-error``    a stream whose second ``data:`` is an error (500)
``refuse-key-...``  a 401 quoting the API key (``provider_server.py``),
                    ``stream-error-key-...`` a stream error quoting it
anything else       a normal answer: ``ANSWER``, word by word when streamed
==================  =====================================================

Every request is kept in ``requests`` (path, lower-cased headers, decoded body).
"""

from __future__ import annotations

from typing import Any

from .provider_server import ProviderHandler, ProviderServer, serve

ANSWER = "Layer is watching this conversation."
WORDS = ["Layer", " is", " watching", " this", " conversation."]
PROMPT_TOKENS = 11
TOOL_TEXT = "Let me check."
TOOL_ARGS = {"city": "Paris"}
TOOL_ID = "call_g1"
RESPONSE_ID = "resp_g1"
DIMENSIONS = 4
SLOW_EVENTS = 200
#: Google's ``status`` for each HTTP status it documents.
STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


class GoogleGenAIServer(ProviderServer):
    """``genai.Client(api_key="k", http_options={"base_url": server.url})`` talks to it."""

    def __init__(self) -> None:
        super().__init__()
        self.handler = _Handler


class _Handler(ProviderHandler):
    server_version = "fake-gemini/1"
    request_id_header = "x-request-id"

    def answer(self, path: str, body: Any) -> None:
        if not isinstance(body, dict):
            return self._error(400, "the body is not a JSON object")
        parts = path.split("/")
        if len(parts) != 4 or parts[1] not in ("v1", "v1beta") or parts[2] != "models":
            return self._error(404, f"no route {path}")
        model, _, method = parts[3].partition(":")
        if model.startswith("fail-"):
            status = int(model[5:])
            return self._error(status, f"injected failure {status}")
        refusal = self.key_refusal(model)
        if refusal is not None:
            return self._error(401, refusal)
        if method == "generateContent":
            if model == "sparse":
                return self._json(200, {"candidates": None, "usageMetadata": None})
            return self._json(200, _response(model, _tool(body) if model == "tool-call" else None))
        if method == "streamGenerateContent":
            tool = _tool(body) if model == "tool-call" else None
            failure = self.stream_error(model, "the model fell over")
            return self._sse(((None, event) for event in _events(model, tool, failure)), model)
        if method == "embedContent":
            return self._json(200, {"embedding": {"values": _vector()}})
        if method == "batchEmbedContents":
            count = len(body.get("requests") or [])
            return self._json(200, {"embeddings": [{"values": _vector()} for _ in range(count)]})
        return self._error(404, f"no method {method}")

    def api_key(self) -> str:
        return self.headers.get("X-Goog-Api-Key") or ""

    def _error(self, status: int, message: str) -> None:
        kind = STATUSES.get(status, "UNKNOWN")
        self._json(status, {"error": {"code": status, "message": message, "status": kind}})


def _vector() -> list[float]:
    return [0.25 * (number + 1) for number in range(DIMENSIONS)]


def _tool(body: dict[str, Any]) -> str | None:
    """The name of the first function the request declares."""
    for tool in body.get("tools") or []:
        for declaration in (tool or {}).get("functionDeclarations") or []:
            name = (declaration or {}).get("name")
            if name:
                return str(name)
    return None


def _usage(output_tokens: int) -> dict[str, Any]:
    return {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": output_tokens,
        "totalTokenCount": PROMPT_TOKENS + output_tokens,
    }


def _response(
    model: str, tool: str | None, text: str | None = None, finish: str | None = "STOP"
) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"text": TOOL_TEXT if tool else ANSWER if text is None else text}
    ]
    if tool:
        parts.append({"functionCall": {"id": TOOL_ID, "name": tool, "args": TOOL_ARGS}})
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    answer: dict[str, Any] = {
        "candidates": [candidate],
        "modelVersion": f"{model}-001",
        "responseId": RESPONSE_ID,
    }
    if finish:
        answer["usageMetadata"] = _usage(len(WORDS))
    return answer


def _words(model: str) -> list[str]:
    if model.startswith("words-"):
        return [" word"] * int(model[6:])
    if model == "slow":
        return [" slow"] * SLOW_EVENTS
    return WORDS


def _events(model: str, tool: str | None, failure: str | None = None) -> Any:
    """The ``data:`` payloads of a streamed answer: a piece of the text each; the last one
    carries the finish reason, the usage (and the function call, for ``tool-call``). With
    ``failure``, an error (as Google sends one mid-stream) in place of the second piece."""
    if tool:
        yield _response(model, None, TOOL_TEXT, finish=None)
        last = _response(model, tool, "", finish="STOP")
        last["candidates"][0]["content"]["parts"] = last["candidates"][0]["content"]["parts"][1:]
        yield last
        return
    words = _words(model)
    for number, word in enumerate(words):
        if failure is not None and number == 1:
            yield {"error": {"code": 500, "message": failure, "status": "INTERNAL"}}
            return
        yield _response(model, None, word, finish="STOP" if number == len(words) - 1 else None)


def main() -> None:
    serve(GoogleGenAIServer())


if __name__ == "__main__":
    main()
