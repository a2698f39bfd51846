"""Authentication: the headers that prove who is calling the Layer API.

``OIDCClientCredentials`` holds one access token per provider object and
hands it to every request, sync path and worker alike:

- fetched with the OAuth 2.0 client-credentials grant, the secret in the form
  body; of the answer only ``access_token`` is required;
- refreshed ahead of its expiry, by one thread at a time: while the refresh
  runs, the others keep sending the old token if it is still valid, or wait
  for the new one (and share its outcome, success or failure);
- dropped when the API answers 401 (``invalidate``), once however many
  requests saw that 401 with the same token;
- fresh locks and connections in a forked child.

The token endpoint's answers sort into two kinds: refusals (most 4xx: a wrong
secret, an unknown client, a bad scope) raise ``LayerAuthError`` with the
provider's ``error``/``error_description``; trouble that may pass (no
connection, timeouts, 408/425/429/5xx) raises ``LayerRequestError``, which the
transport retries like any transient error. Neither message ever carries the
secret, and no log line carries a secret or a token: the provider's words go
through ``_redact.scrub``, which knows this provider's secret and recent
tokens (``known_secrets``) in whatever shape the provider echoes them.

A ``token_url`` in plain http to another machine is refused when the provider
is built (the secret would cross the network readable by anyone), unless
``allow_insecure_http=True``; then a warning is logged once per host.
"""

from __future__ import annotations

import abc
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._config import DEFAULT_HTTP_TIMEOUT, cleartext_host, env_float, refuse_cleartext
from ._tls import describe_tls_failure, requests_verify

if TYPE_CHECKING:
    import requests
from ._exceptions import (
    LayerAuthError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
)
from ._redact import mask_url, scrub, watch

logger = logging.getLogger("layer_sdk")

#: A token is refreshed this long before it expires, at most, seconds...
REFRESH_MARGIN_MAX = 60.0
#: ...and otherwise this fraction of its lifetime before.
REFRESH_MARGIN_FRACTION = 0.2
#: ``expires_in`` counts whole seconds, and providers round their clock down
#: when they stamp ``exp`` (oidc-provider and Keycloak set exp = floor(now) +
#: lifetime): a token may expire up to this much sooner than ``expires_in`` says.
EXPIRES_IN_ROUNDING = 1.0
#: After the token endpoint refused the client, later calls within this many
#: seconds get the same answer without asking again (many sender threads must
#: not hammer a provider that said no).
REFUSAL_HOLD = 1.0
#: When a refresh ahead of expiry fails and the old token is still valid, the
#: next try waits at most this long, seconds.
EARLY_REFRESH_RETRY_MAX = 1.0
#: Token endpoint statuses that mean "try again later" rather than "no".
TRANSIENT_STATUSES = frozenset({408, 425, 429})
#: Tokens remembered after they were replaced, so that an echo of one is still
#: masked (a request may fail after a refresh replaced the token it carried).
RECENT_TOKENS = 4


class AuthProvider(abc.ABC):
    """Supplies the authentication headers of every request to the Layer API."""

    @abc.abstractmethod
    def get_headers(self) -> dict[str, str]:
        """Headers to add to the next request (called once per attempt).

        May raise ``LayerAuthError`` (no credentials can be had: the sync path
        raises it, the worker keeps the events and tries again later) or
        ``LayerRequestError`` (a transient failure, retried like a network error).
        """

    def invalidate(self) -> bool:
        """The API answered 401: forget cached credentials.

        Returns True when new credentials may succeed, and the SDK then retries
        the request once.
        """
        return False

    def known_secrets(self) -> Iterable[str]:
        """The secret values this provider holds now (tokens, keys), none by default.

        Text from the network (an error body that echoes the request) has
        every one of them masked, in whatever encoding it comes back.
        """
        return ()


