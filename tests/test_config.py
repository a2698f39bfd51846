"""Configuration: what init() accepts, where it looks, and how it refuses."""

from __future__ import annotations

import dataclasses
import inspect
import platform
import threading
from collections.abc import Callable

import pytest

from layer_sdk import (
    Client,
    LayerAlreadyInitializedError,
    LayerMissingRequiredConfigurationError,
    OIDCClientCredentials,
    layer,
)
from layer_sdk._config import (
    DEFAULT_HTTP_TIMEOUT,
    MAX_CONCURRENT_REQUESTS,
    MAX_RETRIES,
    MAX_SECONDS,
    MIN_FIREWALL_REFRESH_INTERVAL,
    Config,
)
from layer_sdk.collector import LocalCollector

from .helpers import APP_ID


def config_of(client: Client) -> Config:
    assert client._exporter is not None
    return client._exporter.config


def test_missing_base_url_names_the_option_and_its_variable() -> None:
    with pytest.raises(LayerMissingRequiredConfigurationError) as raised:
        Client().init(application_id=APP_ID)
    assert "base_url" in str(raised.value)
    assert "LAYER_BASE_URL" in str(raised.value)


def test_missing_application_id_names_the_option_and_its_variable() -> None:
    with pytest.raises(LayerMissingRequiredConfigurationError) as raised:
        Client().init(base_url="http://127.0.0.1:1")
    assert "application_id" in str(raised.value)
    assert "LAYER_APPLICATION_ID" in str(raised.value)


def test_environment_fills_what_the_arguments_leave_out(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    monkeypatch.setenv("LAYER_BASE_URL", collector.url + "/")
    monkeypatch.setenv("LAYER_APPLICATION_ID", APP_ID)
    monkeypatch.setenv("LAYER_ENVIRONMENT", "Staging")
    monkeypatch.setenv("LAYER_TIMEOUT", "2.5")
    client = Client()
    client.init()
    try:
        config = config_of(client)
        assert config.base_url == collector.url  # trailing slash removed
        assert config.application_id == APP_ID
        assert config.environment == "staging"
        assert config.http_timeout == 2.5
    finally:
        client.shutdown()


def test_explicit_arguments_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    monkeypatch.setenv("LAYER_BASE_URL", "http://elsewhere.invalid")
    monkeypatch.setenv("LAYER_TIMEOUT", "99")
    client = Client()
    client.init(base_url=collector.url, application_id=APP_ID, http_timeout=3)
    try:
        assert config_of(client).base_url == collector.url
        assert config_of(client).http_timeout == 3.0
    finally:
        client.shutdown()


def test_layer_http_timeout_is_an_alias_of_layer_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYER_HTTP_TIMEOUT", "7")
    config = Config.resolve(base_url="http://127.0.0.1:1", application_id=APP_ID)
    assert config.http_timeout == 7.0
    monkeypatch.setenv("LAYER_TIMEOUT", "4")
    config = Config.resolve(base_url="http://127.0.0.1:1", application_id=APP_ID)
    assert config.http_timeout == 4.0  # the documented name wins
    monkeypatch.delenv("LAYER_TIMEOUT")
    monkeypatch.delenv("LAYER_HTTP_TIMEOUT")
    config = Config.resolve(base_url="http://127.0.0.1:1", application_id=APP_ID)
    assert config.http_timeout == DEFAULT_HTTP_TIMEOUT


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LAYER_TIMEOUT", "soon"),
        ("LAYER_HTTP_TIMEOUT", "-1"),
        ("LAYER_TIMEOUT", "nan"),
        ("LAYER_TIMEOUT", "1e17"),
    ],
)
def test_invalid_timeout_in_the_environment_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        Config.resolve(base_url="http://127.0.0.1:1", application_id=APP_ID)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("base_url", "api.example.com"),
        ("base_url", "ftp://api.example.com"),
        ("http_timeout", "10"),
        ("http_timeout", 0),
        ("max_queue_size", -1),
        ("max_queue_size", 0),
        ("max_batch_size", 1.5),
        ("flush_interval", -0.1),
        ("shutdown_timeout", float("inf")),
        ("max_retries", -1),
        ("max_concurrent_requests", 0),
        ("max_queue_bytes", True),
        ("sync", "no"),
        ("allow_insecure_http", "false"),
        ("enable_firewall_instrumentation", "yes"),
        ("firewall_fail_closed", 2),
        ("disable_instrumentations", True),
        ("disable_instrumentations", 3),
        ("disabled_instrumentors", True),
        ("disabled_instrumentors", 3),
        ("oversize", "cut"),
        ("oversize", 1),
        # Bounds past which a value can only be a mistake (a busy loop, a thread per
        # request of a million, a sync call retried for a week).
        ("firewall_refresh_interval", 1e-9),
        ("firewall_refresh_interval", 0.009),
        ("max_concurrent_requests", 257),
        ("max_concurrent_requests", 10**9),
        ("max_retries", 101),
        ("max_retries", 10**9),
    ],
)
def test_invalid_values_are_refused_naming_the_option(option: str, value: object) -> None:
    settings: dict[str, object] = {"base_url": "http://127.0.0.1:1", "application_id": APP_ID}
    settings[option] = value
    with pytest.raises(ValueError, match=option):
        Client().init(**settings)  # type: ignore[arg-type]


