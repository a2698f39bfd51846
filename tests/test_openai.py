"""OpenAI instrumentation: the real ``openai`` client against a local OpenAI-compatible server.

Every call shape, sync and async, is made with the real client pointed at
``tests/openai_server.py``; the actions land in the real local collector.
Tests check exact action counts after ``client.flush()``, never sleep, and
compare what the caller gets (and what goes over the wire) with and without
the instrumentation. Shapes a version of openai lacks are skipped; this file
runs once per major version (see ``test_openai_versions.py``).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

openai = pytest.importorskip("openai")

from pydantic import BaseModel  # noqa: E402  (openai depends on pydantic)

from layer_sdk import Client  # noqa: E402
from layer_sdk.collector import LocalCollector  # noqa: E402
from layer_sdk.instrumentation._openai import call as _openai  # noqa: E402
from layer_sdk.instrumentation._streams import StreamRecord  # noqa: E402

from .helpers import (  # noqa: E402
    actions_of,
    assert_bugs_logged_once,
    break_on_purpose,
    by_kind,
    check_error,
    check_times,
    drain,
    instrumentation_fixtures,
    one,
    then,
    wait_until,
)
from .openai_server import ANSWER, PROMPT_TOKENS, WORDS, OpenAIServer  # noqa: E402
from .provider_server import KEY_QUOTES  # noqa: E402

USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": len(WORDS),
    "total_tokens": PROMPT_TOKENS + len(WORDS),
}
RESPONSES_USAGE = {
    "input_tokens": PROMPT_TOKENS,
    "output_tokens": 5,
    "total_tokens": 16,
    "cached_tokens": 0,
    "reasoning_tokens": 0,
}
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Did you know that Layer is the best product?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
        "strict": True,
    }
]
MODES = ["sync", "async"]
CHAT_CREATE: Any = openai.resources.chat.completions.Completions.create


class Answer(BaseModel):
    answer: str


# -- fixtures and helpers -------------------------------------------------------------------------


server, layer, _fresh_problem_log, _no_leftover_patches, _errors_fit_the_wire_contract = (
    instrumentation_fixtures("openai", _openai.OPENAI.problems, OpenAIServer)
)


def perform(
    mode: str, server: OpenAIServer, action: Callable[[Any], Any], api_key: str = "sk-test"
) -> Any:
    """Run ``action(openai client)`` with a sync client, or with an async one in an event loop.

    ``action`` may return an awaitable (async mode): it is awaited.
    """
    if mode == "sync":
        client = openai.OpenAI(base_url=server.url, api_key=api_key, max_retries=0)
        try:
            return action(client)
        finally:
            client.close()

    async def main() -> Any:
        client = openai.AsyncOpenAI(base_url=server.url, api_key=api_key, max_retries=0)
        try:
            result = action(client)
            return await result if inspect.isawaitable(result) else result
        finally:
            await client.close()

    return asyncio.run(main())


def text_of(chunks: list[Any]) -> str:
    return "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)


def chat_with_helpers(client: Any) -> Any:
    """``chat.completions`` where it has ``parse``/``stream``, else the 1.x ``beta`` one."""
    if hasattr(client.chat.completions, "parse"):
        return client.chat.completions
    beta = getattr(getattr(getattr(client, "beta", None), "chat", None), "completions", None)
    if beta is not None and hasattr(beta, "parse"):
        return beta
    pytest.skip(f"openai {openai.__version__} has no chat.completions.parse/stream")


def needs_responses() -> None:
    if not hasattr(openai.OpenAI(api_key="x"), "responses"):
        pytest.skip(f"openai {openai.__version__} has no Responses API")


def has_parameter(method: Any, name: str) -> bool:
    return name in inspect.signature(method).parameters


# -- chat completions -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_chat_completion_records_prompt_and_output_with_usage(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    with layer.session_context() as session_id:
        completion = perform(
            mode,
            server,
            lambda c: c.chat.completions.create(
                model="gpt-test", messages=MESSAGES, temperature=0.2, max_tokens=64, seed=7
            ),
        )
    assert isinstance(completion, openai.types.chat.ChatCompletion)
    assert completion.choices[0].message.content == ANSWER

    actions = actions_of(layer, collector, session_id, 2)
    prompt, output = actions
    assert prompt["kind"] == "completion_prompt"
    assert prompt["data"] == {"messages": MESSAGES}
    assert prompt["attributes"] == {
        "model.id": "gpt-test",
        "model.provider": "openai",
        "openai.operation": "chat.completions.create",
        "temperature": 0.2,
        "max_tokens": 64,
        "seed": 7,
    }
    assert output["kind"] == "completion_output"
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]
    assert output["attributes"]["model.id"] == "gpt-test"
    assert output["attributes"]["response.id"] == "chatcmpl-1"
    assert output["attributes"]["finish_reason"] == "stop"
    assert "error" not in output
    check_times(actions)


@pytest.mark.parametrize("mode", MODES)
def test_multimodal_parts_become_attachments(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "text", "text": "And this sound?"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    with layer.session_context() as session_id:
        perform(
            mode,
            server,
            lambda c: c.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": content}]
            ),
        )
    actions = actions_of(layer, collector, session_id, 4)
    prompt = one(actions, "completion_prompt")
    assert prompt["data"] == {
        "messages": [{"role": "user", "content": "What is in this picture?\nAnd this sound?"}]
    }
    attachments = by_kind(actions, "completion_prompt_attachment")
    assert [a["data"] for a in attachments] == [
        {
            "type": "image_url",
            "url": "https://example.com/cat.png",
            "detail": "low",
            "role": "user",
            "message_index": 0,
        },
        {
            "type": "input_audio",
            "data": "UklGRg==",
            "format": "wav",
            "role": "user",
            "message_index": 0,
        },
    ]
    assert attachments[0]["attributes"]["model.id"] == "gpt-test"
    one(actions, "completion_output")


@pytest.mark.parametrize("mode", MODES)
def test_tool_calls_are_recorded_one_action_each(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    with layer.session_context() as session_id:
        completion = perform(
            mode,
            server,
            lambda c: c.chat.completions.create(
                model="tool-call", messages=MESSAGES, tools=TOOLS, tool_choice="auto"
            ),
        )
    assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
    actions = actions_of(layer, collector, session_id, 3)
    prompt = one(actions, "completion_prompt")
    assert prompt["attributes"]["tools"] == ["get_weather"]
    assert prompt["attributes"]["tool_choice"] == "auto"
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": None}]}
    assert output["attributes"]["finish_reason"] == "tool_calls"
    call = one(actions, "completion_tool_call")
    assert call["data"] == {
        "id": "call_1",
        "type": "function",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }


def test_the_tool_history_in_the_prompt_is_kept(
    layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    history = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    with layer.session_context() as session_id:
        perform(
            "sync",
            server,
            lambda c: c.chat.completions.create(model="gpt-test", messages=history, tools=TOOLS),
        )
    prompt = one(actions_of(layer, collector, session_id, 2), "completion_prompt")
    assert prompt["data"]["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_streamed_chat_completion(
    mode: str,
    include_usage: bool,
    layer: Client,
    collector: LocalCollector,
    server: OpenAIServer,
) -> None:
    options: dict[str, Any] = {}
    if include_usage:
        if not has_parameter(CHAT_CREATE, "stream_options"):
            pytest.skip(f"openai {openai.__version__} has no stream_options")
        options["stream_options"] = {"include_usage": True}

    def use(stream: Any) -> Any:
        assert isinstance(stream, openai.Stream if mode == "sync" else openai.AsyncStream)
        assert stream.response.status_code == 200
        return drain(mode, stream)

    def call(c: Any) -> Any:
        return then(
            mode,
            c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True, **options),
            use,
        )

    with layer.session_context() as session_id:
        chunks = perform(mode, server, call)
    assert text_of(chunks) == ANSWER
    assert all(isinstance(c, openai.types.chat.ChatCompletionChunk) for c in chunks)

    actions = actions_of(layer, collector, session_id, 2)
    prompt = one(actions, "completion_prompt")
    assert prompt["attributes"]["stream"] is True
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["attributes"]["incomplete"] is False
    assert output["attributes"]["finish_reason"] == "stop"
    if include_usage:
        assert output["scanners"] == [{"name": "usage", "data": USAGE}]
    else:
        assert "scanners" not in output  # usage unknown: no scanner, and none was asked for
    # Nothing was added to the request: stream_options only when the caller gave it.
    (request,) = server.requests
    assert ("stream_options" in request.body) is include_usage
    check_times(actions)


@pytest.mark.parametrize("mode", MODES)
def test_streamed_tool_calls(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    def call(c: Any) -> Any:
        return then(
            mode,
            c.chat.completions.create(
                model="tool-call", messages=MESSAGES, tools=TOOLS, stream=True
            ),
            lambda stream: drain(mode, stream),
        )

    with layer.session_context() as session_id:
        perform(mode, server, call)
    actions = actions_of(layer, collector, session_id, 3)
    assert one(actions, "completion_tool_call")["data"] == {
        "id": "call_1",
        "type": "function",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    }
    assert one(actions, "completion_output")["attributes"]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("mode", MODES)
def test_chat_completions_parse(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    with layer.session_context() as session_id:
        parsed = perform(
            mode,
            server,
            lambda c: chat_with_helpers(c).parse(
                model="gpt-test", messages=MESSAGES, response_format=Answer
            ),
        )
    assert parsed.choices[0].message.parsed == Answer(answer="42")
    actions = actions_of(layer, collector, session_id, 2)
    prompt = one(actions, "completion_prompt")
    assert prompt["attributes"]["openai.operation"].endswith("chat.completions.parse")
    assert prompt["attributes"]["response_format"] == "Answer"
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": '{"answer": "42"}'}]}
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]


def read_stream_helper(mode: str, manager: Any, final: str) -> Any:
    """Read a ``.stream()`` helper to its end and return its final object (awaitable if async)."""
    if mode == "sync":
        with manager as stream:
            for _ in stream:
                pass
            return getattr(stream, final)()

    async def run() -> Any:
        async with manager as stream:
            async for _ in stream:
                pass
            return await getattr(stream, final)()

    return run()


@pytest.mark.parametrize("mode", MODES)
def test_chat_completions_stream_helper(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    def call(c: Any) -> Any:
        manager = chat_with_helpers(c).stream(model="gpt-test", messages=MESSAGES)
        return read_stream_helper(mode, manager, "get_final_completion")

    with layer.session_context() as session_id:
        final = perform(mode, server, call)
    assert final.choices[0].message.content == ANSWER
    actions = actions_of(layer, collector, session_id, 2)
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["attributes"]["incomplete"] is False


# -- the Responses API ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_responses_create(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    needs_responses()
    given = [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Describe this"},
                {
                    "type": "input_image",
                    "image_url": "https://example.com/cat.png",
                    "detail": "auto",
                },
            ],
        }
    ]
    with layer.session_context() as session_id:
        response = perform(
            mode,
            server,
            lambda c: c.responses.create(
                model="gpt-test",
                instructions="Be brief.",
                input=given,
                temperature=0.5,
                max_output_tokens=100,
            ),
        )
    assert response.output_text == ANSWER
    actions = actions_of(layer, collector, session_id, 3)
    prompt = one(actions, "completion_prompt")
    assert prompt["data"] == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Describe this"},
        ]
    }
    assert prompt["attributes"]["temperature"] == 0.5
    assert prompt["attributes"]["max_output_tokens"] == 100
    assert prompt["attributes"]["openai.operation"] == "responses.create"
    assert one(actions, "completion_prompt_attachment")["data"] == {
        "type": "input_image",
        "image_url": "https://example.com/cat.png",
        "detail": "auto",
        "role": "user",
        "message_index": 1,
    }
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["scanners"] == [{"name": "usage", "data": RESPONSES_USAGE}]
    assert output["attributes"]["status"] == "completed"
    check_times(actions)


@pytest.mark.parametrize("mode", MODES)
def test_streamed_responses(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    needs_responses()

    def use(stream: Any) -> Any:
        assert isinstance(stream, openai.Stream if mode == "sync" else openai.AsyncStream)
        return drain(mode, stream)

    def call(c: Any) -> Any:
        return then(mode, c.responses.create(model="gpt-test", input="Hello", stream=True), use)

    with layer.session_context() as session_id:
        events = perform(mode, server, call)
    assert events[-1].type == "response.completed"
    actions = actions_of(layer, collector, session_id, 2)
    assert one(actions, "completion_prompt")["data"] == {
        "messages": [{"role": "user", "content": "Hello"}]
    }
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["scanners"] == [{"name": "usage", "data": RESPONSES_USAGE}]
    assert output["attributes"]["incomplete"] is False


@pytest.mark.parametrize("api", ["chat", "responses"])
@pytest.mark.parametrize("mode", MODES)
def test_a_stream_is_returned_as_openais_own_class(
    mode: str,
    api: str,
    make_client: Callable[..., Client],
    collector: LocalCollector,
    server: OpenAIServer,
) -> None:
    """``type(stream) is openai.Stream`` (``AsyncStream``), SDK on or off.

    The stream is observed, not replaced by a subclass; closing it early
    still ends its record (see the tests of broken-off streams below).
    """
    if api == "responses":
        needs_responses()
    expected = openai.Stream if mode == "sync" else openai.AsyncStream
    types: list[type] = []

    def use(stream: Any) -> Any:
        types.append(type(stream))
        return drain(mode, stream)

    def call(c: Any) -> Any:
        if api == "chat":
            created = c.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
        else:
            created = c.responses.create(model="gpt-test", input="Hello", stream=True)
        return then(mode, created, use)

    perform(mode, server, call)  # without the SDK first
    layer = make_client()
    with layer.session_context() as session_id:
        perform(mode, server, call)
    assert types == [expected, expected], [t.__mro__ for t in types]  # not a subclass
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is False
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_responses_function_calls(
    mode: str, stream: bool, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    needs_responses()

    def call(c: Any) -> Any:
        result = c.responses.create(
            model="tool-call", input="Weather in Paris?", tools=RESPONSES_TOOLS, stream=stream
        )
        return then(mode, result, lambda r: drain(mode, r) if stream else r)

    with layer.session_context() as session_id:
        perform(mode, server, call)
    actions = actions_of(layer, collector, session_id, 3)
    assert one(actions, "completion_prompt")["attributes"]["tools"] == ["get_weather"]
    assert one(actions, "completion_tool_call")["data"] == {
        "id": "call_1",
        "type": "function",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
        "status": "completed",
    }
    assert one(actions, "completion_output")["data"] == {"messages": []}


@pytest.mark.parametrize("mode", MODES)
def test_responses_parse(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    needs_responses()
    if not hasattr(openai.resources.responses.Responses, "parse"):
        pytest.skip(f"openai {openai.__version__} has no responses.parse")
    with layer.session_context() as session_id:
        parsed = perform(
            mode,
            server,
            lambda c: c.responses.parse(model="gpt-test", input="The answer?", text_format=Answer),
        )
    assert parsed.output_parsed == Answer(answer="42")
    actions = actions_of(layer, collector, session_id, 2)
    prompt = one(actions, "completion_prompt")
    assert prompt["attributes"]["openai.operation"] == "responses.parse"
    assert prompt["attributes"]["response_format"] == "Answer"
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": '{"answer": "42"}'}]}


@pytest.mark.parametrize("mode", MODES)
def test_responses_stream_helper(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    needs_responses()
    if not hasattr(openai.resources.responses.Responses, "stream"):
        pytest.skip(f"openai {openai.__version__} has no responses.stream")

    def call(c: Any) -> Any:
        manager = c.responses.stream(model="gpt-test", input="Hello")
        return read_stream_helper(mode, manager, "get_final_response")

    with layer.session_context() as session_id:
        final = perform(mode, server, call)
    assert final.output_text == ANSWER
    actions = actions_of(layer, collector, session_id, 2)
    assert one(actions, "completion_output")["data"] == {
        "messages": [{"role": "assistant", "content": ANSWER}]
    }


# -- embeddings and moderations -------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [None, "float"])
@pytest.mark.parametrize("mode", MODES)
def test_embeddings(
    mode: str,
    encoding: str | None,
    layer: Client,
    collector: LocalCollector,
    server: OpenAIServer,
) -> None:
    options = {"encoding_format": encoding} if encoding else {}
    with layer.session_context() as session_id:
        result = perform(
            mode,
            server,
            lambda c: c.embeddings.create(
                model="text-embedding-3-small", input=["alpha", "beta"], **options
            ),
        )
    assert len(result.data) == 2
    assert [round(x, 3) for x in result.data[0].embedding] == [0.1, 0.2, 0.3, 0.4]
    (action,) = actions_of(layer, collector, session_id, 1)
    assert action["kind"] == "embeddings"
    assert action["data"] == {"input": ["alpha", "beta"]}
    assert action["attributes"]["model.id"] == "text-embedding-3-small"
    assert action["attributes"]["embeddings.count"] == 2
    assert action["attributes"]["embeddings.dimensions"] == 4
    assert action["scanners"] == [
        {"name": "usage", "data": {"prompt_tokens": 6, "total_tokens": 6}}
    ]
    if encoding:
        assert action["attributes"]["encoding_format"] == "float"
    else:  # the client's own default (base64) is its business, not a parameter the caller set
        assert "encoding_format" not in action["attributes"]


@pytest.mark.parametrize("mode", MODES)
def test_moderations_one_scanner_per_result(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    with layer.session_context() as session_id:
        result = perform(
            mode,
            server,
            lambda c: c.moderations.create(
                model="omni-moderation-latest", input=["hello there", "I will kill the process"]
            ),
        )
    assert [r.flagged for r in result.results] == [False, True]
    (action,) = actions_of(layer, collector, session_id, 1)
    assert action["kind"] == "moderation"
    assert action["data"] == {"input": ["hello there", "I will kill the process"]}
    assert action["attributes"]["flagged"] is True
    assert action["attributes"]["model.id"] == "omni-moderation-latest"
    scanners = action["scanners"]
    assert [s["name"] for s in scanners] == ["moderation", "moderation"]
    assert [s["data"]["flagged"] for s in scanners] == [False, True]
    assert scanners[1]["data"]["index"] == 1
    assert scanners[1]["data"]["categories"]["violence"] is True
    assert scanners[1]["data"]["categories"]["self-harm"] is False  # names as the API spells them
    assert scanners[1]["data"]["category_scores"]["violence"] == 0.91


# -- streams: every way out records exactly once --------------------------------------------------


def test_an_async_stream_closed_with_aclose_is_recorded_at_once(
    layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    """``AsyncStream.aclose()`` (openai 1.x has it beside ``close()``, which every provider's
    contract test covers) ends the record at once, the stream still held: once, incomplete,
    with the text received."""
    if not hasattr(openai.AsyncStream, "aclose"):
        pytest.skip(f"openai {openai.__version__}'s AsyncStream has no aclose()")
    enqueued_at_close: list[int] = []

    async def call(c: Any) -> list[Any]:
        stream = await c.chat.completions.create(model="slow", messages=MESSAGES, stream=True)
        received = await drain("async", stream, limit=3)
        await stream.aclose()
        enqueued_at_close.append(layer.stats().enqueued)  # the stream is still referenced
        return received  # type: ignore[no-any-return]

    with layer.session_context() as session_id:
        received = perform("async", server, call)
    assert enqueued_at_close == [3]  # session, prompt, output
    assert len(received) == 3
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    assert output["data"] == {"messages": [{"role": "assistant", "content": " w0 w1"}]}
    gc.collect()
    assert layer.flush(5) and len(collector.actions(session_id)) == 2  # nothing more later


def test_a_stream_helper_left_early_is_recorded_once(
    layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    helpers = chat_with_helpers(client)
    with layer.session_context() as session_id:
        with helpers.stream(model="slow", messages=MESSAGES) as stream:
            for event in stream:
                if getattr(event, "type", "") == "content.delta":
                    break
        # The helper closes the HTTP response only; the record ends when it is collected.
        del stream
        gc.collect()
    assert wait_until(lambda: layer.stats().enqueued == 3)
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    client.close()


def test_a_responses_stream_broken_off_early_keeps_the_text_received(
    layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    needs_responses()
    client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    with layer.session_context() as session_id:
        stream = client.responses.create(model="slow", input="Hello", stream=True)
        with stream:
            events = drain("sync", stream, limit=7)  # created, in_progress, 2 added, 3 deltas
    assert [e.type for e in events][-1] == "response.output_text.delta"
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    assert output["attributes"]["response.id"] == "resp_1"
    assert output["data"] == {"messages": [{"role": "assistant", "content": " w0 w1 w2"}]}
    assert "scanners" not in output
    client.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_responses_stream_error_event_is_recorded_without_a_code(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    """An ``error`` event's own code is a detail, never ``code``."""
    needs_responses()

    def call(c: Any) -> Any:
        created = c.responses.create(model="stream-error", input="Hello", stream=True)
        return then(mode, created, lambda stream: drain(mode, stream))

    with layer.session_context() as session_id:
        events = perform(mode, server, call)
    assert events[-1].type == "error"
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["error"] == {
        "message": "the model fell over",
        "details": {"type": "error", "code": "server_error"},
    }
    check_error(output["error"])


