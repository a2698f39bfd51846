"""The google-genai instrumentation tests, once per version line of ``google-genai``.

The main environment has the newest google-genai its Python takes (the
``google-genai`` extra: 3.x needs Python 3.11, 2.0 is the last line that
installs on 3.10). For an early 1.x, a later one, the last 1.x and 2.0,
``tests/test_google_genai.py`` and the provider contract suite run inside a
cached virtual environment with that ``google-genai`` (``version_matrix.py``:
where they are kept, how they are built); on Python 3.11 and later, the
current 3.x runs there too, so that the matrix is complete on its own.

Deselect locally with ``-m "not matrix"``; CI runs them.
"""

from __future__ import annotations

import sys

import pytest

from .version_matrix import matrix_test

pytestmark = pytest.mark.matrix

#: name -> the requirements that pin it.
VERSIONS: dict[str, list[str]] = {
    "google-genai-1.10": ["google-genai==1.10.0"],
    "google-genai-1.40": ["google-genai==1.40.0"],
    "google-genai-1.75": ["google-genai==1.75.0"],
    "google-genai-2.0": ["google-genai==2.0.0"],
}
if sys.version_info >= (3, 11):  # 2.1 and later need Python 3.11
    VERSIONS["google-genai-3.6"] = ["google-genai==3.6.1"]


test_instrumentation_tests_pass_with = matrix_test(
    "google.genai",
    VERSIONS,
    ["tests/test_google_genai.py", "tests/test_provider_contract.py"],
    doc="test_google_genai.py and the contract suite pass under this google-genai version.",
    at_least=40,
)
