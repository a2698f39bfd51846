"""``layer-sdk check``: is this machine set up to report to Layer, and if not, why not?

Resolves the settings with the code ``init()`` runs (``_settings.resolve_settings``:
arguments, then the ``LAYER_*`` variables, ``LAYER_OIDC_*`` included), shows
them with secrets masked, fetches a token when OIDC is configured, initializes
a client with them, sends one probe session with ``sync=True``, asks the
firewall about it when ``firewall_base_url`` is set, and ends with a one-line
verdict: exit code 0 when everything works, 1 with the reason otherwise.

Before each step that waits on the network it says what it is doing, and the
line is flushed at once. Every line goes through ``_redact.scrub`` on its way
out, URLs show ``user:***@`` for a ``user:password@``, and an HTML error page
is summarized by its title: the output may end up in a ticket.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

from .._auth import OIDCClientCredentials
from .._client import Client
from .._config import Config
from .._exceptions import (
    LayerAuthError,
    LayerFirewallHTTPError,
    LayerFirewallRequestError,
    LayerHTTPError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
)
from .._export._trouble import summarize_html
from .._redact import mask_url, scrub
from .._schemas import SESSIONS_PATH
from .._settings import resolve_settings

Out = Callable[[str], None]


def check(options: Mapping[str, Any], out: Out | None = None) -> int:
    """Run the checks with ``init()``'s ``options`` (None: from the environment), printing
    each step through ``out`` (default: stdout, flushed per line); returns the exit code."""
    out = _readable(out or functools.partial(print, flush=True))
    try:
        config = resolve_settings(**options)
    except (LayerMissingRequiredConfigurationError, ValueError, TypeError) as error:
        return _verdict(out, f"the configuration is incomplete or invalid: {error}")
    if not config.enabled:
        return _verdict(
            out,
            "reporting is turned off (enabled=False, or LAYER_ENABLED set to false): "
            "init() would start nothing and send nothing",
        )

    out("Settings (arguments first, then LAYER_* variables, as init() reads them):")
    rows = settings_rows(config)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out(f"  {name:<{width}}  {value}")

    auth = config.auth_provider
    if isinstance(auth, OIDCClientCredentials):
        out(f"Fetching a token from {mask_url(auth.token_url)} ...")
        try:
            started = time.monotonic()
            auth.get_headers()
            out(f"Token: fetched in {_ms(started)}")
        except LayerAuthError as error:
            return _verdict(out, f"the token endpoint refused the client: {error}")
        except LayerRequestError as error:
            return _verdict(out, f"the token endpoint could not be reached: {error}")

    if config.application_id is None:
        out(f"Looking up the application named {config.application_name!r} ...")
    client = Client()
    try:
        # The same options (and the provider that fetched the token), so the same settings.
        client.init(**{**options, "auth_provider": auth, "max_retries": 0})
    except (LayerMissingRequiredConfigurationError, ValueError) as error:
        return _verdict(out, f"the configuration cannot be used: {error}")
    try:
        return _verdict(out, _reach(client, config, out))
    finally:
        client.shutdown(timeout=1)


def settings_rows(config: Config) -> list[tuple[str, str]]:
    """What ``check`` shows of the settings: name and value, secrets masked."""
    firewall = config.firewall_base_url
    return [
        ("base_url", mask_url(config.base_url)),
        ("application_id", config.application_id or f"(by name: {config.application_name!r})"),
        ("environment", config.environment or "(none)"),
        ("http_timeout", f"{config.http_timeout:g} s"),
        ("authentication", _describe_auth(config.auth_provider)),
        ("firewall", "(none)" if firewall is None else mask_url(firewall)),
        ("spool", _describe_spool(config)),
    ]


def _describe_spool(config: Config) -> str:
    if config.spool_dir is None:
        return "(none: undelivered events are kept in memory only)"
    return (
        f"{config.spool_dir} (spool_sync {config.spool_sync}, at most "
        f"{config.spool_max_bytes / 2**20:,.0f} MiB, {config.spool_max_age / 86400:g} days)"
    )


def probe(client: Client, config: Config, out: Out) -> str | None:
    """Send one session with ``sync=True``; None when it was created, else what is wrong."""
    return _probe(client, config, out)[1]


def _probe(client: Client, config: Config, out: Out) -> tuple[str, str | None]:
    """The probe session's ID, and what is wrong (None when it was created)."""
    out(f"Sending a probe session to {mask_url(config.base_url)}{SESSIONS_PATH} ...")
    started = time.monotonic()
    try:
        session_id = client.create_session(attributes={"layer_sdk.check": "true"}, sync=True)
    except LayerHTTPError as error:
        return "", _explain_status(error.status_code, error.message, "API", config.base_url)
    except LayerRequestError as error:
        return "", _explain_network(str(error), "the API", config.base_url, config.http_timeout)
    except LayerAuthError as error:
        return "", f"no credentials: {error}"
    out(f"Probe: session {session_id} created in {_ms(started)}")
    return session_id, None


def _reach(client: Client, config: Config, out: Out) -> str | None:
    session_id, problem = _probe(client, config, out)
    firewall = config.firewall_base_url
    if problem is not None or firewall is None:
        return problem
    out(f"Asking the firewall at {mask_url(firewall)} about the probe session ...")
    started = time.monotonic()
    try:
        answer = client.firewall_session_lookup(session_id)
    except LayerFirewallHTTPError as error:
        return _explain_status(error.status_code, error.message, "firewall", firewall)
    except LayerFirewallRequestError as error:
        return _explain_network(str(error), "the firewall", firewall, config.http_timeout)
    out(f"Firewall: decision {answer.decision.value!r} in {_ms(started)}")
    return None


def _describe_auth(auth: object) -> str:
    if auth is None:
        return "none (no LAYER_OIDC_* variables)"
    if not isinstance(auth, OIDCClientCredentials):
        return type(auth).__name__
    scope = f", scope {auth.scope}" if auth.scope else ""
    return (
        f"OIDC client {auth.client_id!r} at {mask_url(auth.token_url)}{scope}, "
        f"timeout {auth.http_timeout:g} s, secret ********"
    )


def _explain_status(status: int, message: str, what: str, url: str) -> str:
    where = mask_url(url)
    if status in (401, 403):
        return f"the {what} refused the credentials ({status}): {message}"
    if status == 404:
        option = "base_url" if what == "API" else "firewall_base_url"
        return f"{where} has no Layer {what} (404): check {option}"
    return f"the {what} answered {status}: {message}"


def _explain_network(message: str, what: str, url: str, timeout: float) -> str:
    where = mask_url(url)
    if "gaierror" in message or "Name or service not known" in message:
        return f"the host of {where} cannot be resolved (DNS): {message}"
    if "ConnectionRefused" in message:
        return f"nothing accepts connections at {where}: {message}"
    if "SSL" in message or "certificate" in message:
        return f"the TLS handshake with {where} failed: {message}"
    if "Timeout" in message or "timed out" in message:
        return f"no answer within {timeout:g} s from {where}: {message}"
    return f"{what} could not be reached: {message}"


def _readable(out: Out) -> Out:
    return lambda line: out(scrub(summarize_html(line)))


def _verdict(out: Out, problem: str | None) -> int:
    if problem is None:
        out("OK: this machine can report to Layer.")
        return 0
    out(f"FAILED: {problem}")
    return 1


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"