def test_the_prompt_is_recorded_when_the_stream_starts(
    layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    with layer.session_context() as session_id:
        stream = client.chat.completions.create(model="slow", messages=MESSAGES, stream=True)
        next(stream)
        # The slow stream is still going: its prompt is delivered, its output not yet.
        assert [a["kind"] for a in actions_of(layer, collector, session_id, 1)] == [
            "completion_prompt"
        ]
        stream.close()
    assert one(actions_of(layer, collector, session_id, 2), "completion_output")
    client.close()


@pytest.mark.parametrize("model", ["stream-error", "drop"])
@pytest.mark.parametrize("mode", MODES)
def test_a_stream_that_fails_midway_records_its_error(
    mode: str,
    model: str,
    make_client: Callable[..., Client],
    collector: LocalCollector,
    server: OpenAIServer,
) -> None:
    def call(c: Any) -> Any:
        created = c.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        return then(mode, created, lambda stream: drain(mode, stream))

    # Without instrumentation first: the caller must get the very same exception type.
    with pytest.raises(Exception) as bare:
        perform(mode, server, call)
    layer = make_client()
    with layer.session_context() as session_id, pytest.raises(type(bare.value)) as raised:
        perform(mode, server, call)
    assert str(raised.value) == str(bare.value)
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    # The stream's HTTP status was 200; its error has no code.
    assert "code" not in output["error"]
    details = check_error(output["error"])
    assert details["type"] == type(bare.value).__name__
    if model == "stream-error":  # the error event's own fields
        assert details == {"type": "APIError", "error_type": "server_error"}


# -- raw responses --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_with_raw_response_is_returned_as_is_and_recorded(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    def call(c: Any) -> Any:
        return c.chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)

    with layer.session_context() as session_id:
        raw = perform(mode, server, call)
    assert type(raw).__name__ == "LegacyAPIResponse"
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == ANSWER
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]


