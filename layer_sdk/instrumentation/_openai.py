"""Instrumentation of the ``openai`` package (1.x from 1.18, 2.x, 3.x), sync and async.

What is patched: the methods below on the resource *classes*, so that clients
built before ``init()``, Azure clients and ``with_options()`` copies are all
covered. A method that a version lacks is skipped.

=================================  ==========================================
``chat.completions``               ``create`` (plain and ``stream=True``), ``parse``
``beta.chat.completions`` (1.x)    ``parse``
``responses``                      ``create`` (plain and ``stream=True``), ``parse``
``embeddings``                     ``create``
``moderations``                    ``create``
=================================  ==========================================

The ``.stream()`` helpers of chat completions and responses call ``create``
themselves, so they are covered through it.

How a call is recorded. The wrapper takes the time, removes Layer's session
header from ``extra_headers`` (into a new dict: the caller's is not touched),
calls the original method with everything else unchanged, and then, on the
caller's thread, maps the request and the result to actions and hands them to
``Client.append_action`` (encode and enqueue: no network). Whatever goes wrong
in here is logged once and swallowed; the original result is returned and the
original exception re-raised, unchanged.

A stream is returned as the same ``Stream``/``AsyncStream`` object. Its
chunk iterator is wrapped (to see the chunks as the caller reads them) and its
class is swapped for a subclass that only overrides ``close()`` (to notice an
early close). The output is recorded exactly once: when the stream is
exhausted, raises, is closed (``close()``, ``aclose()``, ``with`` exit), or is
garbage-collected; the last three mark it ``incomplete``. Finalizers may run
inside the garbage collector at any point, where taking the export queue's
lock could deadlock, so those records are handed (through a reentrant
``SimpleQueue``) to a small daemon thread that records them.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import json
import logging
import os
import queue
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .._decorators import current_session_id
from .._exceptions import LayerSchemaValidationError
from .._schemas import SessionActionError, SessionActionKind, SessionActionScanner, session_id_text

if TYPE_CHECKING:
    from .._client import Client

logger = logging.getLogger("layer_sdk")

PROMPT = SessionActionKind.COMPLETION_PROMPT
OUTPUT = SessionActionKind.COMPLETION_OUTPUT
ATTACHMENT = SessionActionKind.COMPLETION_PROMPT_ATTACHMENT
TOOL_CALL = SessionActionKind.COMPLETION_TOOL_CALL
EMBEDDINGS = SessionActionKind.EMBEDDINGS
MODERATION = SessionActionKind.MODERATION

#: Headers that carry a Layer session ID; removed before the request goes to OpenAI.
SESSION_HEADERS = frozenset({"x-layer-session-id", "layer-session-id"})
#: Set by ``with_raw_response`` ("true"/"raw") and ``with_streaming_response`` ("stream").
_RAW_HEADER = "x-stainless-raw-response"
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

#: A string longer than this (a base64 image, a long audio clip) is cut in the
#: recorded data, so that one attachment cannot exceed the event size limit.
MAX_VALUE_CHARS = 256 * 1024

# -- state -------------------------------------------------------------------

_lock = threading.Lock()
_client: Client | None = None
#: (class, method name, original, wrapper) of every patch in place.
_patches: list[tuple[type, str, Any, Any]] = []
#: True while an instrumented call runs: a nested instrumented call (one
#: openai method calling another) is then passed through, not recorded twice.
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("layer_openai_inside", default=False)
_stream_types: tuple[type, ...] = ()
_async_stream_types: tuple[type, ...] = ()
_raw_response_types: tuple[type, ...] = ()
_legacy_response_types: tuple[type, ...] = ()
_omitted_types: tuple[type, ...] = ()
_reported: set[str] = set()


def instrument(client: Client) -> bool:
    """Patch the openai classes for ``client`` (now, or when openai is imported).

    When the application has not imported openai yet, importing it here would
    cost its full import time (about a second for 3.x) in ``init()``, even for
    an application that never uses it: instead a post-import hook patches the
    classes right after ``import openai`` runs. Returns True when patched or
    waiting; False when no method could be patched.
    """
    global _waiting
    with _lock:
        if "openai" not in sys.modules:
            _waiting = client
            if _hook not in sys.meta_path:
                sys.meta_path.insert(0, _hook)
            if "openai" not in sys.modules:  # else imported meanwhile: patch now
                return True
            _remove_hook()
    return _patch(client)


def _patch(client: Client) -> bool:
    global _client, _stream_types, _async_stream_types, _omitted_types
    global _legacy_response_types, _raw_response_types
    openai: Any = importlib.import_module("openai")
    with _lock:
        _stream_types = _classes(getattr(openai, "Stream", None))
        _async_stream_types = _classes(getattr(openai, "AsyncStream", None))
        _legacy_response_types = _classes(
            _attribute("openai._legacy_response", "LegacyAPIResponse")
        )
        _raw_response_types = _legacy_response_types + _classes(
            _attribute("openai._response", "BaseAPIResponse")
        )
        _omitted_types = _classes(
            _attribute("openai._types", "NotGiven"), _attribute("openai._types", "Omit")
        )
        patched: set[tuple[type, str]] = {(cls, name) for cls, name, _, _ in _patches}
        for module_name, class_name, method, api, operation in TARGETS:
            cls = _attribute(module_name, class_name)
            if not isinstance(cls, type) or (cls, method) in patched:
                continue
            current = cls.__dict__.get(method)
            if current is None or not callable(current):
                continue
            if getattr(current, "__layer_instrumented__", False):
                continue  # already ours (a patch someone else wrapped over): it reads _client
            is_async = class_name.startswith("Async")
            wrapper = _make_wrapper(current, api, operation, is_async)
            setattr(cls, method, wrapper)
            _patches.append((cls, method, current, wrapper))
            patched.add((cls, method))
        if not _patches:
            return False
        _client = client
        return True


def uninstrument() -> None:
    """Restore every patched method (unless someone wrapped it since: then ours turns inert)."""
    global _client
    with _lock:
        _remove_hook()
        _client = None
        for cls, method, original, wrapper in reversed(_patches):
            if cls.__dict__.get(method) is wrapper:
                setattr(cls, method, original)
        _patches.clear()


class _ImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it only arranges for ``_imported()`` to run after ``import openai``."""

    def __init__(self) -> None:
        self._local = threading.local()

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "openai" or getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            spec = importlib.util.find_spec(fullname)  # the other finders' answer
        except (ImportError, ValueError):
            return None
        finally:
            self._local.busy = False
        loader: Any = spec.loader if spec is not None else None
        execute = getattr(loader, "exec_module", None)
        if spec is None or execute is None:
            return None

        def exec_module(module: Any) -> None:
            execute(module)
            _imported()

        try:
            loader.exec_module = exec_module  # this import's loader only
        except (AttributeError, TypeError):
            return None
        return spec