class _Secret:
    """A string that never shows itself in a repr (debuggers, ``vars()``, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


@dataclass(frozen=True)
class _Token:
    """One access token and when it is due: replaced whole, so readers need no lock."""

    header: str = field(repr=False)
    refresh_at: float  # time.monotonic() from which a new token is fetched
    expires_at: float  # time.monotonic() from which this one is never sent


class OIDCClientCredentials(AuthProvider):
    """OAuth 2.0 client-credentials grant against an OpenID Connect token endpoint.

    The token is cached and refreshed ahead of its expiry by the smaller of
    60 s and a fifth of its lifetime (plus the second by which ``expires_in``
    may be rounded); concurrent callers share a single refresh. A token
    without ``expires_in`` is kept until the API answers 401. Each setting
    falls back to its ``LAYER_OIDC_*`` variable. A ``token_url`` in plain
    http beyond this machine raises ``LayerMissingRequiredConfigurationError``
    unless ``allow_insecure_http=True``.
    """

    def __init__(
        self,
        token_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
        http_session: requests.Session | None = None,
        http_timeout: float | None = None,
        *,
        allow_insecure_http: bool = False,
    ) -> None:
        env = os.environ
        self.token_url = _setting(token_url, "token_url", "LAYER_OIDC_TOKEN_URL")
        self.client_id = _setting(client_id, "client_id", "LAYER_OIDC_CLIENT_ID")
        self._client_secret = _Secret(
            _setting(client_secret, "client_secret", "LAYER_OIDC_CLIENT_SECRET")
        )
        self.scope = scope if scope is not None else env.get("LAYER_OIDC_SCOPE") or None
        if http_timeout is None:
            http_timeout = env_float(env, "LAYER_OIDC_TIMEOUT") or DEFAULT_HTTP_TIMEOUT
        self.http_timeout = http_timeout
        if not allow_insecure_http:
            refuse_cleartext(
                self.token_url, "token_url", "the OIDC client secret", "OIDCClientCredentials()"
            )
        self._user_session = http_session
        # The SDK's one trust store (see _tls); a user's session keeps its own.
        tls = self.token_url.lower().startswith("https:")
        self._verify = requests_verify() if tls and http_session is None else None
        self._token: _Token | None = None
        self._recent_tokens: deque[_Secret] = deque(maxlen=RECENT_TOKENS)
        self._reset()
        _instances.add(self)
        watch(self)
        parts = urlsplit(self.token_url)
        # For messages: the endpoint without any user:password@ a URL may carry.
        self._where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        warn_if_cleartext(self.token_url, "the OIDC client secret")

    def _reset(self) -> None:
        """Fresh locks and connections (at creation and in a forked child).

        A child keeps the parent's token, which is still valid, but never a
        lock a parent thread may have held, nor a pooled connection.
        """
        self._lock = threading.Lock()  # guards replacing self._token
        self._refreshing = threading.Lock()  # held by the one thread fetching a token
        import requests  # only OIDC users pay for importing it

        self._session = self._user_session or requests.Session()
        self._attempts = 0  # fetches finished, successful or not
        self._failure: tuple[type[LayerAuthError | LayerRequestError], str] | None = None
        self._refused_until = 0.0
        self._handed_out = threading.local()  # the header this thread last sent

    def __repr__(self) -> str:
        token_url = mask_url(self.token_url)
        return f"OIDCClientCredentials(token_url={token_url!r}, client_id={self.client_id!r})"

    def known_secrets(self) -> Iterator[str]:
        """The client secret and the recent access tokens, for ``_redact.scrub`` to mask."""
        yield self._client_secret.reveal()
        for token in list(self._recent_tokens):
            yield token.reveal()

    def same_settings(self, other: OIDCClientCredentials) -> bool:
        """True when ``other`` asks the same endpoint for the same client's token, the same
        way (what a second ``init()`` compares; see ``_settings``)."""
        return (
            self.token_url == other.token_url
            and self.client_id == other.client_id
            and self._client_secret.reveal() == other._client_secret.reveal()
            and self.scope == other.scope
            and self.http_timeout == other.http_timeout
            and self._user_session is other._user_session
        )

    def get_headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>``, fetching or refreshing the token when due."""
        token = self._token
        if token is None or time.monotonic() >= token.refresh_at:
            token = self._refresh(token)
        self._handed_out.header = token.header
        return {"Authorization": token.header}

    def invalidate(self) -> bool:
        """Drop the token this thread sent, so that the next request fetches a new one.

        When another thread has already replaced that token, the new one is
        kept: sixteen requests refused with the same token cost one refresh.
        """
        sent = getattr(self._handed_out, "header", None)
        with self._lock:
            token = self._token
            if token is not None and (sent is None or token.header == sent):
                self._token = None
        return True

    # -- refreshing ------------------------------------------------------------

    def _refresh(self, current: _Token | None) -> _Token:
        if current is not None and time.monotonic() < current.expires_at:
            # Due, but still valid: one thread fetches, the others go on with it.
            if not self._refreshing.acquire(blocking=False):
                return current
            try:
                return self._fetch_once(None, fallback=current)
            finally:
                self._refreshing.release()
        attempts_seen = self._attempts
        if not self._refreshing.acquire(timeout=self.http_timeout * 2 + 1.0):
            raise LayerRequestError("timed out waiting for another thread's token refresh")
        try:
            return self._fetch_once(attempts_seen, fallback=None)
        finally:
            self._refreshing.release()

    def _fetch_once(self, attempts_seen: int | None, fallback: _Token | None) -> _Token:
        """Fetch a token unless one arrived, or an attempt failed, while this thread waited.

        Runs with ``_refreshing`` held. ``fallback`` is a token still valid,
        sent on when no new one can be had.
        """
        now = time.monotonic()
        token = self._token
        if token is not None and now < token.refresh_at:
            return token
        failure = self._failure
        if failure is not None and (
            (attempts_seen is not None and attempts_seen != self._attempts)  # failed as we waited
            or (failure[0] is LayerAuthError and now < self._refused_until)
        ):
            if fallback is not None:
                return fallback
            raise failure[0](failure[1])
        try:
            token = self._fetch()
        except (LayerAuthError, LayerRequestError) as exc:
            self._attempts += 1
            # Type and message only: a traceback would keep the request's frames alive.
            self._failure = (type(exc), str(exc))
            now = time.monotonic()
            if isinstance(exc, LayerAuthError):
                self._refused_until = now + REFUSAL_HOLD
            if fallback is not None and now < fallback.expires_at:
                # The old token is still good: keep sending it, and try again soon.
                retry_at = now + min(EARLY_REFRESH_RETRY_MAX, (fallback.expires_at - now) / 2)
                with self._lock:
                    if self._token is fallback:
                        self._token = _Token(fallback.header, retry_at, fallback.expires_at)
                logger.debug("could not refresh the token ahead of its expiry: %s", exc)
                return fallback
            raise
        self._attempts += 1
        self._failure = None
        with self._lock:
            self._token = token
        return token

    def _fetch(self) -> _Token:
        """One request to the token endpoint."""
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret.reveal(),
        }
        if self.scope:
            form["scope"] = self.scope
        import requests

        started = time.monotonic()
        try:
            response = self._session.post(
                self.token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self.http_timeout,
                allow_redirects=False,
                verify=self._verify,
            )
        except requests.RequestException as exc:
            raise LayerRequestError(
                f"token endpoint {self._where} unreachable: "
                f"{describe_tls_failure(exc) or type(exc).__name__}"
            ) from None
        answer = _json(response)
        status = response.status_code
        if status >= 500 or status in TRANSIENT_STATUSES:
            raise LayerRequestError(
                f"token endpoint {self._where} answered {status}: {self._reason(answer, response)}"
            )
        access_token = answer.get("access_token")
        if not 200 <= status < 300 or not isinstance(access_token, str) or not access_token:
            if 200 <= status < 300:
                reason = "its answer has no access_token"
            else:
                reason = self._reason(answer, response)
            raise LayerAuthError(
                f"token endpoint refused client {self.client_id!r} ({status}): {reason}"
            )
        self._recent_tokens.append(_Secret(access_token))
        token_type = answer.get("token_type")
        if isinstance(token_type, str) and token_type and token_type.lower() != "bearer":
            logger.warning(
                "the token endpoint issued a %r token; sending it as Bearer", scrub(token_type)[:40]
            )
        lifetime = _seconds(answer.get("expires_in"))
        header = f"Bearer {access_token}"
        if lifetime is None:
            # Without a lifetime the token is kept until the API answers 401.
            token = _Token(header, float("inf"), float("inf"))
        else:
            usable = max(lifetime - EXPIRES_IN_ROUNDING, lifetime / 2)
            expires_at = started + usable
            margin = min(REFRESH_MARGIN_MAX, lifetime * REFRESH_MARGIN_FRACTION)
            token = _Token(header, expires_at - margin, expires_at)
        logger.debug(
            "fetched a token for client %r (expires_in=%s s, refresh in %.2f s)",
            self.client_id,
            scrub(str(answer.get("expires_in")))[:40],
            token.refresh_at - started,
        )
        return token

    def _reason(self, answer: dict[str, Any], response: requests.Response) -> str:
        """The provider's own words (``error``: ``error_description``), without any secret.

        Scrubbed before it is cut, so that a cut cannot leave half a secret unmasked.
        """
        error, description = answer.get("error"), answer.get("error_description")
        parts = [scrub(str(part))[:300] for part in (error, description) if part]
        return ": ".join(parts) or scrub(response.reason or "")[:300] or "no reason given"


def _setting(value: str | None, option: str, variable: str) -> str:
    value = value or os.environ.get(variable)
    if not value:
        raise LayerMissingRequiredConfigurationError(
            f"OIDCClientCredentials needs {option}: pass {option}= or set {variable}"
        )
    return value


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _seconds(value: Any) -> float | None:
    """``expires_in`` as a positive number of seconds (some providers send a string)."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 < seconds < float("inf") else None


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_if_cleartext(url: str, what: str) -> None:
    """Warn, once per host, when ``what`` travels over plain http beyond this machine.

    Only reached when the user allowed it (``allow_insecure_http=True``).
    """
    host = cleartext_host(url)
    if host is None:
        return
    with _warned_lock:
        if (host, what) in _warned:
            return
        _warned.add((host, what))
    logger.warning(
        "layer-sdk sends %s to %s over plain http: anyone on the network can read it; use https",
        what,
        host,
    )


_instances: weakref.WeakSet[OIDCClientCredentials] = weakref.WeakSet()


def _reset_in_child() -> None:
    for provider in list(_instances):
        provider._reset()


os.register_at_fork(after_in_child=_reset_in_child)
