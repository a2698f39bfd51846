"""The provider contract: what an SDK must say about itself for its calls to be recorded.

The shared code (``_patch``, ``_request``, ``_call``, ``_streams``) reads a
provider SDK only through what its :class:`Provider` declares, never through
assumptions about how an SDK is generated:

- **which methods, and which of them are async** (:class:`Target`): each
  target names its class and method and says whether calls to it are
  awaited (``is_async``). The wrapper takes the original's shape: a plain
  function, a coroutine function, a plain function returning an awaitable
  (openai 1.x), or a generator function (``google-genai``'s
  ``generate_content_stream``: the request is sent at the first ``next()``).
- **where the session header is** (:class:`HeaderSlot`): openai's and
  anthropic's ``extra_headers`` (:data:`EXTRA_HEADERS`), google-genai's
  ``config.http_options.headers``. The slot reads the call's headers and puts
  back a copy without Layer's header; the caller's objects are never changed.
- **how a stream is iterated** (:class:`Results`): a stream of one of the
  ``streams`` classes is watched in place through its item iterator (the
  attribute ``iterator_attribute``; openai's and anthropic's ``Stream``
  keep it as ``_iterator``), so the caller gets the provider's own object;
  any other stream that is a plain generator or async generator is read
  through a generator of ours that yields the same items (``_streams``).
- **how raw responses look** (:class:`Results`): the classes of a raw
  response and the request header that asks for one (``raw_header``;
  openai and anthropic set ``x-stainless-raw-response``).

A provider package (``_openai/``, ``_anthropic/``, ``_google_genai/``)
declares one ``Provider``, subclasses ``call.Call`` with its mappings, and
builds its ``Patcher`` from both; ``docs/providers.md`` walks through it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

logger = logging.getLogger("layer_sdk")

# -- which methods -------------------------------------------------------------------------

#: ``make(patcher, original, target)``: a wrapper of another kind than the default.
Make = Callable[[Any, Any, "Target"], Any]


class Target(NamedTuple):
    """A method to patch: ``spec`` is what the provider's ``Call.begin`` needs to read its calls."""

    module: str
    cls: str
    method: str
    spec: Any
    #: Whether a call is awaited (``AsyncOpenAI``'s methods, ``client.aio.models.*``).
    is_async: bool
    make: Make | None = None


def attribute(module_name: str, name: str) -> Any:
    """``module_name.name``, or None where this version of the provider lacks it."""
    try:
        return getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return None


def classes(*candidates: Any) -> tuple[type, ...]:
    """The candidates that are classes (a version of a provider may lack some)."""
    return tuple(c for c in candidates if isinstance(c, type))


# -- where the session header is ---------------------------------------------------------


class HeaderSlot(Protocol):
    """Where a call carries its request headers, read and replaced in its keyword arguments."""

    def get(self, kwargs: Mapping[str, Any]) -> Any:
        """The call's request headers (a mapping), or None when it has none."""

    def put(self, kwargs: dict[str, Any], headers: dict[str, Any]) -> None:
        """Give the call ``headers`` in place of its own (``kwargs`` is the wrapper's dict)."""


class _ExtraHeaders:
    """openai's and anthropic's ``extra_headers=`` argument."""

    __slots__ = ()

    def get(self, kwargs: Mapping[str, Any]) -> Any:
        return kwargs.get("extra_headers")

    def put(self, kwargs: dict[str, Any], headers: dict[str, Any]) -> None:
        kwargs["extra_headers"] = headers


#: The ``extra_headers=`` argument of SDKs generated like openai's and anthropic's.
EXTRA_HEADERS: HeaderSlot = _ExtraHeaders()


# -- what a result is ---------------------------------------------------------------------


class Results:
    """A provider's classes of results, looked up (``recognise``) once it is imported."""

    __slots__ = ("iterator_attribute", "raw", "streams")

    def __init__(self, iterator_attribute: str = "_iterator") -> None:
        #: Streams watched in place, through their item iterator ``iterator_attribute``.
        self.streams: tuple[type, ...] = ()
        #: Raw responses (``with_raw_response``), whose body may be read as JSON.
        self.raw: tuple[type, ...] = ()
        self.iterator_attribute = iterator_attribute

    def recognise(self, streams: tuple[type, ...], raw: tuple[type, ...] = ()) -> None:
        self.streams = streams
        self.raw = raw


# -- failures of ours ---------------------------------------------------------------------


class Problems:
    """Logs a provider instrumentation's own failures: the first of each kind as a warning."""

    __slots__ = ("label", "reported")

    def __init__(self, label: str) -> None:
        self.label = label  # "OpenAI", "Anthropic": as the warning names it
        self.reported: set[str] = set()

    def __call__(self, where: str, exc: BaseException) -> None:
        if where in self.reported:
            logger.debug(
                "layer-sdk: %s instrumentation failed while %s: %r", self.label, where, exc
            )
            return
        self.reported.add(where)
        logger.warning(
            "layer-sdk: the %s instrumentation failed while %s (%s: %s); the %s call "
            "itself is not affected. Further failures of this kind are logged at debug level.",
            self.label,
            where,
            type(exc).__name__,
            exc,
            self.label,
            exc_info=exc,
        )


# -- the whole --------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """What the shared code knows of one provider SDK."""

    #: As ``disable_instrumentations`` and the ``model.provider`` attribute name it.
    name: str
    #: The package patched, as imported (``"openai"``, ``"google.genai"``).
    package: str
    #: As warnings name it (``"OpenAI"``).
    label: str
    #: Where a call's headers are (the session header among them).
    headers: HeaderSlot
    #: The arguments the mappings read: a one-shot iterator among them is watched as the
    #: provider takes it (``_request``), so that the record can read what was sent.
    read_arguments: tuple[str, ...]
    #: The request header that asks for a raw response, if the SDK has one.
    raw_header: str | None = None
    results: Results = field(default_factory=Results)
    problems: Problems = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "problems", Problems(self.label))
