"""OIDC client-credentials authentication, against a real OpenID provider.

The provider is ``oidc-provider`` (npm) run by Node on 127.0.0.1 with a
Keycloak-style realm (``tests/oidc``, ``tests/oidc_provider.py``). Token
requests are counted in the provider's own log, never in the SDK. The local
collector plays a Layer API that accepts a token only if the provider issued
it and its ``exp`` has not come (``BearerCheck``): a request that carried an
expired or unknown token is answered 401 and shows in ``collector.requests``.

Timing: lifetimes of 2 s make refreshes happen within seconds. With
``expires_in`` = 2 the SDK counts the token good for 1 s (``expires_in`` is
rounded to whole seconds, and the provider stamps exp = floor(now) + 2) and
refreshes it 0.4 s (a fifth of the lifetime) before that: every 0.6 s.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from layer_sdk import (
    Client,
    LayerAuthError,
    LayerMissingRequiredConfigurationError,
    LayerRequestError,
    OIDCClientCredentials,
    _auth,
)
from layer_sdk.collector import LocalCollector, ReceivedRequest

from .helpers import (
    APP_ID,
    FAST,
    PROMPT,
    DrippingServer,
    JSONHandler,
    MakeClient,
    held_by_another_thread,
    http_server,
    in_multiprocessing_child,
    wait_until,
)
from .oidc_provider import BearerCheck, OIDCProvider, oidc

__all__ = ["oidc"]  # the fixture, imported so that pytest finds it

StartProvider = Callable[..., OIDCProvider]

#: The whole-second rounding of ``expires_in`` and the refresh margin, as the SDK applies them.
SHORT_TTL = 2
REFRESH_PERIOD = max(SHORT_TTL - 1.0, SHORT_TTL / 2) - min(60.0, SHORT_TTL / 5)  # 0.6 s


def oidc_auth(
    provider: OIDCProvider,
    kind: type[OIDCClientCredentials] = OIDCClientCredentials,
    **options: Any,
) -> OIDCClientCredentials:
    """Credentials of ``kind`` for the provider's client; ``options`` override its settings."""
    settings: dict[str, Any] = {
        "token_url": provider.token_url,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        "http_timeout": 5.0,
        **options,
    }
    return kind(**settings)


def token_of(request: ReceivedRequest) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    assert scheme == "Bearer", f"{request.path} carried no bearer token"
    return token


def assert_every_request_carried_a_valid_token(
    collector: LocalCollector, check: BearerCheck
) -> None:
    """No request to the API was refused: each one's token was issued and not expired."""
    received = collector.requests
    assert received, "no request reached the API"
    assert check.refused == []
    assert [request.status for request in received if not 200 <= request.status < 300] == []
    assert {token_of(request) for request in received} <= check.accepted_tokens


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged, by the SDK and by the libraries under it, at DEBUG."""
    caplog.set_level(logging.DEBUG)
    yield caplog


# -- caching and refresh ------------------------------------------------------------


def test_calls_within_the_lifetime_cost_exactly_one_token_request(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector
) -> None:
    provider = oidc(token_ttl=300)
    check = provider.bearer_check()
    collector.require_bearer(check)
    client = make_client(auth_provider=oidc_auth(provider))

    for _ in range(50):
        client.create_session(sync=True)
    for _ in range(100):
        session_id = client.create_session()
        client.append_action(session_id, kind=PROMPT, data="hi")
    assert client.flush(10) is True

    assert collector.event_count == 50 + 200
    assert [request.status for request in provider.token_requests()] == [200]
    assert_every_request_carried_a_valid_token(collector, check)
    assert {token_of(request) for request in collector.requests} == set(provider.issued())


class HandOutLog(OIDCClientCredentials):
    """OIDC credentials that note each token handed to a request, with the Unix time then."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.handed_out: list[tuple[float, str]] = []  # list.append: safe from any thread

    def get_headers(self) -> dict[str, str]:
        headers = super().get_headers()
        self.handed_out.append((time.time(), headers["Authorization"].partition(" ")[2]))
        return headers


