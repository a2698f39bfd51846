"""The transport's attempts and its two loops, and the worker, through the in-memory backend.

A backend seam with an in-memory backend. Every test here runs
without sockets: ``MemoryBackend`` (``tests/memory_backend.py``) answers from a
script and records each request with its headers, so the tests can say
exactly which bodies were sent, how often, and with which request ID.

A buffered request is attempted once per ``Transport.deliver``; what failed
for now comes back with the time its retry is due, and waits in the queue.
``settle`` plays the worker's part with a real ``ExportQueue``, without threads.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Iterator

import pytest

from layer_sdk import AuthProvider
from layer_sdk._config import Config
from layer_sdk._exceptions import LayerHTTPError, LayerRequestError
from layer_sdk._export import Event, Exchange, Exporter
from layer_sdk._export._losses import REJECTED, RETRIES_EXHAUSTED
from layer_sdk._export._queue import AGAIN as SEND_AGAIN
from layer_sdk._export._queue import ExportQueue, Request
from layer_sdk._export._retry import OUTAGE_AFTER, RECENT, Admission, SendGate
from layer_sdk._export._transport import Delivery, Transport

from .helpers import APP_ID, wait_until
from .memory_backend import CUT, OK, Answer, MemoryBackend, Sent, answer

BASE_URL = "https://api.layer.test"
ACTIONS = "/v1/sessions/s/actions"
#: Retried at once: Retry-After 0 makes the backoff 0 and pauses no one.
AGAIN = answer(503, retry_after="0")
#: Retried after the policy's backoff.
AGAIN_LATER = answer(503)
REFUSED = LayerRequestError("could not reach the Layer API: ConnectionRefusedError")


def backend(then: Answer) -> MemoryBackend:
    """A backend that answers every request with ``then``."""
    return MemoryBackend(then=then)


def make_transport(backend: MemoryBackend, **options: object) -> Transport:
    config = Config.resolve(base_url=BASE_URL, application_id=APP_ID, **options)
    return fast(Transport(config, backend))


def fast(transport: Transport) -> Transport:
    """Backoffs of milliseconds: these tests count attempts, they do not time them."""
    transport.retry = dataclasses.replace(transport.retry, backoff_factor=0.002, backoff_max=0.01)
    transport.gate = SendGate(transport.retry)
    return transport


def ids(requests: list[Sent]) -> list[str]:
    return [request.request_id for request in requests]


def queued(bodies: list[bytes]) -> tuple[ExportQueue, Request]:
    """A queue holding one action per body for session "s", and the request it hands out."""
    queue = ExportQueue(
        max_events=1000,
        max_bytes=10_000_000,
        max_event_bytes=1_000_000,
        batch_size=1000,
        max_request_bytes=10_000_000,
        max_pipelined=1000,
        flush_interval=0.0,
        on_loss=lambda reason, count: None,
    )
    for body in bodies:
        queue.put(Event("s", body, False))
    request = queue.take(0)
    assert request is not None and request.path == ACTIONS and request.bodies == bodies
    return queue, request


def outcomes(deliveries: list[Delivery]) -> list[str | None]:
    """What the worker tells the queue of each body."""
    return [SEND_AGAIN if d.retry_at is not None else d.loss for d in deliveries]


def settle(transport: Transport, bodies: list[bytes]) -> list[Delivery]:
    """What becomes of each body, attempt after attempt, as the worker does it: a body that
    failed for now goes back to the queue, which hands its request out again when due."""
    queue, request = queued(bodies)
    settled: dict[bytes, Delivery] = {}
    attempts = 0
    while True:
        attempts += 1
        assert attempts < 1000, "no end to the attempts"
        deliveries = transport.deliver(request)
        retry_at = 0.0
        for body, delivery in zip(request.bodies, deliveries, strict=True):
            if delivery.retry_at is None:
                settled[body] = delivery
            else:
                retry_at = delivery.retry_at
        queue.complete_each(request, outcomes(deliveries), retry_at)
        if len(settled) == len(bodies):
            return [settled[body] for body in bodies]
        taken = queue.take(5)  # waits until the retry is due
        assert taken is request


# -- request IDs ---------------------------------------------------------------------


def test_a_retried_body_keeps_its_request_id_and_each_body_has_its_own() -> None:
    """The one retry loop sends a body again with the same X-Request-Id."""
    backend = MemoryBackend(AGAIN, OK, CUT, OK)
    transport = make_transport(backend)
    deliveries = settle(transport, [b"a", b"b"])
    assert [delivery.loss for delivery in deliveries] == [None, None]
    # "a" got a 503, "b" a 200; then "a" again (cut: a connection error), then "a" once more.
    assert [request.body for request in backend.requests] == [b"a", b"b", b"a", b"a"]
    a_first, b, a_second, a_third = backend.requests
    assert a_first.request_id == a_second.request_id == a_third.request_id
    assert a_first.request_id != b.request_id
    assert len(a_first.request_id) == 32 and int(a_first.request_id, 16) >= 0

    # The synchronous path too, through the same loop.
    backend = MemoryBackend(AGAIN, REFUSED, OK)
    assert make_transport(backend).send("/v1/sessions", b"{}").status == 200
    assert len(backend.requests) == 3 and len(set(ids(backend.requests))) == 1


# -- pipelines -----------------------------------------------------------------------


@pytest.mark.parametrize("end", [CUT, REFUSED], ids=["closed", "connection-error"])
def test_a_pipeline_cut_short_resends_the_rest_in_order_with_the_same_ids(end: Answer) -> None:
    """Two of five answered, then the connection ended: the other three are
    sent again, in order, with their IDs; the two answered ones are not sent again."""
    backend = MemoryBackend(OK, OK, end)
    transport = make_transport(backend)
    bodies = [b"0", b"1", b"2", b"3", b"4"]
    queue, request = queued(bodies)
    first_attempt = transport.deliver(request)
    answered_at = time.monotonic()
    assert [delivery.loss for delivery in first_attempt] == [None] * 5
    assert [delivery.retry_at is not None for delivery in first_attempt] == [False] * 2 + [True] * 3
    if end is REFUSED:
        # A connection error is a failure: the three wait a backoff, with the error.
        assert all(d.retry_at is not None and d.retry_at > answered_at for d in first_attempt[2:])
        assert all(d.error is REFUSED for d in first_attempt[2:])
    else:
        # A server that closes after some answers is not failing: the rest go at once.
        assert all(d.retry_at is not None and d.retry_at <= answered_at for d in first_attempt[2:])
    queue.complete_each(request, outcomes(first_attempt), first_attempt[-1].retry_at or 0.0)
    assert queue.take(5) is request  # once due
    assert request.bodies == bodies[2:]
    assert [delivery.loss for delivery in transport.deliver(request)] == [None] * 3
    first, second = backend.exchanges
    assert [request.body for request in first] == bodies
    assert [request.body for request in second] == bodies[2:]
    assert ids(second) == ids(first)[2:]
    assert [request.body for request in backend.delivered] == bodies
    assert queue.stats().retried == 3  # sent again, with a wait or without


def test_a_4xx_in_a_pipeline_fails_only_its_body() -> None:
    """The refused body is given up on; the bodies around it are delivered
    and not sent again."""
    backend = MemoryBackend(OK, answer(422, b'{"error": "data: bad"}'), OK, OK)
    deliveries = settle(make_transport(backend), [b"0", b"1", b"2", b"3"])
    assert [delivery.loss for delivery in deliveries] == [None, REJECTED, None, None]
    assert deliveries[1].status == 422
    assert isinstance(deliveries[1].error, LayerHTTPError)
    assert deliveries[1].error.message == "data: bad"
    assert len(backend.exchanges) == 1


def test_a_5xx_in_a_pipeline_resends_only_its_body() -> None:
    """A transient answer in the middle: that body alone goes again."""
    backend = MemoryBackend(OK, AGAIN, OK, OK)
    deliveries = settle(make_transport(backend), [b"0", b"1", b"2", b"3"])
    assert [delivery.loss for delivery in deliveries] == [None] * 4
    first, second = backend.exchanges
    assert [request.body for request in second] == [b"1"]
    assert ids(second) == [first[1].request_id]


# -- a failure delays its own request, not a sender ----------------------------------


def test_an_attempt_that_fails_returns_at_once_with_its_retry_due_after_the_backoff() -> None:
    """The sender is not held for the backoff: deliver() returns as soon as the answer
    came, with the time the retry is due (the default policy's first step: 0.25-0.5 s);
    the request then waits in the queue, and the sender takes other work."""
    config = Config.resolve(base_url=BASE_URL, application_id=APP_ID)
    transport = Transport(config, backend(AGAIN_LATER))
    _, request = queued([b"0"])
    (delivery,) = transport.deliver(request)
    returned_at = time.monotonic()
    assert delivery.loss is None and delivery.retry_at is not None
    assert isinstance(delivery.error, LayerHTTPError) and delivery.error.status_code == 503
    assert returned_at + 0.1 < delivery.retry_at <= returned_at + 0.5


def retry_delays(transport: Transport, request: Request, count: int) -> list[float]:
    """The waits the transport asks for after ``count`` failed attempts in a row."""
    delays = []
    for _ in range(count):
        (delivery,) = transport.deliver(request)
        assert delivery.retry_at is not None
        delays.append(delivery.retry_at - time.monotonic())
    return delays


def test_a_request_s_backoff_grows_only_while_nearly_every_attempt_fails() -> None:
    """While the API answers a fair share (one bad backend in five, or four), a request
    that keeps failing waits the first backoff step each time (0.25-0.5 s), so that its
    events are not held back; once nearly every recent attempt fails (19 in 20), its
    backoff doubles at each failure."""
    config = Config.resolve(base_url=BASE_URL, application_id=APP_ID)
    transport = Transport(config, backend(AGAIN_LATER))
    _, request = queued([b"0"])
    delays = []
    for _ in range(4):
        for _ in range(4):
            transport.gate.passed()  # the other requests are delivered
        delays += retry_delays(transport, request, 1)
    assert all(0.2 < delay <= 0.5 for delay in delays), delays
    for _ in range(RECENT):  # four attempts in five fail: still a fair share answered
        for _ in range(4):
            transport.gate.failed(probe=False, retry_after=None)
        transport.gate.passed()
    assert not transport.gate.failing
    delays += retry_delays(transport, request, 1)
    assert all(0.2 < delay <= 0.5 for delay in delays), delays
    for _ in range(RECENT):  # now 19 attempts in 20 fail
        for _ in range(19):
            transport.gate.failed(probe=False, retry_after=None)
        transport.gate.passed()
    assert transport.gate.failing and transport.gate.healthy
    (delay,) = retry_delays(transport, request, 1)  # the sixth failure of this request
    assert 5.0 <= delay <= 10.0  # backoff(5): 5-10 s (backoff_max)


def test_a_retry_after_delays_the_request_it_answered_and_pauses_no_one() -> None:
    """One answer with Retry-After among healthy ones: its request's retry is due that
    much later, and the other senders go on (the gate stays open)."""
    transport = make_transport(backend(answer(503, retry_after="30")))
    for _ in range(10):
        transport.gate.passed()
    _, request = queued([b"0"])
    (delivery,) = transport.deliver(request)
    assert delivery.retry_at is not None and 29 < delivery.retry_at - time.monotonic() <= 30
    assert transport.gate.healthy
    assert transport.gate.admit(time.monotonic()) is Admission.SEND


# -- the two budgets ------------------------------------------------------------------


@pytest.mark.parametrize("failure", [AGAIN, REFUSED], ids=["503", "connection-error"])
def test_the_sync_path_raises_after_max_retries(failure: Answer) -> None:
    """Max_retries attempts after the first, then the documented exception."""
    backend = MemoryBackend(*[failure] * 10)  # then OK: a loop that went on would succeed
    transport = make_transport(backend, max_retries=2)
    expected = LayerHTTPError if failure is AGAIN else LayerRequestError
    with pytest.raises(expected) as raised:
        transport.send("/v1/sessions", b"{}")
    assert len(backend.requests) == 3
    if failure is AGAIN:
        assert isinstance(raised.value, LayerHTTPError) and raised.value.status_code == 503

    backend = MemoryBackend(*[failure] * 10)
    with pytest.raises(expected):
        make_transport(backend, max_retries=0).send("/v1/sessions", b"{}")
    assert len(backend.requests) == 1


@pytest.mark.parametrize("failure", [AGAIN, REFUSED], ids=["503", "connection-error"])
def test_the_buffered_path_gives_up_when_max_retry_time_has_passed(failure: Answer) -> None:
    """Retried (more than max_retries times) until the time budget is spent,
    then given up on as retries_exhausted, with the last answer; never raises."""
    backend = MemoryBackend(then=failure)
    transport = make_transport(backend, max_retries=1, max_retry_time=0.3)
    started = time.monotonic()
    (delivery,) = settle(transport, [b"0"])
    elapsed = time.monotonic() - started
    assert delivery.loss == RETRIES_EXHAUSTED
    assert len(backend.requests) > 2  # not capped by max_retries
    assert elapsed < 2.0  # not much past 0.3 s (a deadline ten times too long would be 3 s)
    if failure is AGAIN:
        # The last answer's error, whether the budget ran out at an answer or in between.
        assert isinstance(delivery.error, LayerHTTPError) and delivery.error.status_code == 503
    else:
        assert delivery.response is None and delivery.error is REFUSED


# -- 401 ------------------------------------------------------------------------------


class Tokens(AuthProvider):
    """Token N until the API refuses it; ``invalidate`` then makes token N+1."""

    def __init__(self, *, renewable: bool = True) -> None:
        self.issued = 1
        self.renewable = renewable
        self.invalidated = 0

    def get_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer token-{self.issued}"}

    def invalidate(self) -> bool:
        self.invalidated += 1
        self.issued += 1
        return self.renewable


def bearers(backend: MemoryBackend) -> list[str]:
    return [request.headers["Authorization"] for request in backend.requests]


def test_a_401_renews_the_token_and_retries_once_with_the_same_request_id() -> None:
    """401 → invalidate → one more try with the new token."""
    tokens = Tokens()
    backend = MemoryBackend(answer(401))
    (delivery,) = settle(make_transport(backend, auth_provider=tokens), [b"0"])
    assert delivery.loss is None
    assert bearers(backend) == ["Bearer token-1", "Bearer token-2"]
    assert len(set(ids(backend.requests))) == 1
    assert tokens.invalidated == 1


def test_a_second_401_is_final_on_both_paths() -> None:
    """A token refused twice is not renewed again (no loop on 401)."""
    backend = MemoryBackend(*[answer(401)] * 5)  # then OK: a loop that went on would succeed
    (delivery,) = settle(make_transport(backend, auth_provider=Tokens()), [b"0"])
    assert delivery.loss == REJECTED and delivery.status == 401
    assert len(backend.requests) == 2

    backend = MemoryBackend(*[answer(401)] * 5)
    with pytest.raises(LayerHTTPError) as raised:
        make_transport(backend, auth_provider=Tokens()).send("/v1/sessions", b"{}")
    assert raised.value.status_code == 401
    assert len(backend.requests) == 2


def test_a_401_is_final_when_no_new_credentials_can_be_had() -> None:
    """Invalidate() says a retry cannot help (or there is no provider)."""
    backend = MemoryBackend(answer(401))
    tokens = Tokens(renewable=False)
    (delivery,) = settle(make_transport(backend, auth_provider=tokens), [b"0"])
    assert delivery.loss == REJECTED
    assert (len(backend.requests), tokens.invalidated) == (1, 1)

    backend = MemoryBackend(answer(401))
    (delivery,) = settle(make_transport(backend), [b"0"])
    assert delivery.loss == REJECTED
    assert len(backend.requests) == 1


# -- the exporter, end to end ----------------------------------------------------------


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    made: list[Exporter] = []
    yield made
    for exporter in made:
        exporter.close()
        exporter.finish(time.monotonic() + 2)


def make_exporter(made: list[Exporter], backend: MemoryBackend, **options: object) -> Exporter:
    settings: dict[str, object] = {"flush_interval": 0.01, **options}
    exporter = Exporter(
        Config.resolve(base_url=BASE_URL, application_id=APP_ID, **settings), backend
    )
    fast(exporter.transport)  # before any event: the senders read both at each request
    made.append(exporter)
    return exporter


def create(session_id: str) -> Event:
    return Event(session_id, json.dumps({"session_id": session_id}).encode(), True)


def action(session_id: str, n: int, **fields: object) -> Event:
    return Event(session_id, json.dumps({"n": n, **fields}).encode(), False)


def stored(backend: MemoryBackend, session_id: str) -> list[int]:
    """The action numbers of a session as a server would have kept them, merged ones too."""
    numbers = []
    for request in backend.delivered:
        body = json.loads(request.body)
        if request.path.endswith(f"/{session_id}/actions"):
            numbers.append(body["n"])
        elif body.get("session_id") == session_id:
            numbers.extend(merged["n"] for merged in body.get("actions", []))
    return numbers


def test_the_exporter_keeps_each_session_s_order_through_cut_pipelines(
    exporters: list[Exporter],
) -> None:
    """The server hangs up after every second answer, on every connection,
    and still each session's actions are kept once each, in the order they were put."""
    answers = itertools.cycle([OK, OK, CUT])
    lock = threading.Lock()

    def server(sent: Sent) -> Answer:
        with lock:
            return next(answers)

    backend = MemoryBackend(then=server)
    exporter = make_exporter(exporters, backend, max_batch_size=20)
    sessions = ["s1", "s2", "s3"]
    for session_id in sessions:
        exporter.put(create(session_id))
    assert exporter.flush(10) is True
    for n in range(60):
        for session_id in sessions:
            exporter.put(action(session_id, n))
    assert exporter.flush(10) is True
    for session_id in sessions:
        assert stored(backend, session_id) == list(range(60))
    stats = exporter.stats()
    assert (stats.sent, stats.failed, stats.queued) == (183, 0, 0)
    # It was really cut short: some requests were sent twice, under the same ID.
    assert len(backend.requests) > len({request.request_id for request in backend.requests})


def test_the_exporter_splits_a_refused_merged_create_so_only_the_bad_action_fails(
    exporters: list[Exporter],
) -> None:
    """A 422 for the merged create; the create goes alone, then each action:
    the one the server refuses fails, the others arrive in order."""

    def server(sent: Sent) -> Answer:
        body = json.loads(sent.body)
        if "actions" in body or body.get("bad"):
            return answer(422, b'{"error": "data: bad"}')
        return OK

    backend = MemoryBackend(then=server)
    exporter = make_exporter(exporters, backend, flush_interval=30)
    exporter.put(create("s1"))
    for n in range(4):
        exporter.put(action("s1", n, bad=n == 2))
    assert exporter.flush(10) is False  # one event failed
    assert stored(backend, "s1") == [0, 1, 3]
    merged, alone = backend.requests[:2]
    assert [action["n"] for action in json.loads(merged.body)["actions"]] == [0, 1, 2, 3]
    assert "actions" not in json.loads(alone.body)
    paths = [request.path for request in backend.delivered]
    assert paths == ["/v1/sessions"] + ["/v1/sessions/s1/actions"] * 3
    stats = exporter.stats()
    assert (stats.sent, stats.failed, stats.retried) == (4, 1, 5)
    assert stats.failed_by_reason == {REJECTED: 1}


class SilentBackend:
    """A backend that answers nothing and reports no error: a broken one."""

    def __init__(self) -> None:
        self.exchanges = 0

    def post_all(self, url: str, requests: list[tuple[bytes, dict[str, str]]]) -> Exchange:
        self.exchanges += 1
        return Exchange([], None)

    def close(self) -> None:
        """Nothing to release."""


def test_a_backend_that_answers_nothing_is_a_failure_not_a_busy_loop() -> None:
    """No answer and no error is taken as a connection failure,
    so the retry budget and the backoff apply (a broken backend cannot spin forever)."""
    backend = SilentBackend()
    config = Config.resolve(base_url=BASE_URL, application_id=APP_ID, max_retry_time=0.2)
    transport = fast(Transport(config, backend))
    (delivery,) = settle(transport, [b"0"])
    assert delivery.loss == RETRIES_EXHAUSTED
    assert 2 <= backend.exchanges < 200


def test_when_the_api_answers_again_the_retries_waiting_go_at_once(
    exporters: list[Exporter],
) -> None:
    """A request failed and waits for a long backoff; the API then counts as unreachable,
    and a probe gets an answer: everyone resumes, the retries waiting included (they
    waited for the API, which answers now), not after their backoffs."""
    failed_once: set[bytes] = set()

    def server(sent: Sent) -> Answer:
        if b'"a"' in sent.body and sent.body not in failed_once:
            failed_once.add(sent.body)
            return REFUSED
        return OK

    backend = MemoryBackend(then=server)
    exporter = make_exporter(exporters, backend)
    transport = exporter.transport
    transport.retry = dataclasses.replace(transport.retry, backoff_factor=60.0, backoff_max=60.0)
    exporter.put(create("a"))
    assert wait_until(lambda: exporter.stats().retried == 1)  # "a" waits 30-60 s now
    for _ in range(OUTAGE_AFTER):
        transport.gate.failed(probe=False, retry_after=None)  # other requests failed too
    assert not transport.gate.healthy
    exporter.put(create("b"))  # the probe: answered
    assert exporter.flush(10) is True
    assert [json.loads(sent.body)["session_id"] for sent in backend.delivered] == ["b", "a"]
