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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._exceptions import LayerMissingRequiredConfigurationError
from ._redact import mask_url, watch

if TYPE_CHECKING:
    import requests

    from ._auth import AuthProvider

#: HTTP timeout (connect and read), seconds. Env: LAYER_TIMEOUT or LAYER_HTTP_TIMEOUT.
DEFAULT_HTTP_TIMEOUT = 10.0
#: Events held in memory at most (waiting, in flight or waiting for a retry).
#: Large enough that a burst of 20,000 typical actions is never dropped.
DEFAULT_MAX_QUEUE_SIZE = 50_000
#: Encoded bytes held in memory at most, so that large prompts cannot exhaust memory.
DEFAULT_MAX_QUEUE_BYTES = 64 * 1024 * 1024
#: One encoded event larger than this is refused at the call site.
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
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

DropCallback = Callable[[str, int], None]
"""``on_drop(reason, events)``: told of every event dropped or given up on."""


@dataclasses.dataclass(frozen=True)
class Config:
    """The resolved settings of one client."""

    base_url: str
    application_id: str
    environment: str | None = None
    auth_provider: AuthProvider | None = None
    http_session: requests.Session | None = dataclasses.field(default=None, repr=False)
    http_timeout: float = DEFAULT_HTTP_TIMEOUT
    platform: str | None = None
    disabled_instrumentations: frozenset[str] = frozenset()
    sync: bool = False
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    max_retry_time: float = DEFAULT_MAX_RETRY_TIME
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pipelined_requests: int = DEFAULT_MAX_PIPELINED_REQUESTS
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    on_drop: DropCallback | None = dataclasses.field(default=None, repr=False)
    allow_insecure_http: bool = False

    def __repr__(self) -> str:
        # The generated repr, but with a user:password@ in base_url masked.
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        values["base_url"] = mask_url(self.base_url)
        shown = (f"{f.name}={values[f.name]!r}" for f in dataclasses.fields(self) if f.repr)
        return f"Config({', '.join(shown)})"

    @classmethod
    def resolve(
        cls,
        *,
        base_url: str | None = None,
        application_id: Any = None,
        environment: str | None = None,
        auth_provider: AuthProvider | None = None,
        http_session: requests.Session | None = None,
        http_timeout: float | None = None,
        platform: str | None = None,
        disable_instrumentations: Iterable[str] | None = None,
        sync: bool = False,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_time: float = DEFAULT_MAX_RETRY_TIME,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_pipelined_requests: int = DEFAULT_MAX_PIPELINED_REQUESTS,
        max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS,
        on_drop: DropCallback | None = None,
        allow_insecure_http: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> Config:
        """Validate the arguments of ``init()``, filling gaps from the environment."""
        env = os.environ if environ is None else environ
        base_url = _required(base_url, "base_url", "LAYER_BASE_URL", env)
        application_id = _required(application_id, "application_id", "LAYER_APPLICATION_ID", env)
        environment = environment if environment is not None else env.get("LAYER_ENVIRONMENT")
        if environment is not None and not isinstance(environment, str):
            raise ValueError(f"environment must be a string, got {type(environment).__name__}")
        if http_timeout is None:
            http_timeout = _env_seconds(env, "LAYER_TIMEOUT", "LAYER_HTTP_TIMEOUT")
        if auth_provider is not None and not callable(getattr(auth_provider, "get_headers", None)):
            raise TypeError("auth_provider must be an AuthProvider (it has no get_headers())")
        if http_session is not None and not callable(getattr(http_session, "request", None)):
            raise TypeError("http_session must be a requests.Session (it has no request())")
        if on_drop is not None and not callable(on_drop):
            raise TypeError("on_drop must be callable as on_drop(reason, events)")
        if platform is not None and not isinstance(platform, str):
            # Else every session would carry a non-string attribute, refused by the API.
            raise ValueError(f"platform must be a string, got {type(platform).__name__}")
        if max_event_bytes > max_queue_bytes:
            raise ValueError("max_event_bytes must not exceed max_queue_bytes")
        base_url = _base_url(base_url)
        if auth_provider is not None:
            if not allow_insecure_http:
                refuse_cleartext(base_url, "base_url", "the access token", "init()")
            if callable(getattr(auth_provider, "known_secrets", None)):
                watch(auth_provider)  # its secrets are masked in what servers answer
        return cls(
            base_url=base_url,
            application_id=str(application_id),
            environment=environment.lower() if environment else None,
            auth_provider=auth_provider,
            http_session=http_session,
            http_timeout=_positive("http_timeout", http_timeout),
            platform=platform,
            disabled_instrumentations=_names("disable_instrumentations", disable_instrumentations),
            sync=bool(sync),
            max_queue_size=_count("max_queue_size", max_queue_size),
            max_queue_bytes=_count("max_queue_bytes", max_queue_bytes),
            max_event_bytes=_count("max_event_bytes", max_event_bytes),
            max_batch_size=_count("max_batch_size", max_batch_size),
            flush_interval=_positive("flush_interval", flush_interval),
            shutdown_timeout=_positive("shutdown_timeout", shutdown_timeout, allow_zero=True),
            max_retries=_count("max_retries", max_retries, allow_zero=True),
            max_retry_time=_positive("max_retry_time", max_retry_time, allow_zero=True),
            max_request_bytes=_count("max_request_bytes", max_request_bytes),
            max_pipelined_requests=_count("max_pipelined_requests", max_pipelined_requests),
            max_concurrent_requests=_count("max_concurrent_requests", max_concurrent_requests),
            on_drop=on_drop,
            allow_insecure_http=bool(allow_insecure_http),
        )


def _required(value: Any, option: str, variable: str, env: Mapping[str, str]) -> Any:
    if value is None or value == "":
        value = env.get(variable) or None
    if value is None:
        raise LayerMissingRequiredConfigurationError(
            f"{option} is required: pass {option}= to init() or set {variable}"
        )
    return value


def _base_url(value: Any) -> str:
    """The URL, checked: its path prefixes every request line, so nothing else may ride in it.

    A ``user:password@`` is accepted (and never sent: neither the request line
    nor the ``Host`` header carries it); a query, a fragment, whitespace,
    control characters or non-ASCII characters are refused.
    """
    if not isinstance(value, str):
        raise ValueError(f"base_url must be a string, got {type(value).__name__}")
    url = value.strip()
    shown = mask_url(url)
    for char in url:
        if char.isspace() or not char.isprintable():
            raise ValueError(
                f"base_url must not contain whitespace or control characters, "
                f"got {char!r} in {shown!r}"
            )
        if not char.isascii():
            raise ValueError(
                f"base_url must be ASCII (percent-encode the path, write an international "
                f"host name in its xn-- form), got {char!r} in {shown!r}"
            )
    if "?" in url or "#" in url:
        raise ValueError(
            f"base_url must not have a query (?...) or a fragment (#...), got {shown!r}: "
            "the SDK appends its paths (/v1/sessions) to it"
        )
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (parsing it checks it)
    except ValueError:
        raise ValueError(f"base_url has an invalid port: {shown!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an http:// or https:// URL with a host, got {shown!r}")
    return url.rstrip("/")


def env_float(env: Mapping[str, str], variable: str) -> float | None:
    """The variable as a number of seconds, None when unset; raises naming it when invalid."""
    raw = env.get(variable)
    if raw is None or raw.strip() == "":
        return None
    try:
        return _positive(variable, float(raw))
    except ValueError:
        raise ValueError(f"{variable} must be a positive number of seconds, got {raw!r}") from None


def _env_seconds(env: Mapping[str, str], *variables: str) -> float:
    for variable in variables:
        seconds = env_float(env, variable)
        if seconds is not None:
            return seconds
    return DEFAULT_HTTP_TIMEOUT


def _positive(option: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{option} must be a number of seconds, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{option} must be a positive number of seconds, got {value!r}")
    return float(value)


def _count(option: str, value: Any, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{option} must be an integer, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{option} must be a positive integer, got {value!r}")
    return value


def _names(option: str, value: Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    names = list(value)
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"{option} must be a list of provider names such as ['openai']")
    return frozenset(name.lower() for name in names)


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