SECONDS_OPTIONS = [field.name for field in dataclasses.fields(Config) if field.type == "float"]


@pytest.mark.parametrize("option", SECONDS_OPTIONS)
def test_every_number_of_seconds_past_what_the_os_takes_is_refused_at_init(option: str) -> None:
    """A wait the OS cannot take would end in an OverflowError deep in a sender or a call."""
    settings: dict[str, object] = {"base_url": "http://127.0.0.1:1", "application_id": APP_ID}
    settings[option] = 1e17
    with pytest.raises(ValueError, match=f"{option} must be at most"):
        Client().init(**settings)  # type: ignore[arg-type]


def test_the_largest_number_of_seconds_taken_works_where_it_is_used(
    collector: LocalCollector,
) -> None:
    assert len(SECONDS_OPTIONS) >= 6  # http_timeout, flush_interval, the firewall's, ...
    client = Client()
    largest = {option: MAX_SECONDS for option in SECONDS_OPTIONS}
    client.init(base_url=collector.url, application_id=APP_ID, **largest)  # type: ignore[arg-type]
    try:
        session_id = client.create_session(sync=True)  # a socket timeout of MAX_SECONDS
        client.append_action(session_id, kind="completion_prompt")
        assert client.flush(10)  # a sender's waits
        assert collector.wait_for_events(2)
    finally:
        assert client.shutdown(timeout=5)


def test_a_platform_that_is_no_string_is_refused_at_init(collector: LocalCollector) -> None:
    """Init(platform=123) raises at init, not a 4xx on every session later."""
    with pytest.raises(ValueError, match="platform must be a string, got int"):
        Client().init(base_url=collector.url, application_id=APP_ID, platform=123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="environment must be a string, got int"):
        Client().init(base_url=collector.url, application_id=APP_ID, environment=123)  # type: ignore[arg-type]
    assert collector.requests == []


def test_python_runtime_is_the_implementation_name_unchanged(
    make_client: Callable[..., Client], collector: LocalCollector
) -> None:
    """Python.runtime is platform.python_implementation(), e.g. CPython."""
    client = make_client(platform="k8s")
    session_id = client.create_session()
    assert client.flush(5)
    attributes = collector.session(session_id)["attributes"]  # type: ignore[index]
    assert attributes["python.runtime"] == platform.python_implementation()
    assert attributes["python.runtime"] != attributes["python.runtime"].lower()  # CPython, PyPy
    assert attributes["platform"] == "k8s"


def test_init_twice_raises_and_shutdown_allows_init_again(collector: LocalCollector) -> None:
    client = Client()
    client.init(base_url=collector.url, application_id=APP_ID, flush_interval=0.05)
    with pytest.raises(LayerAlreadyInitializedError):
        client.init(base_url=collector.url, application_id=APP_ID)
    assert client.shutdown() is True
    client.init(base_url=collector.url, application_id=APP_ID, flush_interval=0.05)
    try:
        client.create_session()
        assert client.flush(timeout=5) is True
        assert collector.event_count == 1
    finally:
        client.shutdown()


