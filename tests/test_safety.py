"""``on_drop`` and echoed secrets.

``on_drop`` is user code that may log through a handler reporting to Layer,
raise, or call ``flush()``: it must never hang, crash or stall anything. Text
that servers echo back (an error body quoting the Authorization header, an
identity provider quoting the form) must reach no exception, log line or repr
with a token or secret in it. The servers here are real (the local collector,
and the echo servers of ``tests/echo_servers.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from layer_sdk import (
    AuthProvider,
    Client,
    LayerAuthError,
    LayerHTTPError,
    LayerRequestError,
    LayerSDKException,
    OIDCClientCredentials,
)
from layer_sdk._config import Config
from layer_sdk._export import _losses
from layer_sdk.collector import LocalCollector

from .echo_servers import (
    EchoingAPI,
    EchoingTokenEndpoint,
    StaticToken,
    captured_from,
    leaks,
    odd_secret,
)
from .helpers import (
    APP_ID,
    FAST,
    PROMPT,
    MakeClient,
    ReportingHandler,
    closed_port,
    held_by_another_thread,
    in_multiprocessing_child,
    run_python,
    wait_until,
)
from .oidc_provider import OIDCProvider, oidc

__all__ = ["oidc"]  # the fixture, imported so that pytest finds it

#: How long a call that must return may take, at most, on a busy machine.
RETURNS_WITHIN = 20.0


def returns_within(call: Callable[[], object], seconds: float = RETURNS_WITHIN) -> list[str]:
    """Run ``call`` on a thread; fails unless it returns in time. The exceptions it raised."""
    raised: list[str] = []
    done = threading.Event()

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised.append(f"{type(exc).__name__}: {exc}"[:200])
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), f"the call did not return within {seconds} s"
    return raised


@pytest.fixture
def app_logger() -> Iterator[logging.Logger]:
    """The application's logger; handlers added to it or to the SDK's are removed afterwards."""
    logger = logging.getLogger("tests.safety.app")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    sdk_logger = logging.getLogger("layer_sdk")
    sdk_handlers = list(sdk_logger.handlers)
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    for handler in list(sdk_logger.handlers):
        if handler not in sdk_handlers:
            sdk_logger.removeHandler(handler)


def sdk_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "layer_sdk"]


# -- on_drop ------------------------------------------------------------------------------


def test_on_drop_that_logs_to_a_reporting_handler_returns_with_exact_counts(
    make_client: MakeClient,
    collector: LocalCollector,
    app_logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full queue, a handler that reports to Layer, an
    on_drop that logs: every log call returns, the drops are counted exactly, the
    log stays short."""
    monkeypatch.setattr(_losses, "LOSS_LOG_INTERVAL", 3600.0)  # however slow the machine
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    told: list[tuple[str, int, str]] = []

    def on_drop(reason: str, count: int) -> None:
        told.append((reason, count, threading.current_thread().name))
        app_logger.info("layer-sdk dropped %d event(s): %s", count, reason)

    collector.hang()
    client = make_client(max_queue_size=1, on_drop=on_drop)
    session_id = client.create_session()  # the queue is full from now on
    handler = ReportingHandler(client, session_id)
    app_logger.addHandler(handler)

    def log_a_hundred_lines() -> None:
        for n in range(100):
            app_logger.info("request %d handled", n)

    assert returns_within(log_a_hundred_lines) == []
    assert handler.errors == []  # append_action raised nothing into the logging call

    # Each line drops its action; on_drop's own line drops one more, counted but not told.
    stats = client.stats()
    assert (stats.dropped, stats.dropped_by_reason) == (200, {"queue_full": 200})
    assert [(reason, count) for reason, count, _ in told] == [("queue_full", 1)] * 100
    [caller] = {name for _, _, name in told}
    assert not caller.startswith("layer-sdk")  # told on the caller's thread, synchronously
    assert handler.emitted == 200
    assert len(sdk_records(caplog)) == 1  # one loss line; the rest add up for the next


