"""The command line: ``check``'s verdicts and exit codes, ``demo``, and ``collector``."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import queue
import re
import secrets
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layer_sdk import Client, SessionActionKind, __version__
from layer_sdk.cli import main
from layer_sdk.cli._check import settings_rows
from layer_sdk.cli._collector import DEFAULT_MAX_BODY_BYTES, escaped
from layer_sdk.collector import LocalCollector

from .echo_servers import EchoingTokenEndpoint, leaks, odd_secret
from .helpers import APP_ID, FAST, ROOT, closed_port, run_python
from .oidc_provider import OIDCProvider, oidc

__all__ = ["oidc"]  # the fixture, imported so that pytest finds it


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_check_passes_against_a_healthy_api(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert code == 0
    assert out.strip().splitlines()[-1] == "OK: this machine can report to Layer."
    (session,) = collector.sessions
    assert session["attributes"]["layer_sdk.check"] == "true"


def test_check_reads_the_environment_like_init(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAYER_BASE_URL", collector.url)
    monkeypatch.setenv("LAYER_APPLICATION_ID", APP_ID)
    monkeypatch.setenv("LAYER_TIMEOUT", "3")
    code, out = run(capsys, "check")
    assert code == 0
    assert "3 s" in out and collector.url in out


def test_check_names_a_missing_setting(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "check", "--application-id", APP_ID)
    assert code == 1
    assert out.startswith("FAILED:") and "LAYER_BASE_URL" in out


def test_check_says_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, out = run(capsys, "check", "--base-url", url, "--application-id", APP_ID)
    assert code == 1
    assert f"FAILED: nothing accepts connections at {url}" in out


def test_check_says_when_the_url_is_not_the_api(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    url = collector.url + "/not-layer"
    code, out = run(capsys, "check", "--base-url", url, "--application-id", APP_ID)
    assert code == 1
    assert "404" in out and "check base_url" in out


def test_check_says_when_credentials_are_refused(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    collector.require_bearer(lambda token: False)
    code, out = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert code == 1
    assert "FAILED: the API refused the credentials (401)" in out


def test_check_says_when_the_api_is_too_slow(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    collector.delay = 2.0
    argv = ["check", "--base-url", collector.url, "--application-id", APP_ID, "--timeout", "0.3"]
    code, out = run(capsys, *argv)
    assert code == 1
    assert "FAILED: no answer within 0.3 s" in out


def test_check_masks_the_client_secret(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "very-secret-value-1234"
    monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", f"http://127.0.0.1:{closed_port()}/token")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "sdk")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", secret)
    code, out = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert code == 1
    assert "FAILED: the token endpoint could not be reached" in out
    assert "secret ********" in out
    assert secret not in out


def test_check_masks_the_password_of_a_url(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """``layer-sdk check`` shows user:***@, never the password."""
    password = "pw-" + secrets.token_urlsafe(16)
    url = f"http://user:{password}@127.0.0.1:{collector.port}"
    code, out = run(capsys, "check", "--base-url", url, "--application-id", APP_ID)
    assert code == 0, out
    assert f"base_url        http://user:***@127.0.0.1:{collector.port}" in out

    port = closed_port()
    url = f"http://user:{password}@127.0.0.1:{port}"
    code, failed = run(capsys, "check", "--base-url", url, "--application-id", APP_ID)
    assert code == 1
    assert f"FAILED: nothing accepts connections at http://user:***@127.0.0.1:{port}" in failed

    monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", f"http://sso:{password}@127.0.0.1:{port}/token")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "sdk")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", "very-secret-value-1234")
    code, oidc = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert code == 1
    assert f"OIDC client 'sdk' at http://sso:***@127.0.0.1:{port}/token" in oidc
    # An invalid URL is quoted by the error that refuses it: masked all the same.
    argv = ["check", "--base-url", f"ftp://user:{password}@host/", "--application-id", APP_ID]
    code, invalid = run(capsys, *argv)
    assert code == 1 and "ftp://user:***@host/" in invalid
    assert [text for text in (out, failed, oidc, invalid) if password in text] == []


def test_check_shows_no_secret_the_token_endpoint_echoes(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    """Check prints the provider's refusal, not the secret it echoed."""
    secret = odd_secret("cs")
    with EchoingTokenEndpoint("form") as endpoint:
        monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", f"{endpoint.url}/token")
        monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "sdk")
        monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", secret)
        code, out = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
        assert endpoint.echoed(secret)
    assert code == 1
    assert "FAILED: the token endpoint refused the client" in out and "invalid_client" in out
    assert leaks(secret, out) == []


