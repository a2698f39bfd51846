"""What the tests share besides fixtures (those are in ``conftest.py``).

Settings, waiting on conditions, child processes, and the small servers that
several test files stand up on 127.0.0.1: raw TCP servers a test scripts byte
by byte, and ``http.server`` endpoints that answer JSON.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from layer_sdk import Client, SessionActionKind
from layer_sdk.collector import LocalCollector
from layer_sdk.instrumentation import instrumented_by, uninstrument

ROOT = Path(__file__).resolve().parent.parent

#: Fast settings for tests: short batching delay and backoff-friendly timeouts.
FAST = {"flush_interval": 0.05, "shutdown_timeout": 5.0, "http_timeout": 5.0}

APP_ID = "0c7f6b4e-2f39-4d1b-9a55-6b1f0f0a1d2e"

PROMPT = SessionActionKind.COMPLETION_PROMPT

MakeClient = Callable[..., Client]
"""The ``make_client`` fixture: builds an initialized client against the collector."""


# -- waiting and processes ------------------------------------------------------------


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; for state no event signals."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def run_python(
    code: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    args: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (given ``args`` as ``sys.argv[1:]``) in a fresh interpreter that
    imports this checkout of layer_sdk."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *(args or [])],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _send_result(work: Callable[..., Any], args: tuple[Any, ...], report: Connection) -> None:
    report.send(work(*args))


def in_multiprocessing_child(
    work: Callable[..., Any], *args: Any, timeout: float = 20.0
) -> tuple[int | None, Any]:
    """Run ``work(*args)`` in a ``multiprocessing`` child started by fork.

    Returns the child's exit code (None: it hung and was killed at ``timeout``)
    and what ``work`` returned (None when it sent nothing).
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_send_result, args=(work, args, sender))
    process.start()
    sender.close()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join(5)
        return None, None
    return process.exitcode, receiver.recv() if receiver.poll(1) else None


