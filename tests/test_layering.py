"""The layering docs/ARCHITECTURE.md promises, checked on the source: imports point down, stages are apart,
and no two modules import each other, directly or around a loop.

Every `import` in every module under scanner/ counts: at module level, inside functions (a lazy import is
still a dependency), under `if TYPE_CHECKING:`. A module may import its own layer or a lower one; the
stage packages (one layer) do not import each other; the import graph has no cycle. There is no list of
exceptions: a new module is placed in LAYERS, or this test fails naming it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "scanner"

# Bottom to top. An entry names a module, or a package and everything in it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",  # imports no other layer; every layer may use it
        (
            "scanner",  # the package itself: __version__
            "scanner.errors",
            "scanner.exitcodes",
            "scanner.outcomes",
            "scanner.hashtypes",
            "scanner.imageformat",
            "scanner.regularfile",
            "scanner.kernelcache",
            "scanner.nostore",
            "scanner.procguard",
            "scanner.crashlog",
            "scanner.textmode",
            "scanner.arrowvalues",
        ),
    ),
    ("urls", ("scanner.urls",)),  # URL reading and normal form: fetch and lists use it
    ("stages", ("scanner.sources", "scanner.fetch", "scanner.hashing", "scanner.lists", "scanner.reports")),
    ("screen", ("scanner.screen",)),  # matches rows (sources) against lists before any request
    # where the stages meet; planner.py stays here, beside pipeline.py, which takes its WorkUnit
    (
        "pipeline",
        ("scanner.config", "scanner.planner", "scanner.plugins", "scanner.workers", "scanner.pipeline"),
    ),
    ("run", ("scanner.run",)),  # a run's lifecycle: --out, checkpoint, lock, merge, summary
    ("runners", ("scanner.runners",)),
    ("audits", ("scanner.audits",)),  # commands over a finished scan
    ("cli", ("scanner.cli", "scanner.__main__")),
)

# The stages know nothing of each other (pipeline.py is where they meet): no stage imports another.
STAGES = dict(LAYERS)["stages"]


def module_files() -> dict[str, tuple[Path, bool]]:
    """Every module under scanner/: dotted name -> (file, is a package's __init__)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


MODULES = module_files()


def _known(name: str) -> str | None:
    """The module a dotted name refers to: itself, or the nearest enclosing module (a.b.C -> a.b)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> set[str]:
    """The scanner modules one module imports, wherever the import statement is."""
    path, is_package = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".") if is_package else name.split(".")[:-1]
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names
            ]
        else:
            continue
        found.update(t for t in map(_known, targets) if t is not None and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def unit_of(module: str) -> tuple[int, str]:
    """(layer index, entry) of a module: the longest entry that is the module or a package holding it."""
    best: tuple[int, str] | None = None
    for index, (_layer, entries) in enumerate(LAYERS):
        for entry in entries:
            inside = module == entry or (entry != "scanner" and module.startswith(entry + "."))
            if inside and (best is None or len(entry) > len(best[1])):
                best = (index, entry)
    if best is None:
        raise LookupError(module)
    return best


def cycles() -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan), as a path back to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return [_path_in(group) for group in groups]


def _path_in(group: set[str]) -> list[str]:
    """A cycle inside a strongly connected group: breadth-first from its first member back to it."""
    start = min(group)
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(GRAPH[node] & group):
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start] if node != start else [start, start]
            if target not in previous:
                previous[target] = node
                queue.append(target)
    raise AssertionError(f"not a cycle: {sorted(group)}")


def test_the_graph_is_read_from_every_module() -> None:
    assert len(MODULES) > 50
    assert "scanner.fetch.guard" in GRAPH["scanner.fetch.fetcher"]  # module level
    assert "scanner.runners.ray" in GRAPH["scanner.cli.common"]  # inside a function
    assert "scanner.urls.parse" in GRAPH["scanner.urls.normal"]


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for module in MODULES:
        try:
            unit_of(module)
        except LookupError:
            unplaced.append(module)
    assert not unplaced, f"place these modules in a layer of LAYERS (tests/test_layering.py): {unplaced}"


def test_every_layer_entry_exists() -> None:
    entries = [entry for _layer, names in LAYERS for entry in names]
    assert len(entries) == len(set(entries))
    assert not [entry for entry in entries if entry not in MODULES], "a layer names a module that is gone"


def test_no_import_cycles() -> None:
    found = cycles()
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_imports_point_down_or_within_a_layer() -> None:
    upward = []
    for module, targets in sorted(GRAPH.items()):
        layer = unit_of(module)[0]
        for target in sorted(targets):
            if unit_of(target)[0] > layer:
                upward.append(
                    f"{module} ({LAYERS[layer][0]}) imports {target} ({LAYERS[unit_of(target)[0]][0]})"
                )
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_stages_do_not_import_each_other() -> None:
    crossing = []
    for module, targets in sorted(GRAPH.items()):
        stage = unit_of(module)[1]
        if stage not in STAGES:
            continue
        crossing += [
            f"{module} imports {target}"
            for target in sorted(targets)
            if unit_of(target)[1] in STAGES and unit_of(target)[1] != stage
        ]
    assert not crossing, "stages that import another stage:\n" + "\n".join(crossing)


def test_the_checks_catch_a_cycle_and_an_upward_import(monkeypatch) -> None:
    toy = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"d", "e2"}, "e2": {"e"}}
    monkeypatch.setattr(sys.modules[__name__], "GRAPH", toy)
    assert sorted(cycles()) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    assert unit_of("scanner.cli.main")[0] > unit_of("scanner.errors")[0]
    assert unit_of("scanner.fetch.guard") == (2, "scanner.fetch")