def test_check_names_the_opt_in_for_plain_http_beyond_this_machine(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Check says why a plain-http token URL is refused."""
    monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", "http://sso.example.invalid/token")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "sdk")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", "very-secret-value-1234")
    argv = ["check", "--base-url", "https://layer.example.invalid", "--application-id", APP_ID]
    code, out = run(capsys, *argv)
    assert code == 1
    assert "FAILED: the configuration is incomplete or invalid: LAYER_OIDC_TOKEN_URL" in out
    assert "allow_insecure_http=True to init()" in out and "very-secret-value-1234" not in out


def test_demo_reports_everything_delivered(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "demo", "--sessions", "50", "--threads", "2")
    assert code == 0
    assert "events delivered (counted by the server)  250" in out
    assert out.strip().splitlines()[-1] == "OK: everything was delivered."


# -- layer-sdk collector, run as a real process ---------------------------------------------


T0 = "2024-05-01T12:00:00Z"
SECRET = "sk-very-secret-token-5678"


class CollectorProcess:
    """``python -m layer_sdk collector --port 0 ...`` with its output read line by line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "layer_sdk", "collector", "--port", "0", *args]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()
        first = self.line()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first
        self.url = match[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.first = first
        self.stderr = ""

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 10.0) -> str:
        line = self.lines.get(timeout=timeout)
        assert line is not None, f"the collector ended: {self.process.stderr.read()}"  # type: ignore[union-attr]
        return line

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, list[str]]:
        """Send ``signum``; the exit code and every line printed after the first."""
        self.process.send_signal(signum)
        code = self.process.wait(timeout=15)
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()
        self.process.stderr.close()
        self.process.stdout.close()  # type: ignore[union-attr]
        rest = []
        while (line := self.lines.get(timeout=1)) is not None:
            rest.append(line)
        return code, rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def collector_process(*args: str) -> Iterator[CollectorProcess]:
    running = CollectorProcess(*args)
    try:
        yield running
    finally:
        running.kill()


def send(port: int, path: str, body: Any, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            path,
            json.dumps(body),
            {"Content-Type": "application/json", **(headers or {})},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def prompt_action(**attributes: Any) -> dict[str, Any]:
    return {"kind": "completion_prompt", "start_time": T0, "end_time": T0, "attributes": attributes}


def test_collector_prints_arrivals_and_stops_on_sigint_with_a_summary() -> None:
    with collector_process() as running:
        assert running.first.startswith("Layer collector listening on ")
        client = Client()
        client.init(base_url=running.url, application_id=APP_ID, **FAST)
        session_id = client.create_session(attributes={"user.id": "u-1"})
        client.append_action(
            session_id,
            kind=SessionActionKind.COMPLETION_PROMPT,
            attributes={"model.id": "gpt-4o-mini"},
            data={"messages": [{"role": "user", "content": "Which tours leave\nfrom Lisbon?"}]},
        )
        assert client.flush(timeout=10)
        client.shutdown()
        code, lines = running.stop(signal.SIGINT)
    assert code == 0, running.stderr
    events = [line for line in lines if re.match(r"\d\d:\d\d:\d\d\.\d{3}  ", line)]
    assert len(events) == 2, lines
    assert f"  {session_id}  session " in events[0] and f"app={APP_ID}" in events[0]
    assert "user.id=u-1" in events[0]
    assert f"  {session_id}  completion_prompt " in events[1]
    assert "  user: Which tours leave from Lisbon?  model.id=gpt-4o-mini" in events[1]
    assert lines[-1].startswith("Stopped after ")
    assert "received 1 session and 1 action" in lines[-1]
    assert "Traceback" not in running.stderr


def test_collector_json_lines_match_what_the_client_sent() -> None:
    with collector_process("--json") as running:
        assert json.loads(running.first) == {
            "event": "listening",
            "url": running.url,
            "db": None,
            "fail_rate": 0.0,
            "latency": 0.0,
            "sessions": 0,
            "actions": 0,
        }
        session_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "cli-json"))
        session = {
            "application_id": APP_ID,
            "session_id": session_id,
            "attributes": {"user.id": "u-2"},
            "actions": [prompt_action(temperature=0.2)],
        }
        assert send(running.port, "/v1/sessions", session) == 200
        failing = {
            **prompt_action(),
            "kind": "completion_output",
            "data": {"messages": [{"role": "assistant", "content": "hi"}]},
            "error": {"message": "rate limited", "code": 429},
        }
        assert send(running.port, f"/v1/sessions/{session_id}/actions", failing) == 202
        for _ in range(3):  # printed as they arrive, before any stop
            assert json.loads(running.line())["session_id"] == session_id
        code, lines = running.stop(signal.SIGINT)
    assert code == 0, running.stderr
    (stopped,) = [json.loads(line) for line in lines]
    assert stopped["event"] == "stopped"
    assert (stopped["sessions"], stopped["actions"], stopped["requests"]) == (1, 2, 2)


