"""Every ``python`` block of README.md and docs/ runs as a reader would run it, and does what
its page says.

Each block runs in a fresh interpreter, from a file of its own, with ``LAYER_BASE_URL``
and ``LAYER_APPLICATION_ID`` pointing at a local collector (and ``http://127.0.0.1:8080``,
the address ``layer-sdk collector`` listens on, replaced by the collector's URL), and
``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL`` and ``GOOGLE_GEMINI_BASE_URL`` at the local
provider servers, each with a key. A block must exit with 0 and write nothing to stderr
(not even a warning); the collector must refuse none of its requests, and no provider
server may see Layer's session header. The ``<!-- snippet: ... -->`` comment after a
block says what else holds (``tests/docs_pages.py``): exactly how many sessions, actions
and provider requests arrive, what it prints, or why it cannot run alone.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from layer_sdk.collector import LocalCollector

from .anthropic_server import AnthropicServer
from .docs_pages import PAGES, Block, Note, blocks, parse_note, python_blocks
from .google_genai_server import GoogleGenAIServer
from .helpers import APP_ID, ROOT
from .openai_server import OpenAIServer
from .provider_server import ProviderServer

#: The address of ``layer-sdk collector``, as the README's quick start writes it.
COLLECTOR_ADDRESS = "http://127.0.0.1:8080"
#: Blocks that cannot run alone, each marked ``skip:`` with its reason. Few, and counted:
#: a new one must be added here on purpose.
SKIPPED = 3
RUN_TIMEOUT = 120


@dataclasses.dataclass
class Snippet:
    """What runs as one program: a block, and the blocks marked ``continued`` after it."""

    blocks: list[Block]
    note: Note  # the last block's: what the whole program must report

    @property
    def where(self) -> str:
        return self.blocks[0].where

    @property
    def code(self) -> str:
        return "\n".join(block.code for block in self.blocks)

    @property
    def printed(self) -> str | None:
        outputs = [block.output.code for block in self.blocks if block.output is not None]
        return "".join(outputs) if outputs else None


def gather() -> tuple[list[Snippet], list[Block]]:
    """The snippets of every page, and the blocks marked ``skip:``."""
    snippets: list[Snippet] = []
    skipped: list[Block] = []
    for page in PAGES:
        current: Snippet | None = None
        for block in python_blocks(page):
            note = parse_note(block.note)
            if note.skip is not None:
                skipped.append(block)
                current = None
            elif note.continued:
                assert current is not None, f"{block.where}: 'continued', but nothing before"
                assert not current.note.counts, f"{current.blocks[-1].where}: counts before the end"
                current.blocks.append(block)
                current.note = note
            else:
                current = Snippet([block], note)
                snippets.append(current)
    return snippets, skipped


SNIPPETS, SKIPPED_BLOCKS = gather()


def test_few_blocks_are_skipped_and_each_says_why() -> None:
    assert len(SKIPPED_BLOCKS) == SKIPPED, [(b.where, b.note) for b in SKIPPED_BLOCKS]


def test_every_snippet_says_what_it_reports() -> None:
    """Exact counts for every program (a test file says how many tests pass instead)."""
    vague = [
        s.where
        for s in SNIPPETS
        if not ({"sessions", "actions"} <= set(s.note.counts) or "pytest" in s.note.counts)
    ]
    assert vague == []


def test_python_code_is_fenced_as_python() -> None:
    """A block fenced ``py``, ``python3`` or ``pycon`` would escape these tests."""
    languages = {block.language for page in PAGES for block in blocks(page)}
    assert languages <= {"python", "text", "console", "sh", "toml"}, languages


# -- running them -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, ProviderServer]]:
    with OpenAIServer() as openai, AnthropicServer() as anthropic, GoogleGenAIServer() as google:
        yield {"openai": openai, "anthropic": anthropic, "google": google}


def environment(collector: LocalCollector, providers: dict[str, ProviderServer]) -> dict[str, str]:
    """This environment without the settings a developer's shell may hold, and with ours."""
    ours = ("LAYER_", "OPENAI_", "ANTHROPIC_", "GOOGLE_", "GEMINI_", "OTEL_", "PYTEST_")
    env = {name: value for name, value in os.environ.items() if not name.startswith(ours)}
    env.update(
        PYTHONPATH=str(ROOT),
        LAYER_BASE_URL=collector.url,
        LAYER_APPLICATION_ID=APP_ID,
        OPENAI_BASE_URL=providers["openai"].url,
        OPENAI_API_KEY="sk-test",
        ANTHROPIC_BASE_URL=providers["anthropic"].url,
        ANTHROPIC_API_KEY="sk-ant-test",
        GOOGLE_GEMINI_BASE_URL=providers["google"].url,
        GOOGLE_API_KEY="gk-test",
    )
    return env


