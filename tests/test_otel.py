"""``layer_sdk.otel``: GenAI spans of every layout in use, recorded as the native actions.

The spans here are made with a real SDK ``TracerProvider`` and tracer, each
with the attributes (and events) one instrumentation writes; the actions
land in the real local collector, which refuses anything outside the wire
contract (each test checks it refused nothing). The real instrumentations
are run against local provider servers in ``test_otel_emitters.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from layer_sdk import Client
from layer_sdk.collector import LocalCollector
from layer_sdk.integrations.asgi import LayerMiddleware
from layer_sdk.otel import _spans, conversation_session_id
from layer_sdk.otel._problems import PROBLEMS

from .helpers import APP_ID, MakeClient, run_python
from .otel_helpers import Traced, assert_all_accepted, make_traced, traced_fixture

traced = traced_fixture()


def kinds(actions: list[dict[str, Any]]) -> list[str]:
    return [a["kind"] for a in actions]


def common(action: dict[str, Any], span: Any) -> None:
    """The attributes that tie an action to its span."""
    context = span.get_span_context()
    attributes = action["attributes"]
    assert attributes["otel.trace_id"] == f"{context.trace_id:032x}"
    assert attributes["otel.span_id"] == f"{context.span_id:016x}"
    assert attributes["otel.scope"] == "tests.otel"


@pytest.fixture(autouse=True)
def _fresh_problem_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PROBLEMS, "_reported", set())


# -- the current conventions -----------------------------------------------------------------

CURRENT_CHAT = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.request.temperature": 0.2,
    "gen_ai.request.max_tokens": 100,
    "gen_ai.request.stop_sequences": ("END",),
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.response.id": "chatcmpl-9",
    "gen_ai.response.finish_reasons": ("tool_calls",),
    "gen_ai.usage.input_tokens": 42,
    "gen_ai.usage.output_tokens": 7,
    "gen_ai.usage.cache_read.input_tokens": 8,
    "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be terse."}]),
    "gen_ai.input.messages": json.dumps(
        [
            {
                "role": "user",
                "parts": [
                    {"type": "text", "content": "What is in this picture, and the weather?"},
                    {"type": "uri", "modality": "image", "uri": "https://example.com/a.png"},
                ],
            },
            {
                "role": "assistant",
                "parts": [
                    {"type": "reasoning", "content": "the user wants the weather"},
                    {"type": "tool_call", "id": "c0", "name": "weather", "arguments": {"q": 1}},
                ],
            },
            {
                "role": "tool",
                "parts": [{"type": "tool_call_response", "id": "c0", "response": {"sky": "blue"}}],
            },
        ]
    ),
    "gen_ai.output.messages": json.dumps(
        [
            {
                "role": "assistant",
                "parts": [
                    {"type": "text", "content": "A cat. Checking the weather."},
                    {"type": "tool_call", "id": "c1", "name": "weather", "arguments": '{"q":2}'},
                ],
                "finish_reason": "tool_call",
            }
        ]
    ),
    "gen_ai.tool.definitions": json.dumps(
        [{"type": "function", "name": "weather", "parameters": {"type": "object"}}]
    ),
}


def test_a_chat_span_of_the_current_conventions_is_recorded_as_an_openai_call_is(
    traced: Traced,
) -> None:
    span = traced.span("chat gpt-4o", CURRENT_CHAT)
    prompt, attachment, output, tool_call = traced.actions(4)
    assert kinds([prompt, attachment, output, tool_call]) == [
        "completion_prompt",
        "completion_prompt_attachment",
        "completion_output",
        "completion_tool_call",
    ]
    for action in (prompt, attachment, output, tool_call):
        common(action, span)
        assert action["attributes"]["model.provider"] == "openai"
        assert action["attributes"]["gen_ai.operation.name"] == "chat"
    assert prompt["data"] == {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "What is in this picture, and the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c0", "type": "function", "name": "weather", "arguments": '{"q":1}'}
                ],
            },
            {"role": "tool", "content": '{"sky":"blue"}', "tool_call_id": "c0"},
        ]
    }
    assert prompt["attributes"]["model.id"] == "gpt-4o"
    assert prompt["attributes"]["temperature"] == 0.2
    assert prompt["attributes"]["max_tokens"] == 100
    assert prompt["attributes"]["stop_sequences"] == ["END"]
    assert prompt["attributes"]["tools"] == ["weather"]
    assert attachment["data"] == {
        "type": "uri",
        "modality": "image",
        "uri": "https://example.com/a.png",
        "role": "user",
        "message_index": 1,
    }
    assert output["data"] == {
        "messages": [{"role": "assistant", "content": "A cat. Checking the weather."}]
    }
    assert output["attributes"]["model.id"] == "gpt-4o-2024-08-06"
    assert output["attributes"]["response.id"] == "chatcmpl-9"
    assert output["attributes"]["finish_reason"] == "tool_calls"  # the provider's, from the span
    assert output["scanners"] == [
        {
            "name": "usage",
            "data": {"input_tokens": 42, "output_tokens": 7, "cache_read_input_tokens": 8},
        }
    ]
    assert "error" not in output
    assert tool_call["data"] == {
        "id": "c1",
        "type": "function",
        "name": "weather",
        "arguments": '{"q":2}',
    }


def test_the_actions_take_the_span_s_times(traced: Traced) -> None:
    span = traced.span("chat", CURRENT_CHAT)
    prompt, _, output, _ = traced.actions(4)
    started = _spans._time(span.start_time).isoformat().replace("+00:00", "Z")
    ended = _spans._time(span.end_time).isoformat().replace("+00:00", "Z")
    assert prompt["start_time"] == prompt["end_time"] == started
    assert (output["start_time"], output["end_time"]) == (started, ended)


def test_a_span_without_content_still_gives_the_model_the_usage_and_the_timing(
    traced: Traced,
) -> None:
    without = {k: v for k, v in CURRENT_CHAT.items() if "messages" not in k and "system" not in k}
    traced.span("chat", without)
    prompt, output = traced.actions(2)
    assert "data" not in prompt and "data" not in output
    assert prompt["attributes"]["content_recorded"] is False
    assert output["attributes"]["content_recorded"] is False
    assert prompt["attributes"]["model.id"] == "gpt-4o"
    assert output["attributes"]["model.id"] == "gpt-4o-2024-08-06"
    assert output["scanners"][0]["data"]["input_tokens"] == 42
    assert prompt["attributes"]["tools"] == ["weather"]


def test_an_execute_tool_span_is_a_tool_call_with_its_arguments_and_result(
    traced: Traced,
) -> None:
    span = traced.span(
        "execute_tool weather",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "weather",
            "gen_ai.tool.call.id": "c1",
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.arguments": '{"q":2}',
            "gen_ai.tool.call.result": "rain",
        },
    )
    (action,) = traced.actions(1)
    assert action["kind"] == "completion_tool_call"
    common(action, span)
    assert action["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert action["data"] == {
        "type": "function",
        "id": "c1",
        "name": "weather",
        "arguments": '{"q":2}',
        "result": "rain",
    }


def test_an_embeddings_span_is_one_embeddings_action(traced: Traced) -> None:
    traced.span(
        "embeddings text-embedding-3-small",
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.embeddings.dimension.count": 1536,
            "gen_ai.request.encoding_formats": ("float",),
            "gen_ai.usage.input_tokens": 6,
        },
    )
    (action,) = traced.actions(1)
    assert action["kind"] == "embeddings"
    assert action["attributes"]["model.id"] == "text-embedding-3-small"
    assert action["attributes"]["embeddings.dimensions"] == 1536
    assert action["attributes"]["encoding_formats"] == ["float"]
    assert action["attributes"]["content_recorded"] is False
    assert action["scanners"] == [{"name": "usage", "data": {"input_tokens": 6}}]


def test_spans_that_are_no_call_record_nothing(traced: Traced, collector: LocalCollector) -> None:
    traced.span("GET /", {"http.request.method": "GET"})
    traced.span("invoke_agent planner", {"gen_ai.operation.name": "invoke_agent"})
    traced.span("workflow", {"openinference.span.kind": "CHAIN", "input.value": "hi"})
    traced.span("rerank", {"llm.request.type": "rerank"})
    traced.actions(0)
    assert collector.sessions == []


# -- errors ----------------------------------------------------------------------------------


def test_a_failed_call_has_its_error_on_the_output(traced: Traced) -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": ["hi"]}]),
        "error.type": "openai.RateLimitError",
    }
    traced.span(
        "chat",
        attributes,
        events=[
            (
                "exception",
                {"exception.type": "openai.RateLimitError", "exception.message": "slow down"},
            )
        ],
        error="Error code: 429 - slow down",
    )
    prompt, output = traced.actions(2)
    assert prompt["data"] == {"messages": [{"role": "user", "content": "hi"}]}
    assert output["error"] == {
        "message": "Error code: 429 - slow down",
        "details": {"type": "openai.RateLimitError"},
    }
    assert "data" not in output
    assert "content_recorded" not in output["attributes"]  # the prompt had content


#: API keys as each provider's look (made-up ones).
PROVIDER_KEYS = [
    "sk-proj-Zq8xT3vK9mR2wL5nB7cJ4hF6gD1sA0pEu8Yt",
    "sk-ant-api03-Zq8xT3vK9mR2wL5nB7cJ4hF6gD1sA0pEu8Yt",
    "AIzaSyZq8xT3vK9mR2wL5nB7cJ4hF6gD1sA0pEu",
]


@pytest.mark.parametrize("key", PROVIDER_KEYS)
def test_a_failed_call_whose_error_quotes_an_api_key_is_recorded_without_it(
    traced: Traced, key: str
) -> None:
    """A span's error text quoting the key its call was refused with: the provider's client
    is not known here, so the key is masked by its shape."""
    refusal = f"Error code: 401 - Incorrect API key provided: {key}."
    traced.span(
        "chat",
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m", "error.type": "401"},
        events=[
            ("exception", {"exception.type": f"AuthError({key})", "exception.message": refusal})
        ],
        error=refusal,
    )
    _, output = traced.actions(2)
    assert output["error"] == {
        "message": "Error code: 401 - Incorrect API key provided: <redacted>.",
        "code": 401,
        "details": {"type": "401", "exception.type": "AuthError(<redacted>)"},
    }


@pytest.mark.parametrize(
    ("attributes", "status", "expected"),
    [
        ({"error.type": "503"}, None, {"message": "503", "code": 503, "details": {"type": "503"}}),
        (
            {"error.type": "timeout", "http.response.status_code": 504},
            "took too long",
            {"message": "took too long", "code": 504, "details": {"type": "timeout"}},
        ),
        ({}, "", {"message": "the call failed", "details": {"type": "error"}}),
    ],
)
def test_the_error_code_is_an_http_status_only_when_the_span_says_so(
    traced: Traced, attributes: dict[str, Any], status: str | None, expected: dict[str, Any]
) -> None:
    base = {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e"}
    traced.span("embeddings", {**base, **attributes}, error=status)
    (action,) = traced.actions(1)
    assert action["error"] == expected


def test_an_exception_event_names_the_error_without_a_status_description(traced: Traced) -> None:
    traced.span(
        "tool",
        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "weather"},
        events=[("exception", {"exception.type": "ValueError", "exception.message": "no city"})],
        error="",
    )
    (action,) = traced.actions(1)
    assert action["error"] == {"message": "no city", "details": {"type": "ValueError"}}


# -- the older layouts -------------------------------------------------------------------------


def test_the_indexed_attributes_that_openllmetry_writes(traced: Traced) -> None:
    blocks = [
        {"type": "text", "text": "Describe it."},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}},
    ]
    traced.span(
        "anthropic.chat",
        {
            "llm.request.type": "chat",
            "gen_ai.system": "Anthropic",
            "gen_ai.request.model": "claude-x",
            "gen_ai.response.model": "claude-x-1",
            "gen_ai.usage.prompt_tokens": 20,
            "gen_ai.usage.completion_tokens": 4,
            "llm.usage.total_tokens": 24,
            "llm.request.functions.0.name": "weather",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "Be terse.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": json.dumps(blocks),
            "gen_ai.prompt.2.role": "assistant",
            "gen_ai.prompt.2.tool_calls.0.id": "t0",
            "gen_ai.prompt.2.tool_calls.0.name": "weather",
            "gen_ai.prompt.2.tool_calls.0.arguments": '{"city":"Oslo"}',
            "gen_ai.prompt.3.role": "tool",
            "gen_ai.prompt.3.tool_call_id": "t0",
            "gen_ai.prompt.3.content": "snow",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.content": "It snows.",
            "gen_ai.completion.0.finish_reason": "end_turn",
            "gen_ai.completion.0.tool_calls.0.id": "t1",
            "gen_ai.completion.0.tool_calls.0.name": "weather",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"city":"Rome"}',
        },
    )
    prompt, attachment, output, tool_call = traced.actions(4)
    assert prompt["data"]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Describe it."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "t0", "type": "function", "name": "weather", "arguments": '{"city":"Oslo"}'}
            ],
        },
        {"role": "tool", "content": "snow", "tool_call_id": "t0"},
    ]
    assert prompt["attributes"]["model.provider"] == "anthropic"
    assert prompt["attributes"]["tools"] == ["weather"]
    assert attachment["data"] == {
        "type": "image",  # the block's source fields flattened in, as the native mapping does
        "url": "https://example.com/b.png",
        "role": "user",
        "message_index": 1,
    }
    assert output["data"] == {"messages": [{"role": "assistant", "content": "It snows."}]}
    assert output["attributes"]["finish_reason"] == "end_turn"
    assert output["attributes"]["model.id"] == "claude-x-1"
    assert output["scanners"][0]["data"] == {
        "input_tokens": 20,
        "output_tokens": 4,
        "total_tokens": 24,
    }
    assert tool_call["data"] == {
        "id": "t1",
        "type": "function",
        "name": "weather",
        "arguments": '{"city":"Rome"}',
    }


def test_openinference_llm_spans(traced: Traced) -> None:
    traced.span(
        "ChatCompletion",
        {
            "openinference.span.kind": "LLM",
            "llm.system": "openai",
            "llm.provider": "azure",
            "llm.model_name": "gpt-4o",
            "llm.invocation_parameters": json.dumps({"model": "gpt-4o", "temperature": 0.7}),
            "llm.tools.0.tool.json_schema": json.dumps(
                {"type": "function", "function": {"name": "weather"}}
            ),
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.contents.0.message_content.type": "text",
            "llm.input_messages.0.message.contents.0.message_content.text": "What is this?",
            "llm.input_messages.0.message.contents.1.message_content.type": "image",
            "llm.input_messages.0.message.contents.1.message_content.image.image.url": "data:x",
            "llm.input_messages.1.message.role": "assistant",
            "llm.input_messages.1.message.tool_calls.0.tool_call.id": "c0",
            "llm.input_messages.1.message.tool_calls.0.tool_call.function.name": "weather",
            "llm.input_messages.1.message.tool_calls.0.tool_call.function.arguments": "{}",
            "llm.input_messages.2.message.role": "tool",
            "llm.input_messages.2.message.tool_call_id": "c0",
            "llm.input_messages.2.message.content": "sunny",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": "A cat in the sun.",
            "llm.finish_reason": "stop",
            "llm.token_count.prompt": 11,
            "llm.token_count.completion": 5,
            "llm.token_count.total": 16,
            "llm.token_count.prompt_details.cache_read": 2,
            "llm.token_count.completion_details.reasoning": 1,
        },
    )
    prompt, attachment, output = traced.actions(3)
    assert prompt["data"]["messages"] == [
        {"role": "user", "content": "What is this?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c0", "type": "function", "name": "weather", "arguments": "{}"}],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c0"},
    ]
    assert prompt["attributes"]["model.provider"] == "azure"
    assert prompt["attributes"]["model.id"] == "gpt-4o"
    assert prompt["attributes"]["temperature"] == 0.7
    assert prompt["attributes"]["tools"] == ["weather"]
    assert attachment["data"] == {
        "type": "image_url",
        "url": "data:x",
        "role": "user",
        "message_index": 0,
    }
    assert output["data"] == {"messages": [{"role": "assistant", "content": "A cat in the sun."}]}
    assert output["attributes"]["finish_reason"] == "stop"
    assert output["scanners"][0]["data"] == {
        "input_tokens": 11,
        "output_tokens": 5,
        "total_tokens": 16,
        "cache_read_input_tokens": 2,
        "reasoning_tokens": 1,
    }


def test_openinference_embedding_and_tool_spans(traced: Traced) -> None:
    traced.span(
        "CreateEmbeddings",
        {
            "openinference.span.kind": "EMBEDDING",
            "embedding.model_name": "emb-1",
            "embedding.embeddings.0.embedding.text": "a",
            "embedding.embeddings.0.embedding.vector": (0.1, 0.2, 0.3),
            "embedding.embeddings.1.embedding.text": "b",
            "embedding.embeddings.1.embedding.vector": (0.4, 0.5, 0.6),
            "llm.token_count.prompt": 2,
        },
    )
    traced.span(
        "get_weather",
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "get_weather",
            "input.value": "Paris",
            "output.value": "Sunny in Paris",
        },
    )
    actions = traced.actions(2)  # two traces, two sessions: in either order
    (embeddings,) = [a for a in actions if a["kind"] == "embeddings"]
    (tool,) = [a for a in actions if a["kind"] == "completion_tool_call"]
    assert embeddings["kind"] == "embeddings"
    assert embeddings["data"] == {"input": ["a", "b"]}
    assert embeddings["attributes"]["model.id"] == "emb-1"
    assert embeddings["attributes"]["embeddings.count"] == 2
    assert embeddings["attributes"]["embeddings.dimensions"] == 3
    assert tool["kind"] == "completion_tool_call"
    assert tool["data"] == {
        "type": "function",
        "name": "get_weather",
        "arguments": "Paris",
        "result": "Sunny in Paris",
    }


MESSAGE_EVENTS = [
    ("gen_ai.system.message", {"content": "Be terse."}),
    ("gen_ai.user.message", {"content": "Weather?"}),
    (
        "gen_ai.assistant.message",
        {
            "tool_calls": json.dumps(
                [{"id": "c0", "type": "function", "function": {"name": "w", "arguments": "{}"}}]
            )
        },
    ),
    ("gen_ai.tool.message", {"content": "sunny", "id": "c0"}),
    (
        "gen_ai.choice",
        {
            "gen_ai.event.content": json.dumps(
                {"index": 0, "finish_reason": "stop", "message": {"content": "Sunny."}}
            )
        },
    ),
]
EXPECTED_FROM_EVENTS = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Weather?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c0", "type": "function", "name": "w", "arguments": "{}"}],
    },
    {"role": "tool", "content": "sunny", "tool_call_id": "c0"},
]
OLD_CHAT = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "m"}


def test_the_message_events_of_the_conventions_before_1_37_as_span_events(
    traced: Traced,
) -> None:
    traced.span("chat m", OLD_CHAT, events=MESSAGE_EVENTS)
    prompt, output = traced.actions(2)
    assert prompt["data"]["messages"] == EXPECTED_FROM_EVENTS
    assert output["data"] == {"messages": [{"role": "assistant", "content": "Sunny."}]}
    assert output["attributes"]["finish_reason"] == "stop"


def test_the_message_events_as_log_records_of_the_span(traced: Traced) -> None:
    """Instrumentations of those conventions emit the events as log records: the same
    processor, added to the LoggerProvider, joins them to their span."""
    from opentelemetry._logs import LogRecord

    loggers = LoggerProvider()
    loggers.add_log_record_processor(traced.processor)
    logger = loggers.get_logger("tests.otel")
    bodies = [
        ("gen_ai.user.message", {"content": "Weather?"}),
        (
            "gen_ai.choice",
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant"},
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
                ],
            },
        ),
    ]
    with traced.tracer.start_as_current_span("chat m", attributes=OLD_CHAT):
        for name, body in bodies:
            logger.emit(LogRecord(event_name=name, body=body))
        logger.emit(LogRecord(event_name="app.other", body={"content": "not a message"}))
    logger.emit(LogRecord(event_name="gen_ai.user.message", body={"content": "outside a span"}))
    prompt, output, tool_call = traced.actions(3)
    assert prompt["data"]["messages"] == [{"role": "user", "content": "Weather?"}]
    assert output["data"] == {"messages": [{"role": "assistant", "content": None}]}
    assert tool_call["data"] == {"id": "c1", "type": "function", "name": "w", "arguments": "{}"}
    loggers.shutdown()


def test_the_prompt_and_completion_events_of_the_conventions_1_26(traced: Traced) -> None:
    traced.span(
        "chat m",
        OLD_CHAT,
        events=[
            (
                "gen_ai.content.prompt",
                {"gen_ai.prompt": json.dumps([{"role": "user", "content": "Hi"}])},
            ),
            (
                "gen_ai.content.completion",
                {"gen_ai.completion": json.dumps([{"role": "assistant", "content": "Hello"}])},
            ),
        ],
    )
    prompt, output = traced.actions(2)
    assert prompt["data"] == {"messages": [{"role": "user", "content": "Hi"}]}
    assert output["data"] == {"messages": [{"role": "assistant", "content": "Hello"}]}


def test_unreadable_content_is_left_out_not_a_failure(traced: Traced, caplog: Any) -> None:
    traced.span(
        "chat",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.input.messages": "not json",
            "gen_ai.output.messages": json.dumps({"not": "a list"}),
            "gen_ai.tool.definitions": "[1, 2",
            "gen_ai.usage.input_tokens": "many",
        },
    )
    prompt, output = traced.actions(2)
    assert "data" not in prompt and "data" not in output
    assert "scanners" not in output
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- sessions --------------------------------------------------------------------------------


def test_the_calls_of_one_trace_are_one_session_in_order(
    traced: Traced, collector: LocalCollector
) -> None:
    with traced.tracer.start_as_current_span("agent run", attributes={"app": "x"}) as root:
        for index in range(3):
            traced.span(f"chat {index}", {**CURRENT_CHAT, "gen_ai.response.id": f"r{index}"})
            traced.span("tool", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "w"})
    traced.span("chat elsewhere", CURRENT_CHAT)
    actions = traced.actions(4 * 3 + 3 + 4)
    trace_id = f"{root.get_span_context().trace_id:032x}"
    sessions = collector.sessions
    assert len(sessions) == 2
    (first,) = [s for s in sessions if s["attributes"]["otel.trace_id"] == trace_id]
    in_trace = collector.actions(first["session_id"])
    assert len(in_trace) == 15
    assert [
        a["attributes"].get("response.id") for a in in_trace if a["kind"] == "completion_output"
    ] == [
        "r0",
        "r1",
        "r2",
    ]
    assert kinds(in_trace[:5]) == [
        "completion_prompt",
        "completion_prompt_attachment",
        "completion_output",
        "completion_tool_call",
        "completion_tool_call",
    ]
    assert len(actions) == 19


def test_a_conversation_id_picks_the_session_in_every_trace(
    traced: Traced, collector: LocalCollector
) -> None:
    for _ in range(2):  # two traces (two requests of one conversation)
        traced.span("chat", {**CURRENT_CHAT, "gen_ai.conversation.id": "conv-7"})
    traced.span("chat", {**OLD_CHAT, "session.id": "openinference-session"})
    traced.actions(8 + 2)
    expected = conversation_session_id("conv-7", traced.client)
    assert uuid.UUID(expected).version == 5
    sessions = {s["session_id"]: s for s in collector.sessions}
    assert len(sessions) == 2
    assert sessions[expected]["attributes"]["gen_ai.conversation.id"] == "conv-7"
    assert len(collector.actions(expected)) == 8
    assert conversation_session_id("openinference-session", traced.client) in sessions


def test_the_conversation_session_id_is_stable_and_differs_by_application(
    make_client: MakeClient,
) -> None:
    one = conversation_session_id("c", make_client())
    assert conversation_session_id("c", make_client()) == one
    other = make_client(application_id="1d8e7c5f-3040-4e2c-8b66-7c2010182e3f")
    assert conversation_session_id("c", other) != one
    assert conversation_session_id("d", make_client()) != one


def test_the_session_context_of_the_span_s_start_wins_over_the_trace(
    traced: Traced, collector: LocalCollector
) -> None:
    with traced.client.session_context() as chosen:
        span = traced.tracer.start_span("chat", attributes=CURRENT_CHAT)
    span.end()  # ended outside the block: the session is the one it started in
    traced.actions(4)
    assert [s["session_id"] for s in collector.sessions] == [chosen]


def test_the_request_of_the_asgi_middleware_is_the_session_of_its_spans(
    traced: Traced, collector: LocalCollector
) -> None:
    """A call's span in a request joins the request's session, which the call creates; a
    request whose spans are no call creates none."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        traced.span("SELECT orders", {"db.system": "postgresql"})
        if scope["path"] == "/chat":
            traced.span("chat", CURRENT_CHAT)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    served = LayerMiddleware(app, client=traced.client)
    for path in ("/chat", "/quiet"):
        scope = {"type": "http", "method": "POST", "scheme": "http", "path": path, "headers": []}
        asyncio.run(served(scope, receive, send))
    traced.actions(4)
    (session,) = collector.sessions
    assert session["attributes"]["url.path"] == "/chat"


