"""Tests of the local collector, spoken to over real HTTP with http.client."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from layer_sdk.collector import LocalCollector

APP = "app-1"
T0 = "2024-05-01T12:00:00Z"
T1 = "2024-05-01T12:00:01.250000Z"
JSON = {"Content-Type": "application/json"}
SID = str(uuid.uuid5(uuid.NAMESPACE_URL, "session-1"))
UUID4 = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def action(kind: str = "completion_prompt", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "start_time": T0, "end_time": T1, "attributes": {}, **fields}


def connect(collector: LocalCollector) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", collector.port, timeout=5)


def post(
    target: LocalCollector | http.client.HTTPConnection,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    method: str = "POST",
) -> Answer:
    """One request; a LocalCollector target gets a connection of its own, closed after."""
    own = isinstance(target, LocalCollector)
    conn = connect(target) if isinstance(target, LocalCollector) else target
    data = raw if raw is not None else json.dumps(body).encode()
    try:
        conn.request(method, path, data, JSON if headers is None else headers)
        response = conn.getresponse()
        content = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, content)
    finally:
        if own:
            conn.close()


def host_line(collector: LocalCollector) -> bytes:
    """The Host header of a request to the collector, as a browser writes it."""
    return b"Host: 127.0.0.1:%d\r\n" % collector.port


def raw_request(collector: LocalCollector, body: Any, path: str = "/v1/sessions") -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{collector.port}\r\n"
    head += "Content-Type: application/json\r\n"
    return f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data


def is_closed(sock: socket.socket) -> bool:
    """True when the peer has closed the connection (EOF or reset) within 2 s."""
    sock.settimeout(2)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    with LocalCollector() as running:
        yield running


@pytest.fixture
def conn(collector: LocalCollector) -> Iterator[http.client.HTTPConnection]:
    """A keep-alive connection to the collector."""
    connection = connect(collector)
    yield connection
    connection.close()


@pytest.fixture
def session(collector: LocalCollector) -> str:
    assert post(collector, "/v1/sessions", {"application_id": APP, "session_id": SID}).status == 200
    return SID


def test_create_append_and_inspect(collector: LocalCollector) -> None:
    first = action("completion_prompt", data={"messages": [{"role": "user", "content": "hi"}]})
    created = post(
        collector,
        "/v1/sessions",
        {
            "application_id": APP,
            "session_id": SID,
            "attributes": {"env": "test"},
            "actions": [first],
        },
    )
    assert (created.status, created.json) == (200, {"session_id": SID})
    assert created.headers["content-type"] == "application/json"

    second = action("completion_output", error={"message": "boom", "code": 7})
    third = action("embeddings", scanners=[{"name": "usage", "data": {"tokens": 3}}])
    for body in (second, third):
        appended = post(collector, f"/v1/sessions/{SID}/actions", body)
        assert (appended.status, appended.json) == (202, {})

    expected = {"application_id": APP, "session_id": SID, "attributes": {"env": "test"}}
    assert collector.sessions == [{**expected, "actions": [first, second, third]}]
    assert collector.session(SID) == {**expected, "actions": [first, second, third]}
    assert collector.session(SID.upper()) == collector.session(SID)
    assert collector.session(str(uuid.uuid5(uuid.NAMESPACE_URL, "other"))) is None
    with_id = [{**a, "session_id": SID} for a in (first, second, third)]
    assert collector.actions() == with_id
    assert collector.actions(SID) == with_id
    assert collector.actions(UUID4) == []
    assert collector.event_count == 4
    assert [(r.method, r.path, r.status) for r in collector.requests] == [
        ("POST", "/v1/sessions", 200),
        ("POST", f"/v1/sessions/{SID}/actions", 202),
        ("POST", f"/v1/sessions/{SID}/actions", 202),
    ]
    assert collector.requests[1].json == second
    assert collector.requests[1].headers["content-type"] == "application/json"


def test_inspection_returns_copies(collector: LocalCollector, session: str) -> None:
    assert post(collector, f"/v1/sessions/{session}/actions", action()).status == 202
    collector.sessions[0]["actions"].clear()
    collector.actions()[0]["kind"] = "moderation"
    collector.requests.clear()
    assert collector.actions() == [{**action(), "session_id": session}]
    assert len(collector.session(session)["actions"]) == 1  # type: ignore[index]
    assert len(collector.requests) == 2


def test_server_mints_a_uuid5_and_null_means_absent(collector: LocalCollector) -> None:
    body = {"application_id": APP, "session_id": None, "attributes": None, "actions": None}
    created = post(collector, "/v1/sessions", body)
    assert created.status == 200
    minted = created.json["session_id"]
    assert uuid.UUID(minted).version == 5
    nulls = action(data=None, error=None, scanners=None)
    assert post(collector, f"/v1/sessions/{minted}/actions", nulls).status == 202
    assert collector.session(minted) == {**body, "session_id": minted, "actions": [nulls]}


def test_action_of_unknown_session_is_404(collector: LocalCollector) -> None:
    answer = post(collector, f"/v1/sessions/{SID}/actions", action())
    assert (answer.status, answer.json) == (404, {"error": f"no session {SID}"})
    assert collector.event_count == 0


CREATE_ERRORS = [
    ({"session_id": SID}, "Object missing required field `application_id`"),
    ({"application_id": ""}, "Expected `str` of length >= 1 - at `$.application_id`"),
    (
        {"application_id": APP, "session_id": UUID4},
        f"Expected a UUID version 5, got '{UUID4}' - at `$.session_id`",
    ),
    (
        {"application_id": APP, "session_id": "nope"},
        "Expected a UUID version 5, got 'nope' - at `$.session_id`",
    ),
    (
        {"application_id": APP, "attributes": {"retries": 3}},
        "Expected `str`, got `int` - at `$.attributes[...]`",
    ),
    (
        {"application_id": APP, "start_time": "2024-05-01 12:00:00"},
        "Expected an RFC 3339 UTC time ending in Z, got '2024-05-01 12:00:00' - at `$.start_time`",
    ),
    (
        {"application_id": APP, "actions": [action(), action("chat")]},
        "Invalid enum value 'chat' - at `$.actions[1].kind`",
    ),
    (
        {"application_id": APP, "actions": {}},
        "Expected `array | null`, got `object` - at `$.actions`",
    ),
    ({"application_id": APP, "app": APP}, "Object contains unknown field `app`"),
    ([APP], "Expected `object`, got `array`"),
]

ACTION_ERRORS = [
    (action("chat"), "Invalid enum value 'chat' - at `$.kind`"),
    (
        {"kind": "moderation", "start_time": T0, "end_time": T1},
        "Object missing required field `attributes`",
    ),
    (action(attributes=None), "Expected `object`, got `null` - at `$.attributes`"),
    (
        action(start_time="2024-05-01T12:00:00+00:00"),
        "Expected an RFC 3339 UTC time ending in Z, got '2024-05-01T12:00:00+00:00'"
        " - at `$.start_time`",
    ),
    (
        action(end_time="2024-02-30T12:00:00Z"),
        "Expected an RFC 3339 UTC time ending in Z, got '2024-02-30T12:00:00Z' - at `$.end_time`",
    ),
    (action(error={"code": 1}), "Object missing required field `message` - at `$.error`"),
    (action(scanners=[{"name": 1}]), "Expected `str`, got `int` - at `$.scanners[0].name`"),
    (action(session_id=SID), "Object contains unknown field `session_id`"),
]


#: The types the original SDK's schemas declare, which the Layer API enforces.
CONTRACT_ERRORS = [
    (action(data="text"), "Expected `object | array | null`, got `str` - at `$.data`"),
    (action(data=3), "Expected `object | array | null`, got `int` - at `$.data`"),
    (action(data=True), "Expected `object | array | null`, got `bool` - at `$.data`"),
    (
        action(error={"message": "x", "code": "ValueError"}),
        "Expected `int | null`, got `str` - at `$.error.code`",
    ),
    (
        action(error={"message": "x", "code": True}),
        "Expected `int | null`, got `bool` - at `$.error.code`",
    ),
    (
        action(error={"message": "x", "code": 500.0}),
        "Expected `int | null`, got `float` - at `$.error.code`",
    ),
    (
        action(error={"message": "x", "details": ["a"]}),
        "Expected `object | null`, got `array` - at `$.error.details`",
    ),
    (
        action(error={"message": "x", "details": "ValueError"}),
        "Expected `object | null`, got `str` - at `$.error.details`",
    ),
    (action(error={"message": 1}), "Expected `str`, got `int` - at `$.error.message`"),
    (
        action(scanners=[{"name": "usage"}]),
        "Object missing required field `data` - at `$.scanners[0]`",
    ),
    (
        action(scanners=[{"name": "usage", "data": None}]),
        "Expected `object`, got `null` - at `$.scanners[0].data`",
    ),
    (
        action(scanners=[{"name": "usage", "data": [1]}]),
        "Expected `object`, got `array` - at `$.scanners[0].data`",
    ),
    (action(attributes=["a"]), "Expected `object`, got `array` - at `$.attributes`"),
]


@pytest.mark.parametrize(("body", "error"), CREATE_ERRORS)
def test_invalid_create_is_422(collector: LocalCollector, body: Any, error: str) -> None:
    """A body that breaks the contract is answered 422, naming the field."""
    answer = post(collector, "/v1/sessions", body)
    assert (answer.status, answer.json) == (422, {"error": error})
    assert collector.event_count == 0
    assert collector.requests[0].status == 422


@pytest.mark.parametrize(("body", "error"), ACTION_ERRORS + CONTRACT_ERRORS)
def test_invalid_action_is_422(
    collector: LocalCollector, session: str, body: Any, error: str
) -> None:
    """An action of the wrong types is answered 422, naming the field."""
    answer = post(collector, f"/v1/sessions/{session}/actions", body)
    assert (answer.status, answer.json) == (422, {"error": error})
    assert collector.event_count == 1


def test_the_contract_types_inside_a_create_name_the_action(collector: LocalCollector) -> None:
    """The same checks apply to the actions of a create, at their path."""
    bad = action(error={"message": "x", "code": "429"})
    answer = post(collector, "/v1/sessions", {"application_id": APP, "actions": [action(), bad]})
    assert (answer.status, answer.json) == (
        422,
        {"error": "Expected `int | null`, got `str` - at `$.actions[1].error.code`"},
    )
    assert collector.event_count == 0


def test_what_the_contract_allows_is_accepted(collector: LocalCollector, session: str) -> None:
    """The collector is no stricter than the contract (nulls, arrays, {})."""
    allowed = [
        action(data={"messages": []}, error={"message": "x", "code": 429, "details": {"a": 1}}),
        action(data=[1, "two"], error={"message": "x", "code": None, "details": None}),
        action(data=None, error={"message": "x"}, scanners=[{"name": "usage", "data": {}}]),
        action(data={}, attributes={"n": 1, "nested": {"x": [1]}}, scanners=[]),
        action(error={"message": "x", "code": -1}),
    ]
    for body in allowed:
        assert post(collector, f"/v1/sessions/{session}/actions", body).status == 202
    assert collector.event_count == 1 + len(allowed)


def test_a_body_nested_too_deeply_to_decode_is_400(collector: LocalCollector) -> None:
    """JSON nested past the decoder's depth is answered, not a crash."""
    answer = post(collector, "/v1/sessions", raw=b"[" * 100_000 + b"]" * 100_000)
    assert (answer.status, answer.json) == (400, {"error": "the body is not valid UTF-8 JSON"})


