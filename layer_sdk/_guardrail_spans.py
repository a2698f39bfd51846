"""The firewall's decisions as guardrail spans in the application's own traces (opt-in).

With ``init(firewall_trace_spans=True)``, each check the firewall makes for
the instrumentation (right before a prompt leaves the process) and each
``LayerFirewallSessionBlocked`` that ``append_action`` raises becomes a span
of the application's tracer provider (the global one, whatever it is when the
span is made), a child of the span current on the caller's thread or task,
in the shape the OpenTelemetry GenAI conventions give a remote guardrail
(``gen_ai.apply_guardrail.client``):

==================================  ==============================================
span name                           ``apply_guardrail Layer Firewall``, kind CLIENT
``gen_ai.operation.name``           ``apply_guardrail``
``gen_ai.provider.name``            ``layer``
``gen_ai.guardrail.component.name`` ``Layer Firewall``
``gen_ai.guardrail.result.type``    ``decision``
``gen_ai.guardrail.result.value``   Layer's own: ``pass``, ``alert``, ``block``,
                                    ``skip``, ``no_data``
``server.address``, ``server.port`` the firewall's
``error.type``                      the exception's class, when the firewall could
                                    not be asked (the span's status is then ERROR)
``layer.session.id``                the session checked
``layer.firewall.check``            ``before_prompt`` (asked afresh) or ``cached``
                                    (the decision ``append_action`` already knew)
``layer.firewall.outcome``          what the SDK did: ``allowed``, ``refused``,
                                    ``failed_open``
``layer.firewall.violated_policies`` the names of the policies violated
==================================  ==============================================

and one ``gen_ai.guardrail.result`` event per violated policy, with its
``gen_ai.guardrail.policy.id`` and ``layer.policy.name``.

OpenTelemetry is imported only when the option is on (:func:`guardrail_spans`);
without ``opentelemetry-api`` the option logs one warning and does nothing.
A failure in here is logged at debug level and never reaches the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ._version import __version__

logger = logging.getLogger("layer_sdk")

SPAN_NAME = "apply_guardrail Layer Firewall"
COMPONENT = "Layer Firewall"
PROVIDER = "layer"


class GuardrailSpans:
    """Makes the guardrail span of each firewall check, through the global tracer provider."""

    def __init__(self, trace: Any, firewall_base_url: str) -> None:
        self._trace = trace
        # A proxy until the application sets its provider; then the provider's own.
        self._tracer = trace.get_tracer("layer_sdk", __version__)
        where = urlsplit(firewall_base_url)
        self._server: dict[str, Any] = {"server.address": where.hostname or ""}
        port = where.port or (443 if where.scheme == "https" else 80)
        self._server["server.port"] = port

    def emit(
        self,
        session_id: str,
        started: int,
        check: str,
        response: Any,
        outcome: str,
        error: BaseException | None = None,
    ) -> None:
        """One span, from ``started`` (``time.time_ns()``) to now. ``response``: the
        firewall's answer (a ``FirewallSessionLookupResponse``), None when it had none."""
        try:
            self._emit(session_id, started, check, response, outcome, error)
        except Exception as exc:  # never the caller's problem
            logger.debug("layer-sdk could not emit a guardrail span: %r", exc)

    def _emit(
        self,
        session_id: str,
        started: int,
        check: str,
        response: Any,
        outcome: str,
        error: BaseException | None,
    ) -> None:
        trace = self._trace
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "apply_guardrail",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.guardrail.component.name": COMPONENT,
            **self._server,
            "layer.session.id": session_id,
            "layer.firewall.check": check,
            "layer.firewall.outcome": outcome,
        }
        policies: Sequence[Any] = ()
        if response is not None:
            attributes["gen_ai.guardrail.result.type"] = "decision"
            attributes["gen_ai.guardrail.result.value"] = str(response.decision.value)
            policies = response.context.violated_policies
            if policies:
                attributes["layer.firewall.violated_policies"] = [_name(p) for p in policies]
        if error is not None:
            attributes["error.type"] = type(error).__name__
        span = self._tracer.start_span(
            SPAN_NAME, kind=trace.SpanKind.CLIENT, attributes=attributes, start_time=started
        )
        for policy in policies:
            event: dict[str, Any] = {"layer.policy.name": _name(policy)}
            if policy.id is not None:
                event["gen_ai.guardrail.policy.id"] = str(policy.id)
            span.add_event("gen_ai.guardrail.result", event)
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        span.end(time.time_ns())


def _name(policy: Any) -> str:
    return str(policy.name or policy.id or "unnamed")


def guardrail_spans(firewall_base_url: str) -> GuardrailSpans | None:
    """The span maker for ``init(firewall_trace_spans=True)``; None, with one warning, when
    OpenTelemetry's API is not installed."""
    try:
        from opentelemetry import trace
    except ImportError:
        logger.warning(
            "layer-sdk: firewall_trace_spans=True needs opentelemetry-api (the 'otel' extra); "
            "no guardrail spans will be emitted"
        )
        return None
    return GuardrailSpans(trace, firewall_base_url)