def test_a_short_lifetime_is_refreshed_ahead_of_expiry_on_both_paths(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector
) -> None:
    """Three lifetimes of steady traffic: every token is replaced before it expires, and
    no sooner than due (a refresh every 0.6 s at most).

    What is asserted holds however late a busy machine runs the calls (a late call
    refreshes late, and still fetches a fresh token first): no expired token handed
    out or sent, and no more token requests than the elapsed time allows. The
    refresh point itself is pinned on a clock the test moves (the test below).
    """
    provider = oidc(token_ttl=SHORT_TTL)
    check = provider.bearer_check()
    collector.require_bearer(check)
    auth = oidc_auth(provider, kind=HandOutLog)
    assert isinstance(auth, HandOutLog)
    client = make_client(auth_provider=auth)

    started = time.monotonic()
    run_for = 3 * SHORT_TTL
    while time.monotonic() - started < run_for:
        session_id = client.create_session(sync=True)  # the sync path
        client.append_action(session_id, kind=PROMPT)  # the worker
        time.sleep(0.05)  # pacing: steady traffic, a call every ~50 ms; not synchronization
    assert client.flush(10) is True
    ran_for = time.monotonic() - started

    token_requests = provider.token_requests()
    assert all(request.status == 200 for request in token_requests)
    expiry = provider.issued()
    assert len(expiry) == len(token_requests)
    # Refreshed before expiry: the SDK handed each token to requests only before its exp...
    handed_out = auth.handed_out
    assert {token for _, token in handed_out} == set(expiry)
    late = [(at, expiry[token]) for at, token in handed_out if at >= expiry[token]]
    assert late == [], late
    # ...so no request carried an expired token: the API refused none, on either path.
    assert_every_request_carried_a_valid_token(collector, check)
    # Not before it was due: a token is fetched REFRESH_PERIOD after the one before, at the
    # earliest, so the elapsed time bounds the count. A run of three lifetimes needs a refresh.
    assert 2 <= len(token_requests) <= ran_for / REFRESH_PERIOD + 1, len(token_requests)
    arrivals = [request.at for request in token_requests]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    leads = [expiry[old] - at for old, at in zip(expiry, arrivals[1:], strict=False)]
    print(
        f"\n{len(token_requests)} token requests in {ran_for:.2f} s (lifetime {SHORT_TTL} s); "
        f"gaps {min(gaps):.3f}-{max(gaps):.3f} s (mean {sum(gaps) / len(gaps):.3f}); "
        f"new token {min(leads):.3f}-{max(leads):.3f} s before the old one's exp"
    )


@pytest.mark.parametrize(("ttl", "refresh_after"), [(10, 7.0), (600, 539.0)])
def test_a_token_is_refreshed_ahead_of_expiry_by_the_margin(
    oidc: StartProvider, monkeypatch: pytest.MonkeyPatch, ttl: int, refresh_after: float
) -> None:
    """The refresh point, on a clock the test moves.

    ``expires_in`` counts whole seconds, so the SDK counts a token good for
    ``ttl - 1`` s, and refreshes it the smaller of 60 s and a fifth of ``ttl``
    before that: 10 s -> after 9 - 2 = 7 s; 600 s -> after 599 - 60 = 539 s.
    """
    provider = oidc(token_ttl=ttl)
    now = [1_000.0]
    monkeypatch.setattr(_auth, "time", SimpleNamespace(monotonic=lambda: now[0]))
    auth = oidc_auth(provider)
    first = auth.get_headers()
    now[0] += refresh_after - 0.001
    assert auth.get_headers() == first  # not due yet
    assert len(provider.token_requests()) == 1
    now[0] += 0.001
    assert auth.get_headers() == first  # due: fetched meanwhile, the valid one goes on
    assert wait_until(lambda: len(provider.token_requests()) == 2)
    assert wait_until(lambda: auth.get_headers() != first)
    second = auth.get_headers()
    assert len(provider.token_requests()) == 2
    assert [token for token in provider.issued()] == [
        header["Authorization"].partition(" ")[2] for header in (first, second)
    ]


