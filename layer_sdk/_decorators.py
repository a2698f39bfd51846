"""``@layer.session`` and ``@layer.action``, for plain and ``async def`` functions.

The plain and async wrappers differ only in ``await``; what they record is
decided by the shared ``_open_session`` and ``_record_action``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._exceptions import LayerSchemaValidationError, LayerSDKException
from ._schemas import SessionActionError, action_kind, client_session_id, session_id_text

if TYPE_CHECKING:
    from ._client import Client

logger = logging.getLogger("layer_sdk")

F = TypeVar("F", bound=Callable[..., Any])

current_session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "layer_session_id", default=None
)
"""The session of the innermost ``@layer.session`` call running in this context."""


def session(
    client: Client, *, attributes: Mapping[str, Any] | None, session_id: Any
) -> Callable[[F], F]:
    """Build the ``@layer.session`` decorator."""
    if session_id is not None:
        session_id = client_session_id(session_id)

    def decorate(func: F) -> F:
        wants_id = "session_id" in inspect.signature(func).parameters

        def open_session(kwargs: dict[str, Any]) -> contextvars.Token[str | None]:
            new_id = client.create_session(attributes=attributes, session_id=session_id)
            if wants_id and kwargs.get("session_id") is None:
                kwargs["session_id"] = new_id
            return current_session_id.set(new_id)

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = open_session(kwargs)
                try:
                    return await func(*args, **kwargs)
                finally:
                    current_session_id.reset(token)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = open_session(kwargs)
            try:
                return func(*args, **kwargs)
            finally:
                current_session_id.reset(token)

        return cast(F, wrapper)

    return decorate


def action(
    client: Client, *, kind: Any, session_id: Any, attributes: Mapping[str, Any] | None
) -> Callable[[F], F]:
    """Build the ``@layer.action`` decorator."""
    kind = action_kind(kind)
    if session_id is not None:
        session_id = session_id_text(session_id)

    def target_session() -> str:
        found = session_id or current_session_id.get()
        if found is None:
            raise LayerSchemaValidationError(
                "@layer.action needs session_id=, or must run inside a @layer.session function"
            )
        return found

    def record(target: str, started: datetime, result: Any, exc: BaseException | None) -> None:
        _record_action(client, target, kind, attributes, started, result, exc)

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                target, started = target_session(), datetime.now(timezone.utc)
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
            target, started = target_session(), datetime.now(timezone.utc)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                record(target, started, None, exc)
                raise
            record(target, started, result, None)
            return result

        return cast(F, wrapper)

    return decorate


def _record_action(
    client: Client,
    session_id: str,
    kind: Any,
    attributes: Mapping[str, Any] | None,
    started: datetime,
    result: Any,
    exc: BaseException | None,
) -> None:
    """Append the action for one call of a decorated function.

    The function has already run: a problem recording it is logged, never
    raised, so that the caller sees exactly what the function did.
    """
    data: Any = result
    error: Any = None
    scanners: Any = None
    if exc is not None:
        data = None
        error = SessionActionError(message=str(exc) or type(exc).__name__, code=type(exc).__name__)
    elif _is_action_tuple(result):
        data, error, scanners = result
    try:
        client.append_action(
            session_id,
            kind=kind,
            start_time=started,
            end_time=datetime.now(timezone.utc),
            attributes=attributes,
            data=data,
            error=error,
            scanners=scanners,
        )
    except LayerSDKException as problem:
        logger.warning("layer-sdk could not record the action of %s: %s", kind.value, problem)


def _is_action_tuple(result: Any) -> bool:
    return (
        isinstance(result, tuple)
        and len(result) == 3
        and (result[1] is None or isinstance(result[1], (SessionActionError, Mapping)))
        and (result[2] is None or isinstance(result[2], list))
    )
