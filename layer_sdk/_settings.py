"""init()'s settings: resolved one way for ``init()`` and ``layer-sdk check``, and compared
when ``init()`` runs again.

``resolve_settings`` is ``Config.resolve`` plus the one fallback that
``_config`` cannot make itself, as it sits below ``_auth``: without an
``auth_provider``, the ``LAYER_OIDC_*`` variables describe one (what a
twelve-factor deployment expects). The rule, for an enabled client:

- none of ``LAYER_OIDC_TOKEN_URL``, ``LAYER_OIDC_CLIENT_ID``,
  ``LAYER_OIDC_CLIENT_SECRET``, ``LAYER_OIDC_SCOPE`` set: no authentication;
- all three of the first set: an ``OIDCClientCredentials`` of them (with
  ``LAYER_OIDC_SCOPE`` and ``LAYER_OIDC_TIMEOUT`` when set, and init()'s
  ``allow_insecure_http``);
- some but not all of the three: ``LayerMissingRequiredConfigurationError``
  naming the variables missing and those set (never their values), instead
  of a client that would send every event without credentials.

``differences`` names the settings in which two resolutions differ: a second
``init()`` with the same settings (a notebook cell run again) does nothing,
and with others it is refused with their names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from ._auth import OIDCClientCredentials
from ._config import DEFAULT_HTTP_TIMEOUT, Config, env_float, refuse_cleartext
from ._exceptions import LayerMissingRequiredConfigurationError

#: The variables of the OIDC settings that must come together.
OIDC_REQUIRED = ("LAYER_OIDC_TOKEN_URL", "LAYER_OIDC_CLIENT_ID", "LAYER_OIDC_CLIENT_SECRET")
#: Any of these set means OIDC is meant (LAYER_OIDC_TIMEOUT alone tunes nothing).
OIDC_MEANT = (*OIDC_REQUIRED, "LAYER_OIDC_SCOPE")


def resolve_settings(*, environ: Mapping[str, str] | None = None, **options: Any) -> Config:
    """The settings ``init(**options)`` runs with: arguments first, then ``LAYER_*``.

    Raises as ``Config.resolve`` does, and ``LayerMissingRequiredConfigurationError``
    for an incomplete set of ``LAYER_OIDC_*`` variables.
    """
    env = os.environ if environ is None else environ
    config = Config.resolve(environ=env, **options)
    if not config.enabled or config.auth_provider is not None:
        return config
    auth = oidc_from_environment(env, allow_insecure_http=config.allow_insecure_http)
    if auth is None:
        return config
    # Resolved again with the provider, so that the same checks apply as to one passed in.
    return Config.resolve(environ=env, **{**options, "auth_provider": auth})


def oidc_from_environment(
    env: Mapping[str, str], *, allow_insecure_http: bool = False
) -> OIDCClientCredentials | None:
    """The OIDC provider the ``LAYER_OIDC_*`` variables describe; None when none is set."""
    given = {variable: env.get(variable, "") for variable in OIDC_MEANT}
    given = {variable: value for variable, value in given.items() if value.strip()}
    if not given:
        return None
    absent = [variable for variable in OIDC_REQUIRED if variable not in given]
    if absent:
        present = list(given)
        raise LayerMissingRequiredConfigurationError(
            f"{_words(absent)} {'is' if len(absent) == 1 else 'are'} not set, while "
            f"{_words(present)} {'is' if len(present) == 1 else 'are'}: set "
            f"{_words(list(OIDC_REQUIRED))} to authenticate with "
            "OIDC, or none of them, or pass auth_provider= to init()"
        )
    if not allow_insecure_http:  # refused here, so that the message names init()'s option
        refuse_cleartext(
            given["LAYER_OIDC_TOKEN_URL"],
            "LAYER_OIDC_TOKEN_URL",
            "the OIDC client secret",
            "init()",
        )
    return OIDCClientCredentials(
        token_url=given["LAYER_OIDC_TOKEN_URL"],
        client_id=given["LAYER_OIDC_CLIENT_ID"],
        client_secret=given["LAYER_OIDC_CLIENT_SECRET"],
        scope=given.get("LAYER_OIDC_SCOPE"),
        http_timeout=env_float(env, "LAYER_OIDC_TIMEOUT") or DEFAULT_HTTP_TIMEOUT,
        allow_insecure_http=allow_insecure_http,
    )


def differences(running: Config, wanted: Config) -> list[str]:
    """The names of the settings in which ``wanted`` differs from ``running``.

    Values compare by equality; objects by identity, except an
    ``OIDCClientCredentials`` (by its settings, secret included) and a function
    (by its code): a notebook cell run again builds new ones of each.
    """
    return [
        field.name
        for field in dataclasses.fields(Config)
        if not _same(getattr(running, field.name), getattr(wanted, field.name))
    ]


def _same(old: Any, new: Any) -> bool:
    if old is new:
        return True
    if isinstance(old, OIDCClientCredentials) and isinstance(new, OIDCClientCredentials):
        return old.same_settings(new)
    old_code, new_code = getattr(old, "__code__", None), getattr(new, "__code__", None)
    if old_code is not None and new_code is not None:
        return bool(old_code == new_code and old.__defaults__ == new.__defaults__)
    if isinstance(old, (str, int, float, frozenset)) or old is None:
        return type(old) is type(new) and bool(old == new)
    return False  # another object (a provider of another kind, a requests.Session)


def _words(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
