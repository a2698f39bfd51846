"""The Responses API as action data: the input, the response, a stream's events.

``responses.create`` / ``parse``. The prompt is the ``instructions`` (as a
system message) and the ``input``: a string, or items (messages, and the
function-call outputs and calls of earlier turns). A response's output
items become the output messages and the tool-call actions. A stream's
events are gathered by :class:`_ResponsesStream`; its final ``response``
event, when it comes, carries the whole response.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._fields import _get, _items, _plain, _str
from .._mapping import Output, _arguments, _attach, _content, _output_of, _usage, _without_none

#: The request parameters recorded as attributes of the prompt.
_RESPONSES_PARAMETERS = frozenset(
    (
        "temperature",
        "top_p",
        "max_output_tokens",
        "max_tool_calls",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "text_format",
        "reasoning",
        "previous_response_id",
        "conversation",
        "prompt",
        "truncation",
        "service_tier",
        "background",
        "store",
        "user",
    )
)

# -- the prompt -----------------------------------------------------------------------


def _responses_messages(
    kwargs: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    instructions = kwargs.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "system", "content": _str(instructions)})
    given = kwargs.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": _str(given)})
        return messages, attachments
    for item in _items(given):
        kind = _get(item, "type")
        role = _get(item, "role")
        if kind in (None, "message") and isinstance(role, str):
            text, parts = _content(_get(item, "content"))
            messages.append({"role": role, "content": text})
            _attach(attachments, parts, role, len(messages) - 1)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            output = _get(item, "output")
            text = output if isinstance(output, str) else _content(output)[0]
            entry = {"role": "tool", "content": _str(text)}
            call_id = _str(_get(item, "call_id"))
            if call_id:
                entry["tool_call_id"] = call_id
            messages.append(entry)
        elif kind in ("function_call", "custom_tool_call"):
            messages.append(
                {"role": "assistant", "content": None, "tool_calls": [_responses_tool_call(item)]}
            )
    return messages, attachments


def _responses_tool_call(item: Any) -> dict[str, Any]:
    kind = _get(item, "type")
    entry: dict[str, Any] = {
        "id": _str(_get(item, "call_id")) or _str(_get(item, "id")),
        "type": {"function_call": "function", "custom_tool_call": "custom"}.get(kind, kind),
        "name": _str(_get(item, "name")),
        "arguments": _str(_arguments(item)),
        "status": _str(_get(item, "status")),
    }
    return _without_none(entry)


# -- the response ---------------------------------------------------------------------


def _responses_output(result: Any) -> Output:
    output = _output_of(_get(result, "model"), _get(result, "id"))
    status = _get(result, "status")
    if isinstance(status, str):
        output.attributes["status"] = status
        output.incomplete = status == "incomplete"
    _responses_items(output, _get(result, "output"))
    error = _get(result, "error")
    if error is not None:
        output.error = _failure(error, "the response failed", "response_failed")
    output.usage = _usage(_get(result, "usage"))
    return output


def _responses_items(output: Output, items: Any) -> None:
    messages: list[dict[str, Any]] = []
    for item in _items(items):
        kind = _get(item, "type")
        if kind == "message":
            text, _ = _content(_get(item, "content"))
            messages.append({"role": _str(_get(item, "role")) or "assistant", "content": text})
        elif isinstance(kind, str) and kind.endswith("_call"):
            output.tool_calls.append(_responses_tool_call(item))
    output.messages = messages


def _failure(error: Any, message: str, kind: str) -> dict[str, Any]:
    """The action error of an ``error`` object or event: no HTTP status, so no ``code``.

    ``kind`` names the failure in ``details["type"]``; OpenAI's own code and
    param, when given, are details too. The provider's text is kept as it came:
    the call scrubs it of secrets, the client's API key among them, when it
    records the output (``Call.record_output``).
    """
    text = _get(error, "message")
    details: dict[str, Any] = {"type": kind}
    for name in ("code", "param"):
        value = _get(error, name)
        if _plain(value):
            details[name] = value
    return {"message": text if isinstance(text, str) else message, "details": details}


# -- a stream -------------------------------------------------------------------------


class _ResponsesStream:
    """Accumulates Responses API stream events; the final ``response`` wins when it comes."""

    __slots__ = ("created", "error", "final", "items", "texts")

    def __init__(self) -> None:
        self.created: Any = None
        self.final: Any = None
        self.texts: dict[int, list[str]] = {}
        self.items: list[Any] = []
        self.error: dict[str, Any] | None = None

    def add(self, event: Any) -> None:
        kind = _get(event, "type")
        if kind == "response.output_text.delta":
            delta = _get(event, "delta")
            if isinstance(delta, str):
                index = _get(event, "output_index")
                self.texts.setdefault(index if isinstance(index, int) else 0, []).append(delta)
        elif kind == "response.output_item.done":
            self.items.append(_get(event, "item"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.final = _get(event, "response")
        elif kind == "response.created":
            self.created = _get(event, "response")
        elif kind == "error":
            self.error = _failure(event, "stream error", "error")

    def output(self) -> Output:
        if self.final is not None:
            output = _responses_output(self.final)
        else:
            output = _output_of(_get(self.created, "model"), _get(self.created, "id"))
            _responses_items(output, self.items)
            if not output.messages and self.texts:
                text = "".join("".join(self.texts[i]) for i in sorted(self.texts))
                output.messages = [{"role": "assistant", "content": _str(text)}]
        if self.error is not None:
            output.error = self.error
        return output
