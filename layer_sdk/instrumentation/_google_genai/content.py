"""The Gemini API as action data: the request's contents, a response, a stream's chunks.

``generate_content`` / ``generate_content_stream`` (and chats, which call
them). The prompt is the config's ``system_instruction`` (as a system
message) and the ``contents``: a string, parts, or ``Content`` objects with
a role (``model`` is recorded as ``assistant``, as OpenAI names it). A
content keeps its text; its ``function_call`` parts (an earlier turn's
calls) become its ``tool_calls``, its ``function_response`` parts ``tool``
messages of their own, and its inline data and files attachments (their
type and size, not their bytes). A response's candidates become the output
messages, their ``function_call`` parts tool-call actions, and its
``usage_metadata`` the usage, with OpenAI's names. A stream's chunks are
put back together by :class:`ResponseStream` into the same output.

Every object may be the SDK's (pydantic, snake_case fields) or a plain
dict (snake_case or camelCase keys, as the SDK accepts both).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._fields import _get, _items, _plain, _str
from .._mapping import Output, _output_of, _without_none

#: The config fields recorded as attributes of the prompt.
_CONFIG_PARAMETERS = (
    "temperature",
    "top_p",
    "top_k",
    "candidate_count",
    "max_output_tokens",
    "stop_sequences",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_mime_type",
    "output_dimensionality",
    "task_type",
)
#: usage_metadata's counts, by the names OpenAI's usage gives them.
_USAGE = (
    ("prompt_token_count", "prompt_tokens"),
    ("candidates_token_count", "completion_tokens"),
    ("total_token_count", "total_tokens"),
    ("cached_content_token_count", "cached_tokens"),
    ("thoughts_token_count", "reasoning_tokens"),
)


def _field(obj: Any, name: str) -> Any:
    """``obj``'s field ``name`` (snake_case), or its camelCase spelling in a dict."""
    value = _get(obj, name)
    if value is None and isinstance(obj, Mapping) and "_" in name:
        head, *rest = name.split("_")
        value = obj.get(head + "".join(word.title() for word in rest))
    return value


def _role(role: Any) -> str:
    return "assistant" if role == "model" else role if isinstance(role, str) else "user"


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_content(item: Any) -> bool:
    return _field(item, "parts") is not None or (
        isinstance(item, Mapping) and "role" in item and "parts" in item
    )


# -- the prompt -----------------------------------------------------------------------