def test_body_must_be_json(collector: LocalCollector) -> None:
    answer = post(collector, "/v1/sessions", raw=b'{"application_id": ')
    assert (answer.status, answer.json) == (400, {"error": "the body is not valid UTF-8 JSON"})
    assert collector.requests[0].json is None
    assert collector.requests[0].body == b'{"application_id": '


def test_content_type_must_be_json(collector: LocalCollector) -> None:
    body = {"application_id": APP}
    missing = post(collector, "/v1/sessions", body, headers={})
    assert (missing.status, missing.json) == (
        415,
        {"error": "Content-Type must be application/json, got ''"},
    )
    assert (
        post(collector, "/v1/sessions", body, headers={"Content-Type": "text/plain"}).status == 415
    )
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert post(collector, "/v1/sessions", body, headers=charset).status == 200
    assert collector.event_count == 1


def test_unknown_path_is_404_and_other_methods_405(collector: LocalCollector) -> None:
    unknown = post(collector, "/v2/sessions", {})
    assert (unknown.status, unknown.json) == (404, {"error": "no such endpoint: /v2/sessions"})
    wrong = post(collector, "/v1/sessions", method="GET", raw=b"")
    assert (wrong.status, wrong.headers["allow"]) == (405, "POST")
    assert post(collector, f"/v1/sessions/{SID}/actions", method="PUT", raw=b"{}").status == 405


