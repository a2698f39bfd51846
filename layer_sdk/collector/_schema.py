"""Validation of the request bodies of the Layer API wire contract, for the local collector.

msgspec checks types, required and unknown fields (a misspelt field is an
error rather than lost data) and names the field in its message; times are
plain strings here, checked by ``_check_times`` for the Z suffix and a real date.
Every check raises :class:`msgspec.ValidationError` with the message to answer
(with 422, as the Layer API does).

The types are those the original SDK's schemas declare, no looser and no
stricter: session ``attributes`` ``{str: str}``; action ``attributes`` an
object; action ``data`` an object or an array, never a bare scalar;
``error`` ``{"message": str, "code": int | null, "details": object | null}``;
a scanner ``{"name": str, "data": object}``.
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from typing import Annotated, Any, Literal

import msgspec

__all__ = ["canonical_uuid", "check_action", "check_session"]

_Kind = Literal[
    "embeddings",
    "moderation",
    "completion_prompt",
    "completion_output",
    "completion_prompt_attachment",
    "completion_tool_call",
]


class _ErrorIn(msgspec.Struct, forbid_unknown_fields=True):
    message: str
    code: int | None = None  # msgspec refuses a bool, a float or a string here
    details: dict[str, Any] | None = None


class _ScannerIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    data: dict[str, Any]


class _ActionIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: _Kind
    start_time: str
    end_time: str
    attributes: dict[str, Any]  # required, and never null
    data: dict[str, Any] | list[Any] | None = None  # never a bare scalar
    error: _ErrorIn | None = None
    scanners: list[_ScannerIn] | None = None


class _SessionIn(msgspec.Struct, forbid_unknown_fields=True):
    application_id: Annotated[str, msgspec.Meta(min_length=1)]
    session_id: str | None = None
    attributes: dict[str, str] | None = None
    start_time: str | None = None
    end_time: str | None = None
    actions: list[_ActionIn] | None = None


def check_session(body: Any) -> str | None:
    """Validate a create body; returns its session id in canonical form, or None."""
    session = msgspec.convert(body, _SessionIn)
    actions = session.actions or []
    if not _all_times([session, *actions]):  # then find the first bad one, for the message
        _check_times(session, "$")
        for i, action in enumerate(actions):
            _check_times(action, f"$.actions[{i}]")
    if session.session_id is None:
        return None
    try:
        version = uuid.UUID(session.session_id).version
    except ValueError:
        version = None
    if version != 5:
        raise msgspec.ValidationError(
            f"Expected a UUID version 5, got {session.session_id!r} - at `$.session_id`"
        )
    return canonical_uuid(session.session_id)


def check_action(body: Any) -> None:
    """Validate the body of an appended action."""
    _check_times(msgspec.convert(body, _ActionIn), "$")


def _check_times(item: _SessionIn | _ActionIn, where: str) -> None:
    for name, value in (("start_time", item.start_time), ("end_time", item.end_time)):
        if value is not None and not _is_time(value):
            raise msgspec.ValidationError(
                f"Expected an RFC 3339 UTC time ending in Z, got {value!r} - at `{where}.{name}`"
            )


# The pattern checks the time of day; fromisoformat() the date (it refuses 2024-02-30).
_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?Z"
_ONE_TIME = re.compile(_TIME)
_TIMES = re.compile(f"{_TIME}(?:\n{_TIME})*")  # one a line


def _is_time(value: str) -> bool:
    return _ONE_TIME.fullmatch(value) is not None and _is_date(value[:10])


def _all_times(items: list[_SessionIn | _ActionIn]) -> bool:
    """Whether all the times of ``items`` are right: what _check_times checks, in one go."""
    values = [v for item in items for v in (item.start_time, item.end_time) if v is not None]
    if not values:
        return True
    lines = "\n".join(values)
    if lines.count("\n") != len(values) - 1 or _TIMES.fullmatch(lines) is None:
        return False  # (a value of two lines would pass for two times)
    return all(_is_date(day) for day in {value[:10] for value in values})


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def canonical_uuid(value: str) -> str:
    """The lower-case hyphenated form of a UUID, so that any spelling finds its session."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value