def test_a_conversation_id_wins_over_the_session_context(
    traced: Traced, collector: LocalCollector
) -> None:
    with traced.client.session_context():
        traced.span("chat", {**CURRENT_CHAT, "gen_ai.conversation.id": "conv-8"})
    traced.actions(4)
    assert collector.actions()[0]["session_id"] == conversation_session_id("conv-8", traced.client)


# -- one call, one record --------------------------------------------------------------------


def test_a_framework_span_around_a_provider_span_is_one_call(traced: Traced) -> None:
    """LangChain's span of a chat model call holds the OpenAI instrumentation's span of the
    same call: the innermost is recorded, the one around it is not."""
    with traced.tracer.start_as_current_span("ChatOpenAI.chat", attributes=CURRENT_CHAT):
        traced.span("chat gpt-4o", {**CURRENT_CHAT, "gen_ai.response.id": "inner"})
    actions = traced.actions(4)
    assert {a["attributes"].get("response.id") for a in actions} == {None, "inner"}
    assert len({a["attributes"]["otel.span_id"] for a in actions}) == 1


def test_a_tool_run_inside_a_call_span_does_not_hide_the_call(traced: Traced) -> None:
    with traced.tracer.start_as_current_span(
        "agent", attributes={"gen_ai.operation.name": "invoke_agent"}
    ):
        traced.span("chat", CURRENT_CHAT)
        traced.span("tool", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "w"})
        traced.span("chat", CURRENT_CHAT)
    traced.actions(9)


