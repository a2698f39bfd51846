"""The record of one instrumented call: from its outcome to its actions.

``TARGETS`` lists the methods whose calls are recorded, each with the
``api`` whose mapping reads it and the ``operation`` it is recorded as. The
wrapper (``patch.py``) starts a :class:`_Call` (``request._begin``) before
the original method runs, then ends it with :meth:`_Call.failed` or
:meth:`_Call.succeeded`, which route the outcome:

- an exception: the prompt and an output carrying the error (chat,
  responses), or the one action carrying it (embeddings, moderations);
- a ``with_raw_response`` result: its JSON body, when the response was read
  whole, is recorded as the result would be; an unread body is recorded
  as ``response.unread``;
- a stream: the prompt now, the output when the stream ends (``streams.py``);
- anything else: the prompt and the output, or the one action.

On the caller's thread the actions go to ``Client.append_action`` (encode
and enqueue: no network). Whatever goes wrong in here is logged once
(:func:`_problem`) and swallowed: the caller gets the original result, or
the original exception, unchanged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..._context import Recorder
from ..._schemas import SessionActionError, SessionActionKind, SessionActionScanner
from .chat import _CHAT_PARAMETERS, _chat_messages, _chat_output, _ChatStream
from .embeddings import (
    _EMBEDDING_PARAMETERS,
    _embedding_inputs,
    _embedding_result,
    _moderation_inputs,
    _moderation_result,
)
from .fields import _attribute, _classes
from .mapping import _error, _now, _Output, _parameters
from .responses import (
    _RESPONSES_PARAMETERS,
    _responses_messages,
    _responses_output,
    _ResponsesStream,
)
from .streams import _StreamRecord, _trace_stream

logger = logging.getLogger("layer_sdk")

PROMPT = SessionActionKind.COMPLETION_PROMPT
OUTPUT = SessionActionKind.COMPLETION_OUTPUT
ATTACHMENT = SessionActionKind.COMPLETION_PROMPT_ATTACHMENT
TOOL_CALL = SessionActionKind.COMPLETION_TOOL_CALL
EMBEDDINGS = SessionActionKind.EMBEDDINGS
MODERATION = SessionActionKind.MODERATION
PROVIDER = "openai"

#: (module, class, method, api, operation). Async handling is chosen by the class.
_CHAT, _BETA_CHAT = "openai.resources.chat.completions", "openai.resources.beta.chat.completions"
_RESPONSES, _EMBEDDINGS = "openai.resources.responses", "openai.resources.embeddings"
_MODERATIONS = "openai.resources.moderations"
TARGETS: tuple[tuple[str, str, str, str, str], ...] = (
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
#: The apis recorded as a prompt and an output; the others are one action.
_COMPLETION_APIS = frozenset({"chat", "responses"})

# -- failures of ours ---------------------------------------------------------------------

_reported: set[str] = set()


def _problem(where: str, exc: BaseException) -> None:
    """Log a failure of ours: the first of each kind as a warning, the rest at debug level."""
    if where in _reported:
        logger.debug("layer-sdk: OpenAI instrumentation failed while %s: %r", where, exc)
        return
    _reported.add(where)
    logger.warning(
        "layer-sdk: the OpenAI instrumentation failed while %s (%s: %s); the OpenAI call "
        "itself is not affected. Further failures of this kind are logged at debug level.",
        where,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )


# -- what a result is -----------------------------------------------------------------------

#: openai's classes of results, set by ``_recognise_results()`` once openai is imported.
_stream_types: tuple[type, ...] = ()
_async_stream_types: tuple[type, ...] = ()
_raw_response_types: tuple[type, ...] = ()
_legacy_response_types: tuple[type, ...] = ()


def _recognise_results() -> None:
    """Look up the classes of streams and raw responses; called when the classes are patched."""
    global _stream_types, _async_stream_types, _legacy_response_types, _raw_response_types
    _stream_types = _classes(_attribute("openai", "Stream"))
    _async_stream_types = _classes(_attribute("openai", "AsyncStream"))
    _legacy_response_types = _classes(_attribute("openai._legacy_response", "LegacyAPIResponse"))
    _raw_response_types = _legacy_response_types + _classes(
        _attribute("openai._response", "BaseAPIResponse")
    )


def _read_raw_body(result: Any, raw: str | None, kwargs: Mapping[str, Any]) -> Any:
    """The JSON body of a ``with_raw_response`` result, or None where reading it is unsafe.

    A ``with_streaming_response`` body has not been read yet (reading it is
    the caller's business), nor has a streamed one: both give None. A
    ``LegacyAPIResponse`` of a plain call was read whole: decoding its bytes
    changes nothing for the caller, who may still ``parse()`` it.
    """
    if raw == "stream" or kwargs.get("stream") is True:
        return None
    if not isinstance(result, _legacy_response_types):
        return None
    http_response = getattr(result, "http_response", None)
    if http_response is None:
        return None
    try:
        content = http_response.content
    except Exception:  # not read: leave it to the caller
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None


# -- one call -------------------------------------------------------------------------------


class _Call:
    """One instrumented call: its request, and the actions it turns into."""

    __slots__ = ("api", "client", "kwargs", "operation", "raw", "session_id", "started")

    def __init__(
        self,
        client: Recorder,
        api: str,
        operation: str,
        kwargs: dict[str, Any],
        session_id: str | None,
        raw: str | None,
        started: datetime,
    ) -> None:
        self.client = client
        self.api = api
        self.operation = operation
        self.kwargs = kwargs
        self.session_id = session_id
        self.raw = raw
        self.started = started

    # The two outcomes. Neither raises, and succeeded() returns ``result`` itself.

    def failed(self, exc: BaseException) -> None:
        try:
            ended = _now()
            error = _error(exc)
            if self.api in _COMPLETION_APIS:
                model = self.record_prompt()
                self.record_output(_Output(), ended, model=model, error=error)
            else:
                self.record_single(None, ended, error=error)
        except Exception as problem:
            _problem(f"recording a failed {self.operation} call", problem)

    def succeeded(self, result: Any, is_async: bool) -> Any:
        try:
            self._record_result(result, is_async)
        except Exception as problem:
            _problem(f"recording the result of {self.operation}", problem)
        return result

    def _record_result(self, result: Any, is_async: bool) -> None:
        ended = _now()
        completion = self.api in _COMPLETION_APIS
        if self.raw is not None or isinstance(result, _raw_response_types):
            body = _read_raw_body(result, self.raw, self.kwargs)
            if body is None:  # a streamed body, which the caller has not read yet
                if completion:
                    model = self.record_prompt()
                    self.record_output(_Output(), ended, model=model, unread=True)
                else:
                    self.record_single(None, ended, unread=True)
                return
            result = body
        if completion and isinstance(result, _stream_types + _async_stream_types):
            model = self.record_prompt()
            accumulator = _ChatStream() if self.api == "chat" else _ResponsesStream()
            _trace_stream(result, _StreamRecord(self, accumulator, model), is_async)
            return
        if completion:
            model = self.record_prompt()
            output = _chat_output(result) if self.api == "chat" else _responses_output(result)
            self.record_output(output, ended, model=model)
        else:
            self.record_single(result, ended)

    def problem(self, where: str, exc: BaseException) -> None:
        """:func:`_problem`, for the stream code, which records through a call (see streams.py)."""
        _problem(where, exc)

    # The actions.

    def session(self) -> str:
        if self.session_id is None:
            self.session_id = self.client.create_session(start_time=self.started, sync=False)
        return self.session_id

    def append(
        self,
        kind: SessionActionKind,
        end: datetime,
        attributes: dict[str, Any],
        data: Any = None,
        error: SessionActionError | None = None,
        scanners: list[SessionActionScanner] | None = None,
        start: datetime | None = None,
    ) -> None:
        try:
            self.client.append_action(
                self.session(),
                kind=kind,
                start_time=start or self.started,
                end_time=end,
                attributes=attributes,
                data=data,
                error=error,
                scanners=scanners,
                sync=False,
            )
        except Exception as exc:
            _problem(f"recording a {kind.value} action", exc)

    def base_attributes(self, model: Any) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if isinstance(model, str):
            attributes["model.id"] = model
        attributes["model.provider"] = PROVIDER
        attributes["openai.operation"] = self.operation
        return attributes

    def record_prompt(self) -> str | None:
        """Record the prompt (and its attachments); returns the requested model."""
        kwargs = self.kwargs
        model = kwargs.get("model")
        model = model if isinstance(model, str) else None
        if self.api == "chat":
            messages, attachments = _chat_messages(kwargs.get("messages"))
            params = _CHAT_PARAMETERS
        else:
            messages, attachments = _responses_messages(kwargs)
            params = _RESPONSES_PARAMETERS
        attributes = self.base_attributes(model)
        attributes.update(_parameters(kwargs, params))
        started = self.started
        self.append(PROMPT, started, attributes, {"messages": messages})
        for attachment in attachments:
            self.append(ATTACHMENT, started, self.base_attributes(model), attachment)
        return model

    def record_output(
        self,
        output: _Output,
        ended: datetime,
        *,
        model: str | None,
        error: dict[str, Any] | None = None,
        unread: bool = False,
        streamed: bool = False,
    ) -> None:
        attributes = self.base_attributes(output.model or model)
        attributes.update(output.attributes)
        if streamed:
            attributes["stream"] = True
            attributes["incomplete"] = output.incomplete
        elif output.incomplete:
            attributes["incomplete"] = True
        if unread:
            attributes["response.unread"] = True
        error = error or output.error
        scanners = (
            [SessionActionScanner("usage", output.usage)] if output.usage is not None else None
        )
        data = None if output.messages is None else {"messages": output.messages}
        self.append(
            OUTPUT,
            ended,
            attributes,
            data,
            SessionActionError(**error) if error else None,
            scanners,
        )
        for tool_call in output.tool_calls:
            self.append(TOOL_CALL, ended, self.base_attributes(output.model or model), tool_call)

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
