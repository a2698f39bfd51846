"""The one way requests reach the Layer API, used by the synchronous path and the worker alike.

An attempt is two steps, each one method:

- ``_attempt`` adds the standard and authentication headers (and each body's
  ``X-Request-Id``) and sends the bodies through a backend (``_backends``):
  the SDK's own HTTP client by default, which pipelines several bodies on one
  connection; ``requests`` behind a proxy or with a user's ``http_session``,
  whose own retry policy then governs (the SDK adds no retry on top).
- ``_sort`` sorts what came back, body by body: delivered (2xx), refused (any
  other answer but "try later": given up on as ``rejected``), or to be sent
  again (408/425/429/5xx, no answer, a 401 that fresh credentials may cure).

Two thin loops decide when the bodies to send again go:

- ``send``, the synchronous path: up to ``max_retries`` retries, each after a
  backoff slept on the caller's thread (shutdown cuts it short), within about
  ``max_retries + 1`` times ``http_timeout`` in all: a ``Retry-After`` past
  that fails at once with the server's answer. Raises the documented exception.
- ``deliver``, the worker's: one attempt per call, admitted by the shared
  ``SendGate`` (``_retry``). A body that failed for now comes back with the
  time its retry is due (``Delivery.retry_at``): it waits in the queue, not on
  a sender, until ``max_retry_time`` has passed since its first attempt. Every
  body comes back with what became of it, so the worker never re-classifies.

A ``BodySplicer`` (``_applications``: the ID of an application given by name)
fills in each request once, before its first attempt, outside both loops.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from .._auth import warn_if_cleartext
from .._config import Config
from .._daemon_pool import Interrupt
from .._entropy import random_16
from .._exceptions import (
    LayerAuthError,
    LayerHTTPError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
    LayerSDKException,
)
from .._platform import USER_AGENT
from .._redact import scrub
from ._backends import REQUEST_ID_HEADER, Backend, Exchange, Response, choose_backend
from ._losses import REJECTED, RETRIES_EXHAUSTED, SHUTDOWN, masked_quotes
from ._retry import Admission, RetryPolicy, RetryState, SendGate, is_retryable, parse_retry_after
from ._trouble import CONFIGURATION_STATUSES, TroubleLog

logger = logging.getLogger("layer_sdk")


class Delivery(NamedTuple):
    """What became of one body: delivered (``loss`` and ``retry_at`` None), given up on
    (``loss`` says why), or to be sent again once ``retry_at`` (monotonic) has come."""

    response: Response | None
    loss: str | None = None
    error: LayerSDKException | None = None
    retry_at: float | None = None

    @property
    def status(self) -> int | None:
        """The status of the last answer, if the server answered at all."""
        return None if self.response is None else self.response.status


class Outgoing(Protocol):
    """A buffered request as the transport sends it (the queue's ``Request``)."""

    path: str
    bodies: list[bytes]
    retry: RetryState | None

    @property
    def events(self) -> Sequence[object]:
        """The events the bodies carry (counted in the debug lines)."""

    def request_ids(self) -> list[str]:
        """The X-Request-Id of each body, the same on every attempt."""


class BodySplicer(Protocol):
    """Fills in what was not known when bodies were encoded (``_applications``: the ID of an
    application given by name) before they are sent."""

    def splice(self, bodies: list[bytes], deadline: float) -> list[bytes] | LayerSDKException:
        """The bodies to send, or why they cannot be (after waiting until ``deadline``)."""

    def close(self) -> None:
        """Stop waiting (shutdown)."""

    def restart_in_child(self) -> None:
        """In a forked child: new locks, and whatever work was under way started again."""


class _Sorted(NamedTuple):
    """What one attempt came to, body by body."""

    #: Per body: what became of it, or for a body to send again, what it comes to
    #: if it is given up on now (its last answer and error, ``retries_exhausted``).
    deliveries: list[Delivery]
    #: The bodies to send again, in order.
    again: list[int]
    #: Why they failed; None when the server only ended the exchange early (the
    #: bodies it did not answer go again at once: that is no failure).
    failure: LayerSDKException | None
    #: The longest ``Retry-After`` among the answers that asked to try later.
    retry_after: float | None
    #: The bodies answered 401 that fresh credentials may get through.
    unauthorized: list[int]
    #: Whether some answer showed the API is up (anything but "try later").
    answered: bool
    #: Whether some body was delivered (2xx).
    delivered: bool
    #: The first refusal that says the configuration is wrong (401, 403, 404), if any.
    refusal: LayerHTTPError | None


def new_request_id() -> str:
    """A fresh X-Request-Id: 32 hex digits of the operating system's randomness."""
    return random_16().hex()


class Transport:
    """Sends requests to the Layer API with headers, authentication and retries."""

    def __init__(
        self,
        config: Config,
        backend: Backend | None = None,
        splicer: BodySplicer | None = None,
        trouble: TroubleLog | None = None,
    ) -> None:
        self._config = config
        self._own_backend = backend is None
        self._base_url = config.base_url
        self._timeout = config.http_timeout
        self._splicer = splicer
        self._auth = config.auth_provider
        if self._auth is not None:
            warn_if_cleartext(config.base_url, "the access token")
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self.retry = RetryPolicy(
            max_retries=config.max_retries, max_retry_time=config.max_retry_time
        )
        self.gate = SendGate(self.retry)
        self._closing = Interrupt()
        #: What the worker's attempts say about reaching the API, in the log.
        self.trouble = trouble or TroubleLog(
            config.base_url, authenticated=config.auth_provider is not None
        )
        self._backend = choose_backend(config) if backend is None else backend
        # A user's session brings its own retry policy: exactly one retry layer.
        self._own_retries = config.http_session is None
        # debug=True: one line per attempt (a flag read per request: nothing more when off).
        self._debug = config.debug

    # -- the synchronous path ----------------------------------------------------------

    def send(
        self, path: str, body: bytes, *, method: str = "POST", creates: bool = False
    ) -> Response:
        """POST ``body`` to ``path`` now (the synchronous path); returns a 2xx response or raises.

        ``method="GET"`` reads ``path`` instead (``body`` is then ``b""``).
        ``creates``: the body creates what it names (a session). A 409 to a retry
        of it (after an attempt the server may have taken, its answer lost) says
        that it exists: that 409 is returned. A 409 to the first attempt raises.
        Retries up to ``max_retries`` times, within about ``max_retries + 1``
        times ``http_timeout``. Raises ``LayerHTTPError`` for a non-2xx answer
        (at once for a ``Retry-After`` beyond that bound), ``LayerRequestError``
        when the server cannot be reached, and ``LayerAuthError`` when no
        credentials can be had.
        """
        try:
            outcome = self._settle_now(path, body, method, creates)
        except LayerSDKException as exc:  # no credentials could be had
            outcome = exc
        if isinstance(outcome, Response):
            return outcome
        # Raised from here, with no frame below: those held our headers (the token) and the
        # server's raw answer, which an error tracker capturing frame locals would send on.
        raise outcome.with_traceback(None)

    def _settle_now(
        self, path: str, body: bytes, method: str, creates: bool
    ) -> Response | LayerSDKException:
        """The synchronous loop: a 2xx response, or the error that ``send`` raises."""
        started = time.monotonic()
        if self._splicer is not None:
            spliced = self._splicer.splice([body], started + self._timeout)
            if isinstance(spliced, LayerSDKException):
                return spliced
            (body,) = spliced
        ids = [new_request_id()]
        retry = RetryState(started)
        budget = started + (self.retry.max_retries + 1) * self._timeout
        while True:
            debug = self._debug
            began = time.monotonic() if debug else 0.0
            exchange = self._attempt(path, [body], ids, method, sync=True)
            sorted_ = self._sort(exchange, 1, self._reauthenticates(retry))
            (delivery,) = sorted_.deliveries
            outcome: Response | LayerSDKException | None = None
            delay = 0.0
            if not sorted_.again:
                if creates and retry.retries and delivery.status == 409:
                    outcome = delivery.response  # created by an attempt whose answer was lost
                else:
                    outcome = delivery.error or delivery.response
            elif sorted_.unauthorized:
                if not self._renew_credentials(retry):
                    outcome = delivery.error
            elif not self._own_retries or retry.retries >= self.retry.max_retries:
                outcome = delivery.error  # (a user's session retried already)
            else:
                delay = self.retry.backoff(retry.retries, sorted_.retry_after)
                if sorted_.retry_after is not None and time.monotonic() + delay > budget:
                    outcome = delivery.error  # the server asks for longer than this call may take
            if debug:
                retrying = None if outcome is not None else (retry.retries + 1, delay)
                _log_attempt(
                    method, path, exchange, sorted_, began, "sync", retrying=retrying, bodies=[body]
                )
            if outcome is not None:
                assert outcome is not None
                return outcome
            if sorted_.unauthorized:
                continue
            assert delivery.error is not None
            retry.retries += 1
            if not self.gate.sleep(delay):
                return delivery.error  # shut down meanwhile

    # -- the worker's path -----------------------------------------------------------

    def deliver(self, request: Outgoing) -> list[Delivery]:
        """One attempt at the bodies of ``request``, for the worker; says what became of
        each. Never raises for trouble on the way.

        The first attempt sets ``request.retry`` (and splices the bodies); a body
        that failed for now comes back with ``retry_at``, within ``max_retry_time``
        of the first attempt, else given up on. Admission goes through the shared
        ``SendGate``: shutdown cuts its waits short, and an unreachable API is
        probed by one request at a time. Refused credentials are retried too:
        the events are not at fault.
        """
        count = len(request.bodies)
        if request.retry is None:  # its first attempt
            request.retry = RetryState(time.monotonic())
            refused = self._splice(request, request.retry.started + self.retry.max_retry_time)
            if refused is not None:
                return [refused] * count
        retry = request.retry
        deadline = retry.started + self.retry.max_retry_time
        admission = self.gate.admit(deadline)
        if admission is Admission.CLOSED or admission is Admission.EXPIRED:
            return [self._not_admitted(admission, retry)] * count
        probe = admission is Admission.PROBE
        debug = self._debug
        began = time.monotonic() if debug else 0.0
        try:
            exchange = self._attempt(
                request.path, request.bodies, request.request_ids(), "POST", sync=False
            )
        except BaseException:
            self.gate.abandon(probe=probe)
            raise
        sorted_ = self._sort(exchange, count, self._reauthenticates(retry))
        if sorted_.answered:
            self.gate.passed(probe=probe)
        elif sorted_.failure is not None:
            self.gate.failed(probe=probe, retry_after=sorted_.retry_after)
        deliveries = self._schedule(sorted_, retry, deadline)
        if debug:
            self._log_delivery(request, exchange, sorted_, began, deliveries, retry)
        trouble = sorted_.failure or sorted_.refusal
        if trouble is None and sorted_.unauthorized:
            # A 401 with credentials: trouble only when no new ones may get it through
            # (a token that merely expired is renewed and the request sent again, quietly).
            refused = deliveries[sorted_.unauthorized[0]]
            trouble = refused.error if refused.loss is not None else None
        if trouble is not None:
            self._tell_trouble(request, trouble, deliveries, deadline)
        elif sorted_.delivered and self.trouble.last_error is not None:
            self.trouble.delivered()
        return deliveries

    def _tell_trouble(
        self,
        request: Outgoing,
        failure: LayerSDKException,
        deliveries: list[Delivery],
        deadline: float,
    ) -> None:
        """Tell the trouble log what failed, and what becomes of the events."""
        again = next((d for d in deliveries if d.retry_at is not None), None)
        lost = next((d.loss for d in deliveries if d.loss is not None), None)
        retry_for = None if again is None else max(0.0, deadline - time.monotonic())
        self.trouble.failed(
            request.path, failure, retry_for=retry_for, loss=lost, bodies=request.bodies
        )

    def _log_delivery(
        self,
        request: Outgoing,
        exchange: Exchange,
        sorted_: _Sorted,
        began: float,
        deliveries: list[Delivery],
        retry: RetryState,
    ) -> None:
        """The debug line of one attempt of the worker."""
        again = next((d.retry_at for d in deliveries if d.retry_at is not None), None)
        retrying = None if again is None else (retry.retries, max(0.0, again - time.monotonic()))
        lost = Counter(d.loss for d in deliveries if d.loss is not None)
        _log_attempt(
            "POST",
            request.path,
            exchange,
            sorted_,
            began,
            f"{len(request.events)} event(s)",
            retrying=retrying,
            lost=lost,
            bodies=request.bodies,
        )

    def _schedule(self, sorted_: _Sorted, retry: RetryState, deadline: float) -> list[Delivery]:
        """When the bodies to send again go: at once when the server only ended the
        exchange early or new credentials came; after a backoff (or the server's
        Retry-After) when they failed; given up on when that is past ``deadline``.

        The backoff grows with the request's failures only while most recent
        attempts fail (``SendGate.failing``); else it stays at the first step.
        """
        deliveries, again, failure = sorted_.deliveries, sorted_.again, sorted_.failure
        at_once = failure is None
        if sorted_.unauthorized:
            if self._renew_credentials(retry):
                at_once = True
            else:
                again = [i for i in again if i not in sorted_.unauthorized]  # refused for good
        retry_at = time.monotonic()
        if again and not at_once and failure is not None:
            if not self._own_retries and not isinstance(failure, LayerAuthError):
                return deliveries  # the user's session retried already
            grown = retry.retries if self.gate.failing else 0
            delay = self.retry.backoff(grown, sorted_.retry_after)
            if retry_at + delay > deadline:
                return deliveries
            retry.retries += 1
            retry.error = _kept(failure)
            retry_at += delay
        for i in again:
            deliveries[i] = deliveries[i]._replace(loss=None, retry_at=retry_at)
        return deliveries

    def _not_admitted(self, admission: Admission, retry: RetryState) -> Delivery:
        """What becomes of a body the send gate did not let go: shut down, or out of time."""
        if admission is Admission.CLOSED:
            if isinstance(retry.error, LayerHTTPError):
                # Kept as the server's answer: its words may quote the events, and are masked
                # where they are told (the loss line), never copied into other words.
                return Delivery(None, SHUTDOWN, retry.error)
            closing = "gave up: the client is shutting down"
            if retry.error is not None:
                closing += f" (last error: {retry.error})"
            return Delivery(None, SHUTDOWN, LayerRequestError(closing))
        why = retry.error or LayerRequestError(
            f"the Layer API stayed unavailable for {self.retry.max_retry_time:g} s"
        )
        return Delivery(None, RETRIES_EXHAUSTED, why)

    def _splice(self, request: Outgoing, deadline: float) -> Delivery | None:
        """Fill in the request's bodies before their first attempt; why not, if it cannot."""
        if self._splicer is None:
            return None
        spliced = self._splicer.splice(request.bodies, deadline)
        if not isinstance(spliced, LayerSDKException):
            request.bodies = spliced
            return None
        if isinstance(spliced, LayerMissingRequiredConfigurationError):
            return Delivery(None, REJECTED, spliced)
        return Delivery(None, SHUTDOWN if self.gate.closed else RETRIES_EXHAUSTED, spliced)

    # -- one attempt ---------------------------------------------------------------------

    def _attempt(
        self, path: str, bodies: list[bytes], request_ids: list[str], method: str, *, sync: bool
    ) -> Exchange:
        """Send the bodies once, in order, with their headers; what came back, with the
        credentials sent masked wherever the answers or the failure quote them."""
        url = self._base_url + path
        credentials: dict[str, str] = {}
        try:
            headers = self._headers
            if self._auth is not None:
                with self._closing.applies():  # shutdown ends a wait for a token
                    credentials = self._auth.get_headers()
                headers = {**headers, **credentials}
            if method == "GET":
                exchange = _get(self._backend, url, headers)
            else:
                exchange = self._backend.post_all(
                    url,
                    [
                        (body, {**headers, REQUEST_ID_HEADER: request_id})
                        for body, request_id in zip(bodies, request_ids, strict=True)
                    ],
                )
        except LayerAuthError as exc:
            if sync:
                raise  # the caller learns at once that no credentials can be had
            return Exchange([], exc)
        except LayerRequestError as exc:
            exchange = Exchange([], exc)
        # Whatever the provider (a user's own may declare no secrets), what it just sent is
        # known here: an API or a user's session quoting it back shows it masked.
        return _masked(exchange, credentials) if credentials else exchange

    def _sort(self, exchange: Exchange, count: int, reauthenticate: bool) -> _Sorted:
        """Sort what one attempt of ``count`` bodies came to, body by body."""
        deliveries: list[Delivery] = []
        again: list[int] = []
        unauthorized: list[int] = []
        failure: LayerSDKException | None = None
        refusal: LayerHTTPError | None = None
        retry_after: float | None = None
        answered = delivered = False
        for i, response in enumerate(exchange.responses):
            if 200 <= response.status < 300:
                deliveries.append(Delivery(response))
                answered = delivered = True
                continue
            refused = http_error(response)
            if response.status == 401 and reauthenticate:
                # A token the server no longer accepts: one fresh token, one more try.
                deliveries.append(Delivery(response, REJECTED, refused))
                unauthorized.append(i)
                again.append(i)
                answered = True
            elif not is_retryable(response.status):
                deliveries.append(Delivery(response, REJECTED, refused))
                answered = True
                if refusal is None and response.status in CONFIGURATION_STATUSES:
                    refusal = refused
            else:
                deliveries.append(Delivery(response, RETRIES_EXHAUSTED, refused))
                again.append(i)
                failure = refused
                # Header names: lower-case from _http, case-insensitive from requests.
                wish = parse_retry_after(response.headers.get("retry-after"))
                if wish is not None:
                    retry_after = max(retry_after or 0.0, wish)
        unanswered = range(len(exchange.responses), count)
        if unanswered:
            why: LayerSDKException
            if exchange.error is not None or not exchange.responses:
                # No answer at all is a failure to reach the API, whatever the backend said.
                failure = exchange.error or LayerRequestError("the Layer API answered nothing")
                why = failure
            else:
                why = LayerRequestError("the Layer API ended the exchange before answering")
            deliveries += [Delivery(None, RETRIES_EXHAUSTED, why)] * len(unanswered)
            again += unanswered
        return _Sorted(
            deliveries, again, failure, retry_after, unauthorized, answered, delivered, refusal
        )

    def _reauthenticates(self, retry: RetryState) -> bool:
        """Whether a 401 may be retried with fresh credentials (once per request)."""
        return self._auth is not None and not retry.reauthenticated

    def _renew_credentials(self, retry: RetryState) -> bool:
        """After a 401: whether new credentials may get the request through."""
        retry.reauthenticated = True
        return self._auth is not None and self._auth.invalidate()

    # -- life --------------------------------------------------------------------------

    def fresh(self) -> Transport:
        """A transport like this one, with connections of its own (for a forked child)."""
        backend = None if self._own_backend else self._backend
        return Transport(self._config, backend, self._splicer, self.trouble)

    def close(self) -> None:
        """End the waits of the send gate and of synchronous calls (for a backoff or for a
        token), and release connections (those in use too: a request under way ends at once)."""
        self.gate.close()
        self._closing.fire()
        if self._splicer is not None:
            self._splicer.close()
        self._backend.close()


def _log_attempt(
    method: str,
    path: str,
    exchange: Exchange,
    sorted_: _Sorted,
    began: float,
    what: str,
    *,
    retrying: tuple[int, float] | None,
    lost: Counter[str] | None = None,
    bodies: Sequence[bytes] = (),
) -> None:
    """One debug line for one attempt: what was sent, what came back and when, what
    follows. Never a body, a header or the server's words (they may quote the data); an
    error without an answer may quote a malformed one, so the ``bodies``' data is masked
    in it."""
    elapsed = (time.monotonic() - began) * 1000
    statuses = Counter(response.status for response in exchange.responses)
    answers = ", ".join(
        str(status) if times == 1 else f"{status} x{times}" for status, times in statuses.items()
    )
    count = len(sorted_.deliveries)
    unanswered = count - len(exchange.responses)
    if unanswered:
        why = "the exchange ended early"
        if exchange.error is not None:
            why = masked_quotes(str(exchange.error), bodies)
        no_answer = f"no answer ({why})" if unanswered == count else f"{unanswered} unanswered"
        answers = f"{answers}, {no_answer}" if answers else no_answer
    follows = ""
    if retrying is not None:
        number, delay = retrying
        reason = sorted_.failure
        if isinstance(reason, LayerHTTPError):
            because = f"answered {reason.status_code}"
        elif reason is not None:
            because = masked_quotes(str(reason), bodies)
        else:
            because = "sent again at once"
        follows = f"; retry {number} in {delay:.2f} s ({because})"
    if lost:
        follows += "; given up: " + ", ".join(
            f"{times} body(ies) {reason}" for reason, times in lost.items()
        )
    sent = "1 body" if count == 1 else f"{count} bodies"
    logger.debug(
        "layer-sdk: %s %s -> %s in %.1f ms (%s, %s)%s",
        method, path, answers, elapsed, sent, what, follows,
    )  # fmt: skip


def _kept(error: LayerSDKException) -> LayerSDKException:
    """``error`` as a request keeps it while it waits for its retry: an HTTP error without
    the decoded body (up to ``MAX_ANSWER_BYTES``), so that the requests waiting hold
    little memory beyond their events."""
    if isinstance(error, LayerHTTPError) and (
        error.response_data is not None or len(error.message) > 500
    ):
        return LayerHTTPError(error.status_code, error.message[:500], None)
    return error


def _masked(exchange: Exchange, credentials: dict[str, str]) -> Exchange:
    """``exchange`` with each header value of ``credentials`` (and a scheme's credentials
    alone: the token of ``Bearer <token>``) masked in the refusals and the failure."""
    if exchange.error is None and all(200 <= r.status < 300 for r in exchange.responses):
        return exchange  # nothing the server or the network said is kept
    secrets = {part for value in credentials.values() for part in (value, value.partition(" ")[2])}
    responses = [
        response
        if 200 <= response.status < 300 or not response.body
        else response._replace(
            body=scrub(response.body.decode("utf-8", "replace"), secrets).encode()
        )
        for response in exchange.responses
    ]
    error = exchange.error
    if isinstance(error, LayerRequestError) and not isinstance(error, LayerHTTPError):
        message = scrub(str(error), secrets)
        if message != str(error):
            error = LayerRequestError(message)
    return Exchange(responses, error)


def _get(backend: Backend, url: str, headers: dict[str, str]) -> Exchange:
    """A GET as the retry loop reads an exchange: it has no body, so no Content-Type."""
    headers = {name: value for name, value in headers.items() if name != "Content-Type"}
    try:
        return Exchange([backend.get(url, headers)], None)
    except LayerRequestError as exc:
        return Exchange([], exc)


def http_error(response: Response) -> LayerHTTPError:
    """A LayerHTTPError carrying the server's status, message and decoded body.

    The body is scrubbed of tokens and secrets (a server may echo our
    Authorization header) before anything is taken from it, and before it is cut.
    """
    text = scrub(response.body.decode("utf-8", "replace")) if response.body else ""
    data: Any = None
    try:
        data = msgspec.json.decode(text) if text else None
    except msgspec.DecodeError:
        data = None
    message = None
    if isinstance(data, dict):
        for key in ("error", "message", "detail", "error_description"):
            if isinstance(data.get(key), str):
                message = data[key]
                break
    if message is None:
        message = text[:500] or f"HTTP {response.status}"
    return LayerHTTPError(response.status, message, data)
