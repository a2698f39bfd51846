"""What the SDK says when delivery fails: each kind of failure at once, with its cause and
what follows, its end once, repeats throttled, loss lines naming the last error, and the
wait at exit explained. Against a real collector with fault injection, and in
subprocesses whose stderr is read as a user would see it."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
from collections import Counter

import pytest

from layer_sdk._export import _losses
from layer_sdk.collector import LocalCollector

from .docs_pages import python_blocks
from .echo_servers import StaticToken
from .helpers import (
    APP_ID,
    PROMPT,
    ROOT,
    MakeClient,
    TCPServer,
    closed_port,
    wait_until,
)


def sdk_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "layer_sdk" and r.levelno >= logging.WARNING
    ]


def lines_with(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [line for line in sdk_warnings(caplog) if fragment in line]


@pytest.fixture(autouse=True)
def _warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="layer_sdk")


# -- the quick start, as a newcomer runs it ------------------------------------------------


def test_the_readme_quick_start_says_at_once_that_it_cannot_reach_the_api() -> None:
    """The README's quick start, its lines as written, with no collector started (its base
    URL pointed at a port where nothing listens, so that a collector a developer runs on
    8080 changes nothing): stderr shows the cause as soon as the first attempt failed,
    before the exit drain's own line (which comes QUIET_DRAIN into it), then what was lost
    and why. Nothing configured logging."""
    quick_start = next(
        block.code for block in python_blocks(ROOT / "README.md") if "layer.init(" in block.code
    )
    assert 'base_url="http://127.0.0.1:8080"' in quick_start
    port = closed_port()
    code = quick_start.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}")
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("reported session ")
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    cause, waiting, lost = lines
    assert cause.startswith(f"layer-sdk: cannot reach http://127.0.0.1:{port} ("), cause
    assert "Connection refused" in cause
    assert "retrying until the shutdown deadline" in cause and "2 event(s) kept" in cause
    assert waiting.startswith("layer-sdk is shutting down: waiting up to "), waiting
    assert waiting.endswith("to deliver 2 event(s)")
    assert lost.startswith("layer-sdk lost 2 event(s): shutdown (still queued at the shutdown")
    assert f"last error: cannot reach http://127.0.0.1:{port} (" in lost


# -- each kind of failure, said once, with what follows -------------------------------------


def test_an_unreachable_api_is_said_at_once_and_its_return_once(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens (the collector is stopped): the first failed attempt logs one
    WARNING with the cause and what happens next; when the collector is back, one line
    says so. The attempts in between (the retries) add no line."""
    client = make_client()
    collector.stop()
    client.create_session()
    assert wait_until(lambda: lines_with(caplog, "cannot reach"), timeout=5)
    assert wait_until(lambda: client.stats().retried >= 3, timeout=10)  # failing on
    (line,) = sdk_warnings(caplog)
    url = collector.url
    assert line.startswith(f"layer-sdk: cannot reach {url} (")
    assert "Connection refused" in line or "ConnectionRefused" in line
    assert line.endswith("; retrying for up to 10 min, 1 event(s) kept")

    collector.start()
    assert client.flush(15) is True
    assert len(collector.sessions) == 1
    back = lines_with(caplog, "takes events again")
    assert len(back) == 1, sdk_warnings(caplog)
    assert back[0].startswith(f"layer-sdk: the Layer API at {url} takes events again (after ")
    assert len(sdk_warnings(caplog)) == 2


@pytest.mark.parametrize("auth", [None, "token"], ids=["no-auth", "refused-token"])
def test_a_401_says_the_credentials_were_refused_and_what_to_check(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    auth: str | None,
) -> None:
    collector.require_bearer(lambda token: token == "the right one")
    provider = None if auth is None else StaticToken("a wrong one", declared=True)
    client = make_client(auth_provider=provider)
    client.create_session()
    assert client.flush(5) is False
    assert wait_until(lambda: len(sdk_warnings(caplog)) == 2)
    refused, lost = sdk_warnings(caplog)
    assert refused.startswith(
        f"layer-sdk: the Layer API refused the credentials: {collector.url}/v1/sessions "
        "answered 401"
    ), refused
    assert "its events are lost (failed: rejected)" in refused
    if auth is None:
        assert refused.endswith("pass auth_provider= to init() or set LAYER_OIDC_TOKEN_URL, "
                                "LAYER_OIDC_CLIENT_ID and LAYER_OIDC_CLIENT_SECRET")  # fmt: skip
    else:
        assert refused.endswith(
            "check the client ID, the secret and the scope of the auth_provider"
        )
        assert "wrong one" not in refused
    assert lost.startswith("layer-sdk lost 1 event(s): rejected (/v1/sessions answered 401")


