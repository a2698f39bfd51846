"""The browser the collector page's tests and benchmark drive: Debian's headless Chromium.

Playwright's own browser download does not work here, so it drives the system's
Chromium (``.ci/run`` installs it). ``evil.example`` resolves to 127.0.0.1 in
it: a page of that name reaching a local collector is what DNS rebinding does.
"""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these, Chromium's own connections are refused by a closed network.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP evil.example 127.0.0.1",
]
