"""The ASGI middleware with FastAPI: its own test client, and uvicorn serving over TCP.

Each request runs in one session: the handler's ``@layer.action`` functions
and its OpenAI and Anthropic calls (the real clients, against the local
provider servers) land in it, whether the handler is ``async def`` or plain
(run on a thread), and while a streamed body is produced. The collector is
checked for exactly the sessions and actions each request made.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

fastapi = pytest.importorskip("fastapi")
anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

import httpx  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from layer_sdk import Client, SessionActionKind  # noqa: E402
from layer_sdk.collector import LocalCollector  # noqa: E402
from layer_sdk.integrations import current_session_id  # noqa: E402
from layer_sdk.integrations._sessions import throttled_log  # noqa: E402
from layer_sdk.integrations.asgi import LayerMiddleware  # noqa: E402

from .anthropic_server import AnthropicServer  # noqa: E402
from .helpers import wait_until  # noqa: E402
from .openai_server import OpenAIServer  # noqa: E402

NOTE = SessionActionKind.COMPLETION_TOOL_CALL.value
MESSAGES = [{"role": "user", "content": "Where is my order?"}]


class Boom(Exception):
    """What a handler raises: it must reach the caller as it is."""


BOOM = Boom("the handler failed")


@pytest.fixture
def providers() -> Iterator[tuple[str, str]]:
    with OpenAIServer() as openai_server, AnthropicServer() as anthropic_server:
        yield openai_server.url, anthropic_server.url


@pytest.fixture(autouse=True)
def _fresh_throttle(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No warning held back by an earlier test, and the SDK's warnings captured whatever the
    root logger's level (a Celery worker sets it to ERROR)."""
    monkeypatch.setattr(throttled_log, "_last", {})
    monkeypatch.setattr(throttled_log, "_unsaid", {})
    caplog.set_level(logging.WARNING, "layer_sdk")


def build_app(layer: Client, urls: tuple[str, str], **options: Any) -> Any:
    """A FastAPI app whose handlers record in every way a request can."""
    openai_url, anthropic_url = urls
    started: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        note("starting")  # outside any request: no session
        started.append("up")
        yield
        started.append("down")

    app = fastapi.FastAPI(lifespan=lifespan)
    app.state.started = started
    app.add_middleware(LayerMiddleware, client=layer, **options)

    @layer.action(kind=NOTE)
    def note(text: str) -> dict[str, str]:
        return {"text": text}

    @app.post("/chats/{chat_id}")
    async def chat(chat_id: str) -> dict[str, Any]:
        note(f"chat {chat_id}")
        async with openai.AsyncOpenAI(base_url=openai_url, api_key="sk-test") as gpt:
            await gpt.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        async with anthropic.AsyncAnthropic(base_url=anthropic_url, api_key="sk-ant") as claude:
            await claude.messages.create(model="claude", max_tokens=20, messages=MESSAGES)
        return {"session_id": current_session_id()}

    @app.get("/plain")
    def plain() -> dict[str, Any]:  # FastAPI runs it on a worker thread
        note("plain")
        with openai.OpenAI(base_url=openai_url, api_key="sk-test") as gpt:
            gpt.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return {"session_id": current_session_id()}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[str]:
            yield f"{current_session_id()}\n"
            async with openai.AsyncOpenAI(base_url=openai_url, api_key="sk-test") as gpt:
                answer = await gpt.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True
                )
                async for chunk in answer:
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content
            note("streamed")

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/stream-plain")
    def stream_plain() -> StreamingResponse:
        def chunks() -> Iterator[str]:  # iterated on worker threads, chunk by chunk
            yield f"{current_session_id()}\n"
            for word in ("one", "two", "three"):
                note(word)
                yield word

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/fail")
    async def fail() -> None:
        note("before failing")
        raise BOOM

    @app.get("/health")
    @app.get("/health/live")
    @app.get("/healthy")
    async def health() -> dict[str, Any]:
        note("health")
        return {"session_id": current_session_id()}

    @app.websocket("/ws")
    async def websocket(socket: fastapi.WebSocket) -> None:
        await socket.accept()
        for _ in range(3):
            note(await socket.receive_text())
            await socket.send_text(str(current_session_id()))
        await socket.close()

    return app


