"""The WSGI middleware with Flask: its own test client, and wsgiref serving over TCP.

Each request runs in one session: the view's ``@layer.action`` functions and
its OpenAI calls (the real client, against the local provider server) land
in it, and so do those of a streamed body, which the server consumes after
the application has returned, and of its ``close()``. The collector is
checked for exactly the sessions and actions each request made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

flask = pytest.importorskip("flask")
openai = pytest.importorskip("openai")

from layer_sdk import Client, SessionActionKind  # noqa: E402
from layer_sdk.collector import LocalCollector  # noqa: E402
from layer_sdk.integrations import current_session_id  # noqa: E402
from layer_sdk.integrations._sessions import throttled_log  # noqa: E402
from layer_sdk.integrations.wsgi import LayerMiddleware  # noqa: E402

from .openai_server import OpenAIServer  # noqa: E402

NOTE = SessionActionKind.COMPLETION_TOOL_CALL.value
MESSAGES = [{"role": "user", "content": "Where is my order?"}]
CHAT_KINDS = sorted([NOTE, "completion_prompt", "completion_output"])


class Boom(Exception):
    """What a view raises: it must reach the caller as it is."""


BOOM = Boom("the view failed")


@pytest.fixture
def openai_url() -> Iterator[str]:
    with OpenAIServer() as server:
        yield server.url


@pytest.fixture(autouse=True)
def _fresh_throttle(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No warning held back by an earlier test, and the SDK's warnings captured whatever the
    root logger's level (a Celery worker sets it to ERROR)."""
    monkeypatch.setattr(throttled_log, "_last", {})
    monkeypatch.setattr(throttled_log, "_unsaid", {})
    caplog.set_level(logging.WARNING, "layer_sdk")


def build_app(layer: Client, openai_url: str, **options: Any) -> Any:
    """A Flask app, behind the middleware, whose views record in every way a request can."""
    app = flask.Flask(__name__)
    app.testing = True  # a view's exception propagates to the test client
    app.wsgi_app = LayerMiddleware(app.wsgi_app, client=layer, **options)  # type: ignore[method-assign]
    app.config["closed"] = []

    @layer.action(kind=NOTE)
    def note(text: str) -> dict[str, str]:
        return {"text": text}

    @app.post("/chats/<chat_id>")
    def chat(chat_id: str) -> dict[str, Any]:
        note(f"chat {chat_id}")
        with openai.OpenAI(base_url=openai_url, api_key="sk-test") as gpt:
            gpt.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return {"session_id": current_session_id()}

    @app.get("/stream")
    def stream() -> flask.Response:
        def chunks() -> Iterator[str]:  # runs after the view has returned
            try:
                yield f"{current_session_id()}\n"
                with openai.OpenAI(base_url=openai_url, api_key="sk-test") as gpt:
                    answer = gpt.chat.completions.create(
                        model="gpt-4o-mini", messages=MESSAGES, stream=True
                    )
                    for chunk in answer:
                        if chunk.choices and chunk.choices[0].delta.content:
                            yield chunk.choices[0].delta.content
            finally:  # also when the server closes the body early
                note("closed")
                app.config["closed"].append(current_session_id())

        return flask.Response(chunks(), mimetype="text/plain")

    @app.get("/fail")
    def fail() -> None:
        note("before failing")
        raise BOOM

    @app.get("/health")
    @app.get("/healthy")
    def health() -> dict[str, Any]:
        note("health")
        return {"session_id": current_session_id()}

    return app


def settled(layer: Client, collector: LocalCollector) -> tuple[int, int]:
    """(sessions, actions) at the collector once everything enqueued was delivered."""
    assert layer.flush(timeout=10)
    return len(collector.sessions), len(collector.actions())


def kinds(collector: LocalCollector, session_id: str) -> list[str]:
    session = collector.session(session_id)
    assert session is not None, f"no session {session_id} at the collector"
    return sorted(action["kind"] for action in session["actions"])


