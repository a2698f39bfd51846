"""Reading the documentation as the tests check it: its pages, their code blocks with the
``<!-- snippet: ... -->`` comment after each, their tables and their links.

The comment's words (``docs/development.md`` lists them for writers):
``sessions=N actions=N provider_requests=N`` (what the block must report),
``prints`` (the next fenced block is its output), ``continued`` (it runs after the
blocks before it, in one interpreter), ``unset=VARIABLE``, ``pytest=N`` (a test file),
``id=NAME`` (more checks in the test), ``warns`` (it makes the SDK log warnings on
stderr) and ``skip: REASON``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .helpers import ROOT

#: The pages whose code runs: the README and every page of docs/.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(\s*)```(.*)$")
_NOTE = re.compile(r"^\s*<!-- snippet: (.*?) -->\s*$")
_COUNTS = ("sessions", "actions", "provider_requests", "pytest")


@dataclasses.dataclass
class Block:
    """A fenced code block: its language, code, where it starts, and the note after it."""

    page: Path
    line: int
    language: str
    code: str
    note: str | None = None
    output: Block | None = None  # the block its note's ``prints`` names

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclasses.dataclass
class Note:
    """What a ``<!-- snippet: ... -->`` comment says."""

    skip: str | None = None
    continued: bool = False
    prints: bool = False
    unset: list[str] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    id: str | None = None
    warns: bool = False


def parse_note(text: str | None) -> Note:
    """The words of a snippet comment; raises ValueError naming a word it does not know."""
    note = Note()
    if text is None:
        return note
    if text.startswith("skip:"):
        note.skip = text.removeprefix("skip:").strip()
        if not note.skip:
            raise ValueError("skip: needs a reason")
        return note
    for word in text.split():
        key, _, value = word.partition("=")
        if word == "continued":
            note.continued = True
        elif word == "prints":
            note.prints = True
        elif word == "warns":
            note.warns = True
        elif key == "unset" and value:
            note.unset.append(value)
        elif key == "id" and value:
            note.id = value
        elif key in _COUNTS and value.isdigit():
            note.counts[key] = int(value)
        else:
            raise ValueError(f"unknown word in a snippet comment: {word!r}")
    return note


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, in order, each with the snippet comment after it and,
    when that comment says ``prints``, the block that follows as its output."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, language = opening.group(1), opening.group(2).strip()
        start, body = index + 1, []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            index += 1
        index += 1  # the closing fence
        block = Block(page, start, language, "\n".join(body) + "\n")
        if index < len(lines):
            comment = _NOTE.match(lines[index])
            if comment is not None:
                block.note = comment.group(1)
                index += 1
        found.append(block)
    for position, block in enumerate(found):
        after = found[position + 1] if position + 1 < len(found) else None
        if parse_note(block.note).prints:
            if after is None or after.language != "text":
                raise ValueError(f"{block.where}: 'prints', but no ```text block follows")
            block.output = after
    return found


def python_blocks(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.language == "python"]


def tables(page: Path) -> list[list[list[str]]]:
    """The tables of ``page``: each a list of rows (the header first, no separator row),
    each row its cells, stripped."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*page.read_text().splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def without_code(text: str) -> str:
    """``text`` without its fenced blocks (where a link or a figure is code, not prose)."""
    return re.sub(r"^\s*```.*?^\s*```[ \t]*$", "", text, flags=re.DOTALL | re.MULTILINE)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = without_code(page.read_text())
    return {slug(m) for m in re.findall(r"^#{1,6} (.*)$", text, flags=re.MULTILINE)}
