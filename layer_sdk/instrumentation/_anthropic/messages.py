"""The Messages API as action data: the prompt, the message, a stream's events.

``messages.create`` / ``parse`` / ``stream()`` (and ``beta.messages``). The
prompt is the ``system`` prompt (as a system message) and the ``messages``:
a message keeps its role and its text; its ``tool_use`` blocks (an earlier
turn's calls) become its ``tool_calls``, its ``tool_result`` blocks become
``tool`` messages of their own (as OpenAI's tool results are), and its
images and documents become attachments. A message's ``text`` blocks become
the output message, its ``tool_use`` blocks tool-call actions. A stream's
events are put back together by :class:`_MessageStream` into the same
output as the whole message would give; it reads the raw events, which the
``.stream()`` helper's streams yield too (beside events of their own, such
as ``text``, which it skips).
"""

from __future__ import annotations

import json
from typing import Any

from .._fields import _fields, _get, _items, _str
from .._mapping import Output, _attach, _attachment, _output_of, _usage, _without_none

#: The request parameters recorded as attributes of the prompt.
_MESSAGES_PARAMETERS = frozenset(
    (
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "output_format",
        "tools",
        "tool_choice",
        "service_tier",
        "inference_geo",
        "speed",
    )
)
#: Content blocks that are the model's reasoning or metadata, not the conversation's text.
_SKIPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})

# -- the prompt -----------------------------------------------------------------------