def test_collector_json_lines_are_the_stored_fields() -> None:
    with collector_process("--json") as running:
        session_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "cli-json-fields"))
        action = {**prompt_action(**{"model.id": "m"}), "data": {"n": [1, 2]}}
        body = {"application_id": APP_ID, "session_id": session_id, "end_time": T0}
        assert send(running.port, "/v1/sessions", body) == 200
        assert send(running.port, f"/v1/sessions/{session_id}/actions", action) == 202
        first, second = json.loads(running.line()), json.loads(running.line())
        running.stop()
    assert first.pop("event") == "session" and second.pop("event") == "action"
    for line in (first, second):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("received_at"))
    assert first == body
    assert second == {**action, "session_id": session_id}


def test_collector_keeps_everything_in_sqlite_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "layer.sqlite"
    session_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "cli-db"))
    with collector_process("--db", str(db)) as running:
        assert "keeping everything in" in running.line()
        body = {"application_id": APP_ID, "session_id": session_id, "attributes": {"a": "1"}}
        assert send(running.port, "/v1/sessions", body) == 200
        action = prompt_action(**{"model.id": "gpt-4o-mini"})
        assert send(running.port, f"/v1/sessions/{session_id}/actions", action) == 202
        code, lines = running.stop(signal.SIGTERM)
    assert code == 0, running.stderr
    assert f"{db} holds 1 session and 1 action." in lines[-1]

    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT session_id, application_id FROM sessions").fetchall() == [
            (session_id, APP_ID)
        ]
        rows = connection.execute(
            "SELECT session_id, kind, json_extract(body, '$.attributes.\"model.id\"')"
            " FROM actions ORDER BY seq"
        ).fetchall()
        assert rows == [(session_id, "completion_prompt", "gpt-4o-mini")]
    connection.close()

    with collector_process("--db", str(db), "--json") as running:
        listening = json.loads(running.first)
        assert (listening["sessions"], listening["actions"]) == (1, 1)
        # The session is known again: an action for it is accepted, a second create refused.
        assert send(running.port, f"/v1/sessions/{session_id}/actions", prompt_action()) == 202
        assert send(running.port, "/v1/sessions", body) == 409
        code, lines = running.stop(signal.SIGINT)
    assert code == 0, running.stderr
    stopped = json.loads(lines[-1])
    assert (stopped["total_sessions"], stopped["total_actions"]) == (1, 2)
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM actions").fetchone() == (2,)
    connection.close()


def test_collector_fail_rate_one_answers_503() -> None:
    with collector_process("--fail-rate", "1", "--latency", "0.05") as running:
        assert "answering 100% of requests with 503" in running.line()
        body = {"application_id": APP_ID}
        started = time.monotonic()
        assert send(running.port, "/v1/sessions", body) == 503
        assert time.monotonic() - started >= 0.05
        assert send(running.port, "/v1/sessions", body) == 503
        code, lines = running.stop()
    assert code == 0, running.stderr
    assert "received 0 sessions and 0 actions in 2 requests" in lines[-1]
    assert "2 answered with an error: 2 with 503" in lines[-1]


def status_of_a_body(port: int, size: int, *, sent: bool = True) -> int:
    """The status a request whose body is a session of ``size`` bytes gets; with
    ``sent=False`` only its head goes (its Content-Length announcing the body)."""
    prefix, suffix = b'{"application_id":"%s","attributes":{"pad":"' % APP_ID.encode(), b'"}}'
    body = prefix + b"x" * (size - len(prefix) - len(suffix)) + suffix
    head = b"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body if sent else head)
        return int(sock.recv(64).split(b" ")[1])


