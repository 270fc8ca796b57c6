"""Where a dialplan's Python code is found: ``python_path:`` and the dialplan's own directory,
the same whatever the working directory or entry point."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dialplan import load_dialplan
from gateway.dialplan.pyimport import use_search_path
from gateway.errors import ConfigErrors

pytestmark = pytest.mark.unit

TOOL = '''
def answer() -> str:
    """Say where this module lives."""
    return {where!r}
'''


def _plan(module: str, extra: str = "") -> str:
    return (f"{extra}tools:\n  answer: {{python: \"{module}:answer\"}}\n"
            "agents:\n  a:\n    instructions: Hi.\n    tools: [answer]\n"
            "routes:\n  - name: all\n    agent: a\n")


@pytest.fixture(autouse=True)
def own_sys_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Give each test its own ``sys.path`` (the loader changes it); forget its modules."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def _module(directory: Path, name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(TOOL.format(where=str(directory)))


def _name(tmp_path: Path, stem: str) -> str:
    return f"{stem}_{tmp_path.name.replace('-', '_')}"


def test_python_path_is_relative_to_the_dialplan_not_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _name(tmp_path, "pp_tools")
    _module(tmp_path / "project" / "code", module)
    plan_file = tmp_path / "project" / "dialplans" / "plan.yaml"
    plan_file.parent.mkdir(parents=True)
    plan_file.write_text(_plan(module, "python_path: ../code\n"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    plan = load_dialplan(plan_file)
    assert plan.python_path == (str(tmp_path / "project" / "code"),)
    assert sys.path[0] == str(tmp_path / "project" / "code")


def test_without_python_path_the_dialplans_own_directory_is_searched(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = _name(tmp_path, "own_dir_tools")
    _module(tmp_path / "plans", module)
    (tmp_path / "plans" / "plan.yaml").write_text(_plan(module))
    monkeypatch.chdir(tmp_path)
    plan = load_dialplan("plans/plan.yaml")
    assert plan.python_path == (str(tmp_path / "plans"),)


def test_python_path_wins_over_the_working_directory_python_m_puts_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `python -m gateway` has the working directory first on sys.path; the console script
    # does not. Both must import the dialplan's copy of a module.
    module = _name(tmp_path, "shadowed")
    _module(tmp_path / "cwd", module)
    _module(tmp_path / "code", module)
    (tmp_path / "plan.yaml").write_text(_plan(module, "python_path: [code]\n"))
    monkeypatch.chdir(tmp_path / "cwd")
    sys.path.insert(0, str(tmp_path / "cwd"))
    load_dialplan(tmp_path / "plan.yaml")
    assert sys.modules[module].answer() == str(tmp_path / "code")


def test_an_includes_python_path_is_relative_to_the_include_and_searched_after(
        tmp_path: Path) -> None:
    module = _name(tmp_path, "included_tools")
    _module(tmp_path / "shared" / "lib", module)
    (tmp_path / "main.yaml").write_text(
        "python_path: [.]\ninclude: shared/agents.yaml\n"
        "routes:\n  - name: all\n    agent: a\n")
    (tmp_path / "shared" / "agents.yaml").write_text(
        f"python_path: lib\ntools:\n  answer: {{python: \"{module}:answer\"}}\n"
        "agents:\n  a:\n    instructions: Hi.\n    tools: [answer]\n")
    plan = load_dialplan(tmp_path / "main.yaml")
    assert plan.python_path == (str(tmp_path), str(tmp_path / "shared" / "lib"))
    assert sys.path[:2] == [str(tmp_path), str(tmp_path / "shared" / "lib")]


def test_bad_python_path_entries_are_errors_with_their_line(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(
        "python_path:\n  - nowhere\n  - 7\n"
        "agents:\n  a:\n    instructions: Hi.\nroutes:\n  - name: all\n    agent: a\n")
    (tmp_path / "other.yaml").write_text(
        "python_path: {a: 1}\n"
        "agents:\n  a:\n    instructions: Hi.\nroutes:\n  - name: all\n    agent: a\n")
    with pytest.raises(ConfigErrors) as bad:
        load_dialplan(tmp_path / "plan.yaml")
    assert [str(e) for e in bad.value.errors] == [
        f"{tmp_path}/plan.yaml:2: python_path[0]: nowhere: no such directory (relative to"
        f" {tmp_path})",
        f"{tmp_path}/plan.yaml:3: python_path[1]: must be a directory name",
    ]
    with pytest.raises(ConfigErrors) as wrong:
        load_dialplan(tmp_path / "other.yaml")
    assert [str(e) for e in wrong.value.errors] == [
        f"{tmp_path}/other.yaml:1: python_path: must be a directory or a list of directories"]


def test_use_search_path_moves_entries_to_the_front_once() -> None:
    sys.path[:] = ["/b", "/x", "/a"]
    use_search_path(["/a", "/b", "/a"])
    assert sys.path == ["/a", "/b", "/x"]
    use_search_path([])
    assert sys.path == ["/a", "/b", "/x"]