def skip_unless_importable(code: str) -> None:
    """Skip when a package the block imports is not installed (the dev extra has them all)."""
    for node in ast.walk(ast.parse(code)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and importlib.util.find_spec(top) is None:
                pytest.skip(f"{top} is not installed")


def matches(expected: str, printed: str) -> bool:
    """``printed`` is ``expected``, where a ``…`` stands for any text within a line."""
    pattern = "[^\n]*".join(re.escape(piece) for piece in expected.split("…"))
    return re.fullmatch(pattern, printed) is not None


def run_script(path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args, path.name],
        cwd=path.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_the_snippet_runs_and_does_what_its_page_says(
    snippet: Snippet,
    collector: LocalCollector,
    providers: dict[str, ProviderServer],
    tmp_path: Path,
) -> None:
    skip_unless_importable(snippet.code)
    note = snippet.note
    env = environment(collector, providers)
    if "pytest" in note.counts:
        test_file = tmp_path / "test_snippet.py"
        test_file.write_text(snippet.code)
        result = run_script(test_file, env, "-m", "pytest", "-p", "no:cacheprovider", "-q")
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.splitlines()[-1].startswith(f"{note.counts['pytest']} passed")
        return
    for variable in note.unset:
        env.pop(variable)
    before = {name: len(server.requests) for name, server in providers.items()}
    script = tmp_path / "snippet.py"
    script.write_text(snippet.code.replace(COLLECTOR_ADDRESS, collector.url))
    for check in PRECONDITIONS.get(note.id or "", []):
        check()

    result = run_script(script, env)

    assert result.returncode == 0, result.stderr
    if note.warns:  # the SDK's warnings, which reach stderr with no logging configured
        warnings = result.stderr.splitlines()
        assert warnings and all(line.startswith("layer-sdk") for line in warnings), result.stderr
    else:
        assert result.stderr == ""
    if snippet.printed is not None:
        assert matches(snippet.printed, result.stdout), result.stdout
    assert [r.status for r in collector.requests if r.status // 100 != 2] == []
    assert len(collector.sessions) == note.counts["sessions"]
    assert len(collector.actions()) == note.counts["actions"]
    sent = [r for name, s in providers.items() for r in s.requests[before[name] :]]
    assert not [r for r in sent if {"x-layer-session-id", "layer-session-id"} & set(r.headers)]
    assert len(sent) == note.counts.get("provider_requests", 0)
    for check_after in CHECKS.get(note.id or "", []):
        check_after(collector)


# -- more checks of some snippets, by their id=... -----------------------------------------


def _genai_reads_its_base_url() -> None:
    genai = pytest.importorskip("google.genai")
    if not hasattr(genai, "_base_url"):
        pytest.skip(f"google-genai {genai.__version__} reads no GOOGLE_GEMINI_BASE_URL")


def _google_sessions(collector: LocalCollector) -> None:
    """The session_context's two calls, and the call with its own session."""
    assert sorted(len(s["actions"]) for s in collector.sessions) == [2, 4]


def _langchain_run_in_order(collector: LocalCollector) -> None:
    """One LangChain run, one session: both model calls and the tool between them, in order."""
    (session,) = collector.sessions
    actions = collector.actions(session["session_id"])
    assert [action["kind"] for action in actions] == [
        "completion_prompt",
        "completion_output",
        "completion_tool_call",  # the model asks for the tool
        "completion_tool_call",  # the tool runs
        "completion_prompt",
        "completion_output",
    ]
    assert actions[3]["data"]["result"].count("Sunny in Paris") == 1


PRECONDITIONS: dict[str, list[Callable[[], Any]]] = {"google-genai": [_genai_reads_its_base_url]}
CHECKS: dict[str, list[Callable[[LocalCollector], Any]]] = {
    "google-genai": [_google_sessions],
    "langchain-agent": [_langchain_run_in_order],
}


def test_every_id_with_checks_names_a_snippet() -> None:
    ids = {s.note.id for s in SNIPPETS}
    assert set(CHECKS) | set(PRECONDITIONS) <= ids
