"""The OpenAI instrumentation tests, once per supported major version of ``openai``.

The main environment has the current 3.x (the ``openai`` extra). For each older line,
``tests/test_openai.py`` and the provider contract suite run inside a cached virtual
environment with that ``openai`` (``version_matrix.py``: where they are kept, how they
are built).

Deselect locally with ``-m "not matrix"``; CI runs them.
"""

from __future__ import annotations

import pytest

from .version_matrix import matrix_test

pytestmark = pytest.mark.matrix

#: name -> the requirements that pin it. 1.18-1.55 need httpx<0.28 (0.28 removed
#: the ``proxies`` argument they pass).
VERSIONS: dict[str, list[str]] = {
    "openai-1.18": ["openai==1.18.0", "httpx<0.28"],
    "openai-1.55": ["openai==1.55.3", "httpx<0.28"],
    "openai-1.109": ["openai==1.109.1"],
    "openai-2.54": ["openai==2.54.0"],
}


test_instrumentation_tests_pass_with = matrix_test(
    "openai",
    VERSIONS,
    ["tests/test_openai.py", "tests/test_provider_contract.py"],
    doc="tests/test_openai.py and the contract suite pass under this openai version.",
    at_least=30,
)