def test_duplicate_create_is_409(collector: LocalCollector, session: str) -> None:
    again = post(collector, "/v1/sessions", {"application_id": APP, "session_id": session})
    expected = {"error": f"session {session} already exists - at `$.session_id`"}
    assert (again.status, again.json) == (409, expected)
    assert collector.event_count == 1


def test_chunked_body_is_read(collector: LocalCollector, conn: http.client.HTTPConnection) -> None:
    parts = [b'{"application_id": ', b'"app-1"}']
    conn.request("POST", "/v1/sessions", iter(parts), JSON, encode_chunked=True)
    response = conn.getresponse()
    assert (response.status, len(json.loads(response.read())["session_id"])) == (200, 36)
    assert collector.requests[0].body == b'{"application_id": "app-1"}'
    assert post(conn, "/v1/sessions", {"application_id": APP}).status == 200  # still in step


def test_unframed_body_is_400_and_closes_the_connection(collector: LocalCollector) -> None:
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\n"
            + host_line(collector)
            + b"Content-Length: ten\r\n\r\n"
        )
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = json.loads(response.read())
        assert (response.status, body) == (400, {"error": "invalid Content-Length 'ten'"})
        assert response.getheader("Connection") == "close"
        assert is_closed(sock)
    assert [r.status for r in collector.requests] == [400]


def test_request_id_answers_again_without_storing(collector: LocalCollector) -> None:
    first_id = {**JSON, "X-Request-Id": "r-1"}
    body = {"application_id": APP}
    first = post(collector, "/v1/sessions", body, headers=first_id)
    again = post(collector, "/v1/sessions", body, headers=first_id)
    assert first.status == again.status == 200
    assert first.body == again.body
    session_id = first.json["session_id"]

    action_id = {**JSON, "X-Request-Id": "r-2"}
    for _ in range(2):
        again = post(collector, f"/v1/sessions/{session_id}/actions", action(), headers=action_id)
        assert again.status == 202
    assert post(collector, f"/v1/sessions/{session_id}/actions", action()).status == 202
    assert collector.duplicates == 2
    assert collector.event_count == 3
    assert len(collector.sessions) == 1
    assert [r.status for r in collector.requests] == [200, 200, 202, 202, 202]


def test_request_id_of_a_failed_request_is_processed_on_retry(collector: LocalCollector) -> None:
    headers = {**JSON, "X-Request-Id": "r-1"}
    collector.fail_next(1, 503)
    assert post(collector, "/v1/sessions", {"application_id": APP}, headers=headers).status == 503
    assert post(collector, "/v1/sessions", {"application_id": APP}, headers=headers).status == 200
    assert (collector.duplicates, collector.event_count) == (0, 1)


def test_fail_next_with_retry_after(collector: LocalCollector) -> None:
    collector.fail_next(2, 429, retry_after=0.5)
    body = {"application_id": APP, "session_id": SID}
    for _ in range(2):
        failed = post(collector, "/v1/sessions", body)
        assert (failed.status, failed.headers["retry-after"], failed.json) == (
            429,
            "0.5",
            {"error": "injected"},
        )
    assert collector.event_count == 0
    assert post(collector, "/v1/sessions", body).status == 200
    assert [r.status for r in collector.requests] == [429, 429, 200]


def test_fail_next_queues_up_and_takes_a_body(collector: LocalCollector) -> None:
    collector.fail_next(1, 503, retry_after=2)
    collector.fail_next(1, 500, body=b'{"message": "down"}')
    first = post(collector, "/v1/sessions", {"application_id": APP})
    second = post(collector, "/v1/sessions", {"application_id": APP})
    assert (first.status, first.headers["retry-after"]) == (503, "2")
    assert (second.status, second.body, "retry-after" in second.headers) == (
        500,
        b'{"message": "down"}',
        False,
    )
    with pytest.raises(ValueError):
        collector.fail_next(1, 99)


def test_drop_next_closes_the_connection_unanswered(
    collector: LocalCollector, conn: http.client.HTTPConnection
) -> None:
    collector.drop_next(1)
    with pytest.raises(http.client.RemoteDisconnected):
        post(conn, "/v1/sessions", {"application_id": APP, "session_id": SID})
    dropped = collector.requests[0]
    assert (dropped.status, dropped.json) == (0, {"application_id": APP, "session_id": SID})
    assert collector.event_count == 0
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200


def test_delay_postpones_every_answer(collector: LocalCollector) -> None:
    collector.delay = 0.3
    assert collector.delay == 0.3
    started = time.monotonic()
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200
    assert 0.3 <= time.monotonic() - started < 2.0
    collector.delay = 0
    started = time.monotonic()
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200
    assert time.monotonic() - started < 0.3


def test_hang_holds_requests_until_release(collector: LocalCollector) -> None:
    collector.hang()
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(raw_request(collector, {"application_id": APP, "session_id": SID}))
        assert collector.wait_for(lambda c: c.unanswered == 1, timeout=5)
        assert select.select([sock], [], [], 0.3)[0] == []  # no answer while hung
        assert collector.event_count == 0
        collector.release()
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert (response.status, json.loads(response.read())) == (200, {"session_id": SID})
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200  # not held


def test_unanswered_counts_requests_read_until_their_answer(collector: LocalCollector) -> None:
    """A test can wait until a request reached a
    hung or slow server (``wait_for`` sees it), instead of sleeping."""
    assert collector.unanswered == 0
    collector.delay = 30
    delayed = socket.create_connection(("127.0.0.1", collector.port))
    delayed.sendall(raw_request(collector, {"application_id": APP}))
    assert collector.wait_for(lambda c: c.unanswered == 1, timeout=5)
    collector.delay = 0
    collector.hang()
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(raw_request(collector, {"application_id": APP, "session_id": SID}))
        assert collector.wait_for(lambda c: c.unanswered == 2, timeout=5)
        assert collector.requests == []
        collector.release()
        assert read_answer(sock).status == 200
    assert collector.unanswered == 1  # recorded before it was sent
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\n"
            + host_line(collector)
            + b"Transfer-Encoding: gzip\r\n\r\n"
        )
        assert read_answer(sock).status == 400
    assert collector.unanswered == 1
    collector.stop()  # the delayed request is dropped: answered, with nothing
    delayed.close()
    assert collector.unanswered == 0
    assert [r.status for r in collector.requests] == [200, 400, 0]


