"""``@layer.session`` and ``@layer.action``, for plain and ``async def`` functions.

The plain and async wrappers differ only in ``await``; what they record is
decided by the shared ``_open_session`` and ``_record_action``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from contextvars import Token
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

from ._context import PendingSession, Recorder, current_session, current_session_id
from ._exceptions import LayerSDKException
from ._schemas import (
    SessionActionError,
    SessionActionKind,
    action_attributes,
    action_kind,
    client_session_id,
    error_from_exception,
    session_attributes,
    session_id_text,
)

logger = logging.getLogger("layer_sdk")

F = TypeVar("F", bound=Callable[..., Any])


def session(
    client: Recorder, *, attributes: Mapping[str, Any] | None, session_id: Any
) -> Callable[[F], F]:
    """Build the ``@layer.session`` decorator.

    Its own arguments are checked now, when decorating. A session that cannot
    be opened at a call (no ``init()`` yet, a ``sync=True`` create that
    fails) is logged, and the function runs all the same, given
    ``session_id=None``.
    """
    if session_id is not None:
        session_id = client_session_id(session_id)
    attributes = dict(session_attributes(attributes))  # a snapshot, checked once

    def decorate(func: F) -> F:
        given_at = _keyword_slot(func, "session_id")

        def open_session(
            args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Token[str | PendingSession | None]:
            try:
                new_id: str | None = client.create_session(
                    attributes=attributes, session_id=session_id
                )
            except Exception as problem:
                _log_problem("could not open the session of", func, problem)
                new_id = None
            if given_at is not None and len(args) <= given_at and kwargs.get("session_id") is None:
                kwargs["session_id"] = new_id
            return current_session_id.set(new_id)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = open_session(args, kwargs)
                try:
                    return await func(*args, **kwargs)
                finally:
                    current_session_id.reset(token)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = open_session(args, kwargs)
            try:
                return func(*args, **kwargs)
            finally:
                current_session_id.reset(token)

        return cast(F, wrapper)

    return decorate


def _keyword_slot(func: Callable[..., Any], name: str) -> int | None:
    """How many positional arguments reach parameter ``name`` (None: no such keyword).

    A caller who passes that many or more has given the parameter positionally,
    and it must not be given again as a keyword.
    """
    position = 0
    for parameter in inspect.signature(func).parameters.values():
        if parameter.name == name:
            if parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
                return position
            return sys.maxsize if parameter.kind is parameter.KEYWORD_ONLY else None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            position += 1
    return None


def action(
    client: Recorder, *, kind: Any, session_id: Any, attributes: Mapping[str, Any] | None
) -> Callable[[F], F]:
    """Build the ``@layer.action`` decorator.

    Its own arguments are checked now, when decorating. A call is recorded
    after the function has run; a problem recording it is logged, and the
    function's result or exception reaches the caller unchanged.
    """
    kind = action_kind(kind)
    if session_id is not None:
        session_id = session_id_text(session_id)
    attributes = dict(action_attributes(attributes))  # a snapshot, checked once

    def decorate(func: F) -> F:
        def record(
            target: str | None, started: datetime, result: Any, exc: BaseException | None
        ) -> None:
            _record_action(client, func, target, kind, attributes, started, result, exc)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                target, started = session_id or current_session(), _now()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    record(target, started, None, exc)
                    raise
                record(target, started, result, None)
                return result

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target, started = session_id or current_session(), _now()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                record(target, started, None, exc)
                raise
            record(target, started, result, None)
            return result

        return cast(F, wrapper)

    return decorate


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _record_action(
    client: Recorder,
    func: Callable[..., Any],
    session_id: str | None,
    kind: SessionActionKind,
    attributes: dict[str, Any],
    started: datetime,
    result: Any,
    exc: BaseException | None,
) -> None:
    """Append the action for one call of a decorated function.

    The function has already run: a problem recording it is logged, never
    raised, so that the caller sees exactly what the function did.
    """
    if session_id is None:
        logger.warning(
            "layer-sdk did not record the %s action of %s: @layer.action needs session_id=, "
            "or must run inside a @layer.session function",
            kind.value,
            _name(func),
        )
        return
    try:
        data: Any = result
        error: Any = None
        scanners: Any = None
        if exc is not None:
            data, error = None, error_from_exception(exc)
        elif _is_action_tuple(result):
            data, error, scanners = result
        client.append_action(
            session_id,
            kind=kind,
            start_time=started,
            end_time=_now(),
            attributes=attributes,
            data=data,
            error=error,
            scanners=scanners,
        )
    except Exception as problem:
        _log_problem(f"could not record the {kind.value} action of", func, problem)


def _log_problem(what: str, func: Callable[..., Any], problem: Exception) -> None:
    """Log a decorator's own failure; a traceback only when it is not an expected one."""
    try:
        text = f"{type(problem).__name__}: {problem}"
    except Exception:
        text = type(problem).__name__
    logger.warning(
        "layer-sdk %s %s: %s",
        what,
        _name(func),
        text,
        exc_info=not isinstance(problem, LayerSDKException),
    )


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _is_action_tuple(result: Any) -> bool:
    return (
        isinstance(result, tuple)
        and len(result) == 3
        and (result[1] is None or isinstance(result[1], (SessionActionError, Mapping)))
        and (result[2] is None or isinstance(result[2], list))
    )
