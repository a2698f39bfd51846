"""The record of one google-genai call: the provider contract, which methods, the actions.

``GOOGLE_GENAI`` is what the shared code knows of the SDK (``_provider.py``):
the session header in ``config.http_options.headers`` (:class:`_HttpOptionsHeaders`),
streams that are plain generators (no stream class to watch in place), no
raw-response mode. ``TARGETS`` lists the methods whose calls are recorded,
each with the ``api`` whose mapping reads it and the ``operation`` it is
recorded as. :class:`Call` is the shared record with the Gemini API's
mapping (``content.py``): ``generate_content`` as a prompt and an output,
``embed_content`` as one action.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..._schemas import SessionActionError, SessionActionKind, SessionActionScanner
from .._call import Call as _SharedCall
from .._fields import _get
from .._mapping import Output, _error
from .._provider import Provider, Target
from .._streams import Accumulator
from .content import (
    ResponseStream,
    config_parameters,
    embedding_inputs,
    prompt_messages,
    response_output,
    usage_of,
)

EMBEDDINGS = SessionActionKind.EMBEDDINGS

_MODELS = "google.genai.models"
#: (class, method, api, operation, is_async).
_METHODS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("Models", "generate_content", "generate", "models.generate_content", False),
    ("Models", "generate_content_stream", "generate", "models.generate_content_stream", False),
    ("Models", "embed_content", "embed", "models.embed_content", False),
    ("AsyncModels", "generate_content", "generate", "models.generate_content", True),
    ("AsyncModels", "generate_content_stream", "generate", "models.generate_content_stream", True),
    ("AsyncModels", "embed_content", "embed", "models.embed_content", True),
)
#: The methods patched; ``spec``: (api, operation).
TARGETS = tuple(
    Target(_MODELS, cls, method, (api, operation), is_async)
    for cls, method, api, operation, is_async in _METHODS
)


class _HttpOptionsHeaders:
    """The headers of a call's ``config.http_options`` (``config`` and ``http_options`` may
    each be a dict or the SDK's model). The header is removed from copies of both: the
    caller's config may be reused for other calls, with or without a session header."""

    __slots__ = ()

    def get(self, kwargs: Mapping[str, Any]) -> Any:
        return _get(_get(kwargs.get("config"), "http_options"), "headers")

    def put(self, kwargs: dict[str, Any], headers: dict[str, Any]) -> None:
        config = kwargs["config"]
        options = _replaced(_get(config, "http_options"), "headers", headers)
        kwargs["config"] = _replaced(config, "http_options", options)


def _replaced(obj: Any, name: str, value: Any) -> Any:
    """A shallow copy of ``obj`` (a dict or a pydantic model) with ``name`` set to ``value``."""
    if isinstance(obj, Mapping):
        return {**obj, name: value}
    return obj.model_copy(update={name: value})


GOOGLE_GENAI = Provider(
    name="google_genai",
    package="google.genai",
    label="Google Gen AI",
    headers=_HttpOptionsHeaders(),
    read_arguments=("contents",),
)


def recognise() -> None:
    """Nothing to look up: google-genai's streams are plain generators, read through ours."""


class Call(_SharedCall):
    """One google-genai call: ``generate_content`` as a completion, ``embed_content`` as one
    action."""

    __slots__ = ()

    PROVIDER = GOOGLE_GENAI

    def prompt(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], frozenset[str]]:
        messages, attachments = prompt_messages(self.kwargs)
        return messages, attachments, frozenset()

    def request_parameters(self, names: frozenset[str]) -> dict[str, Any]:
        return config_parameters(self.kwargs.get("config"))

    def output_of(self, result: Any) -> Output:
        return response_output(result)

    def accumulator(self) -> Accumulator:
        return ResponseStream()

    def error_of(self, exc: BaseException) -> dict[str, Any]:
        """As every provider's (``_mapping._error``), with Google's ``code`` (the HTTP status)
        as the action's code and its ``status`` (``RESOURCE_EXHAUSTED``) in the details."""
        error = _error(exc, self.api_keys())
        code = getattr(exc, "code", None)
        if type(code) is int and code >= 400:
            error["code"] = code
        status = getattr(exc, "status", None)
        if isinstance(status, str):
            error["details"]["status"] = status
        return error

    def api_keys(self) -> list[str]:
        return _api_keys(self.resource)

    # embed_content: one action, whatever the outcome.

    def record_failure(self, error: dict[str, Any], ended: datetime) -> None:
        if self.api == "generate":
            super().record_failure(error, ended)
        else:
            self.record_embeddings(None, ended, error)

    def record_result(self, result: Any, ended: datetime) -> None:
        if self.api == "generate":
            super().record_result(result, ended)
        else:
            self.record_embeddings(result, ended)

    def record_embeddings(
        self, result: Any, ended: datetime, error: dict[str, Any] | None = None
    ) -> None:
        kwargs = self.kwargs
        attributes = self.base_attributes(kwargs.get("model"))
        attributes.update(config_parameters(kwargs.get("config")))
        scanners = None
        if result is not None:
            vectors = _get(result, "embeddings")
            vectors = vectors if isinstance(vectors, list) else []
            attributes["embeddings.count"] = len(vectors)
            if vectors:
                values = _get(vectors[0], "values")
                if isinstance(values, list):
                    attributes["embeddings.dimensions"] = len(values)
            usage = usage_of(_get(result, "usage_metadata"))
            scanners = [SessionActionScanner("usage", usage)] if usage else None
        data = {"input": embedding_inputs(kwargs.get("contents"))}
        self.append(
            EMBEDDINGS,
            ended,
            attributes,
            data,
            SessionActionError(**error) if error else None,
            scanners,
        )


def _api_keys(resource: Any) -> list[str]:
    """The API key of the client of ``resource`` (``client.models``: its ``_api_client``)."""
    try:
        key = getattr(getattr(resource, "_api_client", None), "api_key", None)
    except Exception:  # an odd client whose property raises
        return []
    return [key] if isinstance(key, str) and key else []
