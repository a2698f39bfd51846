"""The record of one OpenAI call: which methods, and how their outcomes become actions.

``TARGETS`` lists the methods whose calls are recorded, each with the
``api`` whose mapping reads it and the ``operation`` it is recorded as.
:class:`Call` is the shared record (``instrumentation/_call.py``) with
OpenAI's mappings: chat and responses are recorded as a prompt and an
output (a stream's output when it ends); embeddings and moderations as one
action carrying the input, the result's summary, or the error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..._schemas import SessionActionError, SessionActionKind
from .. import _stainless
from .._call import Call as _SharedCall
from .._mapping import Output, _now, _parameters
from .._provider import EXTRA_HEADERS, Provider, Target
from .._streams import Accumulator
from .chat import _CHAT_PARAMETERS, _chat_messages, _chat_output, _ChatStream
from .embeddings import (
    _EMBEDDING_PARAMETERS,
    _embedding_inputs,
    _embedding_result,
    _moderation_inputs,
    _moderation_result,
)
from .responses import (
    _RESPONSES_PARAMETERS,
    _responses_messages,
    _responses_output,
    _ResponsesStream,
)

__all__ = ["OPENAI", "TARGETS", "Call"]

EMBEDDINGS = SessionActionKind.EMBEDDINGS
MODERATION = SessionActionKind.MODERATION

#: (module, class, method, api, operation); the ``Async*`` classes are the async client's.
_CHAT, _BETA_CHAT = "openai.resources.chat.completions", "openai.resources.beta.chat.completions"
_RESPONSES, _EMBEDDINGS = "openai.resources.responses", "openai.resources.embeddings"
_MODERATIONS = "openai.resources.moderations"
_METHODS: tuple[tuple[str, str, str, str, str], ...] = (
    (_CHAT, "Completions", "create", "chat", "chat.completions.create"),
    (_CHAT, "AsyncCompletions", "create", "chat", "chat.completions.create"),
    (_CHAT, "Completions", "parse", "chat", "chat.completions.parse"),
    (_CHAT, "AsyncCompletions", "parse", "chat", "chat.completions.parse"),
    (_BETA_CHAT, "Completions", "parse", "chat", "beta.chat.completions.parse"),
    (_BETA_CHAT, "AsyncCompletions", "parse", "chat", "beta.chat.completions.parse"),
    (_RESPONSES, "Responses", "create", "responses", "responses.create"),
    (_RESPONSES, "AsyncResponses", "create", "responses", "responses.create"),
    (_RESPONSES, "Responses", "parse", "responses", "responses.parse"),
    (_RESPONSES, "AsyncResponses", "parse", "responses", "responses.parse"),
    (_EMBEDDINGS, "Embeddings", "create", "embeddings", "embeddings.create"),
    (_EMBEDDINGS, "AsyncEmbeddings", "create", "embeddings", "embeddings.create"),
    (_MODERATIONS, "Moderations", "create", "moderations", "moderations.create"),
    (_MODERATIONS, "AsyncModerations", "create", "moderations", "moderations.create"),
)
#: The methods patched; ``spec``: (api, operation).
TARGETS = tuple(
    Target(module, cls, method, (api, operation), is_async=cls.startswith("Async"))
    for module, cls, method, api, operation in _METHODS
)
#: The apis recorded as a prompt and an output; the others are one action.
_COMPLETION_APIS = frozenset({"chat", "responses"})

OPENAI = Provider(
    name="openai",
    package="openai",
    label="OpenAI",
    headers=EXTRA_HEADERS,
    read_arguments=("messages", "input", "tools", "functions"),
    raw_header=_stainless.RAW_HEADER,
)


def recognise() -> None:
    """Look up openai's classes; called when the classes are patched."""
    _stainless.recognise("openai", OPENAI.results)


class Call(_SharedCall):
    """One OpenAI call: chat and responses as completions, the others as one action."""

    __slots__ = ()

    PROVIDER = OPENAI

    def prompt(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], frozenset[str]]:
        if self.api == "chat":
            messages, attachments = _chat_messages(self.kwargs.get("messages"))
            return messages, attachments, _CHAT_PARAMETERS
        messages, attachments = _responses_messages(self.kwargs)
        return messages, attachments, _RESPONSES_PARAMETERS

    def output_of(self, result: Any) -> Output:
        return _chat_output(result) if self.api == "chat" else _responses_output(result)

    def accumulator(self) -> Accumulator:
        return _ChatStream() if self.api == "chat" else _ResponsesStream()

    # Embeddings and moderations: one action, whatever the outcome.

    def record_failure(self, error: dict[str, Any], ended: datetime) -> None:
        if self.api in _COMPLETION_APIS:
            super().record_failure(error, ended)
        else:
            self.record_single(None, ended, error=error)

    def record_unread(self, ended: datetime) -> None:
        if self.api in _COMPLETION_APIS:
            super().record_unread(ended)
        else:
            self.record_single(None, ended, unread=True)

    def record_result(self, result: Any, ended: datetime) -> None:
        if self.api in _COMPLETION_APIS:
            super().record_result(result, ended)
        else:
            self.record_single(result, ended)

    def watch(self, stream: Any, is_async: bool) -> None:
        if self.api in _COMPLETION_APIS:
            super().watch(stream, is_async)
        else:  # no API of these streams: record what we have
            self.record_single(None, _now())

    def record_single(
        self,
        result: Any,
        ended: datetime,
        *,
        error: dict[str, Any] | None = None,
        unread: bool = False,
    ) -> None:
        """Embeddings and moderations: one action with the input, the result's summary."""
        kwargs = self.kwargs
        attributes = self.base_attributes(kwargs.get("model"))
        if self.api == "embeddings":
            kind = EMBEDDINGS
            attributes.update(_parameters(kwargs, _EMBEDDING_PARAMETERS))
            data: dict[str, Any] = {"input": _embedding_inputs(kwargs.get("input"))}
            scanners = _embedding_result(result, attributes) if result is not None else None
        else:
            kind = MODERATION
            data = {"input": _moderation_inputs(kwargs.get("input"))}
            scanners = _moderation_result(result, attributes) if result is not None else None
        if unread:
            attributes["response.unread"] = True
        self.append(
            kind, ended, attributes, data, SessionActionError(**error) if error else None, scanners
        )
