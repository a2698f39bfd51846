"""What the documentation states about the code agrees with the code: the options of
``init()``, the loss reasons, the provider versions tested, the figures measured, the
version number, the links, and the README's test command.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from layer_sdk import __version__
from layer_sdk._config import Config
from layer_sdk._export._losses import LOSS_REASONS
from layer_sdk._version import DISTRIBUTION, SOURCE, USER_AGENT

from .docs_pages import PAGES, anchors, tables, without_code
from .helpers import ROOT

DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def table_with_header(page: Path, first: str) -> list[list[str]]:
    """The one table of ``page`` whose first header cell is ``first``."""
    (table,) = [table for table in tables(page) if table[0][0] == first]
    return table


def code_names(cell: str) -> list[str]:
    """The names written as code in a table cell: ``a``, ``b`` -> [a, b]."""
    return re.findall(r"`([^`]+)`", cell)


# -- configuration ----------------------------------------------------------------------


def documented_default(field: dataclasses.Field[Any]) -> str:
    """How docs/configuration.md writes a field's default."""
    default = field.default
    if field.metadata["required"]:
        return "required"
    if default is None or default == frozenset():
        return "none"
    if isinstance(default, (bool, str)):
        return f"`{default!r}`".replace("'", '"')
    if isinstance(default, float):
        return f"{default:g} s"
    if field.name.endswith("_bytes"):
        return f"{default // (1024 * 1024)} MiB"
    return f"{default:,}"


def test_the_configuration_table_lists_every_option_with_its_variables_and_default() -> None:
    rows = table_with_header(DOCS / "configuration.md", "option")[1:]
    documented = {code_names(row[0])[0]: row for row in rows}
    fields = {field.name: field for field in dataclasses.fields(Config)}
    assert list(documented) == list(fields)  # every option, in the order of _config.py
    for name, field in fields.items():
        _, variables, default, _meaning = documented[name]
        assert code_names(variables) == list(field.metadata["env"]), name
        assert default == documented_default(field), name


# -- delivery ---------------------------------------------------------------------------


def test_the_delivery_page_explains_every_loss_reason() -> None:
    rows = table_with_header(DOCS / "delivery.md", "reason")[1:]
    reasons = [code_names(row[0])[0] for row in rows]
    assert sorted(reasons) == sorted(LOSS_REASONS)


# -- provider versions --------------------------------------------------------------------

#: The header of each version table of docs/instrumentation.md -> the version matrix.
VERSION_TABLES = {
    "openai": "test_openai_versions.py",
    "anthropic": "test_anthropic_versions.py",
    "google-genai": "test_google_genai_versions.py",
}


def pinned_versions(matrix: str, package: str) -> list[str]:
    """The versions the matrix pins, read from its source (whatever Python runs this)."""
    text = (ROOT / "tests" / matrix).read_text()
    return re.findall(rf'"{re.escape(package)}==([\d.]+)"', text)


@pytest.mark.parametrize("package", sorted(VERSION_TABLES))
def test_each_version_table_has_a_column_per_version_the_matrix_tests(package: str) -> None:
    """One column per pinned version, in order, then "newest": what the extra installs,
    which the main test run uses. A footnote mark after a version is allowed."""
    pinned = pinned_versions(VERSION_TABLES[package], package)
    assert pinned, VERSION_TABLES[package]
    page = tables(DOCS / "instrumentation.md")
    headers = [table[0] for table in page if table[0][0].startswith("call shape")]
    columns = [[cell.split()[0] for cell in header[1:]] for header in headers]
    assert [*pinned, "newest"] in columns


def test_the_newest_version_installed_is_newer_than_every_column() -> None:
    """The main environment runs the provider tests under what the extras install: newer
    than every pinned column, or the "newest" column would claim an untested version."""
    for package, matrix in VERSION_TABLES.items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
        pinned = [tuple(map(int, v.split("."))) for v in pinned_versions(matrix, package)]
        if package == "google-genai" and sys.version_info < (3, 11):
            pinned = [v for v in pinned if v < (2, 1)]  # 2.1 and later need Python 3.11
        assert tuple(map(int, installed.split(".")[:3])) >= max(pinned), (package, installed)


# -- figures ------------------------------------------------------------------------------


def result_rows() -> list[list[str]]:
    return [row for table in tables(RESULTS) for row in table]


def test_every_row_of_the_performance_page_is_a_row_of_the_results() -> None:
    """Copied from benchmarks/RESULTS.md, figures, targets and "met?" alike: when a new run
    changes a figure, this names the row to copy again."""
    results = result_rows()
    page_tables = tables(DOCS / "performance.md")
    assert page_tables
    stale = [row for table in page_tables for row in table if row not in results]
    assert stale == [], "rows not in benchmarks/RESULTS.md (copy them again from it)"


#: A measured figure: a number with the unit of a cost, a rate or a ratio.
FIGURE = re.compile(r"(?<![\w.])(-?\d[\d,]*(?:\.\d+)?) ?(µs|ms|events/s|actions/s|spans/s|x\b|%)")


def test_every_figure_quoted_in_the_docs_comes_from_the_results() -> None:
    """A cost, rate or ratio written in the README or docs/ is a figure of RESULTS.md (the
    number, as a number of it), not typed by hand."""
    numbers = set(re.findall(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?", RESULTS.read_text()))
    typed = [
        f"{page.relative_to(ROOT)}: {m.group(0)}"
        for page in PAGES
        for m in FIGURE.finditer(page.read_text())
        if m.group(1) not in numbers
    ]
    assert typed == []


# -- one version number -------------------------------------------------------------------


def test_one_version_number_everywhere() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, flags=re.MULTILINE)
    assert released and released[0] == __version__
    assert importlib.metadata.version(DISTRIBUTION) == __version__
    assert f"layer-sdk-python/{__version__}" == USER_AGENT
    assert f"layer-python-sdk/{__version__}" == SOURCE
    quoted = [
        (page.name, m.group(1))
        for page in PAGES
        for m in re.finditer(
            r"(?:layer-sdk |layer-python-sdk/|layer-sdk-python/)(\d+\.\d+\.\d+)", page.read_text()
        )
    ]
    assert [q for q in quoted if q[1] != __version__] == []


# -- links --------------------------------------------------------------------------------

def test_every_relative_link_reaches_a_file_and_heading() -> None:
    broken = []
    for page in [*PAGES, ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", without_code(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


# -- the README ---------------------------------------------------------------------------


def test_the_readme_is_a_front_page() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_the_readme_s_test_command_is_the_one_ci_runs() -> None:
    command = "python -m pip install -e '.[dev,openai,anthropic]' && python -m pytest"
    readme = (ROOT / "README.md").read_text()
    assert f"```sh\n{command}\n```" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert f"\n{command} ||" in ci
