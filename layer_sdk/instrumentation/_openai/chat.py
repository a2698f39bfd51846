"""Chat completions as action data: the prompt's messages, the completion, a stream's chunks.

``chat.completions.create`` / ``parse`` (and 1.x's ``beta.chat.completions.parse``).
A prompt message keeps its role, its text and its tool calls; its non-text
parts become attachments. A completion becomes one output message per
choice, and its tool calls (and legacy ``function_call``) become tool-call
actions. A stream's deltas are put back together by :class:`_ChatStream`
into the same output as the whole completion would give.
"""

from __future__ import annotations

from typing import Any

from .._fields import _fields, _get, _items, _str
from .._mapping import Output, _arguments, _attach, _content, _output_of, _usage, _without_none

#: The request parameters recorded as attributes of the prompt.
_CHAT_PARAMETERS = frozenset(
    (
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "stream",
        "stream_options",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "logprobs",
        "top_logprobs",
        "modalities",
        "service_tier",
        "store",
        "verbosity",
        "user",
    )
)

# -- the prompt -----------------------------------------------------------------------


def _chat_messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The prompt's messages (text only) and the attachments (non-text parts)."""
    result: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    for index, message in enumerate(_items(messages)):
        fields = _fields(message)
        role = _str(fields.get("role"))
        text, parts = _content(fields.get("content"))
        entry: dict[str, Any] = {"role": role, "content": text}
        for name in ("name", "tool_call_id"):
            value = fields.get(name)
            if isinstance(value, str):
                entry[name] = value
        tool_calls = [_chat_tool_call(call) for call in _items(fields.get("tool_calls"))]
        function_call = fields.get("function_call")
        if function_call is not None:
            tool_calls.append(_function_call(function_call))
        if tool_calls:
            entry["tool_calls"] = tool_calls
        result.append(entry)
        _attach(attachments, parts, role, index)
    return result, attachments


def _chat_tool_call(call: Any) -> dict[str, Any]:
    kind = _get(call, "type")
    function = _get(call, "function")
    if function is None:
        function = _get(call, "custom")
    entry = {
        "id": _str(_get(call, "id")),
        "type": kind if isinstance(kind, str) else "function",
        "name": _str(_get(function, "name")),
        "arguments": _str(_arguments(function)),
    }
    return _without_none(entry)


def _function_call(call: Any) -> dict[str, Any]:
    entry = {
        "type": "function",
        "name": _str(_get(call, "name")),
        "arguments": _str(_get(call, "arguments")),
    }
    return _without_none(entry)


# -- the completion -------------------------------------------------------------------


def _chat_output(result: Any) -> Output:
    fields = _fields(result)
    output = _output_of(fields.get("model"), fields.get("id"))
    messages: list[dict[str, Any]] = []
    reasons: list[str] = []
    for choice in _items(fields.get("choices")):
        choice_fields = _fields(choice)
        message = _fields(choice_fields.get("message"))
        role = _str(message.get("role")) or "assistant"
        entry: dict[str, Any] = {"role": role, "content": _str(message.get("content"))}
        refusal = _str(message.get("refusal"))
        if refusal:
            entry["refusal"] = refusal
        messages.append(entry)
        for call in _items(message.get("tool_calls")):
            output.tool_calls.append(_chat_tool_call(call))
        function_call = message.get("function_call")
        if function_call is not None:
            output.tool_calls.append(_function_call(function_call))
        reason = choice_fields.get("finish_reason")
        if isinstance(reason, str):
            reasons.append(reason)
    return _with_choices(output, messages, reasons, fields.get("usage"))


def _with_choices(
    output: Output, messages: list[dict[str, Any]], reasons: list[str], usage: Any
) -> Output:
    """``output`` with its messages (one a choice), their finish reasons and the usage."""
    output.messages = messages
    if reasons:
        output.attributes["finish_reason"] = reasons[0] if len(reasons) == 1 else reasons
    output.usage = _usage(usage)
    return output


# -- a stream -------------------------------------------------------------------------


class _Choice:
    """One choice of a stream, as its deltas have built it so far."""

    __slots__ = ("finish", "parts", "refusal", "role", "tools")

    def __init__(self) -> None:
        self.role: str | None = None
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.finish: str | None = None
        self.tools: dict[int, dict[str, Any]] = {}

    def tool(self, index: int) -> dict[str, Any]:
        """The tool call at ``index`` (-1: the legacy ``function_call``), empty at first."""
        entry = self.tools.get(index)
        if entry is None:
            entry = self.tools[index] = {"type": "function", "name": "", "arguments": []}
        return entry


class _ChatStream:
    """Accumulates ``ChatCompletionChunk``s (the deltas of each choice)."""

    __slots__ = ("choices", "id", "model", "usage")

    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self.id: str | None = None
        self.model: str | None = None
        self.usage: Any = None

    def add(self, chunk: Any) -> None:
        fields = _fields(chunk)
        if self.id is None:
            self.id = _str(fields.get("id"))
            self.model = _str(fields.get("model"))
        usage = fields.get("usage")
        if usage is not None:
            self.usage = usage
        for choice in _items(fields.get("choices")):
            choice_fields = _fields(choice)
            index = choice_fields.get("index")
            index = index if type(index) is int else 0
            state = self.choices.get(index)
            if state is None:
                state = self.choices[index] = _Choice()
            delta = _fields(choice_fields.get("delta"))
            content = delta.get("content")
            if content.__class__ is str:
                state.parts.append(content)
            if state.role is None:
                state.role = delta.get("role")
            refusal = delta.get("refusal")
            if refusal.__class__ is str:
                state.refusal.append(refusal)
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    self._tool_delta(state, call)
            function_call = delta.get("function_call")
            if function_call is not None:
                _extend_function(state.tool(-1), function_call)
            reason = choice_fields.get("finish_reason")
            if reason.__class__ is str:
                state.finish = reason

    @staticmethod
    def _tool_delta(state: _Choice, call: Any) -> None:
        index = _get(call, "index")
        entry = state.tool(index if isinstance(index, int) else len(state.tools))
        call_id = _get(call, "id")
        if isinstance(call_id, str):
            entry["id"] = call_id
        kind = _get(call, "type")
        if isinstance(kind, str):
            entry["type"] = kind
        _extend_function(entry, _get(call, "function"))

    def output(self) -> Output:
        output = _output_of(self.model, self.id)
        messages: list[dict[str, Any]] = []
        reasons: list[str] = []
        for index in sorted(self.choices):
            state = self.choices[index]
            entry: dict[str, Any] = {
                "role": state.role if isinstance(state.role, str) else "assistant",
                "content": _str("".join(state.parts)) if state.parts else None,
            }
            if state.refusal:
                entry["refusal"] = _str("".join(state.refusal))
            messages.append(entry)
            for tool_index in sorted(state.tools):
                tool = state.tools[tool_index]
                output.tool_calls.append(
                    _without_none({**tool, "arguments": _str("".join(tool["arguments"]))})
                )
            if state.finish:
                reasons.append(state.finish)
        return _with_choices(output, messages, reasons, self.usage)


def _extend_function(entry: dict[str, Any], function: Any) -> None:
    """Add a delta's pieces of a function's name and arguments to the tool call ``entry``."""
    name = _get(function, "name")
    if isinstance(name, str):
        entry["name"] += name
    arguments = _get(function, "arguments")
    if isinstance(arguments, str):
        entry["arguments"].append(arguments)
