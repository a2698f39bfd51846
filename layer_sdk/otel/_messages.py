"""Messages as the GenAI instrumentations write them, as the messages of Layer's actions.

Three spellings of the same conversation reach a span processor:

- the current conventions' **parts** (``gen_ai.input.messages``,
  ``gen_ai.output.messages``, ``gen_ai.system_instructions``: JSON, or what the
  completion hook hands over): ``{"role", "parts": [{"type": "text", "content"},
  {"type": "tool_call", "id", "name", "arguments"}, {"type": "tool_call_response",
  "id", "response"}, {"type": "blob" | "uri" | "file", ...}]}``;
- **flat** messages (the older indexed attributes, OpenInference's, the message
  events of the conventions before 1.37): ``{"role", "content", "tool_calls":
  [{"id", "function": {"name", "arguments"}}], "tool_call_id"}``, where the
  content may also be a list of typed blocks;
- tool definitions, in any of the providers' shapes (only their names are kept).

Whatever the spelling, a prompt becomes what the provider instrumentation
records for an OpenAI chat call (``instrumentation/_openai/chat.py``): one
``{"role", "content"}`` per message, an assistant's calls in its
``tool_calls``, each tool result a ``tool`` message with its ``tool_call_id``,
non-text parts as attachments; an answer becomes its output messages and its
tool calls. Nothing here raises on an unexpected shape: what cannot be read
is left out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..instrumentation._fields import _str
from ..instrumentation._mapping import _without_none

#: Parts that are the model's reasoning, not the conversation's text (as Anthropic's
#: ``thinking`` blocks are left out of the native records).
_SKIPPED_PARTS = frozenset({"reasoning", "thinking", "redacted_thinking"})
_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
_CALL_PARTS = frozenset({"tool_call", "server_tool_call", "function_call", "tool_use"})
_RESPONSE_PARTS = frozenset({"tool_call_response", "server_tool_call_response", "tool_result"})

Message = dict[str, Any]


class Prompt:
    """A prompt being read: its messages and the attachments of their non-text parts."""

    __slots__ = ("attachments", "messages")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.attachments: list[dict[str, Any]] = []

    def add(
        self,
        role: Any,
        texts: list[str],
        calls: list[dict[str, Any]],
        results: list[Message],
        parts: list[dict[str, Any]],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """One message read into ``texts``, its tool ``calls`` and ``results``, other ``parts``."""
        role = _str(role)
        self.messages.extend(results)
        if texts or calls or not results:
            entry: Message = {"role": role, "content": _joined(texts)}
            if extra:
                entry.update(extra)
            if calls:
                entry["tool_calls"] = calls
            self.messages.append(entry)
        index = len(self.messages) - 1
        for part in parts:
            self.attachments.append({**part, "role": role, "message_index": index})


class Answer:
    """An answer being read: its output messages, tool calls and finish reasons."""

    __slots__ = ("finish_reasons", "messages", "tool_calls")

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.finish_reasons: list[str] = []

    def add(self, role: Any, texts: list[str], calls: list[dict[str, Any]], reason: Any) -> None:
        self.messages.append({"role": _str(role) or "assistant", "content": _joined(texts)})
        self.tool_calls.extend(calls)
        if isinstance(reason, str) and reason:
            self.finish_reasons.append(reason)


# -- values --------------------------------------------------------------------------


def decoded(value: Any) -> Any:
    """An attribute that holds JSON (a string) decoded; any other value as it is.

    None when the string is not JSON: a message list that does not decode is
    not a message list.
    """
    if isinstance(value, (str, bytes)):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def as_text(value: Any) -> str | None:
    """A tool's arguments or result as recorded: a string as is, anything else as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return _str(value)
    try:
        return _str(json.dumps(value, separators=(",", ":"), default=str))
    except (TypeError, ValueError):
        return _str(str(value))


def _joined(texts: list[str]) -> str | None:
    return _str("\n".join(texts)) if texts else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else list(value) if isinstance(value, tuple) else []


def _field(value: Any, name: str) -> Any:
    if isinstance(value, dict):  # decoded JSON: the common case, without the ABC check
        return value.get(name)
    return value.get(name) if isinstance(value, Mapping) else None


# -- the current conventions: messages of parts ----------------------------------------


def prompt_of_parts(system: Any, messages: Any) -> Prompt | None:
    """The prompt of ``gen_ai.system_instructions`` and ``gen_ai.input.messages``.

    None when neither is there (the instrumentation captured no content).
    """
    system, messages = decoded(system), decoded(messages)
    if not isinstance(messages, (list, tuple)) and not (
        isinstance(system, (list, tuple)) and system
    ):
        return None
    prompt = Prompt()
    if isinstance(system, (list, tuple)) and system:
        texts, _, _, _ = _parts(system)
        prompt.messages.append({"role": "system", "content": _joined(texts)})
    for message in _list(messages):
        texts, calls, results, parts = _parts(_field(message, "parts"))
        name = _str(_field(message, "name"))
        prompt.add(
            _field(message, "role"), texts, calls, results, parts, {"name": name} if name else None
        )
    return prompt


def answer_of_parts(messages: Any) -> Answer | None:
    """The answer of ``gen_ai.output.messages``; None when it is not there."""
    messages = decoded(messages)
    if not isinstance(messages, (list, tuple)):
        return None
    answer = Answer()
    for message in messages:
        texts, calls, _, _ = _parts(_field(message, "parts"))
        answer.add(_field(message, "role"), texts, calls, _field(message, "finish_reason"))
    return answer


