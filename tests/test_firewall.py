"""The Layer firewall: look-ups through the transport, the decision cache, fail open or closed."""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layer_sdk import (
    AuthProvider,
    Client,
    FirewallLookupDecision,
    FirewallSessionLookupResponse,
    LayerFirewallException,
    LayerFirewallHTTPError,
    LayerFirewallRequestError,
    LayerFirewallSessionBlocked,
    LayerMissingRequiredConfigurationError,
    LayerSDKException,
)
from layer_sdk._firewall_answer import top_level
from layer_sdk.collector import LocalCollector

from .anthropic_server import AnthropicServer
from .helpers import (
    APP_ID,
    PROMPT,
    DrippingServer,
    MakeClient,
    in_multiprocessing_child,
    wait_until,
)
from .openai_server import OpenAIServer

POLICIES = [
    {"id": 7, "name": "no-secrets", "severity": "high", "action": "block"},
    {"id": 9, "name": "tone", "severity": "low", "action": "inform"},
]
FAST_REFRESH = {"firewall_refresh_interval": 0.02}


@pytest.fixture
def firewall() -> Iterator[LocalCollector]:
    """A collector of its own as the firewall, so that it can go down or slow on its own."""
    with LocalCollector() as server:
        yield server


def lookups(firewall: LocalCollector, session_id: str | None = None) -> list[str]:
    """The sessions the firewall was asked about, in order."""
    return [
        r.path.rsplit("/", 1)[1]
        for r in firewall.requests
        if r.method == "GET" and (session_id is None or r.path.endswith(session_id))
    ]


def refused(client: Client, session_id: str) -> bool:
    try:
        client.append_action(session_id, kind=PROMPT, data={"n": 1})
    except LayerFirewallSessionBlocked:
        return True
    return False


# -- firewall_session_lookup -----------------------------------------------------------------


@pytest.mark.parametrize("decision", [d.value for d in FirewallLookupDecision])
def test_lookup_answers_each_decision(
    make_client: MakeClient, firewall: LocalCollector, decision: str
) -> None:
    """Firewall_session_lookup returns each of the five decisions."""
    client = make_client(firewall_base_url=firewall.url)
    session_id = str(uuid.uuid4())
    firewall.set_firewall_decision(session_id, decision, policies=POLICIES)
    response = client.firewall_session_lookup(session_id)
    assert isinstance(response, FirewallSessionLookupResponse)
    assert response.session_id == session_id
    assert response.decision is FirewallLookupDecision(decision)
    assert [(p.id, p.name, p.severity, p.action) for p in response.context.violated_policies] == [
        (7, "no-secrets", "high", "block"),
        (9, "tone", "low", "inform"),
    ]


