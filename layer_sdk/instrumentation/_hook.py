"""Running a function right after a module is imported, without importing it ourselves.

``init()`` must not pay for importing a provider SDK (about a second for
openai 3.x) when the application has not imported it yet, and may never use
it: instead a :class:`_PostImportHook` on ``sys.meta_path`` lets the real
import run and calls back as soon as the module's code has run, so that the
classes are patched before the application gets the module. Every provider's
:class:`~._patch.Patcher` has one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import threading
from collections.abc import Callable
from typing import Any


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it only arranges for ``imported()`` to run after ``import name``."""

    def __init__(self, name: str, imported: Callable[[], None]) -> None:
        self._name = name
        self._imported = imported
        self._local = threading.local()

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self._name or getattr(self._local, "busy", False):
            return None
        self._local.busy = True
        try:
            spec = importlib.util.find_spec(fullname)  # the other finders' answer
        except (ImportError, ValueError):
            return None
        finally:
            self._local.busy = False
        loader: Any = spec.loader if spec is not None else None
        execute = getattr(loader, "exec_module", None)
        if spec is None or execute is None:
            return None
        imported = self._imported

        def exec_module(module: Any) -> None:
            execute(module)
            imported()

        try:
            loader.exec_module = exec_module  # this import's loader only
        except (AttributeError, TypeError):
            return None
        return spec
