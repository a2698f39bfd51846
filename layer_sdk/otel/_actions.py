"""A GenAI call read from a span, recorded as the actions the native instrumentation records.

The same kinds and fields as an OpenAI call recorded by
``instrumentation/_call.py``:

- a completion: ``completion_prompt`` (the messages; the request's
  parameters and tool names as attributes), a ``completion_prompt_attachment``
  per non-text part, ``completion_output`` (the answer's messages, its finish
  reasons, the error of a failed call, a ``usage`` scanner), and a
  ``completion_tool_call`` per tool call of the answer;
- embeddings: one ``embeddings`` action (the inputs where the span has them,
  the count and size of the vectors, never the vectors);
- a tool run (``execute_tool``): one ``completion_tool_call`` with the
  ``arguments`` and the ``result``, timed as the tool ran.

Every action also carries ``gen_ai.operation.name`` and the span's
``otel.trace_id`` / ``otel.span_id`` (to find it in the tracing backend).
Where the instrumentation recorded no content, the prompt and the output
carry no ``data`` and the attribute ``content_recorded: false``: the
model, the usage, the timing and the error are still there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .._context import Recorder
from .._exceptions import LayerFirewallSessionBlocked
from .._schemas import SessionActionKind, SessionActionScanner
from ._spans import COMPLETION, EMBEDDINGS, GenAICall

logger = logging.getLogger("layer_sdk")

PROMPT = SessionActionKind.COMPLETION_PROMPT
OUTPUT = SessionActionKind.COMPLETION_OUTPUT
ATTACHMENT = SessionActionKind.COMPLETION_PROMPT_ATTACHMENT
TOOL_CALL = SessionActionKind.COMPLETION_TOOL_CALL
EMBEDDING = SessionActionKind.EMBEDDINGS

#: ``problem(where, exc)``: a failure of ours, logged (throttled) by the caller.
Problem = Callable[[str, BaseException], None]


def record(client: Recorder, session_id: str, call: GenAICall, problem: Problem) -> None:
    """Append the actions of ``call`` to the session ``session_id``; never raises."""
    actions = _Actions(client, session_id, call, problem)
    if call.kind == COMPLETION:
        actions.completion()
    elif call.kind == EMBEDDINGS:
        actions.embeddings()
    else:
        actions.tool_run()


class _Actions:
    __slots__ = ("call", "client", "problem", "session_id")

    def __init__(self, client: Recorder, session_id: str, call: GenAICall, problem: Problem):
        self.client = client
        self.session_id = session_id
        self.call = call
        self.problem = problem

    def base(self, model: str | None) -> dict[str, Any]:
        call = self.call
        attributes: dict[str, Any] = {}
        if model:
            attributes["model.id"] = model
        if call.provider:
            attributes["model.provider"] = call.provider
        attributes["gen_ai.operation.name"] = call.operation
        attributes["otel.trace_id"] = f"{call.trace_id:032x}"
        attributes["otel.span_id"] = f"{call.span_id:016x}"
        if call.scope:
            attributes["otel.scope"] = call.scope
        return attributes

    def append(
        self,
        kind: SessionActionKind,
        start: datetime,
        end: datetime,
        attributes: dict[str, Any],
        data: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        usage = self.call.usage if kind in (OUTPUT, EMBEDDING) else None
        try:
            self.client.append_action(
                self.session_id,
                kind=kind,
                start_time=start,
                end_time=end,
                attributes=attributes,
                data=data,
                error=error,
                scanners=[SessionActionScanner("usage", usage)] if usage else None,
                sync=False,
            )
        except LayerFirewallSessionBlocked as exc:
            # The session was blocked: it takes no more actions, as for any caller.
            logger.warning(
                "layer-sdk did not record the %s of a %s span: %s",
                kind.value,
                self.call.operation,
                exc,
            )
        except Exception as exc:
            self.problem(f"recording a {kind.value} action", exc)

    def completion(self) -> None:
        call = self.call
        prompt, answer = call.prompt, call.answer
        attributes = self.base(call.request_model)
        attributes.update(call.parameters)
        if call.tools:
            attributes["tools"] = call.tools
        recorded = prompt is not None or answer is not None
        if not recorded:
            attributes["content_recorded"] = False
        data = None if prompt is None else {"messages": prompt.messages}
        self.append(PROMPT, call.started, call.started, attributes, data)
        for attachment in prompt.attachments if prompt is not None else ():
            self.append(
                ATTACHMENT, call.started, call.started, self.base(call.request_model), attachment
            )
        model = call.response_model or call.request_model
        attributes = self.base(model)
        if call.response_id:
            attributes["response.id"] = call.response_id
        reasons = call.finish_reasons
        if reasons:
            attributes["finish_reason"] = reasons[0] if len(reasons) == 1 else reasons
        if call.stream:
            attributes["stream"] = True
        if not recorded:
            attributes["content_recorded"] = False
        data = None if answer is None else {"messages": answer.messages}
        self.append(OUTPUT, call.started, call.ended, attributes, data, call.error)
        for tool_call in answer.tool_calls if answer is not None else ():
            self.append(TOOL_CALL, call.started, call.ended, self.base(model), tool_call)

    def embeddings(self) -> None:
        call = self.call
        attributes = self.base(call.response_model or call.request_model)
        attributes.update(call.parameters)
        if call.vectors is not None:
            attributes["embeddings.count"] = call.vectors
        if call.dimensions is not None:
            attributes["embeddings.dimensions"] = call.dimensions
        data = None if call.inputs is None else {"input": call.inputs}
        if data is None:
            attributes["content_recorded"] = False
        self.append(EMBEDDING, call.started, call.ended, attributes, data, call.error)

    def tool_run(self) -> None:
        call = self.call
        self.append(
            TOOL_CALL, call.started, call.ended, self.base(None), call.tool or {}, call.error
        )