def test_on_drop_that_raises_never_escapes_and_is_logged_throttled(
    make_client: MakeClient,
    collector: LocalCollector,
    app_logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An on_drop that raises, with a handler reporting the
    SDK's own log to Layer: no RecursionError out of logging.info(), and 20,000 drops
    cost two log lines, not one per drop."""
    monkeypatch.setattr(_losses, "LOSS_LOG_INTERVAL", 3600.0)  # however slow the machine
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    calls = 0

    def on_drop(reason: str, count: int) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug in the application's callback")

    collector.hang()
    client = make_client(max_queue_size=1, on_drop=on_drop)
    session_id = client.create_session()
    handler = ReportingHandler(client, session_id)
    app_logger.addHandler(handler)
    logging.getLogger("layer_sdk").addHandler(handler)

    assert returns_within(lambda: app_logger.info("request handled")) == []

    def drop_twenty_thousand() -> None:
        for n in range(20_000):
            client.append_action(session_id, kind=PROMPT, data={"n": n})

    assert returns_within(drop_twenty_thousand) == []
    assert handler.errors == []  # append_action raised nothing into the logging calls

    # The app's line and 20,000 actions were told; the SDK's error line and loss
    # line, reported by the handler while telling, were dropped and counted only.
    assert calls == 20_001
    assert client.stats().dropped == 20_003
    lines = [(record.levelname, record.getMessage()) for record in sdk_records(caplog)]
    assert lines == [
        ("ERROR", "layer-sdk's on_drop callback raised (1 time(s) since the last report)"),
        # the app's line, and the error line's own drop, added to the first loss line
        ("WARNING", "layer-sdk lost 2 event(s): queue_full"),
    ]
    assert "a bug in the application's callback" in caplog.text  # with its traceback


def test_on_drop_that_flushes_does_not_stall_delivery(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """An on_drop that calls flush() for a
    loss the worker found (a 400) runs on a notifier, and the only sender goes on
    delivering meanwhile."""
    told: list[tuple[str, int, str]] = []
    client: Client | None = None

    def on_drop(reason: str, count: int) -> None:
        told.append((reason, count, threading.current_thread().name))
        assert client is not None
        client.flush(timeout=30)  # waits for the senders: must not run on one

    client = make_client(on_drop=on_drop, max_concurrent_requests=1, flush_interval=30.0)
    collector.fail_next(1, status=400)
    client.create_session()  # rejected
    others = [client.create_session() for _ in range(5)]
    client.flush(timeout=0)  # make the batch due now

    delivered = collector.wait_for(
        lambda c: all(c.session(sid) is not None for sid in others), timeout=10
    )
    assert delivered, "the on_drop callback's flush() stalled the only sender"
    assert wait_until(lambda: told)
    assert told == [("rejected", 1, "layer-sdk-on-drop")]
    assert wait_until(lambda: client.stats().sent == 5)
    assert client.stats().failed_by_reason == {"rejected": 1}


def test_losses_found_by_senders_are_told_summed_per_reason(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """What waits for a slow callback is one count per
    reason, so a burst of losses costs bounded memory and every event is told."""
    first_call = threading.Event()
    carry_on = threading.Event()
    told: list[tuple[str, int]] = []

    def on_drop(reason: str, count: int) -> None:
        told.append((reason, count))
        first_call.set()
        carry_on.wait(10)

    client = make_client(on_drop=on_drop, max_concurrent_requests=4)
    collector.fail_next(1, status=400)
    client.create_session()
    assert first_call.wait(10)  # the notifier is busy in the callback from now on
    collector.fail_next(30, status=400)
    for _ in range(30):
        client.create_session()
    assert wait_until(lambda: client.stats().failed == 31)
    exporter = client._exporter
    assert exporter is not None
    assert exporter.losses._pending == {"rejected": 30}
    carry_on.set()
    assert wait_until(lambda: sum(count for _, count in told) == 31)
    assert told == [("rejected", 1), ("rejected", 30)]


def test_losses_found_by_the_exit_drain_are_told_before_the_process_ends(
    collector: LocalCollector,
) -> None:
    """No notifier thread is relied on while the interpreter
    exits; the loss found by the exit drain is told on the sender the drain waits for."""
    collector.fail_next(1, status=400)
    script = """
import secrets
import threading
from layer_sdk import layer

def on_drop(reason, count):
    print("ON_DROP", reason, count, threading.current_thread().name, flush=True)

layer.init(on_drop=on_drop, flush_interval=60.0, shutdown_timeout=5.0)
layer.create_session()  # sent only by the exit drain
"""
    result = run_python(
        script, env={"LAYER_BASE_URL": collector.url, "LAYER_APPLICATION_ID": APP_ID}
    )
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert line.startswith("ON_DROP rejected 1 layer-sdk-sender-")


def _late_call_in_child(client: Client, told: list[tuple[str, int]]) -> dict[str, Any]:
    client.create_session()  # after shutdown: dropped at the door, and told
    return {"told": told, "dropped": client.stats().dropped_by_reason}


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_tells_of_losses_with_fresh_locks(make_client: MakeClient) -> None:
    """A child never waits for a loss-log lock a parent
    thread held when it forked."""
    told: list[tuple[str, int]] = []
    client = make_client(on_drop=lambda reason, count: told.append((reason, count)))
    client.shutdown(timeout=2)
    exporter = client._exporter
    assert exporter is not None
    with held_by_another_thread(exporter.losses._lock):
        code, report = in_multiprocessing_child(_late_call_in_child, client, told)
    assert code == 0, "the child hung on the loss log's lock"
    assert report == {"told": [("shutdown", 1)], "dropped": {"shutdown": 1}}


# -- secrets echoed by the Layer API --------------------------------------------------------


@pytest.mark.parametrize("shape", ["json", "text", "bare"])
def test_an_api_echoing_the_authorization_header_leaks_nothing_on_the_sync_path(
    make_client: MakeClient, shape: str
) -> None:
    """An error body quoting our Authorization header reaches the
    exception text, .message and .response_data with the token masked: by what tokens
    look like (json, text: the provider does not declare its token), or by the value
    the provider declares (bare: nothing else tells it is a token)."""
    token = odd_secret("tok")
    with EchoingAPI(shape) as api:
        client = make_client(
            base_url=api.url, auth_provider=StaticToken(token, declared=shape == "bare")
        )
        with pytest.raises(LayerHTTPError) as raised:
            client.create_session(sync=True)
        assert api.echoed(token)  # the server did quote it

    error = raised.value
    assert error.status_code == 400
    seen = [
        str(error),
        repr(error),
        error.message,
        repr(error.response_data),
        "".join(traceback.format_exception(error)),
    ]
    assert leaks(token, *seen) == []
    assert "<redacted>" in str(error) + repr(error.response_data)


@pytest.mark.parametrize("shape", ["json", "text", "bare"])
def test_an_api_echoing_the_authorization_header_leaks_nothing_to_the_log(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    """The retry (503) and loss (400) log lines
    carry the server's words with the token masked (shapes as on the sync path)."""
    caplog.set_level(logging.DEBUG, logger="layer_sdk")
    token = odd_secret("tok")
    with EchoingAPI(shape, statuses=iter([503])) as api:
        client = make_client(
            base_url=api.url,
            auth_provider=StaticToken(token, declared=shape == "bare"),
        )
        client.create_session()
        assert client.flush(timeout=10) is False
        assert api.echoed(token)

    text = caplog.text + "".join(repr(record.args) for record in caplog.records)
    assert "answered 503" in text and "answered 400" in text  # the lines are there...
    assert leaks(token, text) == []  # ...without the token
    assert "<redact" in text  # masked where it stood (the words may be cut short there)


# -- refusals that quote the refused data ---------------------------------------------------

#: A prompt with personal data at both ends of 60,000 characters.
PERSONAL = "Patient Jane Roe, born 1970-01-02, SSN 078-05-1120. "
CARD = " Card 4111 1111 1111 1111."
PROMPT_TEXT = PERSONAL + "lorem ipsum dolor " * 3_333 + CARD
PERSONAL_BITS = ["Jane", "Roe", "1970", "078-05", "1120", "4111"]


@pytest.mark.parametrize(
    "answer",
    [
        # The refused prompt quoted as is, inside the server's message.
        {"error": f"invalid prompt: {PROMPT_TEXT}"},
        # As pydantic (FastAPI) refuses: the refused input beside the field path.
        {
            "detail": [
                {
                    "type": "string_too_long",
                    "loc": ["body", "data", "messages", 0, "content"],
                    "msg": "String should have at most 50000 characters",
                    "input": PROMPT_TEXT,
                }
            ]
        },
        # Quoted, in a repr.
        {"message": f"value {PROMPT_TEXT[:40]!r} is not allowed at $.data.messages[0].content"},
    ],
    ids=["echo", "pydantic", "short-quote"],
)
def test_a_refusal_quoting_the_refused_prompt_is_logged_without_it(
    make_client: MakeClient,
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    answer: dict[str, Any],
) -> None:
    """The loss line says the status and a short cut of the server's words, never the
    data it refused."""
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    client = make_client()
    session_id = client.create_session()
    assert client.flush(5)
    collector.fail_next(1, 422, body=json.dumps(answer).encode(), matching=b"Jane")
    client.append_action(
        session_id, kind=PROMPT, data={"messages": [{"role": "user", "content": PROMPT_TEXT}]}
    )
    assert client.flush(5) is False
    assert wait_until(lambda: "lost 1 event(s): rejected" in caplog.text)  # logged by a sender
    lines = [r.getMessage() for r in caplog.records if r.name == "layer_sdk"]
    assert len(lines) == 1, lines
    line = lines[0]
    assert f"/v1/sessions/{session_id}/actions answered 422" in line
    assert len(line) < 400
    assert [bit for bit in PERSONAL_BITS if bit in line] == []


def test_a_refusal_keeps_the_servers_words_and_field_path(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    client = make_client()
    session_id = client.create_session()
    assert client.flush(5)
    message = "Expected `object`, got `array` - at `$.data.tools`"
    collector.fail_next(1, 422, body=json.dumps({"error": message}).encode())
    client.append_action(session_id, kind=PROMPT, data={"messages": [PROMPT_TEXT[:100]]})
    assert client.flush(5) is False
    assert wait_until(lambda: f"answered 422: {message})" in caplog.text), caplog.text


def test_a_long_refusal_is_cut_to_its_head_and_tail(
    make_client: MakeClient, collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    client = make_client()
    session_id = client.create_session()
    assert client.flush(5)
    rules = "; ".join(f"rule {i} broken" for i in range(500))
    message = f"validation failed: {rules} - at `$.data.tools`"
    collector.fail_next(1, 422, body=json.dumps({"error": message}).encode())
    client.append_action(session_id, kind=PROMPT, data={"messages": ["hello"]})
    assert client.flush(5) is False
    assert wait_until(lambda: "answered 422: validation failed: rule 0 broken" in caplog.text)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "layer_sdk"]
    assert len(line) < 400 and "characters cut]" in line
    assert line.endswith("rule 499 broken - at `$.data.tools`)")


#: What a server may quote of a refused create's attributes, and the bits of it no log line
#: may hold, in any case.
QUOTED = "Jane Q. Doe, SSN 123-45-6789, lives at 42 Wallaby Way"
QUOTED_BITS = ["jane", "doe", "123-", "6789", "-45-", "lives", "at 42", "wallaby", "allaby", "q. d"]


def quoting(shape: str) -> Callable[[int, bytes, bytes], Any]:
    """A front whose every answer is a 503 that quotes the request: its body as is, its
    body upper-cased, or the start of the quoted text cut mid-word."""
    from .front_server import Act, raw_answer

    def act(n: int, head: bytes, body: bytes) -> Act:
        text = body.decode()
        if shape == "upper":
            text = text.upper()
        elif shape == "cut":
            text = f"value '{text[text.find('Jane') :][:9]}…' too long"
        return Act(answer=raw_answer(503, json.dumps({"error": f"cannot accept {text}"}).encode()))

    return act


@pytest.mark.parametrize("shape", ["as-is", "upper", "cut"])
def test_no_log_line_at_any_level_holds_what_a_server_quoted_of_the_events(
    collector: LocalCollector,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    """Every answer is a 503 that quotes the request (as is, upper-cased, or cut mid-word).
    The requests are retried, the API is taken as unreachable, and the client is shut down
    while senders wait for their turn: the trouble lines, the debug line of each attempt
    (debug=True) and the loss lines (of the events given up at shutdown, and of one
    offered after it, with the last error) each say the status and the server's own
    words, never a bit of the quote."""
    from layer_sdk import Client

    from .front_server import Front

    monkeypatch.setattr(_losses, "LOSS_LOG_INTERVAL", 0.0)  # every loss line is written
    caplog.set_level(logging.DEBUG, logger="layer_sdk")
    front = Front(collector, quoting(shape))
    client = Client()
    try:
        client.init(base_url=front.url, application_id=APP_ID, debug=True, **FAST)
        for _ in range(5):
            client.create_session(attributes={"user": QUOTED})
        gate = client._exporter.transport.gate  # type: ignore[union-attr]
        # Unreachable, with two senders waiting in the gate for their turn to probe: one at
        # least is still waiting when the gate closes (one probe at a time leaves it).
        assert wait_until(lambda: len(gate._changed._waiters) >= 2, timeout=15)  # type: ignore[attr-defined]
        client.shutdown(timeout=0.5)
        # The senders that waited in the gate give up on their requests as they exit.
        senders = client._exporter.worker._senders  # type: ignore[union-attr]
        assert wait_until(lambda: not any(sender.is_alive() for sender in senders))
        client.create_session(attributes={"user": QUOTED})  # refused at the closed door
    finally:
        front.close()
    lines = [record.getMessage() for record in caplog.records if record.name == "layer_sdk"]
    assert any("answered 503 (cannot accept" in line for line in lines)
    assert any("; retry " in line for line in lines)  # the debug lines
    assert any("gave up: the client is shutting down; last error:" in line for line in lines)
    for line in lines:
        assert [bit for bit in QUOTED_BITS if bit in line.casefold()] == [], line
    if shape == "cut":
        assert any("cannot accept value '…' too long" in line for line in lines)


def test_a_malformed_answer_quoting_the_events_is_not_quoted_in_the_log(
    collector: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """An answer whose head is broken by a piece of the request's body: the error names
    the bad line, and the log (the trouble line, the debug lines, the loss line) masks the
    events' data in it."""
    from layer_sdk import Client

    from .front_server import Act, Front

    def act(n: int, head: bytes, body: bytes) -> Act:
        piece = body[body.find(b"Jane") :]
        return Act(answer=b"HTTP/1.1 503 X\r\n" + piece + b"\r\nContent-Length: 0\r\n\r\n")

    caplog.set_level(logging.DEBUG, logger="layer_sdk")
    front = Front(collector, act)
    client = Client()
    try:
        client.init(
            base_url=front.url, application_id=APP_ID, debug=True, **{**FAST, "max_retry_time": 1}
        )
        client.create_session(attributes={"user": QUOTED})
        assert wait_until(lambda: "retries_exhausted" in caplog.text, timeout=15)
        client.shutdown(timeout=0.5)
    finally:
        front.close()
    lines = [record.getMessage() for record in caplog.records if record.name == "layer_sdk"]
    assert any("invalid header line" in line for line in lines)
    for line in lines:
        assert [bit for bit in QUOTED_BITS if bit in line.casefold()] == [], line


# -- secrets echoed by the token endpoint ---------------------------------------------------


@pytest.mark.parametrize("shape", ["form", "value", "lower_hex", "json", "reason", "transient"])
def test_a_token_endpoint_echoing_the_client_secret_leaks_nothing(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, shape: str
) -> None:
    """The client secret echoed raw, form- or
    percent-encoded, as JSON or in the reason phrase reaches neither the exception
    (sync) nor the log (the worker), yet the provider's words do."""
    caplog.set_level(logging.DEBUG, logger="layer_sdk")
    secret = odd_secret("cs")
    with EchoingTokenEndpoint(shape) as endpoint:
        auth = OIDCClientCredentials(f"{endpoint.url}/token", "layer-sdk", secret, http_timeout=5.0)
        expected = LayerRequestError if shape == "transient" else LayerAuthError
        with pytest.raises(expected) as raised:
            auth.get_headers()
        assert endpoint.echoed(secret)

        client = make_client(auth_provider=auth, max_retry_time=1.0)
        client.create_session()  # the worker meets the same answer
        logged = "no credentials" if expected is LayerAuthError else "lost 1 event"
        assert wait_until(lambda: logged in caplog.text)
        client.shutdown(timeout=1)

    message = str(raised.value)
    assert ("Bad secret" if shape == "reason" else "invalid_client") in message
    text = caplog.text + "".join(repr(record.args) for record in caplog.records)
    assert leaks(secret, message, repr(raised.value), text) == []


# -- secrets in the frames of a raised exception ------------------------------------------
#
# Error trackers capture the local variables of every frame of an exception's traceback
# (sentry-sdk does by default): what those frames hold leaves the process.


@pytest.mark.parametrize("answer", ["refused", "echoed refusal", "unavailable", "down"])
def test_no_client_secret_is_reachable_from_a_failed_token_fetch(
    oidc: Callable[..., OIDCProvider], make_client: MakeClient, answer: str
) -> None:
    """A token fetch refused (the real provider: 401 for a wrong secret; an endpoint that
    quotes the form back), failing (503) or unreachable: neither the exception of the
    sync call nor of get_headers() holds the client secret anywhere an error tracker
    looks, yet what they say of the failure is there."""
    with contextlib.ExitStack() as stack:
        if answer in ("refused", "down"):
            provider = oidc()
            secret = provider.client_secret + ("-wrong" if answer == "refused" else "")
            token_url, client_id = provider.token_url, provider.client_id
            if answer == "down":
                provider.stop()
        else:
            endpoint = stack.enter_context(
                EchoingTokenEndpoint("form" if answer == "echoed refusal" else "transient")
            )
            secret, token_url, client_id = odd_secret("cs"), f"{endpoint.url}/token", "layer-sdk"
        auth = OIDCClientCredentials(token_url, client_id, secret, http_timeout=5.0)
        client = make_client(auth_provider=auth, max_retries=0)
        raised = []
        for call in (lambda: client.create_session(sync=True), auth.get_headers):
            with pytest.raises((LayerAuthError, LayerRequestError)) as failure:
                call()
            raised.append(failure.value)
    said = {"refused": "invalid_client", "echoed refusal": "invalid_client"}.get(answer, "token")
    for exc in raised:
        captured = captured_from(exc)
        assert leaks(secret, *captured) == []
        assert any(said in text for text in captured)


@pytest.mark.parametrize("call", ["create_session", "append_action", "firewall", "applications"])
def test_no_bearer_token_is_reachable_from_the_exception_of_an_api_echoing_it(
    oidc: Callable[..., OIDCProvider], make_client: MakeClient, call: str
) -> None:
    """An API that quotes our Authorization header in its refusal: the exception of a
    sync call, firewall_session_lookup or list_applications holds the real provider's
    token nowhere an error tracker looks (not in the frames that sent it, nor in those
    that read the raw answer), yet the refusal is there."""
    provider = oidc()
    auth = OIDCClientCredentials(
        provider.token_url, provider.client_id, provider.client_secret, http_timeout=5.0
    )
    with EchoingAPI("json") as api:
        client = make_client(
            base_url=api.url, firewall_base_url=api.url, auth_provider=auth, max_retries=0
        )
        calls: dict[str, Callable[[], object]] = {
            "create_session": lambda: client.create_session(sync=True),
            "append_action": lambda: client.append_action(
                client.create_session(), kind=PROMPT, data={"n": 1}, sync=True
            ),
            "firewall": lambda: client.firewall_session_lookup(APP_ID),
            "applications": client.list_applications,
        }
        with pytest.raises(LayerSDKException) as raised:
            calls[call]()
        [token] = provider.issued()
        assert api.echoed(token)
    captured = captured_from(raised.value)
    assert leaks(token, *captured) == []
    assert any("request refused" in text for text in captured)


class TokenExpiredError(Exception):
    """What an ``OAuth2Session`` raises (oauthlib's): no ``requests`` exception."""


class ExpiringSession(requests.Session):
    """A user's ``http_session`` that raises ``failure`` (``TokenExpiredError`` unless
    told), quoting the request's bearer token, for its first ``failures`` posts; then sends
    as usual."""

    def __init__(self, failures: int, failure: type[Exception] = TokenExpiredError) -> None:
        super().__init__()
        self.failures = failures
        self.failure = failure

    def post(self, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if self.failures > 0:
            self.failures -= 1
            authorization = kwargs["headers"]["Authorization"]
            raise self.failure(f"token {authorization.partition(' ')[2]} expired")
        return super().post(url, *args, **kwargs)


@pytest.mark.parametrize("failure", [TokenExpiredError, requests.ConnectionError])
@pytest.mark.parametrize("declared", [True, False])
def test_a_users_session_raising_fails_the_sync_call_as_a_request_error(
    oidc: Callable[..., OIDCProvider],
    make_client: MakeClient,
    declared: bool,
    failure: type[Exception],
) -> None:
    """A user's session that raises, ``requests``' exception or one of its own: the sync
    call raises ``LayerRequestError`` naming it, and holds the token nowhere an error
    tracker looks (not in the frames that sent the headers, nor in a chained exception),
    whether or not the auth provider declares its token (the real OIDC provider does; a
    user's own may not)."""
    if declared:
        provider = oidc()
        auth: AuthProvider = OIDCClientCredentials(
            provider.token_url, provider.client_id, provider.client_secret, http_timeout=5.0
        )
    else:
        auth = StaticToken(odd_secret("tok"), declared=False)
    client = make_client(auth_provider=auth, http_session=ExpiringSession(1, failure))
    with pytest.raises(LayerRequestError) as raised:
        client.create_session(sync=True)
    [token] = provider.issued() if declared else [auth.token]  # type: ignore[attr-defined]
    assert type(raised.value) is LayerRequestError
    assert f"{failure.__name__}: token <redacted> expired" in str(raised.value)
    assert leaks(token, *captured_from(raised.value)) == []


def test_a_users_session_raising_its_own_exception_is_a_failure_to_reach_the_api_when_buffered(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Buffered, that failure is no bug of ours: it is counted and logged as a connection
    error would be with a user's session (which retries on its own: the SDK adds no retry),
    never as ``internal_error`` with a traceback; and the token is in no log line."""
    caplog.set_level(logging.DEBUG, logger="layer_sdk")
    token = odd_secret("tok")
    client = make_client(
        auth_provider=StaticToken(token, declared=False), http_session=ExpiringSession(failures=1)
    )
    client.create_session()
    assert client.flush(10) is False
    assert client.stats().failed_by_reason == {"retries_exhausted": 1}
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert "retries_exhausted (could not reach the Layer API: TokenExpiredError: token" in (
        caplog.text
    )
    assert leaks(token, caplog.text, *(repr(r.args) for r in caplog.records)) == []


@pytest.mark.parametrize("call", ["create_session", "firewall"])
def test_no_bearer_token_is_reachable_from_the_exception_of_an_unreachable_api(
    oidc: Callable[..., OIDCProvider], make_client: MakeClient, call: str
) -> None:
    """The SDK's own client meeting a refused connection: the sync call's exception chains
    no failure whose frames held the headers sent (the token among them)."""
    provider = oidc()
    auth = OIDCClientCredentials(
        provider.token_url, provider.client_id, provider.client_secret, http_timeout=5.0
    )
    down = f"http://127.0.0.1:{closed_port()}"
    client = make_client(base_url=down, firewall_base_url=down, auth_provider=auth, max_retries=0)
    calls: dict[str, Callable[[], object]] = {
        "create_session": lambda: client.create_session(sync=True),
        "firewall": lambda: client.firewall_session_lookup(APP_ID),
    }
    with pytest.raises(LayerSDKException) as raised:
        calls[call]()
    [token] = provider.issued()
    captured = captured_from(raised.value)
    assert leaks(token, *captured) == []
    assert any("Connection refused" in text for text in captured)


def test_the_token_of_a_users_own_provider_echoed_bare_is_masked(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A user's own ``AuthProvider`` that declares no secrets, and an API quoting its bare
    token (no name, no scheme beside it): the transport masks the header values it sent,
    in the sync call's exception and in the loss line."""
    caplog.set_level(logging.DEBUG, logger="layer_sdk")
    token = odd_secret("tok")
    with EchoingAPI("bare") as api:
        client = make_client(base_url=api.url, auth_provider=StaticToken(token, declared=False))
        with pytest.raises(LayerHTTPError) as raised:
            client.create_session(sync=True)
        client.create_session()
        assert client.flush(10) is False
        assert api.echoed(token)
    assert raised.value.message == "<redacted> is not valid for this application"
    assert leaks(token, *captured_from(raised.value)) == []
    assert "answered 400: <redacted> is not valid" in caplog.text
    assert leaks(token, caplog.text, *(repr(r.args) for r in caplog.records)) == []


# -- URLs with credentials ------------------------------------------------------------------


def test_reprs_mask_the_password_of_a_url(collector: LocalCollector) -> None:
    """Client, Config and OIDCClientCredentials show user:***@."""
    password = "pw-" + secrets.token_urlsafe(16)
    base_url = f"http://user:{password}@127.0.0.1:{collector.port}"
    client = Client()
    client.init(base_url=base_url, application_id=APP_ID, **FAST)
    try:
        exporter = client._exporter
        assert exporter is not None
        auth = OIDCClientCredentials(
            f"https://sso:{password}@sso.example.invalid/token", "layer-sdk", "cs-1234567890"
        )
        config = Config.resolve(base_url=base_url, application_id=APP_ID, auth_provider=auth)
        shown = [repr(client), repr(exporter.config), repr(config), repr(auth)]
        assert leaks(password, *shown) == []
        assert all("user:***@127.0.0.1" in text for text in shown[:3])
        assert "sso:***@sso.example.invalid" in repr(auth)
        client.create_session()
        assert client.flush(timeout=5) is True  # the URL still works
    finally:
        client.shutdown(timeout=2)


def test_a_bare_secret_of_an_unknown_shape_is_caught_by_its_value(
    make_client: MakeClient,
) -> None:
    """The bare token, with no name or scheme next to it, is masked
    because the auth provider declares it (the patterns alone could not know it)."""
    token = odd_secret("tok")
    with EchoingAPI("bare") as api:
        client = make_client(base_url=api.url, auth_provider=StaticToken(token, declared=True))
        with pytest.raises(LayerHTTPError) as raised:
            client.create_session(sync=True)
    assert raised.value.message == "<redacted> is not valid for this application"


SIGNAL_SCRIPT = """
import json, signal, time
from layer_sdk import Client
client = Client()
client.init(base_url="http://127.0.0.1:9", application_id="app", flush_interval=60,
            max_queue_size=1, shutdown_timeout=0)
session_id = client.create_session()
calls = {"main": 0, "handler": 0}

def report(signum, frame):  # a signal handler whose logging reports to Layer, say
    calls["handler"] += 1
    client.append_action(session_id, kind="completion_prompt", data={"from": "signal"})

signal.signal(signal.SIGALRM, report)
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
deadline = time.monotonic() + 2
while time.monotonic() < deadline:
    client.append_action(session_id, kind="completion_prompt", data={"n": calls["main"]})
    calls["main"] += 1
signal.setitimer(signal.ITIMER_REAL, 0)
stats = client.stats()
print(json.dumps({**calls, "enqueued": stats.enqueued, "dropped": stats.dropped,
                  "by_reason": stats.dropped_by_reason}))
"""


def test_a_signal_handler_that_reports_while_a_call_is_inside_the_queue_never_hangs() -> None:
    """A signal handler that calls the SDK while the
    main thread is inside it (the queue's lock held, a loss being logged) neither waits
    forever on a lock its own thread holds nor recurses; what it offers is counted."""
    result = run_python(SIGNAL_SCRIPT, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["handler"] > 100, report  # the handler did interrupt the main thread
    # Every event offered was counted: the session, then each call of either kind.
    assert report["enqueued"] + report["dropped"] == 1 + report["main"] + report["handler"]
    assert set(report["by_reason"]) <= {"queue_full", "recursion"}
