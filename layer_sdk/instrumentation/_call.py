"""The record of one instrumented call, whatever the provider: from its outcome to its actions.

The wrapper (``_patch.py``) starts a :class:`Call` (:meth:`Call.begin`, the
one way every provider's record begins: the request read as its
``Provider`` says) before the original method runs, then ends it with
:meth:`Call.failed` or :meth:`Call.succeeded`, which route the outcome:

- an exception: the prompt and an output carrying the error; nothing when a
  one-shot iterator of the caller's (``messages=`` a generator) raised as the
  provider read it: the call was never made, as if the caller's code had
  failed building a list before it (and as for a call the firewall refused);
- a raw response (``with_raw_response``): its JSON body, when the response
  was read whole, is recorded as the result would be; an unread body is
  recorded as ``response.unread``;
- a stream (one of the provider's ``Results.streams``, watched in place, or
  a plain generator or async generator, read through one of ours): the
  prompt now, the output when the stream ends (``_streams.py``);
- anything else: the prompt and the output.

A provider subclasses :class:`Call` with what differs: its ``PROVIDER``,
how its request reads as a prompt (:meth:`Call.prompt`), its result as an
output (:meth:`Call.output_of`), its stream's items
(:meth:`Call.accumulator`); single-action APIs (embeddings, moderations)
override the routes.

On the caller's thread the actions go to ``Client.append_action`` (encode
and enqueue: no network). Whatever goes wrong in here is logged once per
kind (the provider's ``Problems``) and swallowed: the caller gets the
original result, or the original exception, unchanged. An action the firewall
refuses (the session was blocked while the call ran) is logged as such, not
as a failure of ours.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from .._context import Recorder
from .._exceptions import LayerFirewallSessionBlocked
from .._schemas import SessionActionError, SessionActionKind, SessionActionScanner
from ._mapping import Output, _api_keys, _error, _masked_error, _now, _parameters
from ._provider import Provider, Results
from ._request import an_argument_raised, read_request
from ._streams import Accumulator, StreamRecord, observe_generator, trace_stream

logger = logging.getLogger("layer_sdk")

PROMPT = SessionActionKind.COMPLETION_PROMPT
OUTPUT = SessionActionKind.COMPLETION_OUTPUT
ATTACHMENT = SessionActionKind.COMPLETION_PROMPT_ATTACHMENT
TOOL_CALL = SessionActionKind.COMPLETION_TOOL_CALL

# -- what a result is -----------------------------------------------------------------------


def _is_a(obj: Any, classes: tuple[type, ...]) -> bool:
    """``isinstance`` without the classes' ``__instancecheck__``: anthropic 0.x's ``Stream``
    warns (DeprecationWarning) when asked about a ``MessageStream``, which the caller would
    see, and under ``-W error`` would take for an exception."""
    return any(cls in classes for cls in type(obj).__mro__)


def _read_raw_body(
    result: Any, raw: str | None, kwargs: Mapping[str, Any], results: Results
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


C = TypeVar("C", bound="Call")


class Call:
    """One instrumented call: its request, and the actions it turns into."""

    __slots__ = ("api", "client", "kwargs", "operation", "raw", "resource", "session_id", "started")

    #: Set by each provider's subclass.
    PROVIDER: ClassVar[Provider]

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

    @classmethod
    def begin(cls: type[C], client: Recorder, spec: tuple[str, str], kwargs: dict[str, Any]) -> C:
        """The record of a call about to be made, ``spec`` its (api, operation); edits
        ``kwargs`` (the wrapper's own dict) as ``read_request`` does."""
        started = _now()
        session_id, raw = read_request(kwargs, cls.PROVIDER)
        api, operation = spec
        return cls(client, api, operation, kwargs, session_id, raw, started)

    # What a provider defines.

    def prompt(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], frozenset[str]]:
        """The request's messages, its attachments, and the parameters to record."""
        raise NotImplementedError

    def request_parameters(self, names: frozenset[str]) -> dict[str, Any]:
        """The request parameters recorded on the prompt: those of the arguments in ``names``
        (a provider whose parameters are elsewhere, in a ``config`` object, reads them there)."""
        return _parameters(self.kwargs, names)

    def output_of(self, result: Any) -> Output:
        raise NotImplementedError

    def accumulator(self) -> Accumulator:
        raise NotImplementedError

    # The two outcomes. Neither raises. succeeded() returns what the caller gets: ``result``
    # itself, or, for a stream that is a plain generator, one of ours yielding its items.

    def failed(self, exc: BaseException) -> None:
        try:
            if an_argument_raised(self.kwargs):
                return  # no call was made, as when the caller's code fails before it
            self.record_failure(self.error_of(exc), _now())
        except Exception as problem:
            self.problem(f"recording a failed {self.operation} call", problem)

    def succeeded(self, result: Any, is_async: bool) -> Any:
        try:
            return self._record_result(result, is_async)
        except Exception as problem:
            self.problem(f"recording the result of {self.operation}", problem)
        return result

    def _record_result(self, result: Any, is_async: bool) -> Any:
        ended = _now()
        results = self.PROVIDER.results
        if self.raw is not None or _is_a(result, results.raw):
            body = _read_raw_body(result, self.raw, self.kwargs, results)
            if body is None:  # a streamed body, which the caller has not read yet
                self.record_unread(ended)
                return result
            self.record_result(body, ended)
            return result
        if _is_a(result, results.streams):
            self.watch(result, is_async)
            return result
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            return self.watch_generator(result)
        self.record_result(result, ended)
        return result

    # The routes (OpenAI's embeddings and moderations take others).

    def record_failure(self, error: dict[str, Any], ended: datetime) -> None:
        model = self.record_prompt()
        self.record_output(Output(), ended, model=model, error=error)

    def record_unread(self, ended: datetime) -> None:
        model = self.record_prompt()
        self.record_output(Output(), ended, model=model, unread=True)

    def record_result(self, result: Any, ended: datetime) -> None:
        model = self.record_prompt()
        self.record_output(self.output_of(result), ended, model=model)

    def watch(self, stream: Any, is_async: bool) -> None:
        """Record the prompt now, the output when ``stream`` (the provider's object) ends."""
        model = self.record_prompt()
        record = StreamRecord(self, self.accumulator(), model)
        trace_stream(stream, record, is_async, self.PROVIDER.results.iterator_attribute)

    def watch_generator(self, stream: Any) -> Any:
        """Record the prompt now, the output when ``stream`` (a plain generator or async
        generator) ends; returns the generator of ours that the caller reads in its place."""
        model = self.record_prompt()
        return observe_generator(stream, StreamRecord(self, self.accumulator(), model))

    def problem(self, where: str, exc: BaseException) -> None:
        """Log a failure of ours (also for the stream code, which records through a call)."""
        self.PROVIDER.problems(where, exc)

    def error_of(self, exc: BaseException) -> dict[str, Any]:
        """The action error of ``exc``, which the provider raised for this call (see ``_error``)."""
        return _error(exc, self.api_keys())

    def api_keys(self) -> list[str]:
        """The credentials of the provider's client that made the call: known secrets for
        the provider's text that is recorded (its refusals may quote them)."""
        return _api_keys(self.resource)

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
        name = self.PROVIDER.name
        attributes["model.provider"] = name
        attributes[f"{name}.operation"] = self.operation
        return attributes

    def record_prompt(self) -> str | None:
        """Record the prompt (and its attachments); returns the requested model."""
        kwargs = self.kwargs
        model = kwargs.get("model")
        model = model if isinstance(model, str) else None
        messages, attachments, params = self.prompt()
        attributes = self.base_attributes(model)
        attributes.update(self.request_parameters(params))
        started = self.started
        self.append(PROMPT, started, attributes, {"messages": messages})
        for attachment in attachments:
            self.append(ATTACHMENT, started, self.base_attributes(model), attachment)
        return model

    def record_output(
        self,
        output: Output,
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
        if error is None and output.error is not None:  # the provider's own words
            error = _masked_error(output.error, self.api_keys())
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
