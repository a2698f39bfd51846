"""The Celery integration: a real worker in this process (the in-memory broker), and a real
prefork worker process (a folder as broker) whose pool children deliver as they end.

Each task runs in one session (the caller's, when it named one in the task's
headers); the collector is checked for exactly the sessions and actions the
tasks made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

celery = pytest.importorskip("celery")
openai = pytest.importorskip("openai")

from celery.contrib.testing.worker import start_worker  # noqa: E402

from layer_sdk import Client, SessionActionKind  # noqa: E402
from layer_sdk.collector import LocalCollector  # noqa: E402
from layer_sdk.integrations import current_session_id  # noqa: E402
from layer_sdk.integrations._sessions import throttled_log  # noqa: E402
from layer_sdk.integrations.celery import SESSION_HEADER, instrument, uninstrument  # noqa: E402

from .celery_worker_app import configured  # noqa: E402
from .helpers import APP_ID, ROOT, MakeClient  # noqa: E402
from .openai_server import OpenAIServer  # noqa: E402

NOTE = SessionActionKind.COMPLETION_TOOL_CALL.value
MESSAGES = [{"role": "user", "content": "Summarize my orders"}]


class Boom(Exception):
    """What a task raises."""


@pytest.fixture(autouse=True)
def _fresh_throttle(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No warning held back by an earlier test, and the SDK's warnings captured whatever the
    root logger's level (a Celery worker sets it to ERROR)."""
    monkeypatch.setattr(throttled_log, "_last", {})
    monkeypatch.setattr(throttled_log, "_unsaid", {})
    caplog.set_level(logging.WARNING, "layer_sdk")


@pytest.fixture
def openai_url() -> Iterator[str]:
    with OpenAIServer() as server:
        yield server.url


#: What the tasks of the module's app record through: the client and servers of the test.
current: dict[str, Any] = {}


def note(text: str) -> Any:
    return current["note"](text)


@pytest.fixture(scope="module")
def worker_app() -> Iterator[Any]:
    """A Celery app on the in-memory broker, served by one worker thread for the module."""
    app = celery.Celery("layer-tests", broker="memory://", backend="cache+memory://")
    app.conf.worker_hijack_root_logger = False
    app.conf.broker_transport_options = {"polling_interval": 0.01}

    @app.task(name="record", shared=False)
    def record(*words: str) -> str | None:
        for word in words:
            note(word)
        return current_session_id()

    @app.task(name="chat", shared=False)
    def chat() -> str | None:
        with openai.OpenAI(base_url=current["openai_url"], api_key="sk-test") as gpt:
            gpt.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return current_session_id()

    @app.task(name="fail", shared=False)
    def fail() -> None:
        note("before failing")
        raise Boom("the task failed")

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False):
            yield app
    finally:  # the worker set up logging as a worker does: the tests after it see it as it was
        root.setLevel(level)
        root.handlers[:] = handlers


@contextlib.contextmanager
def instrumented(app: Any, layer: Client, openai_url: str, **options: Any) -> Iterator[Any]:
    """``app`` instrumented for ``layer``, its tasks recording through it, meanwhile."""
    current.update(note=layer.action(kind=NOTE)(lambda text: {"text": text}), openai_url=openai_url)
    instrument(app, client=layer, **options)
    try:
        yield app
    finally:
        uninstrument(app)
        current.clear()


@pytest.fixture
def app(worker_app: Any, client: Client, openai_url: str) -> Iterator[Any]:
    with instrumented(worker_app, client, openai_url) as app:
        yield app


def settled(layer: Client, collector: LocalCollector) -> tuple[int, int]:
    assert layer.flush(timeout=10)
    return len(collector.sessions), len(collector.actions())


def texts(collector: LocalCollector, session_id: str) -> list[str]:
    return [action["data"]["text"] for action in collector.actions(session_id)]


def test_each_task_runs_in_its_own_session(
    client: Client, collector: LocalCollector, app: Any
) -> None:
    first = app.tasks["record"].delay("a", "b")
    second = app.tasks["record"].delay("c")
    chat = app.tasks["chat"].delay()
    ids = [result.get(timeout=10) for result in (first, second, chat)]
    assert len(set(ids)) == 3
    assert settled(client, collector) == (3, 5)
    assert texts(collector, ids[0]) == ["a", "b"]
    assert texts(collector, ids[1]) == ["c"]
    chat_kinds = sorted(action["kind"] for action in collector.actions(ids[2]))
    assert chat_kinds == ["completion_output", "completion_prompt"]
    attributes = collector.session(ids[0])["attributes"]  # type: ignore[index]
    assert (attributes["celery.task_name"], attributes["celery.task_id"]) == ("record", first.id)


