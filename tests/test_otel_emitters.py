"""``layer_sdk.otel`` with real instrumentations, real provider clients and local servers.

The emitters: the official ``opentelemetry-instrumentation-genai-openai``
(content on and off, the completion hook), OpenLLMetry's instrumentation of
Anthropic and of LangChain, OpenInference's of OpenAI; the clients talk to
``tests/openai_server.py`` and ``tests/anthropic_server.py``. Each test
checks the exact actions the collector stored, and that it refused nothing.
With Layer's native instrumentation on as well, each call is recorded once,
whichever of the two wraps the other.

These packages are in the ``dev`` extra: a test that misses one fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import chain
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openinference.instrumentation.openai import OpenAIInstrumentor as OpenInferenceOpenAI
from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor
from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from layer_sdk.collector import LocalCollector
from layer_sdk.otel import LayerCompletionHook

from .anthropic_server import AnthropicServer
from .helpers import MakeClient
from .openai_server import ANSWER, OpenAIServer
from .otel_helpers import Traced, make_traced, traced_fixture

traced = traced_fixture()

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c0", "content": "sunny"},
]
PROMPT = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[AnthropicServer]:
    with AnthropicServer() as server:
        yield server


@pytest.fixture
def instrument() -> Iterator[Callable[..., Any]]:
    """``instrument(instrumentor, **options)``: instrumented until the test ends."""
    done: list[Any] = []

    def start(instrumentor: Any, **options: Any) -> Any:
        instrumentor.instrument(**options)
        done.append(instrumentor)
        return instrumentor

    yield start
    for instrumentor in reversed(done):
        instrumentor.uninstrument()


def kinds(actions: list[dict[str, Any]]) -> list[str]:
    return [a["kind"] for a in actions]


def openai_calls(server: OpenAIServer) -> None:
    """Six calls of the OpenAI client: chat, a tool call, a stream, embeddings, a failure,
    the Responses API."""
    client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="gpt-x", messages=PROMPT, temperature=0.5)
    client.chat.completions.create(model="tool-call", messages=HISTORY, tools=TOOLS)
    list(client.chat.completions.create(model="gpt-x", messages=PROMPT[1:], stream=True))
    client.embeddings.create(model="emb", input=["a", "b"])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="fail-429", messages=PROMPT[1:])
    client.responses.create(model="gpt-x", input="Hello", instructions="Be kind")
    client.close()


OPENAI_KINDS = [
    "completion_prompt",
    "completion_output",
    "completion_prompt",
    "completion_output",
    "completion_tool_call",
    "completion_prompt",
    "completion_output",
    "embeddings",
    "completion_prompt",
    "completion_output",
    "completion_prompt",
    "completion_output",
]


def one_trace(traced: Traced, work: Callable[[], Any]) -> Any:
    """``work()`` in one trace (its calls in one session, in order)."""
    with traced.tracer.start_as_current_span("request"):
        return work()


# -- the official OpenAI instrumentation ------------------------------------------------------


def test_official_openai_instrumentation_with_content_on_the_spans(
    traced: Traced,
    openai_server: OpenAIServer,
    instrument: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    instrument(OpenAIInstrumentor(), tracer_provider=traced.provider)
    one_trace(traced, lambda: openai_calls(openai_server))
    actions = traced.actions(12)
    assert kinds(actions) == OPENAI_KINDS
    assert len(traced.collector.sessions) == 1
    chat, answer = actions[0], actions[1]
    assert chat["data"] == {"messages": PROMPT}
    assert chat["attributes"]["temperature"] == 0.5
    assert chat["attributes"]["model.provider"] == "openai"
    assert answer["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert answer["scanners"] == [
        {"name": "usage", "data": {"input_tokens": 11, "output_tokens": 5}}
    ]
    assert answer["attributes"]["response.id"] == "chatcmpl-1"
    tool_prompt, tool_output, tool_call = actions[2:5]
    assert tool_prompt["data"]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c0", "type": "function", "name": "get_weather", "arguments": "{}"}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c0"},
    ]
    assert tool_prompt["attributes"]["tools"] == ["get_weather"]
    assert tool_output["attributes"]["finish_reason"] == "tool_calls"
    assert tool_call["data"] == {
        "id": "call_1",
        "type": "function",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    streamed = actions[6]
    assert streamed["attributes"]["stream"] is True
    assert streamed["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    embeddings = actions[7]
    assert embeddings["attributes"]["embeddings.dimensions"] == 4
    assert embeddings["scanners"] == [{"name": "usage", "data": {"input_tokens": 6}}]
    failed = actions[9]
    assert failed["error"]["details"] == {"type": "openai.RateLimitError"}
    assert "429" in failed["error"]["message"]
    assert actions[10]["data"] == {
        "messages": [
            {"role": "system", "content": "Be kind"},
            {"role": "user", "content": "Hello"},
        ]
    }
    assert len(traced.exported.get_finished_spans()) == 7  # six calls and the request


def test_official_openai_instrumentation_without_content(
    traced: Traced, openai_server: OpenAIServer, instrument: Callable[..., Any]
) -> None:
    """Without content capture Layer still gets the model, the usage, the timing, the errors."""
    instrument(OpenAIInstrumentor(), tracer_provider=traced.provider)
    one_trace(traced, lambda: openai_calls(openai_server))
    actions = traced.actions(11)  # no tool call: the answer's calls are content
    assert kinds(actions) == [k for k in OPENAI_KINDS if k != "completion_tool_call"]
    for action in actions:
        assert "data" not in action
        assert action["attributes"]["content_recorded"] is False
        assert action["attributes"]["model.id"]
    assert actions[1]["scanners"][0]["data"] == {"input_tokens": 11, "output_tokens": 5}
    assert actions[8]["error"]["details"] == {"type": "openai.RateLimitError"}
    assert actions[0]["start_time"] <= actions[1]["end_time"]


def test_the_completion_hook_hands_the_content_to_layer_when_the_spans_keep_none(
    traced: Traced,
    openai_server: OpenAIServer,
    instrument: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK=layer`` loads Layer's hook from its
    entry point: the messages reach Layer, the spans (and the other exporter) get none."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK", "layer")
    instrument(OpenAIInstrumentor(), tracer_provider=traced.provider)
    one_trace(traced, lambda: openai_calls(openai_server))
    actions = traced.actions(12)
    assert kinds(actions) == OPENAI_KINDS
    assert actions[0]["data"] == {"messages": PROMPT}
    assert actions[1]["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert actions[4]["data"]["name"] == "get_weather"
    for span in traced.exported.get_finished_spans():
        assert "gen_ai.input.messages" not in (span.attributes or {})


def test_the_completion_hook_records_the_calls_of_spans_sampled_out(
    make_client: MakeClient,
    collector: LocalCollector,
    openai_server: OpenAIServer,
    instrument: Callable[..., Any],
) -> None:
    setup = make_traced(make_client, collector, provider={"sampler": ALWAYS_OFF})
    hook = LayerCompletionHook(setup.client)
    instrument(OpenAIInstrumentor(), tracer_provider=setup.provider, completion_hook=hook)
    client = openai.OpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0)
    with setup.tracer.start_as_current_span("request"):
        client.chat.completions.create(model="gpt-x", messages=PROMPT)
        client.chat.completions.create(model="gpt-x", messages=PROMPT[1:])
    client.close()
    prompt, output, second_prompt, _ = setup.actions(4)
    assert prompt["data"] == {"messages": PROMPT}
    assert output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert second_prompt["data"] == {"messages": PROMPT[1:]}
    assert len(collector.sessions) == 1  # the sampled-out trace is one session too
    assert setup.exported.get_finished_spans() == ()


# -- OpenLLMetry, OpenInference ------------------------------------------------------------------


def test_openllmetry_anthropic_instrumentation(
    traced: Traced, anthropic_server: AnthropicServer, instrument: Callable[..., Any]
) -> None:
    instrument(AnthropicInstrumentor(), tracer_provider=traced.provider)
    client = anthropic.Anthropic(base_url=anthropic_server.url, api_key="k", max_retries=0)

    def calls() -> None:
        client.messages.create(
            model="claude-x", max_tokens=10, system="Be terse.", messages=[PROMPT[1]]
        )
        client.messages.create(
            model="tool-use",
            max_tokens=10,
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        )
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model="fail-529", max_tokens=10, messages=[PROMPT[1]])

    one_trace(traced, calls)
    client.close()
    actions = traced.actions(7)
    assert kinds(actions) == [
        "completion_prompt",
        "completion_output",
        "completion_prompt",
        "completion_output",
        "completion_tool_call",
        "completion_prompt",
        "completion_output",
    ]
    assert actions[0]["data"] == {"messages": PROMPT}
    assert actions[0]["attributes"]["model.provider"] == "anthropic"
    assert actions[1]["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert actions[1]["scanners"][0]["data"] == {
        "input_tokens": 23,
        "output_tokens": 5,
        "total_tokens": 28,
        "cache_read_input_tokens": 7,
        "cache_creation_input_tokens": 3,
    }
    assert actions[2]["attributes"]["tools"] == ["get_weather"]
    assert actions[4]["data"] == {
        "id": "toolu_01",
        "type": "function",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert actions[6]["error"]["details"]["type"] == "OverloadedError"


def test_openinference_openai_instrumentation(
    traced: Traced, openai_server: OpenAIServer, instrument: Callable[..., Any]
) -> None:
    instrument(OpenInferenceOpenAI(), tracer_provider=traced.provider)
    client = openai.OpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0)

    def calls() -> None:
        client.chat.completions.create(model="gpt-x", messages=PROMPT)
        client.chat.completions.create(model="tool-call", messages=HISTORY, tools=TOOLS)
        client.embeddings.create(model="emb", input=["a", "b"])

    one_trace(traced, calls)
    client.close()
    actions = traced.actions(6)
    assert kinds(actions) == [
        "completion_prompt",
        "completion_output",
        "completion_prompt",
        "completion_output",
        "completion_tool_call",
        "embeddings",
    ]
    assert actions[0]["data"] == {"messages": PROMPT}
    assert actions[1]["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    assert actions[1]["scanners"][0]["data"] == {
        "input_tokens": 11,
        "output_tokens": 5,
        "total_tokens": 16,
    }
    assert actions[2]["data"]["messages"][1]["tool_calls"][0]["name"] == "get_weather"
    assert actions[2]["attributes"]["tools"] == ["get_weather"]
    assert json.loads(actions[4]["data"]["arguments"]) == {"city": "Paris"}
    assert actions[5]["data"] == {"input": ["a", "b"]}


# -- LangChain -------------------------------------------------------------------------------


class Relay(SpanProcessor):
    """Hands every span to the processors of the test running (``targets``)."""

    def __init__(self) -> None:
        self.targets: list[SpanProcessor] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for target in self.targets:
            target.on_start(span, parent_context)

    def on_end(self, span: Any) -> None:
        for target in self.targets:
            target.on_end(span)


@pytest.fixture(scope="module")
def langchain_relay() -> Iterator[Relay]:
    """LangChain instrumented once for the module: OpenLLMetry's instrumentation keeps its
    first callback handler in LangChain after ``uninstrument()``, so a second
    ``instrument()`` with another provider would not be heard. Each test relays the
    provider's spans to its own processors (``relay_to``)."""
    relay = Relay()
    provider = TracerProvider()
    provider.add_span_processor(relay)
    instrumentor = LangchainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    yield relay
    instrumentor.uninstrument()