def test_stop_drops_hung_requests_quickly(collector: LocalCollector) -> None:
    collector.hang()
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(raw_request(collector, {"application_id": APP}))
        assert collector.wait_for(lambda c: c.unanswered == 1, timeout=5)
        assert select.select([sock], [], [], 0.2)[0] == []  # no answer while hung
        started = time.monotonic()
        collector.stop()
        assert time.monotonic() - started < 2.5
        assert is_closed(sock)
    assert [r.status for r in collector.requests] == [0]
    assert collector.event_count == 0
    collector.start()  # hang mode ended with stop()
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200


def test_stop_goes_down_and_start_serves_the_same_port(
    collector: LocalCollector, conn: http.client.HTTPConnection
) -> None:
    port = collector.port
    assert post(conn, "/v1/sessions", {"application_id": APP}).status == 200
    assert conn.sock is not None
    keep_alive: socket.socket = conn.sock  # accepted and idle between requests

    collector.stop()
    collector.stop()  # idempotent
    assert is_closed(keep_alive)  # closed by the server, unasked
    with pytest.raises(ConnectionError):
        post(conn, "/v1/sessions", {"application_id": APP})
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)

    assert collector.start() is collector
    assert collector.port == port
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200
    assert collector.event_count == 2


def test_keep_alive_connection_is_reused(
    collector: LocalCollector, session: str, conn: http.client.HTTPConnection
) -> None:
    for i in range(50):
        assert post(conn, f"/v1/sessions/{session}/actions", action(data={"n": i})).status == 202
        if i == 0:
            sock = conn.sock
    assert conn.sock is sock
    assert [a["data"]["n"] for a in collector.actions(session)] == list(range(50))


def test_concurrent_keep_alive_clients_lose_nothing(
    collector: LocalCollector, session: str
) -> None:
    statuses: list[int] = []

    def produce(worker: int) -> None:
        with contextlib.closing(connect(collector)) as own:
            for i in range(25):
                headers = {**JSON, "X-Request-Id": f"{worker}-{i}"}
                body = action(data=[worker, i])
                path = f"/v1/sessions/{session}/actions"
                statuses.append(post(own, path, body, headers=headers).status)

    producers = [threading.Thread(target=produce, args=(worker,)) for worker in range(4)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    assert statuses == [202] * 100
    assert collector.event_count == 1 + 4 * 25
    data = [tuple(a["data"]) for a in collector.actions(session)]
    assert sorted(data) == [(worker, i) for worker in range(4) for i in range(25)]
    for worker in range(4):  # each connection's actions stay in the order they were sent
        assert [i for w, i in data if w == worker] == list(range(25))
    assert collector.duplicates == 0


def test_require_bearer(collector: LocalCollector) -> None:
    collector.require_bearer(lambda token: token == "secret")
    body = {"application_id": APP}
    for headers in (
        JSON,
        {**JSON, "Authorization": "Bearer nope"},
        {**JSON, "Authorization": "secret"},
    ):
        refused = post(collector, "/v1/sessions", body, headers=headers)
        assert (refused.status, refused.json) == (401, {"error": "unauthorized"})
    assert collector.event_count == 0
    accepted = post(
        collector, "/v1/sessions", body, headers={**JSON, "Authorization": "Bearer secret"}
    )
    assert accepted.status == 200
    collector.require_bearer(None)
    assert post(collector, "/v1/sessions", body).status == 200
    assert collector.event_count == 2


def test_faults_apply_in_the_documented_order(collector: LocalCollector) -> None:
    collector.require_bearer(lambda token: False)
    collector.fail_next(1, 500)
    collector.drop_next(1)
    with pytest.raises(http.client.RemoteDisconnected):  # drop comes before fail
        post(collector, "/v1/sessions", {"application_id": APP})
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 500  # before auth
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 401
    assert [r.status for r in collector.requests] == [0, 500, 401]


def test_an_exception_while_handling_answers_500(collector: LocalCollector) -> None:
    def broken(token: str) -> bool:
        raise RuntimeError("check failed")

    collector.require_bearer(broken)
    headers = {**JSON, "Authorization": "Bearer t"}
    answer = post(collector, "/v1/sessions", {"application_id": APP}, headers=headers)
    assert (answer.status, answer.json) == (
        500,
        {"error": "internal error: RuntimeError('check failed')"},
    )
    collector.require_bearer(None)
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200


def test_wait_for_events_times_out_with_false(collector: LocalCollector) -> None:
    started = time.monotonic()
    assert collector.wait_for_events(1, timeout=0.2) is False
    assert 0.2 <= time.monotonic() - started < 1.0


def test_wait_for_events_and_wait_for_wake_up(collector: LocalCollector) -> None:
    def produce() -> None:
        post(collector, "/v1/sessions", {"application_id": APP, "session_id": SID})
        post(collector, f"/v1/sessions/{SID}/actions", action())

    producer = threading.Thread(target=produce)
    started = time.monotonic()
    producer.start()
    assert collector.wait_for_events(2, timeout=10) is True
    assert collector.wait_for(lambda c: len(c.requests) == 2, timeout=10) is True
    assert time.monotonic() - started < 5  # woken by the requests, not by the timeout
    producer.join()
    assert collector.event_count == 2


def test_clear_forgets_what_was_received(collector: LocalCollector) -> None:
    headers = {**JSON, "X-Request-Id": "r-1"}
    assert post(collector, "/v1/sessions", {"application_id": APP}, headers=headers).status == 200
    collector.fail_next(1)
    collector.clear()
    assert (collector.sessions, collector.requests, collector.event_count) == ([], [], 0)
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 503  # faults stay
    assert post(collector, "/v1/sessions", {"application_id": APP}, headers=headers).status == 200
    assert (collector.duplicates, collector.event_count) == (0, 1)


def test_port_is_known_only_once_started() -> None:
    collector = LocalCollector()
    with pytest.raises(RuntimeError):
        _ = collector.port
    with collector:
        assert collector.url == f"http://127.0.0.1:{collector.port}"
    assert LocalCollector(port=8123).url == "http://127.0.0.1:8123"


# -- the HTTP engine: framing, connections, waiting without threads --------------------


def read_answer(sock: socket.socket, *, head: bool = False) -> Answer:
    """The next answer on a raw socket, read to its last byte and no further."""
    reader = sock.makefile("rb", buffering=0)  # unbuffered: the next answer stays unread
    status = int(reader.readline().split()[1])
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    size = 0 if head else int(headers.get("content-length", "0"))
    body = b""
    while len(body) < size and (data := reader.read(size - len(body))):
        body += data
    return Answer(status, headers, body)


def test_a_request_trickling_in_byte_by_byte_is_read(collector: LocalCollector) -> None:
    data = raw_request(collector, {"application_id": APP, "session_id": SID})
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            sock.send(data[i : i + 1])
        assert read_answer(sock).json == {"session_id": SID}


def test_chunked_body_in_pieces_with_extensions_and_trailers(collector: LocalCollector) -> None:
    body = json.dumps({"application_id": APP, "session_id": SID}).encode()
    half = len(body) // 2
    head = b"POST /v1/sessions HTTP/1.1\r\n" + host_line(collector)
    head += b"Content-Type: application/json\r\n"
    pieces = [
        head + b"Transfer-Encoding: chunked\r\n\r\n",
        b"%x;name=value\r\n" % half + body[:half],
        b"\r\n%X\r\n" % (len(body) - half) + body[half:] + b"\r",
        b"\n0\r\nX-Trailer: yes\r\n",
        b"\r\n",
    ]
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        for piece in pieces:
            sock.sendall(piece)
            # Pacing, the subject of the test: each piece is likely read on its own.
            time.sleep(0.02)
        assert read_answer(sock).status == 200
        # The connection is still in step:
        sock.sendall(raw_request(collector, {"application_id": APP}))
        assert read_answer(sock).status == 200
    assert collector.requests[0].body == body


@pytest.mark.parametrize(
    ("framing", "error"),
    [
        (b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size b'zz'"),
        (b"Transfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding 'gzip'"),
    ],
)
def test_bad_chunked_framing_is_400_and_closes(
    collector: LocalCollector, framing: bytes, error: str
) -> None:
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(b"POST /v1/sessions HTTP/1.1\r\n" + host_line(collector) + framing)
        answer = read_answer(sock)
        assert (answer.status, answer.json, answer.headers["connection"]) == (
            400,
            {"error": error},
            "close",
        )
        assert is_closed(sock)
    assert [(r.status, r.body) for r in collector.requests] == [(400, b"")]


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"POST /v1/sessions HTTP/2.0\r\n\r\n", 505),
        (b"POST /v1/sessions HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"POST /v1/sessions HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_an_unreadable_head_is_refused_unrecorded(
    collector: LocalCollector, head: bytes, status: int
) -> None:
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(head)
        answer = read_answer(sock)
        assert (answer.status, answer.headers["connection"]) == (status, "close")
        assert "error" in answer.json
        assert is_closed(sock)
    assert collector.requests == []


def test_pipelined_requests_are_answered_in_order(collector: LocalCollector) -> None:
    sessions = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"pipelined-{i}")) for i in range(5)]
    bodies = [{"application_id": APP, "session_id": s} for s in sessions]
    data = b"".join(raw_request(collector, body) for body in bodies)
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(data)  # all at once, before any answer
        assert [read_answer(sock).json["session_id"] for _ in sessions] == sessions