def test_lookup_of_an_unknown_session_is_no_data_and_is_a_get_with_our_headers(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """GET {firewall_base_url}/v1/sessions/{id} through the one transport
    (the collector itself can be the firewall)."""
    client = make_client(firewall_base_url=collector.url)
    session_id = uuid.uuid4()
    response = client.firewall_session_lookup(session_id)
    assert response.decision is FirewallLookupDecision.NO_DATA
    assert response.context.violated_policies == []
    (request,) = collector.requests
    assert (request.method, request.path) == ("GET", f"/v1/sessions/{session_id}")
    assert request.headers["user-agent"].startswith("layer-sdk-python/")
    assert "content-type" not in request.headers and request.body == b""


def test_lookup_is_retried_as_a_sync_call(
    make_client: MakeClient, firewall: LocalCollector
) -> None:
    """Retries as for sync=True (two 503s, then the answer)."""
    client = make_client(firewall_base_url=firewall.url)
    firewall.fail_next(2, 503, retry_after=0.01)
    session_id = str(uuid.uuid4())
    firewall.set_firewall_decision(session_id, "alert")
    assert client.firewall_session_lookup(session_id).decision is FirewallLookupDecision.ALERT
    assert [r.status for r in firewall.requests] == [503, 503, 200]


def test_lookup_errors(make_client: MakeClient, firewall: LocalCollector) -> None:
    """LayerFirewallHTTPError, LayerFirewallRequestError, both
    LayerFirewallException (a LayerSDKException)."""
    client = make_client(firewall_base_url=firewall.url, max_retries=0)
    session_id = str(uuid.uuid4())
    firewall.fail_next(1, 404, body=b'{"error":"no such tenant"}')
    with pytest.raises(LayerFirewallHTTPError) as http:
        client.firewall_session_lookup(session_id)
    assert http.value.status_code == 404 and http.value.message == "no such tenant"
    assert isinstance(http.value, LayerFirewallException)
    assert isinstance(http.value, LayerSDKException)

    firewall.fail_next(1, 200, body=b'{"decision":"maybe"}')
    with pytest.raises(LayerFirewallRequestError, match="not a session lookup response"):
        client.firewall_session_lookup(session_id)

    firewall.stop()
    with pytest.raises(LayerFirewallRequestError, match="firewall") as down:
        client.firewall_session_lookup(session_id)
    assert not isinstance(down.value, LayerFirewallHTTPError)


def test_lookup_needs_a_firewall_base_url(make_client: MakeClient) -> None:
    """Without firewall_base_url the call says which option is missing;
    enabling the instrumentation without it fails at init."""
    client = make_client()
    with pytest.raises(LayerMissingRequiredConfigurationError, match="LAYER_FIREWALL_BASE_URL"):
        client.firewall_session_lookup(str(uuid.uuid4()))
    with pytest.raises(LayerMissingRequiredConfigurationError, match="firewall_base_url"):
        Client().init(
            base_url="http://127.0.0.1:1",
            application_id=APP_ID,
            enable_firewall_instrumentation=True,
        )


def test_a_token_never_goes_to_a_cleartext_firewall() -> None:
    """With an auth provider, a plain-http firewall on another machine is
    refused at init, naming firewall_base_url, as base_url is."""
    with pytest.raises(LayerMissingRequiredConfigurationError, match="firewall_base_url"):
        Client().init(
            base_url="https://layer.example.com",
            application_id=APP_ID,
            auth_provider=_Token(),
            firewall_base_url="http://firewall.example.com",
        )


def test_firewall_base_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, make_client: MakeClient, firewall: LocalCollector
) -> None:
    """LAYER_FIREWALL_BASE_URL stands for firewall_base_url."""
    monkeypatch.setenv("LAYER_FIREWALL_BASE_URL", firewall.url)
    client = make_client()
    assert client.firewall_session_lookup(str(uuid.uuid4())).decision.value == "no_data"
    assert len(lookups(firewall)) == 1


class _Token(AuthProvider):
    TOKEN = "s3cr3t-firewall-token-value"

    def get_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.TOKEN}"}

    def known_secrets(self) -> list[str]:
        return [self.TOKEN]


def test_no_token_in_firewall_errors(make_client: MakeClient, firewall: LocalCollector) -> None:
    """A firewall echoing our Authorization header leaks no token."""
    client = make_client(firewall_base_url=firewall.url, auth_provider=_Token())
    echo = f'{{"error":"refused Authorization: Bearer {_Token.TOKEN}"}}'.encode()
    firewall.fail_next(1, 403, body=echo)
    with pytest.raises(LayerFirewallHTTPError) as raised:
        client.firewall_session_lookup(str(uuid.uuid4()))
    shown = f"{raised.value} {raised.value.message} {raised.value.response_data!r} {raised.value!r}"
    assert _Token.TOKEN not in shown
    assert firewall.requests[0].headers["authorization"] == f"Bearer {_Token.TOKEN}"


# -- the decision cache on append_action -----------------------------------------------------


def test_append_action_raises_once_the_block_is_known_and_it_stays(
    make_client: MakeClient, collector: LocalCollector, firewall: LocalCollector
) -> None:
    """Append_action raises LayerFirewallSessionBlocked from the cache
    (refreshed in the background), stores nothing more, and a blocked session stays blocked."""
    client = make_client(
        firewall_base_url=firewall.url, enable_firewall_instrumentation=True, **FAST_REFRESH
    )
    session_id = client.create_session()
    other = client.create_session()
    client.append_action(session_id, kind=PROMPT, data={"n": 0})
    client.append_action(other, kind=PROMPT, data={"n": 0})
    assert wait_until(lambda: len(lookups(firewall, session_id)) >= 1)  # looked up meanwhile
    firewall.set_firewall_decision(session_id, "block", policies=POLICIES)
    assert wait_until(lambda: refused(client, session_id))
    assert client.flush(5)
    stored = len(collector.actions(session_id))
    with pytest.raises(LayerFirewallSessionBlocked, match="no-secrets") as raised:
        client.append_action(session_id, kind=PROMPT, data={"n": 2})
    assert raised.value.session_id == session_id
    assert raised.value.response.decision is FirewallLookupDecision.BLOCK
    client.append_action(other, kind=PROMPT, data={"n": 1})  # another session goes on

    firewall.set_firewall_decision(session_id, "pass")
    assert client.firewall_session_lookup(session_id).decision is FirewallLookupDecision.PASS
    seen = len(lookups(firewall, other))
    assert wait_until(lambda: len(lookups(firewall, other)) >= seen + 3)  # rounds went by
    assert refused(client, session_id)
    assert client.flush(5)
    assert len(collector.actions(session_id)) == stored
    assert client.firewall_stats().blocked >= 2


