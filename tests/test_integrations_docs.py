"""The code of each page of docs/integrations/ runs as written, and reports what the page says.

A page's ``python`` blocks run one after the other in one fresh interpreter,
as a reader pasting them in order would, against a local collector.
"""

from __future__ import annotations

import re

import pytest

from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, ROOT, run_python

DOCS = ROOT / "docs" / "integrations"

#: page -> (sessions, actions) the collector must receive from its code, and what it prints.
PAGES = {
    "asgi.md": (2, 3, "Once upon a time\n"),
    "wsgi.md": (2, 3, "Once upon a time\n"),
    "celery.md": (2, 2, ""),
    "aws-lambda.md": (1, 1, "{'statusCode': 200}\n0\n{'statusCode': 204}\n"),
}

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(page: str) -> list[str]:
    return _BLOCK.findall((DOCS / page).read_text())


def test_every_page_is_covered() -> None:
    assert {path.name for path in DOCS.glob("*.md")} == set(PAGES)
    assert all(python_blocks(page) for page in PAGES)


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_page_code_runs_and_reports(page: str, collector: LocalCollector) -> None:
    pytest.importorskip(
        {"asgi.md": "fastapi", "wsgi.md": "flask", "celery.md": "celery"}.get(page, "layer_sdk")
    )
    code = "\n\n".join(python_blocks(page))
    result = run_python(code, env={"LAYER_BASE_URL": collector.url, "LAYER_APPLICATION_ID": APP_ID})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a warning
    sessions, actions, printed = PAGES[page]
    assert len(collector.sessions) == sessions
    assert len(collector.actions()) == actions
    assert result.stdout == printed