def test_connection_close_and_http_1_0_are_honoured(collector: LocalCollector) -> None:
    body = json.dumps({"application_id": APP}).encode()
    for head in (
        b"POST /v1/sessions HTTP/1.1\r\nConnection: close\r\n" + host_line(collector),
        b"POST /v1/sessions HTTP/1.0\r\n",
    ):
        with socket.create_connection(("127.0.0.1", collector.port)) as sock:
            framing = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            sock.sendall(head + framing + body)
            answer = read_answer(sock)
            assert (answer.status, answer.headers["connection"]) == (200, "close")
            assert is_closed(sock)
    kept = b"POST /v1/sessions HTTP/1.0\r\nConnection: keep-alive\r\n"
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        framing = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        sock.sendall(kept + framing + body)
        assert "connection" not in read_answer(sock).headers
        assert not is_closed(sock)


def test_expect_100_continue_and_head(collector: LocalCollector) -> None:
    body = json.dumps({"application_id": APP}).encode()
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.settimeout(5)
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\nExpect: 100-continue\r\n"
            + host_line(collector)
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert read_answer(sock).status == 200
        sock.sendall(b"HEAD /v1/sessions HTTP/1.1\r\n" + host_line(collector) + b"\r\n")
        answer = read_answer(sock, head=True)
        assert (answer.status, int(answer.headers["content-length"]) > 0) == (405, True)
        # No body was sent after the head:
        sock.sendall(raw_request(collector, {"application_id": APP}))
        assert read_answer(sock).status == 200


def test_many_keep_alive_connections_at_once(collector: LocalCollector, session: str) -> None:
    connections = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(64)]
    try:
        for round_ in range(3):
            for i, sock in enumerate(connections):  # every connection has a request in flight
                body = json.dumps(action(data=[i, round_])).encode()
                sock.sendall(
                    f"POST /v1/sessions/{session}/actions HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{collector.port}\r\n"
                    f"X-Request-Id: {i}-{round_}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            assert {read_answer(sock).status for sock in connections} == {202}
        assert collector.event_count == 1 + 64 * 3
        collector.stop()
        assert all(is_closed(sock) for sock in connections)
    finally:
        for sock in connections:
            sock.close()


def test_delayed_requests_wait_together_not_in_turn(collector: LocalCollector) -> None:
    collector.delay = 0.5
    answers: list[int] = []

    def produce() -> None:
        answers.append(post(collector, "/v1/sessions", {"application_id": APP}).status)

    producers = [threading.Thread(target=produce) for _ in range(20)]
    started = time.monotonic()
    for producer in producers:
        producer.start()
    assert collector.wait_for(lambda c: len(c.requests) == 20, timeout=5)
    assert time.monotonic() - started < 2.0  # 20 x 0.5 s would take 10 s in turn
    for producer in producers:
        producer.join()
    assert answers == [200] * 20


def test_held_requests_of_many_connections_are_released_together(
    collector: LocalCollector,
) -> None:
    collector.hang()
    connections = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(10)]
    try:
        for sock in connections:
            sock.sendall(raw_request(collector, {"application_id": APP}))
        assert collector.wait_for(lambda c: c.unanswered == 10, timeout=5)
        assert select.select(connections, [], [], 0.3)[0] == []  # no answer while hung
        assert collector.event_count == 0
    finally:
        collector.release()
    try:
        assert [read_answer(sock).status for sock in connections] == [200] * 10
        assert collector.event_count == 10
    finally:
        for sock in connections:
            sock.close()


