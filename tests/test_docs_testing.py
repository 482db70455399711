"""docs/testing.rst: every example on the page runs here.

The page's examples are two files it includes with ``literalinclude``:
docs/examples/testing_app.py (the app under test) and docs/examples/testing_tests.py
(an ordinary pytest module of a user's project, which imports the app as
``testing_app``). Each ``test_*`` function of the latter is a test of its own here: both
modules are imported afresh by path for it (``testing_app`` only for the duration of the
test, under that name, since the tests import it so), and its arguments are resolved as
pytest would: the module's own fixtures (with their teardown), else pytest's
(``caplog``...). Nothing of the example modules is left in this module's namespace.
Each runs twice: with the in-process store, and on one redis-server that all of them
share (``REDIS_URL``), as a project's tests share its CI's Redis.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"
APP = EXAMPLES / "testing_app.py"
TESTS = EXAMPLES / "testing_tests.py"
PAGE = DOCS / "testing.rst"
_serial = itertools.count()


def _test_names() -> list[str]:
    """The ``test_*`` functions of docs/examples/testing_tests.py, read without importing it."""
    tree = ast.parse(TESTS.read_text(encoding="utf-8"))
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]


def _import(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["memory", "redis"])
def example_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """docs/examples/testing_tests.py, imported afresh with a fresh ``testing_app``: once
    without ``REDIS_URL`` (in-process stores), once with the session's redis-server as the
    Redis every test shares, never flushed between them (what ``isolated_config`` is for)."""
    if request.param == "redis":
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_server").url)
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setitem(sys.modules, "testing_app", None)  # put back as it was afterwards
    app_module = _import("testing_app", APP)
    tests_name = f"docs_example_testing_tests_{next(_serial)}"
    try:
        yield _import(tests_name, TESTS)
    finally:
        sys.modules.pop(tests_name, None)
        app_module.asyncstate.shutdown(2)


def _fixture_function(module: ModuleType, name: str) -> Callable[..., Any] | None:
    """The plain function behind a ``@pytest.fixture`` defined in ``module``, or None."""
    found = module.__dict__.get(name)
    raw = getattr(found, "__wrapped__", None)
    if found is None or inspect.isfunction(found) or not callable(raw):
        return None
    return raw  # type: ignore[no-any-return]


def _run(fn: Callable[..., Any], module: ModuleType, request: pytest.FixtureRequest) -> None:
    """Call ``fn`` with its fixtures, set up in order and torn down in reverse."""
    with contextlib.ExitStack() as teardown:
        values: dict[str, Any] = {}

        def value(name: str) -> Any:
            if name in values:
                return values[name]
            raw = _fixture_function(module, name)
            if raw is None:
                values[name] = request.getfixturevalue(name)  # pytest's own
                return values[name]
            made = raw(**{p: value(p) for p in inspect.signature(raw).parameters})
            if inspect.isgenerator(made):
                values[name] = next(made)
                teardown.callback(_finish, made, name)
            else:
                values[name] = made
            return values[name]

        fn(**{p: value(p) for p in inspect.signature(fn).parameters})


def _finish(generator: Iterator[Any], name: str) -> None:
    for _ in generator:
        raise AssertionError(f"fixture {name} yielded twice")


@pytest.mark.parametrize("name", _test_names())
def test_example(name: str, example_tests: ModuleType, request: pytest.FixtureRequest) -> None:
    _run(getattr(example_tests, name), example_tests, request)


def test_the_examples_are_all_found() -> None:
    assert len(_test_names()) >= 8


def test_every_python_example_of_the_page_is_an_included_tested_file() -> None:
    """No hand-written Python on the page: each example is a part of the files above."""
    text = PAGE.read_text(encoding="utf-8")
    assert not re.search(r"^\.\. code-block:: (python|pycon)", text, re.MULTILINE)
    included = re.findall(r"^\.\. literalinclude:: (\S+)((?:\n    :.*)*)", text, re.MULTILINE)
    assert included
    names = {Path(path).name for path, _options in included}
    assert names == {APP.name, TESTS.name}
    defined = {
        node.name
        for path in (APP, TESTS)
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    for _path, options in included:
        for shown in re.findall(r":pyobject: (\w+)", options):
            assert shown in defined, shown
