"""Automatic instrumentation of provider SDKs (``openai``, ``anthropic``, ``google-genai``).

``Client.init()`` calls :func:`instrument` and ``Client.shutdown()`` calls
:func:`uninstrument`. A provider is instrumented when its package is installed
(found with ``importlib.util.find_spec``, so nothing is imported for a provider
that is not there) and not named in ``disable_instrumentations``.

Patches are process-wide: they change the provider's classes. The first
initialized client that instruments a provider **owns** its patches and
receives every event they produce; another client initialized meanwhile does
not patch again. When the owner shuts down the patches are removed, and the
next ``init()`` of any client instruments afresh.

Importing this package imports no provider SDK.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Iterable
from typing import Any

from .._context import Recorder

__all__ = ["PROVIDERS", "instrument", "instrumented_by", "uninstrument"]

logger = logging.getLogger("layer_sdk")

#: Provider name (as given to ``disable_instrumentations``) -> (the package it
#: instruments, the module of ours that patches it). That module has
#: ``instrument(client) -> bool`` and ``uninstrument() -> None``.
PROVIDERS: dict[str, tuple[str, str]] = {
    "openai": ("openai", "layer_sdk.instrumentation._openai"),
    "anthropic": ("anthropic", "layer_sdk.instrumentation._anthropic"),
    "google_genai": ("google.genai", "layer_sdk.instrumentation._google_genai"),
}

_lock = threading.Lock()
_owners: dict[str, Recorder] = {}


def instrument(client: Recorder, disabled: Iterable[str] = ()) -> list[str]:
    """Patch every installed provider not in ``disabled``; returns the names patched now.

    A provider already patched for another client is left alone (its events
    keep going to that client). Never raises: a provider that cannot be
    patched is logged and skipped.
    """
    skip = {name.lower() for name in disabled}
    done: list[str] = []
    for name, (package, module_name) in PROVIDERS.items():
        if name in skip:
            continue
        try:
            if importlib.util.find_spec(package) is None:
                continue
        except (ImportError, ValueError):
            continue
        with _lock:
            if name in _owners:
                owner = _owners[name]
                if owner is not client:
                    logger.debug(
                        "layer-sdk: %s is already instrumented for another client; "
                        "its events go to that client",
                        name,
                    )
                continue
            try:
                module: Any = importlib.import_module(module_name)
                patched = bool(module.instrument(client))
            except Exception as exc:
                logger.warning("layer-sdk could not instrument %s: %r", name, exc, exc_info=True)
                continue
            if patched:
                _owners[name] = client
                done.append(name)
    if done:
        logger.debug("layer-sdk instrumented %s", ", ".join(done))
    return done


def uninstrument(client: Recorder) -> list[str]:
    """Undo the patches ``client`` owns; returns the provider names unpatched. Never raises."""
    undone: list[str] = []
    with _lock:
        for name, owner in list(_owners.items()):
            if owner is not client:
                continue
            del _owners[name]
            try:
                module: Any = importlib.import_module(PROVIDERS[name][1])
                module.uninstrument()
            except Exception as exc:
                logger.warning("layer-sdk could not uninstrument %s: %r", name, exc, exc_info=True)
                continue
            undone.append(name)
    return undone


def instrumented_by(name: str) -> Recorder | None:
    """The client that owns the patches of provider ``name``, if any."""
    with _lock:
        return _owners.get(name)
