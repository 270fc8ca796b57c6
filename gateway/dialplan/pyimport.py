"""Find the Python callables a dialplan names by ``pkg.module:function``.

A dialplan's ``python:`` tools and guardrails name user code. The loader imports it once, so a
typo or a missing module is a load error with a line number rather than a failed call. Tool
descriptions and argument schemas come from the tool runtime's
:func:`gateway.agents.schema.describe_tool`, the one source of truth for both. Importing runs
the module's top-level code, nothing else; nothing is called.

Where modules are found is the dialplan's own business, not the working directory's: the loader
puts the plan's search path (its ``python_path:`` directories, or the dialplan file's own
directory) first on ``sys.path`` with :func:`use_search_path` before importing anything, so the
``gateway`` console script and ``python -m gateway`` find the same code. Tool worker processes
copy the gateway's ``sys.path``, so they search the same directories.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from gateway.agents import schema

#: ``(description, parameters JSON schema)`` for a ``pkg.module:function`` path.
Describe = Callable[[str], tuple[str, Mapping[str, Any]]]

#: ``pkg.module:attr`` (the attribute may be dotted, e.g. ``module:Class.method``).
PATH_RE: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
    r"(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SECTION_RE: Final = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Example|"
                                r"Examples|Note|Notes|Attributes):\s*$")


class ImportProblem(Exception):
    """A ``pkg.module:attr`` path cannot be imported, or its target is unusable."""


def import_object(path: str) -> Any:
    """Import the object ``path`` names.

    Args:
        path: ``pkg.module:attr``.

    Raises:
        ImportProblem: The path is malformed, the module does not import (its own error is
            quoted), or the attribute does not exist.
    """
    if not PATH_RE.fullmatch(path):
        raise ImportProblem(f"{path!r} is not a 'package.module:attribute' path")
    try:
        return schema.import_object(path)
    except ValueError as exc:
        raise ImportProblem(str(exc)) from None


def use_search_path(directories: Sequence[str]) -> None:
    """Put ``directories`` first on ``sys.path``, in this order, each once.

    Entries already elsewhere on the path move to the front, so a dialplan's directories win
    over the working directory that ``python -m`` adds, whichever entry point started us.

    Args:
        directories: Absolute directory names, most important first.
    """
    front = list(dict.fromkeys(directories))
    if not front or sys.path[:len(front)] == front:
        return
    sys.path[:] = front + [entry for entry in sys.path if entry not in front]
    importlib.invalidate_caches()  # a directory created after start-up must be seen


def import_callable(path: str) -> Callable[..., Any]:
    """Import ``path`` and check it is callable.

    Raises:
        ImportProblem: As :func:`import_object`, or the object is not callable.
    """
    obj = import_object(path)
    if not callable(obj):
        raise ImportProblem(f"{path!r} is a {type(obj).__name__}, not a function")
    return typing.cast(Callable[..., Any], obj)


def default_describer() -> Describe:
    """How the loader describes Python tools: :func:`gateway.agents.schema.describe_tool`."""
    return schema.describe_tool


def docstring_summary(obj: object) -> str:
    """The docstring of ``obj`` up to its first section (``Args:``, ``Returns:``...)."""
    doc = inspect.getdoc(obj) or ""
    lines: list[str] = []
    for line in doc.splitlines():
        if _SECTION_RE.match(line):
            break
        lines.append(line)
    return " ".join(" ".join(lines).split())