def test_sixteen_threads_at_the_moment_of_expiry_cause_one_token_request(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector
) -> None:
    provider = oidc(token_ttl=SHORT_TTL)
    check = provider.bearer_check()
    collector.require_bearer(check)
    client = make_client(auth_provider=oidc_auth(provider))
    client.create_session(sync=True)
    [(first, exp)] = provider.issued().items()
    # Past its exp no thread may send the token any more: all sixteen need the new one.
    assert wait_until(lambda: time.time() >= exp, timeout=SHORT_TTL + 1)
    assert provider.introspect(first) == {"active": False}

    assert create_sessions_at_once(client, 16) == []
    assert len(provider.token_requests()) == 2
    assert len(collector.sessions) == 17
    second = list(provider.issued())[1]
    assert [token_of(request) for request in collector.requests[1:]] == [second] * 16
    assert_every_request_carried_a_valid_token(collector, check)


def create_sessions_at_once(client: Client, threads: int) -> list[BaseException]:
    """``threads`` threads each create a session with sync=True at the same moment; their errors."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            barrier.wait(5)
            client.create_session(sync=True)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=call) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(10)
    return errors


# -- 401 from the API -----------------------------------------------------------------


def test_an_api_401_costs_one_refresh_and_one_retry_on_both_paths(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector
) -> None:
    provider = oidc(token_ttl=300)
    check = provider.bearer_check(introspect=True)  # notices a revoked token
    collector.require_bearer(check)
    client = make_client(auth_provider=oidc_auth(provider))
    client.create_session(sync=True)
    [first] = provider.issued()

    provider.revoke(first)  # the API will now refuse the cached, unexpired token
    session_id = client.create_session(sync=True)
    assert collector.session(session_id) is not None
    [ok, refused, retried] = collector.requests
    assert (ok.status, refused.status, retried.status) == (200, 401, 200)
    assert refused.headers["x-request-id"] == retried.headers["x-request-id"]
    [_, second] = provider.issued()
    assert (token_of(refused), token_of(retried)) == (first, second)

    provider.revoke(second)  # the same on the worker's path
    client.create_session()
    assert client.flush(10) is True
    assert [request.status for request in collector.requests[3:]] == [401, 200]
    assert len(provider.token_requests()) == 3
    assert client.stats().failed == 0


def test_sixteen_requests_refused_with_the_same_token_cause_one_refresh(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector
) -> None:
    provider = oidc(token_ttl=300)
    collector.require_bearer(provider.bearer_check(introspect=True))
    client = make_client(auth_provider=oidc_auth(provider))
    client.create_session(sync=True)
    provider.revoke(next(iter(provider.issued())))

    assert create_sessions_at_once(client, 16) == []
    assert len(provider.token_requests()) == 2
    assert len(collector.sessions) == 17
    refused = {r.headers["x-request-id"] for r in collector.requests if r.status == 401}
    delivered = {r.headers["x-request-id"] for r in collector.requests if r.status == 200}
    assert refused and refused <= delivered


class _OnlyAccessToken(JSONHandler):
    """Passes token requests to the real provider and answers only its ``access_token``.

    Some providers say no more than that: no ``token_type``, no ``expires_in``.
    """

    token_url = ""

    def do_POST(self) -> None:
        answer = requests.post(
            self.token_url,
            data=self.read_body(),
            headers={"Content-Type": self.headers["Content-Type"]},
            timeout=5,
        )
        reply = {"access_token": answer.json()["access_token"]} if answer.ok else answer.json()
        self.send_json(answer.status_code, json.dumps(reply).encode())


def test_a_token_without_expires_in_is_sent_as_bearer_and_kept_until_a_401(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector
) -> None:
    provider = oidc(token_ttl=SHORT_TTL)
    handler = type("Handler", (_OnlyAccessToken,), {"token_url": provider.token_url})
    with http_server(handler) as terse:
        check = provider.bearer_check()
        collector.require_bearer(check)
        token_url = f"http://127.0.0.1:{terse.server_address[1]}/realms/layer/token"
        client = make_client(auth_provider=oidc_auth(provider, token_url=token_url))
        client.create_session(sync=True)
        [(first, exp)] = provider.issued().items()
        client.create_session(sync=True)  # still the same token: no expiry known
        assert len(provider.token_requests()) == 1

        assert wait_until(lambda: time.time() >= exp, timeout=SHORT_TTL + 1)
        client.create_session(sync=True)  # the API refuses it now: one refresh, one retry
    assert [request.status for request in collector.requests] == [200, 200, 401, 200]
    [_, second] = provider.issued()
    assert [token_of(request) for request in collector.requests] == [first] * 3 + [second]
    assert len(provider.token_requests()) == 2


# -- refusals and outages ---------------------------------------------------------------


def test_a_wrong_secret_raises_auth_error_and_nothing_leaks(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector, debug_log: Any
) -> None:
    provider = oidc()
    wrong = "wrong-" + provider.client_secret
    auth = oidc_auth(provider, client_secret=wrong)
    client = make_client(auth_provider=auth)

    with pytest.raises(LayerAuthError) as raised:
        client.create_session(sync=True)
    error = raised.value
    assert "401" in str(error) and "invalid_client" in str(error)
    assert "client authentication failed" in str(error)  # the provider's own words
    assert error.__cause__ is None
    assert wait_until(lambda: provider.token_requests()[-1].status is not None)
    assert [(r.status, r.error) for r in provider.token_requests()] == [(401, "invalid_client")]
    assert collector.requests == []  # nothing reached the API without credentials

    seen = [
        str(error),
        repr(error),
        "".join(traceback.format_exception(error)),
        repr(auth),
        repr(vars(auth)),
        repr(client),
        repr(client.stats()),
        debug_log.text,
    ]
    for secret in (wrong, provider.client_secret):
        assert not [text for text in seen if secret in text]


def test_a_refused_client_keeps_its_buffered_events_and_delivers_them_once_allowed(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector, caplog: Any
) -> None:
    """401 from the token endpoint on the worker's path: queued, retried with backoff, logged."""
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    provider = oidc()
    collector.require_bearer(provider.bearer_check())
    new_secret = "rotated-" + provider.client_secret
    client = make_client(auth_provider=oidc_auth(provider, client_secret=new_secret))
    for _ in range(5):
        session_id = client.create_session()
        client.append_action(session_id, kind=PROMPT)

    assert wait_until(lambda: client.stats().retried >= 2 * 2)  # two tries of some request
    stats = client.stats()
    assert (stats.queued, stats.failed, stats.dropped, stats.sent) == (10, 0, 0, 0)
    refusals = provider.token_requests()
    assert refusals and {(r.status, r.error) for r in refusals} <= {(401, "invalid_client")}
    assert "no credentials" in caplog.text and "invalid_client" in caplog.text
    assert new_secret not in caplog.text

    provider.restart(client_secret=new_secret)  # the administrator updates the client
    assert client.flush(20) is True
    assert collector.event_count == 10
    stats = client.stats()
    assert (stats.sent, stats.failed, stats.dropped) == (10, 0, 0)
    statuses = [request.status for request in provider.token_requests()]
    assert statuses[-1] == 200 and statuses.count(200) == 1
    print(f"\n{len(refusals)} refused token requests while {stats.retried} retries were counted")


