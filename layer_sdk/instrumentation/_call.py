"""The record of one instrumented call, whatever the provider: from its outcome to its actions.

The wrapper (``_patch.py``) starts a :class:`_Call` before the original
method runs, then ends it with :meth:`_Call.failed` or
:meth:`_Call.succeeded`, which route the outcome:

- an exception: the prompt and an output carrying the error;
- a ``with_raw_response`` result: its JSON body, when the response was read
  whole, is recorded as the result would be; an unread body is recorded
  as ``response.unread``;
- a stream (one of the provider's ``_Results.streams``): the prompt now, the
  output when the stream ends (``_streams.py``);
- anything else: the prompt and the output.

A provider subclasses :class:`_Call` with what differs: how its request
reads as a prompt (:meth:`_Call.prompt`), its result as an output
(:meth:`_Call.output_of`), its stream's items (:meth:`_Call.accumulator`);
OpenAI's single-action APIs (embeddings, moderations) override the routes.

On the caller's thread the actions go to ``Client.append_action`` (encode
and enqueue: no network). Whatever goes wrong in here is logged once per
kind (:class:`_Problems`) and swallowed: the caller gets the original
result, or the original exception, unchanged. An action the firewall
refuses (the session was blocked while the call ran) is logged as such, not
as a failure of ours.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from .._context import Recorder
from .._exceptions import LayerFirewallSessionBlocked
from .._schemas import SessionActionError, SessionActionKind, SessionActionScanner
from ._fields import _attribute, _classes
from ._mapping import _api_keys, _error, _now, _Output, _parameters
from ._streams import _Accumulator, _StreamRecord, _trace_stream

logger = logging.getLogger("layer_sdk")

PROMPT = SessionActionKind.COMPLETION_PROMPT
OUTPUT = SessionActionKind.COMPLETION_OUTPUT
ATTACHMENT = SessionActionKind.COMPLETION_PROMPT_ATTACHMENT
TOOL_CALL = SessionActionKind.COMPLETION_TOOL_CALL

# -- failures of ours ---------------------------------------------------------------------


class _Problems:
    """Logs a provider instrumentation's own failures: the first of each kind as a warning."""

    __slots__ = ("label", "reported")

    def __init__(self, label: str) -> None:
        self.label = label  # "OpenAI", "Anthropic": as the warning names it
        self.reported: set[str] = set()

    def __call__(self, where: str, exc: BaseException) -> None:
        if where in self.reported:
            logger.debug(
                "layer-sdk: %s instrumentation failed while %s: %r", self.label, where, exc
            )
            return
        self.reported.add(where)
        logger.warning(
            "layer-sdk: the %s instrumentation failed while %s (%s: %s); the %s call "
            "itself is not affected. Further failures of this kind are logged at debug level.",
            self.label,
            where,
            type(exc).__name__,
            exc,
            self.label,
            exc_info=exc,
        )


# -- what a result is -----------------------------------------------------------------------


class _Results:
    """A provider's classes of results, looked up (``recognise``) once it is imported.

    openai and anthropic are built by the same generator: the same names in
    the same modules (``Stream``, ``_legacy_response.LegacyAPIResponse``, ...).
    """

    __slots__ = ("raw", "streams")

    def __init__(self) -> None:
        self.streams: tuple[type, ...] = ()
        self.raw: tuple[type, ...] = ()

    def recognise(self, package: str, *more_streams: tuple[str, str]) -> None:
        """``more_streams``: (module, class) of other streams (the ``.stream()`` helpers')."""
        self.streams = _classes(
            _attribute(package, "Stream"),
            _attribute(package, "AsyncStream"),
            *(_attribute(module, name) for module, name in more_streams),
        )
        self.raw = _classes(
            _attribute(f"{package}._legacy_response", "LegacyAPIResponse"),
            _attribute(f"{package}._response", "BaseAPIResponse"),
        )


def _is_a(obj: Any, classes: tuple[type, ...]) -> bool:
    """``isinstance`` without the classes' ``__instancecheck__``: anthropic 0.x's ``Stream``
    warns (DeprecationWarning) when asked about a ``MessageStream``, which the caller would
    see, and under ``-W error`` would take for an exception."""
    return any(cls in classes for cls in type(obj).__mro__)


