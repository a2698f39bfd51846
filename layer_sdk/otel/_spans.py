"""Which spans are GenAI calls, and what one says: a finished span read into a :class:`GenAICall`.

A span is a call when its attributes say so, in any of the layouts in use:

===============================  ===========================================
``gen_ai.operation.name``        ``chat``, ``text_completion``,
                                 ``generate_content`` (a completion);
                                 ``embeddings``; ``execute_tool`` (a tool run)
``llm.request.type`` (OpenLLMetry's  ``chat``, ``completion``; ``embedding``
older spans)
``openinference.span.kind``      ``LLM``; ``EMBEDDING``; ``TOOL``
none of those, but               a completion (the conventions before
``gen_ai.request.model``         ``gen_ai.operation.name`` existed)
===============================  ===========================================

Agent, workflow, chain and retrieval spans are containers: their calls have
spans of their own, which are read. The model, the provider, the usage, the
request's parameters and the error are read here; the prompt and the answer
by ``_content``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from .._redact import scrub
from ..instrumentation._fields import _str
from . import _content
from . import _messages as m

COMPLETION = "completion"
EMBEDDINGS = "embeddings"
TOOL = "tool"

_OPERATIONS = {
    "chat": COMPLETION,
    "text_completion": COMPLETION,
    "generate_content": COMPLETION,
    "embeddings": EMBEDDINGS,
    "execute_tool": TOOL,
}
_LEGACY_TYPES = {"chat": COMPLETION, "completion": COMPLETION, "embedding": EMBEDDINGS}
_OPENINFERENCE_KINDS = {"LLM": COMPLETION, "EMBEDDING": EMBEDDINGS, "TOOL": TOOL}

#: Token counts: (attribute, the name of the count in the ``usage`` scanner).
_USAGE = (
    ("gen_ai.usage.input_tokens", "input_tokens"),
    ("gen_ai.usage.prompt_tokens", "input_tokens"),
    ("llm.token_count.prompt", "input_tokens"),
    ("gen_ai.usage.output_tokens", "output_tokens"),
    ("gen_ai.usage.completion_tokens", "output_tokens"),
    ("llm.token_count.completion", "output_tokens"),
    ("gen_ai.usage.total_tokens", "total_tokens"),
    ("llm.usage.total_tokens", "total_tokens"),
    ("llm.token_count.total", "total_tokens"),
    ("gen_ai.usage.cache_read.input_tokens", "cache_read_input_tokens"),
    ("gen_ai.usage.cache_read_input_tokens", "cache_read_input_tokens"),
    ("llm.token_count.prompt_details.cache_read", "cache_read_input_tokens"),
    ("gen_ai.usage.cache_creation.input_tokens", "cache_creation_input_tokens"),
    ("gen_ai.usage.cache_creation_input_tokens", "cache_creation_input_tokens"),
    ("llm.token_count.prompt_details.cache_write", "cache_creation_input_tokens"),
    ("gen_ai.usage.reasoning.output_tokens", "reasoning_tokens"),
    ("llm.token_count.completion_details.reasoning", "reasoning_tokens"),
)
#: Request parameters: (attribute, its name among the prompt's attributes, as the native
#: instrumentation names it).
_PARAMETERS = (
    ("gen_ai.request.temperature", "temperature"),
    ("gen_ai.request.top_p", "top_p"),
    ("gen_ai.request.top_k", "top_k"),
    ("gen_ai.request.max_tokens", "max_tokens"),
    ("gen_ai.request.frequency_penalty", "frequency_penalty"),
    ("gen_ai.request.presence_penalty", "presence_penalty"),
    ("gen_ai.request.stop_sequences", "stop_sequences"),
    ("gen_ai.request.seed", "seed"),
    ("gen_ai.request.choice.count", "n"),
    ("gen_ai.request.encoding_formats", "encoding_formats"),
    ("gen_ai.output.type", "response_format"),
)
#: OpenInference keeps the parameters as JSON in ``llm.invocation_parameters``.
_INVOCATION_PARAMETERS = frozenset(
    {"temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "seed", "stop", "n"}
)


class GenAICall:
    """One GenAI call as a span described it: what its actions are made of."""

    __slots__ = (
        "answer",
        "conversation_id",
        "dimensions",
        "ended",
        "error",
        "finish_reasons",
        "inputs",
        "kind",
        "operation",
        "parameters",
        "prompt",
        "provider",
        "request_model",
        "response_id",
        "response_model",
        "scope",
        "span_id",
        "started",
        "stream",
        "tool",
        "tools",
        "trace_id",
        "usage",
        "vectors",
    )

    def __init__(self, kind: str, operation: str) -> None:
        self.kind = kind
        self.operation = operation
        self.provider: str | None = None
        self.request_model: str | None = None
        self.response_model: str | None = None
        self.response_id: str | None = None
        self.conversation_id: str | None = None
        self.parameters: dict[str, Any] = {}
        self.tools: list[str] = []
        #: None: the instrumentation recorded no content (or none of it was readable).
        self.prompt: m.Prompt | None = None
        self.answer: m.Answer | None = None
        self.finish_reasons: list[str] = []
        self.usage: dict[str, int] = {}
        self.error: dict[str, Any] | None = None
        self.stream = False
        #: Embeddings: the inputs (None: not recorded), how many vectors, their size.
        self.inputs: list[Any] | None = None
        self.vectors: int | None = None
        self.dimensions: int | None = None
        #: A tool run: {"id", "type", "name", "arguments", "result"} as known.
        self.tool: dict[str, Any] | None = None
        self.trace_id = 0
        self.span_id = 0
        self.scope: str | None = None
        self.started = _EPOCH
        self.ended = _EPOCH


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


#: A span without any of these attributes is no GenAI call in any layout ``kind_of`` reads
#: (``gen_ai.system``/``gen_ai.provider.name`` also mark the spans whose messages are events).
CALL_KEYS = frozenset(
    {
        "gen_ai.operation.name",
        "llm.request.type",
        "openinference.span.kind",
        "gen_ai.request.model",
        "gen_ai.system",
        "gen_ai.provider.name",
    }
)


def kind_of(attributes: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, operation) of a span that is a GenAI call, else None."""
    operation = attributes.get("gen_ai.operation.name")
    if isinstance(operation, str):
        kind = _OPERATIONS.get(operation)
        return None if kind is None else (kind, operation)
    legacy = attributes.get("llm.request.type")
    if isinstance(legacy, str):
        kind = _LEGACY_TYPES.get(legacy)
        return None if kind is None else (kind, "chat" if kind == COMPLETION else "embeddings")
    span_kind = attributes.get("openinference.span.kind")
    if isinstance(span_kind, str):
        kind = _OPENINFERENCE_KINDS.get(span_kind)
        if kind is None:
            return None
        return kind, {COMPLETION: "chat", EMBEDDINGS: "embeddings", TOOL: "execute_tool"}[kind]
    if "gen_ai.request.model" in attributes:
        return COMPLETION, "chat"
    return None