def test_without_the_instrumentation_append_action_never_asks(
    make_client: MakeClient, firewall: LocalCollector
) -> None:
    """Enable_firewall_instrumentation=False (the default) changes nothing."""
    client = make_client(firewall_base_url=firewall.url, **FAST_REFRESH)
    watched = make_client(
        firewall_base_url=firewall.url, enable_firewall_instrumentation=True, **FAST_REFRESH
    )
    session_id, control = client.create_session(), watched.create_session()
    firewall.set_firewall_decision(session_id, "block")
    client.append_action(session_id, kind=PROMPT, data={"n": 0})
    watched.append_action(control, kind=PROMPT, data={"n": 0})
    assert wait_until(lambda: len(lookups(firewall, control)) >= 3)  # refresh rounds went by
    client.append_action(session_id, kind=PROMPT, data={"n": 1})
    assert client.flush(5)
    assert lookups(firewall, session_id) == []


def test_fail_open_when_the_firewall_is_down(
    make_client: MakeClient, firewall: LocalCollector, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail open by default: calls go on, failures counted and logged once."""
    caplog.set_level(logging.WARNING, logger="layer_sdk")
    firewall.stop()
    client = make_client(
        firewall_base_url=firewall.url, enable_firewall_instrumentation=True, **FAST_REFRESH
    )
    session_id = client.create_session()
    client.append_action(session_id, kind=PROMPT, data={"n": 0})
    assert wait_until(lambda: client.firewall_stats().failures >= 3)
    client.append_action(session_id, kind=PROMPT, data={"n": 1})
    assert client.flush(5)
    warnings = [r for r in caplog.records if "firewall look-up" in r.getMessage()]
    assert len(warnings) == 1


def test_fail_closed_when_the_firewall_is_down(
    make_client: MakeClient, firewall: LocalCollector
) -> None:
    """Firewall_fail_closed=True refuses a session whose look-up failed,
    until the firewall answers again."""
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_fail_closed=True,
        **FAST_REFRESH,
    )
    session_id = client.create_session()
    client.append_action(session_id, kind=PROMPT, data={"n": 0})
    firewall.stop()
    assert wait_until(lambda: refused(client, session_id))
    with pytest.raises(LayerFirewallSessionBlocked, match="fail_closed") as raised:
        client.append_action(session_id, kind=PROMPT, data={"n": 1})
    assert raised.value.response is None
    firewall.start()  # back, answering pass (no_data)
    assert wait_until(lambda: not refused(client, session_id))


def test_a_hung_firewall_costs_one_timeout_per_round(
    make_client: MakeClient, firewall: LocalCollector
) -> None:
    """The first failed look-up ends the refresh round, and (fail closed)
    refuses every session of it, instead of one timeout per session."""
    firewall.hang()
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_fail_closed=True,
        firewall_check_timeout=0.2,
        firewall_refresh_interval=1.0,
    )
    sessions = [client.create_session() for _ in range(3)]
    for session_id in sessions:
        client.append_action(session_id, kind=PROMPT, data={"n": 0})
    assert wait_until(lambda: all(refused(client, s) for s in sessions))
    assert firewall.unanswered == 1  # one look-up for the round, not one per session
    assert wait_until(lambda: client.firewall_stats().failures >= 1)
    firewall.release()


def test_a_slow_firewall_never_slows_append_action(
    make_client: MakeClient, firewall: LocalCollector
) -> None:
    """Look-ups run off the caller's thread (firewall 2 s per answer)."""
    firewall.delay = 2.0
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_check_timeout=0.1,
        **FAST_REFRESH,
    )
    session_id = client.create_session()
    started = time.monotonic()
    for n in range(100):
        client.append_action(session_id, kind=PROMPT, data={"n": n})
    assert time.monotonic() - started < 1.0
    assert wait_until(lambda: client.firewall_stats().failures >= 1)  # timed out at 0.1 s


