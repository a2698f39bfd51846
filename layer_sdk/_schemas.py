"""What goes on the wire: the request types, their validation and their encoding.

Events are encoded to JSON bytes on the caller's thread, so the data is
snapshotted at the call (later mutation of a dict by the caller changes
nothing) and a value that cannot be encoded is the caller's error, raised
right there. The queue and the worker only ever see bytes.
"""

from __future__ import annotations

import enum
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import msgspec

from . import _entropy
from ._entropy import Pool, random_16
from ._exceptions import LayerRequestPreparationError, LayerSchemaValidationError

#: The Layer API's paths. Sessions are created here...
SESSIONS_PATH = "/v1/sessions"
#: ...applications listed and created here (``_applications``)...
APPLICATIONS_PATH = "/v1/applications"


def actions_path(session_id: str) -> str:
    """...the actions of a session are appended here..."""
    return f"{SESSIONS_PATH}/{session_id}/actions"


def firewall_session_path(session_id: str) -> str:
    """...and, below ``firewall_base_url``, the firewall's decision on a session is read here."""
    return f"{SESSIONS_PATH}/{session_id}"


class SessionActionKind(str, enum.Enum):
    """What an action records."""

    EMBEDDINGS = "embeddings"
    MODERATION = "moderation"
    COMPLETION_PROMPT = "completion_prompt"
    COMPLETION_OUTPUT = "completion_output"
    COMPLETION_PROMPT_ATTACHMENT = "completion_prompt_attachment"
    COMPLETION_TOOL_CALL = "completion_tool_call"


class SessionActionError(msgspec.Struct, omit_defaults=True):
    """The error an action ended with: ``code`` an int (e.g. an HTTP status), ``details`` a dict."""

    message: str
    code: int | None = None
    details: dict[str, Any] | None = None


class SessionActionScanner(msgspec.Struct):
    """The result of one scanner run over an action (e.g. token usage); ``data`` is a dict."""

    name: str
    data: dict[str, Any]


class SessionActionRequest(msgspec.Struct, omit_defaults=True):
    """Body of ``POST /v1/sessions/{session_id}/actions``."""

    kind: SessionActionKind
    start_time: datetime
    end_time: datetime
    attributes: dict[str, Any]
    data: Any = None
    error: SessionActionError | None = None
    scanners: list[SessionActionScanner] | None = None


class SessionRequest(msgspec.Struct, omit_defaults=True):
    """Body of ``POST /v1/sessions`` (without its actions, which are spliced in)."""

    application_id: str
    attributes: dict[str, str]
    session_id: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_encode = msgspec.json.Encoder(enc_hook=_refuse).encode
_ACTION_KINDS = {kind.value: kind for kind in SessionActionKind}
#: What a kind may be on append_action's fast path (a str must then be one of the values).
_KIND_TYPES = (SessionActionKind, str)
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
#: What msgspec raises for a value it cannot encode (RecursionError: data that contains
#: itself, caught here rather than found by walking the data first).
_NOT_ENCODABLE = (TypeError, ValueError, OverflowError, RecursionError)
_UTC = timezone.utc
_now = datetime.now


def encode(value: msgspec.Struct, what: str) -> bytes:
    """JSON bytes of ``value``; a non-serializable field is the caller's error."""
    try:
        return _encode(value)
    except _NOT_ENCODABLE as exc:
        raise _not_encodable(what, exc) from None


def _not_encodable(what: str, exc: BaseException) -> LayerRequestPreparationError:
    if isinstance(exc, RecursionError):
        exc = ValueError("its data contains itself or is nested too deeply")
    return LayerRequestPreparationError(f"{what} cannot be encoded as JSON: {exc}")


def session_body(session: bytes, actions: Iterable[bytes]) -> bytes:
    """A create-session body with already encoded actions spliced in.

    Splicing bytes (rather than decoding and encoding again) keeps the worker's
    cost per request small; ``session`` is always a non-empty JSON object.
    """
    joined = b",".join(actions)
    if not joined:
        return session
    return b"".join((session[:-1], b',"actions":[', joined, b"]}"))