def _read_raw_body(
    result: Any, raw: str | None, kwargs: Mapping[str, Any], results: _Results
) -> Any:
    """The JSON body of a ``with_raw_response`` result, or None where reading it is unsafe.

    A ``with_streaming_response`` body has not been read yet (reading it is
    the caller's business), nor has a streamed one: both give None. The
    ``LegacyAPIResponse`` (openai) or ``APIResponse`` (anthropic 2.x) of a
    plain ``with_raw_response`` call was read whole: decoding its bytes
    changes nothing for the caller, who may still ``parse()`` it. A body not
    read is never read here (``content`` raises: None).
    """
    if raw == "stream" or kwargs.get("stream") is True:
        return None
    if not _is_a(result, results.raw):
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

    __slots__ = ("api", "client", "kwargs", "operation", "raw", "resource", "session_id", "started")

    #: Set by each provider's subclass.
    PROVIDER: ClassVar[str] = ""
    PROBLEMS: ClassVar[_Problems]
    RESULTS: ClassVar[_Results]

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
        #: The provider's object the method was called on (set by ``Patcher.start``).
        self.resource: Any = None

    # What a provider defines.

    def prompt(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], frozenset[str]]:
        """The request's messages, its attachments, and the parameters to record."""
        raise NotImplementedError

    def output_of(self, result: Any) -> _Output:
        raise NotImplementedError

    def accumulator(self) -> _Accumulator:
        raise NotImplementedError

    # The two outcomes. Neither raises, and succeeded() returns ``result`` itself.

    def failed(self, exc: BaseException) -> None:
        try:
            self.record_failure(self.error_of(exc), _now())
        except Exception as problem:
            self.problem(f"recording a failed {self.operation} call", problem)

    def succeeded(self, result: Any, is_async: bool) -> Any:
        try:
            self._record_result(result, is_async)
        except Exception as problem:
            self.problem(f"recording the result of {self.operation}", problem)
        return result

    def _record_result(self, result: Any, is_async: bool) -> None:
        ended = _now()
        results = self.RESULTS
        if self.raw is not None or _is_a(result, results.raw):
            body = _read_raw_body(result, self.raw, self.kwargs, results)
            if body is None:  # a streamed body, which the caller has not read yet
                self.record_unread(ended)
                return
            result = body
        if _is_a(result, results.streams):
            self.watch(result, is_async)
            return
        self.record_result(result, ended)

    # The routes (OpenAI's embeddings and moderations take others).

    def record_failure(self, error: dict[str, Any], ended: datetime) -> None:
        model = self.record_prompt()
        self.record_output(_Output(), ended, model=model, error=error)

    def record_unread(self, ended: datetime) -> None:
        model = self.record_prompt()
        self.record_output(_Output(), ended, model=model, unread=True)

    def record_result(self, result: Any, ended: datetime) -> None:
        model = self.record_prompt()
        self.record_output(self.output_of(result), ended, model=model)

    def watch(self, stream: Any, is_async: bool) -> None:
        """Record the prompt now, the output when ``stream`` ends."""
        model = self.record_prompt()
        _trace_stream(stream, _StreamRecord(self, self.accumulator(), model), is_async)

    def problem(self, where: str, exc: BaseException) -> None:
        """Log a failure of ours (also for the stream code, which records through a call)."""
        self.PROBLEMS(where, exc)

    def error_of(self, exc: BaseException) -> dict[str, Any]:
        """The action error of ``exc``, which the provider raised for this call (see ``_error``)."""
        return _error(exc, _api_keys(self.resource))

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
        except LayerFirewallSessionBlocked as exc:
            # Blocked while the call ran (the firewall saw its prompt): the session takes
            # no more actions, as for any caller. A refusal, counted by the firewall.
            logger.warning(
                "layer-sdk did not record the %s of a %s call: %s", kind.value, self.operation, exc
            )
        except Exception as exc:
            self.problem(f"recording a {kind.value} action", exc)

    def base_attributes(self, model: Any) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if isinstance(model, str):
            attributes["model.id"] = model
        attributes["model.provider"] = self.PROVIDER
        attributes[f"{self.PROVIDER}.operation"] = self.operation
        return attributes

    def record_prompt(self) -> str | None:
        """Record the prompt (and its attachments); returns the requested model."""
        kwargs = self.kwargs
        model = kwargs.get("model")
        model = model if isinstance(model, str) else None
        messages, attachments, params = self.prompt()
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