def test_the_provider_stopped_and_restarted_mid_run_loses_no_events(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector
) -> None:
    provider = oidc(token_ttl=SHORT_TTL)
    check = provider.bearer_check()
    collector.require_bearer(check)
    # The token endpoint down is retried like the API down, within max_retry_time.
    client = make_client(auth_provider=oidc_auth(provider))
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            session_id = client.create_session()
            client.append_action(session_id, kind=PROMPT)
            stop.wait(0.02)  # pacing: a steady producer, not synchronization

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert wait_until(lambda: collector.event_count >= 20)
        provider.stop()
        stopped = time.monotonic()
        # Its token expires within a second: the worker then meets the closed port.
        assert wait_until(lambda: client.stats().retried > 0, timeout=SHORT_TTL + 5)
        issued_before = len(provider.issued())
        provider.restart()
        down_for = time.monotonic() - stopped
        assert wait_until(lambda: len(provider.issued()) > issued_before)
        delivered = collector.event_count
        assert wait_until(lambda: collector.event_count >= delivered + 20)  # flowing again
    finally:
        stop.set()
        producer.join(5)
    assert client.flush(20) is True
    stats = client.stats()
    assert (stats.failed, stats.dropped, stats.queued) == (0, 0, 0)
    assert collector.event_count == stats.enqueued == stats.sent
    assert_every_request_carried_a_valid_token(collector, check)
    print(
        f"\nprovider down {down_for:.2f} s: {stats.sent} events delivered, none lost, "
        f"{stats.retried} event retries, {len(provider.token_requests())} token requests"
    )