def test_the_cache_is_bounded(make_client: MakeClient, firewall: LocalCollector) -> None:
    """At most firewall_cache_size sessions tracked (the latest), and as
    many decisions kept."""
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_cache_size=3,
        firewall_refresh_interval=0.3,
    )
    sessions = [client.create_session() for _ in range(6)]
    for session_id in sessions:
        firewall.set_firewall_decision(session_id, "block")
        client.append_action(session_id, kind=PROMPT, data={"n": 0})
    assert wait_until(lambda: len(lookups(firewall)) >= 3)
    assert client.firewall_stats().tracked == 3
    assert sorted(set(lookups(firewall))) == sorted(sessions[3:])
    assert [refused(client, s) for s in sessions[3:]] == [True] * 3
    assert client._firewall is not None and len(client._firewall._stops) == 3


def test_sessions_waiting_for_a_refresh_round_stay_within_the_cache_size(
    make_client: MakeClient, firewall: LocalCollector
) -> None:
    """While a slow firewall keeps a refresh round busy, the sessions touched meanwhile
    wait for the next round: at most firewall_cache_size of them (the latest), however
    many sessions come."""
    firewall.delay = 0.4  # a round of 10 sessions lasts 4 s
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_cache_size=10,
        firewall_refresh_interval=0.02,
        max_queue_size=10_000,
    )
    guard = client._firewall
    assert guard is not None
    sessions = [client.create_session() for _ in range(2_000)]
    for session_id in sessions[:10]:
        client.append_action(session_id, kind=PROMPT, data={"n": 0})
    assert wait_until(lambda: client.firewall_stats().tracked == 10)  # a round is under way
    waiting = []
    for session_id in sessions[10:]:
        client.append_action(session_id, kind=PROMPT, data={"n": 0})
        waiting.append(len(guard._touched))
    assert max(waiting) <= 10
    assert sessions[-1] in guard._touched  # the latest are kept
    assert client.firewall_stats().tracked <= 10


def _blocked_in_child(client: Client, blocked: str, fresh: str) -> Any:
    # The parent's firewall answers; the child only asks.
    inherited = refused(client, blocked)
    client.append_action(fresh, kind=PROMPT, data={"n": 0})
    learnt = wait_until(lambda: refused(client, fresh), timeout=10)
    return inherited, learnt, os.getpid()


def test_fork_keeps_the_blocks_and_refreshes_in_the_child(
    make_client: MakeClient, firewall: LocalCollector
) -> None:
    """Fork-safe: a forked child knows its parent's blocks and runs its own
    refresh thread (new locks, new connections)."""
    client = make_client(
        firewall_base_url=firewall.url, enable_firewall_instrumentation=True, **FAST_REFRESH
    )
    blocked, fresh = client.create_session(), client.create_session()
    firewall.set_firewall_decision(blocked, "block")
    firewall.set_firewall_decision(fresh, "block")
    client.append_action(blocked, kind=PROMPT, data={"n": 0})
    assert wait_until(lambda: refused(client, blocked))
    code, result = in_multiprocessing_child(_blocked_in_child, client, blocked, fresh)
    assert code == 0
    inherited, learnt, pid = result
    assert (inherited, learnt) == (True, True) and pid != os.getpid()


# -- before a prompt leaves the process (OpenAI) -----------------------------------------------


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


def chat(server: OpenAIServer, session_id: str) -> Any:
    import openai

    provider = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    return provider.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Layer-Session-Id": session_id},
    )


@pytest.mark.parametrize("decision", ["pass", "block"])
def test_openai_call_is_checked_afresh_before_the_provider(
    make_client: MakeClient,
    collector: LocalCollector,
    openai_server: OpenAIServer,
    decision: str,
) -> None:
    """An instrumented OpenAI call asks the firewall afresh (no refresh
    round needed) and, on block, raises before the request reaches the provider."""
    client = make_client(
        firewall_base_url=collector.url,
        enable_firewall_instrumentation=True,
        firewall_refresh_interval=3600,  # only the fresh check can know
    )
    session_id = client.create_session()
    collector.set_firewall_decision(session_id, decision, policies=POLICIES)
    if decision == "block":
        with pytest.raises(LayerFirewallSessionBlocked, match="no-secrets"):
            chat(openai_server, session_id)
        assert openai_server.requests == []
        assert refused(client, session_id)  # learnt by the fresh check
    else:
        assert chat(openai_server, session_id).choices[0].message.content
        assert len(openai_server.requests) == 1
    assert len(lookups(collector, session_id)) == 1