@pytest.mark.parametrize(
    ("args", "limit"),
    [
        ((), DEFAULT_MAX_BODY_BYTES),
        (("--max-body-bytes", "1000"), 1000),
        (("--max-body-bytes", "0"), None),
    ],
    ids=["default", "1000", "no limit"],
)
def test_collector_refuses_a_body_over_its_limit_before_reading_it(
    args: tuple[str, ...], limit: int | None
) -> None:
    """A body over --max-body-bytes (8 MiB unless told: what the SDK sends with its
    defaults, with room to spare) is refused with 413 from its Content-Length alone."""
    with collector_process(*args) as running:
        if limit is None:
            assert status_of_a_body(running.port, 2 * DEFAULT_MAX_BODY_BYTES) == 200
        else:
            assert status_of_a_body(running.port, limit) == 200
            assert status_of_a_body(running.port, limit + 1, sent=False) == 413
        running.stop()


@pytest.mark.parametrize("mode", [(), ("--json",)])
def test_collector_never_prints_the_authorization_header(mode: tuple[str, ...]) -> None:
    with collector_process(*mode) as running:
        session_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cli-secret-{mode}"))
        headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
        body = {"application_id": APP_ID, "session_id": session_id}
        assert send(running.port, "/v1/sessions", body, headers) == 200
        assert send(running.port, "/v1/nowhere", body, headers) == 404
        printed = [running.first]
        while session_id[:8] not in printed[-1]:  # until the session is printed
            printed.append(running.line())
        _, lines = running.stop()
    output = "\n".join(printed + lines) + running.stderr
    assert session_id[:8] in output
    assert SECRET not in output
    assert "authorization" not in output.lower()


#: What a hostile client may report, for a terminal to act on: a title, a clear, a
#: clipboard write (OSC 52), a C1 control sequence introducer, a right-to-left override.
TERMINAL_ATTACKS = {
    "title": "\x1b]0;pwned\x07",
    "clear": "\x1b[2J\x1b[H",
    "clipboard": "\x1b]52;c;cHduZWQ=\x07",
    "csi": "\x9b31m",
    "bidi": "abc\u202edcba",
}


