"""Anthropic instrumentation: the real ``anthropic`` client against a local compatible server.

Every call shape, sync and async, is made with the real client pointed at
``tests/anthropic_server.py`` (real HTTP, so whatever transport a version of
anthropic has); the actions land in the real local collector, which checks
the wire contract strictly. Tests check exact action counts after
``client.flush()``, never sleep, and compare what the caller gets (and what
the server receives) with and without the instrumentation. Shapes a version
of anthropic lacks are skipped; this file runs once per supported version
(see ``test_anthropic_versions.py``).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import inspect
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from pydantic import BaseModel  # noqa: E402  (anthropic depends on pydantic)

from layer_sdk import Client  # noqa: E402
from layer_sdk.collector import LocalCollector  # noqa: E402
from layer_sdk.instrumentation._anthropic import call as _anthropic  # noqa: E402
from layer_sdk.instrumentation._anthropic import messages as _messages  # noqa: E402

from .anthropic_server import (  # noqa: E402
    ANSWER,
    CACHE_CREATION,
    CACHE_READ,
    INPUT_TOKENS,
    TOOL_ID,
    TOOL_TEXT,
    WORDS,
    AnthropicServer,
)
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
from .provider_server import KEY_QUOTES  # noqa: E402

MODES = ["sync", "async"]
SYSTEM = "You are terse."
MESSAGES = [{"role": "user", "content": "Did you know that Layer is the best product?"}]
PROMPT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": MESSAGES[0]["content"]},
]
USAGE = {
    "input_tokens": INPUT_TOKENS,
    "output_tokens": len(WORDS),
    "cache_creation_input_tokens": CACHE_CREATION,
    "cache_read_input_tokens": CACHE_READ,
}
TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
TOOL_CALL = {
    "id": TOOL_ID,
    "type": "tool_use",
    "name": "get_weather",
    "arguments": '{"city": "Paris"}',
}
PIXEL = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


# -- fixtures and helpers -------------------------------------------------------------------------


server, layer, _fresh_problem_log, _no_leftover_patches, _errors_fit_the_wire_contract = (
    instrumentation_fixtures("anthropic", _anthropic.ANTHROPIC.problems, AnthropicServer)
)


def new_client(mode: str, server: AnthropicServer, **options: Any) -> Any:
    cls = anthropic.Anthropic if mode == "sync" else anthropic.AsyncAnthropic
    return cls(**{"base_url": server.url, "api_key": "sk-ant-test", "max_retries": 0, **options})


def perform(
    mode: str, server: AnthropicServer, action: Callable[[Any], Any], **options: Any
) -> Any:
    """Run ``action(anthropic client)`` with a sync client, or with an async one in an event loop.

    ``action`` may return an awaitable (async mode): it is awaited.
    """
    if mode == "sync":
        client = new_client(mode, server, **options)
        try:
            return action(client)
        finally:
            client.close()

    async def main() -> Any:
        client = new_client(mode, server, **options)
        try:
            result = action(client)
            return await result if inspect.isawaitable(result) else result
        finally:
            await client.close()

    return asyncio.run(main())


def create(client: Any, **kwargs: Any) -> Any:
    """``client.messages.create`` with the usual arguments, ``kwargs`` over them."""
    arguments: dict[str, Any] = {"model": "claude-test", "max_tokens": 64, "messages": MESSAGES}
    arguments.update(kwargs)
    return client.messages.create(**arguments)


def helper_text(mode: str, manager: Any, how: str) -> Any:
    """Use a ``.stream()`` manager ``how`` the caller may: its text, as the caller read it."""
    if mode == "sync":
        with manager as stream:
            if how == "text_stream":
                return "".join(stream.text_stream)
            if how == "events":
                return text_of(list(stream))
            return stream.get_final_message().content[0].text

    async def read() -> str:
        async with manager as stream:
            if how == "text_stream":
                return "".join([text async for text in stream.text_stream])
            if how == "events":
                return text_of([event async for event in stream])
            message = await stream.get_final_message()
            return str(message.content[0].text)

    return read()


def text_of(events: list[Any]) -> str:
    """The text of a stream's raw ``text_delta`` events."""
    return "".join(
        e.delta.text
        for e in events
        if e.type == "content_block_delta" and getattr(e.delta, "type", "") == "text_delta"
    )


