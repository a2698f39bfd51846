"""What the package is called: on the index, on the command line, and on the wire."""

from __future__ import annotations

import importlib.metadata
import re

from layer_sdk import __version__
from layer_sdk._version import DISTRIBUTION, SOURCE, USER_AGENT
from layer_sdk.collector import LocalCollector

from .helpers import ROOT, MakeClient


def test_the_installed_distribution_is_ours_not_the_index_s_layer_sdk() -> None:
    metadata = importlib.metadata.metadata(DISTRIBUTION)
    assert metadata["Name"] == DISTRIBUTION == "layer-api-client"
    assert importlib.metadata.version(DISTRIBUTION) == __version__
    (script,) = [
        entry
        for entry in importlib.metadata.entry_points(group="console_scripts")
        if entry.dist is not None and entry.dist.name == DISTRIBUTION
    ]
    assert (script.name, script.value) == ("layer-sdk", "layer_sdk.__main__:main")


def test_no_install_line_names_another_publisher_s_package() -> None:
    """``layer-sdk`` on the public index is an unrelated package; protectai-layer-sdk is the
    original SDK's. No install command of our docs may name either."""
    texts = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
    texts += sorted((ROOT / "examples").glob("*.py")) + sorted((ROOT / "layer_sdk").rglob("*.py"))
    wrong = re.compile(r"pip install +['\"]?(protectai-)?layer[-_]sdk\b")
    found = [f"{path.name}: {m[0]}" for path in texts for m in wrong.finditer(path.read_text())]
    assert found == []


def test_the_two_spellings_of_the_name_reach_the_api_as_the_original_sent_them(
    make_client: MakeClient, collector: LocalCollector
) -> None:
    client = make_client()
    client.create_session()
    assert client.flush(5) is True
    (request,) = collector.requests
    assert request.headers["user-agent"] == f"layer-sdk-python/{__version__}" == USER_AGENT
    assert collector.sessions[0]["attributes"]["source"] == f"layer-python-sdk/{__version__}"
    assert collector.sessions[0]["attributes"]["source"] == SOURCE
