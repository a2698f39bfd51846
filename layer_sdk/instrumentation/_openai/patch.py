"""Patching the openai classes: the wrapper of each method, put in place and taken off.

The methods in ``TARGETS`` (``call.py``) are replaced on the resource
*classes*, so that clients built before ``init()``, Azure clients and
``with_options()`` copies are all covered; a method that a version lacks is
skipped. When openai is not imported yet, the classes are patched right
after it is (``hook.py``).

A wrapper has the original's shape (sync, coroutine function, or a plain
function returning an awaitable) and signature. It has the request read into
a ``_Call`` (``request.py``: the start time, the session, the headers), calls
the original method with everything else unchanged, and hands the outcome to
the ``_Call``.
A nested instrumented call (one openai method calling another) is passed
through unrecorded, as is every call while no client owns the patches.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..._context import Recorder
from .._firewall import check_before_prompt
from .call import TARGETS, _Call, _problem, _recognise_results
from .fields import _attribute, _recognise_sentinels
from .hook import _PostImportHook
from .request import _begin

_lock = threading.Lock()
#: The client that receives the actions of every recorded call; None: record nothing.
_client: Recorder | None = None
#: (class, method name, original, wrapper) of every patch in place.
_patches: list[tuple[type, str, Any, Any]] = []
#: True while an instrumented call runs: a nested instrumented call (one
#: openai method calling another) is then passed through, not recorded twice.
_inside: contextvars.ContextVar[bool] = contextvars.ContextVar("layer_openai_inside", default=False)
#: The client to patch for once openai is imported.
_waiting: Recorder | None = None


def instrument(client: Recorder) -> bool:
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


def _patch(client: Recorder) -> bool:
    global _client
    importlib.import_module("openai")
    with _lock:
        _recognise_results()
        _recognise_sentinels()
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


_hook = _PostImportHook("openai", _imported)


def _remove_hook() -> None:
    """Called with ``_lock`` held."""
    global _waiting
    _waiting = None
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_hook)


# -- the wrappers ---------------------------------------------------------------------
#
# Around the original method each wrapper sets ``_inside`` (so that nested
# calls pass through) and records an exception before it goes on, unchanged,
# to the caller. That try block is spelled out in each wrapper rather than put
# in a context manager: it runs on every call, and a ``with`` there measured
# about 1 µs more per call, some 3% of the instrumentation's own work.


def _make_wrapper(original: Any, api: str, operation: str, is_async: bool) -> Any:
    """The wrapper of ``original``, of the same shape.

    Async: a coroutine function stays one; a plain function returning an
    awaitable (1.x wraps the async methods in a sync argument checker) keeps
    raising its argument errors at the call.
    """
    if not is_async:
        wrapper = _function_wrapper(original, api, operation, _succeeded)
    elif inspect.iscoroutinefunction(original):
        wrapper = _coroutine_wrapper(original, api, operation)
    else:
        wrapper = _function_wrapper(original, api, operation, _finish_async)
    wrapper.__layer_instrumented__ = True  # ours: never wrapped again
    return wrapper


def _function_wrapper(
    original: Any, api: str, operation: str, finish: Callable[[_Call, Any], Any]
) -> Any:
    """A plain function around ``original``; ``finish(call, returned)`` makes its return value."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _start(api, operation, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        token = _inside.set(True)
        try:
            returned = original(self, *args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        finally:
            _inside.reset(token)
        return finish(call, returned)

    return wrapper


def _coroutine_wrapper(original: Any, api: str, operation: str) -> Any:
    @functools.wraps(original)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
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

    return wrapper


def _succeeded(call: _Call, result: Any) -> Any:
    return call.succeeded(result, False)


async def _finish_async(call: _Call, awaitable: Any) -> Any:
    """The awaitable a plain async method returned, awaited and recorded."""
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
        call = _begin(client, api, operation, kwargs)
    except Exception as exc:
        _problem(f"preparing the record of {operation}", exc)
        return None
    check_before_prompt(client, call.session_id)  # may raise: the provider is not called
    return call
