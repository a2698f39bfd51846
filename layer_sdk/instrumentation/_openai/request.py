"""Reading a call's request before it is made: the session, the raw-response mode, the arguments.

:func:`_begin` turns the keyword arguments of an instrumented call into a
:class:`_Call`. Layer's session header (``SESSION_HEADERS``) is taken out of
``extra_headers`` so that it never reaches OpenAI; its value picks the
session of the call's actions. Without it (or with a value that is not a
session ID) the session is the current ``session_context()``'s, else a new
one, created when the first action is recorded.

``extra_headers`` also says whether the call is made through
``with_raw_response`` or ``with_streaming_response``: that decides how its
result can be read (``call.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..._context import Recorder, current_session_id
from ..._exceptions import LayerSchemaValidationError
from ..._schemas import session_id_text
from .call import _Call, _problem
from .mapping import _now

#: Headers that carry a Layer session ID; removed before the request goes to OpenAI.
SESSION_HEADERS = frozenset({"x-layer-session-id", "layer-session-id"})
#: Set by ``with_raw_response`` ("true"/"raw") and ``with_streaming_response`` ("stream").
_RAW_HEADER = "x-stainless-raw-response"
#: The arguments the mappings read, so the ones where a one-shot iterator is made a list.
_READ_ARGUMENTS = ("messages", "input", "tools", "functions")
_CONTAINERS = frozenset({list, tuple, str, dict})


def _begin(client: Recorder, api: str, operation: str, kwargs: dict[str, Any]) -> _Call:
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