def test_a_held_request_whose_client_left_is_still_recorded(collector: LocalCollector) -> None:
    collector.hang()
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(raw_request(collector, {"application_id": APP, "session_id": SID}))
        assert collector.wait_for(lambda c: c.unanswered == 1, timeout=5)
        assert select.select([sock], [], [], 0.2)[0] == []  # no answer while hung
    collector.release()
    assert collector.wait_for(lambda c: len(c.requests) == 1, timeout=5)
    assert collector.session(SID) is not None


def test_stop_and_start_again_many_times(collector: LocalCollector) -> None:
    port = collector.port
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", port)) as idle:
            started = time.monotonic()
            collector.stop()
            assert time.monotonic() - started < 1.0
            assert is_closed(idle)
        collector.start()
        assert collector.port == port
        assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200
    assert collector.event_count == 10


def test_stop_from_another_thread_ends_hung_delayed_and_idle_connections(
    collector: LocalCollector,
) -> None:
    collector.delay = 30
    delayed = socket.create_connection(("127.0.0.1", collector.port))
    delayed.sendall(raw_request(collector, {"application_id": APP}))
    assert collector.wait_for(lambda c: c.unanswered == 1, timeout=5)  # read: delayed, not held
    collector.hang()
    held = socket.create_connection(("127.0.0.1", collector.port))
    held.sendall(raw_request(collector, {"application_id": APP}))
    idle = socket.create_connection(("127.0.0.1", collector.port))
    assert collector.wait_for(lambda c: c.unanswered == 2, timeout=5)
    stopper = threading.Thread(target=collector.stop)
    started = time.monotonic()
    stopper.start()
    stopper.join(5)
    assert time.monotonic() - started < 2.5
    try:
        assert all(is_closed(sock) for sock in (delayed, held, idle))
        assert [r.status for r in collector.requests] == [0, 0]
    finally:
        for sock in (delayed, held, idle):
            sock.close()


# -- persistence in SQLite (db=), the on_event hook, fail_rate -----------------------------


def test_db_keeps_sessions_and_actions_across_a_restart(tmp_path: Any) -> None:
    db = tmp_path / "collector.sqlite"
    with LocalCollector(db=db) as first:
        body = {"application_id": APP, "session_id": SID, "actions": [action("embeddings")]}
        assert post(first, "/v1/sessions", body).status == 200
        assert post(first, f"/v1/sessions/{SID}/actions", action(attributes={"n": 1})).status == 202
        sessions, actions = first.sessions, first.actions()
    second = LocalCollector(db=db)  # loaded at once, before it serves
    assert second.sessions == sessions and second.actions() == actions
    assert second.event_count == 3
    with second:
        assert post(second, f"/v1/sessions/{SID}/actions", action("moderation")).status == 202
        assert (
            post(second, "/v1/sessions", {"application_id": APP, "session_id": SID}).status == 409
        )
    kinds = [stored["kind"] for stored in LocalCollector(db=db).actions(SID)]
    assert kinds == ["embeddings", "completion_prompt", "moderation"]


def test_db_schema_is_queryable_with_sqlite3(tmp_path: Any) -> None:
    import sqlite3

    db = tmp_path / "collector.sqlite"
    with LocalCollector(db=str(db)) as running:
        body = {"application_id": APP, "session_id": SID, "attributes": {"user.id": "u"}}
        assert post(running, "/v1/sessions", body).status == 200
        stored = action(attributes={"model.id": "m"}, data={"x": 1})
        assert post(running, f"/v1/sessions/{SID}/actions", stored).status == 202
    connection = sqlite3.connect(db)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert connection.execute("PRAGMA user_version").fetchone() == (1,)
        row = connection.execute(
            "SELECT session_id, application_id, start_time, json_extract(body, '$.attributes')"
            " FROM sessions"
        ).fetchone()
        assert row == (SID, APP, None, '{"user.id":"u"}')
        row = connection.execute(
            "SELECT seq, session_id, kind, start_time, end_time, body FROM actions"
        ).fetchone()
        assert row[:5] == (1, SID, "completion_prompt", T0, T1)
        assert json.loads(row[5]) == stored
        (received_at,) = connection.execute("SELECT received_at FROM actions").fetchone()
        assert abs(received_at - time.time()) < 60
    finally:
        connection.close()


def test_db_is_emptied_by_clear(tmp_path: Any) -> None:
    db = tmp_path / "collector.sqlite"
    with LocalCollector(db=db) as running:
        assert (
            post(running, "/v1/sessions", {"application_id": APP, "session_id": SID}).status == 200
        )
        running.clear()
        other = str(uuid.uuid5(uuid.NAMESPACE_URL, "after-clear"))
        assert (
            post(running, "/v1/sessions", {"application_id": APP, "session_id": other}).status
            == 200
        )
    assert [stored["session_id"] for stored in LocalCollector(db=db).sessions] == [other]


def test_db_of_another_schema_version_is_refused(tmp_path: Any) -> None:
    import sqlite3

    db = tmp_path / "collector.sqlite"
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(ValueError, match="schema version 99"):
        LocalCollector(db=db)


def test_on_event_sees_each_stored_session_and_action_in_order(collector: LocalCollector) -> None:
    events: list[Any] = []
    with LocalCollector(on_event=events.append) as running:
        body = {"application_id": APP, "session_id": SID, "actions": [action("embeddings")]}
        assert post(running, "/v1/sessions", body).status == 200
        assert post(running, f"/v1/sessions/{SID}/actions", action()).status == 202
        assert post(running, f"/v1/sessions/{SID}/actions", {"kind": "bad"}).status == 422
        before = time.time()
    assert [(event.kind, event.session_id) for event in events] == [
        ("session", SID),
        ("action", SID),
        ("action", SID),
    ]
    assert events[0].body == {"application_id": APP, "session_id": SID}  # actions come apart
    assert events[1].body == action("embeddings") and events[2].body == action()
    assert all(before - 60 < event.stored_at <= before for event in events)


