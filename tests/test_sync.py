"""The synchronous path (sync=True): one round trip now, and the documented exceptions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from layer_sdk import (
    AuthProvider,
    Client,
    LayerAuthError,
    LayerHTTPError,
    LayerRequestError,
    OIDCClientCredentials,
)
from layer_sdk.collector import LocalCollector

from .front_server import Act, Front
from .helpers import JSONHandler, MakeClient, closed_port, http_server


def test_sync_create_returns_the_server_s_id_after_one_round_trip(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(flush_interval=30)
    session_id = client.create_session(attributes={"a": "b"}, sync=True)
    assert collector.session(session_id) is not None  # there before the call returned
    client.append_action(session_id, kind="completion_prompt", data="x", sync=True)
    assert len(collector.actions(session_id)) == 1
    assert client.stats().enqueued == 0


def test_init_sync_makes_every_call_synchronous(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(sync=True, flush_interval=30)
    session_id = client.create_session()
    client.append_action(session_id, kind="embeddings")
    assert collector.event_count == 2
    client.create_session(sync=False)  # a call may still opt out
    assert collector.event_count == 2
    assert client.flush(5) and collector.event_count == 3


def test_a_sync_call_waits_for_the_session_s_queued_events(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(flush_interval=30)  # queued events would otherwise wait 30 s
    session_id = client.create_session()
    client.append_action(session_id, kind="completion_prompt", data={"n": 1})
    client.append_action(session_id, kind="completion_output", data={"n": 2}, sync=True)
    assert [a["data"] for a in collector.actions(session_id)] == [{"n": 1}, {"n": 2}]


def test_http_error_carries_status_message_and_body(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    collector.fail_next(1, 422, body=b'{"error": "attributes.user: too long", "field": "user"}')
    with pytest.raises(LayerHTTPError) as raised:
        client.create_session(sync=True)
    error = raised.value
    assert error.status_code == 422
    assert error.message == "attributes.user: too long"
    assert error.response_data == {"error": "attributes.user: too long", "field": "user"}
    assert len(collector.requests) == 1  # a 4xx is not retried


def test_transient_errors_are_retried_on_the_sync_path_too(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(max_retries=1)
    collector.fail_next(3, 503, retry_after=0)
    with pytest.raises(LayerHTTPError) as raised:
        client.create_session(sync=True)
    assert raised.value.status_code == 503
    assert len(collector.requests) == 2
    session_id = client.create_session(sync=True)  # the third failure, then success
    assert collector.session(session_id) is not None


def test_a_sync_create_whose_retry_is_answered_409_returns_the_session(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """The create is stored but its answer lost; its retry (same request ID) meets an API
    that does not de-duplicate, which answers 409: the session exists, the call returns
    its ID, with its actions stored once."""
    lose_first = Front(
        collector,
        lambda n, head, body: Act(answer=b"", close=True) if n == 0 else Act(),
        strip_request_ids=True,
    )
    client = make_client(base_url=lose_first.url)
    session_id = client.create_session(
        sync=True, actions=[{"kind": "completion_prompt", "data": {"n": 1}}]
    )
    lose_first.close()
    assert [r.status for r in collector.requests] == [200, 409]
    assert [s["session_id"] for s in collector.sessions] == [session_id]
    assert [a["data"] for a in collector.actions(session_id)] == [{"n": 1}]


def test_a_sync_create_answered_409_at_its_first_attempt_raises(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A 409 to the first attempt is the API's refusal (the ID was taken by another
    create): raised, as by the original SDK."""
    client = make_client()
    session_id = client.create_session(sync=True)
    with pytest.raises(LayerHTTPError) as raised:
        client.create_session(sync=True, session_id=session_id)
    assert raised.value.status_code == 409
    assert [r.status for r in collector.requests] == [200, 409]


class SyncCall:
    """``client.create_session(sync=True)`` on a thread of its own: what it returned or raised."""

    def __init__(self, client: Client) -> None:
        self.outcome: list[object] = []
        self._thread = threading.Thread(target=self._call, args=(client,), daemon=True)
        self._thread.start()

    def _call(self, client: Client) -> None:
        try:
            self.outcome.append(client.create_session(sync=True))
        except Exception as exc:
            self.outcome.append(exc)

    def ended_within(self, seconds: float) -> bool:
        self._thread.join(seconds)
        return not self._thread.is_alive()


