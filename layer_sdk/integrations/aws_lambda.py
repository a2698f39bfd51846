"""AWS Lambda and other platforms that freeze the process once a handler returns.

::

    @flush_after
    def handler(event, context): ...

Between two invocations the sandbox is frozen: the SDK's sender thread stops
with it, and what it had not delivered waits in memory until the next
invocation thaws it, or is lost when the sandbox is never thawed again. So
``flush_after`` flushes the queue before the handler's result (or exception)
goes back to the runtime.

The flush is bounded: by ``timeout`` (default ``DEFAULT_TIMEOUT``), and by
the time the invocation has left, as the Lambda context's
``get_remaining_time_in_millis()`` tells, less ``DEADLINE_RESERVE`` for the
runtime to send the answer: a slow or unreachable API never turns an
invocation into a timeout. What is still undelivered then is logged with its
count, and stays queued for the next invocation.

An ``async def`` handler (e.g. under an adapter that runs it on an event
loop) awaits ``aflush``, so that the loop runs on while it waits, on no thread
of the loop's default executor. The flush is of everything queued, not of the
invocation's sessions only: once frozen, nothing else would send the rest.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from .. import layer
from .._client import Client
from .._config import DEFAULT_SHUTDOWN_TIMEOUT

__all__ = ["DEADLINE_RESERVE", "DEFAULT_TIMEOUT", "flush_after", "flush_bound"]

logger = logging.getLogger("layer_sdk")

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TIMEOUT = DEFAULT_SHUTDOWN_TIMEOUT
"""The most a flush waits by default, seconds (as the exit drain of a process)."""

DEADLINE_RESERVE = 0.5
"""Seconds of the invocation's remaining time left to the runtime after the flush."""


def flush_bound(context: Any, timeout: float) -> float:
    """How long the flush after an invocation may take: ``timeout``, and no more than the
    invocation's remaining time (when ``context`` tells it) less ``DEADLINE_RESERVE``."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return timeout
    try:
        left = float(remaining()) / 1000.0
    except Exception:  # a context of another shape: the timeout alone
        return timeout
    if left != left:  # NaN
        return timeout
    return max(0.0, min(timeout, left - DEADLINE_RESERVE))


@overload
def flush_after(handler: F, /) -> F: ...


@overload
def flush_after(
    *, client: Client | None = None, timeout: float | None = None
) -> Callable[[F], F]: ...


def flush_after(
    handler: F | None = None, /, *, client: Client | None = None, timeout: float | None = None
) -> F | Callable[[F], F]:
    """Decorate a handler ``(event, context)`` so that the SDK's queue is flushed before it
    returns or raises. Use as ``@flush_after`` or ``@flush_after(client=..., timeout=...)``.

    ``client``: the client to flush (default: ``layer``). ``timeout``: the most
    the flush waits, in seconds (default ``DEFAULT_TIMEOUT``), and never past
    the invocation's remaining time less ``DEADLINE_RESERVE``.
    """
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    elif isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    elif not timeout >= 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
    bound_by = float(timeout)

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"flush_after decorates a handler function, got {func!r}")
        target = layer if client is None else client

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await func(*args, **kwargs)
                finally:
                    bound = flush_bound(_context_of(args, kwargs), bound_by)
                    try:
                        flushed = await target.aflush(timeout=bound)
                    except Exception as problem:
                        _flush_failed(problem)
                    else:
                        _tell_undelivered(target, flushed, bound)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            finally:
                _flush(target, flush_bound(_context_of(args, kwargs), bound_by))

        return cast(F, wrapper)

    if handler is None:
        return decorate
    return decorate(handler)


def _context_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The Lambda context among a handler's arguments: ``(event, context)``."""
    return args[1] if len(args) > 1 else kwargs.get("context")


def _flush(client: Client, bound: float) -> None:
    """Flush ``client`` within ``bound`` seconds; never raises into the handler."""
    try:
        flushed = client.flush(timeout=bound)
    except Exception as problem:
        _flush_failed(problem)
    else:
        _tell_undelivered(client, flushed, bound)


def _flush_failed(problem: Exception) -> None:
    logger.warning("layer-sdk: the flush after the handler failed: %r", problem)


def _tell_undelivered(client: Client, flushed: bool, bound: float) -> None:
    """Log how many events a flush left undelivered, if any; never raises."""
    if flushed:
        return
    try:
        queued = client.stats().queued
    except Exception as problem:
        _flush_failed(problem)
        return
    if queued:
        logger.warning(
            "layer-sdk: %d events were still undelivered when the handler returned "
            "(the flush may take %.2f s); they are sent if the sandbox is thawed again",
            queued,
            bound,
        )