def prompt_messages(kwargs: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The prompt's messages (text, tool calls and results) and the attachments."""
    messages: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    system = _field(kwargs.get("config"), "system_instruction")
    if system is not None:
        parts = _field(system, "parts") if _is_content(system) else _listed(system)
        messages.append({"role": "system", "content": _parts(parts)[0]})
    loose: list[Any] = []  # parts given without a Content: one user turn, as the SDK sends them
    for item in _listed(kwargs.get("contents")):
        if _is_content(item):
            _turn(messages, attachments, "user", loose)
            loose = []
            _turn(messages, attachments, _role(_field(item, "role")), _items(_field(item, "parts")))
        else:
            loose.append(item)
    _turn(messages, attachments, "user", loose)
    return messages, attachments


def _turn(
    messages: list[dict[str, Any]], attachments: list[dict[str, Any]], role: str, parts: Any
) -> None:
    if not parts:
        return
    text, calls, results, others = _parts(parts)
    messages.extend(results)
    if text is not None or calls or not results:
        entry: dict[str, Any] = {"role": role, "content": text}
        if calls:
            entry["tool_calls"] = calls
        messages.append(entry)
    for other in others:
        attachments.append({**other, "role": role, "message_index": len(messages) - 1})


def _parts(
    parts: Any,
) -> tuple[str | None, list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Parts as (their text, function calls, function responses as tool messages, others)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    for part in _listed(parts):
        if isinstance(part, str):
            texts.append(part)
            continue
        text = _field(part, "text")
        if isinstance(text, str):
            if _field(part, "thought") is not True:  # the model's reasoning, not its answer
                texts.append(text)
            continue
        call = _field(part, "function_call")
        if call is not None:
            calls.append(function_call(call))
            continue
        response = _field(part, "function_response")
        if response is not None:
            results.append(_function_response(response))
            continue
        others.append(_attachment(part))
    return ("\n".join(texts) if texts else None), calls, results, others


def function_call(call: Any) -> dict[str, Any]:
    entry = {
        "id": _str(_field(call, "id")),
        "type": "function",
        "name": _str(_field(call, "name")),
        "arguments": _json(_field(call, "args")),
    }
    return _without_none(entry)


def _function_response(response: Any) -> dict[str, Any]:
    entry = {
        "role": "tool",
        "content": _json(_field(response, "response")),
        "name": _str(_field(response, "name")),
        "tool_call_id": _str(_field(response, "id")),
    }
    return _without_none(entry)


def _attachment(part: Any) -> dict[str, Any]:
    """A part that is neither text nor a function call or response: its kind, and of inline
    data its MIME type and size (not its bytes), of a file its URI and MIME type."""
    inline = _field(part, "inline_data")
    if inline is not None:
        data = _field(inline, "data")
        entry = {
            "type": "inline_data",
            "mime_type": _str(_field(inline, "mime_type")),
            "size": len(data) if isinstance(data, (bytes, str)) else None,
        }
        return _without_none(entry)
    file = _field(part, "file_data")
    if file is not None:
        entry = {
            "type": "file_data",
            "file_uri": _str(_field(file, "file_uri")),
            "mime_type": _str(_field(file, "mime_type")),
        }
        return _without_none(entry)
    fields = part if isinstance(part, Mapping) else getattr(part, "__dict__", {})
    kind = next((name for name, value in fields.items() if value is not None), "part")
    return {"type": str(kind)}


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return None


def config_parameters(config: Any) -> dict[str, Any]:
    """The config's parameters that matter, as attribute values."""
    if config is None:
        return {}
    attributes: dict[str, Any] = {}
    for name in _CONFIG_PARAMETERS:
        value = _field(config, name)
        if _plain(value):
            attributes[name] = value
        elif isinstance(value, (list, tuple)) and all(_plain(v) for v in value):
            attributes[name] = list(value)
    tools = _field(config, "tools")
    if tools:
        attributes["tools"] = [name for tool in _listed(tools) for name in _tool_names(tool)]
    mode = _field(_field(_field(config, "tool_config"), "function_calling_config"), "mode")
    mode = getattr(mode, "value", mode)
    if isinstance(mode, str):
        attributes["tool_choice"] = mode
    return attributes


def _tool_names(tool: Any) -> list[str]:
    """The functions a tool declares; a Python function given as a tool by its name."""
    declared = _field(tool, "function_declarations")
    if callable(tool) and not isinstance(tool, Mapping) and declared is None:
        name = getattr(tool, "__name__", None)
        return [name] if isinstance(name, str) else []
    declarations = _items(_field(tool, "function_declarations"))
    if declarations:
        return [n for n in (_str(_field(d, "name")) for d in declarations) if n]
    fields = tool if isinstance(tool, Mapping) else getattr(tool, "__dict__", {})
    return [str(name) for name, value in fields.items() if value is not None][:1]


def embedding_inputs(contents: Any) -> list[Any]:
    """The texts embed_content was given (a content's parts' text joined)."""
    inputs: list[Any] = []
    for item in _listed(contents):
        if isinstance(item, str):
            inputs.append(item)
        elif _is_content(item):
            inputs.append(_parts(_field(item, "parts"))[0])
        else:
            inputs.append(_parts([item])[0])
    return inputs


# -- the response ---------------------------------------------------------------------


def usage_of(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    counts = {}
    for name, key in _USAGE:
        value = _field(usage, name)
        if type(value) is int:
            counts[key] = value
    return counts or None


def _reason(value: Any) -> str | None:
    value = getattr(value, "value", value)  # the SDK's FinishReason enum
    return value if isinstance(value, str) else None


def response_output(result: Any) -> Output:
    output = _output_of(_field(result, "model_version"), _field(result, "response_id"))
    messages: list[dict[str, Any]] = []
    reasons: list[str] = []
    for candidate in _items(_field(result, "candidates")):
        text, calls, _, _ = _parts(_items(_field(_field(candidate, "content"), "parts")))
        messages.append({"role": "assistant", "content": text})
        output.tool_calls.extend(calls)
        reason = _reason(_field(candidate, "finish_reason"))
        if reason:
            reasons.append(reason)
    _finish(output, messages, reasons, _field(result, "usage_metadata"))
    blocked = _reason(_field(_field(result, "prompt_feedback"), "block_reason"))
    if blocked:
        output.attributes["block_reason"] = blocked
    return output


def _finish(output: Output, messages: list[dict[str, Any]], reasons: list[str], usage: Any) -> None:
    output.messages = messages
    if reasons:
        output.attributes["finish_reason"] = reasons[0] if len(reasons) == 1 else reasons
    output.usage = usage_of(usage)


# -- a stream -------------------------------------------------------------------------


class ResponseStream:
    """Accumulates the chunks of ``generate_content_stream`` (each a partial response)."""

    __slots__ = ("candidates", "id", "model", "usage")

    def __init__(self) -> None:
        #: candidate index -> [text pieces, function calls, finish reason].
        self.candidates: dict[int, list[Any]] = {}
        self.id: Any = None
        self.model: Any = None
        self.usage: Any = None

    def add(self, chunk: Any) -> None:
        if self.id is None:
            self.id = _field(chunk, "response_id")
            self.model = _field(chunk, "model_version")
        usage = _field(chunk, "usage_metadata")
        if usage is not None:
            self.usage = usage
        for position, candidate in enumerate(_items(_field(chunk, "candidates"))):
            index = _field(candidate, "index")
            key = index if type(index) is int else position
            state = self.candidates.get(key)
            if state is None:
                state = self.candidates[key] = [[], [], None]
            text, calls, _, _ = _parts(_items(_field(_field(candidate, "content"), "parts")))
            if text is not None:
                state[0].append(text)
            state[1].extend(calls)
            reason = _reason(_field(candidate, "finish_reason"))
            if reason:
                state[2] = reason

    def output(self) -> Output:
        output = _output_of(self.model, self.id)
        messages: list[dict[str, Any]] = []
        reasons: list[str] = []
        for index in sorted(self.candidates):
            pieces, calls, reason = self.candidates[index]
            messages.append({"role": "assistant", "content": "".join(pieces) if pieces else None})
            output.tool_calls.extend(calls)
            if reason:
                reasons.append(reason)
        _finish(output, messages, reasons, self.usage)
        return output
