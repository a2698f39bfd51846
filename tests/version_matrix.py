"""The machinery of the provider version matrices (``test_openai_versions.py``,
``test_anthropic_versions.py``): a provider's instrumentation tests, run inside
a cached virtual environment of another version of that provider.

Each environment has the pinned provider and the SDK's own dependencies; it is
built once and cached under ``$LAYER_TEST_VENVS`` (default ``.pytest-venvs/``
in the repository), and the test file runs inside it against this work tree
(``PYTHONPATH``). A cached run takes well under a minute; the first build
downloads from the package index.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import ROOT

#: What a provider's test file needs besides the provider (the SDK itself comes from PYTHONPATH).
COMMON = ["msgspec>=0.18", "requests>=2.31", "urllib3>=1.26.18", "pytest>=8", "pytest-timeout>=2.3"]
BUILD_TIMEOUT = 600
RUN_TIMEOUT = 300


BUILD_TIMEOUT = 600
RUN_TIMEOUT = 300


def venv_root() -> Path:
    return Path(os.environ.get("LAYER_TEST_VENVS") or ROOT / ".pytest-venvs")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One builder at a time per environment (parallel test runs, several checkouts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_env() -> dict[str, str]:
    """This environment without what would leak the outer Python into the virtual one."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "PYTEST_", "VIRTUAL_ENV"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def environment(name: str, requirements: list[str]) -> Path:
    """The python of a cached virtual environment with ``requirements``; built when missing."""
    wanted = "\n".join([f"python {sys.version_info[0]}.{sys.version_info[1]}", *requirements])
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:10]
    folder = venv_root() / f"{name}-py{sys.version_info[0]}{sys.version_info[1]}-{digest}"
    python = folder / "bin" / "python"
    ready = folder / ".layer-ready"
    with locked(folder.with_name(folder.name + ".lock")):
        if ready.exists() and python.exists() and ready.read_text() == wanted:
            return python
        shutil.rmtree(folder, ignore_errors=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(folder)
        install = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                *requirements,
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=BUILD_TIMEOUT,
        )
        if install.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            pytest.fail(
                f"could not build the {name} environment:\n{install.stdout}{install.stderr}"
            )
        ready.write_text(wanted)
    return python


def by_version(names: list[str]) -> list[str]:
    """``names`` like ``openai-1.18`` in version order (not text order: 1.109 after 1.55)."""
    return sorted(names, key=lambda n: [int(p) for p in n.rsplit("-", 1)[1].split(".")])


def run_tests_with(
    package: str, requirements: list[str], name: str, test_files: list[str], at_least: int
) -> None:
    """Run ``test_files`` in the environment ``name`` (``requirements``: the pinned ``package``
    first); fails unless the pinned version is the one imported and at least ``at_least``
    tests passed. The provider contract suite, among them, runs for this provider only:
    the other providers' SDKs are not in the environment, and their tests skip."""
    python = environment(name, [*requirements, *COMMON])
    pinned = requirements[0].split("==")[1]
    env = {**clean_env(), "PYTHONPATH": str(ROOT)}
    version = subprocess.run(
        [str(python), "-c", f"import {package}; print({package}.__version__)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert version.stdout.strip() == pinned, version.stderr
    result = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            *test_files,
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            "--color=no",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{package} {pinned}:\n{output[-8000:]}"
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) >= at_least, (
        f"{package} {pinned} ran too few tests:\n{output}"
    )


def matrix_test(
    package: str, versions: dict[str, list[str]], test_files: list[str], at_least: int, doc: str
) -> Any:
    """The matrix test of a provider: ``test_files`` once per entry of ``versions`` (name ->
    requirements, the pinned ``package`` first), each run needing ``at_least`` passed tests;
    ``doc`` its docstring. ``package`` is the name ``import`` takes (``google.genai``)."""

    @pytest.mark.timeout(BUILD_TIMEOUT + RUN_TIMEOUT + 60)
    @pytest.mark.parametrize("name", by_version(list(versions)))
    def test_instrumentation_tests_pass_with(name: str) -> None:
        run_tests_with(package, versions[name], name, test_files, at_least)

    test_instrumentation_tests_pass_with.__doc__ = doc
    return test_instrumentation_tests_pass_with
