"""Patching the anthropic classes through the shared ``Patcher``, and the ``.stream()`` helper.

``create`` and ``parse`` get the shared wrapper. The ``.stream()`` helper is
two steps: ``stream()`` builds a manager and sends nothing; entering the
manager sends the request. So ``stream()``'s wrapper starts the record (the
pre-call point, the session header taken out of ``extra_headers`` before the
manager keeps them) and leaves it on the manager (``_MANAGER_CALL``); the
wrapper of the manager's ``__enter__``/``__aenter__`` takes it from there,
makes the call and watches the ``MessageStream`` it returns. A manager never
entered sends nothing and records nothing.
"""

from __future__ import annotations

import inspect
from typing import Any

from .._patch import Patcher, Start, _coroutine_wrapper, _function_wrapper
from .._provider import Target
from .call import ANTHROPIC, CALLS, HELPERS, MANAGERS, Call, recognise

#: The instance attribute of a manager that holds the record of its request.
_MANAGER_CALL = "_layer_call"


def _keep_on_manager(call: Call, manager: Any) -> Any:
    """``stream()`` returned ``manager``: its ``__enter__`` makes the call, recorded by ``call``."""
    try:
        setattr(manager, _MANAGER_CALL, call)
    except Exception as exc:  # a manager we cannot annotate: its call goes unrecorded
        call.problem("keeping the record of a stream() call", exc)
    return manager


def _helper_wrapper(patcher: Patcher, original: Any, target: Target) -> Any:
    """``stream()`` (a plain function, sync and async): the record starts, the manager keeps it."""
    start = patcher.starter(target.spec)
    return _function_wrapper(patcher, original, start, _keep_on_manager, sends=False)


def _manager_wrapper(patcher: Patcher, original: Any, target: Target) -> Any:
    """A helper manager's ``__enter__``/``__aenter__``: the request, recorded by the kept call."""

    def start(manager: Any, kwargs: dict[str, Any]) -> Any:
        call = getattr(manager, "__dict__", {}).pop(_MANAGER_CALL, None)
        if call is None or patcher.client is None:
            return None
        return call

    begin: Start = start
    if target.is_async:
        return _coroutine_wrapper(patcher, original, begin, _drop_prepared_request)
    return _function_wrapper(patcher, original, begin, _entered)


def _drop_prepared_request(manager: Any) -> None:
    """An async manager refused on entry: the request coroutine that ``stream()`` made
    for it is closed, never to be awaited (else Python warns when it is collected)."""
    for value in list(getattr(manager, "__dict__", {}).values()):
        if inspect.iscoroutine(value):
            value.close()


def _entered(call: Call, stream: Any) -> Any:
    return call.succeeded(stream, False)


def _is_async(cls: str) -> bool:
    return cls.startswith(("Async", "BetaAsync"))


PATCHER = Patcher(
    ANTHROPIC,
    [
        *(
            Target(module, cls, method, ("messages", operation), _is_async(cls))
            for module, cls, method, operation in CALLS
        ),
        *(
            Target(module, cls, method, ("messages", operation), _is_async(cls), _helper_wrapper)
            for module, cls, method, operation in HELPERS
        ),
        *(
            Target(module, cls, method, None, _is_async(cls), _manager_wrapper)
            for module, cls, method in MANAGERS
        ),
    ],
    Call.begin,
    recognise,
)