def test_an_async_anthropic_stream_helper_is_blocked_when_entered(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    """``async with messages.stream(...)`` asks the
    firewall as it is entered, where the request would be sent, and is refused there;
    the request ``stream()`` prepared is discarded cleanly."""
    import asyncio

    import anthropic

    client = make_client(firewall_base_url=collector.url, enable_firewall_instrumentation=True)
    session_id = client.create_session()
    collector.set_firewall_decision(session_id, "block")

    async def call(server: AnthropicServer) -> None:
        claude = anthropic.AsyncAnthropic(base_url=server.url, api_key="sk-ant", max_retries=0)
        manager = claude.messages.stream(
            model="claude-test",
            max_tokens=16,
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={"X-Layer-Session-Id": session_id},
        )
        async with manager as stream:
            await stream.get_final_message()

    with AnthropicServer() as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(LayerFirewallSessionBlocked):
            asyncio.run(call(server))
        gc.collect()  # the request stream() prepared is closed, not left to warn
        assert server.requests == []
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def test_async_openai_call_is_blocked_before_the_provider(
    make_client: MakeClient, collector: LocalCollector, openai_server: OpenAIServer
) -> None:
    """The async client is checked at the same point (one call site)."""
    import asyncio

    import openai

    client = make_client(firewall_base_url=collector.url, enable_firewall_instrumentation=True)
    session_id = client.create_session()
    collector.set_firewall_decision(session_id, "block")
    provider = openai.AsyncOpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0)

    async def call() -> Any:
        return await provider.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={"X-Layer-Session-Id": session_id},
        )

    with pytest.raises(LayerFirewallSessionBlocked):
        asyncio.run(call())
    assert openai_server.requests == []


@pytest.mark.parametrize("shape", ["openai", "anthropic create", "anthropic stream helper"])
def test_an_async_call_waits_for_the_firewall_without_holding_up_the_event_loop(
    make_client: MakeClient, firewall: LocalCollector, openai_server: OpenAIServer, shape: str
) -> None:
    """In an async call the fresh check is awaited on a worker thread:
    other tasks of the event loop run while a slow firewall answers, and the call goes on."""
    import asyncio

    import anthropic
    import openai

    firewall.delay = 0.4
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_check_timeout=5.0,
        firewall_refresh_interval=3600,
    )
    session_id = client.create_session()
    headers = {"X-Layer-Session-Id": session_id}
    messages = [{"role": "user", "content": "hello"}]

    async def call(server: Any) -> None:
        if shape == "openai":
            provider = openai.AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
            await provider.chat.completions.create(
                model="gpt-4o-mini", messages=messages, extra_headers=headers
            )
            return
        claude = anthropic.AsyncAnthropic(base_url=server.url, api_key="sk-ant", max_retries=0)
        request: dict[str, Any] = {"model": "claude-test", "max_tokens": 16}
        if shape == "anthropic create":
            await claude.messages.create(**request, messages=messages, extra_headers=headers)
        else:
            async with claude.messages.stream(
                **request, messages=messages, extra_headers=headers
            ) as stream:
                await stream.get_final_message()

    async def main(server: Any) -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        await call(server)
        ticker.cancel()
        return ticks

    if shape == "openai":
        ticks = asyncio.run(main(openai_server))
        assert len(openai_server.requests) == 1
    else:
        with AnthropicServer() as server:
            ticks = asyncio.run(main(server))
            assert len(server.requests) == 1
    assert len(lookups(firewall, session_id)) == 1
    assert ticks >= 10  # the loop ran on through the 0.4 s the firewall took


@pytest.mark.parametrize("shape", ["create", "stream helper"])
def test_anthropic_call_is_blocked_before_the_provider(
    make_client: MakeClient, collector: LocalCollector, shape: str
) -> None:
    """An instrumented Anthropic call, the ``.stream()``
    helper included, is checked at the same point and refused before the provider."""
    import anthropic

    client = make_client(
        firewall_base_url=collector.url,
        enable_firewall_instrumentation=True,
        firewall_refresh_interval=3600,  # only the fresh check can know
    )
    session_id = client.create_session()
    collector.set_firewall_decision(session_id, "block", policies=POLICIES)
    with AnthropicServer() as server:
        provider = anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0)
        request: dict[str, Any] = {
            "model": "claude-test",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hello"}],
            "extra_headers": {"X-Layer-Session-Id": session_id},
        }
        with pytest.raises(LayerFirewallSessionBlocked, match="no-secrets"):
            if shape == "create":
                provider.messages.create(**request)
            else:
                with provider.messages.stream(**request) as stream:
                    stream.get_final_message()
        assert server.requests == []
    assert len(lookups(collector, session_id)) == 1