def has(obj: Any, *path: str) -> bool:
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return False
    return True


def message_bodies(server: AnthropicServer) -> list[Any]:
    return [r.body for r in server.requests if r.path == "/v1/messages"]


# -- messages.create ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_message_records_prompt_and_output_with_usage(
    mode: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """The system prompt and the messages as
    the prompt, the text as the output, usage with the cache tokens as a scanner; the caller
    gets anthropic's own Message."""
    with layer.session_context() as session_id:
        message = perform(mode, server, lambda c: create(c, system=SYSTEM, stop_sequences=["x"]))
    assert type(message) is anthropic.types.Message
    assert message.content[0].text == ANSWER
    actions = actions_of(layer, collector, session_id, 2)
    check_times(actions)
    prompt = one(actions, "completion_prompt")
    assert prompt["data"] == {"messages": PROMPT}
    assert prompt["attributes"] == {
        "model.id": "claude-test",
        "model.provider": "anthropic",
        "anthropic.operation": "messages.create",
        "max_tokens": 64,
        "stop_sequences": ["x"],
    }
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["attributes"]["response.id"] == "msg_01"
    assert output["attributes"]["finish_reason"] == "end_turn"
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_images_and_documents_become_attachments(
    mode: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Images and documents in the prompt as completion_prompt_attachment;
    system given as text blocks."""
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "A short note."},
            "title": "note",
        },
    ]
    system = [{"type": "text", "text": SYSTEM}]
    with layer.session_context() as session_id:
        perform(
            mode,
            server,
            lambda c: create(c, system=system, messages=[{"role": "user", "content": content}]),
        )
    actions = actions_of(layer, collector, session_id, 4)
    prompt = one(actions, "completion_prompt")
    assert prompt["data"]["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is in these?"},
    ]
    image, document = by_kind(actions, "completion_prompt_attachment")
    assert image["data"] == {
        "type": "image",
        "media_type": "image/png",
        "data": PIXEL,
        "role": "user",
        "message_index": 1,
    }
    assert document["data"]["type"] == "document"
    assert document["data"]["title"] == "note"
    assert document["data"]["data"] == "A short note."
    assert message_bodies(server)[0]["messages"][0]["content"] == content  # sent as given


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_tool_use_blocks_are_tool_calls(
    mode: str, stream: bool, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Each tool_use block is a completion_tool_call, plain and streamed
    (the input put back together from its input_json_delta pieces)."""

    def call(c: Any) -> Any:
        result = create(c, model="tool-use", tools=TOOLS, stream=stream)
        if not stream:
            return result
        return then(mode, result, lambda s: drain(mode, s))

    with layer.session_context() as session_id:
        result = perform(mode, server, call)
    if stream:
        assert text_of(result) == TOOL_TEXT
    else:
        assert [block.type for block in result.content] == ["text", "tool_use"]
    actions = actions_of(layer, collector, session_id, 3)
    assert one(actions, "completion_prompt")["attributes"]["tools"] == ["get_weather"]
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": TOOL_TEXT}]}
    assert output["attributes"]["finish_reason"] == "tool_use"
    tool_call = one(actions, "completion_tool_call")
    arguments = tool_call["data"].pop("arguments")
    assert json.loads(arguments) == {"city": "Paris"}
    assert tool_call["data"] == {k: v for k, v in TOOL_CALL.items() if k != "arguments"}


def test_the_tool_history_in_the_prompt_is_kept(
    layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """An earlier turn's tool_use is kept as the
    assistant's tool call, each tool_result as a tool message (an image in it, an attachment)."""
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": TOOL_ID, "name": "get_weather", "input": {"city": "P"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": TOOL_ID,
                    "content": [
                        {"type": "text", "text": "Sunny"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
                        },
                    ],
                },
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": "n/a",
                    "is_error": True,
                },
            ],
        },
    ]
    with layer.session_context() as session_id:
        perform("sync", server, lambda c: create(c, messages=history, tools=TOOLS))
    actions = actions_of(layer, collector, session_id, 3)
    attachment = one(actions, "completion_prompt_attachment")
    assert attachment["data"] == {
        "type": "image",
        "media_type": "image/png",
        "data": PIXEL,
        "role": "tool",
        "message_index": 2,
    }
    prompt = one(actions, "completion_prompt")
    assert prompt["data"]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": TOOL_ID,
                    "type": "tool_use",
                    "name": "get_weather",
                    "arguments": '{"city":"P"}',
                }
            ],
        },
        {"role": "tool", "content": "Sunny", "tool_call_id": TOOL_ID},
        {"role": "tool", "content": "n/a", "tool_call_id": "toolu_02", "is_error": True},
    ]