def relay_to(relay: Relay, setup: Traced) -> None:
    relay.targets = [setup.processor, SimpleSpanProcessor(setup.exported)]


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def langchain_agent(server: OpenAIServer) -> Any:
    """A LangChain tool-calling run: the model asks for the tool, it runs, the model answers."""
    asks = ChatOpenAI(model="tool-call", base_url=server.url, api_key="sk-test", max_retries=0)
    answers = ChatOpenAI(model="gpt-x", base_url=server.url, api_key="sk-test", max_retries=0)
    with_tools = asks.bind_tools([get_weather])

    @chain
    def agent(question: str) -> Any:
        messages: list[Any] = [SystemMessage("Be terse."), HumanMessage(question)]
        reply = with_tools.invoke(messages)
        messages.append(reply)
        for call in reply.tool_calls:
            messages.append(get_weather.invoke(call))
        return answers.invoke(messages).content

    return agent


AGENT_KINDS = [
    "completion_prompt",
    "completion_output",
    "completion_tool_call",  # the model asks for the tool
    "completion_tool_call",  # the tool runs
    "completion_prompt",
    "completion_output",
]


def test_a_langchain_agent_run_is_one_session_in_order(
    langchain_relay: Relay, traced: Traced, openai_server: OpenAIServer
) -> None:
    relay_to(langchain_relay, traced)
    assert langchain_agent(openai_server).invoke("Weather in Paris?") == ANSWER
    actions = traced.actions(6)
    assert kinds(actions) == AGENT_KINDS
    (session,) = traced.collector.sessions
    (root,) = [s for s in traced.exported.get_finished_spans() if s.parent is None]
    assert session["attributes"]["otel.trace_id"] == f"{root.context.trace_id:032x}"
    first_prompt, _, asked, ran, second_prompt, second_output = actions
    assert first_prompt["data"]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert first_prompt["attributes"]["tools"] == ["get_weather"]
    assert asked["data"]["name"] == "get_weather"
    assert ran["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert ran["data"]["name"] == "get_weather"
    assert "Sunny in Paris" in ran["data"]["result"]
    assert second_prompt["data"]["messages"][-1]["role"] == "tool"
    assert second_output["data"] == {"messages": [{"role": "assistant", "content": ANSWER}]}
    starts = [a["start_time"] for a in (first_prompt, ran, second_prompt)]
    assert starts == sorted(starts)


# -- with Layer's native instrumentation: one record per call --------------------------------


@pytest.mark.parametrize("outer", ["opentelemetry", "layer"])
def test_a_call_recorded_natively_is_not_recorded_again_from_its_span(
    make_client: MakeClient, collector: LocalCollector, openai_server: OpenAIServer, outer: str
) -> None:
    """Whichever patched last wraps the other, each call is recorded once: by the native
    instrumentation (its attributes say so). The patches come off in reverse order."""
    otel = OpenAIInstrumentor()
    if outer == "opentelemetry":  # ours patches first, OpenTelemetry's over it
        setup = make_traced(make_client, collector, disable_instrumentations=["anthropic"])
        native = setup.client
        otel.instrument(tracer_provider=setup.provider)
        undo = [otel.uninstrument, native.shutdown]
    else:
        setup = make_traced(make_client, collector)
        otel.instrument(tracer_provider=setup.provider)
        native = make_client(disable_instrumentations=["anthropic"])
        undo = [native.shutdown, otel.uninstrument]
    try:
        client = openai.OpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="gpt-x", messages=PROMPT)
        list(client.chat.completions.create(model="gpt-x", messages=PROMPT, stream=True))
        client.close()
        assert native.flush(10)
        actions = setup.actions(4)
        assert all("openai.operation" in a["attributes"] for a in actions)  # native records
        assert len(setup.exported.get_finished_spans()) == 2
    finally:
        for step in undo:
            step()


