"""``layer-sdk spool``: what a spool directory holds, and emptying it (``--purge``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from .._export._spool_dir import DirectoryReport, inspect, purge

Out = Callable[[str], None]


def spool(
    directory: str | None, *, purge_it: bool = False, force: bool = False, out: Out | None = None
) -> int:
    """Print what the spool in ``directory`` (default: ``LAYER_SPOOL_DIR``) holds, or empty
    it; returns the exit code (1: nothing to look at, or a purge left live files)."""
    out = out or functools.partial(print, flush=True)
    directory = directory or os.environ.get("LAYER_SPOOL_DIR") or None
    if directory is None:
        out("layer-sdk spool: no directory: pass --dir DIR or set LAYER_SPOOL_DIR")
        return 1
    directory = os.path.abspath(os.path.expanduser(directory))
    if purge_it:
        return _purge(directory, force, out)
    try:
        report = inspect(directory)
    except OSError as exc:
        out(f"layer-sdk spool: cannot read {directory}: {exc.strerror or exc}")
        return 1
    _show(report, out)
    return 0


def _show(report: DirectoryReport, out: Out) -> None:
    out(f"Spool directory: {report.directory}")
    if not report.files:
        out("  empty: nothing waits to be sent")
    else:
        out(
            f"  {report.events:,} event(s) waiting, {_size(report.bytes)},"
            f" the oldest written {_age(report.oldest_age)} ago"
        )
        out("")
        header = ("file", "held by", "events", "sessions", "bytes", "on disk", "oldest")
        rows = [header]
        for file in report.files:
            owner = "a live process" if file.live else "nobody (the next process replays it)"
            if file.problem is not None:
                owner += f"; unreadable: {file.problem}"
            rows.append(
                (
                    file.name,
                    owner,
                    f"{file.events:,}",
                    f"{file.sessions:,}",
                    _size(file.bytes),
                    _size(file.disk_bytes),
                    _age(file.oldest_age) if file.events else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            out("  " + "  ".join(cells).rstrip())
    for name in report.aside:
        out(f"  set aside (damaged or of another format, never sent): {name}")


def _purge(directory: str, force: bool, out: Out) -> int:
    try:
        purged = purge(directory, force=force)
    except OSError as exc:
        out(f"layer-sdk spool: cannot read {directory}: {exc.strerror or exc}")
        return 1
    for name in purged.removed:
        out(f"removed {name}")
    if purged.refused:
        for name in purged.refused:
            out(f"left {name}: a live process holds it (--force removes it anyway)")
        return 1
    out(f"{directory} is empty" if purged.removed else f"{directory} held nothing to remove")
    return 0


def _size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} bytes"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
