"""The WSGI and ASGI middleware around Django's own handlers.

Django's test client calls its handler without going through the WSGI or
ASGI callable the middleware wraps, so the wrapped applications are driven by
a WSGI client (werkzeug's) and an ASGI one (Starlette's), as a server would.
Plain and async views, and streamed responses, each record into the
request's session; the collector is checked for exactly what was recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")
pytest.importorskip("werkzeug")
pytest.importorskip("starlette")

from django.conf import settings  # noqa: E402
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from werkzeug.test import Client as WSGIClient  # noqa: E402

from layer_sdk import Client, SessionActionKind  # noqa: E402
from layer_sdk.collector import LocalCollector  # noqa: E402
from layer_sdk.integrations import asgi, current_session_id, wsgi  # noqa: E402

NOTE = SessionActionKind.COMPLETION_TOOL_CALL.value

#: The recording function of the test's client, for the views (Django routes to module names).
note: Callable[[str], Any] = lambda text: None  # noqa: E731


def plain_view(request: HttpRequest) -> JsonResponse:
    note("plain")
    note("again")
    return JsonResponse({"session_id": current_session_id()})


async def async_view(request: HttpRequest) -> JsonResponse:
    note("async")
    await asyncio.sleep(0)
    note("again")
    return JsonResponse({"session_id": current_session_id()})


def streamed_view(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[str]:
        yield f"{current_session_id()}\n"
        for word in ("one", "two", "three"):
            note(word)
            yield word

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def async_streamed_view(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[str]:
        yield f"{current_session_id()}\n"
        for word in ("one", "two", "three"):
            note(word)
            yield word

    return StreamingHttpResponse(chunks(), content_type="text/plain")


urlpatterns = [
    path("plain", plain_view),
    path("async", async_view),
    path("stream", streamed_view),
    path("async-stream", async_streamed_view),
]

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402


@pytest.fixture(autouse=True)
def _views_record_to(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "note", client.action(kind=NOTE)(lambda text: {"text": text}))


def settled(layer: Client, collector: LocalCollector) -> tuple[int, int]:
    assert layer.flush(timeout=10)
    return len(collector.sessions), len(collector.actions())


def texts(collector: LocalCollector, session_id: str) -> list[str]:
    return [action["data"]["text"] for action in collector.actions(session_id)]


def test_django_under_the_wsgi_middleware(client: Client, collector: LocalCollector) -> None:
    http = WSGIClient(wsgi.LayerMiddleware(get_wsgi_application(), client=client))
    plain = http.get("/plain").json["session_id"]
    streamed = http.get("/stream", buffered=False)
    stream_id, words = streamed.get_data(as_text=True).split("\n", 1)
    streamed.close()
    assert words == "onetwothree"
    assert settled(client, collector) == (2, 5)
    assert texts(collector, plain) == ["plain", "again"]
    assert texts(collector, stream_id) == ["one", "two", "three"]
    assert collector.session(plain)["attributes"]["url.path"] == "/plain"  # type: ignore[index]


def test_django_under_the_asgi_middleware(client: Client, collector: LocalCollector) -> None:
    # Not entered as a context manager: Django's handler refuses the lifespan scope.
    http = TestClient(asgi.LayerMiddleware(get_asgi_application(), client=client))
    plain = http.get("/plain").json()["session_id"]  # run on a thread by Django
    async_id = http.get("/async").json()["session_id"]
    stream_id, words = http.get("/async-stream").text.split("\n", 1)
    assert words == "onetwothree"
    assert len({plain, async_id, stream_id}) == 3
    assert settled(client, collector) == (3, 7)
    assert texts(collector, plain) == ["plain", "again"]
    assert texts(collector, async_id) == ["async", "again"]
    assert texts(collector, stream_id) == ["one", "two", "three"]
