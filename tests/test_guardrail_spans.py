"""Firewall decisions as guardrail spans in the application's traces (``firewall_trace_spans``).

Each scenario runs in a fresh interpreter (``SCRIPT``), because the global
tracer provider can be set once per process: there the application sets a
real SDK ``TracerProvider`` with an in-memory exporter, makes instrumented
OpenAI calls (the real client against ``tests/openai_server.py``) under a
span of its own, with the local collector as the firewall, and prints the
finished spans as JSON for the test to read.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("openai")

from .helpers import run_python

POLICIES = [
    {"id": 7, "name": "no-secrets", "severity": "high", "action": "block"},
    {"id": 9, "name": "tone", "severity": "low", "action": "inform"},
]

SCRIPT = """
import asyncio, json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import openai
from layer_sdk import Client, LayerFirewallSessionBlocked
from layer_sdk.collector import LocalCollector
from tests.openai_server import OpenAIServer

scenario, options = sys.argv[1], json.loads(sys.argv[2])
decision = options.pop("decision", "block")
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
app = trace.get_tracer("app")
outcomes = []

def chat(server, session_id):
    client = openai.OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    try:
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Layer-Session-Id": session_id})
        outcomes.append("called")
    except LayerFirewallSessionBlocked:
        outcomes.append("refused")

async def chat_async(server, session_id):
    client = openai.AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
    with app.start_as_current_span("task"):
        try:
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Layer-Session-Id": session_id})
            outcomes.append("called")
        except LayerFirewallSessionBlocked:
            outcomes.append("refused")
    await client.close()

with LocalCollector() as collector, OpenAIServer() as server:
    firewall = collector.url if scenario != "down" else "http://127.0.0.1:9"
    layer = Client()
    layer.init(base_url=collector.url, application_id="app", firewall_base_url=firewall,
               enable_firewall_instrumentation=True, firewall_refresh_interval=3600,
               firewall_check_timeout=2, **options)
    session_id = layer.create_session()
    collector.set_firewall_decision(session_id, decision,
                                    policies=%(policies)s)
    if scenario == "async":
        asyncio.run(chat_async(server, session_id))
    else:
        with app.start_as_current_span("request"):
            chat(server, session_id)
            if scenario == "append":
                try:
                    layer.append_action(session_id, kind="completion_prompt", data={"n": 1})
                    outcomes.append("appended")
                except LayerFirewallSessionBlocked:
                    outcomes.append("append refused")
    layer.shutdown()
print(json.dumps({
    "outcomes": outcomes,
    "otel imported": "opentelemetry.sdk" in sys.modules,
    "spans": [
        {"name": s.name, "kind": s.kind.name, "attributes": dict(s.attributes),
         "status": s.status.status_code.name,
         "parent": s.parent.span_id if s.parent else None, "id": s.context.span_id,
         "trace": s.context.trace_id,
         "events": [[e.name, dict(e.attributes)] for e in s.events]}
        for s in exporter.get_finished_spans()
    ],
}))
"""


def run(scenario: str, **options: Any) -> dict[str, Any]:
    code = SCRIPT.replace("%(policies)s", repr(POLICIES))
    result = run_python(code, args=[scenario, json.dumps(options)])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def guardrails(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in report["spans"] if s["name"].startswith("apply_guardrail")]


def parent_of(report: dict[str, Any], name: str) -> dict[str, Any]:
    (span,) = [s for s in report["spans"] if s["name"] == name]
    return span


def test_a_refused_call_is_a_block_span_under_the_applications_own_span() -> None:
    report = run("block", firewall_trace_spans=True)
    assert report["outcomes"] == ["refused"]
    (span,) = guardrails(report)
    request = parent_of(report, "request")
    assert span["parent"] == request["id"]
    assert span["name"] == "apply_guardrail Layer Firewall"
    assert span["kind"] == "CLIENT"
    assert span["status"] == "UNSET"
    attributes = span["attributes"]
    assert attributes["gen_ai.operation.name"] == "apply_guardrail"
    assert attributes["gen_ai.provider.name"] == "layer"
    assert attributes["gen_ai.guardrail.component.name"] == "Layer Firewall"
    assert attributes["gen_ai.guardrail.result.type"] == "decision"
    assert attributes["gen_ai.guardrail.result.value"] == "block"
    assert attributes["layer.firewall.check"] == "before_prompt"
    assert attributes["layer.firewall.outcome"] == "refused"
    assert attributes["layer.firewall.violated_policies"] == ["no-secrets", "tone"]
    assert attributes["server.address"] == "127.0.0.1"
    assert isinstance(attributes["server.port"], int)
    assert span["events"] == [
        [
            "gen_ai.guardrail.result",
            {"layer.policy.name": "no-secrets", "gen_ai.guardrail.policy.id": "7"},
        ],
        [
            "gen_ai.guardrail.result",
            {"layer.policy.name": "tone", "gen_ai.guardrail.policy.id": "9"},
        ],
    ]


def test_a_call_let_through_is_a_pass_span() -> None:
    report = run("pass", firewall_trace_spans=True, decision="pass")
    assert report["outcomes"] == ["called"]
    (span,) = guardrails(report)
    assert span["attributes"]["gen_ai.guardrail.result.value"] == "pass"
    assert span["attributes"]["layer.firewall.outcome"] == "allowed"
    assert span["status"] == "UNSET"


def test_a_blocked_append_action_is_a_cached_block_span() -> None:
    """After the fresh check learnt the block, ``append_action`` refuses from the cache:
    a second span, ``cached``."""
    report = run("append", firewall_trace_spans=True)
    assert report["outcomes"] == ["refused", "append refused"]
    checks = [s["attributes"]["layer.firewall.check"] for s in guardrails(report)]
    assert checks == ["before_prompt", "cached"]
    cached = guardrails(report)[1]
    assert cached["attributes"]["gen_ai.guardrail.result.value"] == "block"
    assert cached["parent"] == parent_of(report, "request")["id"]


def test_a_firewall_that_cannot_be_asked_is_an_error_span_and_the_call_goes_on() -> None:
    report = run("down", firewall_trace_spans=True)
    assert report["outcomes"] == ["called"]  # fail open
    (span,) = guardrails(report)
    assert span["status"] == "ERROR"
    assert span["attributes"]["layer.firewall.outcome"] == "failed_open"
    assert span["attributes"]["error.type"] == "LayerFirewallRequestError"
    assert "gen_ai.guardrail.result.value" not in span["attributes"]


def test_an_async_call_is_traced_under_its_tasks_span() -> None:
    report = run("async", firewall_trace_spans=True)
    assert report["outcomes"] == ["refused"]
    (span,) = guardrails(report)
    assert span["parent"] == parent_of(report, "task")["id"]


def test_off_by_default_no_span_and_no_opentelemetry_import() -> None:
    """Without the option nothing is emitted; the script imports the OpenTelemetry SDK
    itself, so the import check is made in a process that does not (below)."""
    report = run("block")
    assert report["outcomes"] == ["refused"]
    assert guardrails(report) == []
    result = run_python(
        "import sys\n"
        "from layer_sdk import Client\n"
        "from layer_sdk.collector import LocalCollector\n"
        "with LocalCollector() as c:\n"
        "    layer = Client()\n"
        "    layer.init(base_url=c.url, application_id='app', firewall_base_url=c.url,\n"
        "               enable_firewall_instrumentation=True)\n"
        "    sid = layer.create_session()\n"
        "    layer.check_prompt(sid)\n"
        "    layer.shutdown()\n"
        "print(any(name.startswith('opentelemetry') for name in sys.modules))\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
