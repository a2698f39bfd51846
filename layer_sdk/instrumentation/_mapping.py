"""What the per-API mappings share: the output, errors, usage, content parts, parameters.

Each provider's API modules (``_openai/chat.py``, ``_anthropic/messages.py``,
...) turn one API's request and result into action data; the pieces that look
the same in every API and provider are here. Nothing in here raises on an
unexpected shape: a field of the wrong type is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from .._redact import scrub
from ._fields import _as_dict, _fields, _get, _given, _items, _plain, _str


class Output:
    """The answer of a completion (chat, response, message), as the actions need it."""

    __slots__ = ("attributes", "error", "incomplete", "messages", "model", "tool_calls", "usage")

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] | None = None
        self.model: str | None = None
        self.usage: dict[str, int] | None = None
        self.tool_calls: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None
        self.incomplete = False


def _output_of(model: Any, response_id: Any) -> Output:
    """An output with the model and the id of an answer (whole, or as its stream began it)."""
    output = Output()
    output.model = _str(model)
    if isinstance(response_id, str) and response_id:
        output.attributes["response.id"] = response_id
    return output


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _error(exc: BaseException, api_keys: Iterable[str] = ()) -> dict[str, Any]:
    """The ``error`` of an action for an exception (a provider's API error or any other).

    The API takes an integer ``code`` only (a string there gets the whole
    request refused, session and prompt with it): ``code`` is the HTTP status
    when the exception has an error status (an Anthropic stream's ``error``
    event arrives on a 200 response: no code). The exception's class and the
    provider's own fields (OpenAI's ``code`` may be a string, an integer or
    null; Anthropic's error ``type`` is in the body) go to ``details``.

    The provider's text is scrubbed as the Layer API's answers are
    (``_redact``), with ``api_keys`` (the provider client's) and the
    credentials the failed request carried as known secrets: a provider or a
    gateway that refuses an API key may quote it ("Incorrect API key
    provided: sk-..."), and Layer would store it.
    """
    secrets = [*api_keys, *_credentials_sent(exc)]
    details: dict[str, Any] = {"type": type(exc).__name__}
    for name, key in _ERROR_FIELDS:
        value = getattr(exc, name, None)
        if _plain(value):
            details[key] = scrub(value, secrets) if isinstance(value, str) else value
    if "error_type" not in details:  # anthropic: {"type": "error", "error": {"type": ...}}
        kind = _get(_get(getattr(exc, "body", None), "error"), "type")
        if isinstance(kind, str):
            details["error_type"] = scrub(kind, secrets)
    if "request_id" not in details:  # openai before 1.20 keeps it in the response only
        request_id = _header(getattr(exc, "response", None), "x-request-id")
        if request_id is not None:
            details["request_id"] = request_id
    message = scrub(str(exc), secrets) or type(exc).__name__
    error: dict[str, Any] = {"message": message, "details": details}
    status = getattr(exc, "status_code", None)
    if type(status) is int and status >= 400:
        error["code"] = status
    return error


def _masked_error(error: dict[str, Any], api_keys: Iterable[str]) -> dict[str, Any]:
    """An action error read from what the provider answered (``Output.error``: a failed
    response, a stream's ``error`` event), its text scrubbed as ``_error`` scrubs an
    exception's, with ``api_keys`` (the provider client's) as known secrets."""
    secrets = list(api_keys)
    masked = dict(error)
    if isinstance(masked.get("message"), str):
        masked["message"] = scrub(masked["message"], secrets)
    details = masked.get("details")
    if isinstance(details, dict):
        masked["details"] = {
            key: scrub(value, secrets) if isinstance(value, str) else value
            for key, value in details.items()
        }
    return masked


#: The attributes of a provider's client that hold its credentials (openai's and
#: anthropic's ``api_key``, anthropic's ``auth_token``, openai's admin key).
_KEY_ATTRIBUTES = ("api_key", "auth_token", "admin_api_key")


def _api_keys(resource: Any) -> list[str]:
    """The credentials of the client of ``resource`` (a provider's resource object, such as
    ``client.chat.completions``, which keeps its client as ``_client``)."""
    try:
        client = getattr(resource, "_client", None)
        if client is None:
            return []
        found = (getattr(client, name, None) for name in _KEY_ATTRIBUTES)
        return [value for value in found if isinstance(value, str) and value]
    except Exception:  # a property of an odd client that raises
        return []


#: Request headers that carry a provider's API key (OpenAI, Anthropic, Azure OpenAI, a proxy).
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "proxy-authorization")


def _credentials_sent(exc: BaseException) -> list[str]:
    """The credentials the request that failed with ``exc`` carried (its API key), if known.

    openai's and anthropic's errors keep their ``httpx.Request``, whose headers
    hold the key as the client sent it (whatever ``api_key`` or
    ``with_options`` gave): ``Bearer <key>``, or the key alone.
    """
    try:
        request = getattr(exc, "request", None)
        if request is None:
            request = getattr(getattr(exc, "response", None), "request", None)
        headers = getattr(request, "headers", None)
        if headers is None:
            return []
        found: list[str] = []
        for name in _CREDENTIAL_HEADERS:
            value = headers.get(name)
            if isinstance(value, str) and value:
                found.append(value)
                _, _, credentials = value.partition(" ")  # "Bearer <key>": the key too
                if credentials.strip():
                    found.append(credentials.strip())
        return found
    except Exception:  # an odd object (an httpx.Response without its request raises)
        return []


#: (attribute of a provider's exception, its key in the action error's details).
_ERROR_FIELDS = (
    ("code", "code"),
    ("type", "error_type"),
    ("param", "param"),
    ("request_id", "request_id"),
)


def _header(response: Any, name: str) -> str | None:
    headers = getattr(response, "headers", None)
    try:
        value = headers.get(name) if headers is not None else None
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _without_none(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if v is not None}


def _arguments(call: Any) -> Any:
    """The ``arguments`` of a function call, or the ``input`` of a custom tool call."""
    arguments = _get(call, "arguments")
    return _get(call, "input") if arguments is None else arguments


# -- usage ----------------------------------------------------------------------------

_USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
_USAGE_DETAILS = (
    ("prompt_tokens_details", "cached_tokens"),
    ("input_tokens_details", "cached_tokens"),
    ("completion_tokens_details", "reasoning_tokens"),
    ("output_tokens_details", "reasoning_tokens"),
)


def _usage(usage: Any) -> dict[str, int] | None:
    """The token counts of a ``usage`` (each API and provider names them its own way)."""
    if usage is None:
        return None
    fields = _fields(usage)
    result: dict[str, int] = {}
    for name in _USAGE_FIELDS:
        value = fields.get(name)
        if type(value) is int:
            result[name] = value
    for parent, name in _USAGE_DETAILS:
        details = fields.get(parent)
        if details is not None:
            value = _fields(details).get(name)
            if type(value) is int:
                result[name] = value
    return result or None


# -- message content ------------------------------------------------------------------

_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def _content(content: Any) -> tuple[str | None, list[dict[str, Any]]]:
    """A message's content as (its text, its non-text parts)."""
    if isinstance(content, str):
        return _str(content), []
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    for part in _items(content):
        kind = _get(part, "type")
        if kind in _TEXT_PARTS:
            text = _get(part, "text")
            if isinstance(text, str):
                texts.append(text)
        elif kind == "refusal":
            text = _get(part, "refusal")
            if isinstance(text, str):
                texts.append(text)
        else:
            attachments.append(_attachment(part))
    return (_str("\n".join(texts)) if texts else None), attachments


def _attachment(part: Any) -> dict[str, Any]:
    """A non-text content part, flattened: {"type": "image_url", "url": ..., "detail": ...}."""
    result: dict[str, Any] = {}
    for key, value in _as_dict(part).items():
        if not isinstance(key, str):
            continue
        if isinstance(value, str):
            result[key] = _str(value)
        elif _plain(value):
            result[key] = value
        elif isinstance(value, Mapping) or hasattr(value, "__dict__"):
            for inner_key, inner in _as_dict(value).items():
                if isinstance(inner_key, str) and _plain(inner):
                    result.setdefault(inner_key, _str(inner) if isinstance(inner, str) else inner)
    return result


def _attach(
    attachments: list[dict[str, Any]], parts: list[dict[str, Any]], role: Any, index: int
) -> None:
    """Add the non-text ``parts`` of prompt message ``index`` to the prompt's attachments."""
    for part in parts:
        attachments.append({**part, "role": role, "message_index": index})


# -- request parameters ---------------------------------------------------------------


def _parameters(kwargs: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """The request parameters that matter (those in ``names``), as attribute values."""
    attributes: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name not in names or not _given(value):
            continue
        if name in ("tools", "functions"):
            tool_names = [_tool_name(tool) for tool in _items(value)]
            attributes["tools"] = [n for n in tool_names if n]
        elif name in ("response_format", "text_format", "output_format", "text"):
            described = _response_format(value if name != "text" else _get(value, "format"))
            if described:
                attributes["response_format"] = described
        elif name in ("tool_choice", "function_call"):
            if isinstance(value, str):
                attributes["tool_choice"] = value
            else:
                chosen = _get(_get(value, "function"), "name") or _get(value, "name")
                chosen = chosen or _get(value, "type")
                if isinstance(chosen, str):
                    attributes["tool_choice"] = chosen
        elif name == "stream_options":
            include = _get(value, "include_usage")
            if isinstance(include, bool):
                attributes["stream_options.include_usage"] = include
        elif name == "reasoning":
            effort = _get(value, "effort")
            if isinstance(effort, str):
                attributes["reasoning_effort"] = effort
        elif name in ("conversation", "prompt"):
            ref = value if isinstance(value, str) else _get(value, "id")
            if isinstance(ref, str):
                attributes[f"{name}.id"] = ref
        elif _plain(value):
            attributes[name] = value
        elif isinstance(value, (list, tuple)) and all(_plain(v) for v in value):
            attributes[name] = list(value)
    return attributes


def _tool_name(tool: Any) -> str | None:
    name = _get(_get(tool, "function"), "name") or _get(tool, "name") or _get(tool, "type")
    return name if isinstance(name, str) else None


def _response_format(value: Any) -> str | None:
    if isinstance(value, type):  # a pydantic model given to parse()
        return value.__name__
    kind = _get(value, "type")
    if not isinstance(kind, str):
        return None
    name = _get(_get(value, "json_schema"), "name") or _get(value, "name")
    return f"{kind}:{name}" if isinstance(name, str) and kind == "json_schema" else kind
