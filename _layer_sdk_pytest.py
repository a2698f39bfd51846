"""layer-sdk's pytest plugin: fixtures that point the SDK at a local collector for one test.

Installing the package registers it (``pytest11`` entry point ``layer_sdk``):
the fixtures are there in every test, with no import and no ``conftest.py``;
``-p no:layer_sdk`` turns it off. Each name starts with ``layer_``, so that
none shadows a project's own fixture:

- ``layer_collector``: a ``LocalCollector`` started for the test, with the
  global ``layer`` initialized against it (``layer_sdk.testing.reporting_to``);
  at teardown ``layer`` is shut down, what it holds delivered first, and the
  collector is stopped.
- ``layer_client``: that global ``layer``.
- ``layer_records``: a ``layer_sdk.testing.LayerRecords``: the sessions, the
  actions by kind, the prompt and output texts received, read after a flush.
- ``layer_init_options``: more ``init()`` options, ``{}`` by default; override
  it in a ``conftest.py``.

The global ``layer``, not a fresh ``Client``: an application reports through
``layer`` (its calls, its functions decorated at import, the provider
instrumentation ``init()`` installs), so that is the client a test must point
at the collector. Code that takes a ``Client`` of its own gets one built on
``layer_collector.url``.

A module of its own, outside the ``layer_sdk`` package: pytest imports its
plugins before anything else, and importing the SDK there would put it (and
``ssl``) into every test run of the environment, before a ``conftest.py``
could apply gevent's monkey patching, which must come first. The SDK is
imported when a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from layer_sdk import Client
    from layer_sdk.collector import LocalCollector
    from layer_sdk.testing import LayerRecords


@pytest.fixture
def layer_init_options() -> dict[str, Any]:
    """More ``init()`` options for ``layer_collector`` (``{}``); override it to change them."""
    return {}


@pytest.fixture
def layer_collector(layer_init_options: dict[str, Any]) -> Iterator[LocalCollector]:
    """A started ``LocalCollector``, with the global ``layer`` initialized against it."""
    from layer_sdk import LayerAlreadyInitializedError
    from layer_sdk.collector import LocalCollector
    from layer_sdk.testing import reporting_to

    with LocalCollector() as collector:
        try:
            with reporting_to(collector, **layer_init_options):
                yield collector
        except LayerAlreadyInitializedError as error:  # raised by init(), before the test
            pytest.fail(
                f"layer_collector initializes the global layer, but {error}. If your code calls"
                " layer.init() at import, call it where tests do not run it (in main(), an app"
                " factory), or call layer.shutdown() in a fixture that runs before this one.",
                pytrace=False,
            )


@pytest.fixture
def layer_client(layer_collector: LocalCollector) -> Client:
    """The global ``layer``, initialized against ``layer_collector``."""
    from layer_sdk import layer

    return layer


@pytest.fixture
def layer_records(layer_client: Client, layer_collector: LocalCollector) -> LayerRecords:
    """What ``layer_collector`` received from ``layer_client``, each read after a flush."""
    from layer_sdk.testing import LayerRecords

    return LayerRecords(layer_client, layer_collector)
