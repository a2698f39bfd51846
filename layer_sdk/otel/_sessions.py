"""Which Layer session a span's call belongs to.

In this order:

1. the span's ``gen_ai.conversation.id`` (or OpenInference's ``session.id``):
   the session :func:`conversation_session_id` derives from it, the same for
   every span of the conversation, in every trace;
2. the ``session_context()`` block, ``@layer.session`` function, or request
   or task of an integration that was running when the span **started** (the
   processor notes it in ``on_start``; a pending session of an integration is
   created when the call is recorded);
3. the session of the span's trace: the first call of a trace starts a new
   session (attribute ``otel.trace_id``) and every later call of the trace
   joins it, so a LangChain agent run is one session. A trace whose call
   went to a conversation's or a context's session keeps that session.

A session this module chooses is created once per process, when its first
call is recorded. The maps are bounded (``MAX_REMEMBERED``, oldest first).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from typing import Any

from .._client import Client
from .._context import PendingSession
from .._exceptions import LayerMissingRequiredConfigurationError
from ._spans import GenAICall

#: How many traces, and how many conversations, keep their session in memory.
MAX_REMEMBERED = 10_000


def conversation_session_id(conversation_id: str, client: Client | None = None) -> str:
    """The Layer session ID of a GenAI conversation: a UUID version 5.

    ``uuid5(uuid5(NAMESPACE_URL, "layer-otel-conversation:" + application), conversation_id)``,
    where ``application`` is the client's ``application_id`` (or ``name:`` and its
    ``application_name``): stable across traces, processes and restarts, and
    distinct between applications. ``client`` defaults to the global ``layer``.
    """
    if client is None:
        from .. import layer

        client = layer
    return str(uuid.uuid5(_namespace(client), conversation_id))


def _namespace(client: Client) -> uuid.UUID:
    config = client._settings()  # a disabled client's too: its calls go on, recording nothing
    if config is None:
        raise LayerMissingRequiredConfigurationError(
            "call init() before conversation_session_id(): the ID depends on the application"
        )
    application = config.application_id or f"name:{config.application_name}"
    return uuid.uuid5(uuid.NAMESPACE_URL, f"layer-otel-conversation:{application}")


class Sessions:
    """The sessions of one processor's calls; thread-safe."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._traces: OrderedDict[int, str] = OrderedDict()
        self._conversations: OrderedDict[str, str] = OrderedDict()

    def restart_in_child(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held it at fork)."""
        self._lock = threading.Lock()

    def of(self, call: GenAICall, started_in: str | PendingSession | None) -> str:
        """The session of ``call``; ``started_in``: the context's session when its span started.

        Creating a session encodes and enqueues it (no network), under this lock,
        so that two spans of one new trace ending together get one session.
        """
        if isinstance(started_in, PendingSession):
            started_in = started_in.resolve()
        with self._lock:
            traces = self._traces
            if call.conversation_id:
                session_id = self._conversation(call)
            elif started_in is not None:
                session_id = started_in
            else:
                found = traces.get(call.trace_id)
                if found is not None:
                    traces.move_to_end(call.trace_id)
                    return found
                session_id = self._client.create_session(
                    attributes={"otel.trace_id": f"{call.trace_id:032x}"},
                    start_time=call.started,
                    sync=False,
                )
            if call.trace_id not in traces:
                _remember(traces, call.trace_id, session_id)
            return session_id

    def _conversation(self, call: GenAICall) -> str:
        conversation = call.conversation_id
        assert conversation is not None
        found = self._conversations.get(conversation)
        if found is not None:
            self._conversations.move_to_end(conversation)
            return found
        session_id = self._client.create_session(
            session_id=conversation_session_id(conversation, self._client),
            attributes={"gen_ai.conversation.id": conversation},
            start_time=call.started,
            sync=False,
        )
        _remember(self._conversations, conversation, session_id)
        return session_id


def _remember(memory: OrderedDict[Any, str], key: Any, session_id: str) -> None:
    memory[key] = session_id
    if len(memory) > MAX_REMEMBERED:
        memory.popitem(last=False)