@pytest.mark.parametrize("mode", MODES)
def test_a_raw_streamed_response_is_left_for_the_caller_to_read(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    def call(c: Any) -> Any:
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-test", messages=MESSAGES, stream=True
        )
        if mode == "sync":
            return text_of(list(raw.parse()))

        async def run() -> str:
            stream = (await raw).parse()
            return text_of([chunk async for chunk in stream])

        return run()

    with layer.session_context() as session_id:
        assert perform(mode, server, call) == ANSWER
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["response.unread"] is True
    assert "data" not in output


@pytest.mark.parametrize("mode", MODES)
def test_with_streaming_response_is_not_read_by_us(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    def call(c: Any) -> Any:
        manager = c.chat.completions.with_streaming_response.create(
            model="gpt-test", messages=MESSAGES
        )
        if mode == "sync":
            with manager as response:
                assert type(response).__name__ == "APIResponse"
                return response.parse().choices[0].message.content

        async def run() -> str:
            async with manager as response:
                assert type(response).__name__ == "AsyncAPIResponse"
                return (await response.parse()).choices[0].message.content  # type: ignore[no-any-return]

        return run()

    with layer.session_context() as session_id:
        assert perform(mode, server, call) == ANSWER
    actions = actions_of(layer, collector, session_id, 2)
    assert one(actions, "completion_output")["attributes"]["response.unread"] is True


def test_raw_embeddings_are_recorded(
    layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    with layer.session_context() as session_id:
        raw = perform(
            "sync",
            server,
            lambda c: c.embeddings.with_raw_response.create(
                model="emb", input="x", encoding_format="float"
            ),
        )
    assert len(raw.parse().data) == 1
    (action,) = actions_of(layer, collector, session_id, 1)
    assert action["attributes"]["embeddings.dimensions"] == 4


# -- failures -------------------------------------------------------------------------------------


def request_id(exc: Any) -> str:
    """The request id of an API error (1.x before 1.20 has no ``request_id`` attribute)."""
    value = exc.response.headers["x-request-id"]
    assert value.startswith("req_") and getattr(exc, "request_id", value) == value
    return value  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("model", "error", "openai_code"),
    [
        ("fail-429-rate_limit_exceeded", "RateLimitError", "rate_limit_exceeded"),
        ("fail-400", "BadRequestError", "injected"),
        ("fail-500-none", "InternalServerError", None),
        ("fail-400-1234", "BadRequestError", 1234),  # an integer (3.x makes it a str)
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_an_api_error_is_recorded_with_its_http_status_as_code(
    mode: str,
    model: str,
    error: str,
    openai_code: Any,
    layer: Client,
    collector: LocalCollector,
    server: OpenAIServer,
) -> None:
    """``code`` is the HTTP status; class and OpenAI code in details.

    The API takes an integer ``code`` only: a class name there got the whole
    session refused. OpenAI's own ``code`` may be a str, an int or null.
    """
    status = int(model.split("-")[1])
    with layer.session_context() as session_id, pytest.raises(openai.APIStatusError) as raised:
        perform(mode, server, lambda c: c.chat.completions.create(model=model, messages=MESSAGES))
    exc = raised.value
    assert type(exc).__name__ == error
    assert exc.status_code == status
    assert exc.code in (openai_code, None if openai_code is None else str(openai_code))
    assert exc.__traceback__ is not None
    actions = actions_of(layer, collector, session_id, 2)
    assert one(actions, "completion_prompt")["data"] == {"messages": MESSAGES}
    output = one(actions, "completion_output")
    assert "data" not in output
    details = check_error(output["error"])
    assert output["error"]["code"] == status
    assert output["error"]["message"] == str(exc)
    expected = {"type": error, "error_type": exc.type, "request_id": request_id(exc)}
    if openai_code is not None:
        expected["code"] = exc.code
    assert details == expected


#: An API key as OpenAI's look (a made-up one).
API_KEY = "sk-proj-Zq8xT3vK9mR2wL5nB7cJ4hF6gD1sA0pEu8Yt"


@pytest.mark.parametrize("style", sorted(KEY_QUOTES))
@pytest.mark.parametrize("mode", MODES)
def test_a_refusal_that_quotes_the_api_key_is_recorded_without_it(
    mode: str, style: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    """A provider, or a gateway in front of it, that refuses a key may quote it whole:
    the caller's exception keeps it, what Layer records never has it."""

    def call(c: Any) -> Any:
        return c.chat.completions.create(model=f"refuse-key-{style}", messages=MESSAGES)

    with layer.session_context() as session_id, pytest.raises(openai.AuthenticationError) as raised:
        perform(mode, server, call, api_key=API_KEY)
    assert API_KEY in str(raised.value)  # the caller's exception is unchanged
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["error"]["code"] == 401
    assert "<redacted>" in output["error"]["message"]
    assert check_error(output["error"])["type"] == "AuthenticationError"
    recorded = json.dumps(collector.actions())
    assert API_KEY[8:20] not in recorded and API_KEY[-12:] not in recorded


#: An API key of no shape a pattern knows (a gateway's own): only its value can mask it.
GATEWAY_KEY = "team-gateway-key-7Hq2xK9pLm4Nv8Rw"


@pytest.mark.parametrize(
    "model, stream",
    [("stream-error-key-plain", True), ("failed-key-plain", True), ("failed-key-plain", False)],
    ids=["error event", "response.failed", "failed response"],
)
@pytest.mark.parametrize("mode", MODES)
def test_a_responses_failure_quoting_the_api_key_is_recorded_without_it(
    mode: str,
    model: str,
    stream: bool,
    layer: Client,
    collector: LocalCollector,
    server: OpenAIServer,
) -> None:
    """The Responses API tells of a failure without raising: a stream's ``error`` event, a
    stream ending in ``response.failed``, a response whose status is ``failed``. Its text
    quoting the client's API key is recorded with the key masked, as a refusal's is."""
    needs_responses()

    def call(c: Any) -> Any:
        created = c.responses.create(model=model, input="Hello", stream=stream)
        return then(mode, created, lambda s: drain(mode, s)) if stream else created

    with layer.session_context() as session_id:
        perform(mode, server, call, api_key=GATEWAY_KEY)
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["error"]["message"] == "the key <redacted> was revoked on 2024-01-01"
    check_error(output["error"])
    assert GATEWAY_KEY not in json.dumps(collector.actions())


@pytest.mark.parametrize("mode", MODES)
def test_failed_embeddings_and_moderations_are_recorded(
    mode: str, layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    """Embeddings and moderations errors carry the HTTP status too."""
    with layer.session_context() as session_id:
        with pytest.raises(openai.InternalServerError):
            perform(mode, server, lambda c: c.embeddings.create(model="fail-500", input="x"))
        with pytest.raises(openai.BadRequestError):
            perform(mode, server, lambda c: c.moderations.create(model="fail-400", input="x"))
    embedding, moderation = actions_of(layer, collector, session_id, 2)
    assert embedding["kind"] == "embeddings" and embedding["error"]["code"] == 500
    assert check_error(embedding["error"])["type"] == "InternalServerError"
    assert moderation["kind"] == "moderation" and moderation["error"]["code"] == 400
    assert check_error(moderation["error"])["type"] == "BadRequestError"
    assert embedding["data"] == {"input": ["x"]} and "scanners" not in embedding


@pytest.mark.parametrize("mode", MODES)
def test_a_connection_error_is_recorded_without_a_code(
    mode: str, layer: Client, collector: LocalCollector
) -> None:
    """No HTTP status, no ``code``; the class in details."""
    with OpenAIServer() as stopped:
        gone: Any = SimpleNamespace(url=stopped.url)
    with layer.session_context() as session_id, pytest.raises(openai.APIConnectionError):
        perform(
            mode, gone, lambda c: c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        )
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert "code" not in output["error"]
    assert check_error(output["error"]) == {"type": "APIConnectionError"}


#: Where the instrumentation is broken on purpose: the methods replaced by one that
#: raises, the warnings expected (one per kind of failure), and the prompts and
#: outputs still recorded over three plain and three streamed calls.
BREAKAGES = {
    # Mapping a plain call's output, and reading a stream's chunks: the prompts, and
    # the stream outputs (without their content), are recorded all the same.
    "mapping": ([(_openai, "_chat_output"), (_openai._ChatStream, "add")], 2, 6, 3),
    # Recording the prompt, which comes first (a stream is then not watched: its
    # output's recording is never reached): nothing is recorded.
    "recording": ([(_openai.Call, "record_prompt"), (StreamRecord, "emit")], 1, 0, 0),
}


@pytest.mark.parametrize("broken", sorted(BREAKAGES))
@pytest.mark.parametrize("mode", MODES)
def test_a_failure_inside_the_instrumentation_never_reaches_the_caller(
    mode: str,
    broken: str,
    layer: Client,
    collector: LocalCollector,
    server: OpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug of ours, sync or async, plain or streamed: the caller gets the same results;
    each kind of failure is logged once as a warning; what could be recorded was.
    (The async twin asserts what the sync one does.)"""
    methods, warned, prompts, outputs = BREAKAGES[broken]
    break_on_purpose(monkeypatch, methods)

    def three_rounds(c: Any) -> Any:
        """Three times a plain call and a streamed one: their text, as the caller read it."""
        create = c.chat.completions.create
        if mode == "sync":
            return [
                (
                    create(model="gpt-test", messages=MESSAGES).choices[0].message.content,
                    text_of(list(create(model="gpt-test", messages=MESSAGES, stream=True))),
                )
                for _ in range(3)
            ]

        async def run() -> list[tuple[str, str]]:
            results = []
            for _ in range(3):
                completion = await create(model="gpt-test", messages=MESSAGES)
                stream = await create(model="gpt-test", messages=MESSAGES, stream=True)
                chunks = await drain(mode, stream)
                results.append((completion.choices[0].message.content, text_of(chunks)))
            return results

        return run()

    with caplog.at_level(logging.DEBUG, logger="layer_sdk"), layer.session_context() as session_id:
        assert perform(mode, server, three_rounds) == [(ANSWER, ANSWER)] * 3
    recorded = (layer, collector, session_id)
    assert_bugs_logged_once(caplog, "OpenAI", warned, recorded, prompts, outputs)


@pytest.mark.parametrize("mode", MODES)
def test_every_response_field_is_optional(
    mode: str,
    layer: Client,
    collector: LocalCollector,
    server: OpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="layer_sdk"), layer.session_context() as sid:
        perform(
            mode, server, lambda c: c.chat.completions.create(model="sparse", messages=MESSAGES)
        )
        if hasattr(openai.resources, "responses"):
            perform(mode, server, lambda c: c.responses.create(model="sparse", input="x"))
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    count = 4 if hasattr(openai.resources, "responses") else 2
    outputs = by_kind(actions_of(layer, collector, sid, count), "completion_output")
    assert outputs[0]["data"] == {"messages": [{"role": "assistant", "content": None}]}
    assert all("scanners" not in output for output in outputs)


# -- sessions -------------------------------------------------------------------------------------


def test_each_call_without_a_session_gets_its_own(
    layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    def call(c: Any) -> None:
        c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        c.embeddings.create(model="emb", input="x")

    perform("sync", server, call)
    assert layer.flush(10)
    sessions = collector.sessions
    assert sorted(len(s["actions"]) for s in sessions) == [1, 2]


def test_session_context_works_across_await_and_inside_layer_session(
    layer: Client, collector: LocalCollector, server: OpenAIServer
) -> None:
    async def two_calls(c: Any) -> None:
        await c.embeddings.create(model="emb", input="a")
        await asyncio.sleep(0)  # the context must survive a suspension: not synchronization
        await asyncio.gather(
            c.embeddings.create(model="emb", input="b"), c.moderations.create(input="c")
        )

    with layer.session_context() as session_id:
        perform("async", server, two_calls)
    assert len(actions_of(layer, collector, session_id, 3)) == 3

    @layer.session(attributes={"user.id": "u1"})
    def conversation(session_id: str) -> str:
        perform(
            "sync", server, lambda c: c.chat.completions.create(model="gpt-test", messages=MESSAGES)
        )
        return session_id

    decorated = conversation()
    assert len(actions_of(layer, collector, decorated, 2)) == 2
    # The header wins over the context.
    other = layer.create_session()
    with layer.session_context(decorated):
        perform(
            "sync",
            server,
            lambda c: c.embeddings.create(
                model="emb", input="x", extra_headers={"X-Layer-Session-Id": other}
            ),
        )
    actions_of(layer, collector, other, 1)


# -- zero behaviour change ------------------------------------------------------------------------


def test_clients_built_before_init_and_copies_are_covered(
    make_client: Callable[..., Client], collector: LocalCollector, server: OpenAIServer
) -> None:
    early = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    layer = make_client()
    with layer.session_context() as session_id:
        early.embeddings.create(model="emb", input="x")
        early.with_options(timeout=5).embeddings.create(model="emb", input="y")
    actions = actions_of(layer, collector, session_id, 2)
    assert [a["data"]["input"] for a in actions] == [["x"], ["y"]]
    early.close()


# -- patching lifecycle ---------------------------------------------------------------------------