def test_an_on_event_hook_that_raises_does_not_fail_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: Any) -> None:
        raise RuntimeError("hook bug")

    with LocalCollector(on_event=broken) as running:
        assert (
            post(running, "/v1/sessions", {"application_id": APP, "session_id": SID}).status == 200
        )
        assert running.event_count == 1
    assert "on_event hook raised" in caplog.text


def test_fail_rate_answers_that_fraction_with_503(collector: LocalCollector) -> None:
    assert collector.fail_rate == 0
    collector.fail_rate = 1
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 503
    collector.fail_next(1, 429)  # fail_next comes first
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 429
    collector.fail_rate = 0
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200
    with pytest.raises(ValueError):
        collector.fail_rate = 1.5


# -- faults for delivery tests and pipelining -------------------


def test_fail_for_refuses_every_request_of_a_window(collector: LocalCollector) -> None:
    collector.fail_for(0.5, 429, retry_after=3)
    started = time.monotonic()
    refused = post(collector, "/v1/sessions", {"application_id": APP})
    assert (refused.status, refused.headers["retry-after"]) == (429, "3")
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 429
    # The subject of the test: once the window's time has passed, requests succeed again.
    time.sleep(max(0.0, started + 0.55 - time.monotonic()))
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200
    assert collector.event_count == 1
    with pytest.raises(ValueError):
        collector.fail_for(-1)


def test_fail_next_matching_fails_only_the_requests_with_those_bytes(
    collector: LocalCollector,
) -> None:
    collector.fail_next(1, 503, matching=b"target")
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200
    marked = {"application_id": APP, "attributes": {"who": "target"}}
    assert post(collector, "/v1/sessions", marked).status == 503
    assert post(collector, "/v1/sessions", marked).status == 200  # used up


def test_max_body_bytes_refuses_larger_bodies_with_413(collector: LocalCollector) -> None:
    collector.max_body_bytes = 200
    big = {"application_id": APP, "attributes": {"text": "x" * 300}}
    assert post(collector, "/v1/sessions", big).status == 413
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 200
    collector.max_body_bytes = None
    assert post(collector, "/v1/sessions", big).status == 200


def test_a_body_over_the_limit_is_refused_from_its_content_length_before_it_is_sent(
    collector: LocalCollector,
) -> None:
    """The limit applies as the request is read: a Content-Length over it is answered 413
    at once, without waiting for (or keeping) the body, and without 100 Continue."""
    collector.max_body_bytes = 1000
    for expect in (b"", b"Expect: 100-continue\r\n"):
        with socket.create_connection(("127.0.0.1", collector.port)) as sock:
            sock.settimeout(5)
            sock.sendall(
                b"POST /v1/sessions HTTP/1.1\r\n"
                + host_line(collector)
                + expect
                + b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n"
            )  # the head alone: the body is never sent
            answer = read_answer(sock)
            assert (answer.status, answer.headers["connection"]) == (413, "close")
            assert answer.json == {"error": "the body is larger than 1000 bytes"}
    assert [(r.status, r.body) for r in collector.requests] == [(413, b""), (413, b"")]
    assert collector.sessions == []


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(
    collector: LocalCollector,
) -> None:
    """A chunked body has no length to refuse at once: it is read until a chunk would take
    it past the limit, then answered 413 without reading the rest."""
    collector.max_body_bytes = 1000
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.settimeout(5)
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\n"
            + host_line(collector)
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"258\r\n"
            + b" " * 600
            + b"\r\n"
            + b"258\r\n"  # a second chunk of 600 bytes: 1,200 in all, its data never sent
        )
        assert read_answer(sock).status == 413
    (request,) = collector.requests
    assert (request.status, request.body) == (413, b"")


def test_a_client_still_sending_a_refused_body_gets_the_answer_not_a_reset(
    collector: LocalCollector,
) -> None:
    """The answer to a body refused unread closes the connection only once the client has
    sent the rest (read and dropped): a client writing its whole body first, then reading,
    as most do, finds the 413 rather than a reset."""
    collector.max_body_bytes = 1000
    body = b'{"application_id": "' + b"x" * 4_000_000 + b'"}'
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.settimeout(10)
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\n"
            + host_line(collector)
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        assert read_answer(sock).status == 413
        assert sock.recv(1) == b""  # then the connection ends, cleanly
    assert collector.requests[0].body == b""


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/sessions", {"application_id": APP}),
        ("POST", f"/v1/sessions/{SID}/actions", action()),
        ("GET", f"/v1/sessions/{SID}", None),
        ("GET", "/v1/applications", None),
        ("POST", "/v1/applications", {"name": "n", "source": "s"}),
        ("GET", "/", None),
        ("GET", "/static/page.js", None),
        ("GET", "/api/sessions", None),
        ("GET", f"/api/sessions/{SID}", None),
        ("GET", "/api/events", None),
        ("POST", f"/api/sessions/{SID}/firewall", {"decision": "block"}),
    ],
)
def test_a_foreign_host_is_refused_on_every_endpoint(
    collector: LocalCollector, session: str, method: str, path: str, body: Any
) -> None:
    """DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 reaches
    the collector with its own name in Host. Refused with 403, whatever the path; the
    collector's own names (its address, localhost, [::1]) with its port are answered."""
    data = None if body is None else json.dumps(body)
    for host in (
        f"evil.example:{collector.port}",
        f"127.0.0.1.evil.example:{collector.port}",
        f"localhost:{collector.port + 1}",
        "localhost",
        "",
        "127.0.0.1:x",
    ):
        conn = connect(collector)
        conn.request(method, path, data, {**JSON, "Host": host})
        response = conn.getresponse()
        assert response.status == 403, (host, response.read())
        assert b"DNS rebinding" in response.read()
        conn.close()
    assert collector.session(SID)["actions"] == []
    assert len(collector.sessions) == 1 and collector.applications == []
    for host in (
        f"127.0.0.1:{collector.port}",
        f"localhost:{collector.port}",
        f"[::1]:{collector.port}",
    ):
        conn = connect(collector)
        conn.request(method, path, data, {**JSON, "Host": host, "Origin": f"http://{host}"})
        response = conn.getresponse()
        if path != "/api/events":
            response.read()
        assert response.status in (200, 201, 202, 409), (host, response.status)  # 409: made
        conn.close()