def test_each_request_runs_in_its_own_session(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    http = build_app(client, openai_url).test_client()
    first = http.post("/chats/1?token=query-secret", headers={"Authorization": "Bearer x-secret"})
    second = http.post("/chats/2")
    ids = [first.json["session_id"], second.json["session_id"]]
    assert ids[0] != ids[1]
    assert settled(client, collector) == (2, 6)
    assert kinds(collector, ids[0]) == kinds(collector, ids[1]) == CHAT_KINDS
    attributes = collector.session(ids[0])["attributes"]  # type: ignore[index]
    assert {key: attributes[key] for key in attributes if key.startswith(("http.", "url."))} == {
        "http.request.method": "POST",
        "url.path": "/chats/1",
        "url.scheme": "http",
    }
    assert "secret" not in json.dumps(collector.sessions)


def test_a_streamed_body_consumed_after_the_view_returned_joins_the_session(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    http = build_app(client, openai_url).test_client()
    response = http.get("/stream", buffered=False)  # the body is produced as it is read
    session_id, text = response.get_data(as_text=True).split("\n", 1)
    response.close()
    assert text == "Layer is watching this conversation."
    assert settled(client, collector) == (1, 3)
    assert kinds(collector, session_id) == CHAT_KINDS


def test_a_body_closed_early_is_closed_inside_the_session(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    app = build_app(client, openai_url)
    response = app.test_client().get("/stream", buffered=False)
    first = next(iter(response.response))  # the client goes away after the first chunk
    response.close()
    session_id = first.decode().strip()
    assert app.config["closed"] == [session_id]
    assert settled(client, collector) == (1, 1)
    assert [a["data"]["text"] for a in collector.actions(session_id)] == ["closed"]


def test_the_session_header_names_an_existing_session(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    existing = client.create_session()
    assert client.flush(timeout=10)
    http = build_app(client, openai_url).test_client()
    first = http.post("/chats/1", headers={"X-Layer-Session-Id": existing}).json
    second = http.post("/chats/2", headers={"Layer-Session-Id": existing}).json
    assert first["session_id"] == second["session_id"] == existing
    assert settled(client, collector) == (1, 6)
    assert kinds(collector, existing) == sorted(CHAT_KINDS * 2)


def test_an_untrusted_or_bad_header_gets_a_new_session(
    client: Client,
    collector: LocalCollector,
    openai_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    existing = client.create_session()
    trusting = build_app(client, openai_url).test_client()
    distrusting = build_app(client, openai_url, trust_session_header=False).test_client()
    ids = [
        trusting.post("/chats/1", headers={"X-Layer-Session-Id": "42"}).json["session_id"],
        distrusting.post("/chats/2", headers={"X-Layer-Session-Id": existing}).json["session_id"],
    ]
    assert existing not in ids
    assert settled(client, collector) == (3, 6)
    assert kinds(collector, existing) == []
    warnings = [r.getMessage() for r in caplog.records if "WSGI middleware" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "header is '42', which is not a session ID" in warnings[0]


def test_the_application_names_the_conversation_session(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    conversation = client.create_session()
    assert client.flush(timeout=10)

    def from_cookie(environ: dict[str, Any]) -> str | None:
        return conversation if "chat=1" in environ.get("HTTP_COOKIE", "") else None

    http = build_app(client, openai_url, session_id=from_cookie).test_client()
    http.set_cookie("chat", "1")
    ids = [http.post(f"/chats/{n}").json["session_id"] for n in range(2)]
    assert ids == [conversation, conversation]
    assert settled(client, collector) == (1, 6)


def test_the_view_exception_reaches_the_caller_unchanged(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    http = build_app(client, openai_url).test_client()
    with pytest.raises(Boom) as raised:
        http.get("/fail")
    assert raised.value is BOOM
    assert settled(client, collector) == (1, 1)


def test_excluded_paths_and_quiet_requests_leave_no_session(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    http = build_app(client, openai_url, exclude_paths=["/health"]).test_client()
    assert http.get("/health").json["session_id"] is None
    inside = http.get("/healthy").json["session_id"]
    assert http.get("/nowhere").status_code == 404  # recorded nothing: no session
    assert settled(client, collector) == (1, 1)
    assert kinds(collector, inside) == [NOTE]


def test_the_request_context_does_not_leak_into_the_caller(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    build_app(client, openai_url).test_client().post("/chats/1")
    assert current_session_id() is None
    assert settled(client, collector) == (1, 3)


# -- a real server --------------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def served_by_wsgiref(app: Any) -> Iterator[str]:
    """``app`` served by wsgiref on 127.0.0.1 from a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_under_wsgiref_plain_and_streamed_requests_keep_their_sessions(
    client: Client, collector: LocalCollector, openai_url: str
) -> None:
    with served_by_wsgiref(build_app(client, openai_url)) as url:
        request = urllib.request.Request(f"{url}/chats/1", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            chat_id = json.load(answer)["session_id"]
        with urllib.request.urlopen(f"{url}/stream", timeout=10) as answer:
            stream_id, text = answer.read().decode().split("\n", 1)
    assert text == "Layer is watching this conversation."
    assert settled(client, collector) == (2, 6)
    assert kinds(collector, chat_id) == kinds(collector, stream_id) == CHAT_KINDS
