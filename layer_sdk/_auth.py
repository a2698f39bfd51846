"""Authentication: the headers that prove who is calling the Layer API.

``OIDCClientCredentials`` holds one access token per provider object and
hands it to every request, sync path and worker alike:

- fetched with the OAuth 2.0 client-credentials grant, the secret in the form
  body; of the answer only ``access_token`` is required;
- refreshed ahead of its expiry, one fetch at a time, on a fetch thread of
  the provider's own (``_daemon_pool``) with one deadline, ``http_timeout``,
  over the whole fetch: while it runs, callers keep sending the old token if
  it is still valid, or wait for the new one until that deadline (and share
  the fetch's outcome, success or failure). A token endpoint that drips its
  answer (``requests`` bounds each read, never the whole answer) holds a
  fetch thread, never a caller past the deadline;
- dropped when the API answers 401 (``invalidate``), once however many
  requests saw that 401 with the same token;
- fresh locks, connections and fetch threads in a forked child.

No exception raised to a caller carries, in the frames of its traceback, the
form with the secret or the provider's raw answer: ``_fetch`` returns its
outcome, and the callers raise exceptions of their own (error trackers
capture frame locals).

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
import functools
import json
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
from ._daemon_pool import DaemonPool, Expired, Pending, interrupted
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
#: Fetches running at once, at most: one, and one more while another outlives its
#: deadline (an endpoint that drips its answer holds a thread until it stops).
FETCH_THREADS = 2
#: A token endpoint's answer larger than this, bytes, is not read further.
TOKEN_ANSWER_MAX = 64 * 1024


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


#: Why no token could be had: the exception to raise, and its message (without secrets).
_Failure = tuple[type[LayerAuthError | LayerRequestError], str]


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
        """Fresh locks, connections and fetch threads (at creation and in a forked child).

        A child keeps the parent's token, which is still valid, but never a
        lock a parent thread may have held, nor a pooled connection.
        """
        self._lock = threading.Lock()  # guards the token, the fetch under way, the failure
        import requests  # only OIDC users pay for importing it

        self._session = self._user_session or requests.Session()
        self._fetches = DaemonPool("layer-sdk-token", FETCH_THREADS)
        self._pending: Pending[_Token | _Failure] | None = None  # the latest fetch
        self._failure: _Failure | None = None
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
        """A token to send now, fetching a new one when it is due.

        One fetch at a time, on a fetch thread, with one deadline
        (``http_timeout``): a caller without a valid token waits for it until
        then; while the current token is still valid, callers go on with it
        and none waits. A fetch still running past its deadline (an endpoint
        that drips its answer) is left to end on its own.
        """
        now = time.monotonic()
        with self._lock:
            token = self._token
            if token is not None and now < token.refresh_at:
                return token  # another thread's fetch has just ended
            valid = token if token is not None and now < token.expires_at else None
            failure = self._failure
            if failure is not None and failure[0] is LayerAuthError and now < self._refused_until:
                if valid is not None:
                    return valid
                raise failure[0](failure[1])  # refused a moment ago: not asked again yet
            pending = self._pending
            if pending is None or pending.done() or pending.overdue():
                fetch = functools.partial(self._fetch_and_keep, self.http_timeout)
                pending = self._pending = self._fetches.submit(fetch, self.http_timeout)
        if valid is not None:
            return valid  # sent on while the new one is fetched
        pending.wait()
        outcome = pending.value
        if isinstance(outcome, _Token):
            return outcome
        if not pending.done():
            if interrupted():
                raise LayerRequestError(
                    f"no token from {self._where}: the client shut down while waiting for it"
                )
            raise LayerRequestError(
                f"token endpoint {self._where} gave no token within "
                f"http_timeout={self.http_timeout:g} s"
            )
        if outcome is None:
            if isinstance(pending.error, Expired):  # the fetch threads are held by the endpoint
                why = "is still answering earlier token requests"
            else:  # a failure of the session's own (a user's session may raise anything)
                why = f"could not be asked: {type(pending.error).__name__}"
            raise LayerRequestError(f"token endpoint {self._where} {why}")
        # An exception of this caller's own: waiters on several threads share no traceback.
        raise outcome[0](outcome[1])

    def _fetch_and_keep(self, timeout: float) -> _Token | _Failure:
        """Fetch a token (on a fetch thread) and keep the outcome: the new token, or the
        failure, with the old token kept a little longer if it is still valid."""
        outcome = self._fetch(timeout)
        now = time.monotonic()
        with self._lock:
            if isinstance(outcome, _Token):
                self._token, self._failure = outcome, None
                return outcome
            self._failure = outcome
            if outcome[0] is LayerAuthError:
                self._refused_until = now + REFUSAL_HOLD
            current = self._token
            if current is not None and now < current.expires_at:
                # The old token is still good: keep sending it, and try again soon.
                retry_at = now + min(EARLY_REFRESH_RETRY_MAX, (current.expires_at - now) / 2)
                self._token = _Token(current.header, retry_at, current.expires_at)
        logger.debug("could not fetch a token: %s", outcome[1])
        return outcome

    def _fetch(self, timeout: float) -> _Token | _Failure:
        """One request to the token endpoint: the token, or why there is none.

        Returned, never raised: the form with the secret and the provider's raw
        words live in this frame only, which no exception's traceback keeps (an
        error tracker capturing frame locals would send them on).
        """
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
                timeout=timeout,
                allow_redirects=False,
                verify=self._verify,
                stream=True,
            )
            try:
                body = _read_capped(response)
            finally:
                response.close()
        except requests.RequestException as exc:
            return LayerRequestError, (
                f"token endpoint {self._where} unreachable: "
                f"{describe_tls_failure(exc) or type(exc).__name__}"
            )
        answer = _json(body)
        status = response.status_code
        if status >= 500 or status in TRANSIENT_STATUSES:
            reason = self._reason(answer, response)
            return LayerRequestError, f"token endpoint {self._where} answered {status}: {reason}"
        access_token = answer.get("access_token")
        if not 200 <= status < 300 or not isinstance(access_token, str) or not access_token:
            if 200 <= status < 300:
                reason = (
                    f"its answer is larger than {TOKEN_ANSWER_MAX} bytes"
                    if body is None
                    else "its answer has no access_token"
                )
            else:
                reason = self._reason(answer, response)
            return LayerAuthError, (
                f"token endpoint refused client {self.client_id!r} ({status}): {reason}"
            )
        self._recent_tokens.append(_Secret(access_token))
        token_type = answer.get("token_type")
        if isinstance(token_type, str) and token_type and token_type.lower() != "bearer":
            logger.warning(
                "layer-sdk: the token endpoint issued a %r token; sending it as Bearer",
                scrub(token_type)[:40],
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


def _read_capped(response: requests.Response) -> bytes | None:
    """The answer's body; None past ``TOKEN_ANSWER_MAX`` bytes (no token answer is that big)."""
    body = bytearray()
    for chunk in response.iter_content(16 * 1024):
        body += chunk
        if len(body) > TOKEN_ANSWER_MAX:
            return None
    return bytes(body)


def _json(body: bytes | None) -> dict[str, Any]:
    if body is None:
        return {}
    try:
        answer = json.loads(body)
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