def terminal_attack_session(session_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A session and an action carrying every attack in an attribute, a prompt and an error."""
    session = {
        "application_id": "app\x1b]0;app-title\x07",
        "session_id": session_id,
        "attributes": {**TERMINAL_ATTACKS, "name\x1b[2J": "v"},
    }
    action = {
        **prompt_action(**TERMINAL_ATTACKS),
        "data": {"messages": [{"role": "user", "content": "\u202ehi\x1b]52;c;QQ==\x07 \x9b1m"}]},
        # ...and invisible characters: an Arabic letter mark, a zero-width space, a BOM.
        "error": {"message": "boom\x1b[2J\x9b1m\u061c\u200b\ufeff"},
    }
    return session, action


def assert_escaped(output: str) -> None:
    """No control character reached the terminal; each is shown as its escape instead."""
    for raw in ("\x1b]", "\x1b[2J", "\x07", "\x9b", "\u202e", "\u061c", "\u200b", "\ufeff"):
        assert raw not in output, f"{raw!r} reached the terminal"
    assert "app=app\\x1b]0;app-title\\x07" in output  # the session's line
    assert "user: \\u202ehi\\x1b]52;c;QQ==\\x07 \\x9b1m" in output  # the prompt
    assert "error: boom\\x1b[2J\\x9b1m\\u061c\\u200b\\ufeff" in output


#: The Unicode categories of the characters a terminal acts on or does not show.
UNSHOWN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    st.text(alphabet=st.characters(codec=None, categories=sorted(UNSHOWN)))
    | st.text()
    | st.text(alphabet="a \x1b\u200b\u202e\u00a0\u3000\U000e0001\ud800")
)
def test_what_the_collector_prints_shows_every_character_it_was_given(text: str) -> None:
    """No character of those categories is left, each is written as the escape that reads
    back as it (Python's), and everything else (spaces included) is kept as it is."""
    text = text.replace("\\", "/")  # a backslash is kept as it is: no escape to read back
    shown = escaped(text)
    assert not {unicodedata.category(char) for char in shown} & UNSHOWN
    assert shown.encode("ascii", "backslashreplace").decode("unicode_escape") == text
    if not {unicodedata.category(char) for char in text} & UNSHOWN:
        assert shown == text


@pytest.mark.parametrize("mode", [(), ("--json",)])
def test_collector_escapes_control_characters_of_what_it_prints(mode: tuple[str, ...]) -> None:
    """Values a client reported reach the terminal with their control characters escaped:
    a prompt cannot retitle the terminal, clear it or write to its clipboard."""
    session_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cli-escapes-{mode}"))
    session, action = terminal_attack_session(session_id)
    with collector_process(*mode) as running:
        assert send(running.port, "/v1/sessions", session) == 200
        assert send(running.port, f"/v1/sessions/{session_id}/actions", action) == 202
        printed: list[str] = []
        while len(printed) < 2:  # the two events, after the lines that open a plain output
            line = running.line()
            if mode or re.match(r"\d\d:\d\d:\d\d\.\d{3}  ", line):
                printed.append(line)
        _, lines = running.stop()
    output = "\n".join([running.first, *printed, *lines])
    if mode:  # JSON escapes them its own way, and the values read back whole
        assert "\x1b" not in output and "\x9b" not in output and "\u202e" not in output
        assert json.loads(printed[0])["attributes"] == session["attributes"]
        assert json.loads(printed[1])["error"] == action["error"]
        return
    assert_escaped(output)
    assert "title=\\x1b]0;pwned\\x07 clear=\\x1b[2J\\x1b[H" in printed[0]


def test_collector_on_every_address_answers_the_names_it_is_given() -> None:
    """Bound to 0.0.0.0, the collector answers its IP addresses, localhost and the names
    given with --allow-host, and refuses any other Host; it says so when it starts."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "layer_sdk", "collector", "--host", "0.0.0.0", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--allow-host", "devbox"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        port = int(re.search(r"http://0\.0\.0\.0:(\d+)", first)[1])  # type: ignore[index]
        notes = [process.stdout.readline() for _ in range(2)]
        assert "listening on every address" in notes[1], notes

        def status(host: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/v1/applications", headers={"Host": host})
                response = conn.getresponse()
                response.read()
                return response.status
            finally:
                conn.close()

        for host in (f"devbox:{port}", "devbox:9999", f"10.1.2.3:{port}", f"localhost:{port}"):
            assert status(host) == 200, host
        for host in (f"evil.example:{port}", f"devbox.evil.example:{port}", f"10.1.2.3:{port + 1}"):
            assert status(host) == 403, host
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_collector_refuses_bad_options_with_exit_code_2(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "layer_sdk", "collector", "--port", "0"]
    for extra in (["--fail-rate", "1.5"], ["--latency", "-1"], ["--max-body-bytes", "-1"]):
        result = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and "must be" in result.stderr
    bad_db = str(tmp_path / "missing-folder" / "x.sqlite")
    result = subprocess.run(
        [*base, "--db", bad_db], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "cannot use --db" in result.stderr


def test_collector_says_when_the_port_is_taken(collector: LocalCollector) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "layer_sdk", "collector", "--port", str(collector.port)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{collector.port}" in result.stderr


# -- rich, when it is installed -------------------------------------------------------------


def test_the_sdk_core_never_imports_rich() -> None:
    code = (
        "import sys, layer_sdk, layer_sdk.collector\n"
        "from layer_sdk import Client\n"
        "assert 'rich' not in sys.modules, 'rich was imported'\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_without_a_terminal_the_output_is_plain(capsys: pytest.CaptureFixture[str]) -> None:
    from layer_sdk.cli._console import rich_console

    assert rich_console(sys.stdout) is None  # captured: not a terminal
    code, out = run(capsys, "demo", "--sessions", "5", "--threads", "1")
    assert code == 0 and "\x1b[" not in out and "┃" not in out


def test_demo_without_rich_is_plain(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # import rich now fails
    monkeypatch.setitem(sys.modules, "rich.console", None)
    from layer_sdk.cli import _console

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert _console.rich_console(sys.stdout) is None
    code, out = run(capsys, "demo", "--sessions", "5", "--threads", "1")
    assert code == 0
    assert "events delivered (counted by the server)  25" in out


def test_demo_with_rich_shows_progress_and_a_table() -> None:
    rich_console = pytest.importorskip("rich.console")
    import io

    from layer_sdk.cli._demo import demo

    buffer = io.StringIO()
    console = rich_console.Console(file=buffer, force_terminal=True, width=100, color_system=None)
    assert demo(200, 2, None, "layer-sdk-demo", console=console) == 0
    out = buffer.getvalue()
    assert "calls" in out and "delivered" in out and "1000/1000" in out  # the progress bars
    assert "Layer SDK demo" in out and "┃" in out  # the table
    assert re.search(r"│ events delivered \(counted by the server\) +│ +1,000 │", out), out
    assert out.rstrip().endswith("OK: everything was delivered.")


def test_collector_with_rich_on_a_terminal() -> None:
    pytest.importorskip("rich")
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "layer_sdk", "collector", "--port", "0"],
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    output = b""

    def read_until(pattern: str, timeout: float = 10.0) -> re.Match[str]:
        nonlocal output
        deadline = time.monotonic() + timeout
        while True:
            plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))
            if (match := re.search(pattern, plain)) is not None:
                return match
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern!r} not in {plain!r}"
            if select.select([master], [], [], left)[0]:
                with contextlib.suppress(OSError):  # EIO: the process has ended
                    output += os.read(master, 65536)

    try:
        port = int(read_until(r"listening on http://127\.0\.0\.1:(\d+)")[1])
        session_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "cli-rich"))
        body = {"application_id": APP_ID, "session_id": session_id, "attributes": {"k": "v"}}
        assert send(port, "/v1/sessions", body) == 200
        read_until(rf"{session_id}  session .*app={APP_ID}  k=v")
        assert b"\x1b[" in output  # styled
        hostile = str(uuid.uuid5(uuid.NAMESPACE_URL, "cli-rich-escapes"))
        session, action = terminal_attack_session(hostile)
        assert send(port, "/v1/sessions", session) == 200
        assert send(port, f"/v1/sessions/{hostile}/actions", action) == 202
        read_until(rf"{hostile}  completion_prompt .*boom")
        styles = re.sub(rb"\x1b\[[0-9;]*m", b"", output)  # rich's own colours
        assert_escaped(styles.decode(errors="replace"))
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        read_until(r"Stopped after .* received 2 sessions and 1 action in 3 requests")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        os.close(master)


# -- check reads the settings as init() does ------------------------------------------------

#: What each variable the docs name is set to below (LAYER_TEST_VENVS is the test suite's own).
NOT_SETTINGS = {"LAYER_TEST_VENVS"}


def documented_variables() -> set[str]:
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = {
        m for path in texts for m in re.findall(r"\bLAYER_[A-Z]+(?:_[A-Z]+)*\b", path.read_text())
    }
    return found - NOT_SETTINGS


def test_check_and_init_see_the_same_settings_from_every_documented_variable(
    oidc: Callable[..., OIDCProvider],
    monkeypatch: pytest.MonkeyPatch,
    collector: LocalCollector,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    provider = oidc(token_ttl=300)
    bearer = provider.bearer_check()
    collector.require_bearer(bearer)
    values = {
        "LAYER_ENABLED": "yes",
        "LAYER_DEBUG": "on",
        "LAYER_BASE_URL": collector.url,
        "LAYER_APPLICATION_ID": APP_ID,
        "LAYER_APPLICATION_NAME": "support-bot",
        "LAYER_ENVIRONMENT": "Staging",
        "LAYER_TIMEOUT": "4",
        "LAYER_HTTP_TIMEOUT": "9",
        "LAYER_FIREWALL_BASE_URL": collector.url,
        "LAYER_OIDC_TOKEN_URL": provider.token_url,
        "LAYER_OIDC_CLIENT_ID": provider.client_id,
        "LAYER_OIDC_CLIENT_SECRET": provider.client_secret,
        "LAYER_OIDC_SCOPE": provider.scope,
        "LAYER_OIDC_TIMEOUT": "6",
        "LAYER_SPOOL_DIR": str(tmp_path / "spool"),
    }
    missing = documented_variables() - set(values)
    assert not missing, f"documented but not set by this test: {sorted(missing)}"
    for variable, value in values.items():
        monkeypatch.setenv(variable, value)

    code, out = run(capsys, "check")
    assert code == 0, out
    client = Client()
    client.init()
    try:
        config = client._exporter.config  # type: ignore[union-attr]
        assert config.debug is True
        rows = settings_rows(config)
        assert (
            "authentication",
            f"OIDC client 'layer-sdk' at {provider.token_url}, scope "
            f"layer-sdk, timeout 6 s, secret ********",
        ) in rows
        assert ("firewall", collector.url) in rows and ("http_timeout", "4 s") in rows
        spool = f"{tmp_path / 'spool'} (spool_sync normal, at most 1,024 MiB, 7 days)"
        assert ("spool", spool) in rows
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            assert f"\n  {name:<{width}}  {value}\n" in out
        client.create_session(sync=True)
        assert client.firewall_session_lookup(collector.sessions[-1]["session_id"])
    finally:
        client.shutdown()
    probe, created = collector.sessions
    for session in (probe, created):
        assert session["application_id"] == APP_ID
        assert session["attributes"]["environment"] == "staging"
    assert bearer.refused == []
    assert [request.status for request in collector.requests] == [200, 200, 200, 200]
    assert "Firewall: decision 'no_data'" in out


def test_check_resolves_an_application_name(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check", "--base-url", collector.url, "--application-name", "support-bot"]
    code, out = run(capsys, *argv)
    assert code == 0, out
    assert "application_id  (by name: 'support-bot')" in out
    assert "Looking up the application named 'support-bot' ..." in out
    (application,) = collector.applications
    assert application["name"] == "support-bot"
    assert collector.sessions[0]["application_id"] == application["id"]


def test_check_asks_the_firewall_and_says_what_is_wrong_with_it(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["check", "--base-url", collector.url, "--application-id", APP_ID]
    code, out = run(capsys, *base, "--firewall-base-url", collector.url)
    assert code == 0, out
    asked = f"Asking the firewall at {collector.url} about the probe session ..."
    assert out.index("Probe: session ") < out.index(asked) < out.index("Firewall: decision")
    (lookup,) = [r for r in collector.requests if r.method == "GET"]
    assert lookup.path == f"/v1/sessions/{collector.sessions[0]['session_id']}"

    code, out = run(capsys, *base, "--firewall-base-url", collector.url + "/elsewhere")
    assert code == 1
    assert f"FAILED: {collector.url}/elsewhere has no Layer firewall (404)" in out
    assert "check firewall_base_url" in out

    port = closed_port()
    code, out = run(capsys, *base, "--firewall-base-url", f"http://127.0.0.1:{port}")
    assert code == 1
    assert f"FAILED: nothing accepts connections at http://127.0.0.1:{port}" in out


def test_check_summarizes_an_html_error_page(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    page = (
        b"<!DOCTYPE html>\n<html><head><meta charset=utf-8>\n<title>502 Bad Gateway &amp; co"
        b"</title></head><body>" + b"<p>the upstream is gone</p>" * 200 + b"</body></html>"
    )
    collector.fail_next(1, 502, body=page)
    code, out = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert code == 1
    assert out.splitlines()[-1] == (
        "FAILED: the API answered 502: an HTML page titled '502 Bad Gateway & co'"
    )
    assert "<" not in out and "upstream" not in out


def test_check_says_reporting_is_turned_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAYER_ENABLED", "off")
    code, out = run(capsys, "check")
    assert code == 1
    assert out.startswith("FAILED: reporting is turned off (enabled=False, or LAYER_ENABLED")


def test_check_says_what_it_waits_for_while_it_waits(collector: LocalCollector) -> None:
    collector.hang()
    command = [
        sys.executable,
        "-m",
        "layer_sdk",
        "check",
        "--base-url",
        collector.url,
        "--application-id",
        APP_ID,
        "--timeout",
        "20",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONUNBUFFERED", None)  # a pipe is block-buffered unless the command flushes
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        while not (line := process.stdout.readline()).startswith("Sending a probe session"):
            assert line, f"the check ended first: {lines}"
            lines.append(line)
        assert line == f"Sending a probe session to {collector.url}/v1/sessions ...\n"
        # Read while the collector still holds the probe: the line was not held back either.
        assert process.poll() is None
        assert collector.wait_for(lambda c: c.unanswered == 1)
        collector.release()
        rest = process.stdout.read()
        assert process.wait(timeout=30) == 0
    finally:
        collector.release()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert rest.splitlines()[-1] == "OK: this machine can report to Layer."


# -- the command itself, and demo ------------------------------------------------------------


def console_script() -> str:
    """The ``layer-sdk`` script installed beside this interpreter."""
    script = Path(sys.executable).with_name("layer-sdk")
    assert script.exists(), f"{script} is missing: install the package (pip install -e .)"
    return str(script)


def run_command(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("how", ["module", "script"])
def test_version_and_the_help_alone(how: str) -> None:
    command = [sys.executable, "-m", "layer_sdk"] if how == "module" else [console_script()]
    result = run_command(*command, "--version")
    assert (result.returncode, result.stderr) == (0, "")
    python = f"{platform.python_implementation()} {platform.python_version()}"
    assert result.stdout == f"layer-sdk {__version__} (distribution layer-api-client, {python})\n"

    result = run_command(*command)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: layer-sdk [-h] [--version] COMMAND ...")
    for command_name in ("collector", "demo", "check"):
        assert f"\n    {command_name}" in result.stdout


@pytest.mark.parametrize("how", ["module", "script"])
@pytest.mark.parametrize("option", ["--sessions", "--threads"])
def test_demo_refuses_zero_with_a_message(how: str, option: str) -> None:
    command = [sys.executable, "-m", "layer_sdk"] if how == "module" else [console_script()]
    result = run_command(*command, "demo", option, "0")
    assert result.returncode == 2
    assert f"error: argument {option}: must be a positive integer, got 0" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_command(*command, "demo", option, "many")
    assert result.returncode == 2 and "must be a positive integer, got 'many'" in result.stderr


@pytest.mark.parametrize("how", ["module", "script"])
def test_demo_against_a_dead_port_says_why_at_once(how: str) -> None:
    command = [sys.executable, "-m", "layer_sdk"] if how == "module" else [console_script()]
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_command(*command, "demo", "--base-url", url, timeout=30)
    assert result.returncode == 1, result.stderr
    sending, failed, nothing = result.stdout.splitlines()
    assert sending == f"Sending a probe session to {url}/v1/sessions ..."
    assert failed.startswith(f"FAILED: nothing accepts connections at {url}: ")
    assert "Connection refused" in failed
    assert nothing == "Nothing was reported."
    assert "Traceback" not in result.stderr


def test_demo_stops_waiting_when_the_api_stops_taking_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from layer_sdk.cli._demo import demo

    def on_event(event: object) -> None:  # the probe is stored: from now on every request fails
        collector.fail_for(60, 503)

    collector = LocalCollector(on_event=on_event).start()
    try:
        assert demo(60, 2, collector.url, "layer-sdk-demo", stall=0.5) == 1
    finally:
        collector.stop()
    out = capsys.readouterr().out
    assert "Nothing was delivered for 0.5 s: stopping; what is still queued is lost." in out
    assert re.search(r"\n  dropped / failed +0 / 300\n", out), out
    assert re.search(r"\nLost 300 events:\n  shutdown +300  still queued when the client", out)
    assert out.splitlines()[-1] == "Some events were not delivered."


def test_every_loss_reason_has_an_explanation() -> None:
    from layer_sdk._export import _losses
    from layer_sdk.cli._demo import LOSS_EXPLANATIONS, loss_lines

    assert set(_losses.LOSS_REASONS) == set(LOSS_EXPLANATIONS)
    assert loss_lines({"queue_full": 1200, "rejected": 3, "too_large": 0}) == [
        "Lost 1,203 events:",
        "  queue_full      1,200  a tight loop outran the 50,000-event queue (max_queue_size):"
        " events came faster than the API took them",
        "  rejected            3  refused by the API with a 4xx answer (the log has its message)",
    ]


def test_a_long_demo_without_rich_prints_its_progress(collector: LocalCollector) -> None:
    collector.delay = 0.3  # 200 sessions, 32 at a time: two seconds at least
    command = [
        sys.executable,
        "-m",
        "layer_sdk",
        "demo",
        "--base-url",
        collector.url,
        "--sessions",
        "200",
        "--threads",
        "2",
    ]
    result = run_command(*command)
    assert result.returncode == 0, result.stdout + result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith("  ... ")]
    assert progress, result.stdout
    assert all(
        re.fullmatch(r"  \.\.\. [\d,]+ of 1,000 calls made, [\d,]+ events delivered", line)
        for line in progress
    )
    assert result.stdout.splitlines()[-1] == "OK: everything was delivered."


@pytest.mark.parametrize("how", ["module", "script"])
def test_check_as_a_user_runs_it(how: str, collector: LocalCollector) -> None:
    command = [sys.executable, "-m", "layer_sdk"] if how == "module" else [console_script()]
    result = run_command(*command, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-1] == "OK: this machine can report to Layer."
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_command(*command, "check", "--base-url", url, "--application-id", APP_ID)
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout.splitlines()[-1].startswith(
        f"FAILED: nothing accepts connections at {url}"
    )