def test_the_current_call_span_of_a_natively_recorded_call_is_not_recorded(
    make_client: MakeClient, collector: LocalCollector, openai_server: OpenAIServer
) -> None:
    """A framework's call span is current when the native call starts, though another span
    started (and ended) inside it since: the framework's span is the same call."""
    setup = make_traced(make_client, collector, disable_instrumentations=["anthropic"])
    client = openai.OpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0)
    with setup.tracer.start_as_current_span("ChatOpenAI.chat", attributes=FRAMEWORK_CALL):
        setup.tracer.start_span("prepare messages").end()
        client.chat.completions.create(model="gpt-x", messages=PROMPT)
    client.close()
    actions = setup.actions(2)
    assert all("openai.operation" in a["attributes"] for a in actions)
    assert len(setup.exported.get_finished_spans()) == 2


FRAMEWORK_CALL = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-x",
    "gen_ai.input.messages": json.dumps([{"role": "user", "parts": ["Hi"]}]),
}


def test_an_anthropic_span_not_made_current_is_still_known_as_recorded_natively(
    make_client: MakeClient, collector: LocalCollector, anthropic_server: AnthropicServer
) -> None:
    """OpenLLMetry starts its span without making it current, then calls the SDK method
    that Layer's wrapper records: the span is still known for the native call's."""
    setup = make_traced(make_client, collector, disable_instrumentations=["openai"])
    otel = AnthropicInstrumentor()
    otel.instrument(tracer_provider=setup.provider)  # over ours
    try:
        client = anthropic.Anthropic(base_url=anthropic_server.url, api_key="k", max_retries=0)
        client.messages.create(model="claude-x", max_tokens=10, messages=[PROMPT[1]])
        client.close()
        actions = setup.actions(2)
        assert all("anthropic.operation" in a["attributes"] for a in actions)
        assert len(setup.exported.get_finished_spans()) == 1
    finally:
        otel.uninstrument()
        setup.client.shutdown()


def test_langchain_over_natively_recorded_openai_calls(
    langchain_relay: Relay,
    make_client: MakeClient,
    collector: LocalCollector,
    openai_server: OpenAIServer,
) -> None:
    """The model calls are recorded natively, the tool run from its span; in the run's
    ``session_context()`` they are one session."""
    setup = make_traced(make_client, collector, disable_instrumentations=["anthropic"])
    relay_to(langchain_relay, setup)
    with setup.client.session_context() as session_id:
        langchain_agent(openai_server).invoke("Weather in Paris?")
    actions = setup.actions(6)
    assert kinds(actions) == [
        "completion_prompt",
        "completion_output",
        "completion_tool_call",
        "completion_tool_call",
        "completion_prompt",
        "completion_output",
    ]
    assert [s["session_id"] for s in collector.sessions] == [session_id]
    native = [a for a in actions if "openai.operation" in a["attributes"]]
    assert len(native) == 5  # all but the tool run
    assert actions[3]["attributes"]["gen_ai.operation.name"] == "execute_tool"
    setup.client.shutdown()