_hook = _ImportHook()
#: The client to patch for once openai is imported.
_waiting: Client | None = None


def _remove_hook() -> None:
    """Called with ``_lock`` held."""
    global _waiting
    _waiting = None
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_hook)


def _imported() -> None:
    """``import openai`` just ran: patch for the waiting client."""
    with _lock:
        client = _waiting
        _remove_hook()
    if client is None:
        return
    try:
        _patch(client)
    except Exception as exc:
        _problem("instrumenting openai after its import", exc)


def _attribute(module_name: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return None


def _classes(*candidates: Any) -> tuple[type, ...]:
    return tuple(c for c in candidates if isinstance(c, type))


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


def _now() -> datetime:
    return datetime.now(timezone.utc)


# -- the wrappers --------------------------------------------------------------


def _make_wrapper(original: Any, api: str, operation: str, is_async: bool) -> Any:
    if not is_async:

        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = _start(api, operation, kwargs)
            if call is None:
                return original(self, *args, **kwargs)
            token = _inside.set(True)
            try:
                result = original(self, *args, **kwargs)
            except BaseException as exc:
                call.failed(exc)
                raise
            finally:
                _inside.reset(token)
            return call.succeeded(result, False)

        wrapper.__layer_instrumented__ = True  # type: ignore[attr-defined]
        return wrapper

    # Async: the wrapper has the original's shape. A coroutine function stays
    # one; a plain function returning an awaitable (1.x wraps the async methods
    # in a sync argument checker) keeps raising its argument errors at the call.
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = _start(api, operation, kwargs)
            if call is None:
                return await original(self, *args, **kwargs)
            token = _inside.set(True)
            try:
                result = await original(self, *args, **kwargs)
            except BaseException as exc:
                call.failed(exc)
                raise
            finally:
                _inside.reset(token)
            return call.succeeded(result, True)

        async_wrapper.__layer_instrumented__ = True  # type: ignore[attr-defined]
        return async_wrapper

    @functools.wraps(original)
    def awaitable_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _start(api, operation, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        token = _inside.set(True)
        try:
            awaitable = original(self, *args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        finally:
            _inside.reset(token)
        return _finish_async(call, awaitable)

    awaitable_wrapper.__layer_instrumented__ = True  # type: ignore[attr-defined]
    return awaitable_wrapper


async def _finish_async(call: _Call, awaitable: Any) -> Any:
    token = _inside.set(True)
    try:
        result = await awaitable
    except BaseException as exc:
        call.failed(exc)
        raise
    finally:
        _inside.reset(token)
    return call.succeeded(result, True)


def _start(api: str, operation: str, kwargs: dict[str, Any]) -> _Call | None:
    """The record of a call about to be made; None: make it unrecorded (off, nested, or our bug)."""
    client = _client
    if client is None or _inside.get():
        return None
    try:
        return _begin(client, api, operation, kwargs)
    except Exception as exc:
        _problem(f"preparing the record of {operation}", exc)
        return None


def _begin(client: Client, api: str, operation: str, kwargs: dict[str, Any]) -> _Call:
    """Prepare the record of a call; edits ``kwargs`` (the wrapper's own dict) in place.

    Only two edits: the session header leaves ``extra_headers`` (a new dict),
    and a one-shot iterator among the arguments we read becomes a list with
    the same items (so that reading it leaves it whole for OpenAI).
    """
    started = _now()
    session_id: str | None = None
    raw: str | None = None
    headers = kwargs.get("extra_headers")
    if headers:
        try:
            headers, value, raw = _scan_headers(headers)
            kwargs["extra_headers"] = headers
            if value is not None:
                session_id = _header_session(value)
        except Exception as exc:
            _problem("reading extra_headers", exc)
    if session_id is None:
        session_id = current_session_id.get()
    try:
        for name in _READ_ARGUMENTS:
            value = kwargs.get(name)
            if value is not None and type(value) not in _CONTAINERS and isinstance(value, Iterator):
                kwargs[name] = list(value)
    except Exception as exc:
        _problem("reading the arguments", exc)
    return _Call(client, api, operation, kwargs, session_id, raw, started)


_READ_ARGUMENTS = ("messages", "input", "tools", "functions")
_CONTAINERS = frozenset({list, tuple, str, dict})


def _scan_headers(headers: Any) -> tuple[Any, Any, str | None]:
    """(headers without the session entries, the session value, the raw-response mode)."""
    value: Any = None
    raw: str | None = None
    found = False
    for key, item in headers.items():
        if not isinstance(key, str):
            continue
        lowered = key.lower()
        if lowered in SESSION_HEADERS:
            found = True
            if value is None and (isinstance(item, (str, bytes)) or _is_uuid(item)):
                value = item.decode() if isinstance(item, bytes) else item
        elif lowered == _RAW_HEADER and isinstance(item, str):
            raw = item
    if found:
        headers = {
            key: item
            for key, item in headers.items()
            if not (isinstance(key, str) and key.lower() in SESSION_HEADERS)
        }
    return headers, value, raw


def _is_uuid(value: Any) -> bool:
    return type(value).__name__ == "UUID"


def _header_session(value: Any) -> str | None:
    try:
        return session_id_text(value)
    except LayerSchemaValidationError as exc:
        _problem("reading the session header (the call gets a new session)", exc)
        return None


# -- one call ------------------------------------------------------------------


class _Call:
    """One instrumented call: its request, and the actions it turns into."""

    __slots__ = ("api", "client", "kwargs", "operation", "raw", "session_id", "started")

    def __init__(
        self,
        client: Client,
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


_COMPLETION_APIS = frozenset({"chat", "responses"})


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


# -- streams -----------------------------------------------------------------


class _StreamRecord:
    """The output of one stream, finished exactly once."""

    __slots__ = ("_once", "accumulator", "broken", "call", "model")

    def __init__(self, call: _Call, accumulator: _ChatStream | _ResponsesStream, model: Any):
        self.call = call
        self.accumulator = accumulator
        self.model = model
        self.broken = False
        # list.pop() is atomic: the first finish() takes the token, later ones find none.
        self._once = [True]

    def add(self, item: Any) -> None:
        if self.broken:
            return
        try:
            self.accumulator.add(item)
        except Exception as exc:
            self.broken = True
            _problem(f"reading a {self.call.operation} stream", exc)

    def finish(
        self, incomplete: bool, error: BaseException | None = None, defer: bool = False
    ) -> None:
        try:
            self._once.pop()
        except IndexError:
            return
        ended = _now()
        if defer:
            _defer(self, incomplete, error, ended)
        else:
            self.emit(incomplete, error, ended)

    def emit(self, incomplete: bool, error: BaseException | None, ended: datetime) -> None:
        try:
            output = self.accumulator.output()
            output.incomplete = output.incomplete or incomplete
            self.call.record_output(
                output,
                ended,
                model=self.model,
                error=_error(error) if error is not None else None,
                streamed=True,
            )
        except Exception as exc:
            _problem(f"recording the output of a {self.call.operation} stream", exc)


def _trace_stream(stream: Any, record: _StreamRecord, is_async: bool) -> None:
    """Watch ``stream``'s chunks and ends; the object stays the one OpenAI returned."""
    try:
        inner = stream._iterator
    except AttributeError:
        record.finish(True)  # a stream shape we do not know: record what we can, now
        return
    base = type(stream)
    if not getattr(base, "__layer_traced__", False):
        try:
            stream.__class__ = _traced_class(base, is_async)
        except TypeError as exc:  # layout differs: the close() hook is lost, GC still ends it
            _problem("hooking a stream's close()", exc)
    stream._layer_record = record
    stream._iterator = _observe_async(inner, record) if is_async else _observe(inner, record)
    _ensure_reaper()
    finalizer = weakref.finalize(stream, record.finish, True, None, True)
    finalizer.atexit = False


def _observe(inner: Iterator[Any], record: _StreamRecord) -> Iterator[Any]:
    try:
        for item in inner:
            record.add(item)
            yield item
    except GeneratorExit:  # closed or garbage-collected before the end
        record.finish(True, None, True)
        raise
    except BaseException as exc:
        record.finish(True, exc)
        raise
    record.finish(False)


async def _observe_async(inner: AsyncIterator[Any], record: _StreamRecord) -> AsyncIterator[Any]:
    try:
        async for item in inner:
            record.add(item)
            yield item
    except GeneratorExit:
        record.finish(True, None, True)
        raise
    except BaseException as exc:
        record.finish(True, exc)
        raise
    record.finish(False)


_traced_classes: dict[type, type] = {}


def _traced_class(base: type, is_async: bool) -> type:
    """A subclass of ``base`` (same name and module) whose ``close()`` ends the record."""
    traced = _traced_classes.get(base)
    if traced is not None:
        return traced
    namespace: dict[str, Any] = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
        "__layer_traced__": True,
    }
    base_close = getattr(base, "close", None)
    if base_close is not None:
        if is_async:

            async def close(self: Any) -> None:
                try:
                    await base_close(self)
                finally:
                    _closed(self)

        else:

            def close(self: Any) -> None:  # type: ignore[misc]
                try:
                    base_close(self)
                finally:
                    _closed(self)

        functools.update_wrapper(close, base_close)
        namespace["close"] = close
    traced = type(base.__name__, (base,), namespace)
    with _lock:
        return _traced_classes.setdefault(base, traced)


def _closed(stream: Any) -> None:
    record = stream.__dict__.get("_layer_record")
    if record is not None:
        record.finish(True)


# Records finished inside the garbage collector are recorded by this thread.
_deferred: queue.SimpleQueue[tuple[_StreamRecord, bool, BaseException | None, datetime]] = (
    queue.SimpleQueue()
)
_reaper_pid = 0


def _defer(
    record: _StreamRecord, incomplete: bool, error: BaseException | None, ended: datetime
) -> None:
    _deferred.put((record, incomplete, error, ended))  # reentrant: safe inside the GC


def _ensure_reaper() -> None:
    global _reaper_pid
    pid = os.getpid()
    if _reaper_pid == pid:
        return
    with _lock:
        if _reaper_pid == pid:
            return
        thread = threading.Thread(target=_reap, name="layer-sdk-openai-streams", daemon=True)
        thread.start()
        _reaper_pid = pid


def _reap() -> None:
    while True:
        record, incomplete, error, ended = _deferred.get()
        record.emit(incomplete, error, ended)
        del record, error


def _after_fork_in_child() -> None:
    global _deferred, _reaper_pid
    _deferred = queue.SimpleQueue()  # the parent's pending records are the parent's
    _reaper_pid = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- mapping: shared helpers -------------------------------------------------------


class _Output:
    """The answer of a chat completion or a response, as the actions need it."""

    __slots__ = ("attributes", "error", "incomplete", "messages", "model", "tool_calls", "usage")

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] | None = None
        self.model: str | None = None
        self.usage: dict[str, int] | None = None
        self.tool_calls: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None
        self.incomplete = False


_MISSING: Any = object()


def _get(obj: Any, name: str) -> Any:
    """``obj.name`` or ``obj[name]``; None when absent (every field is optional).

    Hot: it runs a few times per call and per streamed chunk. A pydantic
    model's fields are read from its ``__dict__`` (its ``__getattr__`` for an
    absent field is slow), a dict with ``get``; the ABC check is the last resort.
    """
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        value = fields.get(name, _MISSING)
        if value is not _MISSING:
            return value
        if hasattr(type(obj), "__pydantic_extra__"):  # pydantic v2: the rest is in its extras
            extra = getattr(obj, "__pydantic_extra__", None)
            return extra.get(name) if extra else None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class _Attributes:
    """``get()`` over the attributes of an object that is neither a dict nor a model."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self.obj, name, default)


_NO_FIELDS: Mapping[str, Any] = {}


def _fields(obj: Any) -> Any:
    """The fields of ``obj``, as something with ``.get(name)``: several reads for the price of one.

    A dict is itself; a pydantic model (v1 or v2) is its ``__dict__`` (plus its
    extras, when it has any); anything else is read through ``getattr``.
    """
    if obj is None:
        return _NO_FIELDS
    if isinstance(obj, dict):
        return obj
    fields = getattr(obj, "__dict__", None)
    if fields is not None:
        cls = type(obj)
        if hasattr(cls, "__pydantic_extra__"):
            extra = getattr(obj, "__pydantic_extra__", None)
            return {**extra, **fields} if extra else fields
        if hasattr(cls, "__fields__"):
            return fields
    if isinstance(obj, Mapping):
        return obj
    return _Attributes(obj)


def _items(value: Any) -> list[Any] | tuple[Any, ...]:
    """A list-like field as a sequence; anything else (None, a string, a mapping) as empty."""
    if isinstance(value, (list, tuple)):
        return value
    return ()


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_CHARS else _clip(value)
    return None


def _clip(value: str) -> str:
    return f"{value[:1024]}…[{len(value) - 1024} more characters not recorded]"


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and not isinstance(value, _omitted_types)


def _given(value: Any) -> bool:
    return value is not None and not isinstance(value, _omitted_types)


def _as_dict(obj: Any) -> dict[str, Any]:
    """A mapping or a pydantic model (v1 or v2) as a dict of its fields, by alias."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    fields = getattr(type(obj), "model_fields", None)
    if not isinstance(fields, Mapping):
        fields = getattr(type(obj), "__fields__", None)
    if isinstance(fields, Mapping):
        result: dict[str, Any] = {}
        for name, info in fields.items():
            value = getattr(obj, name, None)
            if value is not None:
                result[getattr(info, "alias", None) or name] = value
        extra = getattr(obj, "__pydantic_extra__", None)
        if isinstance(extra, Mapping):
            result.update(extra)
        return result
    return {k: v for k, v in getattr(obj, "__dict__", {}).items() if not k.startswith("_")}


def _error(exc: BaseException) -> dict[str, Any]:
    """The ``error`` of an action for an exception (an OpenAI API error or any other)."""
    details: dict[str, Any] = {}
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        details["status_code"] = status
    for name in ("request_id", "code", "type", "param"):
        value = getattr(exc, name, None)
        if _plain(value):
            details[name] = value
    error: dict[str, Any] = {"message": str(exc) or type(exc).__name__, "code": type(exc).__name__}
    if details:
        error["details"] = details
    return error


def _usage(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    fields = _fields(usage)
    result: dict[str, int] = {}
    for name in _USAGE_FIELDS:
        value = fields.get(name)
        if type(value) is int:
            result[name] = value
    for parent, name in _USAGE_DETAILS:
        details = fields.get(parent)
        if details is not None:
            value = _fields(details).get(name)
            if type(value) is int:
                result[name] = value
    return result or None


_USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "total_tokens",
)
_USAGE_DETAILS = (
    ("prompt_tokens_details", "cached_tokens"),
    ("input_tokens_details", "cached_tokens"),
    ("completion_tokens_details", "reasoning_tokens"),
    ("output_tokens_details", "reasoning_tokens"),
)

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def _content(content: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """A message's content as (its text, its non-text parts)."""
    if isinstance(content, str):
        return _str(content), []
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    for part in _items(content):
        kind = _get(part, "type")
        if kind in _TEXT_PARTS:
            text = _get(part, "text")
            if isinstance(text, str):
                texts.append(text)
        elif kind == "refusal":
            text = _get(part, "refusal")
            if isinstance(text, str):
                texts.append(text)
        else:
            attachments.append(_attachment(part))
    return (_str("\n".join(texts)) if texts else None), attachments


def _attachment(part: Any) -> dict[str, Any]:
    """A non-text content part, flattened: {"type": "image_url", "url": ..., "detail": ...}."""
    result: dict[str, Any] = {}
    for key, value in _as_dict(part).items():
        if not isinstance(key, str):
            continue
        if isinstance(value, str):
            result[key] = _str(value)
        elif _plain(value):
            result[key] = value
        elif isinstance(value, Mapping) or hasattr(value, "__dict__"):
            for inner_key, inner in _as_dict(value).items():
                if isinstance(inner_key, str) and _plain(inner):
                    result.setdefault(inner_key, _str(inner) if isinstance(inner, str) else inner)
    return result


def _parameters(kwargs: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The request parameters that matter, as attribute values."""
    attributes: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name not in names or not _given(value):
            continue
        if name in ("tools", "functions"):
            tool_names = [_tool_name(tool) for tool in _items(value)]
            attributes["tools"] = [n for n in tool_names if n]
        elif name in ("response_format", "text_format", "text"):
            described = _response_format(value if name != "text" else _get(value, "format"))
            if described:
                attributes["response_format"] = described
        elif name in ("tool_choice", "function_call"):
            if isinstance(value, str):
                attributes["tool_choice"] = value
            else:
                chosen = _get(_get(value, "function"), "name") or _get(value, "name")
                chosen = chosen or _get(value, "type")
                if isinstance(chosen, str):
                    attributes["tool_choice"] = chosen
        elif name == "stream_options":
            include = _get(value, "include_usage")
            if isinstance(include, bool):
                attributes["stream_options.include_usage"] = include
        elif name == "reasoning":
            effort = _get(value, "effort")
            if isinstance(effort, str):
                attributes["reasoning_effort"] = effort
        elif name in ("conversation", "prompt"):
            ref = value if isinstance(value, str) else _get(value, "id")
            if isinstance(ref, str):
                attributes[f"{name}.id"] = ref
        elif _plain(value):
            attributes[name] = value
        elif isinstance(value, (list, tuple)) and all(_plain(v) for v in value):
            attributes[name] = list(value)
    return attributes


def _tool_name(tool: Any) -> str | None:
    name = _get(_get(tool, "function"), "name") or _get(tool, "name") or _get(tool, "type")
    return name if isinstance(name, str) else None


def _response_format(value: Any) -> str | None:
    if isinstance(value, type):  # a pydantic model given to parse()
        return value.__name__
    kind = _get(value, "type")
    if not isinstance(kind, str):
        return None
    name = _get(_get(value, "json_schema"), "name") or _get(value, "name")
    return f"{kind}:{name}" if isinstance(name, str) and kind == "json_schema" else kind


_CHAT_PARAMETERS = frozenset(
    (
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "stream",
        "stream_options",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "logprobs",
        "top_logprobs",
        "modalities",
        "service_tier",
        "store",
        "verbosity",
        "user",
    )
)
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
_EMBEDDING_PARAMETERS = frozenset(("encoding_format", "dimensions", "user"))


# -- mapping: chat completions ----------------------------------------------------


def _chat_messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The prompt's messages (text only) and the attachments (non-text parts)."""
    result: list[dict[str, Any]] = []
    attachments: list[dict[str, Any]] = []
    for index, message in enumerate(_items(messages)):
        fields = _fields(message)
        role = _str(fields.get("role"))
        text, parts = _content(fields.get("content"))
        entry: dict[str, Any] = {"role": role, "content": text}
        for name in ("name", "tool_call_id"):
            value = fields.get(name)
            if isinstance(value, str):
                entry[name] = value
        tool_calls = [_chat_tool_call(call) for call in _items(fields.get("tool_calls"))]
        function_call = fields.get("function_call")
        if function_call is not None:
            tool_calls.append(_function_call(function_call))
        if tool_calls:
            entry["tool_calls"] = tool_calls
        result.append(entry)
        for part in parts:
            attachments.append({**part, "role": role, "message_index": index})
    return result, attachments


def _chat_tool_call(call: Any) -> dict[str, Any]:
    kind = _get(call, "type")
    function = _get(call, "function")
    if function is None:
        function = _get(call, "custom")
    arguments = _get(function, "arguments")
    if arguments is None:
        arguments = _get(function, "input")
    entry = {
        "id": _str(_get(call, "id")),
        "type": kind if isinstance(kind, str) else "function",
        "name": _str(_get(function, "name")),
        "arguments": _str(arguments),
    }
    return {k: v for k, v in entry.items() if v is not None}


def _function_call(call: Any) -> dict[str, Any]:
    entry = {
        "type": "function",
        "name": _str(_get(call, "name")),
        "arguments": _str(_get(call, "arguments")),
    }
    return {k: v for k, v in entry.items() if v is not None}


def _chat_output(result: Any) -> _Output:
    output = _Output()
    fields = _fields(result)
    output.model = _str(fields.get("model"))
    response_id = fields.get("id")
    if isinstance(response_id, str):
        output.attributes["response.id"] = response_id
    messages: list[dict[str, Any]] = []
    reasons: list[str] = []
    for choice in _items(fields.get("choices")):
        choice_fields = _fields(choice)
        message = _fields(choice_fields.get("message"))
        role = _str(message.get("role")) or "assistant"
        entry: dict[str, Any] = {"role": role, "content": _str(message.get("content"))}
        refusal = _str(message.get("refusal"))
        if refusal:
            entry["refusal"] = refusal
        messages.append(entry)
        for call in _items(message.get("tool_calls")):
            output.tool_calls.append(_chat_tool_call(call))
        function_call = message.get("function_call")
        if function_call is not None:
            output.tool_calls.append(_function_call(function_call))
        reason = choice_fields.get("finish_reason")
        if isinstance(reason, str):
            reasons.append(reason)
    output.messages = messages
    if reasons:
        output.attributes["finish_reason"] = reasons[0] if len(reasons) == 1 else reasons
    output.usage = _usage(fields.get("usage"))
    return output


class _Choice:
    __slots__ = ("finish", "parts", "refusal", "role", "tools")

    def __init__(self) -> None:
        self.role: str | None = None
        self.parts: list[str] = []
        self.refusal: list[str] = []
        self.finish: str | None = None
        self.tools: dict[int, dict[str, Any]] = {}


class _ChatStream:
    """Accumulates ``ChatCompletionChunk``s (the deltas of each choice)."""

    __slots__ = ("choices", "id", "model", "usage")

    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self.id: str | None = None
        self.model: str | None = None
        self.usage: Any = None

    def add(self, chunk: Any) -> None:
        fields = _fields(chunk)
        if self.id is None:
            self.id = _str(fields.get("id"))
            self.model = _str(fields.get("model"))
        usage = fields.get("usage")
        if usage is not None:
            self.usage = usage
        for choice in _items(fields.get("choices")):
            choice_fields = _fields(choice)
            index = choice_fields.get("index")
            index = index if type(index) is int else 0
            state = self.choices.get(index)
            if state is None:
                state = self.choices[index] = _Choice()
            delta = _fields(choice_fields.get("delta"))
            content = delta.get("content")
            if content.__class__ is str:
                state.parts.append(content)
            if state.role is None:
                state.role = delta.get("role")
            refusal = delta.get("refusal")
            if refusal.__class__ is str:
                state.refusal.append(refusal)
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    self._tool_delta(state, call)
            function_call = delta.get("function_call")
            if function_call is not None:
                self._function_delta(state, function_call)
            reason = choice_fields.get("finish_reason")
            if reason.__class__ is str:
                state.finish = reason

    @staticmethod
    def _tool_delta(state: _Choice, call: Any) -> None:
        index = _get(call, "index")
        index = index if isinstance(index, int) else len(state.tools)
        entry = state.tools.get(index)
        if entry is None:
            entry = state.tools[index] = {"type": "function", "name": "", "arguments": []}
        call_id = _get(call, "id")
        if isinstance(call_id, str):
            entry["id"] = call_id
        kind = _get(call, "type")
        if isinstance(kind, str):
            entry["type"] = kind
        function = _get(call, "function")
        name = _get(function, "name")
        if isinstance(name, str):
            entry["name"] += name
        arguments = _get(function, "arguments")
        if isinstance(arguments, str):
            entry["arguments"].append(arguments)

    @staticmethod
    def _function_delta(state: _Choice, call: Any) -> None:
        entry = state.tools.get(-1)
        if entry is None:
            entry = state.tools[-1] = {"type": "function", "name": "", "arguments": []}
        name = _get(call, "name")
        if isinstance(name, str):
            entry["name"] += name
        arguments = _get(call, "arguments")
        if isinstance(arguments, str):
            entry["arguments"].append(arguments)

    def output(self) -> _Output:
        output = _Output()
        output.model = self.model
        if self.id:
            output.attributes["response.id"] = self.id
        messages: list[dict[str, Any]] = []
        reasons: list[str] = []
        for index in sorted(self.choices):
            state = self.choices[index]
            entry: dict[str, Any] = {
                "role": state.role if isinstance(state.role, str) else "assistant",
                "content": _str("".join(state.parts)) if state.parts else None,
            }
            if state.refusal:
                entry["refusal"] = _str("".join(state.refusal))
            messages.append(entry)
            for tool_index in sorted(state.tools):
                tool = state.tools[tool_index]
                call = {**tool, "arguments": _str("".join(tool["arguments"]))}
                output.tool_calls.append({k: v for k, v in call.items() if v is not None})
            if state.finish:
                reasons.append(state.finish)
        output.messages = messages
        if reasons:
            output.attributes["finish_reason"] = reasons[0] if len(reasons) == 1 else reasons
        output.usage = _usage(self.usage)
        return output


# -- mapping: the Responses API -------------------------------------------------------


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
            index = len(messages) - 1
            for part in parts:
                attachments.append({**part, "role": role, "message_index": index})
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
    arguments = _get(item, "arguments")
    if arguments is None:
        arguments = _get(item, "input")
    entry: dict[str, Any] = {
        "id": _str(_get(item, "call_id")) or _str(_get(item, "id")),
        "type": {"function_call": "function", "custom_tool_call": "custom"}.get(kind, kind),
        "name": _str(_get(item, "name")),
        "arguments": _str(arguments),
        "status": _str(_get(item, "status")),
    }
    return {k: v for k, v in entry.items() if v is not None}


def _responses_items(output: _Output, items: Any) -> None:
    messages: list[dict[str, Any]] = []
    for item in _items(items):
        kind = _get(item, "type")
        if kind == "message":
            text, _ = _content(_get(item, "content"))
            messages.append({"role": _str(_get(item, "role")) or "assistant", "content": text})
        elif isinstance(kind, str) and kind.endswith("_call"):
            output.tool_calls.append(_responses_tool_call(item))
    output.messages = messages


def _responses_output(result: Any) -> _Output:
    output = _Output()
    output.model = _str(_get(result, "model"))
    response_id = _get(result, "id")
    if isinstance(response_id, str):
        output.attributes["response.id"] = response_id
    status = _get(result, "status")
    if isinstance(status, str):
        output.attributes["status"] = status
        output.incomplete = status == "incomplete"
    _responses_items(output, _get(result, "output"))
    error = _get(result, "error")
    if error is not None:
        message = _get(error, "message")
        output.error = {
            "message": message if isinstance(message, str) else "the response failed",
            "code": _str(_get(error, "code")) or "response_failed",
        }
    output.usage = _usage(_get(result, "usage"))
    return output


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
            message = _get(event, "message")
            self.error = {
                "message": message if isinstance(message, str) else "stream error",
                "code": _str(_get(event, "code")) or "error",
            }

    def output(self) -> _Output:
        if self.final is not None:
            output = _responses_output(self.final)
        else:
            output = _Output()
            output.model = _str(_get(self.created, "model"))
            response_id = _get(self.created, "id")
            if isinstance(response_id, str):
                output.attributes["response.id"] = response_id
            _responses_items(output, self.items)
            if not output.messages and self.texts:
                text = "".join("".join(self.texts[i]) for i in sorted(self.texts))
                output.messages = [{"role": "assistant", "content": _str(text)}]
        if self.error is not None:
            output.error = self.error
        return output


# -- mapping: embeddings and moderations ---------------------------------------------


def _embedding_inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [_str(value)]
    items = _items(value)
    if items and all(isinstance(v, int) for v in items):
        return [list(items)]  # one input given as tokens
    return [_str(v) if isinstance(v, str) else list(_items(v)) for v in items]


def _embedding_result(result: Any, attributes: dict[str, Any]) -> list[SessionActionScanner] | None:
    model = _str(_get(result, "model"))
    if model:
        attributes["model.id"] = model
    data = _items(_get(result, "data"))
    attributes["embeddings.count"] = len(data)
    if data:
        vector = _get(data[0], "embedding")
        if isinstance(vector, (list, tuple)):
            attributes["embeddings.dimensions"] = len(vector)
    usage = _usage(_get(result, "usage"))
    return [SessionActionScanner("usage", usage)] if usage else None


def _moderation_inputs(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [_str(value)]
    inputs: list[Any] = []
    for item in _items(value):
        if isinstance(item, str):
            inputs.append(_str(item))
        elif _get(item, "type") == "text":
            inputs.append(_str(_get(item, "text")))
        else:
            inputs.append(_attachment(item))
    return inputs


def _moderation_result(result: Any, attributes: dict[str, Any]) -> list[SessionActionScanner]:
    model = _str(_get(result, "model"))
    if model:
        attributes["model.id"] = model
    response_id = _str(_get(result, "id"))
    if response_id:
        attributes["response.id"] = response_id
    scanners: list[SessionActionScanner] = []
    flagged_any = False
    for index, item in enumerate(_items(_get(result, "results"))):
        flagged = _get(item, "flagged")
        flagged_any = flagged_any or flagged is True
        categories = {
            k: v for k, v in _as_dict(_get(item, "categories")).items() if isinstance(v, bool)
        }
        scores = {
            k: v
            for k, v in _as_dict(_get(item, "category_scores")).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        data: dict[str, Any] = {"index": index, "categories": categories, "category_scores": scores}
        if isinstance(flagged, bool):
            data["flagged"] = flagged
        scanners.append(SessionActionScanner("moderation", data))
    attributes["flagged"] = flagged_any
    return scanners
