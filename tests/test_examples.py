"""Every example in examples/ runs against the local collector and reports what it says."""

from __future__ import annotations

import pytest

from layer_sdk.collector import LocalCollector

from .anthropic_server import ANSWER
from .helpers import APP_ID, ROOT, run_python

EXPECTED = {
    # example: (sessions, actions) the collector must receive
    "quickstart.py": (1, 2),
    "decorators.py": (2, 2),
    "error_handling.py": (2, 0),
    "batch_job.py": (500, 1000),
    "cli_tool.py": (1, 1),
    "web_handler.py": (1, 2),
}


def test_every_example_is_covered() -> None:
    found = {path.name for path in (ROOT / "examples").glob("*.py")}
    assert found == {*EXPECTED, "openai_instrumentation.py", "anthropic_instrumentation.py"}


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_the_example_runs_and_delivers(example: str, collector: LocalCollector) -> None:
    code = (ROOT / "examples" / example).read_text()
    result = run_python(code, env={"LAYER_BASE_URL": collector.url, "LAYER_APPLICATION_ID": APP_ID})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    sessions, actions = EXPECTED[example]
    assert len(collector.sessions) == sessions
    assert len(collector.actions()) == actions


def test_the_openai_example_reports_its_calls(collector: LocalCollector) -> None:
    pytest.importorskip("openai")
    from .openai_server import OpenAIServer

    code = (ROOT / "examples" / "openai_instrumentation.py").read_text()
    with OpenAIServer() as openai_server:
        result = run_python(
            code,
            env={
                "LAYER_BASE_URL": collector.url,
                "LAYER_APPLICATION_ID": APP_ID,
                "OPENAI_BASE_URL": openai_server.url,
                "OPENAI_API_KEY": "sk-test",
            },
        )
        assert result.returncode == 0, result.stderr
        assert all("x-layer-session-id" not in r.headers for r in openai_server.requests)
    (session,) = collector.sessions
    kinds = [action["kind"] for action in session["actions"]]
    assert kinds.count("completion_prompt") == 2
    assert kinds.count("completion_output") == 2
    assert kinds.count("embeddings") == 1


def test_the_anthropic_example_reports_its_calls(collector: LocalCollector) -> None:
    """Issue 13, done means: an example under examples/ shows an Anthropic call recorded."""
    pytest.importorskip("anthropic")
    from .anthropic_server import AnthropicServer

    code = (ROOT / "examples" / "anthropic_instrumentation.py").read_text()
    with AnthropicServer() as anthropic_server:
        result = run_python(
            code,
            env={
                "LAYER_BASE_URL": collector.url,
                "LAYER_APPLICATION_ID": APP_ID,
                "ANTHROPIC_BASE_URL": anthropic_server.url,
                "ANTHROPIC_API_KEY": "sk-ant-test",
            },
        )
        assert result.returncode == 0, result.stderr
        assert len(anthropic_server.requests) == 3
        assert all("x-layer-session-id" not in r.headers for r in anthropic_server.requests)
    assert result.stdout.splitlines()[:2] == [ANSWER, ANSWER]
    (session,) = collector.sessions
    kinds = [action["kind"] for action in session["actions"]]
    assert kinds.count("completion_prompt") == 3
    assert kinds.count("completion_output") == 3  # the stream closed unread: incomplete