def test_the_caller_names_the_session_in_the_task_headers(
    client: Client, collector: LocalCollector, app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    existing = client.create_session()
    assert client.flush(timeout=10)
    record = app.tasks["record"]
    named = record.apply_async(("a",), headers={SESSION_HEADER: existing}).get(timeout=10)
    bad = record.apply_async(("b",), headers={SESSION_HEADER: "nope"}).get(timeout=10)
    eager = record.apply(("c",), headers={SESSION_HEADER: existing}).get()
    assert named == eager == existing
    assert bad != existing
    assert settled(client, collector) == (2, 3)
    assert texts(collector, existing) == ["a", "c"]
    assert texts(collector, bad) == ["b"]
    warnings = [r.getMessage() for r in caplog.records if "Celery integration" in r.getMessage()]
    assert warnings == [
        "layer-sdk Celery integration: the task's layer_session_id header is 'nope', "
        "which is not a session ID (a UUID); the work gets a new session"
    ]


def test_a_failing_task_keeps_what_it_recorded_and_leaves_no_session_bound(
    client: Client, collector: LocalCollector, app: Any
) -> None:
    result = app.tasks["fail"].apply()  # eagerly, here: the same signals as in a worker
    assert isinstance(result.result, Boom)
    assert current_session_id() is None  # the task's session ended with it
    assert app.tasks["record"].apply(("after",)).get() is not None
    assert current_session_id() is None
    assert settled(client, collector) == (2, 2)


def test_flush_after_task_delivers_as_each_task_ends(
    make_client: MakeClient, collector: LocalCollector, openai_url: str, worker_app: Any
) -> None:
    layer = make_client(flush_interval=60.0)  # the background sender would wait a minute
    options = {"flush_after_task": True, "flush_timeout": 10}
    with instrumented(worker_app, layer, openai_url, **options) as app:
        session_id = app.tasks["record"].apply(("a", "b")).get()
        assert collector.event_count == 3  # delivered before apply() returned
        assert texts(collector, session_id) == ["a", "b"]


def test_uninstrumented_tasks_run_without_a_session(
    client: Client, collector: LocalCollector, app: Any
) -> None:
    uninstrument(app)
    assert app.tasks["record"].apply(("a",)).get() is None
    assert settled(client, collector) == (0, 0)


def test_bad_options_are_refused_by_name(client: Client, openai_url: str) -> None:
    app = celery.Celery("layer-tests", broker="memory://")
    with pytest.raises(ValueError, match="flush_timeout must be >= 0"):
        instrument(app, client=client, flush_timeout=-1)
    with pytest.raises(TypeError, match="session_id must be a function"):
        instrument(app, client=client, session_id="0b9f-...")  # type: ignore[arg-type]


# -- a prefork worker process ---------------------------------------------------------------


def test_prefork_pool_children_deliver_as_they_end(
    collector: LocalCollector, tmp_path: Path
) -> None:
    """Pool children end through ``os._exit``, past the exit drain: what they recorded is
    delivered by the flush on ``worker_process_shutdown``, as a child is replaced
    (``--max-tasks-per-child``) and as the worker shuts down."""
    folder = str(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LAYER_BASE_URL": collector.url,
        "LAYER_APPLICATION_ID": APP_ID,
        "LAYER_TEST_CELERY_WORKER": "1",
        "LAYER_TEST_CELERY_DIR": folder,
    }
    command = [
        sys.executable, "-m", "celery", "-A", "tests.celery_worker_app", "worker",
        "--pool=prefork", "--concurrency=2", "--max-tasks-per-child=2", "--loglevel=warning",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    worker = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        producer = configured("layer-producer", folder)
        results = [producer.send_task("record", args=(2,)) for _ in range(6)]
        answers = [result.get(timeout=60) for result in results]
    finally:
        worker.send_signal(signal.SIGTERM)  # a warm shutdown: the pool's children end
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output
    assert "Traceback" not in output, output
    session_ids = [session_id for session_id, _ in answers]
    children = {pid for _, pid in answers}
    assert worker.pid not in children
    assert len(children) >= 3  # two children replaced after their two tasks, at least
    assert len(set(session_ids)) == 6
    assert len(collector.sessions) == 6
    assert len(collector.actions()) == 12
    for session_id in session_ids:
        actions = collector.actions(session_id)
        assert [action["data"]["number"] for action in actions] == [0, 1]
        assert collector.session(session_id)["attributes"]["celery.task_name"] == "record"  # type: ignore[index]