@pytest.mark.parametrize("mode", MODES)
def test_a_streamed_message_is_recorded_when_read_to_the_end(
    mode: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Anthropic's own Stream class is returned, the
    prompt is recorded when it starts, the output (text, usage) when it ends."""
    enqueued: list[int] = []

    def call(c: Any) -> Any:
        def read(stream: Any) -> Any:
            enqueued.append(layer.stats().enqueued)  # session and prompt, before any event
            expected = anthropic.Stream if mode == "sync" else anthropic.AsyncStream
            assert type(stream) is expected
            return drain(mode, stream)

        return then(mode, create(c, stream=True), read)

    with layer.session_context() as session_id:
        events = perform(mode, server, call)
    assert enqueued == [2]
    assert text_of(events) == ANSWER
    assert events[0].type == "message_start"
    actions = actions_of(layer, collector, session_id, 2)
    check_times(actions)
    assert one(actions, "completion_prompt")["attributes"]["stream"] is True
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["attributes"]["stream"] is True
    assert output["attributes"]["incomplete"] is False
    assert output["attributes"]["finish_reason"] == "end_turn"
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]


# -- the .stream() helper -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["text_stream", "events", "get_final_message"])
@pytest.mark.parametrize("mode", MODES)
def test_the_stream_helper_is_recorded(
    mode: str, how: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """messages.stream() (sync and async; as text, as events, get_final_message()):
    it sends its request itself, not through create, and is recorded once all the same."""

    def call(c: Any) -> Any:
        manager = c.messages.stream(
            model="claude-test", max_tokens=64, messages=MESSAGES, system=SYSTEM
        )
        assert len(server.requests) == 0  # nothing sent before the manager is entered
        return helper_text(mode, manager, how)

    with layer.session_context() as session_id:
        assert perform(mode, server, call) == ANSWER
    actions = actions_of(layer, collector, session_id, 2)
    prompt = one(actions, "completion_prompt")
    assert prompt["data"] == {"messages": PROMPT}
    assert prompt["attributes"]["anthropic.operation"] == "messages.stream"
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["attributes"]["incomplete"] is False
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]
    assert len(message_bodies(server)) == 1
    assert message_bodies(server)[0]["stream"] is True


@pytest.mark.parametrize("mode", MODES)
def test_the_stream_helper_returns_anthropics_own_stream(
    mode: str, layer: Client, server: AnthropicServer
) -> None:
    """The helper's manager and stream are anthropic's classes."""
    streaming = anthropic.lib.streaming
    names = ("MessageStreamManager", "MessageStream")
    if mode == "async":
        names = ("AsyncMessageStreamManager", "AsyncMessageStream")

    def call(c: Any) -> Any:
        manager = c.messages.stream(model="claude-test", max_tokens=64, messages=MESSAGES)
        assert type(manager) is getattr(streaming, names[0])
        if mode == "sync":
            with manager as stream:
                assert type(stream) is getattr(streaming, names[1])
                return stream.get_final_text()

        async def read() -> Any:
            async with manager as stream:
                assert type(stream) is getattr(streaming, names[1])
                return await stream.get_final_text()

        return read()

    assert perform(mode, server, call) == ANSWER


def test_a_stream_helper_never_entered_sends_and_records_nothing(
    layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """A manager never entered makes no call, so no record."""
    with layer.session_context() as session_id:
        perform(
            "sync", server, lambda c: c.messages.stream(model="m", max_tokens=8, messages=MESSAGES)
        )
    assert layer.flush(5)
    assert collector.actions(session_id) == []
    assert server.requests == []


class Answer(BaseModel):
    answer: str


@pytest.mark.parametrize("beta", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_parse_is_recorded_once(
    mode: str, beta: bool, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Messages.parse (and beta's) sends its request itself, not
    through create; recorded once, the output format named, anthropic's ParsedMessage returned."""
    probe = anthropic.Anthropic(api_key="x")
    resource = probe.beta.messages if beta else probe.messages
    if not hasattr(resource, "parse"):
        pytest.skip(f"anthropic {anthropic.__version__} has no {'beta.' * beta}messages.parse")

    def call(c: Any) -> Any:
        messages = c.beta.messages if beta else c.messages
        return messages.parse(
            model="claude-test", max_tokens=64, messages=MESSAGES, output_format=Answer
        )

    with layer.session_context() as session_id:
        parsed = perform(mode, server, call)
    # anthropic's own class (generic: ``ParsedMessage[~ResponseFormatT]``)
    assert type(parsed).__name__.startswith("ParsedBetaMessage" if beta else "ParsedMessage")
    assert json.loads(parsed.content[0].text) == {"answer": "42"}
    actions = actions_of(layer, collector, session_id, 2)
    prompt = one(actions, "completion_prompt")
    assert prompt["attributes"]["response_format"] == "Answer"
    assert prompt["attributes"]["anthropic.operation"] == f"{'beta.' * beta}messages.parse"
    output = one(actions, "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": '{"answer": "42"}'}]}
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_beta_messages_are_recorded(
    mode: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Create, and the stream() helper where it has one."""
    probe = anthropic.Anthropic(api_key="x")
    if not has(probe, "beta", "messages", "create"):
        pytest.skip(f"anthropic {anthropic.__version__} has no beta.messages")
    helper = has(probe, "beta", "messages", "stream")

    def call(c: Any) -> Any:
        beta = c.beta.messages
        plain = beta.create(model="claude-test", max_tokens=64, messages=MESSAGES)
        if not helper:
            return plain
        manager = beta.stream(model="claude-test", max_tokens=64, messages=MESSAGES)
        return then(mode, plain, lambda _: helper_text(mode, manager, "text_stream"))

    with layer.session_context() as session_id:
        perform(mode, server, call)
    count = 4 if helper else 2
    actions = actions_of(layer, collector, session_id, count)
    operations = sorted(a["attributes"]["anthropic.operation"] for a in actions)
    expected = ["beta.messages.create"] * 2 + (["beta.messages.stream"] * 2 if helper else [])
    assert operations == expected
    for output in by_kind(actions, "completion_output"):
        assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert all(r.path == "/v1/messages" for r in server.requests)


# -- streams that end early -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_helper_left_early_is_recorded_incomplete_once(
    mode: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Recorded once, incomplete."""

    def call(c: Any) -> Any:
        manager = c.messages.stream(model="slow", max_tokens=64, messages=MESSAGES)
        if mode == "sync":
            with manager as stream:
                for text in stream.text_stream:
                    return text

        async def read() -> Any:
            async with manager as stream:
                async for text in stream.text_stream:
                    return text

        return read()

    with layer.session_context() as session_id:
        assert perform(mode, server, call) == " slow"
    gc.collect()
    assert wait_until(lambda: layer.stats().enqueued == 3)
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    assert output["data"] == {"messages": [{"role": "assistant", "content": " slow"}]}


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(400, "invalid_request_error"), (429, "rate_limit_error"), (529, "overloaded_error")],
)
@pytest.mark.parametrize("mode", MODES)
def test_an_api_error_is_recorded_once_with_its_http_status(
    mode: str,
    status: int,
    error_type: str,
    layer: Client,
    collector: LocalCollector,
    server: AnthropicServer,
) -> None:
    """The caller gets
    anthropic's exception unchanged; it is recorded once, code the HTTP status, and
    anthropic's error type in the details."""
    with layer.session_context() as session_id, pytest.raises(anthropic.APIStatusError) as caught:
        perform(mode, server, lambda c: create(c, model=f"fail-{status}"))
    exc = caught.value
    assert exc.status_code == status
    if status == 529 and hasattr(anthropic, "OverloadedError"):
        assert type(exc) is anthropic.OverloadedError
    actions = actions_of(layer, collector, session_id, 2)
    output = one(actions, "completion_output")
    assert output["error"]["code"] == status
    details = check_error(output["error"])
    assert details["type"] == type(exc).__name__
    assert details["error_type"] == error_type
    assert details["request_id"].startswith("req_")
    assert len(server.requests) == 1