def attributes_of(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a plain dict, copied once: the SDK's mapping takes a lock
    and an ABC method per read (about 1.5 µs), and a span is read some fifty times."""
    attributes = span.attributes
    return dict(attributes) if attributes else {}


def read(
    span: ReadableSpan,
    attributes: dict[str, Any],
    found: tuple[str, str],
    log_events: Iterable[tuple[str, Any]] = (),
    hooked: tuple[Any, Any, Any] | None = None,
) -> GenAICall:
    """The call a finished span describes (``attributes``: ``attributes_of(span)``).

    ``log_events``: (name, body) of the message events emitted as log records within the
    span; ``hooked``: (system, inputs, outputs) that the completion hook was given for it.
    """
    call = GenAICall(*found)
    context = span.context
    if context is not None:
        call.trace_id, call.span_id = context.trace_id, context.span_id
    call.scope = span.instrumentation_scope.name if span.instrumentation_scope else None
    call.started = _time(span.start_time)
    call.ended = _time(span.end_time) if span.end_time else call.started
    _describe(call, attributes)
    call.error = _error(span, attributes)
    if call.kind == COMPLETION:
        _read_content(call, span, attributes, log_events, hooked)
    elif call.kind == EMBEDDINGS:
        _read_embeddings(call, attributes)
    else:
        _read_tool(call, attributes)
    return call


def _time(nanoseconds: int | None) -> datetime:
    if not nanoseconds:
        return datetime.now(timezone.utc)
    return datetime.fromtimestamp(nanoseconds / 1e9, timezone.utc)


def _text(attributes: Mapping[str, Any], *names: str) -> str | None:
    """The first of the attributes ``names`` that is a non-empty string."""
    return _first_text(*(attributes.get(name) for name in names))


def _first_text(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value:
            return value
    return None


def _plain(value: Any) -> Any:
    """An attribute value as JSON takes it (a sequence as a list)."""
    return list(value) if isinstance(value, tuple) else value


def _describe(call: GenAICall, attributes: Mapping[str, Any]) -> None:
    provider = _text(attributes, "gen_ai.provider.name", "gen_ai.system", "llm.provider")
    provider = provider or _text(attributes, "llm.system")
    call.provider = provider.lower() if provider else None
    call.request_model = _text(
        attributes, "gen_ai.request.model", "llm.model_name", "embedding.model_name"
    )
    call.response_model = _text(attributes, "gen_ai.response.model")
    call.response_id = _text(attributes, "gen_ai.response.id")
    call.conversation_id = _text(attributes, "gen_ai.conversation.id", "session.id")
    call.stream = attributes.get("gen_ai.request.stream") is True
    reasons = attributes.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, (list, tuple)):
        call.finish_reasons = [r for r in reasons if isinstance(r, str)]
    usage, parameters = call.usage, call.parameters
    for name, key in _USAGE:
        value = attributes.get(name)
        if value.__class__ is int and key not in usage:
            usage[key] = value
    for name, key in _PARAMETERS:
        value = attributes.get(name)
        if value is not None:
            parameters[key] = _plain(value)
    invocation = attributes.get("llm.invocation_parameters")
    if invocation is not None:
        invocation = m.decoded(invocation)
    if isinstance(invocation, Mapping):
        for key in _INVOCATION_PARAMETERS & invocation.keys():
            value = invocation[key]
            if isinstance(value, (str, int, float, bool)) and key not in call.parameters:
                call.parameters[key] = value
    tools = m.tool_names(attributes.get("gen_ai.tool.definitions"))
    if not tools and "llm.tools.0.tool.json_schema" in attributes:  # OpenInference
        schemas = _content.indexed(_content.unflatten(attributes, "llm.tools."))
        tools = m.tool_names([_get(_get(s, "tool"), "json_schema") for s in schemas])
    if not tools and "llm.request.functions.0.name" in attributes:  # OpenLLMetry's older spans
        functions = _content.indexed(_content.unflatten(attributes, "llm.request.functions."))
        tools = m.tool_names(functions)
    call.tools = tools


def _get(value: Any, name: str) -> Any:
    return value.get(name) if isinstance(value, dict) else None


def _read_content(
    call: GenAICall,
    span: ReadableSpan,
    attributes: Mapping[str, Any],
    log_events: Iterable[tuple[str, Any]],
    hooked: tuple[Any, Any, Any] | None,
) -> None:
    prompt, answer = _content.current(attributes)
    for reader in (_content.indexed_attributes, _content.openinference):
        if prompt is not None and answer is not None:
            break
        more_prompt, more_answer = reader(attributes)
        prompt, answer = prompt or more_prompt, answer or more_answer
    if prompt is None or answer is None:
        named = [(event.name, event.attributes) for event in span.events]
        more_prompt, more_answer = _content.events([*named, *log_events])
        prompt, answer = prompt or more_prompt, answer or more_answer
    if hooked is not None and (prompt is None or answer is None):
        system, inputs, outputs = hooked
        prompt = prompt or m.prompt_of_parts(system, inputs)
        answer = answer or m.answer_of_parts(outputs)
    call.prompt, call.answer = prompt, answer
    if answer is not None and answer.finish_reasons and not call.finish_reasons:
        call.finish_reasons = answer.finish_reasons


def _read_embeddings(call: GenAICall, attributes: Mapping[str, Any]) -> None:
    dimensions = attributes.get("gen_ai.embeddings.dimension.count")
    if type(dimensions) is int:
        call.dimensions = dimensions
    entries = _content.indexed(_content.unflatten(attributes, "embedding.embeddings."))
    if entries:  # OpenInference: {"embedding": {"text", "vector"}} per input
        inputs: list[Any] = []
        for entry in entries:
            embedding = _get(entry, "embedding")
            inputs.append(_str(_get(embedding, "text")))
            vector = _get(embedding, "vector")
            if call.dimensions is None and isinstance(vector, (list, tuple)):
                call.dimensions = len(vector)
        call.vectors = len(entries)
        if any(text is not None for text in inputs):
            call.inputs = inputs


def _read_tool(call: GenAICall, attributes: Mapping[str, Any]) -> None:
    tool: dict[str, Any] = {"type": _text(attributes, "gen_ai.tool.type") or "function"}
    call_id = _text(attributes, "gen_ai.tool.call.id", "tool_call.id")
    if call_id:
        tool["id"] = _str(call_id)
    name = _text(attributes, "gen_ai.tool.name", "tool.name")
    if name:
        tool["name"] = _str(name)
    arguments = attributes.get("gen_ai.tool.call.arguments")
    if arguments is None:
        arguments = attributes.get("input.value")
    if arguments is not None:
        tool["arguments"] = m.as_text(_plain(arguments))
    result = attributes.get("gen_ai.tool.call.result")
    if result is None:
        result = attributes.get("output.value")
    if result is not None:
        tool["result"] = m.as_text(_plain(result))
    call.tool = tool


def _error(span: ReadableSpan, attributes: Mapping[str, Any]) -> dict[str, Any] | None:
    """The action error of a failed call: the span's status, ``error.type``, its exception event.

    ``code`` is an HTTP status only where the span gives one as such
    (``http.response.status_code``, or an ``error.type`` that is a status).
    The text is scrubbed of secrets (``_redact``: the provider's client and its
    API key are unknown here, so a key is masked by its shape), since a refusal
    may quote the key it refused.
    """
    error_type = attributes.get("error.type")
    failed = span.status.status_code is StatusCode.ERROR
    if not failed and not isinstance(error_type, str):
        return None
    exception_type = exception_message = None
    for event in span.events:
        if event.name == "exception" and event.attributes:
            exception_type = event.attributes.get("exception.type")
            exception_message = event.attributes.get("exception.message")
    message = _first_text(span.status.description, exception_message, error_type)
    kind = _first_text(error_type, exception_type)
    details: dict[str, Any] = {"type": _str(scrub(kind) if kind else kind) or "error"}
    if isinstance(exception_type, str) and exception_type != kind:
        details["exception.type"] = _str(scrub(exception_type))
    error: dict[str, Any] = {
        "message": _str(scrub(message) if message else message) or "the call failed",
        "details": details,
    }
    status = attributes.get("http.response.status_code", attributes.get("http.status_code"))
    if type(status) is not int and isinstance(error_type, str) and error_type.isdigit():
        status = int(error_type)
    if type(status) is int and 400 <= status <= 599:
        error["code"] = status
    return error
