"""``layer-sdk check``: is this machine set up to report to Layer, and if not, why not?

Resolves the settings exactly as ``init()`` does (arguments, then the
environment), shows them with secrets masked, fetches a token when OIDC is
configured, sends one probe session with ``sync=True``, and ends with a
one-line verdict: exit code 0 when everything works, 1 with the reason
otherwise.

Every line goes through ``_redact.scrub`` on its way out, and URLs show
``user:***@`` for a ``user:password@``: the output may end up in a ticket.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .._auth import OIDCClientCredentials
from .._client import Client
from .._config import Config
from .._exceptions import (
    LayerAuthError,
    LayerHTTPError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
)
from .._redact import mask_url, scrub

_OIDC_VARIABLES = ("LAYER_OIDC_TOKEN_URL", "LAYER_OIDC_CLIENT_ID", "LAYER_OIDC_CLIENT_SECRET")


def check(
    base_url: str | None,
    application_id: str | None,
    environment: str | None,
    http_timeout: float | None,
    out: Callable[[str], None] = print,
    *,
    allow_insecure_http: bool = False,
) -> int:
    """Run the checks, printing each step through ``out``; returns the exit code."""
    out = _scrubbed(out)
    try:
        config = Config.resolve(
            base_url=base_url,
            application_id=application_id,
            environment=environment,
            http_timeout=http_timeout,
        )
    except (LayerMissingRequiredConfigurationError, ValueError) as error:
        return _verdict(out, f"the configuration is incomplete or invalid: {error}")

    auth = None
    if any(os.environ.get(name) for name in _OIDC_VARIABLES):
        try:
            auth = OIDCClientCredentials(allow_insecure_http=allow_insecure_http)
        except LayerMissingRequiredConfigurationError as error:
            return _verdict(out, f"the OIDC settings cannot be used: {error}")

    out("Settings (arguments first, then LAYER_* variables):")
    rows = [
        ("base_url", mask_url(config.base_url)),
        ("application_id", config.application_id or f"(by name: {config.application_name!r})"),
        ("environment", config.environment or "(none)"),
        ("http_timeout", f"{config.http_timeout:g} s"),
        ("authentication", _describe_auth(auth)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out(f"  {name:<{width}}  {value}")

    if auth is not None:
        try:
            started = time.monotonic()
            auth.get_headers()
            out(f"Token: fetched from {mask_url(auth.token_url)} in {_ms(started)}")
        except LayerAuthError as error:
            return _verdict(out, f"the token endpoint refused the client: {error}")
        except LayerRequestError as error:
            return _verdict(out, f"the token endpoint could not be reached: {error}")

    client = Client()
    try:
        client.init(
            base_url=config.base_url,
            application_id=config.application_id,
            environment=config.environment,
            http_timeout=config.http_timeout,
            auth_provider=auth,
            max_retries=0,  # a verdict now, not after a round of backoff
            allow_insecure_http=allow_insecure_http,
        )
    except (LayerMissingRequiredConfigurationError, ValueError) as error:
        return _verdict(out, f"the configuration cannot be used: {error}")
    try:
        started = time.monotonic()
        session_id = client.create_session(attributes={"layer_sdk.check": "true"}, sync=True)
        out(f"Probe: session {session_id} created in {_ms(started)}")
    except LayerHTTPError as error:
        return _verdict(out, _explain_status(error, config.base_url))
    except LayerRequestError as error:
        return _verdict(out, _explain_network(str(error), config))
    except LayerAuthError as error:
        return _verdict(out, f"no credentials: {error}")
    finally:
        client.shutdown(timeout=1)
    return _verdict(out, None)


def _describe_auth(auth: OIDCClientCredentials | None) -> str:
    if auth is None:
        return "none (no LAYER_OIDC_* variables)"
    scope = f", scope {auth.scope}" if auth.scope else ""
    return f"OIDC client {auth.client_id!r} at {mask_url(auth.token_url)}{scope}, secret ********"


def _explain_status(error: LayerHTTPError, base_url: str) -> str:
    base_url = mask_url(base_url)
    status = error.status_code
    if status in (401, 403):
        return f"the API refused the credentials ({status}): {error.message}"
    if status == 404:
        return f"{base_url} has no Layer API (404 on /v1/sessions): check base_url"
    return f"the API answered {status}: {error.message}"


def _explain_network(message: str, config: Config) -> str:
    base_url = mask_url(config.base_url)
    if "gaierror" in message or "Name or service not known" in message:
        return f"the host of {base_url} cannot be resolved (DNS): {message}"
    if "ConnectionRefused" in message:
        return f"nothing accepts connections at {base_url}: {message}"
    if "SSL" in message or "certificate" in message:
        return f"the TLS handshake with {base_url} failed: {message}"
    if "Timeout" in message or "timed out" in message:
        return f"no answer within {config.http_timeout:g} s from {base_url}: {message}"
    return f"the API could not be reached: {message}"


def _scrubbed(out: Callable[[str], None]) -> Callable[[str], None]:
    return lambda line: out(scrub(line))


def _verdict(out: Callable[[str], None], problem: str | None) -> int:
    if problem is None:
        out("OK: this machine can report to Layer.")
        return 0
    out(f"FAILED: {problem}")
    return 1


def _ms(started: float) -> str:
    return f"{(time.monotonic() - started) * 1000:.0f} ms"
