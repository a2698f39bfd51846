"""Applications by name: init(application_name=...), and list/get/create as in 0.15."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from layer_sdk import (
    AuthProvider,
    Client,
    LayerHTTPError,
    LayerMissingRequiredConfigurationError,
)
from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, FAST, PROMPT, MakeClient, in_multiprocessing_child

OTHER_ID = "6f1d1f9e-8a57-4bd4-9d0e-3f6c4c1a2b77"


def named_client(collector: LocalCollector, name: str, **options: object) -> Client:
    client = Client()
    client.init(base_url=collector.url, application_name=name, **{**FAST, **options})  # type: ignore[arg-type]
    return client


def application_requests(collector: LocalCollector) -> list[tuple[str, object]]:
    return [(r.method, r.json) for r in collector.requests if r.path == "/v1/applications"]


def test_a_known_name_is_resolved_at_init(collector: LocalCollector) -> None:
    """The ID of the application with that name, nothing created."""
    collector.add_application("other", APP_ID)
    collector.add_application("support-bot", OTHER_ID)
    client = named_client(collector, "support-bot")
    try:
        session_id = client.create_session()
        client.append_action(session_id, kind=PROMPT, data={"n": 1})
        assert client.flush(5)
    finally:
        client.shutdown()
    assert collector.session(session_id)["application_id"] == OTHER_ID  # type: ignore[index]
    assert application_requests(collector) == [("GET", None)]


def test_a_missing_name_is_created(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    """Created with POST {"name", "source": "manual"} when missing;
    LAYER_APPLICATION_NAME stands for application_name."""
    monkeypatch.setenv("LAYER_APPLICATION_NAME", "new-bot")
    client = Client()
    client.init(base_url=collector.url, **FAST)  # type: ignore[arg-type]
    try:
        session_id = client.create_session(sync=True)
    finally:
        client.shutdown()
    (app,) = collector.applications
    assert app["name"] == "new-bot"
    assert collector.session(session_id)["application_id"] == app["id"]  # type: ignore[index]
    assert application_requests(collector) == [
        ("GET", None),
        ("POST", {"name": "new-bot", "source": "manual"}),
    ]


def test_an_id_or_a_name_is_required() -> None:
    """The error names both options and both variables."""
    with pytest.raises(LayerMissingRequiredConfigurationError) as raised:
        Client().init(base_url="http://127.0.0.1:1")
    for word in (
        "application_id",
        "application_name",
        "LAYER_APPLICATION_ID",
        "LAYER_APPLICATION_NAME",
    ):
        assert word in str(raised.value)


class _Token(AuthProvider):
    TOKEN = "s3cr3t-application-token"

    def get_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.TOKEN}"}

    def known_secrets(self) -> list[str]:
        return [self.TOKEN]


def test_a_name_the_api_refuses_fails_init_clearly(collector: LocalCollector) -> None:
    """A definite refusal raises at init, naming the name, the step
    and the server's answer, without the token it echoed."""
    echo = f'{{"error":"forbidden for Bearer {_Token.TOKEN}"}}'.encode()
    collector.fail_next(1, 403, body=echo)
    with pytest.raises(LayerMissingRequiredConfigurationError) as listing:
        named_client(collector, "bot", auth_provider=_Token())
    message = str(listing.value)
    assert "'bot'" in message and "listing applications" in message and "403" in message
    assert _Token.TOKEN not in message
    assert isinstance(listing.value.__cause__, LayerHTTPError)

    collector.fail_next(1, 422, body=b'{"error":"name not allowed"}', matching=b'"name"')
    with pytest.raises(LayerMissingRequiredConfigurationError, match="creating the application"):
        named_client(collector, "bot")
    assert collector.sessions == []


def test_init_never_waits_longer_than_http_timeout_and_loses_nothing(
    collector: LocalCollector,
) -> None:
    """API down at init: init returns within http_timeout, the name
    resolves in the background, and the sessions reported meanwhile get the ID spliced in."""
    collector.add_application("support-bot", OTHER_ID)
    collector.hang()
    started = time.monotonic()
    client = named_client(collector, "support-bot", http_timeout=0.5)
    try:
        assert time.monotonic() - started < 1.5
        sessions = [client.create_session() for _ in range(3)]
        for session_id in sessions:
            client.append_action(session_id, kind=PROMPT, data={"n": 1})
        collector.release()
        assert client.flush(20)
        stats = client.stats()
        assert (stats.sent, stats.failed, stats.dropped) == (6, 0, 0)
    finally:
        client.shutdown()
    assert [collector.session(s)["application_id"] for s in sessions] == [OTHER_ID] * 3  # type: ignore[index]
    assert len(collector.actions()) == 3