def test_a_block_learnt_while_a_stream_runs_refuses_its_output_as_a_block(
    make_client: MakeClient,
    collector: LocalCollector,
    openai_server: OpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session blocked while an instrumented stream runs (the firewall
    saw its prompt) takes no more actions: the stream's output is refused like any other
    action, counted and logged as a refusal, not as a failure of the instrumentation, and
    the caller's stream is unchanged."""
    import openai

    client = make_client(
        firewall_base_url=collector.url, enable_firewall_instrumentation=True, **FAST_REFRESH
    )
    session_id = client.create_session()
    provider = openai.OpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0)
    with caplog.at_level(logging.WARNING, logger="layer_sdk"):
        stream = provider.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            extra_headers={"X-Layer-Session-Id": session_id},
        )
        collector.set_firewall_decision(session_id, "block", policies=POLICIES)
        assert wait_until(lambda: refused(client, session_id))  # the refresh learnt it
        blocked = client.firewall_stats().blocked
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    assert client.firewall_stats().blocked == blocked + 1
    assert client.flush(5)
    kinds = [action["kind"] for action in collector.actions(session_id)]
    assert "completion_prompt" in kinds and "completion_output" not in kinds
    messages = [record.getMessage() for record in caplog.records]
    assert any("did not record the completion_output" in m and "no-secrets" in m for m in messages)
    assert not any("instrumentation failed" in m for m in messages)


#: Answers that say "block" in ways our schema does not expect; what each lets us read.
ODD_BLOCKS = {
    "a policy id as a string": (
        b'{"decision":"block","context":{"violated_policies":'
        b'[{"id":"pol-7","name":"no-secrets","severity":"high"}]}}',
        [("pol-7", "no-secrets", "high", None)],
    ),
    "a numeric severity": (
        b'{"decision":"block","context":{"violated_policies":'
        b'[{"id":7,"name":"no-secrets","severity":3,"action":"block"}]}}',
        [(7, "no-secrets", "3", "block")],
    ),
    "the decision in upper case": (
        b'{"decision":"BLOCK","context":{"violated_policies":[{"id":7,"name":"no-secrets"}]}}',
        [(7, "no-secrets", None, None)],
    ),
    "policies of another shape": (
        b'{"decision":"Block","context":{"violated_policies":[{"id":null,"name":["x"]},'
        b'"no-secrets",3]}}',
        [(None, None, None, None), (None, "no-secrets", None, None)],
    ),
    "a context that is a string": (b'{"decision":"block","context":"no-secrets"}', []),
    "a numeric session_id": (b'{"session_id":7,"decision":"block","context":null}', []),
    "a policy id out of range": (
        b'{"decision":"block","context":{"violated_policies":[{"id":1e400,"name":"pii"}]}}',
        [],
    ),
    "a context nested deeper than a decoder goes": (
        b'{"decision":"block","context":{"violated_policies":['
        + b"[" * 5000
        + b"]" * 5000
        + b"]}}",
        [],
    ),
    "the decision after a deeply nested context": (
        b'{"context":{"violated_policies":[{"id":1,"x":'
        + b'{"a":' * 5000
        + b"1"
        + b"}" * 5000
        + b'}]},"decision":"block"}',
        # As deep as the decoder goes: Python 3.13 reads the policy, earlier ones stop.
        [[], [(1, None, None, None)]],
    ),
}


@pytest.mark.parametrize("case", list(ODD_BLOCKS))
def test_a_block_whose_context_is_not_our_schema_still_blocks(
    make_client: MakeClient, firewall: LocalCollector, openai_server: OpenAIServer, case: str
) -> None:
    """The decision is read on its own, in any letter case: a context that does not fit the
    schema (read as far as it can be) never turns a block into a failed look-up, which the
    default fail-open would let through."""
    body, policies = ODD_BLOCKS[case]
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_refresh_interval=3600,  # only the fresh check asks
    )
    session_id = client.create_session()
    firewall.fail_next(1, 200, body=body)
    with pytest.raises(LayerFirewallSessionBlocked) as raised:
        chat(openai_server, session_id)
    assert openai_server.requests == []
    assert raised.value.response is not None
    assert raised.value.response.session_id == session_id
    stats = client.firewall_stats()
    assert (stats.lookups, stats.failures, stats.failed_open) == (1, 0, 0)

    other = client.create_session()
    firewall.fail_next(1, 200, body=body)
    response = client.firewall_session_lookup(other)
    assert response.decision is FirewallLookupDecision.BLOCK
    read = [(p.id, p.name, p.severity, p.action) for p in response.context.violated_policies]
    # A case may allow more than one reading (a list of them), where the interpreter decides.
    allowed = policies if case.endswith("deeply nested context") else [policies]
    assert read in allowed


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.text(alphabet='[]{}"\\,: \n\u00e9\u2028')  # the characters a scanner may trip on
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(JSON_VALUES, st.sampled_from([None, 0, 2]), st.booleans())
def test_the_top_level_of_an_answer_reads_as_msgspec_reads_it_with_nesting_left_out(
    value: object, indent: int | None, ensure_ascii: bool
) -> None:
    """What an answer too deep to decode is read as: its top level exactly as msgspec decodes
    it, each array or object nested in it read as null."""
    document = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii).encode()
    decoded = msgspec.json.decode(document)

    def shallow(item: object) -> object:
        return None if isinstance(item, (list, dict)) else item

    if isinstance(decoded, dict):
        expected: object = {key: shallow(item) for key, item in decoded.items()}
    elif isinstance(decoded, list):
        expected = [shallow(item) for item in decoded]
    else:
        expected = decoded
    flat = top_level(document)
    assert flat is not None
    assert msgspec.json.decode(flat) == expected