def _prompt_messages(kwargs: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The prompt's messages (text, tool calls and results) and the attachments."""
    result: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    system = _get(kwargs, "system")
    if system is not None:
        text, _, _, _ = _blocks(system)
        result.append({"role": "system", "content": text})
    for message in _items(_get(kwargs, "messages")):
        fields = _fields(message)
        role = _str(fields.get("role"))
        text, calls, tool_results, parts = _blocks(fields.get("content"))
        for tool_result, nested in tool_results:
            result.append(tool_result)
            _attach(attachments, nested, "tool", len(result) - 1)
        if text is not None or calls or not tool_results:
            entry: dict[str, Any] = {"role": role, "content": text}
            if calls:
                entry["tool_calls"] = calls
            result.append(entry)
        _attach(attachments, parts, role, len(result) - 1)
    return result, attachments


#: A ``tool_result`` block: its ``tool`` message, and the images and documents in it.
_ToolResult = tuple[dict[str, Any], list[dict[str, Any]]]


def _blocks(
    content: Any,
) -> tuple[str | None, list[dict[str, Any]], list[_ToolResult], list[dict[str, Any]]]:
    """Content (a string or blocks) as (its text, tool calls, tool results, other parts)."""
    if isinstance(content, str):
        return _str(content), [], [], []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[_ToolResult] = []
    parts: list[dict[str, Any]] = []
    for block in _items(content):
        kind = _get(block, "type")
        if kind == "text":
            text = _get(block, "text")
            if isinstance(text, str):
                texts.append(text)
        elif kind in ("tool_use", "server_tool_use"):
            calls.append(_tool_use(block))
        elif kind == "tool_result":
            results.append(_tool_result(block))
        elif kind not in _SKIPPED_BLOCKS:
            parts.append(_attachment(block))
    return (_str("\n".join(texts)) if texts else None), calls, results, parts


def _tool_use(block: Any) -> dict[str, Any]:
    arguments = _get(block, "input")
    entry = {
        "id": _str(_get(block, "id")),
        "type": _str(_get(block, "type")) or "tool_use",
        "name": _str(_get(block, "name")),
        "arguments": _str(arguments) if isinstance(arguments, str) else _json(arguments),
    }
    return _without_none(entry)


def _tool_result(block: Any) -> _ToolResult:
    text, _, _, parts = _blocks(_get(block, "content"))
    entry: dict[str, Any] = {"role": "tool", "content": text}
    tool_use_id = _str(_get(block, "tool_use_id"))
    if tool_use_id:
        entry["tool_call_id"] = tool_use_id
    if _get(block, "is_error") is True:
        entry["is_error"] = True
    return entry, parts


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return _str(json.dumps(_plain_json(value), separators=(",", ":")))
    except (TypeError, ValueError):
        return None


def _plain_json(value: Any) -> Any:
    """A tool input (a dict, or a pydantic model's fields) as JSON-ready values."""
    dump = getattr(value, "model_dump", None)
    return dump() if callable(dump) else value


# -- the message ------------------------------------------------------------------------


def _message_output(result: Any) -> Output:
    fields = _fields(result)
    output = _output_of(fields.get("model"), fields.get("id"))
    text, calls, _, _ = _blocks(fields.get("content"))
    output.tool_calls = calls
    role = _str(fields.get("role")) or "assistant"
    output.messages = [{"role": role, "content": text}]
    _stopped(output, fields.get("stop_reason"), fields.get("stop_sequence"))
    output.usage = _usage(fields.get("usage"))
    return output


def _stopped(output: Output, reason: Any, sequence: Any) -> None:
    if isinstance(reason, str):
        output.attributes["finish_reason"] = reason
    if isinstance(sequence, str):
        output.attributes["stop_sequence"] = _str(sequence)


# -- a stream ---------------------------------------------------------------------------


class _MessageStream:
    """Accumulates the raw Messages stream events (``message_start`` ... ``message_stop``)."""

    __slots__ = ("blocks", "id", "model", "reason", "role", "sequence", "usage")

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.role: str | None = None
        self.reason: Any = None
        self.sequence: Any = None
        self.usage: dict[str, Any] = {}
        #: Content block index -> [type, text pieces, id, name, input JSON pieces].
        self.blocks: dict[int, list[Any]] = {}

    def add(self, event: Any) -> None:
        fields = _fields(event)
        kind = fields.get("type")
        if kind == "content_block_delta":
            delta = _fields(fields.get("delta"))
            block = self._block(fields.get("index"))
            piece = delta.get("text")
            if piece.__class__ is str:
                block[1].append(piece)
            else:
                piece = delta.get("partial_json")
                if piece.__class__ is str:
                    block[4].append(piece)
        elif kind == "content_block_start":
            start = _fields(fields.get("content_block"))
            block = self._block(fields.get("index"))
            block[0] = start.get("type")
            block[2] = start.get("id")
            block[3] = start.get("name")
            text = start.get("text")
            if isinstance(text, str) and text:
                block[1].append(text)
        elif kind == "message_start":
            message = _fields(fields.get("message"))
            self.id = _str(message.get("id"))
            self.model = _str(message.get("model"))
            self.role = _str(message.get("role"))
            self._usage(message.get("usage"))
        elif kind == "message_delta":
            delta = _fields(fields.get("delta"))
            self.reason = delta.get("stop_reason") or self.reason
            self.sequence = delta.get("stop_sequence") or self.sequence
            self._usage(fields.get("usage"))

    def _block(self, index: Any) -> list[Any]:
        key = index if type(index) is int else len(self.blocks)
        block = self.blocks.get(key)
        if block is None:
            block = self.blocks[key] = ["text", [], None, None, []]
        return block

    def _usage(self, usage: Any) -> None:
        """Later counts win: ``message_delta`` carries the final ``output_tokens``."""
        counts = _usage(usage)
        if counts:
            self.usage.update(counts)

    def output(self) -> Output:
        output = _output_of(self.model, self.id)
        texts: list[str] = []
        for index in sorted(self.blocks):
            kind, pieces, call_id, name, arguments = self.blocks[index]
            if kind in ("tool_use", "server_tool_use"):
                entry = {
                    "id": _str(call_id),
                    "type": kind,
                    "name": _str(name),
                    "arguments": _str("".join(arguments)) if arguments else "{}",
                }
                output.tool_calls.append(_without_none(entry))
            elif kind == "text":
                texts.extend(pieces)
        output.messages = [
            {"role": self.role or "assistant", "content": _str("".join(texts)) if texts else None}
        ]
        _stopped(output, self.reason, self.sequence)
        output.usage = dict(self.usage) if self.usage else None
        return output
