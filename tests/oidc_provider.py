"""A real OpenID provider for the tests: ``oidc-provider`` (npm), run by Node.

``tests/oidc/provider.mjs`` configures it like a Keycloak realm (see that
file). :class:`OIDCProvider` runs it as a child process on 127.0.0.1, knows its
URLs, and reads what happened there from the provider's own log: every token
request, with its time and answer, and every token issued, with its ``exp``.
Counting at the provider, not in the SDK, is what lets a test say "exactly one
token request". The log outlives the process, so a restart loses none of it.

:class:`BearerCheck` is how the local collector plays a Layer API that accepts
only valid tokens: a token is accepted only if this provider issued it and
its ``exp`` has not come (RFC 7519: never "on or after" exp); with
``introspect=True`` the provider is also asked each time (RFC 7662, with the
API's own client credentials), which notices a revoked token.

The ``oidc`` fixture builds providers for a test and stops them afterwards. It
skips the test only when Node is not installed; a missing ``node_modules`` is
installed with ``npm ci`` from the committed lockfile.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .helpers import wait_until

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
SCRIPT = OIDC_DIR / "provider.mjs"
#: How long the provider may take to print that it listens and to answer discovery.
START_TIMEOUT = 30.0
#: How long ``npm ci`` may take when node_modules is missing.
INSTALL_TIMEOUT = 300.0
REALM = "layer"

_install_lock = threading.Lock()


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint, as the provider saw it."""

    at: float  # Unix time it arrived
    status: int | None
    error: str | None  # the OAuth error code it answered, if any
    client_id: str | None  # the client authenticated, when it was


def node_executable() -> str | None:
    return shutil.which("node")


def ensure_installed() -> None:
    """Install oidc-provider from the lockfile unless it is there already."""
    with _install_lock:
        if (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
            return
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(
                "tests/oidc/node_modules is missing and npm is not installed: "
                "run `(cd tests/oidc && npm ci)`"
            )
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=OIDC_DIR,
            check=True,
            timeout=INSTALL_TIMEOUT,
            capture_output=True,
        )