@pytest.mark.parametrize(
    "document",
    [
        b'{"decision":"block","context":[[]',
        b'{"a":1}}',
        b"][",
        b'{"decision":"block","context":["[' + b'\\"' * 1000,  # a string left open
    ],
)
def test_unbalanced_brackets_have_no_top_level(document: bytes) -> None:
    assert top_level(document) is None


@pytest.mark.parametrize("fail_closed", [False, True])
def test_openai_call_with_a_slow_firewall(
    make_client: MakeClient,
    firewall: LocalCollector,
    openai_server: OpenAIServer,
    fail_closed: bool,
) -> None:
    """A fresh check waits firewall_check_timeout at most, then the call
    goes on (fail open, counted) or is refused before the provider (fail closed)."""
    firewall.delay = 3.0
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_check_timeout=0.2,
        firewall_fail_closed=fail_closed,
        firewall_refresh_interval=3600,
    )
    session_id = client.create_session()
    started = time.monotonic()
    if fail_closed:
        with pytest.raises(LayerFirewallSessionBlocked, match="could not be asked"):
            chat(openai_server, session_id)
        assert openai_server.requests == []
    else:
        chat(openai_server, session_id)
        assert len(openai_server.requests) == 1
        assert client.firewall_stats().failed_open == 1
    assert time.monotonic() - started < 2.0
    # The look-up itself fails at its own deadline, on its thread: counted once.
    assert wait_until(lambda: client.firewall_stats().failures == 1)
    assert client.firewall_stats().failures == 1


