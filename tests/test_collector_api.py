"""The collector's page as files and JSON: its API, its event stream, its headers, its wheel.

What a browser does with them is in ``test_collector_page.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from layer_sdk.collector import LocalCollector

from .helpers import ROOT

APP = "app-1"
T0 = "2024-05-01T12:00:00Z"
T1 = "2024-05-01T12:00:00.250000Z"
JSON = {"Content-Type": "application/json"}
PAGE_FILES = ("index.html", "page.js", "page.css", "icon.svg")


def sid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def action(kind: str = "completion_prompt", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "start_time": T0, "end_time": T1, "attributes": {}, **fields}


def prompt(text: str) -> dict[str, Any]:
    return action(
        data={
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": text},
            ]
        }
    )


def request(
    collector: LocalCollector,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=10)
    try:
        data = None if body is None else body if isinstance(body, bytes) else json.dumps(body)
        conn.request(method, path, data, {**JSON, **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        found = {name.lower(): value for name, value in response.getheaders()}
        decoded = json.loads(raw) if found.get("content-type") == "application/json" else raw
        return response.status, found, decoded
    finally:
        conn.close()


def get(collector: LocalCollector, path: str) -> Any:
    status, _, body = request(collector, "GET", path)
    assert status == 200, (path, body)
    return body


@pytest.fixture
def collector() -> Iterator[LocalCollector]:
    with LocalCollector() as running:
        yield running


def create(collector: LocalCollector, name: str, **fields: Any) -> str:
    session_id = sid(name)
    body = {"application_id": APP, "session_id": session_id, **fields}
    assert request(collector, "POST", "/v1/sessions", body)[0] == 200
    return session_id


# -- the sessions --------------------------------------------------------------------------


def test_sessions_are_listed_newest_first_with_their_counts(collector: LocalCollector) -> None:
    first = create(collector, "first", attributes={"environment": "dev", "user.id": "u-1"})
    second = create(
        collector,
        "second",
        actions=[prompt("Which tours leave from Lisbon?"), action("completion_output")],
    )
    failing = action("completion_output", error={"message": "rate limited", "code": 429})
    assert request(collector, "POST", f"/v1/sessions/{second}/actions", failing)[0] == 202
    listing = get(collector, "/api/sessions")
    assert (listing["total"], listing["next"]) == (2, None)
    newest, oldest = listing["sessions"]
    assert (newest["session_id"], oldest["session_id"]) == (second, first)
    assert (newest["actions"], newest["failed"]) == (3, 1)
    assert newest["preview"] == "Which tours leave from Lisbon?"
    assert (oldest["actions"], oldest["failed"], oldest["preview"]) == (0, 0, None)
    assert oldest["environment"] == "dev"
    assert oldest["attributes"] == {"environment": "dev", "user.id": "u-1"}
    assert oldest["application_id"] == APP and oldest["stored_at"] > 1.7e9
    assert newest["cursor"] == 1 and oldest["cursor"] == 0


def test_sessions_are_read_a_page_at_a_time(collector: LocalCollector) -> None:
    made = [create(collector, f"paged-{n}") for n in range(7)]
    seen: list[str] = []
    path = "/api/sessions?limit=3"
    while True:
        listing = get(collector, path)
        assert listing["total"] == 7
        seen += [s["session_id"] for s in listing["sessions"]]
        if listing["next"] is None:
            break
        path = f"/api/sessions?limit=3&before={listing['next']}"
    assert seen == made[::-1]


def test_sessions_are_filtered_by_application_text_and_failure(collector: LocalCollector) -> None:
    plain = create(collector, "plain", attributes={"user.id": "Alice"})
    other = sid("other-app")
    body = {"application_id": "other", "session_id": other}
    assert request(collector, "POST", "/v1/sessions", body)[0] == 200
    failed = create(collector, "failed", actions=[action(error={"message": "boom"})])

    def ids(query: str) -> list[str]:
        listing = get(collector, f"/api/sessions?{query}")
        assert listing["total"] == len(listing["sessions"])
        return [s["session_id"] for s in listing["sessions"]]

    assert ids("application=other") == [other]
    assert ids("q=ALICE") == [plain]  # any case, in attribute values
    assert ids("q=user.id%3Dalice") == [plain]  # name=value
    assert ids(f"q={other[:13]}") == [other]  # in the session ID
    assert ids("failed=1") == [failed]
    assert ids(f"application={APP}&failed=1") == [failed]
    assert ids("q=nobody") == []


def test_one_session_with_its_actions_from_an_index_and_its_firewall_decision(
    collector: LocalCollector,
) -> None:
    session_id = create(collector, "detail", actions=[prompt(f"question {n}") for n in range(5)])
    detail = get(collector, f"/api/sessions/{session_id.upper()}")
    assert detail["session"]["session_id"] == session_id
    assert [a["data"]["messages"][1]["content"] for a in detail["actions"]] == [
        f"question {n}" for n in range(5)
    ]
    assert detail["from"] == 0
    assert detail["firewall"] == {"session_id": session_id, "decision": "no_data", "context": {}}
    later = get(collector, f"/api/sessions/{session_id}?from=3")
    assert (later["from"], len(later["actions"])) == (3, 2)
    assert later["actions"] == detail["actions"][3:]
    assert request(collector, "GET", f"/api/sessions/{sid('unknown')}")[0] == 404
    status, _, body = request(collector, "GET", f"/api/sessions/{session_id}?from=-1")
    assert (status, body) == (422, {"error": "from must be a whole number, got '-1' - at `from`"})


# -- firewall rehearsal --------------------------------------------------------------------


def test_the_page_sets_a_firewall_decision_as_set_firewall_decision_does(
    collector: LocalCollector,
) -> None:
    session_id = create(collector, "firewall")
    path = f"/api/sessions/{session_id}/firewall"
    status, _, answer = request(collector, "POST", path, {"decision": "block", "policy": "no-pii"})
    assert status == 200
    expected = {
        "session_id": session_id,
        "decision": "block",
        "context": {
            "violated_policies": [
                {"id": 1, "name": "no-pii", "severity": "high", "action": "block"}
            ]
        },
    }
    assert answer == expected
    # What the firewall's look-up answers from now on, and what the page reads back.
    assert get(collector, f"/v1/sessions/{session_id}") == expected
    assert get(collector, f"/api/sessions/{session_id}")["firewall"] == expected
    assert request(collector, "POST", path, {"decision": "pass"})[2]["context"] == {
        "violated_policies": []
    }


def test_a_firewall_decision_is_taken_only_from_the_page_itself(collector: LocalCollector) -> None:
    """A page of another site can POST a form to 127.0.0.1: such a request is not JSON, or
    carries its own Origin. Both are refused, and nothing is set."""
    session_id = create(collector, "csrf")
    path = f"/api/sessions/{session_id}/firewall"
    form = b"decision=block"
    plain = {"Content-Type": "text/plain"}
    assert request(collector, "POST", path, form, plain)[0] == 415
    evil = {"Origin": "http://evil.example"}
    status, _, body = request(collector, "POST", path, {"decision": "block"}, evil)
    assert status == 403 and "evil.example" in body["error"]
    own = {"Origin": f"http://127.0.0.1:{collector.port}"}
    assert request(collector, "POST", path, {"decision": "alert"}, own)[0] == 200
    assert get(collector, f"/v1/sessions/{session_id}")["decision"] == "alert"


def test_a_firewall_decision_is_checked(collector: LocalCollector) -> None:
    path = f"/api/sessions/{sid('checked')}/firewall"
    status, _, body = request(collector, "POST", path, {"decision": "BLOCK"})
    assert status == 422 and body["error"].endswith("- at `$.decision`")
    status, _, body = request(collector, "POST", path, {"decision": "block", "why": 1})
    assert (status, body["error"]) == (422, "Object contains unknown field `why`")
    status, _, body = request(
        collector, "POST", "/api/sessions/not-a-uuid/firewall", {"decision": "block"}
    )
    assert (status, body["error"]) == (422, "'not-a-uuid' is not a UUID - at `session_id`")
    assert request(collector, "GET", path)[0] == 405


# -- refusals and totals -------------------------------------------------------------------


def test_refusals_show_each_4xx_with_the_field_path_and_no_header(
    collector: LocalCollector,
) -> None:
    session_id = create(collector, "refusals")
    wrong = {**action(), "error": {"message": "x", "code": "429"}}
    body = {"application_id": APP, "actions": [wrong]}
    secret = {"Authorization": "Bearer sk-secret-1234"}
    assert request(collector, "POST", "/v1/sessions", body, secret)[0] == 422
    assert request(collector, "POST", f"/v1/sessions/{sid('nobody')}/actions", action())[0] == 404
    assert request(collector, "POST", f"/v1/sessions/{session_id}/actions", action())[0] == 202
    listing = get(collector, "/api/refusals")
    assert listing["total"] == 2
    missing, invalid = listing["refusals"]  # newest first
    assert (invalid["status"], invalid["method"], invalid["path"]) == (422, "POST", "/v1/sessions")
    assert invalid["field"] == "$.actions[0].error.code"
    assert invalid["message"] == "Expected `int | null`, got `str` - at `$.actions[0].error.code`"
    assert json.loads(invalid["body"]) == body and invalid["body_bytes"] == len(json.dumps(body))
    assert (missing["status"], missing["field"]) == (404, None)
    assert "sk-secret" not in json.dumps(listing)
    assert get(collector, "/api/refusals?limit=1")["refusals"] == [missing]


def test_totals(collector: LocalCollector) -> None:
    session_id = create(collector, "totals", actions=[prompt("hi"), action("embeddings")])
    failing = action("completion_output", error={"message": "boom"})
    headers = {"X-Request-Id": "r-1"}
    for _ in range(2):  # the second is answered again from its X-Request-Id
        assert (
            request(collector, "POST", f"/v1/sessions/{session_id}/actions", failing, headers)[0]
            == 202
        )
    assert request(collector, "POST", "/v1/sessions", {"application_id": 1})[0] == 422
    expected = {
        "sessions": 1,
        "actions": 3,
        "actions_by_kind": {"completion_prompt": 1, "embeddings": 1, "completion_output": 1},
        "failed_actions": 1,
        "requests": 4,
        "refused": 1,
        "duplicates": 1,
        "applications": {APP: 1},
    }
    assert get(collector, "/api/totals") == collector.totals() == expected


# -- the live stream -----------------------------------------------------------------------


class EventStream:
    """``GET /api/events`` read as a browser's EventSource would: one event at a time."""

    def __init__(self, collector: LocalCollector) -> None:
        self.sock = socket.create_connection(("127.0.0.1", collector.port), timeout=5)
        self.sock.sendall(
            b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n\r\n"
            % collector.port
        )
        self.buffer = b""
        head = self._until(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        assert self._until(b"\n\n") == b"retry: 1000"

    def _until(self, separator: bytes) -> bytes:
        while separator not in self.buffer:
            data = self.sock.recv(65536)
            assert data, "the stream ended"
            self.buffer += data
        part, self.buffer = self.buffer.split(separator, 1)
        return part

    def next(self) -> tuple[str, Any]:
        lines = self._until(b"\n\n").decode().split("\n")
        fields = dict(line.split(": ", 1) for line in lines)
        return fields["event"], json.loads(fields["data"])

    def close(self) -> None:
        self.sock.close()


def test_the_event_stream_tells_of_sessions_actions_refusals_and_decisions(
    collector: LocalCollector,
) -> None:
    stream = EventStream(collector)
    try:
        assert stream.head.startswith("HTTP/1.1 200 OK\r\n")
        assert "Content-Type: text/event-stream" in stream.head
        assert "Content-Length" not in stream.head
        session_id = create(collector, "live", actions=[prompt("hello")])
        kind, summary = stream.next()
        assert (kind, summary["session_id"], summary["actions"]) == ("session", session_id, 1)
        assert summary["preview"] == "hello"
        assert stream.next() == (
            "action",
            {
                "session_id": session_id,
                "actions": 1,
                "kind": "completion_prompt",
                "failed": False,
                "preview": "hello",
            },
        )
        failing = action("completion_output", error={"message": "boom\nline two"})
        assert request(collector, "POST", f"/v1/sessions/{session_id}/actions", failing)[0] == 202
        assert stream.next() == (
            "action",
            {
                "session_id": session_id,
                "actions": 2,
                "kind": "completion_output",
                "failed": True,
                "preview": None,  # not a prompt
            },
        )
        assert request(collector, "POST", "/v1/sessions", {"application_id": ""})[0] == 422
        kind, refusal = stream.next()
        assert (kind, refusal["status"], refusal["field"]) == ("refusal", 422, "$.application_id")
        collector.set_firewall_decision(session_id, "block")
        kind, decision = stream.next()
        assert (kind, decision["decision"]) == ("firewall", "block")
        collector.clear()
        assert stream.next() == ("clear", {})
    finally:
        stream.close()
    assert collector.requests == []  # the page's own requests are not the Layer API's


def test_a_page_that_stops_reading_its_stream_is_cut_off(collector: LocalCollector) -> None:
    """The collector holds a few MB at most for a page that does not read what it is
    told (a frozen tab): past that the stream is closed (the page reconnects and reads
    afresh), and the collector goes on storing."""
    stream = EventStream(collector)
    try:
        big = {"text": "x" * 200_000}
        for n in range(200):  # 40 MB of messages, none read
            create(collector, f"unread-{n}", attributes=big)
        received = 0
        stream.sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while data := stream.sock.recv(1 << 20):
                received += len(data)
        assert received < 30_000_000  # the end came before everything was sent
    finally:
        stream.close()
    assert collector.totals()["sessions"] == 200


def test_the_page_is_answered_past_the_faults_and_unrecorded(collector: LocalCollector) -> None:
    """Faults rehearse the Layer API: the page keeps working while they are set."""
    collector.fail_next(1, 503)
    collector.delay = 5
    assert get(collector, "/api/totals")["requests"] == 0
    assert request(collector, "GET", "/")[0] == 200
    assert collector.requests == []
    collector.delay = 0
    assert request(collector, "POST", "/v1/sessions", {"application_id": APP})[0] == 503


# -- the files -----------------------------------------------------------------------------


def test_the_page_is_served_with_a_strict_content_security_policy(
    collector: LocalCollector,
) -> None:
    status, headers, page = request(collector, "GET", "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    policy = headers["content-security-policy"]
    assert "script-src 'self';" in policy and "default-src 'none'" in policy
    assert "unsafe" not in policy and "frame-ancestors 'none'" in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert b'<script src="/static/page.js" defer></script>' in page
    for name, media_type in (("page.js", "text/javascript"), ("page.css", "text/css")):
        status, headers, _ = request(collector, "GET", f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(media_type)
        assert "content-security-policy" in headers
    assert request(collector, "GET", "/static/secrets.txt")[0] == 404
    assert request(collector, "GET", "/static/../__init__.py")[0] == 404
    assert request(collector, "GET", "/api/nothing")[0] == 404
    assert request(collector, "POST", "/api/sessions")[0] == 405


def test_the_page_has_no_inline_script_and_never_parses_data_as_html() -> None:
    """What the policy forbids is not in the files either (an inline handler, a style
    attribute); and no script API that parses a string as HTML or code is called."""
    folder = ROOT / "layer_sdk" / "collector" / "page"
    html = (folder / "index.html").read_text()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="/static/page.js" defer>']
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html
    script = (folder / "page.js").read_text()
    for banned in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
    ):
        assert banned not in script, banned
    assert 'setTimeout("' not in script and 'setAttribute("on' not in script


def test_a_built_wheel_ships_the_page(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as built:
        names = set(built.namelist())
        for name in PAGE_FILES:
            path = f"layer_sdk/collector/page/{name}"
            assert path in names, path
            assert built.read(path) == (ROOT / path).read_bytes()