def _parts(
    parts: Any,
) -> tuple[list[str], list[dict[str, Any]], list[Message], list[dict[str, Any]]]:
    """A message's parts as (texts, tool calls, tool results as messages, other parts)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[Message] = []
    others: list[dict[str, Any]] = []
    for part in _list(parts):
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = _field(part, "type")
        if kind in _TEXT_PARTS:
            text = _field(part, "content")
            text = _field(part, "text") if text is None else text
            if isinstance(text, str):
                texts.append(text)
        elif kind in _CALL_PARTS:
            calls.append(_call(part))
        elif kind in _RESPONSE_PARTS:
            response = _field(part, "response")
            if response is None:
                response = _field(part, "content")
            result: Message = {"role": "tool", "content": as_text(response)}
            call_id = _str(_field(part, "id")) or _str(_field(part, "tool_use_id"))
            if call_id:
                result["tool_call_id"] = call_id
            results.append(result)
        elif kind not in _SKIPPED_PARTS and isinstance(part, Mapping):
            others.append(_attachment(part))
    return texts, calls, results, others


def _call(part: Mapping[str, Any]) -> dict[str, Any]:
    """A tool call part (or a flat ``tool_calls`` entry) as a tool call of ours."""
    function = part.get("function")
    source = function if isinstance(function, Mapping) else part
    arguments = source.get("arguments")
    if arguments is None:
        arguments = source.get("input")
    kind = part.get("type")
    entry = {
        "id": _str(part.get("id")),
        "type": "function" if kind in (None, "tool_call", "function_call") else _str(kind),
        "name": _str(source.get("name")),
        "arguments": as_text(arguments),
    }
    return _without_none(entry)


def _attachment(part: Mapping[str, Any]) -> dict[str, Any]:
    """A non-text part (blob, uri, file, image), its plain fields kept."""
    result: dict[str, Any] = {}
    for key, value in part.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, str):
            result[key] = _str(value)
        elif isinstance(value, (int, float, bool)):
            result[key] = value
        elif isinstance(value, Mapping):  # {"image_url": {"url": ...}}
            for inner_key, inner in value.items():
                if isinstance(inner_key, str) and isinstance(inner, (str, int, float, bool)):
                    result.setdefault(inner_key, _str(inner) if isinstance(inner, str) else inner)
    return result


# -- flat messages: the indexed attributes, OpenInference, the message events ----------


def read_flat(
    message: Mapping[str, Any],
) -> tuple[
    Any, list[str], list[dict[str, Any]], list[Message], list[dict[str, Any]], dict[str, Any]
]:
    """A flat message as (role, texts, tool calls, tool results, other parts, extra fields).

    ``content`` is a string, typed blocks (a list, or a JSON string of one, as
    OpenLLMetry writes Anthropic's), or OpenInference's ``contents``.
    """
    content = message.get("content")
    if content is None:
        content = message.get("contents")
    if isinstance(content, str) and content.startswith("[") and content.endswith("]"):
        blocks = decoded(content)
        if isinstance(blocks, list) and blocks and all(_is_block(b) for b in blocks):
            content = blocks
    texts: list[str]
    calls: list[dict[str, Any]]
    results: list[Message]
    parts: list[dict[str, Any]]
    if isinstance(content, str):
        texts, calls, results, parts = [content], [], [], []
    else:
        texts, calls, results, parts = _parts(_blocks(content))
    for call in _list(decoded(message.get("tool_calls"))):
        if isinstance(call, Mapping):
            calls.append(_call(call))
    function_call = decoded(message.get("function_call"))
    if isinstance(function_call, Mapping):
        calls.append(_call(function_call))
    extra: dict[str, Any] = {}
    for name in ("name", "tool_call_id"):
        value = _str(message.get(name))
        if value:
            extra[name] = value
    return message.get("role"), texts, calls, results, parts, extra


def _is_block(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("type"), str)


def _blocks(content: Any) -> list[Any]:
    """Typed blocks, as the ``_parts`` reader takes them (OpenInference's ``message_content``
    entries and Anthropic's ``tool_use`` blocks included)."""
    blocks: list[Any] = []
    for block in _list(content):
        inner = _field(block, "message_content")
        blocks.append(inner if isinstance(inner, Mapping) else block)
    return blocks


def add_flat_to_prompt(prompt: Prompt, message: Mapping[str, Any]) -> None:
    """A flat message (a ``tool`` message keeps its ``tool_call_id``) added to ``prompt``."""
    role, texts, calls, results, parts, extra = read_flat(message)
    prompt.add(role, texts, calls, results, parts, extra)


def add_flat_to_answer(answer: Answer, message: Mapping[str, Any], reason: Any) -> None:
    role, texts, calls, _, _, _ = read_flat(message)
    answer.add(role, texts, calls, reason)


# -- tool definitions ------------------------------------------------------------------


def tool_names(definitions: Any) -> list[str]:
    """The names of tool definitions (``gen_ai.tool.definitions`` and the like)."""
    names: list[str] = []
    for tool in _list(decoded(definitions)):
        tool = decoded(tool)
        function = _field(tool, "function")
        name = _field(function, "name") or _field(tool, "name")
        if isinstance(name, str) and name:
            names.append(name)
    return names
