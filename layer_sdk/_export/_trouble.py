"""Delivery trouble in words: what is wrong with reaching the Layer API, said at once, and its end.

The sender threads tell a ``TroubleLog`` what each buffered attempt came to
(``Transport.deliver``). It is the one voice of the export pipeline about the
API's condition (the ``SendGate`` judges it, silently; the ``LossLog`` speaks
of events lost):

- the first failure of each kind is a WARNING at once, with its cause and what
  happens next (``cannot reach https://layer.example.com (gaierror: [Errno -2]
  Name or service not known); retrying for up to 10 min, 16 event(s) kept``);
- repeats are throttled as loss lines are (``_losses.Throttle``): at most one
  line per kind every ``LOSS_LOG_INTERVAL``, which counts the failures meanwhile;
- the first delivery after a failure that was logged says so, once, when no
  delivery came for ``RECOVERY_AFTER`` since the failures began: the API took no
  events meanwhile. Under a fraction of failures deliveries come in between, and
  a recovery line at each would flap; their failures are said by the throttled
  lines alone;
- ``last_error`` is the trouble of the moment in words (None once a delivery
  succeeds), which the loss lines of an outage name as their cause.

The kinds, each with its own line and throttle:

- ``UNREACHABLE``: no answer (DNS, a refused connection, a timeout, a reset);
  retried.
- ``TLS``: the handshake or the server's certificate failed; retried (a
  certificate renewed or a trust store fixed cures it without a restart).
- ``SERVER_ERROR``: "try later" answers (408, 425, 429, 5xx); retried.
- ``CREDENTIALS``: 401 or 403 (the events are refused: lost), or no
  credentials could be had from the ``auth_provider`` (retried).
- ``NOT_FOUND``: 404: the base URL looks wrong; the events are lost.

Other refusals (400, 409, 413, 422) are about the events, not about the API:
their loss line says them. No line holds a body, a header or a secret: the
server's words go through ``server_words`` (scrubbed by ``http_error``
before), URLs through ``mask_url``.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .._exceptions import LayerAuthError, LayerHTTPError, LayerSDKException
from .._redact import mask_url
from .._schemas import SESSIONS_PATH
from ._losses import Throttle, masked_quotes, server_words

logger = logging.getLogger("layer_sdk")

UNREACHABLE = "unreachable"
TLS = "tls"
SERVER_ERROR = "server_error"
CREDENTIALS = "credentials"
NOT_FOUND = "not_found"

#: A delivery after failures that were logged ends the trouble in words only when no
#: delivery came for this long, seconds, since the first of them (see the module doc).
RECOVERY_AFTER = 1.0

#: Refusals that say the configuration is wrong rather than the events.
CONFIGURATION_STATUSES = frozenset({401, 403, 404})

#: How the backends word a failure to get an answer (``_backends._failure``).
_NO_ANSWER_PREFIX = "could not reach the Layer API: "
#: How ``_tls.describe_tls_failure`` words a TLS failure.
_TLS_PREFIX = "TLS "
_HTML = re.compile(r"<(?:!doctype\s+html|html|head|body|title)\b", re.IGNORECASE)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class Trouble(NamedTuple):
    """One failure in words: its kind, what happened (``summary``, also the ``last_error``
    of loss lines), and what to check (``advice``, "" when nothing is to be done)."""

    kind: str
    summary: str
    advice: str = ""


def describe(
    error: LayerSDKException,
    base_url: str,
    path: str,
    *,
    authenticated: bool,
    bodies: Sequence[bytes] = (),
) -> Trouble:
    """What ``error``, the failure of a request to ``path`` of ``base_url``, means, in words
    fit for a log line. ``bodies``: what was sent, so that the server's words never quote
    it; ``authenticated``: whether an auth provider gives credentials."""
    where = mask_url(base_url + path)
    if isinstance(error, LayerHTTPError):
        said = _words(error, bodies)
        status = error.status_code
        if status == 401 and authenticated:
            return Trouble(
                CREDENTIALS,
                f"the Layer API refused the credentials: {where} answered {said}",
                "check the client ID, the secret and the scope of the auth_provider",
            )
        if status == 401:
            return Trouble(
                CREDENTIALS,
                f"the Layer API refused the credentials: {where} answered {said}",
                "no auth_provider was given: pass auth_provider= to init() or set "
                "LAYER_OIDC_TOKEN_URL, LAYER_OIDC_CLIENT_ID and LAYER_OIDC_CLIENT_SECRET",
            )
        if status == 403:
            return Trouble(
                CREDENTIALS,
                f"the Layer API refused access: {where} answered {said}",
                "the credentials are valid but may not report to this application",
            )
        if status == 404 and path == SESSIONS_PATH:
            return Trouble(
                NOT_FOUND,
                f"{where} answered {said}",
                "is base_url right? It is the root of the Layer API, to which the SDK adds "
                "/v1/sessions",
            )
        if status == 404:
            return Trouble(
                NOT_FOUND,
                f"{where} answered {said}",
                "the API does not know the session, or base_url is not the root of the Layer API",
            )
        return Trouble(
            SERVER_ERROR,
            f"{where} answered {said}",
            "the Layer API (or a proxy in front of it) cannot take events now",
        )
    if isinstance(error, LayerAuthError):
        return Trouble(
            CREDENTIALS,
            f"no credentials for the Layer API ({server_words(str(error))})",
            "check the settings of the auth_provider (its token endpoint refused it)",
        )
    # Our words, but a malformed answer may be quoted in them (and may quote the events).
    cause = masked_quotes(str(error).removeprefix(_NO_ANSWER_PREFIX), bodies)
    if cause.startswith(_TLS_PREFIX):
        return Trouble(TLS, f"cannot reach {mask_url(base_url)}: {cause}")
    return Trouble(UNREACHABLE, f"cannot reach {mask_url(base_url)} ({cause})")


def summarize_html(text: str) -> str:
    """``text`` with an HTML page in it (a proxy's error page) cut down to the page's title."""
    start = _HTML.search(text)
    if start is None:
        return text
    found = _TITLE.search(text, start.start())
    title = " ".join(html.unescape(found[1]).split()) if found else ""
    page = f"an HTML page titled {title!r}" if title else "an HTML page without a title"
    return text[: start.start()] + page


def _words(error: LayerHTTPError, bodies: Sequence[bytes]) -> str:
    """``503 (the server's words)``, the words cut short and without the data sent."""
    status, message = error.status_code, error.message
    if not message or message == f"HTTP {status}":
        return str(status)
    return f"{status} ({server_words(summarize_html(message), bodies)})"


def duration(seconds: float) -> str:
    """``10 min``, ``90 s``, ``4.5 s``: a span of time as a log line says it."""
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    if seconds >= 10:
        return f"{seconds:.0f} s"
    return f"{seconds:.1f} s"


class TroubleLog:
    """What the senders of one client say about reaching the API (see the module doc)."""

    def __init__(
        self,
        base_url: str,
        *,
        authenticated: bool,
        queued: Callable[[], int] | None = None,
    ) -> None:
        self._base_url = base_url
        self._authenticated = authenticated
        self._queued = queued
        self._throttle = Throttle()
        self._lock = threading.Lock()
        self._failures = 0  # failed attempts since the last delivery
        self._since = 0.0  # when the first of them failed (monotonic)
        self._announced = False  # whether one of them was logged
        self._closing_at: float | None = None  # the shutdown deadline, once shutting down
        #: The trouble of the moment in words, None when the last attempt delivered (read
        #: without the lock on each delivery: one attribute, the healthy path's only cost).
        self.last_error: str | None = None

    def closing(self, deadline: float) -> None:
        """Shutdown has begun: failures are retried until ``deadline`` (monotonic) only."""
        self._closing_at = deadline

    def failed(
        self,
        path: str,
        error: LayerSDKException,
        *,
        retry_for: float | None,
        loss: str | None = None,
        bodies: Sequence[bytes] = (),
    ) -> None:
        """An attempt at ``path`` failed with ``error``. ``retry_for``: how long its events
        may still be retried, seconds (None: they are given up on, as ``loss``)."""
        trouble = describe(
            error, self._base_url, path, authenticated=self._authenticated, bodies=bodies
        )
        with self._lock:
            self._failures += 1
            if self._failures == 1:
                self._since = time.monotonic()
            self.last_error = trouble.summary
        total = self._throttle.due(trouble.kind, 1)
        if not total:
            return
        with self._lock:
            self._announced = True
        since = "" if total == 1 else f" ({total} failures since the last report)"
        advice = f"; {trouble.advice}" if trouble.advice else ""
        logger.warning(
            "layer-sdk: %s%s; %s%s", trouble.summary, since, self._next(retry_for, loss), advice
        )

    def _next(self, retry_for: float | None, loss: str | None) -> str:
        """What becomes of the events now, in words."""
        if retry_for is None:
            return f"its events are lost (failed: {loss})"
        kept = "" if self._queued is None else f", {self._queued()} event(s) kept"
        closing_at = self._closing_at
        if closing_at is not None:
            left = max(0.0, closing_at - time.monotonic())
            return f"retrying until the shutdown deadline in {duration(left)}{kept}"
        return f"retrying for up to {duration(retry_for)}{kept}"

    def delivered(self) -> None:
        """An attempt delivered: the trouble is over. Said once when it had been logged
        and nothing was delivered for ``RECOVERY_AFTER`` (not a fraction of failures)."""
        with self._lock:
            if self.last_error is None:
                return
            failures, since, announced = self._failures, self._since, self._announced
            self._failures, self._announced, self.last_error = 0, False, None
        lasted = time.monotonic() - since
        if announced and lasted >= RECOVERY_AFTER:
            logger.warning(
                "layer-sdk: the Layer API at %s takes events again (after %d failed "
                "attempt(s) over %s); delivery resumes",
                mask_url(self._base_url),
                failures,
                duration(lasted),
            )
