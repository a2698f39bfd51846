"""TLS for every connection the SDK makes: one trust store, and failures in plain words.

The trust store is the first of these that exists:

1. the file or directory named by the first of ``SSL_CERT_FILE``,
   ``SSL_CERT_DIR`` (OpenSSL's variables), ``REQUESTS_CA_BUNDLE``,
   ``CURL_CA_BUNDLE`` (requests' and curl's) that is set;
2. the system's store, where OpenSSL looks for it by default;
3. certifi's bundle (the one requests ships with; Windows and some macOS
   builds of Python have no store OpenSSL can find).

The API (the SDK's own client and the proxy path) and the token endpoint
verify against that one store, so that a CA a user trusts through the
environment works for all of them alike. A ``requests.Session`` the user
hands in keeps its own ``verify``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

#: Environment variables naming trusted CA certificates, the first one set wins.
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")

# OpenSSL's verify codes (X509_V_ERR_*) in words a user can act on.
_EXPIRED = "the server's certificate has expired"
_SELF_SIGNED = "the server's certificate is self-signed and not in the trust store"
_UNKNOWN_ISSUER = "the server's certificate was issued by a CA that is not in the trust store"
_WRONG_HOST = "hostname mismatch: the server's certificate is for another host"
_VERIFY_WORDS = {
    2: _UNKNOWN_ISSUER,  # unable to get issuer certificate
    9: "the server's certificate is not valid yet (is this machine's clock right?)",
    10: _EXPIRED,
    18: _SELF_SIGNED,  # depth zero self-signed
    19: "the server's certificate chain ends in a self-signed CA that is not in the trust store",
    20: _UNKNOWN_ISSUER,  # unable to get local issuer certificate
    21: _UNKNOWN_ISSUER,  # unable to verify the first certificate
    23: "the server's certificate has been revoked",
    62: _WRONG_HOST,
    64: "hostname mismatch: the server's certificate is for another IP address",
}
_UNTRUSTED = frozenset({2, 18, 19, 20, 21})


def trust_store(environ: Mapping[str, str] | None = None) -> str | None:
    """The file or directory of trusted CA certificates; None when there is none to name.

    Raises ``ValueError`` naming the variable when it names a path that does
    not exist (OpenSSL would then trust nothing, and say only
    ``CERTIFICATE_VERIFY_FAILED``).
    """
    env = os.environ if environ is None else environ
    for variable in CA_VARIABLES:
        path = env.get(variable)
        if path:
            if not os.path.exists(path):
                raise ValueError(f"{variable} names {path!r}, which does not exist")
            return path
    defaults = ssl.get_default_verify_paths()
    if defaults.openssl_cafile and os.path.isfile(defaults.openssl_cafile):
        return defaults.openssl_cafile
    if defaults.openssl_capath and os.path.isdir(defaults.openssl_capath):
        return defaults.openssl_capath
    try:
        import certifi
    except ImportError:
        return None
    return str(certifi.where())


def tls_context() -> ssl.SSLContext:
    """A client context verifying certificates and host names against the trust store."""
    store = trust_store()
    if store is None:
        return ssl.create_default_context()
    if os.path.isdir(store):
        return ssl.create_default_context(capath=store)
    return ssl.create_default_context(cafile=store)


def requests_verify() -> str | bool:
    """The ``verify=`` argument that makes a requests call use the trust store."""
    store = trust_store()
    return True if store is None else store


def describe_tls_failure(exc: BaseException) -> str | None:
    """What went wrong with TLS, in words, when ``exc`` is (or wraps) a TLS failure."""
    failure = _find(exc, ssl.SSLCertVerificationError) or _find(exc, ssl.SSLError)
    if failure is None:
        return None
    if not isinstance(failure, ssl.SSLCertVerificationError):
        reason = getattr(failure, "reason", None) or failure
        return (
            f"TLS handshake failed (SSL error {reason}): does the server speak https on this port?"
        )
    code = failure.verify_code
    words = _VERIFY_WORDS.get(code, "the server's certificate could not be verified")
    detail = f"TLS certificate not accepted: {words} (OpenSSL: {failure.verify_message})"
    if code in _UNTRUSTED:
        try:
            store = trust_store() or "the system's default"
        except ValueError as exc_store:
            store = str(exc_store)
        detail += (
            f"; trusted CAs come from {store}: to trust another CA, set SSL_CERT_FILE "
            "to a bundle that includes it"
        )
    return detail


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first ``kind`` in ``exc``'s chain: causes, contexts, ``reason`` and ``args``.

    requests wraps urllib3's error, which wraps the ``ssl`` one, each in its
    own way.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return current
        linked = (current.__cause__, current.__context__, getattr(current, "reason", None))
        todo.extend(item for item in (*linked, *current.args) if isinstance(item, BaseException))
    return None