def utc(value: datetime | None, field: str) -> datetime | None:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    if value is None:
        return None
    if value.__class__ is datetime and value.tzinfo is _UTC:
        return value
    if not isinstance(value, datetime):
        raise LayerSchemaValidationError(f"{field} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    if value.utcoffset():
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:  # e.g. 0001-01-01 at +01:00 is before year 1 in UTC
            raise LayerSchemaValidationError(
                f"{field} is out of range once converted to UTC: {value.isoformat()}"
            ) from None
    return value


def action_kind(kind: Any) -> SessionActionKind:
    """``kind`` as a SessionActionKind; raises naming the valid values otherwise."""
    if type(kind) is SessionActionKind:
        return kind
    found = _ACTION_KINDS.get(kind) if isinstance(kind, str) else None
    if found is None:
        raise LayerSchemaValidationError(
            f"kind must be a SessionActionKind or one of {sorted(_ACTION_KINDS)}, got {kind!r}"
        )
    return found


def session_attributes(attributes: Mapping[str, Any] | None) -> dict[str, str]:
    """Session attributes as strings: numbers and booleans converted, None left out."""
    if not attributes:
        return {}
    if type(attributes) is dict:
        for key, value in attributes.items():
            if type(value) is not str or type(key) is not str:
                break
        else:
            return attributes  # all strings already: the common case costs one pass
    if not isinstance(attributes, Mapping):
        raise LayerSchemaValidationError(
            f"attributes must be a mapping, got {type(attributes).__name__}"
        )
    result: dict[str, str] = {}
    for key, value in attributes.items():
        if not isinstance(key, str):
            raise LayerSchemaValidationError(f"attribute names must be strings, got {key!r}")
        if isinstance(value, str):
            result[key] = value
        elif isinstance(value, (bool, int, float)):
            try:
                result[key] = str(value)
            except ValueError:  # an int of more than sys.get_int_max_str_digits() digits
                raise LayerSchemaValidationError(
                    f"session attribute {key!r} is an integer too large to convert to a string"
                ) from None
        elif value is not None:
            raise LayerSchemaValidationError(
                f"session attribute {key!r} must be a str, int, float, bool or None, "
                f"got {type(value).__name__}"
            )
    return result


def action_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Action attributes: any JSON values, never None on the wire."""
    if type(attributes) is dict:
        return attributes  # no copy: it is encoded (snapshotted) right away
    if attributes is None:
        return {}
    if not isinstance(attributes, Mapping):
        raise LayerSchemaValidationError(
            f"attributes must be a mapping, got {type(attributes).__name__}"
        )
    return dict(attributes)


def action_data(data: Any) -> Any:
    """``data`` as it goes on the wire: an object or an array, never a bare scalar.

    Dicts (any mapping), lists, tuples, sets, msgspec Structs, dataclasses and
    attrs classes are kept (they encode as objects or arrays); any other value,
    such as the string a decorated function returns, is wrapped as
    ``{"value": data}``. None stays None (left out of the body).
    """
    if data is None or type(data) is dict or type(data) is list:
        return data
    if isinstance(data, Mapping):
        return data if isinstance(data, dict) else dict(data)
    if isinstance(data, _KEPT) or any(hasattr(type(data), mark) for mark in _RECORD_MARKS):
        return data
    return {"value": data}


#: Types msgspec encodes as a JSON array or object, besides dicts.
_KEPT = (list, tuple, set, frozenset, msgspec.Struct)
#: Dataclasses and attrs classes encode as objects.
_RECORD_MARKS = ("__dataclass_fields__", "__attrs_attrs__")


def action_error(error: Any) -> SessionActionError | None:
    """``error`` as a SessionActionError (it may be given as a dict of its fields).

    Checked here because a Struct's constructor checks nothing: ``code`` must
    be an int (not a bool) or None, ``details`` a dict or None.
    """
    if error is None:
        return None
    if type(error) is not SessionActionError:
        if not isinstance(error, Mapping):
            raise LayerSchemaValidationError(
                f"error must be a SessionActionError or a dict, got {type(error).__name__}"
            )
        return _convert(error, SessionActionError, "error")
    message, code, details = error.message, error.code, error.details
    if not isinstance(message, str):
        raise LayerSchemaValidationError(
            f"error.message must be a str, got {type(message).__name__}"
        )
    if type(code) is not int and code is not None:
        if not isinstance(code, int) or isinstance(code, bool):
            raise LayerSchemaValidationError(
                f"error.code must be an int or None, got {type(code).__name__}"
            )
        code = int(code)  # e.g. an HTTPStatus
    if type(details) is not dict and details is not None:
        if not isinstance(details, Mapping):
            raise LayerSchemaValidationError(
                f"error.details must be a dict or None, got {type(details).__name__}"
            )
        details = dict(details)
    if code is error.code and details is error.details:
        return error
    return SessionActionError(message, code, details)


def error_from_exception(exc: BaseException) -> SessionActionError:
    """The ``error`` of an action that ended with ``exc``.

    ``message`` is ``str(exc)`` (the class name when that is empty or fails),
    ``details`` is ``{"type": <class name>}``, and ``code`` is set only when the
    exception carries an integer ``status_code`` or ``status`` (an HTTP status).
    """
    name = type(exc).__name__
    try:
        message = str(exc) or name
    except Exception:  # a broken __str__ must not hide the exception itself
        message = name
    code = None
    for attribute in ("status_code", "status"):
        try:
            value = getattr(exc, attribute, None)
        except Exception:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            code = int(value)
            break
    return SessionActionError(message, code, {"type": name})


def action_scanners(scanners: Any) -> list[SessionActionScanner] | None:
    """``scanners`` as a list of SessionActionScanner (items may be dicts)."""
    if scanners is None:
        return None
    if isinstance(scanners, (str, bytes, Mapping)) or not isinstance(scanners, Iterable):
        raise LayerSchemaValidationError("scanners must be a list of SessionActionScanner or dicts")
    result = []
    for i, scanner in enumerate(scanners):
        if type(scanner) is not SessionActionScanner:
            if not isinstance(scanner, Mapping):
                raise LayerSchemaValidationError(
                    f"scanners[{i}] must be a SessionActionScanner or a dict, "
                    f"got {type(scanner).__name__}"
                )
            scanner = _convert(scanner, SessionActionScanner, f"scanners[{i}]")
        elif not isinstance(scanner.name, str):
            raise LayerSchemaValidationError(
                f"scanners[{i}].name must be a str, got {type(scanner.name).__name__}"
            )
        elif type(scanner.data) is not dict:
            if not isinstance(scanner.data, Mapping):
                raise LayerSchemaValidationError(
                    f"scanners[{i}].data must be a dict, got {type(scanner.data).__name__}"
                )
            scanner = SessionActionScanner(scanner.name, dict(scanner.data))
        result.append(scanner)
    return result


_T = TypeVar("_T")


def _convert(fields: Mapping[str, Any], into: type[_T], where: str) -> _T:
    """A dict of fields as ``into``; msgspec's message names the field, under ``where``."""
    try:
        return msgspec.convert(dict(fields), into)
    except msgspec.ValidationError as exc:
        # msgspec says "... - at `$.code`"; the caller knows the field as error.code.
        raise LayerSchemaValidationError(
            f"{where}: {str(exc).replace('`$', f'`{where}')}"
        ) from None


#: Session IDs minted or validated recently: checking one again costs a dict lookup
#: instead of a regular expression on append_action's hot path.
known_session_ids: dict[str, None] = {}
_MAX_KNOWN_IDS = 16_384


def _remember(session_id: str) -> str:
    if len(known_session_ids) >= _MAX_KNOWN_IDS:
        known_session_ids.clear()
    known_session_ids[session_id] = None
    return session_id


def session_id_text(session_id: Any) -> str:
    """A session ID given to append_action, as the canonical string."""
    if type(session_id) is str and session_id in known_session_ids:
        return session_id
    if isinstance(session_id, uuid.UUID):
        return str(session_id)
    if isinstance(session_id, str) and len(session_id) == 36 and _UUID_TEXT.fullmatch(session_id):
        return _remember(session_id.lower())
    raise LayerSchemaValidationError(f"session_id must be a UUID, got {session_id!r}")


def client_session_id(session_id: Any) -> str:
    """A session ID chosen by the caller: it must be a UUID version 5."""
    try:
        parsed = session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.version != 5:
        raise LayerSchemaValidationError(
            f"session_id must be a UUID version 5 (the API accepts no other client IDs), "
            f"got {session_id!r}"
        )
    return _remember(str(parsed))


# The RFC 4122 variant digit (binary 10xx) for each hex digit of the hash.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}

#: Session IDs a factory holds minted ahead of need; a sender tops them up when
#: fewer than half are left.
MINTED_AHEAD = 256


class SessionIdFactory:
    """Mints UUID version 5 session IDs: SHA-1 of the application's namespace and a random name.

    Minting one costs about 1 µs (``uuid.uuid5`` 8 µs), too much for
    ``create_session``'s hot path: the IDs are minted ahead of need, on a
    sender thread between requests (``top_up``), and the call takes one from
    the pool. It mints one itself only when the pool is empty (a burst of new
    sessions, or a forked child, whose pool starts empty: see ``_entropy.Pool``).
    """

    def __init__(self, application_id: str) -> None:
        namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"layer-application:{application_id}")
        self._hasher = hashlib.sha1(namespace.bytes, usedforsecurity=False)
        self._minted: Pool[str] = Pool()

    def __call__(self) -> str:
        if _entropy.drawn_here[0]:
            try:
                return self._minted.pop()
            except IndexError:
                pass
        else:
            _entropy.forget_parent()
        return self._mint()

    def top_up(self) -> None:
        """Mint IDs ahead of need, when fewer than half of ``MINTED_AHEAD`` are left."""
        minted = self._minted
        if len(minted) < MINTED_AHEAD // 2:
            if not _entropy.drawn_here[0]:
                _entropy.forget_parent()
            minted.extend([self._mint() for _ in range(MINTED_AHEAD - len(minted))])

    def _mint(self) -> str:
        # The operating system's randomness (see ``_entropy``), never the global
        # ``random`` module: host applications seed that one.
        hasher = self._hasher.copy()
        hasher.update(random_16())
        h = hasher.digest().hex()
        # The first 128 bits, with the version digit set to 5 and the RFC 4122 variant.
        return _remember(f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}")


