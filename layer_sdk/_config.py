"""Settings of a client: every tunable, its default, and its environment variable.

``Config.resolve`` turns the arguments of ``init()`` into a validated, frozen
``Config``: an explicit argument wins over the environment, and an invalid
value raises at once with the option's name instead of being replaced by a
default.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from ._exceptions import LayerMissingRequiredConfigurationError
from ._redact import mask_url, watch
from .instrumentation import PROVIDERS  # the registry only: it imports no provider

if TYPE_CHECKING:
    import requests


#: HTTP timeout (connect and read), seconds. Env: LAYER_TIMEOUT or LAYER_HTTP_TIMEOUT.
DEFAULT_HTTP_TIMEOUT = 10.0
#: Events held in memory at most (waiting, in flight or waiting for a retry).
#: Large enough that a burst of 20,000 typical actions is never dropped.
DEFAULT_MAX_QUEUE_SIZE = 50_000
#: Encoded bytes held in memory at most, so that large prompts cannot exhaust memory.
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
#: One encoded event larger than this is cut or refused at the call site (``oversize``).
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
#: What becomes of an action larger than ``max_event_bytes``: ``"truncate"`` cuts its
#: content (the largest strings first, each keeping its head and tail) until it fits;
#: ``"refuse"`` drops it as ``too_large`` and raises at the call (see ``_oversize``).
Oversize = Literal["truncate", "refuse"]
DEFAULT_OVERSIZE: Oversize = "truncate"
OVERSIZE_CHOICES: tuple[Oversize, ...] = ("truncate", "refuse")
#: The worker starts sending once this many events are waiting...
DEFAULT_MAX_BATCH_SIZE = 100
#: ...or once the oldest waiting event is this old, seconds.
DEFAULT_FLUSH_INTERVAL = 0.5
#: How long the exit drain (and ``shutdown()`` without a timeout) may take, seconds.
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
#: How long ``flush()`` without a timeout may block, seconds.
DEFAULT_FLUSH_TIMEOUT = 30.0
#: Retries of a failed synchronous request after the first attempt (the original SDK's 3).
DEFAULT_MAX_RETRIES = 3
#: How long a buffered request is retried, seconds from its first attempt: an
#: API deploy or restart must lose nothing (the OpenTelemetry Collector's
#: ``retry_on_failure`` default is 5 minutes; the queue bounds still apply).
DEFAULT_MAX_RETRY_TIME = 600.0
#: A request that merges a session with its actions stays under this many bytes
#: (nginx's default body limit, and the most common proxy limit).
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
#: Actions of one session written on a connection before their answers are read
#: (HTTP/1.1 pipelining), in append order; 1 sends them one round trip at a time.
DEFAULT_MAX_PIPELINED_REQUESTS = 1024
#: Requests in flight at once; sender threads are started only as the load needs them.
DEFAULT_MAX_CONCURRENT_REQUESTS = 32
#: How long an instrumented provider call waits for a fresh firewall decision before
#: its prompt leaves the process, seconds (one attempt, no retry); past it the call
#: goes on (fail open) or is refused (``firewall_fail_closed``).
DEFAULT_FIREWALL_CHECK_TIMEOUT = 0.5
#: Sessions whose firewall decision is kept at most; the least recently used go first.
DEFAULT_FIREWALL_CACHE_SIZE = 10_000
#: How often the decisions of active sessions are looked up again, seconds.
DEFAULT_FIREWALL_REFRESH_INTERVAL = 1.0
#: The shortest pause between two firewall refresh rounds, seconds: shorter, the
#: refresh thread would spin, looking up the same sessions again and again.
MIN_FIREWALL_REFRESH_INTERVAL = 0.01
#: The most requests in flight at once: each is a sender thread with a connection of
#: its own, and more than this is more than one API endpoint answers faster.
MAX_CONCURRENT_REQUESTS = 256
#: The most retries of a synchronous call: it may take ``max_retries + 1`` times
#: ``http_timeout``, and its backoff doubles with each retry.
MAX_RETRIES = 100
#: The durable spool (off unless ``spool_dir`` or LAYER_SPOOL_DIR is set, see ``_export/_spool``):
#: how each write is made durable. ``"normal"``: SQLite's WAL with ``synchronous=NORMAL``,
#: which survives the process's crash (``kill -9``, an OOM kill); ``"full"``: an fsync per
#: written batch, which survives a power loss or a kernel crash too.
SpoolSync = Literal["normal", "full"]
DEFAULT_SPOOL_SYNC: SpoolSync = "normal"
SPOOL_SYNC_CHOICES: tuple[SpoolSync, ...] = ("normal", "full")
#: Bytes of events the spool directory holds at most; past it the oldest sessions go first.
DEFAULT_SPOOL_MAX_BYTES = 1024 * 1024 * 1024
#: Seconds an event may wait in the spool; older ones are given up on (``expired``).
DEFAULT_SPOOL_MAX_AGE = 7 * 24 * 3600.0
#: The largest number of seconds any option takes: a week, beyond any useful wait or
#: retry budget, and within every OS timer the SDK's waits reach even at a small
#: multiple of it (a token refresh waits ``2 * http_timeout + 1``): ``poll()``
#: takes at most 2**31 - 1 ms (24.8 days), ``threading.TIMEOUT_MAX`` is 49.7 days
#: on Windows. Past them, a wait ends in an OverflowError deep in a call.
MAX_SECONDS = 7 * 24 * 3600.0


class Authenticator(Protocol):
    """What ``auth_provider`` is: an ``AuthProvider`` (see ``_auth``), as the transport uses it."""

    def get_headers(self) -> dict[str, str]:
        """Headers for the next attempt of a request."""

    def invalidate(self) -> bool:
        """The API answered 401; True when a retry with new headers may succeed."""

    def known_secrets(self) -> Iterable[str]:
        """Secrets it holds now, masked in whatever a server echoes back."""


DropCallback = Callable[[str, int], None]
"""``on_drop(reason, events)``: told of every event dropped or given up on."""


def _from_environment(env: Mapping[str, str], variables: tuple[str, ...], kind: str) -> Any:
    """The first of ``variables`` that is set, or None: read as seconds for a ``float``
    option, as on or off for a ``bool`` one, else as the text it is."""
    for variable in variables:
        raw = env.get(variable)
        if raw is None or raw.strip() == "":
            continue
        if kind == "float":
            return env_float(env, variable)
        if kind == "bool":
            return env_flag(env, variable)
        return raw
    return None


def _text(option: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{option} must be a string, got {type(value).__name__}")
    return value


def _having(option: str, value: Any, method: str) -> Any:
    if not callable(getattr(value, method, None)):
        kind = {"get_headers": "an AuthProvider", "request": "a requests.Session"}[method]
        raise TypeError(f"{option} must be {kind} (it has no {method}())")
    return value


def _callable(option: str, value: Any) -> Any:
    if not callable(value):
        raise TypeError(f"{option} must be callable as {option}(reason, events)")
    return value


def _base_url(value: Any, option: str = "base_url") -> str:
    """The URL, checked: its path prefixes every request line, so nothing else may ride in it.

    A ``user:password@`` is accepted (and never sent: neither the request line
    nor the ``Host`` header carries it); a query, a fragment, whitespace,
    control characters or non-ASCII characters are refused.
    """
    if not isinstance(value, str):
        raise ValueError(f"{option} must be a string, got {type(value).__name__}")
    url = value.strip()
    shown = mask_url(url)
    for char in url:
        if char.isspace() or not char.isprintable():
            raise ValueError(
                f"{option} must not contain whitespace or control characters, "
                f"got {char!r} in {shown!r}"
            )
        if not char.isascii():
            raise ValueError(
                f"{option} must be ASCII (percent-encode the path, write an international "
                f"host name in its xn-- form), got {char!r} in {shown!r}"
            )
    if "?" in url or "#" in url:
        raise ValueError(
            f"{option} must not have a query (?...) or a fragment (#...), got {shown!r}: "
            "the SDK appends its paths (/v1/sessions) to it"
        )
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (parsing it checks it)
    except ValueError:
        raise ValueError(f"{option} has an invalid port: {shown!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{option} must be an http:// or https:// URL with a host, got {shown!r}")
    return url.rstrip("/")


def env_float(env: Mapping[str, str], variable: str) -> float | None:
    """The variable as a number of seconds, None when unset; raises naming it when invalid."""
    raw = env.get(variable)
    if raw is None or raw.strip() == "":
        return None
    try:
        return _positive(variable, float(raw))
    except ValueError:
        raise ValueError(
            f"{variable} must be a positive number of seconds (at most {MAX_SECONDS:g}), "
            f"got {raw!r}"
        ) from None


#: How an on/off variable may be spelled (in any case): anything else is refused.
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})


def env_flag(env: Mapping[str, str], variable: str) -> bool | None:
    """The variable as on or off, None when unset; raises naming it when it is neither."""
    raw = env.get(variable)
    if raw is None or raw.strip() == "":
        return None
    word = raw.strip().lower()
    if word in _ON or word in _OFF:
        return word in _ON
    raise ValueError(f"{variable} must be true or false (or 1/0, yes/no, on/off), got {raw!r}")


def _positive_or_zero(option: str, value: Any) -> float:
    return _positive(option, value, allow_zero=True)


def _positive(option: str, value: Any, *, allow_zero: bool = False, least: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{option} must be a number of seconds, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{option} must be a positive number of seconds, got {value!r}")
    if value > MAX_SECONDS:
        raise ValueError(f"{option} must be at most {MAX_SECONDS:g} seconds, got {value!r}")
    if value < least:
        raise ValueError(f"{option} must be at least {least:g} seconds, got {value!r}")
    return float(value)


def _count(option: str, value: Any, *, allow_zero: bool = False, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{option} must be a positive integer, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{option} must be at most {most:,}, got {value!r}")
    return value


def _flag(option: str, value: Any) -> bool:
    # A string is refused: "no" or "false" would otherwise be taken as True.
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise ValueError(f"{option} must be True or False, got {value!r}")


def provider_names(option: str, value: Iterable[str] | None) -> frozenset[str]:
    """The instrumented providers ``value`` names (one name, or several), as
    ``instrumentation.PROVIDERS`` spells them; raises naming ``option`` and the providers
    for anything else (a typo would otherwise leave the provider instrumented)."""
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    names = list(value) if isinstance(value, Iterable) else [value]
    known = ", ".join(repr(name) for name in sorted(PROVIDERS))
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"{option} must be a list of provider names ({known}), got {value!r}")
    found = frozenset(name.strip().lower().replace("-", "_") for name in names)
    unknown = sorted(found - set(PROVIDERS))
    if unknown:
        raise ValueError(
            f"{option} names no instrumented provider: {', '.join(map(repr, unknown))}; "
            f"the providers are {known}"
        )
    return found


def _choice(option: str, value: Any) -> Any:
    allowed: tuple[str, ...] = {"oversize": OVERSIZE_CHOICES, "spool_sync": SPOOL_SYNC_CHOICES}[
        option
    ]
    if not isinstance(value, str) or value not in allowed:
        choices = " or ".join(repr(choice) for choice in allowed)
        raise ValueError(f"{option} must be {choices}, got {value!r}")
    return value


def _directory(option: str, value: Any) -> str:
    """A directory's path (str or os.PathLike), made absolute: the process may change its
    working directory later. Whether it can be used is found out when it is (never raised)."""
    try:
        path: str | bytes = os.fspath(value)
    except TypeError:
        raise ValueError(f"{option} must be a path, got {type(value).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path.strip():
        raise ValueError(f"{option} must not be empty")
    return os.path.abspath(os.path.expanduser(path))


def _option(
    default: Any,
    check: Callable[[str, Any], Any] | None = None,
    *,
    env: tuple[str, ...] = (),
    required: bool = False,
    repr: bool = True,
) -> Any:
    """A field of ``Config``: its default, its check, and the variables it falls back to."""
    metadata = {"check": check, "env": env, "required": required}
    return dataclasses.field(default=default, repr=repr, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Config:
    """The resolved settings of one client: the one list of ``init()``'s options.

    Each field is an argument of ``Client.init`` (``tests/test_config.py``
    checks that they agree), with its default, the check that validates it
    and, for some, the environment variables used when it is left out.
    ``resolve`` is derived from the fields: adding an option is a field here
    and a parameter of ``init``.
    """

    # Off: init() needs nothing else, starts nothing, and every call returns at once.
    enabled: bool = _option(True, _flag, env=("LAYER_ENABLED",))
    # One line per request and answer on stderr (what it prints comes with the exporter's logs).
    debug: bool = _option(False, _flag, env=("LAYER_DEBUG",))
    # Required unless enabled=False (then None when not given).
    base_url: str = _option(None, lambda _, v: _base_url(v), env=("LAYER_BASE_URL",), required=True)
    # One of the two is required (checked in resolve): a name is resolved to an ID by init().
    application_id: str | None = _option(None, lambda _, v: str(v), env=("LAYER_APPLICATION_ID",))
    application_name: str | None = _option(
        None, lambda o, v: _text(o, v).strip(), env=("LAYER_APPLICATION_NAME",)
    )
    environment: str | None = _option(
        None, lambda o, v: _text(o, v).lower(), env=("LAYER_ENVIRONMENT",)
    )
    auth_provider: Authenticator | None = _option(None, lambda o, v: _having(o, v, "get_headers"))
    http_session: requests.Session | None = _option(
        None, lambda o, v: _having(o, v, "request"), repr=False
    )
    http_timeout: float = _option(
        DEFAULT_HTTP_TIMEOUT, _positive, env=("LAYER_TIMEOUT", "LAYER_HTTP_TIMEOUT")
    )
    # Else every session would carry a non-string attribute, refused by the API.
    platform: str | None = _option(None, lambda o, v: _text(o, v))
    disable_instrumentations: frozenset[str] = _option(frozenset(), provider_names)
    sync: bool = _option(False, _flag)
    max_queue_size: int = _option(DEFAULT_MAX_QUEUE_SIZE, _count)
    max_queue_bytes: int = _option(DEFAULT_MAX_QUEUE_BYTES, _count)
    max_event_bytes: int = _option(DEFAULT_MAX_EVENT_BYTES, _count)
    oversize: Oversize = _option(DEFAULT_OVERSIZE, _choice)
    max_batch_size: int = _option(DEFAULT_MAX_BATCH_SIZE, _count)
    flush_interval: float = _option(DEFAULT_FLUSH_INTERVAL, _positive)
    shutdown_timeout: float = _option(DEFAULT_SHUTDOWN_TIMEOUT, _positive_or_zero)
    max_retries: int = _option(
        DEFAULT_MAX_RETRIES, lambda o, v: _count(o, v, allow_zero=True, most=MAX_RETRIES)
    )
    max_retry_time: float = _option(DEFAULT_MAX_RETRY_TIME, _positive_or_zero)
    max_request_bytes: int = _option(DEFAULT_MAX_REQUEST_BYTES, _count)
    max_pipelined_requests: int = _option(DEFAULT_MAX_PIPELINED_REQUESTS, _count)
    max_concurrent_requests: int = _option(
        DEFAULT_MAX_CONCURRENT_REQUESTS, lambda o, v: _count(o, v, most=MAX_CONCURRENT_REQUESTS)
    )
    on_drop: DropCallback | None = _option(None, lambda o, v: _callable(o, v), repr=False)
    allow_insecure_http: bool = _option(False, _flag)
    firewall_base_url: str | None = _option(
        None, lambda o, v: _base_url(v, o), env=("LAYER_FIREWALL_BASE_URL",)
    )
    enable_firewall_instrumentation: bool = _option(False, _flag)
    firewall_fail_closed: bool = _option(False, _flag)
    firewall_check_timeout: float = _option(DEFAULT_FIREWALL_CHECK_TIMEOUT, _positive)
    firewall_cache_size: int = _option(DEFAULT_FIREWALL_CACHE_SIZE, _count)
    firewall_refresh_interval: float = _option(
        DEFAULT_FIREWALL_REFRESH_INTERVAL,
        lambda o, v: _positive(o, v, least=MIN_FIREWALL_REFRESH_INTERVAL),
    )
    # Each firewall check as a guardrail span of the application's tracer provider.
    firewall_trace_spans: bool = _option(False, _flag)
    # The durable spool: off (None) unless given (see docs/spool.md).
    spool_dir: str | None = _option(None, _directory, env=("LAYER_SPOOL_DIR",))
    spool_sync: SpoolSync = _option(DEFAULT_SPOOL_SYNC, _choice)
    spool_max_bytes: int = _option(DEFAULT_SPOOL_MAX_BYTES, _count)
    spool_max_age: float = _option(DEFAULT_SPOOL_MAX_AGE, _positive)

    def __repr__(self) -> str:
        # The generated repr, but with a user:password@ in base_url masked.
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["base_url"] = self.base_url and mask_url(self.base_url)
        if self.firewall_base_url is not None:
            values["firewall_base_url"] = mask_url(self.firewall_base_url)
        shown = (f"{f.name}={values[f.name]!r}" for f in dataclasses.fields(self) if f.repr)
        return f"Config({', '.join(shown)})"

    @classmethod
    def resolve(cls, *, environ: Mapping[str, str] | None = None, **options: Any) -> Config:
        """Validate the arguments of ``init()``, filling gaps from the environment.

        An option left out (or None) takes its first environment variable
        that is set, else its default; a required one that has neither raises
        ``LayerMissingRequiredConfigurationError`` naming it and its variable,
        unless ``enabled`` is False (nothing is required then, but what is
        given is checked all the same). An invalid value raises ``ValueError``
        (``TypeError`` for an object of the wrong kind) naming the option.
        """
        env = os.environ if environ is None else environ
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = set(options) - set(fields)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        missing: list[str] = []  # required options neither given nor set (fine when disabled)
        for name, field in fields.items():
            value = options.get(name)
            variables: tuple[str, ...] = field.metadata["env"]
            if value is None or value == "":
                value = _from_environment(env, variables, str(field.type))
            if value is None:
                if field.metadata["required"]:
                    missing.append(
                        f"{name} is required: pass {name}= to init() or set {variables[0]}"
                    )
                value = field.default
            check = field.metadata["check"]
            values[name] = value if value is None or check is None else check(name, value)
        if values["enabled"]:
            cls._require(values, missing)
        if values["max_event_bytes"] > values["max_queue_bytes"]:
            raise ValueError("max_event_bytes must not exceed max_queue_bytes")
        auth = values["auth_provider"]
        if auth is not None:
            if not values["allow_insecure_http"] and values["enabled"]:
                refuse_cleartext(values["base_url"], "base_url", "the access token", "init()")
                if values["firewall_base_url"] is not None:
                    firewall = values["firewall_base_url"]
                    refuse_cleartext(firewall, "firewall_base_url", "the access token", "init()")
            if callable(getattr(auth, "known_secrets", None)):
                watch(auth)  # its secrets are masked in what servers answer
        return cls(**values)

    @staticmethod
    def _require(values: dict[str, Any], missing: list[str]) -> None:
        """Raise for the first required setting that is missing."""
        if missing:
            raise LayerMissingRequiredConfigurationError(missing[0])
        if values["application_id"] is None and not values["application_name"]:
            raise LayerMissingRequiredConfigurationError(
                "application_id or application_name is required: pass application_id= or "
                "application_name= to init(), or set LAYER_APPLICATION_ID or LAYER_APPLICATION_NAME"
            )
        if values["enable_firewall_instrumentation"] and values["firewall_base_url"] is None:
            raise LayerMissingRequiredConfigurationError(
                "firewall_base_url is required with enable_firewall_instrumentation=True: "
                "pass firewall_base_url= to init() or set LAYER_FIREWALL_BASE_URL"
            )


def cleartext_host(url: str) -> str | None:
    """The host that ``url`` reaches over plain http beyond this machine; None otherwise.

    Loopback (``localhost``, ``127.0.0.0/8``, ``::1``) stays on this machine,
    so nobody on the network can read what is sent there.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme.lower() != "http" or _is_loopback(host):
        return None
    return host


def refuse_cleartext(url: str, option: str, what: str, where: str) -> None:
    """Raise unless ``url`` keeps ``what`` off the network in the clear (https, or loopback)."""
    host = cleartext_host(url)
    if host is not None:
        raise LayerMissingRequiredConfigurationError(
            f"{option} {mask_url(url)} is plain http to {host}: {what} would travel unencrypted "
            f"where anyone on the network can read it. Use https, or pass "
            f"allow_insecure_http=True to {where} to send it anyway"
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
