"""google-genai instrumentation: the real ``google-genai`` client against a local Gemini server.

Every call shape, sync and async (``client.models`` and ``client.aio.models``),
is made with the real client pointed at ``tests/google_genai_server.py``
(``HttpOptions(base_url=...)``); the actions land in the real local
collector. What every provider holds (results and exceptions unchanged,
streams ended once, the session header, the firewall, ...) is checked by
``test_provider_contract.py``; this file holds what is google-genai's: how
its requests and answers read as actions. It runs once per version line of
google-genai too (``test_google_genai_versions.py``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

genai = pytest.importorskip("google.genai")

from google.genai import types  # noqa: E402

from layer_sdk import Client  # noqa: E402
from layer_sdk.collector import LocalCollector  # noqa: E402
from layer_sdk.instrumentation._google_genai import call as _google  # noqa: E402

from .google_genai_server import (  # noqa: E402
    ANSWER,
    DIMENSIONS,
    PROMPT_TOKENS,
    RESPONSE_ID,
    TOOL_ARGS,
    TOOL_ID,
    TOOL_TEXT,
    WORDS,
    GoogleGenAIServer,
)
from .helpers import (  # noqa: E402
    actions_of,
    by_kind,
    check_times,
    instrumentation_fixtures,
    one,
)

MODES = ["sync", "async"]
USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": len(WORDS),
    "total_tokens": PROMPT_TOKENS + len(WORDS),
}
WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="The weather in a city",
            parameters={"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
        )
    ]
)

server, layer, _fresh_problem_log, _no_leftover_patches, _errors_fit_the_wire_contract = (
    instrumentation_fixtures("google_genai", _google.GOOGLE_GENAI.problems, GoogleGenAIServer)
)


def new_client(server: GoogleGenAIServer, api_key: str = "gk-test") -> Any:
    return genai.Client(api_key=api_key, http_options=types.HttpOptions(base_url=server.url))


#: Clients kept for the test: a client that is collected closes its connections, even while
#: one of its ``models`` is in use.
_kept: list[Any] = []


def models(server: GoogleGenAIServer) -> Any:
    """``client.models`` of a new client, kept alive until the next test."""
    client = new_client(server)
    _kept[:] = [client]
    return client.models


def perform(mode: str, server: GoogleGenAIServer, action: Callable[[Any], Any]) -> Any:
    """``action(client.models)`` or ``action(client.aio.models)`` (awaited, in an event loop)."""
    client = new_client(server)
    if mode == "sync":
        return action(client.models)

    async def main() -> Any:
        result = action(client.aio.models)
        return await result if inspect.isawaitable(result) else result

    return asyncio.run(main())


def stream_text(mode: str, server: GoogleGenAIServer, **kwargs: Any) -> str:
    """The text of a whole ``generate_content_stream``, read to its end."""
    client = new_client(server)  # kept: a client collected closes its connections
    if mode == "sync":
        return "".join(c.text or "" for c in client.models.generate_content_stream(**kwargs))

    async def main() -> str:
        stream = await client.aio.models.generate_content_stream(**kwargs)
        return "".join([c.text or "" async for c in stream])

    return asyncio.run(main())


@pytest.mark.parametrize("mode", MODES)
def test_generate_content_records_prompt_and_output_with_usage(
    mode: str, layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    config = types.GenerateContentConfig(
        system_instruction="You are terse.", temperature=0.2, max_output_tokens=64, seed=7
    )
    with layer.session_context() as sid:
        answer = perform(
            mode,
            server,
            lambda models: models.generate_content(
                model="gemini-test", contents="Did you know?", config=config
            ),
        )
    assert answer.text == ANSWER
    actions = actions_of(layer, collector, sid, 2)
    check_times(actions)
    prompt = one(actions, "completion_prompt")
    assert prompt["data"] == {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Did you know?"},
        ]
    }
    assert prompt["attributes"] == {
        "model.id": "gemini-test",
        "model.provider": "google_genai",
        "google_genai.operation": "models.generate_content",
        "temperature": 0.2,
        "max_output_tokens": 64,
        "seed": 7,
    }
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    # The response's ID, where this version of google-genai reads it (not 1.10).
    assert output["attributes"].pop("response.id", RESPONSE_ID) == RESPONSE_ID
    assert output["attributes"] == {
        "model.id": "gemini-test-001",
        "model.provider": "google_genai",
        "google_genai.operation": "models.generate_content",
        "finish_reason": "STOP",
    }
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_is_put_back_together(
    mode: str, layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    with layer.session_context() as sid:
        text = stream_text(mode, server, model="gemini-test", contents="Hi")
    assert text == ANSWER
    actions = actions_of(layer, collector, sid, 2)
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["attributes"]["stream"] is True
    assert output["attributes"]["incomplete"] is False
    assert output["attributes"]["finish_reason"] == "STOP"
    assert output["attributes"]["google_genai.operation"] == "models.generate_content_stream"
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_function_calls_are_tool_calls(
    mode: str, streamed: bool, layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    config = types.GenerateContentConfig(
        tools=[WEATHER],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.AUTO
            )
        ),
    )
    kwargs = {"model": "tool-call", "contents": "Weather in Paris?", "config": config}
    with layer.session_context() as sid:
        if streamed:
            stream_text(mode, server, **kwargs)
        else:
            perform(mode, server, lambda models: models.generate_content(**kwargs))
    actions = actions_of(layer, collector, sid, 3)
    prompt = one(actions, "completion_prompt")
    assert prompt["attributes"]["tools"] == ["get_weather"]
    assert prompt["attributes"]["tool_choice"] == "AUTO"
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": TOOL_TEXT}]}
    call = one(actions, "completion_tool_call")
    assert call["data"] == {
        "id": TOOL_ID,
        "type": "function",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert TOOL_ARGS == {"city": "Paris"}


def test_the_tool_history_and_attachments_are_kept(
    layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    contents = [
        types.Content(
            role="user",
            parts=[
                types.Part(text="What is in this picture, and the weather?"),
                types.Part.from_bytes(data=b"\x89PNG....", mime_type="image/png"),
            ],
        ),
        types.Content(
            role="model",
            parts=[
                types.Part(function_call=types.FunctionCall(name="get_weather", args=TOOL_ARGS))
            ],
        ),
        types.Content(
            role="user",
            parts=[
                types.Part(
                    function_response=types.FunctionResponse(
                        name="get_weather", response={"sky": "clear"}
                    )
                )
            ],
        ),
    ]
    with layer.session_context() as sid:
        models(server).generate_content(model="gemini-test", contents=contents)
    actions = actions_of(layer, collector, sid, 3)
    assert one(actions, "completion_prompt")["data"]["messages"] == [
        {"role": "user", "content": "What is in this picture, and the weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "name": "get_weather", "arguments": '{"city":"Paris"}'}
            ],
        },
        {"role": "tool", "content": '{"sky":"clear"}', "name": "get_weather"},
    ]
    attachment = one(actions, "completion_prompt_attachment")
    assert attachment["data"] == {
        "type": "inline_data",
        "mime_type": "image/png",
        "size": 8,
        "role": "user",
        "message_index": 0,
    }


def test_a_chat_records_each_turn_with_its_history(
    layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    with layer.session_context() as sid:
        client = new_client(server)
        chat = client.chats.create(model="gemini-test")
        chat.send_message("Hello")
        chat.send_message("Again")
    actions = actions_of(layer, collector, sid, 4)
    prompts = by_kind(actions, "completion_prompt")
    assert [p["data"]["messages"] for p in prompts] == [
        [{"role": "user", "content": "Hello"}],
        [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": "Again"},
        ],
    ]


@pytest.mark.parametrize("mode", MODES)
def test_embed_content_is_one_embeddings_action(
    mode: str, layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    with layer.session_context() as sid:
        result = perform(
            mode,
            server,
            lambda models: models.embed_content(model="embedder", contents=["one", "two"]),
        )
    assert len(result.embeddings) == 2
    action = one(actions_of(layer, collector, sid, 1), "embeddings")
    assert action["data"] == {"input": ["one", "two"]}
    assert action["attributes"] == {
        "model.id": "embedder",
        "model.provider": "google_genai",
        "google_genai.operation": "models.embed_content",
        "embeddings.count": 2,
        "embeddings.dimensions": DIMENSIONS,
    }


@pytest.mark.parametrize("mode", MODES)
def test_an_api_error_is_recorded_with_its_http_status_and_googles_status(
    mode: str, layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    with layer.session_context() as sid, pytest.raises(genai.errors.ClientError) as raised:
        perform(
            mode, server, lambda models: models.generate_content(model="fail-429", contents="x")
        )
    assert raised.value.code == 429
    output = one(actions_of(layer, collector, sid, 2), "completion_output")
    assert output["error"]["code"] == 429
    assert output["error"]["details"]["status"] == "RESOURCE_EXHAUSTED"
    assert output["error"]["details"]["type"] == "ClientError"


def test_the_session_header_in_a_dict_config_is_removed_from_a_copy(
    layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    """A config given as a dict (``http_options`` a dict too) is read the same way, and the
    caller's dicts keep their header for the next call."""
    sid = layer.create_session()
    headers = {"X-Layer-Session-Id": sid, "X-Other": "kept"}
    config = {"temperature": 0.5, "http_options": {"headers": headers}}
    models(server).generate_content(model="gemini-test", contents="Hi", config=config)
    assert headers == {"X-Layer-Session-Id": sid, "X-Other": "kept"}
    assert config["http_options"]["headers"] is headers
    sent = server.requests[-1].headers
    assert "x-layer-session-id" not in sent
    assert sent["x-other"] == "kept"
    prompt = one(actions_of(layer, collector, sid, 2), "completion_prompt")
    assert prompt["attributes"]["temperature"] == 0.5


def test_every_response_field_is_optional(
    layer: Client, collector: LocalCollector, server: GoogleGenAIServer
) -> None:
    with layer.session_context() as sid:
        models(server).generate_content(model="sparse", contents="Hi")
    output = one(actions_of(layer, collector, sid, 2), "completion_output")
    assert output["data"] == {"messages": []}
    assert "scanners" not in output
