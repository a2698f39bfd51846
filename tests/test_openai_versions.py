"""The OpenAI instrumentation tests, once per supported major version of ``openai``.

The main environment has the current 3.x (the ``openai`` extra). For each
older line, a virtual environment with that ``openai`` and the SDK's own
dependencies is built once and cached (under ``$LAYER_TEST_VENVS``, default
``.pytest-venvs/`` in the repository), and ``tests/test_openai.py`` runs inside
it against this work tree (``PYTHONPATH``). A cached run takes well under a
minute; the first build downloads from the package index.

Deselect locally with ``-m "not matrix"``; CI runs them.
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

import pytest

from .helpers import ROOT

pytestmark = pytest.mark.matrix

#: name -> the requirements that pin it. 1.18-1.55 need httpx<0.28 (0.28 removed
#: the ``proxies`` argument they pass).
VERSIONS: dict[str, list[str]] = {
    "openai-1.18": ["openai==1.18.0", "httpx<0.28"],
    "openai-1.55": ["openai==1.55.3", "httpx<0.28"],
    "openai-1.109": ["openai==1.109.1"],
    "openai-2.54": ["openai==2.54.0"],
}
#: What tests/test_openai.py needs besides openai (the SDK itself comes from PYTHONPATH).
COMMON = ["msgspec>=0.18", "requests>=2.31", "urllib3>=1.26.18", "pytest>=8", "pytest-timeout>=2.3"]
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


@pytest.mark.timeout(BUILD_TIMEOUT + RUN_TIMEOUT + 60)
@pytest.mark.parametrize("name", sorted(VERSIONS, key=lambda n: [int(p) for p in n[7:].split(".")]))
def test_instrumentation_tests_pass_with(name: str) -> None:
    requirements = [*VERSIONS[name], *COMMON]
    python = environment(name, requirements)
    pinned = requirements[0].split("==")[1]
    env = {**clean_env(), "PYTHONPATH": str(ROOT)}
    version = subprocess.run(
        [str(python), "-c", "import openai; print(openai.__version__)"],
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
            "tests/test_openai.py",
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
    assert result.returncode == 0, f"openai {pinned}:\n{output[-8000:]}"
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) >= 30, f"openai {pinned} ran too few tests:\n{output}"