@contextlib.contextmanager
def held_by_another_thread(*locks: Any) -> Iterator[None]:
    """``locks`` held by another thread meanwhile, as when a process forks in mid-call."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        holding.set()
        release.wait(60)
        for lock in reversed(locks):
            lock.release()

    holder = threading.Thread(target=hold, name="lock-holder", daemon=True)
    holder.start()
    try:
        assert holding.wait(5), "the other thread could not take the locks"
        yield
    finally:
        release.set()
        holder.join(5)


class ReportingHandler(logging.Handler):
    """A logging hook that reports every record to Layer, as an application might install.

    It notes who called it and what the SDK raised: ``emitted`` records,
    the ``threads`` they were emitted on, ``errors`` raised by
    ``append_action``; ``settled`` is set once an outermost ``emit()`` (one
    not re-entered through the SDK's own logging) has returned.
    """

    def __init__(self, client: Client, session_id: str) -> None:
        super().__init__(logging.DEBUG)
        self.client = client
        self.session_id = session_id
        self.emitted = 0
        self.threads: list[int] = []
        self.errors: list[BaseException] = []
        self.depth = 0
        self.settled = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.emitted += 1
        self.threads.append(threading.get_ident())
        self.depth += 1
        try:
            self.client.append_action(
                self.session_id, kind=PROMPT, data={"log": record.getMessage()[:200]}
            )
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            self.depth -= 1
            if self.depth == 0:
                self.settled.set()


# -- raw TCP servers ------------------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def read_request(
    conn: socket.socket, buffer: bytes = b"", size: int = 65536
) -> tuple[bytes, bytes, bytes] | None:
    """The next request on ``conn``: its head (without the blank line), its body, and
    what was read past it. ``buffer``: bytes already read. None when the peer closed first.

    The body is framed by Content-Length only: what the SDK sends.
    """
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(size)
        if not data:
            return None
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = conn.recv(size)
        if not data:
            return None
        rest += data
    return head, rest[:length], rest[length:]


class TCPServer:
    """A TCP listener on 127.0.0.1 that serves each connection on a daemon thread.

    Subclasses write ``handle``; ``connections`` counts the connections accepted.
    """

    def __init__(self) -> None:
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def close(self) -> None:
        """Stop accepting; connections being served run on."""
        self._listener.close()


class DrippingServer(TCPServer):
    """Answers each request with ``first``, then one byte every ``interval`` seconds until
    closed (or ``limit`` seconds): each read is quick, and the answer never ends.

    ``requests`` counts the requests read. A context manager: closed on exit.
    """

    def __init__(
        self,
        interval: float = 0.05,
        first: bytes = b"HTTP/1.1 200 OK\r\nX-Slow: ",
        limit: float = 60.0,
    ) -> None:
        self.interval = interval
        self.first = first
        self.limit = limit
        self.requests = 0
        self._stop = threading.Event()
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            if read_request(conn) is None:
                return
            self.requests += 1
            conn.sendall(self.first)
            ends = time.monotonic() + self.limit
            while not self._stop.wait(self.interval) and time.monotonic() < ends:
                conn.sendall(b"a")

    def close(self) -> None:
        self._stop.set()
        super().close()

    def __enter__(self) -> DrippingServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- http.server endpoints ------------------------------------------------------------


class JSONHandler(BaseHTTPRequestHandler):
    """An ``http.server`` handler that answers JSON and logs nothing."""

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_json(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """``handler`` served on 127.0.0.1 from a daemon thread while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


# -- provider instrumentation tests ------------------------------------------------------
#
# What test_openai.py and test_anthropic.py share: reading the actions a call
# recorded, and checking them against the wire contract.


def instrumentation_fixtures(provider: str, problems: Any, server_class: type) -> tuple[Any, ...]:
    """The fixtures of a provider's instrumentation tests, for the test module to bind:

    ``server`` (``server_class`` running), ``layer`` (an initialized client that owns the
    provider's patches), and three autouse ones: a fresh "logged once" state of the
    provider's ``problems``, no patches left owned by another test's client, and every
    error recorded checked against the wire contract.
    """

    @pytest.fixture(name="server")
    def server() -> Iterator[Any]:
        with server_class() as running:
            yield running

    @pytest.fixture(name="layer")
    def layer(make_client: MakeClient) -> Client:
        client = make_client()
        assert instrumented_by(provider) is client
        return client

    @pytest.fixture(autouse=True, name="_fresh_problem_log")
    def fresh_problem_log(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(problems, "reported", set())

    @pytest.fixture(autouse=True, name="_no_leftover_patches")
    def no_leftover_patches() -> None:
        owner = instrumented_by(provider)
        if owner is not None:
            uninstrument(owner)

    @pytest.fixture(autouse=True, name="_errors_fit_the_wire_contract")
    def errors_fit_the_wire_contract(request: pytest.FixtureRequest) -> Iterator[None]:
        """Issues 10 and 13, the error code: every error a test has recorded is one the API
        takes; checked after the test's clients are shut down (flushed), over everything
        the collector received, whatever the test itself looked at."""
        if "collector" not in request.fixturenames:
            yield
            return
        collector: LocalCollector = request.getfixturevalue("collector")
        yield
        for action in collector.actions():
            if "error" in action:
                check_error(action["error"])

    return server, layer, fresh_problem_log, no_leftover_patches, errors_fit_the_wire_contract


def check_error(error: Any) -> dict[str, Any]:
    """``error`` as the wire contract has it: a str message, an int code or none, a details object.

    Returns the details (every error recorded here has some: at least the exception's class).
    """
    assert isinstance(error, dict), error
    assert set(error) <= {"message", "code", "details"}, error
    assert isinstance(error["message"], str), error
    if "code" in error:
        assert type(error["code"]) is int, error
    details = error.get("details")
    assert isinstance(details, dict), error
    assert isinstance(details.get("type"), str), error
    return details


def then(mode: str, result: Any, use: Callable[[Any], Any]) -> Any:
    """``use(result)``; in async mode, ``result`` (and what ``use`` returns) awaited first."""
    if mode == "sync":
        return use(result)

    async def chain() -> Any:
        value = use(await result)
        return await value if inspect.isawaitable(value) else value

    return chain()


def drain(mode: str, stream: Any, limit: int | None = None) -> Any:
    """The chunks of a sync stream, or an awaitable of those of an async one."""
    if mode == "sync":
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if limit is not None and len(chunks) >= limit:
                break
        return chunks

    async def collect() -> list[Any]:
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            if limit is not None and len(chunks) >= limit:
                break
        return chunks

    return collect()


def actions_of(
    layer: Client, collector: LocalCollector, session_id: str, count: int
) -> list[dict[str, Any]]:
    """The actions of ``session_id`` once everything was delivered; exactly ``count``."""
    assert layer.flush(10)
    found = collector.actions(session_id)
    assert len(found) == count, [(a["kind"], a.get("attributes")) for a in found]
    return found


def by_kind(actions: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [a for a in actions if a["kind"] == kind]


def one(actions: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(actions, kind)
    assert len(found) == 1, [a["kind"] for a in actions]
    return found[0]


def check_times(actions: list[dict[str, Any]]) -> None:
    for action in actions:
        assert action["start_time"] <= action["end_time"]
    prompt = by_kind(actions, "completion_prompt")
    outputs = by_kind(actions, "completion_output")
    if prompt and outputs:
        assert prompt[0]["start_time"] <= outputs[0]["end_time"]


def break_on_purpose(monkeypatch: pytest.MonkeyPatch, places: list[tuple[Any, str]]) -> None:
    """Replace each ``(owner, name)`` with a function that raises "a bug of ours"."""

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug of ours")

    for owner, name in places:
        monkeypatch.setattr(owner, name, bug)


def assert_bugs_logged_once(
    caplog: pytest.LogCaptureFixture,
    label: str,
    warned: int,
    recorded: tuple[Client, LocalCollector, str],
    prompts: int,
    outputs: int,
) -> None:
    """Each kind of failure of ours was logged once as a warning (then at debug level),
    naming the provider (``label``); what could be recorded was: ``prompts`` prompts and
    ``outputs`` outputs in the session (``recorded``: the client, the collector, the session)."""
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == warned, [r.getMessage() for r in warnings]
    assert all("a bug of ours" in r.getMessage() for r in warnings)
    assert all(label in r.getMessage() for r in warnings)
    actions = actions_of(*recorded, prompts + outputs)
    assert len(by_kind(actions, "completion_prompt")) == prompts
    assert len(by_kind(actions, "completion_output")) == outputs


def leave_early(stream: Any, how: str, limit: int) -> list[Any]:
    """Read ``limit`` items of a sync stream, then leave it ``how``: "with" (read inside its
    ``with``), "close" (closed twice), or "gc" (only read: the caller then drops its
    reference, the last one, and collects; here, an argument is still referenced by the
    caller's frame on Python 3.10)."""
    if how == "with":
        with stream:
            return drain("sync", stream, limit=limit)  # type: ignore[no-any-return]
    items = drain("sync", stream, limit=limit)
    if how == "close":
        stream.close()
        stream.close()  # twice: still one record
    return items  # type: ignore[no-any-return]


def assert_patched_for_each_init(
    collector: LocalCollector,
    request: pytest.FixtureRequest,
    provider: str,
    method: tuple[type, str],
    patched: Callable[[], list[Any]],
    call: Callable[[], Any],
) -> None:
    """Two init/shutdown cycles of one client: each init patches ``method`` (and the rest:
    ``patched()``) once, records ``call()`` once, and each shutdown restores the originals;
    afterwards calls go straight to the provider, unrecorded."""
    cls, name = method
    original = cls.__dict__[name]
    client = Client()
    request.addfinalizer(client.shutdown)
    for _ in range(2):
        client.init(base_url=collector.url, application_id=APP_ID)
        wrapper = cls.__dict__[name]
        assert wrapper is not original and wrapper.__wrapped__ is original
        assert len(patched()) >= 6
        with client.session_context() as session_id:
            call()
        assert client.flush(5)
        assert len(collector.actions(session_id)) == 2  # once, not twice
        assert client.shutdown(5)
        assert cls.__dict__[name] is original
        assert patched() == []
        assert instrumented_by(provider) is None
    before = len(collector.actions())
    call()
    assert len(collector.actions()) == before
