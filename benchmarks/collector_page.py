"""How fast the collector's page shows a day of work: 10,000 sessions and 100,000 actions.

    python benchmarks/collector_page.py [--reps R] [--write]

The store is the one of the browser test (``tests/collector_store.py``): an
SQLite file of 10,000 sessions holding 100,000 actions, one of them a session of
1,000 actions. ``layer-sdk collector --db FILE`` serves it in a process of its
own, as a user would run it; headless Chromium (``tests/browser.py``) opens the
page, in a fresh browser context each repetition.

The page times itself with the User Timing API: ``sessions-list`` runs from the
list's request to the first frame after its rows are drawn (the newest 100
sessions, of 10,000; then the sessions whose attributes hold a text typed in
the filter, which the collector looks for in all 10,000); ``session-open`` from
the request of one session to the first frame after its conversation is drawn
(the session of 1,000 actions).
For each, the table also gives the part spent waiting for the collector's JSON
answer (Resource Timing: request start to response end) and its size. Figures
are medians across repetitions, with the slowest. ``--write`` also puts the
table in ``benchmarks/RESULTS.md``, between its ``collector_page`` markers.
Needs the ``dev`` extra (Playwright) and ``/usr/bin/chromium``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the work tree's layer_sdk and tests, not installed ones

from playwright.sync_api import sync_playwright  # noqa: E402

from tests import collector_store  # noqa: E402
from tests.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.helpers import wait_until  # noqa: E402

MARK_BEGIN = "<!-- collector_page: begin -->"
MARK_END = "<!-- collector_page: end -->"
TARGET_MS = 1000.0
FILTER = "user.id=user-299"  # typed in the filter: an attribute of 33 sessions
FILTERED = 33

# What the page recorded: a measure's duration, and the JSON answer it waited for.
_READ = """([measure, answer]) => {
  const found = performance.getEntriesByName(measure);
  const resources = performance.getEntriesByType("resource").filter((e) => e.name.includes(answer));
  const last = resources[resources.length - 1];
  return {
    count: found.length,
    duration: found.length ? found[found.length - 1].duration : null,
    answer: last ? last.responseEnd - last.requestStart : null,
    bytes: last ? last.decodedBodySize : null,
  };
}"""


def read(page: Any, measure: str, answer: str, count: int) -> dict[str, float]:
    """The page's figures for ``measure`` once it has recorded ``count`` of them."""
    if not wait_until(lambda: page.evaluate(_READ, [measure, answer])["count"] >= count, 60):
        raise RuntimeError(f"the page recorded no {measure!r}")
    return dict(page.evaluate(_READ, [measure, answer]))


def repetition(browser: Any, url: str) -> dict[str, dict[str, float]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto(url + "/")
        listed = read(page, "sessions-list", "/api/sessions?", 1)
        rows = page.locator("#sessions tbody tr").count()
        if rows != 100:
            raise RuntimeError(f"the list shows {rows} rows, not 100")
        page.fill("#filter-text", FILTER)
        filtered = read(page, "sessions-list", "/api/sessions?", 2)
        rows = page.locator("#sessions tbody tr").count()
        if rows != FILTERED:
            raise RuntimeError(f"the filtered list shows {rows} rows, not {FILTERED}")
        page.evaluate(f"location.hash = '#/sessions/{collector_store.LONG_SESSION}'")
        opened = read(page, "session-open", f"/api/sessions/{collector_store.LONG_SESSION}", 1)
        actions = page.locator("#session-view .timeline > li.action").count()
        if actions != collector_store.LONG_SESSION_ACTIONS:
            raise RuntimeError(f"the session shows {actions} actions")
        return {"list": listed, "filtered": filtered, "open": opened}
    finally:
        context.close()


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def report(runs: list[dict[str, dict[str, float]]], load: float, browser: str, reps: int) -> str:
    def figure(which: str, field: str) -> tuple[float, float]:
        values = [run[which][field] for run in runs]
        return statistics.median(values), max(values)

    lines = [
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, 1-minute load average"
        f" {os.getloadavg()[0]:.2f} at the end; the collector loaded the file in {load:.1f} s",
        f"- Python {platform.python_version()}; Chromium {browser} (headless);"
        f" playwright {version('playwright')}",
        f"- {reps} repetitions, each in a fresh browser context; medians, and the slowest;"
        f" run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        "| what | request to first frame drawn | of which the JSON answer | answer size "
        "| target | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = (
        ("list", "sessions list: newest 100 of 10,000 sessions (100,000 actions)"),
        ("filtered", f"the list filtered by text (`{FILTER}`: {FILTERED} of 10,000)"),
        ("open", "one session of 1,000 actions, as a conversation"),
    )
    for which, title in rows:
        duration, slowest = figure(which, "duration")
        answer, _ = figure(which, "answer")
        size = statistics.median(run[which]["bytes"] for run in runs)
        met = "yes" if slowest < TARGET_MS else "**no**"
        lines.append(
            f"| {title} | {duration:,.0f} ms (slowest {slowest:,.0f} ms) | {answer:,.0f} ms "
            f"| {size / 1024:,.0f} KiB | < {TARGET_MS:,.0f} ms | {met} |"
        )
    return "\n".join(lines)


def write_results(text: str) -> None:
    """Replace the section between the markers of RESULTS.md (appended when missing)."""
    results = HERE / "RESULTS.md"
    current = results.read_text()
    section = (
        f"{MARK_BEGIN}\n## The collector's page: a day of work\n\n"
        f"`python benchmarks/collector_page.py --write` (see `benchmarks/README.md`).\n\n"
        f"{text}\n{MARK_END}"
    )
    if MARK_BEGIN in current and MARK_END in current:
        head, _, rest = current.partition(MARK_BEGIN)
        _, _, tail = rest.partition(MARK_END)
        current = f"{head}{section}{tail}"
    else:
        current = f"{current.rstrip()}\n\n{section}\n"
    results.write_text(current)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="page loads (default 7)")
    parser.add_argument("--write", action="store_true", help="save to benchmarks/RESULTS.md")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "day.sqlite"
        collector_store.fill(path)
        started = time.monotonic()
        with collector_store.serving(path) as url, sync_playwright() as playwright:
            load = time.monotonic() - started
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                repetition(browser, url)  # a warm-up: the collector's first answers
                runs = []
                for rep in range(options.reps):
                    runs.append(repetition(browser, url))
                    print(f"repetition {rep + 1}/{options.reps} done", file=sys.stderr)
                text = report(runs, load, browser.version, options.reps)
            finally:
                browser.close()
    print(text)
    if options.write:
        write_results(text)
        print(f"\nsaved to {HERE / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