# -- secrets ------------------------------------------------------------------------------


def test_a_debug_log_of_a_whole_run_holds_no_secret_and_no_token(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector, debug_log: Any
) -> None:
    provider = oidc(token_ttl=SHORT_TTL)
    collector.require_bearer(provider.bearer_check(introspect=True))
    auth = oidc_auth(provider)
    client = make_client(auth_provider=auth)
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # a few refreshes
        session_id = client.create_session(sync=True)
        client.append_action(session_id, kind=PROMPT)
        time.sleep(0.05)  # pacing: steady traffic across the refreshes, not synchronization
    assert client.flush(10) is True
    provider.revoke(list(provider.issued())[-1])  # a 401 and its refresh
    client.create_session(sync=True)
    assert any(request.status == 401 for request in collector.requests)

    wrong = "wrong-" + provider.client_secret  # a refused client, on both paths
    refused = make_client(auth_provider=oidc_auth(provider, client_secret=wrong))
    with pytest.raises(LayerAuthError):
        refused.create_session(sync=True)
    refused.create_session()
    assert refused.flush(1) is False
    refused.shutdown(timeout=1)
    client.shutdown(timeout=5)

    tokens = list(provider.issued())
    assert len(tokens) >= 3
    text = debug_log.text + "".join(repr(record.args) for record in debug_log.records)
    assert "layer_sdk" in {record.name for record in debug_log.records}
    assert "urllib3.connectionpool" in {record.name for record in debug_log.records}
    leaks = [s for s in (provider.client_secret, wrong, *tokens) if s in text]
    assert leaks == []
    assert not [token for token in tokens if token in repr(vars(auth))]


# -- settings, warnings, fork ---------------------------------------------------------------


def test_a_dripping_token_endpoint_holds_no_call_past_the_fetch_deadline(
    make_client: MakeClient,
) -> None:
    """A token endpoint that sends its answer a byte at a time (each read is quick, the
    answer never ends): one deadline, http_timeout, bounds the fetch for every caller.
    A sync call fails with LayerRequestError saying so, a caller coming after the deadline
    starts a new fetch rather than wait behind it, and shutdown() is not held by them."""
    with DrippingServer(interval=0.05) as dripping:
        auth = OIDCClientCredentials(
            f"{dripping.url}/token", "layer-sdk", "cs-dripping", http_timeout=1.0
        )
        client = make_client(auth_provider=auth, max_retries=0, http_timeout=2.0)
        raised: list[BaseException] = []

        def sync_call() -> None:
            try:
                client.create_session(sync=True)
            except BaseException as exc:
                raised.append(exc)

        caller = threading.Thread(target=sync_call)
        started = time.monotonic()
        caller.start()
        assert wait_until(lambda: dripping.requests == 1)
        caller.join(10)
        assert not caller.is_alive()
        assert time.monotonic() - started < 5.0  # the answer would drip for a minute
        [error] = raised
        assert isinstance(error, LayerRequestError)
        assert "gave no token within http_timeout=1 s" in str(error)

        with pytest.raises(LayerRequestError, match="gave no token"):
            auth.get_headers()
        assert dripping.requests == 2
        assert client.shutdown(timeout=0.5) is True  # nothing was queued
        assert time.monotonic() - started < 10.0


