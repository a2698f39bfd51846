"""Every example in examples/ runs against the local collector and reports what it says."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, ROOT, run_python

EXPECTED = {
    # example: (sessions, actions) the collector must receive
    "quickstart.py": (1, 2),
    "decorators.py": (2, 2),
    "error_handling.py": (2, 0),
    "batch_job.py": (500, 1000),
    "cli_tool.py": (1, 1),
    "web_handler.py": (1, 2),
    "fastapi_app.py": (1, 4),
    "flask_app.py": (2, 6),
}

#: examples that need a package of the dev extra, not of the SDK
NEEDS = {"fastapi_app.py": "fastapi", "flask_app.py": "flask"}


def test_every_example_is_covered() -> None:
    found = {path.name for path in (ROOT / "examples").glob("*.py")}
    assert found == {*EXPECTED, *PROVIDER_EXAMPLES, *PYTEST_EXAMPLES}


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_the_example_runs_and_delivers(example: str, collector: LocalCollector) -> None:
    if example in NEEDS:
        pytest.importorskip(NEEDS[example])
    code = (ROOT / "examples" / example).read_text()
    result = run_python(code, env={"LAYER_BASE_URL": collector.url, "LAYER_APPLICATION_ID": APP_ID})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    sessions, actions = EXPECTED[example]
    assert len(collector.sessions) == sessions
    assert len(collector.actions()) == actions


#: example -> (provider package, its local server's module and class, what the
#: collector must receive in the example's one session: kind -> count).
PROVIDER_EXAMPLES = {
    "openai_instrumentation.py": (
        "openai",
        "OpenAIServer",
        {"completion_prompt": 2, "completion_output": 2, "embeddings": 1},
    ),
    # An example under examples/ shows an Anthropic call recorded
    # (the third call's stream is closed unread: its output is recorded incomplete).
    "anthropic_instrumentation.py": (
        "anthropic",
        "AnthropicServer",
        {"completion_prompt": 3, "completion_output": 3},
    ),
}


@pytest.mark.parametrize("example", sorted(PROVIDER_EXAMPLES))
def test_the_provider_example_reports_its_calls(example: str, collector: LocalCollector) -> None:
    """The instrumentation examples against the provider's local server: three calls, each
    recorded, the session header never sent to the provider."""
    package, server_class, expected = PROVIDER_EXAMPLES[example]
    pytest.importorskip(package)
    module = importlib.import_module(f"tests.{package}_server")
    code = (ROOT / "examples" / example).read_text()
    with getattr(module, server_class)() as server:
        prefix = package.upper()
        result = run_python(
            code,
            env={
                "LAYER_BASE_URL": collector.url,
                "LAYER_APPLICATION_ID": APP_ID,
                f"{prefix}_BASE_URL": server.url,
                f"{prefix}_API_KEY": "sk-test",
            },
        )
        assert result.returncode == 0, result.stderr
        assert len(server.requests) == 3
        assert all("x-layer-session-id" not in r.headers for r in server.requests)
    (session,) = collector.sessions
    kinds = [action["kind"] for action in session["actions"]]
    assert {kind: kinds.count(kind) for kind in kinds} == expected


#: Examples that are a user's test files: example -> the tests in it, each of which must pass.
PYTEST_EXAMPLES = {"test_with_pytest.py": 2}


@pytest.mark.parametrize("example", sorted(PYTEST_EXAMPLES))
def test_the_pytest_example_passes_with_the_plugin_from_its_entry_point(
    example: str, tmp_path: Path
) -> None:
    """Copied alone into a folder, as in a user's project: no conftest.py names the plugin,
    so its fixtures can only come from the installed package's pytest11 entry point."""
    shutil.copy(ROOT / "examples" / example, tmp_path / example)
    env = {name: value for name, value in os.environ.items() if not name.startswith("LAYER_")}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", example],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{PYTEST_EXAMPLES[example]} passed" in result.stdout.splitlines()[-1]
