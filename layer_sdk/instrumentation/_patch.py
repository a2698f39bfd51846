"""Patching a provider's classes: the wrapper of each method, put in place and taken off.

Each provider has one :class:`Patcher`, given its ``Provider`` (the
contract, ``_provider.py``), its ``Target`` list (which methods of which
classes, and which are async) and how a call's record begins (``begin``,
``Call.begin``). The methods are replaced on the resource *classes*, so
that clients built before ``init()``, Azure/Bedrock/Vertex clients and
``with_options()`` copies are all covered; a method that a version lacks is
skipped. When the provider is not imported yet, the classes are patched
right after it is (``_hook.py``).

A wrapper has the original's shape (sync, coroutine function, a plain
function returning an awaitable, or a generator function) and signature.
:meth:`Patcher.start` is
the one point every recorded call goes through before the provider is
called: it reads the request into a ``Call`` (the start time, the session,
the headers). The wrapper then calls the original method with everything
else unchanged, and hands the outcome to the ``Call``. A nested
instrumented call (one provider method calling another) is passed through
unrecorded, as is every call while no client owns the patches.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .._context import Recorder
from ._hook import _PostImportHook
from ._provider import Provider, Target, attribute


class Record(Protocol):
    """What a wrapper needs of a call's record (``_call.Call``)."""

    #: The client the call is recorded for.
    client: Recorder
    #: The Layer session the call belongs to, None until one is created for it.
    session_id: str | None
    #: The provider's object the method was called on (its client knows the API key).
    resource: Any

    def failed(self, exc: BaseException) -> None: ...

    def succeeded(self, result: Any, is_async: bool) -> Any: ...


#: Called with no arguments as each call begins to be recorded, when set: ``layer_sdk.otel``
#: sets it to note the OpenTelemetry span of the call, so that the span is not recorded again.
recorded_call_hook: Callable[[], None] | None = None

#: Every provider's Patcher (``in_recorded_call`` asks them).
_patchers: list[Patcher] = []


def in_recorded_call() -> bool:
    """Whether a call recorded here is running in this context (a span started now is its)."""
    return any(patcher.inside.get() for patcher in _patchers)


#: ``start(instance, kwargs)``: the record of a call about to be made, or None.
Start = Callable[[Any, dict[str, Any]], Any]
#: ``finish(record, returned)``: what the wrapper returns for what the original returned.
Finish = Callable[[Any, Any], Any]


class Patcher:
    """The patches of one provider package, and the client that receives what they record."""

    def __init__(
        self,
        provider: Provider,
        targets: Iterable[Target],
        begin: Callable[[Recorder, Any, dict[str, Any]], Record],
        prepare: Callable[[], None],
    ) -> None:
        """``begin(client, spec, kwargs)`` starts a call's record; ``prepare()`` runs before
        patching, once the package is imported (to look up its result classes)."""
        package = provider.package
        self.package = package
        self.targets = tuple(targets)
        self._begin = begin
        self.problem = provider.problems
        self._prepare = prepare
        self._lock = threading.Lock()
        #: The client that receives the actions of every recorded call; None: record nothing.
        self.client: Recorder | None = None
        #: (class, method name, original, wrapper) of every patch in place.
        self.patches: list[tuple[type, str, Any, Any]] = []
        #: True while an instrumented call runs: a nested instrumented call is then
        #: passed through, not recorded twice.
        self.inside: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"layer_{provider.name}_inside", default=False
        )
        #: The client to patch for once the package is imported.
        self._waiting: Recorder | None = None
        self._hook = _PostImportHook(package, self._imported)
        _patchers.append(self)

    # -- putting the patches in place and taking them off --------------------------------

    def instrument(self, client: Recorder) -> bool:
        """Patch the classes for ``client`` (now, or when the package is imported).

        When the application has not imported the package yet, importing it here
        would cost its full import time in ``init()``, even for an application
        that never uses it: instead a post-import hook patches the classes right
        after the import runs. Returns True when patched or waiting; False when
        no method could be patched.
        """
        package = self.package
        with self._lock:
            if package not in sys.modules:
                self._waiting = client
                if self._hook not in sys.meta_path:
                    sys.meta_path.insert(0, self._hook)
                if package not in sys.modules:  # else imported meanwhile: patch now
                    return True
                self._remove_hook()
        return self._patch(client)

    def _patch(self, client: Recorder) -> bool:
        importlib.import_module(self.package)
        with self._lock:
            self._prepare()
            patched: set[tuple[type, str]] = {(cls, name) for cls, name, _, _ in self.patches}
            for target in self.targets:
                cls = attribute(target.module, target.cls)
                method = target.method
                if not isinstance(cls, type) or (cls, method) in patched:
                    continue
                current = cls.__dict__.get(method)
                if current is None or not callable(current):
                    continue
                if getattr(current, "__layer_instrumented__", False):
                    continue  # already ours (a patch someone else wrapped over): it reads client
                make = target.make or _make_wrapper
                wrapper = make(self, current, target)
                wrapper.__layer_instrumented__ = True  # ours: never wrapped again
                setattr(cls, method, wrapper)
                self.patches.append((cls, method, current, wrapper))
                patched.add((cls, method))
            if not self.patches:
                return False
            self.client = client
            return True

    def uninstrument(self) -> None:
        """Restore every patched method (unless someone wrapped it since: then ours turns inert)."""
        with self._lock:
            self._remove_hook()
            self.client = None
            for cls, method, original, wrapper in reversed(self.patches):
                if cls.__dict__.get(method) is wrapper:
                    setattr(cls, method, original)
            self.patches.clear()

    def _imported(self) -> None:
        """The package's import just ran: patch for the waiting client."""
        with self._lock:
            client = self._waiting
            self._remove_hook()
        if client is None:
            return
        try:
            self._patch(client)
        except Exception as exc:
            self.problem(f"instrumenting {self.package} after its import", exc)

    def _remove_hook(self) -> None:
        """Called with ``_lock`` held."""
        self._waiting = None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self._hook)

    # -- before the provider is called ---------------------------------------------------

    def start(self, spec: Any, kwargs: dict[str, Any], instance: Any = None) -> Any:
        """The record of a call about to be made; None: make it unrecorded (off, nested, our bug).

        ``instance`` is the provider's object the method is called on.

        Every recorded call of every provider passes here before the request is
        made (for the ``.stream()`` helper: when ``stream()`` is called, before its
        manager sends anything; for a generator function: at its first ``next()``).
        The firewall's check comes later, in the wrapper, right before the
        request is sent (``Recorder.check_prompt``).
        """
        client = self.client
        if client is None or self.inside.get():
            return None
        try:
            record = self._begin(client, spec, kwargs)
            record.resource = instance
        except Exception as exc:
            self.problem(f"preparing the record of a {self.package} call", exc)
            return None
        hook = recorded_call_hook
        if hook is not None:
            hook()
        return record

    def starter(self, spec: Any) -> Start:
        """``start`` for the calls of one target."""
        start = self.start
        return lambda instance, kwargs: start(spec, kwargs, instance)


