"""What the integrations share: the pending session, the host's functions going wrong, the
options refused at the call, and importing them without their frameworks.

The middleware is driven here as a server drives it, per the ASGI and WSGI
specifications, around applications of a few lines: no framework needed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from layer_sdk import Client, SessionActionKind
from layer_sdk._context import PendingSession, current_session_id
from layer_sdk.collector import LocalCollector
from layer_sdk.integrations import asgi, wsgi
from layer_sdk.integrations import current_session_id as session_of_request
from layer_sdk.integrations._sessions import throttled_log

from .helpers import run_python

NOTE = SessionActionKind.COMPLETION_TOOL_CALL


@pytest.fixture(autouse=True)
def _fresh_throttle(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No warning held back by an earlier test, and the SDK's warnings captured whatever the
    root logger's level (a Celery worker sets it to ERROR)."""
    monkeypatch.setattr(throttled_log, "_last", {})
    monkeypatch.setattr(throttled_log, "_unsaid", {})
    caplog.set_level(logging.WARNING, "layer_sdk")


def asgi_request(
    app: Any, path: str = "/chat", headers: list[tuple[bytes, bytes]] | None = None
) -> list[Any]:
    """Run one HTTP request through an ASGI app; the messages it sent."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "method": "POST",
        "scheme": "http",
        "path": path,
        "query_string": b"",
        "headers": headers or [],
    }
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def recording_asgi_app(layer: Client) -> Any:
    """An ASGI app that records one action in the current session and answers its ID."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session_id = session_of_request()
        if session_id is not None:
            layer.append_action(session_id, kind=NOTE, data={"path": scope["path"]})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(session_id).encode()})

    return app


# -- the pending session --------------------------------------------------------------------


