"""The pytest plugin: its fixtures, as a user's test suite gets them (through the entry point).

The tests that run a user's suite do it in a child pytest (``pytester.runpytest_subprocess``),
which loads the plugin the way an installed package's is loaded: by its ``pytest11`` entry
point, with no ``conftest.py`` naming it. The others use the fixtures in this suite, where
the plugin is loaded the same way.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable

import pytest

from layer_sdk import Client, SessionActionKind, layer
from layer_sdk.collector import LocalCollector
from layer_sdk.testing import APPLICATION_ID, LayerRecords

from . import conftest
from .helpers import run_python
from .openai_server import ANSWER, OpenAIServer

pytest_plugins = ["pytester"]

PROMPT = SessionActionKind.COMPLETION_PROMPT
OUTPUT = SessionActionKind.COMPLETION_OUTPUT


@pytest.fixture
def run_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., pytest.RunResult]:
    """Run the files made in ``pytester``'s folder in a child pytest, as a user would, with
    the given environment variables."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)

    def run(*args: str, **env: str) -> pytest.RunResult:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)

    return run


def test_the_entry_point_names_the_plugin_module() -> None:
    (entry,) = [
        entry
        for entry in importlib.metadata.entry_points(group="pytest11")
        if entry.dist is not None and entry.dist.name == "layer-api-client"
    ]
    assert (entry.name, entry.value) == ("layer_sdk", "_layer_sdk_pytest")


def test_the_fixtures_need_no_import_and_no_conftest(
    pytester: pytest.Pytester, run_suite: Callable[..., pytest.RunResult]
) -> None:
    pytester.makepyfile(
        test_app="""
        from layer_sdk import SessionActionKind, layer

        def test_records(layer_records):
            session_id = layer.create_session(attributes={"user.id": "u-1"})
            layer.append_action(session_id, kind=SessionActionKind.COMPLETION_PROMPT,
                                data={"messages": [{"role": "user", "content": "hi"}]})
            assert layer_records.sessions[0]["attributes"]["user.id"] == "u-1"
            assert layer_records.prompts() == ["hi"]

        def test_collector_and_client(layer_collector, layer_client):
            assert layer_client is layer
            layer_collector.fail_next(1, 503, retry_after=0.05)
            layer_client.create_session()
            assert layer_client.flush(10)
            assert layer_collector.event_count == 1
        """
    )
    result = run_suite()
    result.assert_outcomes(passed=2)
    result = run_suite("-p", "no:layer_sdk")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'layer_records' not found*"])


def test_teardown_delivers_what_is_queued_then_shuts_down_and_stops(
    pytester: pytest.Pytester, run_suite: Callable[..., pytest.RunResult]
) -> None:
    pytester.makepyfile(
        test_order="""
        import socket
        from layer_sdk import SessionActionKind, layer

        seen = {}

        def test_records_without_waiting(layer_collector):
            seen["collector"] = layer_collector
            session_id = layer.create_session()
            for n in range(50):
                layer.append_action(session_id, kind=SessionActionKind.COMPLETION_PROMPT,
                                    data={"n": n})

        def test_afterwards():
            collector = seen["collector"]
            assert collector.event_count == 51
            assert repr(layer).endswith("shut down)")
            assert layer.stats().sent == 51
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", collector.port)) != 0
        """
    )
    run_suite().assert_outcomes(passed=2)


