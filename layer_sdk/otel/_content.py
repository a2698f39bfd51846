"""Where a span keeps its prompt and its answer: the readers of each instrumentation's layout.

Each reader takes a span's attributes (and its events) and fills the prompt
and the answer of a :class:`~._spans.GenAICall` when that layout is there,
from the newest conventions to the oldest:

1. the current GenAI conventions: ``gen_ai.system_instructions``,
   ``gen_ai.input.messages``, ``gen_ai.output.messages`` (JSON of parts);
2. the indexed attributes of the conventions' first drafts, that OpenLLMetry
   still writes: ``gen_ai.prompt.{i}.role`` / ``.content`` / ``.tool_calls.{j}.*``,
   ``gen_ai.completion.{i}.*``;
3. OpenInference: ``llm.input_messages.{i}.message.*``,
   ``llm.output_messages.{i}.message.*``;
4. the message events of the conventions before 1.37 (``gen_ai.system.message``,
   ``gen_ai.user.message``, ``gen_ai.assistant.message``, ``gen_ai.tool.message``,
   ``gen_ai.choice``), as span events or as log records of the span, and the
   span events of 1.26 (``gen_ai.content.prompt`` / ``gen_ai.content.completion``).

The first layout that has a prompt gives it; likewise for the answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import _messages as m

#: Names of the message events (conventions before 1.37) and the role each one stands for.
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
#: Every event name the processor reads (also as log records).
EVENT_NAMES = frozenset({*MESSAGE_EVENTS, CHOICE_EVENT})


# -- nested attributes -------------------------------------------------------------------


def unflatten(attributes: Mapping[str, Any], prefix: str) -> dict[Any, Any]:
    """The attributes under ``prefix`` as nested dicts; a number in a key is an int key.

    ``{"p.0.role": "user", "p.0.tool_calls.1.name": "f"}`` under ``"p."`` gives
    ``{0: {"role": "user", "tool_calls": {1: {"name": "f"}}}}``.
    """
    tree: dict[Any, Any] = {}
    size = len(prefix)
    for key, value in attributes.items():
        if not key.startswith(prefix):
            continue
        node = tree
        segments = key[size:].split(".")
        for segment in segments[:-1]:
            name: Any = int(segment) if segment.isdigit() else segment
            child = node.get(name)
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child
        last = segments[-1]
        node[int(last) if last.isdigit() else last] = value
    return tree


def indexed(tree: Any) -> list[Any]:
    """The int-keyed entries of an unflattened level, in index order."""
    if not isinstance(tree, dict):
        return []
    return [tree[k] for k in sorted(k for k in tree if isinstance(k, int))]


# -- 1. the current conventions ---------------------------------------------------------


def current(attributes: Mapping[str, Any]) -> tuple[m.Prompt | None, m.Answer | None]:
    prompt = m.prompt_of_parts(
        attributes.get("gen_ai.system_instructions"), attributes.get("gen_ai.input.messages")
    )
    return prompt, m.answer_of_parts(attributes.get("gen_ai.output.messages"))


# -- 2. the indexed attributes ----------------------------------------------------------


def indexed_attributes(
    attributes: Mapping[str, Any],
) -> tuple[m.Prompt | None, m.Answer | None]:
    prompt = answer = None
    if not any(key.startswith(("gen_ai.prompt.", "gen_ai.completion.")) for key in attributes):
        return None, None
    prompts = indexed(unflatten(attributes, "gen_ai.prompt."))
    if prompts:
        prompt = m.Prompt()
        for message in prompts:
            if isinstance(message, dict):
                m.add_flat_to_prompt(prompt, _flat(message))
    completions = indexed(unflatten(attributes, "gen_ai.completion."))
    if completions:
        answer = m.Answer()
        for message in completions:
            if isinstance(message, dict):
                m.add_flat_to_answer(answer, _flat(message), message.get("finish_reason"))
    return prompt, answer


def _flat(message: dict[Any, Any]) -> dict[str, Any]:
    """An unflattened indexed message with its ``tool_calls`` as a list (each entry flat)."""
    flat = {k: v for k, v in message.items() if isinstance(k, str)}
    calls = message.get("tool_calls")
    if isinstance(calls, dict):
        flat["tool_calls"] = [_flat(call) for call in indexed(calls) if isinstance(call, dict)]
    function = message.get("function_call")
    if isinstance(function, dict):
        flat["function_call"] = function
    return flat


# -- 3. OpenInference -------------------------------------------------------------------


def openinference(attributes: Mapping[str, Any]) -> tuple[m.Prompt | None, m.Answer | None]:
    prompt = answer = None
    if "openinference.span.kind" not in attributes:
        return None, None
    inputs = indexed(unflatten(attributes, "llm.input_messages."))
    if inputs:
        prompt = m.Prompt()
        for entry in inputs:
            m.add_flat_to_prompt(prompt, _openinference_message(entry))
    outputs = indexed(unflatten(attributes, "llm.output_messages."))
    if outputs:
        answer = m.Answer()
        reason = attributes.get("llm.finish_reason")
        for entry in outputs:
            m.add_flat_to_answer(answer, _openinference_message(entry), reason)
    return prompt, answer


def _openinference_message(entry: Any) -> dict[str, Any]:
    """``{"message": {"role", "content", "contents": {j: {"message_content": ...}},
    "tool_calls": {j: {"tool_call": {"id", "function": {...}}}}}}`` as a flat message."""
    message = entry.get("message") if isinstance(entry, dict) else None
    if not isinstance(message, dict):
        return {}
    flat = {k: v for k, v in message.items() if isinstance(k, str)}
    contents = message.get("contents")
    if isinstance(contents, dict):
        flat["contents"] = [_openinference_block(c) for c in indexed(contents)]
    calls = message.get("tool_calls")
    if isinstance(calls, dict):
        flat["tool_calls"] = [
            call.get("tool_call") for call in indexed(calls) if isinstance(call, dict)
        ]
    return flat


def _openinference_block(content: Any) -> Any:
    block = content.get("message_content") if isinstance(content, dict) else None
    if not isinstance(block, dict):
        return None
    image = block.get("image")
    if isinstance(image, dict) and isinstance(image.get("image"), dict):
        return {"type": "image_url", **image["image"]}  # {"image": {"image": {"url"}}}
    return block


# -- 4. the message events ----------------------------------------------------------------


def events(named: Iterable[tuple[str, Any]]) -> tuple[m.Prompt | None, m.Answer | None]:
    """``named``: (event name, body) of the span's events, in the order they were emitted.

    A body is the log record's body, or the span event's attributes (where an
    event's body may be JSON in ``gen_ai.event.content``, and nested fields
    JSON strings).
    """
    prompt = answer = None
    for name, body in named:
        if name == "gen_ai.content.prompt":  # 1.26: the whole prompt, as JSON
            prompt = prompt or m.Prompt()
            for message in _listed(body, "gen_ai.prompt"):
                m.add_flat_to_prompt(prompt, message)
            continue
        if name == "gen_ai.content.completion":
            answer = answer or m.Answer()
            for message in _listed(body, "gen_ai.completion"):
                m.add_flat_to_answer(answer, message, message.get("finish_reason"))
            continue
        if name not in EVENT_NAMES:
            continue
        body = _event_body(body)
        if name == CHOICE_EVENT:
            answer = answer or m.Answer()
            message = m.decoded(body.get("message"))
            flat = dict(message) if isinstance(message, Mapping) else {}
            if "tool_calls" in body and "tool_calls" not in flat:
                flat["tool_calls"] = body["tool_calls"]
            m.add_flat_to_answer(answer, flat, body.get("finish_reason"))
        else:
            prompt = prompt or m.Prompt()
            flat = dict(body)
            flat.setdefault("role", MESSAGE_EVENTS[name])
            if name == "gen_ai.tool.message" and "id" in flat:
                flat.setdefault("tool_call_id", flat["id"])
            m.add_flat_to_prompt(prompt, flat)
    return prompt, answer


def _event_body(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        return {"content": body} if isinstance(body, str) else {}
    content = body.get("gen_ai.event.content")
    if isinstance(content, str):
        decoded = m.decoded(content)
        if isinstance(decoded, Mapping):
            return decoded
    return body


def _listed(body: Any, key: str) -> list[Mapping[str, Any]]:
    value = m.decoded(body.get(key)) if isinstance(body, Mapping) else None
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