def test_a_foreign_host_is_refused_at_once_whatever_the_faults(collector: LocalCollector) -> None:
    collector.hang()
    collector.fail_next(1, 503)
    answer = post(
        collector, "/v1/sessions", {"application_id": APP}, headers={**JSON, "Host": "evil.example"}
    )
    assert answer.status == 403
    assert [r.status for r in collector.requests] == [403]
    collector.release()
    assert post(collector, "/v1/sessions", {"application_id": APP}).status == 503  # still set


def test_allowed_hosts_adds_names_and_star_turns_the_check_off() -> None:
    with LocalCollector(allowed_hosts=["devbox", "Proxy.Example:8443"]) as collector:
        for host, status in (
            ("devbox", 200),
            ("DEVBOX:1234", 200),
            ("proxy.example:8443", 200),
            ("proxy.example:8444", 403),
            ("evil.example", 403),
        ):
            answer = post(
                collector, "/v1/applications", method="GET", raw=b"", headers={"Host": host}
            )
            assert answer.status == status, host
    with LocalCollector(allowed_hosts=["*"]) as collector:
        answer = post(
            collector, "/v1/applications", method="GET", raw=b"", headers={"Host": "any.example"}
        )
        assert answer.status == 200
    with pytest.raises(ValueError, match="allowed_hosts"):
        LocalCollector(allowed_hosts=["bad host:port"])


def test_an_http_1_1_request_needs_a_host_and_http_1_0_may_go_without(
    collector: LocalCollector,
) -> None:
    body = json.dumps({"application_id": APP}).encode()
    framing = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(b"POST /v1/sessions HTTP/1.1\r\n" + framing + body)
        answer = read_answer(sock)
        assert (answer.status, answer.json) == (
            400,
            {"error": "an HTTP/1.1 request needs a Host header"},
        )
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(b"POST /v1/sessions HTTP/1.0\r\n" + framing + body)
        assert read_answer(sock).status == 200


def test_the_absolute_form_of_a_request_line_is_accepted() -> None:
    """As a proxy would receive it (RFC 9112 3.2.2): the collector can stand in for one,
    told the name of the API it stands in for."""
    body = json.dumps({"application_id": APP}).encode()
    with (
        LocalCollector(allowed_hosts=["layer.example"]) as collector,
        socket.create_connection(("127.0.0.1", collector.port)) as sock,
    ):
        sock.sendall(
            b"POST http://layer.example/v1/sessions HTTP/1.1\r\nHost: layer.example\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        assert read_answer(sock).status == 200
        assert collector.requests[0].path == "/v1/sessions"


@pytest.mark.parametrize("order", ["foreign first", "own first"])
def test_a_request_with_two_host_headers_is_refused(collector: LocalCollector, order: str) -> None:
    """RFC 9112 3.2: more than one Host is a bad request (400), whichever comes first: a
    check that read one of them would let the other through."""
    own, foreign = f"127.0.0.1:{collector.port}", f"evil.example:{collector.port}"
    hosts = (foreign, own) if order == "foreign first" else (own, foreign)
    body = json.dumps({"application_id": APP}).encode()
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(
            b"POST /v1/sessions HTTP/1.1\r\nHost: %s\r\nHost: %s\r\n"
            % tuple(h.encode() for h in hosts)
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        answer = read_answer(sock)
    assert (answer.status, answer.json) == (400, {"error": "more than one Host header"})
    assert collector.sessions == []


def test_an_absolute_request_target_naming_a_foreign_host_is_refused(
    collector: LocalCollector,
) -> None:
    """The host of an absolute target is the request's (RFC 9112 3.2.2: the Host header is
    then ignored): a foreign one is refused as a foreign Host is, whatever Host says."""
    body = json.dumps({"application_id": APP}).encode()
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(
            b"POST http://evil.example:%d/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            % (collector.port, collector.port)
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        assert read_answer(sock).status == 403
    assert collector.sessions == []


def test_pipelined_requests_wait_their_delays_side_by_side(collector: LocalCollector) -> None:
    """A server 0.3 s away answers ten pipelined requests in about 0.3 s, in order."""
    collector.delay = 0.3
    sessions = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"side-by-side-{i}")) for i in range(10)]
    bodies = [{"application_id": APP, "session_id": s} for s in sessions]
    data = b"".join(raw_request(collector, body) for body in bodies)
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        started = time.monotonic()
        sock.sendall(data)
        assert [read_answer(sock).json["session_id"] for _ in sessions] == sessions
        assert time.monotonic() - started < 0.3 * 3  # one at a time would take 3 s
    assert [s["session_id"] for s in collector.sessions] == sessions


def test_a_closing_answer_leaves_the_pipelined_requests_after_it_unanswered(
    collector: LocalCollector,
) -> None:
    """As on a server taking requests one by one, nothing after a request that
    closes the connection is stored: after ``Connection: close`` nothing more is read;
    after a dropped request, what was read is recorded with status 0."""
    sessions = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"pipelined-{i}")) for i in range(5)]
    collector.fail_next(1, 503, matching=sessions[1].encode())
    requests = [raw_request(collector, {"application_id": APP, "session_id": s}) for s in sessions]
    requests[2] = requests[2].replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(b"".join(requests))
        assert [read_answer(sock).status for _ in range(3)] == [200, 503, 200]
        assert is_closed(sock)
    assert [s["session_id"] for s in collector.sessions] == [sessions[0], sessions[2]]
    assert [r.status for r in collector.requests] == [200, 503, 200]

    collector.clear()
    collector.drop_next(1)
    bodies = [{"application_id": APP, "attributes": {"n": str(n)}} for n in range(3)]
    requests = [raw_request(collector, body) for body in bodies]
    with socket.create_connection(("127.0.0.1", collector.port)) as sock:
        sock.sendall(b"".join(requests))
        assert is_closed(sock)
    assert collector.wait_for(lambda c: len(c.requests) == 3)
    assert [r.status for r in collector.requests] == [0, 0, 0]
    assert collector.sessions == []