#: An API key as Anthropic's look (a made-up one).
API_KEY = "sk-ant-api03-Zq8xT3vK9mR2wL5nB7cJ4hF6gD1sA0pEu8Yt"


@pytest.mark.parametrize("style", sorted(KEY_QUOTES))
@pytest.mark.parametrize("mode", MODES)
def test_a_refusal_that_quotes_the_api_key_is_recorded_without_it(
    mode: str, style: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """A provider, or a gateway in front of it, that refuses a key may quote it whole:
    the caller's exception keeps it, what Layer records never has it."""
    model = f"refuse-key-{style}"
    with (
        layer.session_context() as session_id,
        pytest.raises(anthropic.AuthenticationError) as raised,
    ):
        perform(mode, server, lambda c: create(c, model=model), api_key=API_KEY)
    assert API_KEY in str(raised.value)  # the caller's exception is unchanged
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["error"]["code"] == 401
    assert "<redacted>" in output["error"]["message"]
    assert check_error(output["error"])["type"] == "AuthenticationError"
    recorded = json.dumps(collector.actions())
    assert API_KEY[13:25] not in recorded and API_KEY[-12:] not in recorded


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_helper_refused_at_enter_is_recorded_once(
    mode: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Raised unchanged,
    recorded once."""

    def call(c: Any) -> Any:
        return helper_text(
            mode, c.messages.stream(model="fail-529", max_tokens=8, messages=MESSAGES), "events"
        )

    with layer.session_context() as session_id, pytest.raises(anthropic.APIStatusError):
        perform(mode, server, call)
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["error"]["code"] == 529
    assert check_error(output["error"])["error_type"] == "overloaded_error"


@pytest.mark.parametrize("model", ["stream-error", "drop"])
@pytest.mark.parametrize("mode", MODES)
def test_a_stream_that_breaks_off_records_its_error_once(
    mode: str, model: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """An ``error`` event (overloaded, on a 200 response:
    no code) or a cut connection; the caller gets the exception, the output keeps the text
    received, marked incomplete, with the error."""
    received: list[Any] = []

    def call(c: Any) -> Any:
        async def read_async(stream: Any) -> None:
            async for event in stream:
                received.append(event)

        def read(stream: Any) -> Any:
            if mode == "async":
                return read_async(stream)
            for event in stream:
                received.append(event)
            return None

        return then(mode, create(c, model=model, stream=True), read)

    with layer.session_context() as session_id, pytest.raises(Exception) as caught:
        perform(mode, server, call)
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["incomplete"] is True
    assert output["data"] == {"messages": [{"role": "assistant", "content": text_of(received)}]}
    details = check_error(output["error"])
    assert details["type"] == type(caught.value).__name__
    assert "code" not in output["error"]
    if model == "stream-error":
        assert isinstance(caught.value, anthropic.APIStatusError)
        assert details["error_type"] == "overloaded_error"
        assert text_of(received) == "Layer"
    else:
        assert text_of(received) == "Layer is"


#: Where the instrumentation is broken on purpose: the functions replaced by one
#: that raises, the warnings expected, and the prompts and outputs still recorded
#: over two plain and two streamed calls.
BREAKAGES = {
    "mapping": ([(_anthropic, "_message_output"), (_messages._MessageStream, "add")], 2, 4, 2),
    "recording": ([(_anthropic.Call, "record_prompt")], 1, 0, 0),
}


@pytest.mark.parametrize("broken", sorted(BREAKAGES))
@pytest.mark.parametrize("mode", MODES)
def test_a_failure_inside_the_instrumentation_never_reaches_the_caller(
    mode: str,
    broken: str,
    layer: Client,
    collector: LocalCollector,
    server: AnthropicServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug of ours, sync or async, plain or
    streamed, leaves the caller's results alone; each kind is logged once as a warning."""
    methods, warned, prompts, outputs = BREAKAGES[broken]
    break_on_purpose(monkeypatch, methods)

    def two_rounds(c: Any) -> Any:
        if mode == "sync":
            return [
                (create(c).content[0].text, text_of(list(create(c, stream=True)))) for _ in range(2)
            ]

        async def run() -> list[tuple[str, str]]:
            results = []
            for _ in range(2):
                message = await create(c)
                events = await drain(mode, await create(c, stream=True))
                results.append((message.content[0].text, text_of(events)))
            return results

        return run()

    with caplog.at_level(logging.DEBUG, logger="layer_sdk"), layer.session_context() as session_id:
        assert perform(mode, server, two_rounds) == [(ANSWER, ANSWER)] * 2
    recorded = (layer, collector, session_id)
    assert_bugs_logged_once(caplog, "Anthropic", warned, recorded, prompts, outputs)


@pytest.mark.parametrize("mode", MODES)
def test_every_response_field_is_optional(
    mode: str,
    layer: Client,
    collector: LocalCollector,
    server: AnthropicServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message with most fields missing is recorded without
    complaint."""
    with caplog.at_level(logging.WARNING, logger="layer_sdk"), layer.session_context() as sid:
        perform(mode, server, lambda c: create(c, model="sparse"))
    output = one(actions_of(layer, collector, sid, 2), "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": None}]}
    assert "scanners" not in output or output["scanners"] is None
    assert [r.getMessage() for r in caplog.records] == []


# -- raw responses --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_with_raw_response_is_returned_as_is_and_recorded(
    mode: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Anthropic's raw response, parse() still works; recorded."""

    def call(c: Any) -> Any:
        raw = c.messages.with_raw_response.create(
            model="claude-test", max_tokens=64, messages=MESSAGES
        )

        def parsed(response: Any) -> Any:
            if mode == "sync":
                return response.parse(), response

            async def both() -> Any:
                value = response.parse()  # a coroutine, but in 0.x's LegacyAPIResponse
                return (await value if inspect.isawaitable(value) else value), response

            return both()

        return then(mode, raw, parsed)

    with layer.session_context() as session_id:
        message, raw = perform(mode, server, call)
    assert message.content[0].text == ANSWER
    assert raw.headers.get("request-id", "").startswith("req_")
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert output["scanners"] == [{"name": "usage", "data": USAGE}]


@pytest.mark.parametrize("mode", MODES)
def test_with_streaming_response_is_not_read_by_us(
    mode: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """The body is the caller's to read; recorded unread."""

    def call(c: Any) -> Any:
        manager = c.messages.with_streaming_response.create(
            model="claude-test", max_tokens=64, messages=MESSAGES
        )
        if mode == "sync":
            with manager as response:
                return response.parse().content[0].text

        async def read() -> str:
            async with manager as response:
                message = await response.parse()
                return str(message.content[0].text)

        return read()

    with layer.session_context() as session_id:
        assert perform(mode, server, call) == ANSWER
    output = one(actions_of(layer, collector, session_id, 2), "completion_output")
    assert output["attributes"]["response.unread"] is True
    assert "data" not in output or output["data"] is None


# -- sessions -------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Layer-Session-Id", "Layer-Session-Id", "x-layer-session-id"])
@pytest.mark.parametrize("mode", MODES)
def test_the_session_header_picks_the_session_and_never_reaches_anthropic(
    mode: str, header: str, layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """The header in extra_headers picks it, is removed before the
    request leaves (create and the stream helper), and the caller's dict is left untouched."""
    session_id = layer.create_session()
    headers = {header: session_id, "X-Other": "kept"}
    given = dict(headers)

    def call(c: Any) -> Any:
        plain = create(c, extra_headers=headers)
        manager = c.messages.stream(
            model="claude-test", max_tokens=64, messages=MESSAGES, extra_headers=headers
        )
        return then(mode, plain, lambda _: helper_text(mode, manager, "text_stream"))

    perform(mode, server, call)
    assert headers == given
    assert len(server.requests) == 2
    for received in server.requests:
        assert "x-layer-session-id" not in received.headers
        assert "layer-session-id" not in received.headers
        assert received.headers["x-other"] == "kept"
    actions_of(layer, collector, session_id, 4)


def test_the_session_context_and_layer_session_pick_the_session(
    layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Session_context() across await, and @layer.session."""

    @layer.session()
    def handle(session_id: str) -> str:
        perform("sync", server, create)
        return session_id

    inner = handle()

    async def main() -> str:
        with layer.session_context() as session_id:
            client = new_client("async", server)
            await create(client)
            await asyncio.sleep(0)
            await drain("async", await create(client, stream=True))
            await client.close()
        return session_id

    outer = asyncio.run(main())
    assert layer.flush(5)
    assert len(collector.actions(inner)) == 2
    assert len(collector.actions(outer)) == 4


# -- what the caller and the server see -----------------------------------------------------------


def test_async_methods_keep_their_shape(layer: Client) -> None:
    """A coroutine function stays one (the async helper's
    ``__aenter__``), a plain one returning an awaitable stays plain (anthropic wraps its async
    ``create`` in an argument checker); signatures stay."""
    streaming = anthropic.lib.streaming
    assert inspect.iscoroutinefunction(streaming.AsyncMessageStreamManager.__aenter__)
    for cls, name in [
        (anthropic.resources.AsyncMessages, "create"),
        (anthropic.resources.AsyncMessages, "stream"),
        (anthropic.resources.Messages, "create"),
        (anthropic.resources.Messages, "stream"),
        (streaming.AsyncMessageStreamManager, "__aenter__"),
        (streaming.MessageStreamManager, "__enter__"),
    ]:
        patched = cls.__dict__[name]
        assert patched.__layer_instrumented__ is True
        original = patched.__wrapped__
        assert inspect.iscoroutinefunction(patched) == inspect.iscoroutinefunction(original)
        assert inspect.signature(patched) == inspect.signature(original)


def test_a_vertex_client_shares_the_resource_classes(
    layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Its messages are the same classes, recorded the same way."""
    vertex_type = getattr(anthropic, "AnthropicVertex", None)
    if vertex_type is None:
        pytest.skip("no AnthropicVertex")
    try:
        client = vertex_type(
            region="us-east5", project_id="p", access_token="t", base_url=server.url
        )
    except Exception as exc:  # an extra this environment does not install
        pytest.skip(f"AnthropicVertex cannot be built here: {exc!r}")
    with layer.session_context() as session_id:
        message = client.messages.create(model="claude-test", max_tokens=8, messages=MESSAGES)
        text = "".join(
            client.messages.stream(model="claude-test", max_tokens=8, messages=MESSAGES)
            .__enter__()
            .text_stream
        )
    client.close()
    assert message.content[0].text == text == ANSWER
    assert [r.path.rsplit(":", 1)[-1] for r in server.requests] == [
        "rawPredict",
        "streamRawPredict",
    ]
    assert len(actions_of(layer, collector, session_id, 4)) == 4


def test_a_bedrock_client_shares_the_resource_classes(
    layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """Its messages are the same classes, recorded the same way
    (a plain call, with a Bedrock API key; its streams need botocore, not installed here)."""
    bedrock_type = getattr(anthropic, "AnthropicBedrock", None)
    if bedrock_type is None or "api_key" not in inspect.signature(bedrock_type).parameters:
        pytest.skip(f"anthropic {anthropic.__version__}'s AnthropicBedrock takes no API key")
    client = bedrock_type(api_key="k", aws_region="us-east-1", base_url=server.url)
    with layer.session_context() as session_id:
        message = create(client)
    client.close()
    assert message.content[0].text == ANSWER
    assert [r.path for r in server.requests] == ["/model/claude-test/invoke"]
    actions = actions_of(layer, collector, session_id, 2)
    assert one(actions, "completion_prompt")["data"] == {"messages": MESSAGES}
    assert one(actions, "completion_output")["data"]["messages"][0]["content"] == ANSWER


# -- patching lifecycle ---------------------------------------------------------------------------


# -- anthropic's own OpenTelemetry spans ----------------------------------------------------------


class Spans:
    """A minimal recording tracer provider (the OpenTelemetry API only: no SDK is installed).

    anthropic 1.x/2.x starts one span per API call with the tracer it gets from the
    ``tracer_provider`` of its ``open_telemetry`` option, and injects its trace context
    (``traceparent``) into the request.
    """

    def __init__(self) -> None:
        from opentelemetry import trace

        spans = self
        self.started: list[Any] = []

        class Span(trace.Span):
            def __init__(self, name: str) -> None:
                self.name = name
                self.ended = False
                self.status: Any = None
                self.context = trace.SpanContext(
                    trace_id=0x1000 + len(spans.started),
                    span_id=0x2000 + len(spans.started),
                    is_remote=False,
                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                )

            def end(self, end_time: int | None = None) -> None:
                self.ended = True

            def get_span_context(self) -> Any:
                return self.context

            def set_attributes(self, attributes: Any) -> None:
                pass

            def set_attribute(self, key: str, value: Any) -> None:
                pass

            def add_event(self, name: str, attributes: Any = None, timestamp: Any = None) -> None:
                pass

            def update_name(self, name: str) -> None:
                self.name = name

            def is_recording(self) -> bool:
                return not self.ended

            def set_status(self, status: Any, description: str | None = None) -> None:
                self.status = status

            def record_exception(self, exception: BaseException, *args: Any, **kw: Any) -> None:
                pass

        class Tracer(trace.Tracer):
            def start_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
                span = Span(name)
                spans.started.append(span)
                return span

            def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
                return trace.use_span(self.start_span(name))

        class Provider(trace.TracerProvider):
            def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
                return Tracer()

        self.provider = Provider()


def traced_calls(c: Any) -> list[str]:
    """A plain call, a streamed one and the stream() helper: their texts."""
    plain = create(c).content[0].text
    streamed = text_of(list(create(c, stream=True)))
    with c.messages.stream(model="claude-test", max_tokens=8, messages=MESSAGES) as stream:
        helper = stream.get_final_text()
    return [plain, streamed, helper]


@pytest.mark.parametrize("instrumented", [False, True])
def test_anthropics_own_spans_and_traceparent_are_unchanged(
    instrumented: bool,
    make_client: Callable[..., Client],
    collector: LocalCollector,
    server: AnthropicServer,
) -> None:
    """With anthropic's tracing on, each call still has exactly one
    span of anthropic's, ended, whose trace context reaches the server as ``traceparent``,
    with or without our instrumentation; and we record each call once (no double record)."""
    if not has(anthropic, "_tracing"):
        pytest.skip(f"anthropic {anthropic.__version__} emits no OpenTelemetry spans")
    layer = make_client(disable_instrumentations=[] if instrumented else ["anthropic"])
    spans = Spans()
    with layer.session_context() as session_id:
        texts = perform(
            "sync", server, traced_calls, open_telemetry={"tracer_provider": spans.provider}
        )
    assert texts == [ANSWER] * 3
    assert [s.name for s in spans.started] == ["anthropic.messages.create"] * 3
    assert all(s.ended for s in spans.started)
    parents = [r.headers.get("traceparent") for r in server.requests]
    assert parents == [
        f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}-01" for s in spans.started
    ]
    assert layer.flush(5)
    assert len(collector.actions(session_id)) == (6 if instrumented else 0)


def test_recording_works_with_anthropics_tracing_off(
    layer: Client, collector: LocalCollector, server: AnthropicServer
) -> None:
    """With ``open_telemetry=False`` nothing is traced or propagated,
    and every call is recorded all the same."""
    if not has(anthropic, "_tracing"):
        pytest.skip(f"anthropic {anthropic.__version__} has no open_telemetry option")
    with layer.session_context() as session_id:
        texts = perform("sync", server, traced_calls, open_telemetry=False)
    assert texts == [ANSWER] * 3
    assert all("traceparent" not in r.headers for r in server.requests)
    actions = actions_of(layer, collector, session_id, 6)
    assert len(by_kind(actions, "completion_output")) == 3