def test_a_retry_after_beyond_a_sync_call_s_budget_fails_at_once_with_the_answer(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A sync call stays within about (max_retries + 1) x http_timeout (here 4 x 1 s):
    asked to come back in an hour (60 s once clamped), it raises the server's answer at
    once instead of sleeping through its retries."""
    client = make_client(http_timeout=1.0)
    collector.fail_next(5, 503, retry_after=3600)
    call = SyncCall(client)
    assert call.ended_within(10)
    (error,) = call.outcome
    assert isinstance(error, LayerHTTPError) and error.status_code == 503
    assert len(collector.requests) == 1


def test_shutdown_wakes_a_sync_call_waiting_to_retry(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """A sync call sleeping out a Retry-After within its budget (20 s of 4 x 30 s) is woken
    by shutdown(), and raises the answer it had."""
    client = make_client(http_timeout=30.0)
    collector.fail_next(5, 503, retry_after=20)
    call = SyncCall(client)
    assert collector.wait_for(lambda c: len(c.requests) == 1)
    assert not call.ended_within(0.2)  # it waits to retry
    client.shutdown(timeout=1.0)
    assert call.ended_within(5)
    (error,) = call.outcome
    assert isinstance(error, LayerHTTPError) and error.status_code == 503
    assert len(collector.requests) == 1


def test_an_unreachable_server_raises_request_error(make_client: MakeClient) -> None:
    client = make_client(base_url=f"http://127.0.0.1:{closed_port()}", max_retries=0)
    with pytest.raises(LayerRequestError, match="could not reach"):
        client.create_session(sync=True)


def test_a_slow_server_raises_request_error_after_http_timeout(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(http_timeout=0.2, max_retries=0)
    collector.delay = 1.0
    with pytest.raises(LayerRequestError) as raised:
        client.create_session(sync=True)
    assert not isinstance(raised.value, LayerHTTPError)
    assert "Timeout" in str(raised.value)


class _TokenEndpoint(JSONHandler):
    """An OAuth token endpoint that refuses every client, as a wrong secret gets."""

    def do_POST(self) -> None:
        self.read_body()
        body = {"error": "invalid_client", "error_description": "client authentication failed"}
        self.send_json(401, json.dumps(body).encode())


@pytest.fixture
def refusing_token_url() -> Iterator[str]:
    with http_server(_TokenEndpoint) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/realms/r/protocol/openid-connect/token"


def test_refused_credentials_raise_auth_error_without_the_secret(
    make_client: MakeClient, collector: LocalCollector, refusing_token_url: str
) -> None:
    secret = "s3cr3t-value-never-shown"
    auth = OIDCClientCredentials(
        token_url=refusing_token_url, client_id="sdk", client_secret=secret
    )
    client = make_client(auth_provider=auth)
    with pytest.raises(LayerAuthError) as raised:
        client.create_session(sync=True)
    assert "client authentication failed" in str(raised.value)
    assert secret not in str(raised.value) and secret not in repr(auth)
    assert collector.requests == []  # nothing reached the API without credentials


class RotatingToken(AuthProvider):
    """Hands out token-1 until told it is stale, then token-2."""

    def __init__(self) -> None:
        self.token = "token-1"
        self.invalidations = 0

    def get_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def invalidate(self) -> bool:
        self.invalidations += 1
        self.token = "token-2"
        return True


def test_a_401_refreshes_credentials_once_and_retries(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    auth = RotatingToken()
    collector.require_bearer(lambda token: token == "token-2")
    client = make_client(auth_provider=auth)
    session_id = client.create_session(sync=True)
    assert collector.session(session_id) is not None
    assert [r.headers["authorization"] for r in collector.requests] == [
        "Bearer token-1",
        "Bearer token-2",
    ]
    assert auth.invalidations == 1


def test_a_second_401_is_not_retried_again(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    auth = RotatingToken()
    collector.require_bearer(lambda token: False)
    client = make_client(auth_provider=auth)
    with pytest.raises(LayerHTTPError) as raised:
        client.create_session(sync=True)
    assert raised.value.status_code == 401
    assert len(collector.requests) == 2
    assert "token-" not in str(raised.value)


class _OddSessionIds(JSONHandler):
    """A Layer API that accepts every create and answers the session_id it is set to."""

    answer: object = None

    def do_POST(self) -> None:
        self.read_body()
        self.send_json(200, json.dumps({"session_id": self.answer}).encode())


@pytest.fixture
def odd_api() -> Iterator[ThreadingHTTPServer]:
    with http_server(_OddSessionIds) as server:
        yield server


@pytest.mark.parametrize("answer", ["not-a-uuid", 12345, "", ["x"]])
def test_a_sync_create_refuses_a_session_id_that_is_no_uuid(
    make_client: MakeClient, odd_api: ThreadingHTTPServer, answer: object
) -> None:
    """A sync=True create checks that the server's session_id is a UUID."""
    _OddSessionIds.answer = answer
    client = make_client(base_url=f"http://127.0.0.1:{odd_api.server_address[1]}")
    with pytest.raises(LayerRequestError, match="not a UUID"):
        client.create_session(sync=True)


def test_a_sync_create_returns_the_server_s_uuid_in_canonical_form(
    make_client: MakeClient, odd_api: ThreadingHTTPServer
) -> None:
    """A UUID answered by the server is returned, usable by append_action."""
    _OddSessionIds.answer = "1B4E28BA-2FA1-41D2-883F-0016D3CCA427"
    client = make_client(base_url=f"http://127.0.0.1:{odd_api.server_address[1]}")
    assert client.create_session(sync=True) == "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