def action_body(
    kind: Any,
    start_time: datetime | None,
    end_time: datetime | None,
    attributes: Mapping[str, Any] | None,
    data: Any,
    error: Any,
    scanners: Iterable[Any] | None,
) -> bytes:
    """Validate an action's fields and encode it; missing times are now.

    This runs on every ``append_action``: the common case (a valid kind, a dict
    of attributes, a dict or no data, no error, no scanners, and no times or
    both in UTC already, as the decorators give them) is told apart with a few
    identity tests and encoded at once; the rest goes through the checks of
    each field.
    """
    if (
        error is None
        and scanners is None
        and attributes.__class__ is dict
        and (data is None or data.__class__ is dict)
        and kind.__class__ in _KIND_TYPES
        and kind in _ACTION_KINDS
        and (
            (start_time is None and end_time is None)
            or (
                start_time.__class__ is datetime
                and start_time.tzinfo is _UTC
                and end_time.__class__ is datetime
                and end_time.tzinfo is _UTC
            )
        )
    ):
        if start_time is None:
            start_time = end_time = _now(_UTC)
        # A str kind is encoded as it is: it is one of the values, as the member would be.
        action = SessionActionRequest(kind, start_time, end_time, attributes, data)  # type: ignore[arg-type]
    else:
        action = _checked_action(kind, start_time, end_time, attributes, data, error, scanners)
    try:
        return _encode(action)
    except _NOT_ENCODABLE as exc:
        raise _not_encodable("action", exc) from None


def _checked_action(
    kind: Any,
    start_time: datetime | None,
    end_time: datetime | None,
    attributes: Mapping[str, Any] | None,
    data: Any,
    error: Any,
    scanners: Iterable[Any] | None,
) -> SessionActionRequest:
    """An action's fields checked and converted one by one; missing times are now."""
    if start_time is None or end_time is None:
        now = _now(_UTC)
        start_time = now if start_time is None else utc(start_time, "start_time")
        end_time = now if end_time is None else utc(end_time, "end_time")
    else:
        start_time = utc(start_time, "start_time")
        end_time = utc(end_time, "end_time")
    return SessionActionRequest(
        action_kind(kind),
        start_time,  # type: ignore[arg-type]
        end_time,  # type: ignore[arg-type]
        action_attributes(attributes),
        action_data(data),
        action_error(error),
        action_scanners(scanners),
    )
