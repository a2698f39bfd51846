"""The package type-checks (mypy --strict) and lints clean (ruff), as users' tools will see it."""

from __future__ import annotations

import ast
import subprocess
import sys

from .helpers import ROOT


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    wanted = ("layer_sdk", "_layer_sdk_pytest.py", "tests", "benchmarks", "examples")
    folders = [name for name in wanted if (ROOT / name).exists()]
    result = run(sys.executable, "-m", "ruff", "check", *folders)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_on_the_package() -> None:
    result = run(sys.executable, "-m", "mypy", "--strict", "layer_sdk", "_layer_sdk_pytest.py")
    assert result.returncode == 0, result.stdout + result.stderr


def internal_imports() -> dict[str, set[str]]:
    """Module -> the modules of layer_sdk it imports: every import statement, at the top,
    inside a function or under TYPE_CHECKING (a cycle hidden there is a cycle all the same)."""
    package = ROOT / "layer_sdk"
    modules = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (
                    here[: len(here) - node.level + 1] + ([node.module] if node.module else [])
                    if node.level
                    else (node.module or "").split(".")
                )
                targets = [".".join([*base, alias.name]) for alias in node.names]
                targets = [t if t in modules else ".".join(base) for t in targets]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_imports_inside_the_package_point_one_way() -> None:
    """docs/architecture.md, Package map: no import cycle inside layer_sdk."""
    graph = internal_imports()
    assert "layer_sdk._export._worker" in graph["layer_sdk._export._exporter"]  # it reads them
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


#: Heavy modules an application that never uses them must not pay for at import.
NOT_IMPORTED = ("asyncio", "openai", "anthropic", "google.genai", "opentelemetry", "rich")


def test_importing_the_package_loads_nothing_it_does_not_need_yet() -> None:
    """``import layer_sdk`` (and ``init()``, which starts the senders) load no provider SDK,
    no OpenTelemetry and no asyncio: an application that never awaits pays nothing for
    the asyncio entry points (they import it when called, from a running loop)."""
    code = (
        "import sys, layer_sdk\n"
        "layer_sdk.layer.init(base_url='http://127.0.0.1:9', application_id='app')\n"
        f"names = {NOT_IMPORTED!r}\n"
        "print(sorted(n for n in names if n in sys.modules))\n"
        "layer_sdk.layer.shutdown(0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