def test_shutdown_ends_a_sync_call_waiting_for_a_token(make_client: MakeClient) -> None:
    """A sync call waiting for its token (an endpoint that drips, a long http_timeout) is
    ended by shutdown(), as one sleeping out a backoff is: LayerRequestError saying so."""
    with DrippingServer(interval=0.05) as dripping:
        auth = OIDCClientCredentials(
            f"{dripping.url}/token", "layer-sdk", "cs-dripping", http_timeout=30.0
        )
        client = make_client(auth_provider=auth, max_retries=0, http_timeout=30.0)
        raised: list[BaseException] = []

        def sync_call() -> None:
            try:
                client.create_session(sync=True)
            except BaseException as exc:
                raised.append(exc)

        caller = threading.Thread(target=sync_call)
        started = time.monotonic()
        caller.start()
        assert wait_until(lambda: dripping.requests == 1)
        caller.join(0.2)
        assert caller.is_alive()  # it waits for the token
        client.shutdown(timeout=0.5)
        caller.join(10)
        assert not caller.is_alive()
        assert time.monotonic() - started < 15.0  # not the 30 s of http_timeout
    [error] = raised
    assert type(error) is LayerRequestError
    assert "the client shut down while waiting for it" in str(error)


def test_settings_fall_back_to_the_environment(
    oidc: StartProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = oidc()
    monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", provider.token_url)
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", provider.client_id)
    monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", provider.client_secret)
    monkeypatch.setenv("LAYER_OIDC_SCOPE", provider.scope)
    monkeypatch.setenv("LAYER_OIDC_TIMEOUT", "3")
    auth = OIDCClientCredentials()
    assert (auth.token_url, auth.scope, auth.http_timeout) == (provider.token_url, "layer-sdk", 3)
    [(name, value)] = auth.get_headers().items()
    assert (name, value) == ("Authorization", f"Bearer {next(iter(provider.issued()))}")
    assert [(r.status, r.client_id) for r in provider.token_requests()] == [(200, "layer-sdk")]


@pytest.mark.parametrize(
    ("option", "variable"),
    [
        ("token_url", "LAYER_OIDC_TOKEN_URL"),
        ("client_id", "LAYER_OIDC_CLIENT_ID"),
        ("client_secret", "LAYER_OIDC_CLIENT_SECRET"),
    ],
)
def test_a_missing_setting_is_named_with_its_variable(option: str, variable: str) -> None:
    settings: dict[str, Any] = {
        "token_url": "https://sso.example.com/realms/r/protocol/openid-connect/token",
        "client_id": "layer-sdk",
        "client_secret": "s3cret",
    }
    del settings[option]
    with pytest.raises(LayerMissingRequiredConfigurationError) as raised:
        OIDCClientCredentials(**settings)
    assert option in str(raised.value) and variable in str(raised.value)


def test_a_scope_the_client_may_not_have_is_an_auth_error(oidc: StartProvider) -> None:
    provider = oidc()
    auth = oidc_auth(provider, scope="openid")  # known to the provider, not allowed this client
    with pytest.raises(LayerAuthError, match=r"400.*invalid_scope"):
        auth.get_headers()
    assert (
        oidc_auth(provider, scope="layer-sdk").get_headers()["Authorization"].startswith("Bearer ")
    )


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, where a test server can listen."""
    for target in ("10.255.255.255", "192.0.2.1", "198.51.100.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((target, 9))  # no packet is sent: this only picks a route
            except OSError:
                continue
            address = str(probe.getsockname()[0])
        if not ipaddress.ip_address(address).is_loopback:
            return address
    return None


def test_a_token_over_plain_http_beyond_this_machine_is_refused_unless_allowed(
    oidc: StartProvider, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Init() refuses a plain-http API beyond loopback when
    an auth provider is set, and OIDCClientCredentials a plain-http token_url; the
    error names allow_insecure_http, and nothing is sent. Opted in, it works, warned."""
    monkeypatch.setattr(_auth, "_warned", set())
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    provider = oidc()
    secret = "s3cr3t-never-logged"
    with LocalCollector(host=address) as remote:
        collector_url = f"http://user:{secret}@{address}:{remote.port}"
        token_url = f"http://{address}:{provider.port}/unused/token"

        client = Client()
        with pytest.raises(LayerMissingRequiredConfigurationError) as raised:
            client.init(
                base_url=collector_url, application_id=APP_ID, auth_provider=oidc_auth(provider)
            )
        message = str(raised.value)
        assert "allow_insecure_http=True" in message and "base_url" in message
        assert address in message and secret not in message and "user:***@" in message
        assert repr(client) == "Client(not initialized)"

        with pytest.raises(LayerMissingRequiredConfigurationError) as raised:
            OIDCClientCredentials(token_url, "layer-sdk", secret)
        message = str(raised.value)
        assert "allow_insecure_http=True" in message and "token_url" in message
        assert secret not in message

        assert remote.requests == [] and provider.token_requests() == []
        assert caplog.records == []

        # Opted in: the token is sent, and a warning says so once per host.
        client.init(
            base_url=f"http://{address}:{remote.port}",
            application_id=APP_ID,
            auth_provider=oidc_auth(provider),
            allow_insecure_http=True,
            **FAST,
        )
        try:
            client.create_session(sync=True)
        finally:
            client.shutdown(timeout=2)
        [request] = remote.requests
        assert token_of(request) in provider.issued()
        OIDCClientCredentials(token_url, "layer-sdk", secret, allow_insecure_http=True)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "access token" in messages[0] and address in messages[0]
    assert "client secret" in messages[1] and address in messages[1]


def test_loopback_and_https_need_no_opt_in(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Localhost, 127.0.0.0/8 and ::1 stay allowed without
    a word, as does https anywhere, and plain http without credentials."""
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    secret = "s3cr3t-never-logged"
    secure = OIDCClientCredentials("https://sso.example.invalid/token", "id", secret)
    for host in ("127.0.0.1:8080", "localhost", "[::1]:8080", "127.8.9.10", "LOCALHOST:1"):
        OIDCClientCredentials(f"http://{host}/token", "id", secret)
        make_client(base_url=f"http://{host}", auth_provider=secure)
    make_client(base_url="https://layer.example.invalid", auth_provider=secure)
    make_client(base_url="http://layer.example.invalid")  # no credentials to protect
    for url in ("HTTP://layer.example.invalid", "http://10.1.2.3", "http://[fd00::1]:80"):
        with pytest.raises(LayerMissingRequiredConfigurationError, match="allow_insecure_http"):
            make_client(base_url=url, auth_provider=secure)
    assert caplog.records == []


def test_plain_http_beyond_this_machine_is_warned_about_once_when_allowed(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_auth, "_warned", set())
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    secret = "s3cr3t-never-logged"
    secure = OIDCClientCredentials("https://sso.example.invalid/token", "id", secret)
    for _ in range(2):  # nothing is sent anywhere: these clients get no events
        OIDCClientCredentials(
            "http://sso.example.invalid/token", "id", secret, allow_insecure_http=True
        )
        make_client(
            base_url="http://layer.example.invalid", auth_provider=secure, allow_insecure_http=True
        )
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert "client secret" in messages[0] and "sso.example.invalid" in messages[0]
    assert "access token" in messages[1] and "layer.example.invalid" in messages[1]
    assert not [message for message in messages if secret in message]


def _child_after_fork(client: Client, auth: OIDCClientCredentials) -> dict[str, str]:
    """In the child: drop the inherited token and fetch one, with a lock the parent held."""
    auth.invalidate()
    return {"session_id": client.create_session(sync=True)}


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_has_its_own_lock_and_connection(
    oidc: StartProvider, make_client: MakeClient, collector: LocalCollector
) -> None:
    provider = oidc()
    collector.require_bearer(provider.bearer_check())
    auth = oidc_auth(provider)
    client = make_client(auth_provider=auth)
    client.create_session(sync=True)

    # A parent thread is in the middle of a refresh when the process forks.
    with held_by_another_thread(auth._lock):
        code, report = in_multiprocessing_child(_child_after_fork, client, auth)
    assert code == 0, "the child hung on a lock the parent held, or failed"
    assert report is not None
    assert collector.session(report["session_id"]) is not None
    assert len(provider.token_requests()) == 2  # the parent's token and the child's own
    [parent_token, child_token] = provider.issued()
    assert [token_of(request) for request in collector.requests] == [parent_token, child_token]
