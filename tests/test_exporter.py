"""The buffered exporter, end to end against a real local server.

Covers the wire format, how sessions and actions are batched and ordered,
the queue's bounds, retries, and what happens when the server misbehaves.
"""

from __future__ import annotations

import platform
import threading
import uuid
from collections import Counter
from datetime import datetime, timezone

import pytest
import requests
from requests.adapters import HTTPAdapter, Retry

from layer_sdk import __version__
from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, PROMPT, MakeClient, wait_until


def api_requests(collector: LocalCollector) -> list[str]:
    return [request.path for request in collector.requests]


# -- the wire format ------------------------------------------------------------


def test_a_session_is_sent_with_utc_times_platform_attributes_and_headers(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(environment="Production", platform="k8s-batch")
    start = datetime(2024, 5, 1, 12, 0, 0, 123456)  # naive: taken as UTC
    session_id = client.create_session(attributes={"user.id": "u-1", "n": 3}, start_time=start)
    assert client.flush(5) is True

    (request,) = collector.requests
    assert request.path == "/v1/sessions"
    body = request.json
    assert body["application_id"] == APP_ID
    assert body["session_id"] == session_id
    assert body["start_time"] == "2024-05-01T12:00:00.123456Z"
    assert "end_time" not in body
    assert body["attributes"] == {
        "user.id": "u-1",
        "n": "3",
        "environment": "production",
        "platform": "k8s-batch",
        "source": f"layer-python-sdk/{__version__}",
        "os": platform.system().lower(),
        "python.runtime": platform.python_implementation(),
        "python.runtime.version": platform.python_version(),
    }
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"] == f"layer-sdk-python/{__version__}"
    assert len(headers["x-request-id"]) == 32
    assert "authorization" not in headers


def test_kubernetes_attributes_are_added_when_running_in_a_pod(
    monkeypatch: pytest.MonkeyPatch, make_client: MakeClient, collector: LocalCollector
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("POD_NAME", "web-7f9c")
    monkeypatch.setenv("POD_NAMESPACE", "shop")
    monkeypatch.setenv("NODE_NAME", "node-3")
    client = make_client()
    client.create_session()
    assert client.flush(5)
    attributes = collector.sessions[0]["attributes"]
    assert attributes["kubernetes_pod_name"] == "web-7f9c"
    assert attributes["kubernetes_pod_namespace"] == "shop"
    assert attributes["kubernetes_node_name"] == "node-3"


def test_an_action_is_sent_as_the_contract_says(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    session_id = client.create_session()
    assert client.flush(5)
    start = datetime(2024, 5, 1, 12, 0, 1, tzinfo=timezone.utc)
    end = datetime(2024, 5, 1, 12, 0, 3, tzinfo=timezone.utc)
    client.append_action(
        session_id,
        kind=PROMPT,
        start_time=start,
        end_time=end,
        data={"messages": [{"role": "user", "content": "hi"}]},
        scanners=[{"name": "usage", "data": {"total_tokens": 5}}],
    )
    client.append_action(uuid.UUID(session_id), kind="embeddings")  # defaults
    assert client.flush(5)

    first, second = (request.json for request in collector.requests[1:])
    assert collector.requests[1].path == f"/v1/sessions/{session_id}/actions"
    assert first == {
        "kind": "completion_prompt",
        "start_time": "2024-05-01T12:00:01Z",
        "end_time": "2024-05-01T12:00:03Z",
        "attributes": {},
        "data": {"messages": [{"role": "user", "content": "hi"}]},
        "scanners": [{"name": "usage", "data": {"total_tokens": 5}}],
    }
    assert second["attributes"] == {}  # never null
    assert second["start_time"].endswith("Z") and second["start_time"] == second["end_time"]
    assert set(second) == {"kind", "start_time", "end_time", "attributes"}


# -- batching and order ---------------------------------------------------------


def test_a_new_session_travels_with_its_queued_actions_in_one_request(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(flush_interval=30)  # only flush() sends
    session_id = client.create_session(attributes={"user.id": "u"})
    for n in range(3):
        client.append_action(session_id, kind=PROMPT, data={"n": n})
    assert client.flush(5)

    assert api_requests(collector) == ["/v1/sessions"]
    assert [action["data"]["n"] for action in collector.requests[0].json["actions"]] == [0, 1, 2]
    assert client.stats().sent == 4


def test_actions_given_to_create_session_count_as_events(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(flush_interval=30)
    client.create_session(
        actions=[{"kind": "completion_prompt", "data": "a"}, {"kind": "completion_output"}]
    )
    assert client.flush(5)
    assert api_requests(collector) == ["/v1/sessions"]
    assert [a["kind"] for a in collector.sessions[0]["actions"]] == [
        "completion_prompt",
        "completion_output",
    ]
    assert client.stats().enqueued == 3


def test_actions_of_a_created_session_go_one_at_a_time_in_order(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    collector.delay = 0.01  # give later actions every chance to overtake earlier ones
    session_id = client.create_session()
    assert client.flush(5)
    for n in range(40):
        client.append_action(session_id, kind=PROMPT, data=n)
    assert client.flush(10)
    assert [action["data"]["value"] for action in collector.actions(session_id)] == list(range(40))
    assert api_requests(collector).count(f"/v1/sessions/{session_id}/actions") == 40


def test_no_action_is_sent_before_its_session_is_created(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    collector.delay = 0.3  # the create is still waiting for its answer...
    session_id = client.create_session()
    assert collector.wait_for(lambda c: False, timeout=0.1) is False  # let the create leave
    client.append_action(session_id, kind=PROMPT, data="late")  # ...when this one arrives
    assert client.flush(5)
    assert [request.status for request in collector.requests] == [200, 202]
    assert [request.path for request in collector.requests] == [
        "/v1/sessions",
        f"/v1/sessions/{session_id}/actions",
    ]


def test_several_requests_are_in_flight_against_a_slow_server(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    collector.delay = 0.5
    for _ in range(16):
        client.create_session()
    assert client.flush(10)
    arrivals = sorted(request.received_at for request in collector.requests)
    overlapping = [t for t in arrivals if t < arrivals[0] + 0.4]
    assert len(overlapping) > 1  # sent while the first was still unanswered


def test_many_producer_threads_lose_and_duplicate_nothing(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    threads, sessions_per_thread, actions_per_session = 8, 50, 5
    session_ids: list[str] = []
    lock = threading.Lock()

    def produce(worker: int) -> None:
        for s in range(sessions_per_thread):
            session_id = client.create_session(attributes={"worker": worker})
            with lock:
                session_ids.append(session_id)
            for a in range(actions_per_session):
                client.append_action(session_id, kind=PROMPT, data={"w": worker, "s": s, "a": a})

    pool = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    assert client.flush(30) is True

    expected_sessions = threads * sessions_per_thread
    expected_actions = expected_sessions * actions_per_session
    assert len(collector.sessions) == expected_sessions
    assert len(collector.actions()) == expected_actions
    assert collector.duplicates == 0
    seen = Counter((a["data"]["w"], a["data"]["s"], a["data"]["a"]) for a in collector.actions())
    assert len(seen) == expected_actions and set(seen.values()) == {1}
    for session_id in session_ids[:20]:
        assert [a["data"]["a"] for a in collector.actions(session_id)] == list(range(5))
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.dropped, stats.failed, stats.queued) == (
        expected_sessions + expected_actions,
        expected_sessions + expected_actions,
        0,
        0,
        0,
    )


# -- the queue's bounds ---------------------------------------------------------


def test_a_full_queue_drops_new_events_with_exact_counts(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    lost: list[tuple[str, int]] = []
    client = make_client(max_queue_size=10, on_drop=lambda reason, n: lost.append((reason, n)))
    collector.hang()
    session_id = client.create_session()
    for n in range(49):
        client.append_action(session_id, kind=PROMPT, data=n)  # never blocks
    stats = client.stats()
    assert (stats.enqueued, stats.dropped, stats.queued) == (10, 40, 10)
    assert stats.dropped_by_reason == {"queue_full": 40}
    assert lost == [("queue_full", 1)] * 40

    collector.release()
    assert client.flush(10) is False  # delivered, but some were dropped since last flush
    assert collector.event_count == 10
    assert [a["data"]["value"] for a in collector.actions(session_id)] == list(range(9))
    assert client.stats().sent == 10


def test_the_byte_bound_covers_large_events(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(max_queue_bytes=20_000, max_event_bytes=5_000)
    collector.hang()
    session_id = client.create_session()
    for _ in range(10):
        client.append_action(session_id, kind=PROMPT, data="x" * 4_000)
    stats = client.stats()
    assert stats.queued_bytes <= 20_000
    assert stats.enqueued == 5 and stats.dropped_by_reason == {"queue_full": 6}
    collector.release()
    client.flush(10)
    assert collector.event_count == 5


def test_actions_of_a_session_dropped_at_the_door_fail_with_it(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(max_queue_size=1)
    collector.hang()
    client.create_session()  # fills the queue
    lost_session = client.create_session()  # dropped
    collector.release()
    assert client.flush(5) is False
    client.append_action(lost_session, kind=PROMPT)
    assert client.flush(5) is False
    stats = client.stats()
    assert stats.dropped_by_reason == {"queue_full": 1}
    assert stats.failed_by_reason == {"session_failed": 1}
    assert api_requests(collector) == ["/v1/sessions"]


def test_under_a_flood_no_action_of_a_lost_session_reaches_the_api(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """4 threads x 25,000 sessions (a create and an action each) into a queue of 500:
    tens of thousands of creates are dropped at the door, far more lost sessions than
    the queue could remember. Every action of a lost session fails as session_failed and
    none reaches the collector (which would refuse it with 404); every other event is
    delivered or dropped for want of room. Exact counts."""
    client = make_client(max_queue_size=500)
    threads, per_thread = 4, 25_000
    created: list[list[str]] = [[] for _ in range(threads)]

    def produce(worker: int) -> None:
        mine = created[worker]
        for n in range(per_thread):
            session_id = client.create_session()
            client.append_action(session_id, kind=PROMPT, data={"n": n})
            mine.append(session_id)

    pool = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(60)
    client.flush(30)

    stored = {session["session_id"] for session in collector.sessions}
    assert stored <= {session_id for mine in created for session_id in mine}
    lost = threads * per_thread - len(stored)
    assert lost > 10_000
    delivered_actions = len(collector.actions())
    assert [r.status for r in collector.requests if r.status >= 300] == []
    stats = client.stats()
    assert stats.failed_by_reason == {"session_failed": lost}
    assert stats.dropped_by_reason == {"queue_full": lost + len(stored) - delivered_actions}
    assert (stats.sent, stats.queued) == (len(stored) + delivered_actions, 0)


# -- retries and failures --------------------------------------------------------


def test_503_with_retry_after_is_retried_with_the_same_request_id(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    collector.fail_next(2, 503, retry_after=0.2)
    session_id = client.create_session()
    client.append_action(session_id, kind=PROMPT)
    assert client.flush(10) is True
    statuses = [request.status for request in collector.requests]
    assert statuses == [503, 503, 200]
    assert len({request.headers["x-request-id"] for request in collector.requests}) == 1
    arrivals = [request.received_at for request in collector.requests]
    assert arrivals[1] - arrivals[0] >= 0.19 and arrivals[2] - arrivals[1] >= 0.19
    stats = client.stats()
    assert (stats.sent, stats.retried, stats.failed) == (2, 4, 0)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 504])
def test_each_transient_status_is_retried(
    make_client: MakeClient, collector: LocalCollector, status: int
) -> None:
    client = make_client()
    collector.fail_next(1, status, retry_after=0)
    client.create_session()
    assert client.flush(10) is True
    assert [request.status for request in collector.requests] == [status, 200]


def test_400_is_not_retried_and_its_session_s_actions_fail_too(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(flush_interval=30)
    # The merged create is refused, then the create alone: the session is bad.
    collector.fail_next(2, 400, body=b'{"error": "attributes: bad"}')
    session_id = client.create_session()
    client.append_action(session_id, kind=PROMPT)
    assert client.flush(5) is False
    client.append_action(session_id, kind=PROMPT)  # after the failure: fails as well
    assert client.flush(5) is False
    assert [request.status for request in collector.requests] == [400, 400]
    assert [request.path for request in collector.requests] == ["/v1/sessions"] * 2
    assert "actions" not in collector.requests[1].json
    stats = client.stats()
    assert stats.failed_by_reason == {"rejected": 1, "session_failed": 2}
    assert (stats.sent, stats.retried, stats.queued) == (0, 2, 0)
    assert "attributes: bad" in caplog.text


def test_max_retries_bounds_the_sync_path_only(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """Buffered requests are retried within max_retry_time (see test_delivery.py)."""
    client = make_client(max_retries=0)
    collector.fail_next(2, 503, retry_after=0)
    client.create_session()
    assert client.flush(10) is True
    assert [request.status for request in collector.requests] == [503, 503, 200]
    assert client.stats().retried == 2


def test_a_dropped_connection_is_retried_and_delivered_once(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    collector.drop_next(1)
    client.create_session()
    assert client.flush(10) is True
    assert collector.event_count == 1
    assert [request.status for request in collector.requests] == [0, 200]


def test_server_down_then_up_delivers_the_backlog(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    collector.stop()
    session_ids = [client.create_session() for _ in range(20)]
    for session_id in session_ids:
        client.append_action(session_id, kind=PROMPT)
    # Wait until the SDK has really met the closed port, then bring the server back.
    assert wait_until(lambda: client.stats().retried > 0)
    collector.start()
    assert client.flush(30) is True
    assert len(collector.sessions) == 20
    assert len(collector.actions()) == 20
    assert client.stats().failed == 0


def test_a_user_http_session_is_used_as_given_with_its_own_retries(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    session = requests.Session()
    retry = Retry(total=3, status_forcelist=[503], backoff_factor=0, allowed_methods=None)
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.headers["X-Team"] = "search"
    client = make_client(http_session=session)
    collector.fail_next(2, 503)
    client.create_session()
    assert client.flush(10) is True
    assert [request.status for request in collector.requests] == [503, 503, 200]
    assert all(request.headers["x-team"] == "search" for request in collector.requests)
    assert client.stats().retried == 0  # the SDK did not stack a retry layer of its own


def test_flush_waits_only_for_events_enqueued_before_it(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client(flush_interval=30)
    client.create_session()
    assert client.flush(5) is True
    assert collector.event_count == 1
    stats = client.stats()
    assert (stats.enqueued, stats.sent, stats.queued) == (1, 1, 0)
