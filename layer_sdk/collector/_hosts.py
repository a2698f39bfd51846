"""The ``Host`` names a local collector answers to: its defence against DNS rebinding.

A web page can make the browser send requests to ``127.0.0.1``; the browser
keeps their answers from the page unless they come from the page's own origin.
DNS rebinding defeats that: the name of ``evil.example`` resolves to the
attacker's server while the page loads, then to ``127.0.0.1``, and the page's
requests to its own origin reach the collector, answers included. They still
say ``Host: evil.example:8080``; so the collector answers only a ``Host`` it
knows as its own, on every endpoint (its page, the page's API and the Layer
API), and refuses any other with 403.

Known as its own:

- the address it listens on, with its port (``127.0.0.1:8080``);
- when that address is a loopback one: ``localhost``, ``127.0.0.1`` and
  ``[::1]``, with its port;
- when it listens on every address (``0.0.0.0`` or ``::``): those, and any IP
  address with its port, as other machines reach it (an address typed in the
  address bar cannot be rebound; a name can);
- the names given in ``allowed_hosts`` (e.g. the machine's name, for a
  collector reached as ``http://devbox:8080/``), each with any port or the one
  it gives (``devbox:8080``); ``"*"`` accepts every ``Host``, which turns the
  defence off.

A request without ``Host`` (HTTP/1.0) is answered: a browser always sends one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["HostCheck"]

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _split(host: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host value (the brackets of an IPv6 address taken off), or None."""
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket or not _is_address(name):
            return None
    elif host.count(":") > 1:  # an IPv6 address must be bracketed
        return None
    else:
        name, colon, port = host.partition(":")
        rest = colon + port
    if not name:
        return None
    if not rest:
        return name, None
    port = rest[1:]
    if not rest.startswith(":") or not (port.isascii() and port.isdigit()) or len(port) > 5:
        return None
    return name, int(port)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostCheck:
    """Which ``Host`` values a collector listening on ``bind_host:port`` answers."""

    def __init__(self, bind_host: str, port: int, allowed_hosts: Iterable[str] = ()) -> None:
        bind = bind_host.strip("[]").lower()
        self._port = port
        self._any_address = bind in _WILDCARDS
        names = {bind}
        if self._any_address or _is_loopback(bind):
            names |= _LOOPBACK_NAMES
        self._names = frozenset(names)
        self._anything = False
        self._extra: dict[str, int | None] = {}  # allowed_hosts: name -> its port (None: any)
        for entry in allowed_hosts:
            if entry.strip() == "*":
                self._anything = True
                continue
            parsed = _split(entry)
            if parsed is None:
                raise ValueError(f"allowed_hosts: {entry!r} is not a host name or address")
            self._extra[parsed[0]] = parsed[1]

    def allows(self, host: str | None) -> bool:
        """Whether a request with this ``Host`` header (None: none) is answered."""
        if host is None or self._anything:
            return True
        parsed = _split(host)
        if parsed is None:
            return False
        name, port = parsed
        if name in self._extra:
            wanted = self._extra[name]
            return wanted is None or wanted == (80 if port is None else port)
        if (80 if port is None else port) != self._port:
            return False
        return name in self._names or (self._any_address and _is_address(name))