def test_a_403_says_access_was_refused(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    collector.fail_next(1, 403, body=b'{"error": "this client may not write here"}')
    client.create_session()
    assert client.flush(5) is False
    assert wait_until(lambda: lines_with(caplog, "refused access"))
    (line,) = lines_with(caplog, "refused access")
    assert f"{collector.url}/v1/sessions answered 403 (this client may not write here)" in line


def test_a_404_shows_the_url_tried_and_says_the_base_url_looks_wrong(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A base URL with a path the API does not have (here /layer): the line shows the URL
    and path that were tried, and what base_url should be."""
    client = make_client(base_url=f"{collector.url}/layer")
    client.create_session()
    assert client.flush(5) is False
    assert wait_until(lambda: lines_with(caplog, "answered 404"))
    line = lines_with(caplog, "answered 404")[0]
    assert line.startswith(f"layer-sdk: {collector.url}/layer/v1/sessions answered 404 (")
    assert "is base_url right? It is the root of the Layer API" in line
    assert "its events are lost (failed: rejected)" in line


class PlainHTTPOnly(TCPServer):
    """Answers whatever comes with a plain-HTTP 400 and hangs up: TLS cannot start."""

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_a_tls_failure_is_named(make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    """https:// to a server that speaks plain HTTP: the handshake fails, and the line says
    TLS, not a bare connection error."""
    server = PlainHTTPOnly()
    try:
        client = make_client(base_url=f"https://127.0.0.1:{server.port}")
        client.create_session()
        assert wait_until(lambda: sdk_warnings(caplog), timeout=5)
        (line,) = sdk_warnings(caplog)
        assert line.startswith(f"layer-sdk: cannot reach https://127.0.0.1:{server.port}: TLS ")
        assert "retrying for up to 10 min" in line
        client.shutdown(timeout=0.2)
    finally:
        server.close()


def test_server_errors_are_said_once_then_counted_in_the_next_line_of_their_kind(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run of 503s: one line at once; the repeats wait for the throttle's interval and
    the next line counts them. The end of the trouble is said once."""
    monkeypatch.setattr(_losses, "LOSS_LOG_INTERVAL", 0.5)
    client = make_client()
    collector.fail_for(1.5, 503)
    client.create_session()
    assert wait_until(lambda: len(lines_with(caplog, "answered 503")) == 2, timeout=10)
    first, second = lines_with(caplog, "answered 503")
    assert first.startswith(f"layer-sdk: {collector.url}/v1/sessions answered 503 (injected);")
    assert "failures since the last report" not in first
    assert " failures since the last report)" in second
    assert client.flush(15) is True
    assert len(lines_with(caplog, "takes events again")) == 1


# -- losses name their cause -------------------------------------------------------------


def test_shutdown_with_a_dead_api_says_what_it_waits_for_and_why_events_were_lost(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(base_url=f"http://127.0.0.1:{closed_port()}")
    for _ in range(2):
        client.create_session()
    assert wait_until(lambda: lines_with(caplog, "cannot reach"), timeout=5)
    assert client.shutdown(timeout=1.0) is False
    waiting = lines_with(caplog, "waiting up to")
    assert len(waiting) == 1
    assert waiting[0].endswith("to deliver 2 event(s)")
    (lost,) = lines_with(caplog, "lost 2 event(s)")
    assert lost.startswith("layer-sdk lost 2 event(s): shutdown (still queued at the shutdown")
    assert "; last error: cannot reach http://127.0.0.1:" in lost


def test_a_healthy_shutdown_says_nothing(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(flush_interval=30.0)
    for _ in range(5):
        client.create_session()
    assert client.shutdown() is True
    assert sdk_warnings(caplog) == []


def test_a_full_queue_names_the_outage_that_filled_it(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(base_url=f"http://127.0.0.1:{closed_port()}", max_queue_size=2)
    client.create_session()
    assert wait_until(lambda: lines_with(caplog, "cannot reach"), timeout=5)
    client.create_session()
    client.create_session()  # no room
    (lost,) = lines_with(caplog, "lost 1 event(s): queue_full")
    assert lost.startswith("layer-sdk lost 1 event(s): queue_full (last error: cannot reach ")
    client.shutdown(timeout=0.1)


def test_the_actions_of_a_lost_create_say_why_they_were_not_sent(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    collector.fail_next(2, 400)  # the merged create, then the create alone
    client.create_session(actions=[{"kind": PROMPT, "data": {"n": n}} for n in range(2)])
    assert client.flush(5) is False
    assert wait_until(lambda: lines_with(caplog, "session_failed"))
    (line,) = lines_with(caplog, "session_failed")
    assert line == (
        "layer-sdk lost 2 event(s): session_failed (the create of their session was lost as "
        "rejected)"
    )


def test_no_line_holds_the_events_data(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """A server error quoting the refused body: the trouble line masks its words."""
    client = make_client()
    collector.fail_next(
        1, 503, body=b'{"error": "overloaded while storing Lisbon-weekend-plans for Jane"}'
    )
    session_id = client.create_session(attributes={"trip": "Lisbon-weekend-plans for Jane"})
    assert wait_until(lambda: lines_with(caplog, "answered 503"))
    assert client.flush(5) is True
    text = "\n".join(sdk_warnings(caplog))
    assert "Lisbon" not in text and "Jane" not in text
    assert "overloaded while storing" in text
    assert collector.session(session_id) is not None


# -- exactly one line per message on stderr, whatever the application configured -----------

CONFIGURATIONS = {
    "none": "",
    "basicConfig": "logging.basicConfig()",
    "handler-on-layer_sdk": ("logging.getLogger('layer_sdk').addHandler(logging.StreamHandler())"),
    "propagate-false": (
        "logging.basicConfig()\n"
        "sdk = logging.getLogger('layer_sdk')\n"
        "sdk.addHandler(logging.StreamHandler())\n"
        "sdk.propagate = False"
    ),
}

DEAD_API = """
import logging, sys
from layer_sdk import Client
{configure}
sdk = logging.getLogger("layer_sdk")
before = (list(sdk.handlers), sdk.level, sdk.propagate)
client = Client()
client.init(base_url=sys.argv[1], application_id="{app}", debug={debug},
            disable_instrumentations=["openai", "anthropic", "google_genai"])
client.create_session()
client.shutdown(timeout=1.0)
sdk.debug("layer-sdk: a debug line after shutdown")
print("as before:", before == (list(sdk.handlers), sdk.level, sdk.propagate))
"""


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "debug"])
def test_stderr_gets_each_line_once_whatever_logging_the_application_configured(
    configuration: str, debug: bool
) -> None:
    """No logging configured: Python's last resort prints the warnings. basicConfig, a
    handler on layer_sdk, propagate=False with one: the application's handlers do, and
    the last resort does not. With debug=True the debug handler adds the per-request
    lines, and only where no handler of the application writes them. Never twice."""
    code = DEAD_API.format(configure=CONFIGURATIONS[configuration], app=APP_ID, debug=debug)
    result = subprocess.run(
        [sys.executable, "-c", code, f"http://127.0.0.1:{closed_port()}"],
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "as before: True\n"  # the debug handler left with its client
    kinds = {
        "cause": "layer-sdk: cannot reach http://127.0.0.1:",
        "waiting": "layer-sdk is shutting down: waiting up to",
        "lost": "layer-sdk lost 1 event(s): shutdown",
        "attempt": "layer-sdk: POST /v1/sessions -> no answer",
    }
    seen = Counter(
        next((kind for kind, start in kinds.items() if start in line), line)
        for line in result.stderr.splitlines()
    )
    attempts = seen.pop("attempt", 0)
    assert seen == {"cause": 1, "waiting": 1, "lost": 1}, result.stderr  # and nothing else
    if debug:
        # One line per attempt, each once: retries numbered 1, 2, ... without a gap.
        numbers = re.findall(r"; retry (\d+) in ", result.stderr)
        assert attempts >= 2 and numbers == [str(n) for n in range(1, len(numbers) + 1)]
    else:
        assert attempts == 0


def test_debug_lines_never_hold_bodies_headers_or_secrets(collector: LocalCollector) -> None:
    """LAYER_DEBUG=1: one line per attempt with method, path, status, duration, events
    and the retry with its reason; the prompt, the token and the server's words are in
    none of them."""
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from layer_sdk import Client, SessionActionKind
from tests.echo_servers import StaticToken
client = Client()
client.init(base_url=sys.argv[1], application_id="{APP_ID}", flush_interval=0.05,
            auth_provider=StaticToken("tok-0123456789-secret", declared=False))
session_id = client.create_session()
message = {{"role": "user", "content": "Plan a weekend in Lisbon"}}
client.append_action(session_id, kind=SessionActionKind.COMPLETION_PROMPT,
                     data={{"messages": [message]}})
assert client.flush(10)
"""
    collector.fail_next(1, 503, body=b'{"error": "busy storing Plan a weekend in Lisbon"}')
    result = subprocess.run(
        [sys.executable, "-c", code, collector.url],
        env={"PYTHONPATH": str(ROOT), "PATH": "", "LAYER_DEBUG": "1"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    attempts = [line for line in result.stderr.splitlines() if " -> " in line]
    assert len(attempts) == 2, result.stderr
    failed, delivered = attempts
    assert failed.startswith("DEBUG layer-sdk: POST /v1/sessions -> 503 in ")
    assert failed.endswith(
        " ms (1 body, 2 event(s)); retry 1 in " + failed.split(" retry 1 in ")[1]
    )
    assert "(answered 503)" in failed
    assert delivered.startswith("DEBUG layer-sdk: POST /v1/sessions -> 200 in ")
    assert "(1 body, 2 event(s))" in delivered
    for secret in ("Lisbon", "tok-0123456789", "Bearer", "busy storing"):
        assert all(secret not in line for line in attempts), secret


# -- a create answered 409: the session exists -------------------------------------------


@pytest.mark.parametrize("merged", [True, False], ids=["with-its-actions", "alone"])
def test_two_clients_creating_the_same_session_both_record_their_actions(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    merged: bool,
) -> None:
    """A deterministic session ID (a conversation's), created by two processes: the second
    create is answered 409 on its first attempt (merged with its actions, or alone), the
    session exists, and its actions are added to it. Its attributes stay the first
    client's; nothing is lost, one INFO line says why."""
    caplog.set_level(logging.INFO, logger="layer_sdk")
    shared = "2b6d3a0e-7d7a-5f47-9a3e-3c6b2f0d5e11"
    first, second = make_client(), make_client()
    first.create_session(session_id=shared, attributes={"who": "first"})
    first.append_action(shared, kind=PROMPT, data={"from": "first"})
    assert first.flush(5) is True
    second.create_session(session_id=shared, attributes={"who": "second"})
    if not merged:
        assert second.flush(5) is True
    second.append_action(shared, kind=PROMPT, data={"from": "second"})
    second.append_action(shared, kind=PROMPT, data={"from": "second, again"})
    assert second.flush(5) is True
    stats = second.stats()
    assert (stats.sent, stats.failed, stats.queued) == (3, 0, 0)
    assert collector.session(shared)["attributes"]["who"] == "first"  # type: ignore[index]
    assert [a["data"]["from"] for a in collector.actions(shared)] == [
        "first",
        "second",
        "second, again",
    ]
    existed = [r for r in caplog.records if "already existed" in r.getMessage()]
    assert len(existed) == 1 and existed[0].levelno == logging.INFO
    assert (
        existed[0]
        .getMessage()
        .startswith(
            f"layer-sdk: session {shared} already existed on the Layer API (409): its actions "
            "are added to it"
        )
    )
    assert sdk_warnings(caplog) == []