def test_a_background_refusal_fails_the_waiting_sessions(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """When the API, back, refuses the name for good, the sessions
    that waited for it fail (counted) and the reason is logged."""
    caplog.set_level(logging.ERROR, logger="layer_sdk")
    collector.hang()
    client = named_client(collector, "bot", http_timeout=0.3)
    try:
        client.append_action(client.create_session(), kind=PROMPT, data={"n": 1})
        collector.fail_for(30, 403)
        collector.release()
        assert not client.flush(20)
        stats = client.stats()
        assert (stats.sent, stats.failed) == (0, 2)
    finally:
        client.shutdown()
    assert any("'bot' could not be resolved" in r.getMessage() for r in caplog.records)


def test_a_name_created_meanwhile_elsewhere_is_found(collector: LocalCollector) -> None:
    """A 409 on create (another process created it since the listing)
    lists again and takes that ID."""
    collector.add_application("bot", OTHER_ID)
    collector.fail_next(1, 200, body=b"[]")  # the first listing predates the other process
    client = named_client(collector, "bot")
    try:
        session_id = client.create_session(sync=True)
    finally:
        client.shutdown()
    assert collector.session(session_id)["application_id"] == OTHER_ID  # type: ignore[index]
    assert [method for method, _ in application_requests(collector)] == ["GET", "POST", "GET"]


@pytest.mark.parametrize("http_timeout", [5.0, 0.2], ids=["resolved at init", "in the background"])
def test_a_name_that_exists_but_is_not_listed_yet_is_listed_again(
    collector: LocalCollector, http_timeout: float
) -> None:
    """A listing that lags behind creates (list: empty, create: 409, list: empty) is
    transient: the name is listed again, with backoff, until it shows; nothing fails,
    at init or in the background, and the name is not created again."""
    collector.add_application("bot", OTHER_ID)
    collector.fail_next(1, 200, body=b"[]")
    collector.fail_next(1, 409, body=b'{"error":"an application named bot exists already"}')
    collector.fail_next(2, 200, body=b"[]")
    client = named_client(collector, "bot", http_timeout=http_timeout)
    try:
        session_id = client.create_session()
        client.append_action(session_id, kind=PROMPT, data={"n": 1})
        assert client.flush(20)
        stats = client.stats()
        assert (stats.sent, stats.failed) == (2, 0)
    finally:
        client.shutdown()
    assert collector.session(session_id)["application_id"] == OTHER_ID  # type: ignore[index]
    assert [method for method, _ in application_requests(collector)] == [
        "GET",
        "POST",
        "GET",
        "GET",
        "GET",
    ]


def test_a_name_never_listed_after_a_conflict_fails_within_max_retry_time(
    collector: LocalCollector,
) -> None:
    """A name the API calls taken but never lists fails once max_retry_time has passed,
    saying what happened."""
    collector.fail_next(1, 200, body=b"[]")
    collector.fail_next(1, 409, body=b'{"error":"an application named bot exists already"}')
    collector.fail_next(1_000, 200, body=b"[]")
    with pytest.raises(LayerMissingRequiredConfigurationError) as raised:
        named_client(collector, "bot", http_timeout=10.0, max_retry_time=1.0)
    assert "exists, yet does not list it" in str(raised.value)
    methods = [method for method, _ in application_requests(collector)]
    assert methods[:2] == ["GET", "POST"] and set(methods[2:]) == {"GET"} and len(methods) > 3


def _report_in_child(client: Client) -> tuple[bool, int, int]:
    session_id = client.create_session()
    client.append_action(session_id, kind=PROMPT, data={"n": 1})
    delivered = client.flush(20)
    stats = client.stats()
    return delivered, stats.sent, stats.failed


def test_a_forked_child_resolves_the_name_itself(collector: LocalCollector) -> None:
    """Forked while the name is unresolved, a child resolves it on a
    thread of its own and delivers its sessions with the ID."""
    collector.hang()
    client = named_client(collector, "bot", http_timeout=0.3)
    try:
        releasing = threading.Timer(0.5, collector.release)
        releasing.start()
        code, result = in_multiprocessing_child(_report_in_child, client)
        releasing.join()
        assert code == 0
        assert result == (True, 2, 0)
        assert client.flush(20)
    finally:
        client.shutdown()
    (app,) = collector.applications
    assert [s["application_id"] for s in collector.sessions] == [app["id"]]


def test_list_get_and_create(make_client: MakeClient, collector: LocalCollector) -> None:
    """List_applications, get_applications_by_name, create_application."""
    client = make_client()
    assert client.list_applications() == []
    created = client.create_application("alpha")
    collector.add_application("beta", OTHER_ID)
    assert [app["name"] for app in client.list_applications()] == ["alpha", "beta"]
    assert client.get_applications_by_name() == {"alpha": created, "beta": OTHER_ID}
    assert client.get_applications_by_name("beta") == {"beta": OTHER_ID}
    assert client.get_applications_by_name("gamma") == {}
    with pytest.raises(LayerHTTPError) as taken:
        client.create_application("alpha")
    assert taken.value.status_code == 409
    with pytest.raises(LayerMissingRequiredConfigurationError, match="needs a name"):
        client.create_application()
    with pytest.raises(ValueError, match="non-empty"):
        client.create_application("  ")


def test_create_application_uses_the_configured_name(collector: LocalCollector) -> None:
    """Create_application() without a name creates application_name."""
    collector.add_application("bot", OTHER_ID)
    client = named_client(collector, "bot")
    try:
        with pytest.raises(LayerHTTPError, match="exists already"):
            client.create_application()
    finally:
        client.shutdown()


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"name":"x"}', "field `source`"),
        (b'{"name":"","source":"manual"}', "`$.name`"),
        (b'{"name":"x","source":"manual","owner":"me"}', "field `owner`"),
        (b'{"name":1,"source":"manual"}', "$.name"),
    ],
)
def test_collector_applications_endpoint_is_strict(
    collector: LocalCollector, body: bytes, where: str
) -> None:
    """The collector validates POST /v1/applications (422, field path)."""
    request = urllib.request.Request(
        collector.url + "/v1/applications",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=5)
    assert answer.value.code == 422
    assert where in answer.value.read().decode()
    assert collector.applications == []


def test_session_ids_stay_version_5_with_a_name(collector: LocalCollector) -> None:
    """A client known by name still mints UUID v5 session IDs."""
    client = named_client(collector, "bot")
    try:
        assert uuid.UUID(client.create_session()).version == 5
    finally:
        client.shutdown()