# -- safety ----------------------------------------------------------------------------------


def test_a_failure_of_ours_never_reaches_the_tracer_and_is_logged_once(
    traced: Traced, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(_spans, "read", bug)
    with caplog.at_level(logging.DEBUG, logger="layer_sdk"):
        for _ in range(3):
            traced.span("chat", CURRENT_CHAT)  # span.end() returns
        assert traced.client.flush(10)  # the spans are read (and fail) before it returns
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "a bug of ours" in warnings[0].getMessage()
    assert len([r for r in caplog.records if "a bug of ours" in r.getMessage()]) == 3
    assert len(traced.exported.get_finished_spans()) == 3  # the other processor got them all
    traced.actions(0)


def test_a_client_not_initialized_loses_the_call_without_raising(
    collector: LocalCollector, caplog: Any
) -> None:
    setup = Traced(Client(), collector)
    setup.span("chat", CURRENT_CHAT)
    assert setup.processor.force_flush(10000)  # the span is read; nothing to deliver
    assert len(setup.exported.get_finished_spans()) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "init()" in warnings[0].getMessage()


GLOBAL = """
import sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from layer_sdk import Client
from layer_sdk.otel import LayerSpanProcessor
before = trace.get_tracer_provider()
client = Client()
client.init(base_url=sys.argv[1], application_id="{app}", disable_instrumentations=["openai"])
provider = TracerProvider()
provider.add_span_processor(LayerSpanProcessor(client))
with provider.get_tracer("app").start_as_current_span("chat", attributes={{
    "gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}}):
    pass
print(client.flush(10), trace.get_tracer_provider() is before, type(before).__name__)
"""


def test_the_global_tracer_provider_is_never_touched(collector: LocalCollector) -> None:
    """In a fresh interpreter (the global provider can be set once per process)."""
    code = GLOBAL.format(app=APP_ID).replace("sys.argv[1]", repr(collector.url))
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "ProxyTracerProvider"]
    assert len(collector.actions()) == 2


