"""The terminal of the command line: rich when it is there and the output is a terminal."""

from __future__ import annotations

from typing import Any, TextIO


def rich_console(stream: TextIO) -> Any:
    """A ``rich.console.Console`` on ``stream`` when rich is installed and it is a terminal."""
    try:
        if not stream.isatty():
            return None
        from rich.console import Console  # type: ignore[import-not-found, unused-ignore]
    except (ImportError, AttributeError, ValueError):  # no rich; no isatty(); a closed stream
        return None
    return Console(file=stream)
