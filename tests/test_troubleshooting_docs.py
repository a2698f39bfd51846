"""docs/troubleshooting.md explains every WARNING and ERROR line the SDK can log.

The lines are found in the source: every call of ``.warning(``, ``.error(``,
``.exception(`` or ``.critical(`` in ``layer_sdk/``, and the words that the
functions forwarding a message made elsewhere are given (a throttled ``warn``,
a decorator's ``_log_problem``, the delivery trouble of ``_trouble.Trouble``,
a loss line's ``explain``). Each message's skeleton (its placeholders shown as
``…``) must be quoted on the page, at least its first words: a message added
or reworded without the page fails here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from .helpers import ROOT

PAGE = ROOT / "docs" / "troubleshooting.md"
PACKAGE = ROOT / "layer_sdk"

#: Logging methods whose first argument is a WARNING or ERROR message.
LEVELS = {"warning", "error", "exception", "critical"}
#: Calls that hand over words of a logged line, and which of their arguments.
WORDS_FROM = {
    "warn": (1,),  # integrations' ThrottledLog.warn(kind, message, *args)
    "_log_problem": (0,),  # the decorators' "layer-sdk <what> <function>: <problem>"
    "Trouble": (1, 2),  # delivery trouble: its summary and its advice
    "explain": (1,),  # why a loss happened, in its loss line
    "explain_refusal": (1,),
}
#: Functions whose log call is all placeholders: the words come from their callers.
FORWARDERS = {"warn", "_log_problem", "failed"}
#: How much of a skeleton the page must quote.
FRAGMENT_CHARS = 60

_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdrif]")
_WORD = re.compile(r"[A-Za-z]{2,}")


def skeleton(node: ast.expr) -> str | None:
    """The text of a string literal, an f-string or a concatenation of them, with every
    placeholder as ``…`` and its spaces collapsed; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = _PLACEHOLDER.sub("…", node.value).replace("%%", "%")
    elif isinstance(node, ast.JoinedStr):
        text = "".join(
            part.value if isinstance(part, ast.Constant) else "…" for part in node.values
        )
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = skeleton(node.left), skeleton(node.right)
        return None if left is None or right is None else left + right
    else:
        return None
    return " ".join(re.sub("…+", "…", text).split())


def has_words(text: str) -> bool:
    """Whether ``text`` says something besides the SDK's name."""
    return bool(_WORD.search(text.replace("layer-sdk", "")))


def fragment(text: str) -> str:
    """The first ``FRAGMENT_CHARS`` characters of a skeleton, whole words only."""
    if len(text) <= FRAGMENT_CHARS:
        return text
    return text[:FRAGMENT_CHARS].rsplit(" ", 1)[0]


def messages() -> Iterator[tuple[str, str]]:
    """(where, skeleton) of every logged WARNING/ERROR message and forwarded word."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = str(path.relative_to(ROOT))
        for function, node in calls_in(tree):
            callee = node.func
            called = (
                callee.attr if isinstance(callee, ast.Attribute)
                else callee.id if isinstance(callee, ast.Name)
                else ""
            )  # fmt: skip
            here = f"{where}:{node.lineno}"
            if called in LEVELS and node.args:
                text = skeleton(node.args[0])
                if text is None or not has_words(text):
                    assert function in FORWARDERS, (
                        f"{here}: a message without words of its own; add its function to "
                        "FORWARDERS and the calls that give it its words to WORDS_FROM"
                    )
                    continue
                yield here, text
            elif called in WORDS_FROM and not (
                isinstance(callee, ast.Attribute) and getattr(callee.value, "id", "") == "warnings"
            ):
                for index in WORDS_FROM[called]:
                    text = skeleton(node.args[index]) if index < len(node.args) else None
                    if text is not None and has_words(text):
                        yield here, text


def calls_in(tree: ast.AST, function: str = "") -> Iterator[tuple[str, ast.Call]]:
    """Every call in ``tree``, with the name of the innermost function that makes it."""
    for child in ast.iter_child_nodes(tree):
        inner = (
            child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
        )
        if isinstance(child, ast.Call):
            yield function, child
        yield from calls_in(child, inner)


def normalized(text: str) -> str:
    return " ".join(text.replace("`", "").split())


def test_the_troubleshooting_page_explains_every_warning_and_error_line() -> None:
    page = normalized(PAGE.read_text())
    found = list(messages())
    assert len(found) > 40  # the scan finds the lines (a broken scan would find none)
    missing = [
        f"{where}: {fragment(text)!r}" for where, text in found if fragment(text) not in page
    ]
    assert missing == [], "docs/troubleshooting.md does not quote:\n" + "\n".join(missing)


def test_the_scan_reads_every_kind_of_message() -> None:
    """The scan itself: a literal, an f-string, a concatenation, %-placeholders."""
    parsed = ast.parse(
        'logger.warning("layer-sdk lost %d event(s): %s%s" " (kept)", n, r, d)\n'
        'Trouble(K, f"cannot reach {host} ({cause})", "check %(x)s")\n'
    )
    calls = [node for node in ast.walk(parsed) if isinstance(node, ast.Call)]
    texts = [skeleton(arg) for call in calls for arg in call.args]
    assert "layer-sdk lost … event(s): … (kept)" in texts
    assert "cannot reach … (…)" in texts and "check …" in texts
    assert fragment("word " * 30).endswith("word") and len(fragment("word " * 30)) <= 60
    assert Path(PAGE).exists()