def readme_session() -> Any:
    """The ``http_session`` docs/delivery.md shows: urllib3 retries with backoff, 503 included."""
    import requests
    from requests.adapters import HTTPAdapter, Retry

    session = requests.Session()
    retry = Retry(
        total=5,
        status_forcelist=[429, 502, 503, 504],
        backoff_factor=0.5,
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


def test_a_check_makes_one_attempt_whatever_the_users_session_retries(
    make_client: MakeClient,
    collector: LocalCollector,
    firewall: LocalCollector,
    openai_server: OpenAIServer,
) -> None:
    """With the http_session of docs/delivery.md (five retries, backoff) and a firewall answering
    503, a fresh check makes one attempt: the call goes on (fail open) instead of waiting
    out the session's retries. The session itself is unchanged and still retries the
    Layer API's requests as its owner asked."""
    firewall.fail_for(60, 503)
    session = readme_session()
    client = make_client(
        http_session=session,
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_check_timeout=0.5,
        firewall_refresh_interval=3600,
    )
    session_id = client.create_session()
    started = time.monotonic()
    chat(openai_server, session_id)
    assert time.monotonic() - started < 5.0  # the session's retries would take 15 s
    assert len(openai_server.requests) == 1
    assert wait_until(lambda: client.firewall_stats().failures == 1)
    assert (client.firewall_stats().failed_open, lookups(firewall)) == (1, [session_id])

    assert session.adapters["http://"].max_retries.total == 5
    assert client.flush(5)
    collector.fail_next(1, 503)
    client.create_session(sync=True)  # retried by the session, not by the SDK
    assert [r.status for r in collector.requests if r.method == "POST"][-2:] == [503, 200]


def test_a_dripping_firewall_behind_a_users_session_holds_a_call_no_longer_than_the_timeout(
    make_client: MakeClient, openai_server: OpenAIServer
) -> None:
    """A firewall that drips its answer a byte at a time, asked through a user's session
    (requests bounds each read, never the whole answer): the call waits about
    firewall_check_timeout, then goes on (fail open); shutdown is not held either."""
    with DrippingServer(interval=0.05) as dripping:
        client = make_client(
            http_session=readme_session(),
            firewall_base_url=dripping.url,
            enable_firewall_instrumentation=True,
            firewall_check_timeout=0.5,
            firewall_refresh_interval=3600,
        )
        session_id = client.create_session()
        started = time.monotonic()
        chat(openai_server, session_id)
        assert time.monotonic() - started < 3.0  # the answer would drip for a minute
        assert len(openai_server.requests) == 1
        assert (client.firewall_stats().failed_open, dripping.requests) == (1, 1)
        started = time.monotonic()
        assert client.shutdown(timeout=1.0)
        assert time.monotonic() - started < 3.0


def test_a_fresh_check_is_bounded_including_getting_a_token(
    make_client: MakeClient, firewall: LocalCollector, openai_server: OpenAIServer
) -> None:
    """The fresh check needs a token first, from an endpoint that drips its answer: the
    call still waits about firewall_check_timeout, not the token fetch's http_timeout."""
    from layer_sdk import OIDCClientCredentials

    with DrippingServer(interval=0.05) as dripping:
        auth = OIDCClientCredentials(
            f"{dripping.url}/token", "layer-sdk", "cs-dripping", http_timeout=30.0
        )
        client = make_client(
            auth_provider=auth,
            firewall_base_url=firewall.url,
            enable_firewall_instrumentation=True,
            firewall_check_timeout=0.5,
            firewall_refresh_interval=3600,
        )
        session_id = client.create_session()
        started = time.monotonic()
        chat(openai_server, session_id)
        assert time.monotonic() - started < 5.0
        assert len(openai_server.requests) == 1
        assert client.firewall_stats().failed_open == 1
        assert lookups(firewall) == []  # no token, so never asked


def test_many_async_calls_wait_about_the_check_timeout_and_leave_the_apps_executor_free(
    make_client: MakeClient, firewall: LocalCollector, openai_server: OpenAIServer
) -> None:
    """60 concurrent async calls with a silent firewall: each waits about
    firewall_check_timeout (not in turn behind the others), and the application's own
    asyncio.to_thread() runs at once: the checks use no thread of the loop's executor."""
    import asyncio

    import openai

    firewall.hang()
    client = make_client(
        firewall_base_url=firewall.url,
        enable_firewall_instrumentation=True,
        firewall_check_timeout=1.0,
        firewall_refresh_interval=3600,
    )
    sessions = [client.create_session() for _ in range(60)]
    finished: list[float] = []

    async def main() -> int:
        provider = openai.AsyncOpenAI(base_url=openai_server.url, api_key="sk-test", max_retries=0)
        loop = asyncio.get_running_loop()

        async def call(session_id: str) -> None:
            started = loop.time()
            await provider.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hello"}],
                extra_headers={"X-Layer-Session-Id": session_id},
            )
            finished.append(loop.time() - started)

        tasks = [asyncio.create_task(call(session_id)) for session_id in sessions]
        deadline = loop.time() + 10
        while firewall.unanswered < 6 and loop.time() < deadline:  # the checks are waiting
            await asyncio.sleep(0.01)
        # How many checks had given up when the application's own work ran: none, if it
        # did not wait behind them for a thread of the loop's executor.
        checks_over = await asyncio.to_thread(lambda: client.firewall_stats().failed_open)
        await asyncio.gather(*tasks)
        return checks_over

    assert asyncio.run(main()) == 0
    assert len(finished) == 60 and max(finished) < 5.0  # in turn, six at a time: 10 s
    assert len(openai_server.requests) == 60
    assert client.firewall_stats().failed_open == 60
    firewall.release()


# -- the collector's firewall endpoint --------------------------------------------------------


def test_collector_firewall_endpoint_is_strict(collector: LocalCollector) -> None:
    """The collector validates what a test sets and what is asked."""
    with pytest.raises(ValueError, match="decision must be one of"):
        collector.set_firewall_decision(str(uuid.uuid4()), "deny")
    with pytest.raises(msgspec.ValidationError, match=r"\$\[0\].id"):
        collector.set_firewall_decision(str(uuid.uuid4()), "block", policies=[{"id": "x"}])
    import urllib.error
    import urllib.request

    for path, status in [("/v1/sessions/not-a-uuid", 422), ("/v1/sessions", 405)]:
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(collector.url + path, timeout=5)
        assert answer.value.code == status