def test_threads_that_resolve_one_pending_session_create_it_once() -> None:
    threads_count = 8
    entered: list[int] = []
    created: list[int] = []
    everyone_in = threading.Event()

    def create() -> str:
        created.append(1)
        everyone_in.wait(5)  # the others are at the door meanwhile
        return "0b9f3e1c-0000-5000-8000-000000000000"

    pending = PendingSession(create)
    answers: list[str | None] = []

    def resolve() -> None:
        entered.append(1)
        if len(entered) == threads_count:
            everyone_in.set()
        answers.append(pending.resolve())

    threads = [threading.Thread(target=resolve) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(created) == 1
    assert answers == ["0b9f3e1c-0000-5000-8000-000000000000"] * threads_count


def test_a_pending_session_that_cannot_be_created_is_not_asked_again() -> None:
    calls: list[int] = []

    def create() -> None:
        calls.append(1)

    pending = PendingSession(create)
    assert [pending.resolve(), pending.resolve()] == [None, None]
    assert calls == [1]


def test_tasks_and_threads_started_in_a_request_share_its_session(
    client: Client, collector: LocalCollector
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        def in_thread() -> str | None:
            return session_of_request()

        async def in_task() -> str | None:
            return session_of_request()

        ids = await asyncio.gather(asyncio.to_thread(in_thread), in_task(), in_task())
        ids.append(session_of_request())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": ",".join(map(str, ids)).encode()})

    sent = asgi_request(asgi.LayerMiddleware(app, client=client))
    ids = set(sent[1]["body"].decode().split(","))
    assert len(ids) == 1
    assert client.flush(timeout=10)
    assert [session["session_id"] for session in collector.sessions] == list(ids)


# -- the host's code going wrong ------------------------------------------------------------


def test_an_uninitialized_client_costs_the_request_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    uninitialized = Client()
    sent = asgi_request(
        asgi.LayerMiddleware(recording_asgi_app(uninitialized), client=uninitialized)
    )
    assert sent[0]["status"] == 200
    assert sent[1]["body"] == b"None"
    assert "could not create the session of a request or task" in caplog.text
    assert "call init() before create_session()" in caplog.text


def test_attributes_that_raise_or_are_refused_leave_a_session_without_them(
    client: Client, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    def raising(scope: Any) -> dict[str, str]:
        raise RuntimeError("no tenant")

    def refused(scope: Any) -> dict[Any, str]:
        return {1: "a number is no attribute name"}

    for attributes in (raising, refused):
        app = asgi.LayerMiddleware(recording_asgi_app(client), client=client, attributes=attributes)
        assert asgi_request(app)[0]["status"] == 200
    assert client.flush(timeout=10)
    assert len(collector.sessions) == 2
    assert len(collector.actions()) == 2
    for session in collector.sessions:
        assert not any(key.startswith(("http.", "url.")) for key in session["attributes"])
    assert "the attributes function raised RuntimeError: no tenant" in caplog.text
    assert "the session's attributes were refused" in caplog.text


def test_custom_attributes_replace_the_request_ones(
    client: Client, collector: LocalCollector
) -> None:
    def with_tenant(scope: Any) -> dict[str, str]:
        return {**asgi.request_attributes(scope), "tenant": "acme"}

    app = asgi.LayerMiddleware(recording_asgi_app(client), client=client, attributes=with_tenant)
    asgi_request(app)
    assert client.flush(timeout=10)
    attributes = collector.sessions[0]["attributes"]
    assert (attributes["tenant"], attributes["url.path"]) == ("acme", "/chat")


def test_repeated_bad_headers_are_logged_once_a_minute_with_a_count(
    client: Client, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    app = asgi.LayerMiddleware(recording_asgi_app(client), client=client)
    for _ in range(3):
        asgi_request(app, headers=[(b"x-layer-session-id", b"nope")])
    throttled_log._last = {key: 0.0 for key in throttled_log._last}  # a minute has passed
    asgi_request(app, headers=[(b"x-layer-session-id", b"nope")])
    lines = [r.getMessage() for r in caplog.records if "ASGI middleware" in r.getMessage()]
    assert len(lines) == 2
    assert "and 2 more like it" in lines[1]
    assert client.flush(timeout=10)
    assert len(collector.sessions) == 4


# -- WSGI per the specification -------------------------------------------------------------


def test_a_wsgi_body_is_consumed_and_closed_in_the_request_context(client: Client) -> None:
    seen: list[Any] = []

    class Body:
        """A response iterable whose iteration and close() read the current session."""

        def __iter__(self) -> Iterator[bytes]:
            seen.append(("iter", session_of_request()))
            yield b"chunk"
            seen.append(("next", session_of_request()))

        def close(self) -> None:
            seen.append(("close", session_of_request()))

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        seen.append(("call", session_of_request()))
        return Body()

    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    result = wsgi.LayerMiddleware(app, client=client)(environ, lambda *args: None)
    assert current_session_id.get() is None  # the request's context stays its own
    assert list(result) == [b"chunk"]
    result.close()  # type: ignore[attr-defined]
    assert [where for where, _ in seen] == ["call", "iter", "next", "close"]
    assert len({session for _, session in seen}) == 1
    assert None not in {session for _, session in seen}


def test_a_wsgi_list_and_file_wrapper_are_handed_back_as_they_are(client: Client) -> None:
    class FileWrapper:
        def __init__(self, file: Any) -> None:
            self.file = file

    answer = [b"ready"]
    wrapped = FileWrapper(None)
    for result in (answer, wrapped):
        environ: dict[str, Any] = {"wsgi.file_wrapper": FileWrapper}
        setup_testing_defaults(environ)
        app = wsgi.LayerMiddleware(lambda environ, start_response, r=result: r, client=client)
        assert app(environ, lambda *args: None) is result


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("middleware", [asgi.LayerMiddleware, wsgi.LayerMiddleware])
def test_bad_options_are_refused_by_name(middleware: Any) -> None:
    app = recording_asgi_app(Client())
    with pytest.raises(TypeError, match="exclude_paths must be a list of paths"):
        middleware(app, exclude_paths="/health")
    with pytest.raises(ValueError, match="must be a path starting with /, got 'health'"):
        middleware(app, exclude_paths=["health"])
    with pytest.raises(TypeError, match="session_id must be a function"):
        middleware(app, session_id="0b9f3e1c-0000-5000-8000-000000000000")
    with pytest.raises(TypeError, match="attributes must be a function"):
        middleware(app, attributes={"tenant": "acme"})


def test_outside_any_request_there_is_no_session(client: Client) -> None:
    assert session_of_request() is None
    with client.session_context() as session_id:
        assert session_of_request() == session_id
    assert contextvars.copy_context().run(session_of_request) is None


# -- imports --------------------------------------------------------------------------------

FRAMEWORKS = ("fastapi", "starlette", "flask", "werkzeug", "django", "celery", "kombu", "uvicorn")


def test_importing_the_sdk_and_the_middleware_imports_no_framework() -> None:
    result = run_python(
        "import sys\n"
        "import layer_sdk, layer_sdk.integrations\n"
        "import layer_sdk.integrations.asgi, layer_sdk.integrations.wsgi\n"
        "import layer_sdk.integrations.aws_lambda\n"
        f"print(sorted(set({FRAMEWORKS!r}) & set(sys.modules)))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
