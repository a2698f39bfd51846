"""init() reads its OIDC credentials from ``LAYER_OIDC_*`` when it is given no auth_provider."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from layer_sdk import Client, LayerMissingRequiredConfigurationError, OIDCClientCredentials
from layer_sdk.collector import LocalCollector

from .helpers import APP_ID, FAST, MakeClient
from .oidc_provider import OIDCProvider, oidc

__all__ = ["oidc"]  # the fixture, imported so that pytest finds it

SECRET = "cs-value-that-must-never-show"


def set_oidc_variables(monkeypatch: pytest.MonkeyPatch, provider: OIDCProvider) -> None:
    monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", provider.token_url)
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", provider.client_id)
    monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", provider.client_secret)
    monkeypatch.setenv("LAYER_OIDC_SCOPE", provider.scope)
    monkeypatch.setenv("LAYER_OIDC_TIMEOUT", "7")


def test_init_authenticates_with_the_oidc_variables(
    oidc: Callable[..., OIDCProvider],
    monkeypatch: pytest.MonkeyPatch,
    make_client: MakeClient,
    collector: LocalCollector,
) -> None:
    provider = oidc(token_ttl=300)
    check = provider.bearer_check()
    collector.require_bearer(check)
    set_oidc_variables(monkeypatch, provider)
    client = make_client()  # no auth_provider
    auth = client._exporter.config.auth_provider  # type: ignore[union-attr]
    assert isinstance(auth, OIDCClientCredentials)
    assert (auth.client_id, auth.scope, auth.http_timeout) == ("layer-sdk", "layer-sdk", 7.0)
    client.create_session(sync=True)
    client.create_session()
    assert client.flush(10) is True
    assert collector.event_count == 2
    assert check.refused == []
    assert [request.status for request in provider.token_requests()] == [200]


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        (
            ["LAYER_OIDC_CLIENT_SECRET"],
            "LAYER_OIDC_CLIENT_SECRET is not set, while LAYER_OIDC_TOKEN_URL and "
            "LAYER_OIDC_CLIENT_ID are",
        ),
        (
            ["LAYER_OIDC_TOKEN_URL", "LAYER_OIDC_CLIENT_ID"],
            "LAYER_OIDC_TOKEN_URL and LAYER_OIDC_CLIENT_ID are not set, while "
            "LAYER_OIDC_CLIENT_SECRET is",
        ),
    ],
)
def test_an_incomplete_set_of_oidc_variables_is_refused_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector, unset: list[str], message: str
) -> None:
    monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", "https://sso.example.com/token")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "sdk")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", SECRET)
    for variable in unset:
        monkeypatch.delenv(variable)
    with pytest.raises(LayerMissingRequiredConfigurationError) as raised:
        Client().init(base_url=collector.url, application_id=APP_ID)
    assert message in str(raised.value)
    assert "or pass auth_provider= to init()" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_scope_alone_means_oidc_was_meant(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    monkeypatch.setenv("LAYER_OIDC_SCOPE", "layer-sdk")
    with pytest.raises(LayerMissingRequiredConfigurationError, match="LAYER_OIDC_TOKEN_URL, "):
        Client().init(base_url=collector.url, application_id=APP_ID)


def test_a_timeout_alone_asks_for_no_authentication(
    monkeypatch: pytest.MonkeyPatch, make_client: MakeClient, collector: LocalCollector
) -> None:
    monkeypatch.setenv("LAYER_OIDC_TIMEOUT", "3")
    client = make_client()
    assert client._exporter.config.auth_provider is None  # type: ignore[union-attr]
    client.create_session()
    assert client.flush(5) is True
    assert "authorization" not in collector.requests[0].headers


def test_an_auth_provider_passed_wins_over_the_variables(
    monkeypatch: pytest.MonkeyPatch, make_client: MakeClient
) -> None:
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "from-the-environment")  # incomplete: unused
    auth = OIDCClientCredentials(
        token_url="http://127.0.0.1:1/token", client_id="given", client_secret=SECRET
    )
    client = make_client(auth_provider=auth)
    assert client._exporter.config.auth_provider is auth  # type: ignore[union-attr]


def test_a_disabled_client_reads_no_oidc_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "sdk")  # incomplete: refused were it enabled
    client = Client()
    client.init(enabled=False, **FAST)
    assert client.stats().disabled is True
    client.shutdown()


def test_plain_http_beyond_this_machine_is_refused_for_the_token_url_too(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    monkeypatch.setenv("LAYER_OIDC_TOKEN_URL", "http://sso.example.invalid/token")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_ID", "sdk")
    monkeypatch.setenv("LAYER_OIDC_CLIENT_SECRET", SECRET)
    with pytest.raises(LayerMissingRequiredConfigurationError, match="allow_insecure_http"):
        Client().init(base_url=collector.url, application_id=APP_ID)
    client = Client()
    client.init(base_url=collector.url, application_id=APP_ID, allow_insecure_http=True)
    client.shutdown()
