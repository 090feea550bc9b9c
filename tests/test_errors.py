"""The exception tree drawn in scanner/errors.py's docstring is the real one: every ScannerError subclass in
the package, under its real parent, in its real module, with a line saying when it is raised."""

from __future__ import annotations

import importlib
import pkgutil
import re

import scanner
from scanner import errors
from scanner.errors import ScannerError

# "    Name: what" or "    Name (path/module.py): what", four spaces a level under the docstring's margin
TREE_LINE = re.compile(
    r"^(?P<indent>(?: {4})+)(?P<name>[A-Za-z]\w*)(?: \((?P<path>[\w/]+\.py)\))?: (?P<what>\S.*)$"
)


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """name -> (parent name, module) as errors.py's docstring draws them."""
    tree: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        found = TREE_LINE.match(line)
        if not found:
            continue
        depth = len(found["indent"]) // 4 - 1
        name = found["name"]
        assert name not in tree, f"{name} drawn twice"
        assert depth <= len(parents), f"{name} is indented past its parent"
        parents[depth:] = [name]
        path = found["path"]
        module = "scanner." + path.removesuffix(".py").replace("/", ".") if path else "scanner.errors"
        tree[name] = (parents[depth - 1] if depth else None, module)
        assert len(found["what"]) > 20, f"{name}: say when it is raised and what the user sees"
    return tree


def real_tree() -> dict[str, tuple[str | None, str]]:
    """name -> (parent name, module) of ScannerError and every subclass defined in the package."""
    for info in pkgutil.walk_packages(scanner.__path__, "scanner."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    tree: dict[str, tuple[str | None, str]] = {}

    def walk(cls: type, parent: str | None) -> None:
        if not cls.__module__.startswith("scanner"):
            return  # a test's own subclass
        assert cls.__name__ not in tree, f"two error classes named {cls.__name__}"
        tree[cls.__name__] = (parent, cls.__module__)
        for sub in cls.__subclasses__():
            walk(sub, cls.__name__)

    walk(ScannerError, None)
    return tree


def test_the_drawn_tree_is_the_class_hierarchy() -> None:
    drawn, real = drawn_tree(), real_tree()
    missing = sorted(set(real) - set(drawn))
    extra = sorted(set(drawn) - set(real))
    assert not missing, f"draw these in scanner/errors.py's docstring: {missing}"
    assert not extra, f"drawn in scanner/errors.py but not ScannerError subclasses: {extra}"
    assert drawn == real


def test_the_tree_has_one_root() -> None:
    roots = [name for name, (parent, _) in drawn_tree().items() if parent is None]
    assert roots == ["ScannerError"]
