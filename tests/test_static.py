"""The package type-checks (mypy --strict) and lints clean (ruff), as users' tools will see it."""

from __future__ import annotations

import subprocess
import sys

from .helpers import ROOT


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    wanted = ("layer_sdk", "tests", "benchmarks", "examples")
    folders = [name for name in wanted if (ROOT / name).is_dir()]
    result = run(sys.executable, "-m", "ruff", "check", *folders)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_passes_on_the_package() -> None:
    result = run(sys.executable, "-m", "mypy", "--strict", "layer_sdk")
    assert result.returncode == 0, result.stdout + result.stderr