def test_init_again_with_the_same_settings_does_nothing(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    """A notebook cell with layer.init(...) run twice: the second run is a no-op."""
    monkeypatch.setenv("LAYER_ENVIRONMENT", "dev")

    def cell() -> None:  # every object in it is built anew, as a re-run cell does
        client.init(
            base_url=collector.url + "/",
            application_id=APP_ID,
            http_timeout=5,
            disable_instrumentations=["openai"],
            on_drop=lambda reason, count: None,
            auth_provider=OIDCClientCredentials(
                token_url="http://127.0.0.1:1/token", client_id="sdk", client_secret="s3cret"
            ),
            flush_interval=0.05,
        )

    client = Client()
    cell()
    try:
        exporter, threads = client._exporter, threading.active_count()
        cell()
        assert client._exporter is exporter
        assert threading.active_count() == threads
        client.init(
            enabled=True,
            base_url=collector.url,
            application_id=APP_ID,
            http_timeout=5.0,
            disable_instrumentations=["OpenAI"],
            flush_interval=0.05,
            auth_provider=exporter.config.auth_provider,  # type: ignore[union-attr]
            on_drop=exporter.config.on_drop,
        )  # type: ignore[union-attr]
        assert client._exporter is exporter
    finally:
        client.shutdown()


def test_init_again_with_other_settings_names_them_and_no_secret(
    monkeypatch: pytest.MonkeyPatch, collector: LocalCollector
) -> None:
    def auth(secret: str) -> OIDCClientCredentials:
        return OIDCClientCredentials(
            token_url="http://127.0.0.1:1/token", client_id="sdk", client_secret=secret
        )

    client = Client()
    client.init(base_url=collector.url, application_id=APP_ID, auth_provider=auth("first-s3cret"))
    try:
        with pytest.raises(LayerAlreadyInitializedError) as raised:
            client.init(
                base_url=collector.url,
                application_id=APP_ID,
                environment="Prod",
                http_timeout=3,
                auth_provider=auth("second-s3cret"),
            )
        message = str(raised.value)
        assert "(environment, auth_provider, http_timeout differ)" in message
        assert "call shutdown() first to change them" in message
        assert "s3cret" not in message and "Prod" not in message
        monkeypatch.setenv("LAYER_APPLICATION_NAME", "bot")  # the environment counts too
        with pytest.raises(LayerAlreadyInitializedError, match=r"\(application_name differ\)"):
            client.init(
                base_url=collector.url,
                application_id=APP_ID,
                auth_provider=client._exporter.config.auth_provider,
            )  # type: ignore[union-attr]
        with pytest.raises(LayerAlreadyInitializedError, match=r"\(enabled, base_url,"):
            client.init(enabled=False)
    finally:
        client.shutdown()
    client.init(base_url=collector.url, application_id=APP_ID, environment="Prod")
    client.shutdown()


def test_init_again_of_a_disabled_client(collector: LocalCollector) -> None:
    client = Client()
    client.init(enabled=False)
    client.init(enabled=False)
    with pytest.raises(LayerAlreadyInitializedError, match=r"\(enabled, base_url, application_id"):
        client.init(base_url=collector.url, application_id=APP_ID)
    client.shutdown()
    client.init(base_url=collector.url, application_id=APP_ID)
    assert client.stats().disabled is False
    client.shutdown()


def test_disabled_instrumentors_is_an_alias(make_client: Callable[..., Client]) -> None:
    client = make_client(
        disable_instrumentations=["OpenAI"], disabled_instrumentors=["anthropic", "google-genai"]
    )
    assert config_of(client).disable_instrumentations == frozenset(
        {"openai", "anthropic", "google_genai"}
    )


@pytest.mark.parametrize("option", ["disable_instrumentations", "disabled_instrumentors"])
@pytest.mark.parametrize("value", [["opneai"], "opneai", ["openai", "cohere"]])
def test_a_provider_name_that_is_not_instrumented_is_refused_naming_the_providers(
    option: str, value: object
) -> None:
    """A typo would leave the provider it meant instrumented, silently."""
    settings: dict[str, object] = {"base_url": "http://127.0.0.1:1", "application_id": APP_ID}
    settings[option] = value
    with pytest.raises(ValueError) as raised:
        Client().init(**settings)  # type: ignore[arg-type]
    message = str(raised.value)
    assert message.startswith(f"{option} names no instrumented provider: ")
    assert "'opneai'" in message or "'cohere'" in message
    assert message.endswith("the providers are 'anthropic', 'google_genai', 'openai'")


def test_the_bounds_of_the_options_are_accepted() -> None:
    """The bounds themselves are fine values."""
    config = Config.resolve(
        base_url="http://127.0.0.1:1",
        application_id=APP_ID,
        firewall_refresh_interval=MIN_FIREWALL_REFRESH_INTERVAL,
        max_concurrent_requests=MAX_CONCURRENT_REQUESTS,
        max_retries=MAX_RETRIES,
    )
    assert (
        config.firewall_refresh_interval,
        config.max_concurrent_requests,
        config.max_retries,
    ) == (0.01, 256, 100)


def test_clients_are_independent(collector: LocalCollector) -> None:
    with LocalCollector() as other:
        first, second = Client(), Client()
        first.init(base_url=collector.url, application_id=APP_ID, flush_interval=0.05)
        second.init(base_url=other.url, application_id=APP_ID, flush_interval=0.05)
        try:
            first.create_session()
            second.create_session()
            second.create_session()
            assert first.flush(5) and second.flush(5)
            assert collector.event_count == 1
            assert other.event_count == 2
            assert first.stats().sent == 1
            assert second.stats().sent == 2
        finally:
            first.shutdown()
            second.shutdown()


def test_the_default_client_is_a_client() -> None:
    assert isinstance(layer, Client)


def test_calls_before_init_say_init_is_missing() -> None:
    with pytest.raises(LayerMissingRequiredConfigurationError, match="init"):
        Client().create_session()
    assert Client().flush() is True
    assert Client().stats().enqueued == 0


def test_init_takes_exactly_the_options_of_config_with_their_defaults() -> None:
    """Init()'s parameters are Config's fields (plus the alias
    disabled_instrumentors), with the same defaults; an option that falls back to the
    environment defaults to None in init(), meaning "the variable, else the default"."""
    parameters = dict(inspect.signature(Client.init).parameters)
    del parameters["self"]
    assert parameters.pop("disabled_instrumentors").default is None  # the alias
    fields = {field.name: field for field in dataclasses.fields(Config)}
    assert list(parameters) == list(fields)
    for name, field in fields.items():
        expected = None if field.metadata["env"] else field.default
        if name == "disable_instrumentations":
            expected = None  # init takes any iterable; None is none
        assert parameters[name].default == expected, name
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