# -- the wrappers ---------------------------------------------------------------------
#
# Around the original method each wrapper sets ``inside`` (so that nested
# calls pass through) and records an exception before it goes on, unchanged,
# to the caller. Right before the original sends the request, the firewall's
# check runs (it may refuse the call: what it raises reaches the caller). That
# try block is spelled out in each wrapper rather than put
# in a context manager: it runs on every call, and a ``with`` there measured
# about 1 µs more per call, some 3% of the instrumentation's own work.


def _make_wrapper(patcher: Patcher, original: Any, target: Target) -> Any:
    """The wrapper of ``original``, of the same shape, recording its calls.

    Async (``target.is_async``): a coroutine function stays one; a plain
    function returning an awaitable (openai 1.x wraps the async methods in a
    sync argument checker) keeps raising its argument errors at the call.
    A generator function stays one: it sends its request at the first
    ``next()``, and so is recorded (and checked) from there.
    """
    start = patcher.starter(target.spec)
    if inspect.isgeneratorfunction(original):
        return _generator_wrapper(original, start)
    if not target.is_async:
        return _function_wrapper(patcher, original, start, _succeeded)
    if inspect.iscoroutinefunction(original):
        return _coroutine_wrapper(patcher, original, start)
    finish = functools.partial(_finish_async, patcher)
    return _function_wrapper(patcher, original, start, finish, sends=False)


def _function_wrapper(
    patcher: Patcher, original: Any, start: Start, finish: Finish, *, sends: bool = True
) -> Any:
    """A plain function around ``original``; ``finish(call, returned)`` makes its return value.

    ``sends``: whether ``original`` sends the request (so the firewall is asked
    first); False when it only returns what sends it later (an awaitable, a manager).
    """
    inside = patcher.inside

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = start(self, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        if sends and call.session_id is not None:
            call.client.check_prompt(call.session_id)
        token = inside.set(True)
        try:
            returned = original(self, *args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        finally:
            inside.reset(token)
        return finish(call, returned)

    return wrapper


def _coroutine_wrapper(
    patcher: Patcher, original: Any, start: Start, refused: Callable[[Any], None] | None = None
) -> Any:
    """A coroutine function around ``original``; ``refused(instance)`` cleans up after the
    firewall refused the call (the instance may hold a request prepared, never to be sent)."""
    inside = patcher.inside

    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = start(self, kwargs)
        if call is None:
            return await original(self, *args, **kwargs)
        if call.session_id is not None:
            try:
                await call.client.check_prompt_async(call.session_id)
            except BaseException:
                if refused is not None:
                    refused(self)
                raise
        token = inside.set(True)
        try:
            result = await original(self, *args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        finally:
            inside.reset(token)
        return call.succeeded(result, True)

    return wrapper


def _generator_wrapper(original: Any, start: Start) -> Any:
    """A generator function around the generator function ``original`` (a stream whose
    request is sent at the first ``next()``): from there, the call is recorded as a stream
    read through a generator of ours, and a refusal of the firewall raises there, where the
    provider's own errors would.

    ``inside`` is not set: the generator runs a step at a time in the caller's context,
    between which the caller's own code runs (and its own calls are its own).
    """

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = start(self, kwargs)
        if call is None:
            return (yield from original(self, *args, **kwargs))
        if call.session_id is not None:
            call.client.check_prompt(call.session_id)
        try:
            stream = original(self, *args, **kwargs)  # a generator: nothing runs yet
        except BaseException as exc:
            call.failed(exc)
            raise
        return (yield from call.succeeded(stream, False))

    return wrapper


def _succeeded(call: Record, result: Any) -> Any:
    return call.succeeded(result, False)


async def _finish_async(patcher: Patcher, call: Record, awaitable: Any) -> Any:
    """The awaitable a plain async method returned, awaited and recorded."""
    if call.session_id is not None:
        try:
            await call.client.check_prompt_async(call.session_id)
        except BaseException:
            close = getattr(awaitable, "close", None)  # a coroutine never to be awaited
            if close is not None:
                close()
            raise
    token = patcher.inside.set(True)
    try:
        result = await awaitable
    except BaseException as exc:
        call.failed(exc)
        raise
    finally:
        patcher.inside.reset(token)
    return call.succeeded(result, True)
