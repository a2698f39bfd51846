"""Reading a call's request before it is made: the session, the raw-response mode, the arguments.

:func:`read_request` reads the keyword arguments of an instrumented call,
whatever the provider. Layer's session header (``SESSION_HEADERS``) is taken
out of the call's headers (where its provider's ``HeaderSlot`` says they
are: ``extra_headers``, google-genai's ``config.http_options.headers``), so
that it never reaches the provider; its value picks the session of the
call's actions. Without it (or with a value that is not a session ID) the
session is the current one (a ``session_context()``, or the request or task
of an integration, whose pending session is created now), else a new one,
created when the first action is recorded.

The headers also say whether the call is made through ``with_raw_response``
or ``with_streaming_response`` (the provider's ``raw_header``: openai and
anthropic set the same one): that decides how its result can be read
(``call.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .._context import SESSION_HEADERS, current_session
from .._exceptions import LayerSchemaValidationError
from .._schemas import session_id_text
from ._provider import Provider

_CONTAINERS = frozenset({list, tuple, str, dict})

Problem = Callable[[str, BaseException], None]


def read_request(kwargs: dict[str, Any], provider: Provider) -> tuple[str | None, str | None]:
    """(the call's session, its raw-response mode); edits ``kwargs`` (the wrapper's own dict).

    Only two edits: the session header leaves the call's headers (a copy of
    them, put where they were by the provider's ``HeaderSlot``), and a
    one-shot iterator among the provider's ``read_arguments`` (those the
    mappings read) is watched as the provider takes it (``_watched``), never
    read here: the provider gets every item, and whatever the iterator raises,
    as it would without the instrumentation.
    """
    session_id: str | None = None
    raw: str | None = None
    problem = provider.problems
    slot = provider.headers
    try:
        headers = slot.get(kwargs)
        if headers:
            kept, value, raw = _scan_headers(headers, provider.raw_header)
            if kept is not headers:
                slot.put(kwargs, kept)
            if value is not None:
                session_id = _header_session(value, problem)
    except Exception as exc:
        problem("reading the request headers", exc)
    if session_id is None:
        session_id = current_session()
    try:
        for name in provider.read_arguments:
            value = kwargs.get(name)
            if value is not None and type(value) not in _CONTAINERS and isinstance(value, Iterator):
                kwargs[name] = _watched(value, kwargs, name)
    except Exception as exc:
        problem("reading the arguments", exc)
    return session_id, raw


class Taken(list[Any]):
    """The items a provider took from a caller's one-shot iterator; ``error``: what the
    iterator raised instead of its next item, if it did."""

    error: BaseException | None = None


def _watched(iterator: Iterator[Any], kwargs: dict[str, Any], name: str) -> Iterator[Any]:
    """``iterator``'s items, as the provider takes them; the record reads the items taken.

    The provider iterates this in place of the caller's iterator (at the call,
    as it builds the request); from its first item on, ``kwargs[name]`` (the
    record's view of the call) is the list of the items taken so far. An
    exception of the iterator reaches the provider, and so the caller, as is
    (kept in ``Taken.error``: see ``an_argument_raised``).
    """
    taken = Taken()
    kwargs[name] = taken
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except BaseException as exc:
            taken.error = exc
            raise
        taken.append(item)
        yield item


def an_argument_raised(kwargs: dict[str, Any]) -> bool:
    """Whether one of the call's one-shot iterators raised as the provider read it: the
    caller's own code failed while the arguments were read (as a list built before the
    call would have), and no complete request could be made. Its exception reaches the
    caller as is, or (google-genai) the provider's own for the arguments it lacks."""
    return any(isinstance(value, Taken) and value.error is not None for value in kwargs.values())


def _scan_headers(headers: Any, raw_header: str | None) -> tuple[Any, Any, str | None]:
    """(headers without the session entries, the session value, the raw-response mode).

    The headers are returned as they are when they carry no session entry.
    """
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
        elif lowered == raw_header and isinstance(item, str):
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


def _header_session(value: Any, problem: Problem) -> str | None:
    try:
        return session_id_text(value)
    except LayerSchemaValidationError as exc:
        problem("reading the session header (the call gets a new session)", exc)
        return None
