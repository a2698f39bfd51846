"""Authentication: the headers that prove who is calling the Layer API."""

from __future__ import annotations

import abc
import logging
import os
import threading
import time
import weakref
from typing import Any
from urllib.parse import urlsplit

import requests

from ._config import DEFAULT_HTTP_TIMEOUT, env_float
from ._exceptions import (
    LayerAuthError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
)

logger = logging.getLogger("layer_sdk")


class AuthProvider(abc.ABC):
    """Supplies the authentication headers of every request to the Layer API."""

    @abc.abstractmethod
    def get_headers(self) -> dict[str, str]:
        """Headers to add to the next request (called once per attempt)."""

    def invalidate(self) -> bool:
        """The API answered 401: forget cached credentials.

        Returns True when new credentials may succeed, and the SDK then retries
        the request once.
        """
        return False


class OIDCClientCredentials(AuthProvider):
    """OAuth 2.0 client-credentials grant against an OpenID Connect token endpoint.

    The token is cached and refreshed ahead of its expiry by the smaller of
    60 s and a fifth of its lifetime; concurrent callers wait on a single
    refresh. Each setting falls back to its ``LAYER_OIDC_*`` variable.
    """

    def __init__(
        self,
        token_url: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        scope: str | None = None,
        http_session: requests.Session | None = None,
        http_timeout: float | None = None,
    ) -> None:
        env = os.environ
        self.token_url = _setting(token_url, "token_url", "LAYER_OIDC_TOKEN_URL")
        self.client_id = _setting(client_id, "client_id", "LAYER_OIDC_CLIENT_ID")
        self._client_secret = _setting(client_secret, "client_secret", "LAYER_OIDC_CLIENT_SECRET")
        self.scope = scope if scope is not None else env.get("LAYER_OIDC_SCOPE") or None
        if http_timeout is None:
            http_timeout = env_float(env, "LAYER_OIDC_TIMEOUT") or DEFAULT_HTTP_TIMEOUT
        self.http_timeout = http_timeout
        self._user_session = http_session
        self._reset()
        _instances.add(self)
        parts = urlsplit(self.token_url)
        if parts.scheme != "https" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
            logger.warning("OIDC token_url is not https: the client secret travels in clear text")

    def _reset(self) -> None:
        """Fresh locks and connections (at creation and in a forked child)."""
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._session = self._user_session or requests.Session()
        self._header: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0

    def __repr__(self) -> str:
        return f"OIDCClientCredentials(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def get_headers(self) -> dict[str, str]:
        """``Authorization: Bearer <token>``, fetching or refreshing the token when due."""
        now = time.monotonic()
        header = self._header
        if header is not None and now < self._refresh_at:
            return {"Authorization": header}
        # Refresh is due. One thread fetches; the others keep using a token
        # that has not expired yet, or wait for the fetch when it has.
        if header is not None and now < self._expires_at:
            if not self._refreshing.acquire(blocking=False):
                return {"Authorization": header}
        elif not self._refreshing.acquire(timeout=self.http_timeout + 1.0):
            raise LayerRequestError("timed out waiting for another thread's token refresh")
        try:
            if self._header is not None and time.monotonic() < self._refresh_at:
                return {"Authorization": self._header}
            self._fetch()
            assert self._header is not None
            return {"Authorization": self._header}
        finally:
            self._refreshing.release()

    def invalidate(self) -> bool:
        """Drop the cached token so that the next request fetches a new one."""
        with self._lock:
            self._header = None
            self._refresh_at = self._expires_at = 0.0
        return True

    def _fetch(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
        }
        if self.scope:
            form["scope"] = self.scope
        started = time.monotonic()
        try:
            response = self._session.post(
                self.token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self.http_timeout,
            )
        except requests.RequestException as exc:
            raise LayerRequestError(f"token endpoint unreachable: {type(exc).__name__}") from None
        answer = _json(response)
        if response.status_code in (400, 401, 403):
            reason = answer.get("error_description") or answer.get("error") or response.reason
            raise LayerAuthError(
                f"token endpoint refused client {self.client_id!r} "
                f"({response.status_code}): {reason}"
            )
        if not response.ok or not isinstance(answer.get("access_token"), str):
            raise LayerRequestError(
                f"token endpoint answered {response.status_code} without an access_token"
            )
        token_type = answer.get("token_type") or "Bearer"
        if token_type.lower() == "bearer":
            token_type = "Bearer"
        lifetime = answer.get("expires_in")
        with self._lock:
            self._header = f"{token_type} {answer['access_token']}"
            if isinstance(lifetime, (int, float)) and lifetime > 0:
                self._expires_at = started + lifetime
                self._refresh_at = self._expires_at - min(60.0, lifetime / 5)
            else:
                # Without a lifetime the token is kept until the API answers 401.
                self._expires_at = self._refresh_at = float("inf")
        logger.debug("fetched a token for client %r (expires in %s s)", self.client_id, lifetime)


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


_instances: weakref.WeakSet[OIDCClientCredentials] = weakref.WeakSet()


def _reset_in_child() -> None:
    for provider in list(_instances):
        provider._reset()


os.register_at_fork(after_in_child=_reset_in_child)
