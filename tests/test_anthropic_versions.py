"""The Anthropic instrumentation tests, once per supported version line of ``anthropic``.

The main environment has the current 2.x (the ``anthropic`` extra). For an early
supported 0.x (0.40), the last 0.x and the last 1.x, ``tests/test_anthropic.py`` and the
provider contract suite run inside a cached virtual environment with that ``anthropic``
(``version_matrix.py``: where they are kept, how they are built); 2.14 runs there too,
so that the matrix is complete on its own.

Deselect locally with ``-m "not matrix"``; CI runs them.
"""

from __future__ import annotations

import pytest

from .version_matrix import matrix_test

pytestmark = pytest.mark.matrix

#: name -> the requirements that pin it.
VERSIONS: dict[str, list[str]] = {
    "anthropic-0.40": ["anthropic==0.40.0"],
    "anthropic-0.125": ["anthropic==0.125.0"],
    "anthropic-1.17": ["anthropic==1.17.0"],
    "anthropic-2.14": ["anthropic==2.14.0"],
}


test_instrumentation_tests_pass_with = matrix_test(
    "anthropic",
    VERSIONS,
    ["tests/test_anthropic.py", "tests/test_provider_contract.py"],
    doc="Every call shape of this anthropic version, recorded.",
    at_least=40,
)
