"""The GenAI completion hook: the content of a call, handed to Layer whatever the span keeps.

The official GenAI instrumentations (``opentelemetry-util-genai``) put the
prompt and the answer on the span only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` says so, but they give
them to a *completion hook* in any case, right before the span ends, even
when the span is sampled out. :class:`LayerCompletionHook` is one: it is
loaded from the ``opentelemetry_genai_completion_hook`` entry point named
``layer`` (``OTEL_INSTRUMENTATION_GENAI_COMPLETION_HOOK=layer``), or passed
to an instrumentor (``OpenAIInstrumentor().instrument(completion_hook=...)``).

- A span that is recorded: the content is kept (by span ID, bounded) for the
  ``LayerSpanProcessor``, which takes it as the span ends and reads it on its
  reader thread. Nothing is converted on the caller's thread.
- A span sampled out (no processor will see it): the call is recorded here,
  with what the hook knows (the messages, the time), in the session the
  processor would choose (the conversation, the ``session_context()``, the trace).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from datetime import datetime, timezone
from typing import Any

from .._client import Client
from .._context import current_session_id
from . import _messages as m
from ._actions import record
from ._problems import PROBLEMS
from ._sessions import Sessions
from ._spans import COMPLETION, GenAICall

#: Content kept for spans that have not ended yet; the oldest go first past this.
MAX_KEPT = 1024

_lock = threading.Lock()
_kept: dict[int, tuple[Any, Any, Any]] = {}


def take_kept(span_id: int) -> tuple[Any, Any, Any] | None:
    """What the hook kept for ``span_id`` (None: nothing), as it was given; forgets it.
    Cheap: the processor takes it as the span ends, ``plain_content`` reads it later."""
    if span_id not in _kept:
        return None
    with _lock:
        return _kept.pop(span_id, None)


def plain_content(kept: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    """(system instruction, inputs, outputs) of what ``take_kept`` gave, as JSON-ready
    lists of messages and parts."""
    system, inputs, outputs = kept
    return _plain(system), _plain(inputs), _plain(outputs)


def _plain(values: Any) -> list[Any]:
    """util-genai's message and part dataclasses as the dicts its JSON attributes spell."""
    return [_as_dict(value) for value in values or ()]


def _as_dict(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


class LayerCompletionHook:
    """A completion hook (``opentelemetry.util.genai.completion_hook.CompletionHook``) that
    hands each call's content to Layer. ``client`` defaults to the global ``layer``."""

    def __init__(self, client: Client | None = None) -> None:
        self._client = client
        self._sessions: Sessions | None = None

    def on_completion(
        self,
        *,
        inputs: list[Any],
        outputs: list[Any],
        system_instruction: list[Any],
        tool_definitions: list[Any] | None = None,
        span: Any = None,
        log_record: Any = None,
    ) -> None:
        """Called by the instrumentation as a call completes, before its span ends."""
        try:
            if span is None:
                return
            context = span.get_span_context()
            content = (system_instruction, inputs, outputs)
            if span.is_recording():
                with _lock:
                    _kept[context.span_id] = content
                    if len(_kept) > MAX_KEPT:
                        del _kept[next(iter(_kept))]
                return
            self._record_unsampled(context, content, tool_definitions)
        except Exception as exc:
            PROBLEMS("handing a completion to Layer", exc)

    def _record_unsampled(
        self, context: Any, content: tuple[Any, Any, Any], tools: list[Any] | None
    ) -> None:
        """A call whose span no processor sees: recorded from the content alone."""
        client = self._client
        if client is None:
            from .. import layer

            client = self._client = layer
        if self._sessions is None:
            self._sessions = Sessions(client)
        system, inputs, outputs = (_plain(value) for value in content)
        call = GenAICall(COMPLETION, "chat")
        call.trace_id, call.span_id = context.trace_id, context.span_id
        call.started = call.ended = datetime.now(timezone.utc)
        call.prompt = m.prompt_of_parts(system, inputs)
        call.answer = m.answer_of_parts(outputs)
        call.tools = m.tool_names(_plain(tools))
        session_id = self._sessions.of(call, current_session_id.get())
        record(client, session_id, call, PROBLEMS)


def _restart_in_child() -> None:
    """A fresh lock in a forked child: a thread of the parent may have held it at fork."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_restart_in_child)
