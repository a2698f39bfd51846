"""Attributes that describe where the SDK runs, added to every session."""

from __future__ import annotations

import os
import platform as _platform
import socket
from collections.abc import Mapping

from ._version import SOURCE, USER_AGENT

__all__ = ["SOURCE", "USER_AGENT", "platform_attributes"]


def platform_attributes(
    environment: str | None, platform: str | None, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The attributes layer-sdk adds to each session, computed once per ``init()``."""
    env = os.environ if env is None else env
    attributes = {
        "source": SOURCE,
        "os": _platform.system().lower() or "unknown",
        # Unchanged (e.g. "CPython"): dashboards built on the original SDK filter on it.
        "python.runtime": _platform.python_implementation(),
        "python.runtime.version": _platform.python_version(),
    }
    if environment:
        attributes["environment"] = environment.lower()
    if platform:
        attributes["platform"] = platform
    if env.get("KUBERNETES_SERVICE_HOST"):
        # The downward API usually exposes these; the pod name defaults to the hostname.
        pod = env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname()
        known = {
            "kubernetes_pod_name": pod,
            "kubernetes_pod_namespace": env.get("POD_NAMESPACE") or _service_account_namespace(),
            "kubernetes_node_name": env.get("NODE_NAME"),
        }
        attributes.update({key: value for key, value in known.items() if value})
    return attributes


def _service_account_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as file:
            return file.read().strip() or None
    except OSError:
        return None