class OIDCProvider:
    """One oidc-provider process (restartable on the same port), and what it saw."""

    def __init__(
        self,
        *,
        token_ttl: int = 300,
        client_id: str = "layer-sdk",
        client_secret: str | None = None,
        scope: str = "layer-sdk",
    ) -> None:
        self.token_ttl = token_ttl
        self.client_id = client_id
        self.client_secret = client_secret or "cs-" + secrets.token_urlsafe(24)
        self.scope = scope
        self.api_client_id = "layer-api"
        self.api_client_secret = "api-" + secrets.token_urlsafe(24)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._logs = Path(tempfile.mkdtemp(prefix="layer-oidc-"))
        self._runs = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> OIDCProvider:
        """Start the process and wait (bounded) until discovery answers."""
        if self._process is not None:
            return self
        node = node_executable()
        if node is None:
            raise RuntimeError("node is not installed")
        ensure_installed()
        self._runs += 1
        env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_REALM": REALM,
            "OIDC_TOKEN_TTL": str(self.token_ttl),
            "OIDC_CLIENT_ID": self.client_id,
            "OIDC_CLIENT_SECRET": self.client_secret,
            "OIDC_API_CLIENT_ID": self.api_client_id,
            "OIDC_API_CLIENT_SECRET": self.api_client_secret,
            "OIDC_SCOPE": self.scope,
        }
        stdout, stderr = self._log_path(self._runs), self._logs / f"stderr-{self._runs}.log"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            self._process = subprocess.Popen(
                [node, str(SCRIPT)], cwd=OIDC_DIR, env=env, stdout=out, stderr=err
            )
        deadline = time.monotonic() + START_TIMEOUT
        process = self._process

        def ready() -> list[dict[str, Any]]:
            return [record for record in self._records(self._runs) if record["event"] == "ready"]

        wait_until(lambda: ready() or process.poll() is not None, START_TIMEOUT)
        started = ready()
        if not started:
            self.stop()
            raise RuntimeError(
                "the OIDC provider did not start:\n"
                + stdout.read_text(errors="replace")
                + stderr.read_text(errors="replace")
            )
        self.port = urllib.parse.urlsplit(started[0]["issuer"]).port or 0
        if not wait_until(self._discovery_answers, max(0.0, deadline - time.monotonic())):
            self.stop()
            raise RuntimeError(f"{self.url} did not answer discovery within {START_TIMEOUT} s")
        return self

    def _discovery_answers(self) -> bool:
        try:
            url = self.url + "/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=5) as response:
                document = json.loads(response.read())
        except (OSError, ValueError):
            return False
        return isinstance(document, dict) and document.get("issuer") == self.issuer

    def stop(self) -> None:
        """Stop the process (its log stays readable); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self, *, client_secret: str | None = None) -> None:
        """Stop, then start again on the same port (an admin may change the secret meanwhile)."""
        self.stop()
        if client_secret is not None:
            self.client_secret = client_secret
        self.start()

    def close(self) -> None:
        """Stop and delete the logs."""
        self.stop()
        shutil.rmtree(self._logs, ignore_errors=True)

    # -- where it is -----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/{REALM}"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.token_url}/introspect"

    @property
    def revocation_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/revoke"

    # -- what it saw (its log) -------------------------------------------------

    def _log_path(self, run: int) -> Path:
        return self._logs / f"stdout-{run}.log"

    def _records(self, run: int) -> list[dict[str, Any]]:
        records = []
        for line in self._log_path(run).read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written, or not ours
            if isinstance(record, dict) and "event" in record:
                records.append(record)
        return records

    def token_requests(self) -> list[TokenRequest]:
        """Every request to the token endpoint, across restarts, in order of arrival.

        ``status`` is None for one whose answer has not been written yet.
        """
        requests: list[TokenRequest] = []
        for run in range(1, self._runs + 1):
            answers: dict[int, dict[str, Any]] = {}
            arrivals: list[dict[str, Any]] = []
            for record in self._records(run):
                if record["event"] == "token_request":
                    arrivals.append(record)
                elif record["event"] == "token_answer":
                    answers[record["n"]] = record
            for arrival in arrivals:
                answer = answers.get(arrival["n"], {})
                requests.append(
                    TokenRequest(
                        arrival["at"],
                        answer.get("status"),
                        answer.get("error"),
                        answer.get("client_id"),
                    )
                )
        return requests

    def issued(self) -> dict[str, int]:
        """Every access token issued, across restarts: token -> exp (Unix time), in order."""
        return {
            record["token"]: record["exp"]
            for run in range(1, self._runs + 1)
            for record in self._records(run)
            if record["event"] == "issued"
        }

    # -- the resource server's view ------------------------------------------

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection, authenticated as the Layer API's client."""
        answer: dict[str, Any] = self._post_form(
            self.introspection_url,
            {
                "token": token,
                "client_id": self.api_client_id,
                "client_secret": self.api_client_secret,
            },
        )
        return answer

    def revoke(self, token: str) -> None:
        """RFC 7009 revocation, as the client the token was issued to."""
        self._post_form(
            self.revocation_url,
            {"token": token, "client_id": self.client_id, "client_secret": self.client_secret},
        )

    def bearer_check(self, *, introspect: bool = False) -> BearerCheck:
        return BearerCheck(self, introspect=introspect)

    def _post_form(self, url: str, form: dict[str, str]) -> Any:
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(url, data=data, method="POST")
        request.add_header("Accept", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:
            body = response.read()
        return json.loads(body) if body else {}


class BearerCheck:
    """A ``LocalCollector.require_bearer`` check that trusts only the provider's word.

    Accepts a token that the provider issued, until its ``exp`` (refused on
    or after it); with ``introspect=True`` only while introspection also says
    it is active. Every verdict is kept in ``verdicts`` as
    ``(token, unix time, accepted)``.
    """

    def __init__(self, provider: OIDCProvider, *, introspect: bool = False) -> None:
        self._provider = provider
        self._introspect = introspect
        self._lock = threading.Lock()
        self._expiry: dict[str, int] = {}
        self.verdicts: list[tuple[str, float, bool]] = []

    def __call__(self, token: str) -> bool:
        with self._lock:
            exp = self._expiry.get(token)
        if exp is None:
            exp = self._provider.issued().get(token)
            if exp is not None:
                with self._lock:
                    self._expiry[token] = exp
        if exp is not None and self._introspect:
            answer = self._provider.introspect(token)  # raising: the collector answers 500
            if answer.get("active") is not True:
                exp = None
        now = time.time()
        accepted = exp is not None and now < exp
        with self._lock:
            self.verdicts.append((token, now, accepted))
        return accepted

    @property
    def refused(self) -> list[tuple[str, float, bool]]:
        with self._lock:
            return [verdict for verdict in self.verdicts if not verdict[2]]

    @property
    def accepted_tokens(self) -> set[str]:
        with self._lock:
            return {token for token, _, accepted in self.verdicts if accepted}


@pytest.fixture
def oidc() -> Iterator[Callable[..., OIDCProvider]]:
    """``oidc(token_ttl=..., ...)`` starts a provider; all are stopped after the test."""
    if node_executable() is None:
        pytest.skip("node is not installed: the OIDC tests need Node.js to run oidc-provider")
    providers: list[OIDCProvider] = []

    def start(**options: Any) -> OIDCProvider:
        provider = OIDCProvider(**options)
        providers.append(provider)
        return provider.start()

    try:
        yield start
    finally:
        for provider in providers:
            provider.close()