def test_another_processor_receives_every_span_whatever_layer_does(traced: Traced) -> None:
    with traced.tracer.start_as_current_span("request"):
        traced.span("chat", CURRENT_CHAT)
        traced.span("chat", {**CURRENT_CHAT, "gen_ai.input.messages": "[oops"})
        traced.span("db", {"db.system": "postgresql"})
    names = [s.name for s in traced.exported.get_finished_spans()]
    assert names == ["chat", "chat", "db", "request"]
    traced.actions(4 + 3)  # the second call's unreadable messages left out


def test_sampled_out_spans_reach_no_processor_and_record_nothing(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    setup = make_traced(make_client, collector, provider={"sampler": ALWAYS_OFF})
    setup.span("chat", CURRENT_CHAT)
    setup.actions(0)
    assert setup.exported.get_finished_spans() == ()


def test_importing_layer_sdk_imports_no_opentelemetry() -> None:
    result = run_python(
        "import sys, layer_sdk\n"
        "from layer_sdk import layer\n"
        "layer.init(base_url='http://127.0.0.1:9', application_id='a')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'layer_sdk.otel'))))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_opentelemetry_the_module_says_which_extra_to_install() -> None:
    result = run_python(
        "import sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'opentelemetry' or name.startswith('opentelemetry.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "import layer_sdk\n"
        "try:\n"
        "    import layer_sdk.otel\n"
        "except ImportError as exc:\n"
        "    print('refused:', exc)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "'otel' extra" in result.stdout


INSTALL = """
import logging, sys
logging.basicConfig(level=logging.WARNING)
from opentelemetry import trace
from layer_sdk import Client
from layer_sdk.otel import install
client = Client()
client.init(base_url=sys.argv[1], application_id="{app}", disable_instrumentations=["openai"])
print("without a provider:", install(client), type(trace.get_tracer_provider()).__name__)
from opentelemetry.sdk.trace import TracerProvider
provider = TracerProvider()
trace.set_tracer_provider(provider)
print("with one:", install(client), trace.get_tracer_provider() is provider)
with trace.get_tracer("app").start_as_current_span("chat", attributes={{
    "gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}}):
    pass
print("flushed:", client.flush(10))
"""


def test_install_adds_the_processor_to_the_provider_the_application_set(
    collector: LocalCollector,
) -> None:
    code = INSTALL.format(app=APP_ID).replace("sys.argv[1]", repr(collector.url))
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "without a provider: False ProxyTracerProvider",
        "with one: True True",
        "flushed: True",
    ]
    assert "no OpenTelemetry TracerProvider is set" in result.stderr
    assert len(collector.actions()) == 2
    assert_all_accepted(collector)