def settled(layer: Client, collector: LocalCollector) -> tuple[int, int]:
    """(sessions, actions) at the collector once everything enqueued was delivered."""
    assert layer.flush(timeout=10)
    return len(collector.sessions), len(collector.actions())


def kinds(collector: LocalCollector, session_id: str) -> list[str]:
    session = collector.session(session_id)
    assert session is not None, f"no session {session_id} at the collector"
    return sorted(action["kind"] for action in session["actions"])


CHAT_KINDS = sorted([NOTE] + ["completion_prompt", "completion_output"] * 2)


def test_each_request_runs_in_its_own_session(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    with TestClient(build_app(client, providers)) as http:
        first = http.post("/chats/1").json()["session_id"]
        second = http.post("/chats/2").json()["session_id"]
    assert first != second
    assert settled(client, collector) == (2, 10)
    assert kinds(collector, first) == kinds(collector, second) == CHAT_KINDS
    texts = [a["data"]["text"] for a in collector.actions(first) if a["kind"] == NOTE]
    assert texts == ["chat 1"]


def test_a_plain_handler_on_a_worker_thread_joins_the_request_session(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    with TestClient(build_app(client, providers)) as http:
        session_id = http.get("/plain").json()["session_id"]
    assert settled(client, collector) == (1, 3)
    assert kinds(collector, session_id) == sorted([NOTE, "completion_prompt", "completion_output"])


def test_the_session_carries_the_request_but_no_header_and_no_query(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    with TestClient(build_app(client, providers)) as http:
        answer = http.post(
            "/chats/7?token=query-secret",
            headers={"Authorization": "Bearer header-secret", "Cookie": "id=cookie-secret"},
        )
    assert settled(client, collector) == (1, 5)
    session = collector.session(answer.json()["session_id"])
    assert session is not None
    attributes = session["attributes"]
    assert {key: attributes[key] for key in attributes if key.startswith(("http.", "url."))} == {
        "http.request.method": "POST",
        "http.route": "/chats/{chat_id}",
        "url.path": "/chats/7",
        "url.scheme": "http",
    }
    assert "secret" not in json.dumps(collector.sessions)


def test_a_streamed_body_is_produced_inside_the_session(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    with TestClient(build_app(client, providers)) as http:
        async_body = http.get("/stream").text
        plain_body = http.get("/stream-plain").text
    async_id, async_text = async_body.split("\n", 1)
    plain_id, plain_text = plain_body.split("\n", 1)
    assert async_text == "Layer is watching this conversation."
    assert plain_text == "onetwothree"
    assert settled(client, collector) == (2, 6)
    assert kinds(collector, async_id) == sorted([NOTE, "completion_prompt", "completion_output"])
    notes = [a["data"]["text"] for a in collector.actions(plain_id)]
    assert notes == ["one", "two", "three"]


def test_the_session_header_names_an_existing_session(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    existing = client.create_session(attributes={"conversation": "42"})
    assert client.flush(timeout=10)
    with TestClient(build_app(client, providers)) as http:
        first = http.post("/chats/1", headers={"X-Layer-Session-Id": existing}).json()
        second = http.post("/chats/2", headers={"Layer-Session-Id": existing.upper()}).json()
    assert first["session_id"] == second["session_id"] == existing
    assert settled(client, collector) == (1, 10)
    assert kinds(collector, existing) == sorted(CHAT_KINDS * 2)


def test_an_untrusted_header_is_ignored(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    existing = client.create_session()
    app = build_app(client, providers, trust_session_header=False)
    with TestClient(app) as http:
        session_id = http.post("/chats/1", headers={"X-Layer-Session-Id": existing}).json()
    assert session_id["session_id"] != existing
    assert settled(client, collector) == (2, 5)
    assert kinds(collector, existing) == []


def test_a_header_that_is_no_session_id_gets_a_new_session_and_one_warning(
    client: Client,
    collector: LocalCollector,
    providers: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(build_app(client, providers)) as http:
        ids = [
            http.post("/chats/1", headers={"X-Layer-Session-Id": bad}).json()["session_id"]
            for bad in ("not-a-uuid", "\x1b[31mred")
        ]
    assert len(set(ids)) == 2
    assert settled(client, collector) == (2, 10)
    warnings = [r.getMessage() for r in caplog.records if "ASGI middleware" in r.getMessage()]
    assert len(warnings) == 1, warnings  # the second is held back by the throttle
    assert "'not-a-uuid', which is not a session ID" in warnings[0]


def test_the_application_names_the_conversation_session(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    conversations = {"1": client.create_session(attributes={"conversation": "1"})}
    assert client.flush(timeout=10)

    def conversation(scope: dict[str, Any]) -> str | None:
        return conversations.get(scope["path"].rsplit("/", 1)[-1])

    with TestClient(build_app(client, providers, session_id=conversation)) as http:
        ids = [http.post(f"/chats/{chat}").json()["session_id"] for chat in ("1", "1", "2")]
    assert ids[:2] == [conversations["1"]] * 2
    assert ids[2] != conversations["1"]
    assert settled(client, collector) == (2, 15)
    assert kinds(collector, conversations["1"]) == sorted(CHAT_KINDS * 2)


def test_a_session_id_function_that_raises_costs_the_request_nothing(
    client: Client,
    collector: LocalCollector,
    providers: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(scope: Any) -> str:
        raise KeyError("conversation")

    with TestClient(build_app(client, providers, session_id=broken)) as http:
        answer = http.post("/chats/1")
    assert answer.status_code == 200
    assert settled(client, collector) == (1, 5)
    assert "the session_id function raised KeyError" in caplog.text


def test_a_request_that_records_nothing_leaves_no_session(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    app = build_app(client, providers)

    @app.get("/quiet")
    async def quiet() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as http:
        assert http.get("/quiet").json() == {"ok": "yes"}
    assert settled(client, collector) == (0, 0)


def test_excluded_paths_run_without_a_session(
    client: Client,
    collector: LocalCollector,
    providers: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(build_app(client, providers, exclude_paths=["/health"])) as http:
        outside = [http.get(path).json()["session_id"] for path in ("/health", "/health/live")]
        inside = http.get("/healthy").json()["session_id"]
    assert outside == [None, None]
    assert settled(client, collector) == (1, 1)
    assert kinds(collector, inside) == [NOTE]
    assert caplog.text.count("did not record the completion_tool_call action") == 3  # + lifespan


def test_the_handler_exception_reaches_the_caller_unchanged(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    with TestClient(build_app(client, providers)) as http, pytest.raises(Boom) as raised:
        http.get("/fail")
    assert raised.value is BOOM
    assert settled(client, collector) == (1, 1)


def test_lifespan_passes_through_without_a_session(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    app = build_app(client, providers)
    with TestClient(app):
        assert app.state.started == ["up"]
    assert app.state.started == ["up", "down"]
    assert settled(client, collector) == (0, 0)  # the note made at startup joined no session


def test_a_websocket_connection_is_one_session(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    with TestClient(build_app(client, providers)) as http, http.websocket_connect("/ws") as ws:
        ids = set()
        for text in ("hello", "again", "bye"):
            ws.send_text(text)
            ids.add(ws.receive_text())
    (session_id,) = ids
    assert settled(client, collector) == (1, 3)
    assert [a["data"]["text"] for a in collector.actions(session_id)] == ["hello", "again", "bye"]
    attributes = collector.sessions[0]["attributes"]
    assert (attributes["url.path"], attributes["url.scheme"]) == ("/ws", "ws")


# -- a real server --------------------------------------------------------------------------


@contextlib.contextmanager
def served_by_uvicorn(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 from a thread; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started), "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


def test_under_uvicorn_concurrent_and_streamed_requests_keep_their_sessions(
    client: Client, collector: LocalCollector, providers: tuple[str, str]
) -> None:
    with served_by_uvicorn(build_app(client, providers)) as url:
        results: list[str] = []

        def chat(number: int) -> None:
            with httpx.Client(base_url=url, timeout=10) as http:
                results.append(http.post(f"/chats/{number}").json()["session_id"])

        threads = [threading.Thread(target=chat, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        with httpx.Client(base_url=url, timeout=10) as http, http.stream("GET", "/stream") as body:
            streamed_id, rest = "".join(body.iter_text()).split("\n", 1)
        for thread in threads:
            thread.join(10)
    assert rest == "Layer is watching this conversation."
    assert len(set(results)) == 4
    assert settled(client, collector) == (5, 23)
    for session_id in results:
        assert kinds(collector, session_id) == CHAT_KINDS
    assert kinds(collector, streamed_id) == sorted([NOTE, "completion_prompt", "completion_output"])
