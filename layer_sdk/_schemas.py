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

from ._entropy import random_16
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


_encoder = msgspec.json.Encoder(enc_hook=_refuse)
_ACTION_KINDS = {kind.value: kind for kind in SessionActionKind}
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def encode(value: msgspec.Struct, what: str) -> bytes:
    """JSON bytes of ``value``; a non-serializable field is the caller's error."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise LayerRequestPreparationError(f"{what} cannot be encoded as JSON: {exc}") from None
    except RecursionError:
        # Caught here rather than found by walking the data first: the common
        # case pays nothing for it.
        raise LayerRequestPreparationError(
            f"{what} cannot be encoded as JSON: its data contains itself or is nested too deeply"
        ) from None


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
    if value.__class__ is datetime and value.tzinfo is timezone.utc:
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
_known_ids: dict[str, None] = {}
_MAX_KNOWN_IDS = 16_384


def _remember(session_id: str) -> str:
    if len(_known_ids) >= _MAX_KNOWN_IDS:
        _known_ids.clear()
    _known_ids[session_id] = None
    return session_id


def session_id_text(session_id: Any) -> str:
    """A session ID given to append_action, as the canonical string."""
    if type(session_id) is str and session_id in _known_ids:
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


class SessionIdFactory:
    """Mints UUID version 5 session IDs: SHA-1 of the application's namespace and a random name.

    ``uuid.uuid5`` costs ~8 µs; hashing with a pre-fed SHA-1 state costs a
    fraction of that, and this sits on ``create_session``'s hot path.
    """

    def __init__(self, application_id: str) -> None:
        namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"layer-application:{application_id}")
        self._hasher = hashlib.sha1(namespace.bytes, usedforsecurity=False)

    def __call__(self) -> str:
        # The operating system's randomness (see ``_entropy``), never the global
        # ``random`` module: host applications seed that one.
        hasher = self._hasher.copy()
        hasher.update(random_16())
        h = hasher.digest().hex()
        # The first 128 bits, with the version digit set to 5 and the RFC 4122 variant.
        session_id = f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"
        _known_ids[session_id] = None
        if len(_known_ids) > _MAX_KNOWN_IDS:
            _known_ids.clear()
        return session_id


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

    The common case (a SessionActionKind, a dict of attributes, no error, no
    scanners) skips the helpers: this runs on every append_action.
    """
    if start_time is None or end_time is None:
        now = datetime.now(timezone.utc)
        start_time = now if start_time is None else utc(start_time, "start_time")
        end_time = now if end_time is None else utc(end_time, "end_time")
    else:
        start_time = utc(start_time, "start_time")
        end_time = utc(end_time, "end_time")
    action = SessionActionRequest(
        kind if type(kind) is SessionActionKind else action_kind(kind),
        start_time,  # type: ignore[arg-type]
        end_time,  # type: ignore[arg-type]
        attributes if type(attributes) is dict else action_attributes(attributes),
        data if data is None or type(data) is dict else action_data(data),
        None if error is None else action_error(error),
        None if scanners is None else action_scanners(scanners),
    )
    return encode(action, "action")
