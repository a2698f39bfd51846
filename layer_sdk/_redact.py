"""Keeping secrets out of text: what tokens and secrets look like, and how they are masked.

Text that comes back from the network can quote what we sent: an API error
body that echoes the ``Authorization`` header, an identity provider that
echoes the form with the client secret. Such text reaches exception messages,
``LayerHTTPError.response_data`` and log lines, so it goes through ``scrub``
first, which blanks:

- every secret this process's auth providers know (the OIDC client secret,
  the tokens fetched), and any the caller of ``scrub`` knows for the text (the
  API key a provider's error may quote), raw or as a server might echo it:
  percent- or form-encoded (either case of hex), JSON- or HTML-escaped. An
  exact echo is caught whatever surrounds it;
- credentials after ``Bearer`` or ``Basic``;
- the value of any field whose name says it is secret (``access_token``,
  ``refresh_token``, ``id_token``, ``client_secret``, ``password``,
  ``authorization``, ``api_key``, ``cookie``, ...): in JSON (also JSON quoted
  inside a JSON string, or a repr), form-encoded (``a=b&client_secret=...``,
  also when the whole form is percent-encoded again: ``client_secret%3D...``);
- whole ``Authorization:``, ``Cookie:`` and API key header lines;
- API keys by the shape their providers give them (OpenAI's and Anthropic's
  ``sk-...``, Google's ``AIza...``), for text whose key is not known;
- the password of a ``scheme://user:password@host`` URL.

Masking errs on the side of hiding: a word of an error message may be masked
too, a secret never shown. Every pattern runs in linear time, so a hostile
answer cannot make scrubbing slow.

``mask_url`` also hides a lone ``token@`` of a URL, for reprs and
command-line output.
"""

from __future__ import annotations

import contextlib
import functools
import re
import weakref
from collections.abc import Iterable
from typing import Protocol
from urllib.parse import quote, quote_plus

MASK = "<redacted>"
#: Known secret values shorter than this are not searched for: masking every
#: "test" in a message would hide more than it protects.
MIN_KNOWN_SECRET_LENGTH = 6

# A field name that says its value is secret: "client_secret", "x-api-key",
# "Authorization". The prefix is bounded so that matching stays linear.
_SECRET_NAME = (
    r"[\w.-]{0,40}?"
    r"(?:token|secret|password|passwd|api[_-]?key|authorization|cookie|assertion)"
)
_NAME_START = r"(?<![\w.-])"

# What each rule matches, and its replacement (the groups keep the names).
_RULES = (
    # "name": "value" in JSON; the value may hold escaped quotes.
    (rf'(?i)("{_SECRET_NAME}"\s*:\s*")(?:[^"\\]|\\.)*(")', rf"\1{MASK}\2"),
    # The same inside a JSON string (\"name\": \"value\") or a repr ('name': 'value'):
    # the value ends at a quote or a backslash (the end of the quoted JSON).
    (
        rf"(?i)(\\{{0,3}}['\"]{_SECRET_NAME}\\{{0,3}}['\"]\s*:\s*\\{{0,3}}['\"])[^'\"\\\r\n]*",
        rf"\1{MASK}",
    ),
    # A header line as an echo of the request shows it, to the end of the line.
    (
        r"(?i)(?<![\w-])((?:proxy-)?authorization|(?:set-)?cookie|(?:x-)?api-key)(\s*:[ \t]*)"
        r"[^'\"\\\r\n]*",
        rf"\1\2{MASK}",
    ),
    # name=value in a form or a query string, "=" possibly percent-encoded itself.
    (rf"(?i){_NAME_START}({_SECRET_NAME}(?:=|%3D))[^&\s\"'<>\\]*", rf"\1{MASK}"),
    # The password of a scheme://user:password@host URL.
    (r"(?i)\b([a-z][a-z0-9+.-]{0,30}://[^/?#\s@:'\"]{0,256}:)[^/?#\s@'\"]{1,256}@", r"\1***@"),
    # Credentials of an HTTP authentication scheme (the space possibly percent-encoded).
    (r"(?i)\b(bearer|basic)(\s+|%20|\+)[A-Za-z0-9\-._~+/%]{8,}=*", rf"\1\2{MASK}"),
    # A provider's API key by its shape: sk-... (OpenAI's, sk-ant-... Anthropic's), AIza...
    (r"\b(?:sk-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{35})", MASK),
)


@functools.cache
def _compiled_rules() -> list[tuple[re.Pattern[str], str]]:
    # Compiled on first use: importing the SDK compiles nothing.
    return [(re.compile(source), replacement) for source, replacement in _RULES]


class SecretHolder(Protocol):
    """Something that knows secrets of this process (an auth provider)."""

    def known_secrets(self) -> Iterable[str]:
        """The secret values it holds now (e.g. the client secret, recent tokens)."""
        ...


_holders: weakref.WeakSet[SecretHolder] = weakref.WeakSet()


def watch(holder: SecretHolder) -> None:
    """Have ``scrub`` mask the secrets of ``holder`` for as long as it lives."""
    # One that cannot be weakly referenced (__slots__) gets the patterns only.
    with contextlib.suppress(TypeError):
        _holders.add(holder)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every token, secret and credential masked (see the module doc).

    ``secrets``: more values known to be secret for this text, masked as the
    watched holders' are (e.g. the API key a provider's error may quote).
    """
    if not text:
        return text
    known = _known_pattern(secrets)
    if known is not None:
        text = known.sub(MASK, text)
    for pattern, replacement in _compiled_rules():
        text = pattern.sub(replacement, text)
    return text


def mask_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part (or a lone token) masked."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)", url)
    if match is not None and "@" in match[2]:
        userinfo, _, host = match[2].rpartition("@")
        user, colon, _ = userinfo.partition(":")
        masked = f"{user}:***" if colon else "***"
        url = f"{match[1]}{masked}@{host}{url[match.end() :]}"
    return scrub(url)


def _known_pattern(secrets: Iterable[str] = ()) -> re.Pattern[str] | None:
    """One pattern for every known secret in every shape it may be echoed in."""
    shapes: set[str] = set()
    for value in [*secrets, *_held_secrets()]:
        if isinstance(value, str) and len(value) >= MIN_KNOWN_SECRET_LENGTH:
            shapes.update(_shapes(value))
    if not shapes:
        return None
    # Longest first, so that an encoded shape is masked whole, not a raw prefix of it.
    alternatives = sorted(shapes, key=len, reverse=True)
    # re caches compiled patterns: the same secrets cost one compilation.
    return re.compile("|".join(re.escape(shape) for shape in alternatives), re.IGNORECASE)


def _held_secrets() -> list[str]:
    """The secrets the watched holders know now."""
    values: list[str] = []
    for holder in list(_holders):
        try:
            values.extend(holder.known_secrets())
        except Exception:  # never let a holder break an error message
            continue
    return values


def _shapes(value: str) -> set[str]:
    import html  # imported when first needed: error paths only
    import json

    json_escaped = json.dumps(value)[1:-1]
    return {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json_escaped,
        json_escaped.replace("/", "\\/"),
        json.dumps(value, ensure_ascii=False)[1:-1],
        html.escape(value),
    }
