"""The command line: exit codes and verdicts of ``check``, and the ``demo``."""

from __future__ import annotations

import pytest

from layer_sdk._cli import main
from layer_sdk.collector import LocalCollector

from .conftest import APP_ID, closed_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_check_passes_against_a_healthy_api(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert code == 0
    assert out.strip().splitlines()[-1] == "OK: this machine can report to Layer."
    (session,) = collector.sessions
    assert session["attributes"]["layer_sdk.check"] == "true"


def test_check_reads_the_environment_like_init(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAYER_BASE_URL", collector.url)
    monkeypatch.setenv("LAYER_APPLICATION_ID", APP_ID)
    monkeypatch.setenv("LAYER_TIMEOUT", "3")
    code, out = run(capsys, "check")
    assert code == 0
    assert "3 s" in out and collector.url in out


def test_check_names_a_missing_setting(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "check", "--application-id", APP_ID)
    assert code == 1
    assert out.startswith("FAILED:") and "LAYER_BASE_URL" in out


def test_check_says_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    code, out = run(capsys, "check", "--base-url", url, "--application-id", APP_ID)
    assert code == 1
    assert f"FAILED: nothing accepts connections at {url}" in out


def test_check_says_when_the_url_is_not_the_api(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    url = collector.url + "/not-layer"
    code, out = run(capsys, "check", "--base-url", url, "--application-id", APP_ID)
    assert code == 1
    assert "404" in out and "check base_url" in out


def test_check_says_when_credentials_are_refused(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    collector.require_bearer(lambda token: False)
    code, out = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert code == 1
    assert "FAILED: the API refused the credentials (401)" in out


def test_check_says_when_the_api_is_too_slow(
    collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    collector.delay = 2.0
    argv = ["check", "--base-url", collector.url, "--application-id", APP_ID, "--timeout", "0.3"]
    code, out = run(capsys, *argv)
    assert code == 1
    assert "FAILED: no answer within 0.3 s" in out


def test_check_masks_the_client_secret(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "very-secret-value-1234"
    monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", f"http://127.0.0.1:{closed_port()}/token")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "sdk")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", secret)
    code, out = run(capsys, "check", "--base-url", collector.url, "--application-id", APP_ID)
    assert code == 1
    assert "FAILED: the token endpoint could not be reached" in out
    assert "secret ********" in out
    assert secret not in out


def test_demo_reports_everything_delivered(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "demo", "--sessions", "50", "--threads", "2")
    assert code == 0
    assert "events delivered (counted by the server)  250" in out
    assert out.strip().splitlines()[-1] == "OK: everything was delivered."