def test_init_options_come_from_a_conftest_and_the_shell_stays_out(
    pytester: pytest.Pytester, run_suite: Callable[..., pytest.RunResult]
) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def layer_init_options():
            return {"environment": "CI", "platform": "pytest"}
        """
    )
    pytester.makepyfile(
        test_options="""
        import os
        from layer_sdk import layer

        def test_options(layer_records):
            layer.create_session()
            (session,) = layer_records.sessions
            assert session["attributes"]["environment"] == "ci"
            assert session["attributes"]["platform"] == "pytest"
            assert os.environ["LAYER_ENABLED"] == "false"  # hidden during init() only
            assert layer.stats().disabled is False
        """
    )
    shell = {
        "LAYER_ENABLED": "false",
        "LAYER_BASE_URL": "http://127.0.0.1:9",
        "LAYER_OIDC_CLIENT_ID": "incomplete",
        "LAYER_FIREWALL_BASE_URL": "http://127.0.0.1:9",
    }
    run_suite(**shell).assert_outcomes(passed=1)


def test_a_client_initialized_at_import_is_named_as_the_problem(
    pytester: pytest.Pytester, run_suite: Callable[..., pytest.RunResult]
) -> None:
    pytester.makepyfile(
        test_early="""
        from layer_sdk import layer

        layer.init(enabled=False)  # the application under test does this at import

        def test_it(layer_collector):
            pass
        """
    )
    result = run_suite()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "layer_collector initializes the global layer, but this client is already "
            "initialized with other settings (enabled, base_url, application_id, flush_interval"
            "*If your code calls layer.init() at import, call it where tests do not run it*"
        ]
    )


def test_a_lost_event_fails_the_read(
    layer_collector: LocalCollector, layer_records: LayerRecords
) -> None:
    layer_collector.fail_next(1, 400)  # refused for good
    layer.create_session()
    with pytest.raises(AssertionError, match=r"failed \{'rejected': 1\}"):
        layer_records.sessions  # noqa: B018 (the read is the test)
    layer.create_session()
    assert len(layer_records.sessions) == 1  # a later read sees the next delivery


def test_prompts_and_outputs_of_an_instrumented_openai_call(
    layer_records: LayerRecords, layer_client: Client
) -> None:
    openai = pytest.importorskip("openai")
    with OpenAIServer() as server:
        chat = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
        messages = [
            {"role": "system", "content": "You plan trips."},
            {"role": "user", "content": [{"type": "text", "text": "Plan a weekend in Lisbon"}]},
        ]
        chat.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert layer_records.prompts() == ["Plan a weekend in Lisbon"]
    assert layer_records.prompts(role="system") == ["You plan trips."]
    assert layer_records.outputs() == [ANSWER]
    (session,) = layer_records.sessions
    assert session["application_id"] == APPLICATION_ID
    assert [action["kind"] for action in layer_records.actions()] == [
        "completion_prompt",
        "completion_output",
    ]
    (output,) = layer_records.actions(OUTPUT, session_id=session["session_id"])
    assert output["data"] == session["actions"][1]["data"]
    assert layer_records.actions(OUTPUT, session_id=APPLICATION_ID) == []


def test_our_own_fixtures_do_not_clash_with_the_plugin(request: pytest.FixtureRequest) -> None:
    ours = {name for name, value in vars(conftest).items() if hasattr(value, "_fixture_function")}
    assert ours and not [name for name in ours if name.startswith("layer_")]
    plugin = importlib.import_module("_layer_sdk_pytest")
    theirs = {name for name, value in vars(plugin).items() if hasattr(value, "_fixture_function")}
    assert theirs == {"layer_collector", "layer_client", "layer_records", "layer_init_options"}
    assert request.config.pluginmanager.get_plugin("layer_sdk") is plugin


def test_the_plugin_imports_no_sdk_and_the_sdk_no_pytest() -> None:
    code = (
        "import sys, _layer_sdk_pytest\n"
        "assert 'layer_sdk' not in sys.modules, 'the plugin imported the SDK'\n"
        "del sys.modules['pytest']\n"
        "import layer_sdk, layer_sdk.testing, layer_sdk.collector\n"
        "assert 'pytest' not in sys.modules, 'the SDK imported pytest'\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_layer_records_read_content_parts_and_missing_messages(
    layer_records: LayerRecords,
) -> None:
    session_id = layer.create_session()
    layer.append_action(session_id, kind=PROMPT, data={"not": "messages"})
    turns = [("user", "first"), ("assistant", "answer"), ("user", "second")]
    conversation = [{"role": role, "content": text} for role, text in turns]
    layer.append_action(session_id, kind=PROMPT, data={"messages": conversation})
    layer.append_action(
        session_id,
        kind=OUTPUT,
        data={
            "messages": [
                {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
                {"role": "assistant", "content": "b"},
            ]
        },
    )
    assert layer_records.prompts() == ["", "second"]
    assert layer_records.prompts(role=None) == ["", "second"]
    assert layer_records.prompts(role="assistant") == ["", "answer"]
    assert layer_records.outputs() == ["a\nb"]
    assert os.environ.get("LAYER_ENABLED") is None
