"""No import cycles in exchange_server, between modules or between its packages.

Why: a cycle makes the import order matter (a half-initialised module hands out missing
names), hides which layer depends on which, and keeps a package from being used or tested
alone.  The graph is built statically from the source with :mod:`ast`, so every ``import`` and
``from ... import`` counts wherever it is written: at the top, inside a function, under
``TYPE_CHECKING`` -- a deferred import is still a dependency, it only postpones the failure.

Edges:

* ``import exchange_server.a.b`` / ``from exchange_server.a.b import x``: the module depends
  on ``a.b`` (and on ``a.b.x`` when that is a submodule) and on the package ``a`` (its
  ``__init__`` runs first), unless the importer is itself inside ``a`` (then ``a`` is already
  being initialised: a module's own package is not a dependency);
* relative imports are resolved against the importing module's package;
* package level: the first-level subpackages (``accesshttp``, ``accessws``, ``apidoc``,
  ``bus``, ...; a top-level module such as ``cli`` is its own node); a package depends on
  another when any module in it imports any module of the other.

Cycles are the strongly connected components of those graphs (Tarjan's algorithm, iterative).
Cycles that other items of the Structure issue remove are listed in ``KNOWN_CYCLES`` below:
the test fails on any cycle edge that is not listed there, and on a listed edge that is no
longer part of a cycle (delete it from the list when its item is done).

``python -m tests.unit.test_imports`` prints every cycle with its edges.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import REPO

ROOT_PACKAGE = "exchange_server"
SOURCE = REPO / ROOT_PACKAGE


@dataclass(frozen=True)
class Import:
    """One dependency edge, with where it is written."""

    source: str
    target: str
    line: int
    #: package edges: the first module edge behind it
    via: str = ""


def module_files(root: Path = SOURCE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` = package)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _known(name: str, files: dict[str, Path]) -> str | None:
    """The module ``name`` names, or its nearest existing ancestor (``a.b.Cls`` -> ``a.b``)."""
    while name:
        if name in files:
            return name
        name = name.rpartition(".")[0]
    return None


def _resolve_relative(module: str, level: int, target: str | None,
                      files: dict[str, Path]) -> str:
    package = module if _is_package(module, files) else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{target}" if target else package


def _named(node: ast.Import | ast.ImportFrom, module: str,
           files: dict[str, Path]) -> Iterator[str]:
    """The dotted names one import statement loads."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = (_resolve_relative(module, node.level, node.module, files) if node.level
            else node.module or "")
    yield base
    for alias in node.names:
        if f"{base}.{alias.name}" in files:  # ``from package import submodule``
            yield f"{base}.{alias.name}"


def _with_packages(target: str, importer: str) -> Iterator[str]:
    """``target`` and each package above it that the importer is not inside."""
    parts = target.split(".")
    for depth in range(2, len(parts) + 1):  # never the root package: everything is inside it
        name = ".".join(parts[:depth])
        if not (importer == name or importer.startswith(name + ".")):
            yield name


def module_imports(files: dict[str, Path] | None = None) -> list[Import]:
    """Every module -> module dependency inside the package."""
    files = module_files() if files is None else files
    edges: list[Import] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _named(node, module, files):
                if name != ROOT_PACKAGE and not name.startswith(ROOT_PACKAGE + "."):
                    continue
                found = _known(name, files)
                if found is None:
                    continue
                edges += [Import(module, target, node.lineno)
                          for target in _with_packages(found, module) if target != module]
    return edges


def package_of(module: str) -> str:
    """The first-level subpackage (or top-level module) ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_imports(edges: Iterable[Import]) -> list[Import]:
    """The module edges that cross packages, named by package (with the first module edge)."""
    out: dict[tuple[str, str], Import] = {}
    for edge in edges:
        key = (package_of(edge.source), package_of(edge.target))
        if key[0] != key[1]:
            out.setdefault(key, Import(key[0], key[1], edge.line, f"{edge.source} -> {edge.target}"))
    return list(out.values())


def strongly_connected(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iterative (no recursion limit)."""
    graph: dict[str, list[str]] = {node: [] for node in nodes}
    for source, target in edges:
        graph.setdefault(source, []).append(target)
        graph.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is not None:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph[successor])))
                elif successor in on_stack:
                    low[node] = min(low[node], index[successor])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def cycle_edges(edges: list[Import]) -> list[list[Import]]:
    """For each cycle (component of more than one node): its edges, sorted."""
    nodes = {e.source for e in edges} | {e.target for e in edges}
    out = []
    for component in strongly_connected(nodes, ((e.source, e.target) for e in edges)):
        if len(component) > 1:
            inside = [e for e in edges if e.source in component and e.target in component]
            out.append(sorted(inside, key=lambda e: (e.source, e.target, e.line)))
    return sorted(out, key=lambda cycle: (cycle[0].source, cycle[0].target))


def describe(cycles: list[list[Import]]) -> str:
    lines = []
    for cycle in cycles:
        members = sorted({e.source for e in cycle})
        lines.append(f"cycle through {', '.join(members)}:")
        lines += [f"    {e.source} -> {e.target}  ({e.via + ', ' if e.via else ''}line {e.line})"
                  for e in cycle]
    return "\n".join(lines)


#: Cycles that other items of the Structure issue remove, as (importer, imported) edges.  Every
#: edge of a cycle must be listed here; a listed edge that is no longer on a cycle fails
#: ``test_known_cycles_are_still_there`` (delete it then).  Nothing may be added.
KNOWN_CYCLES: dict[str, frozenset[tuple[str, str]]] = {
}

#: The same for the package graph.
KNOWN_PACKAGE_CYCLES: dict[str, frozenset[tuple[str, str]]] = {
}


def _unlisted(cycles: list[list[Import]], known: dict[str, frozenset[tuple[str, str]]]
              ) -> list[list[Import]]:
    allowed = set().union(*known.values()) if known else set()
    return [cycle for cycle in cycles if any((e.source, e.target) not in allowed for e in cycle)]


def _stale(cycles: list[list[Import]], known: dict[str, frozenset[tuple[str, str]]]
           ) -> list[str]:
    cyclic = {(e.source, e.target) for cycle in cycles for e in cycle}
    return [f"{item}: {source} -> {target}" for item, listed in known.items()
            for source, target in sorted(listed) if (source, target) not in cyclic]


def test_the_graph_sees_deferred_relative_and_package_imports(tmp_path: Path) -> None:
    package = tmp_path / ROOT_PACKAGE
    for sub in ("a", "b", "c"):
        (package / sub).mkdir(parents=True)
        (package / sub / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "a" / "x.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from exchange_server.b.y import Y\n"
        "from . import z\n")
    (package / "a" / "z.py").write_text("def f():\n    import exchange_server.c.w\n")
    (package / "b" / "y.py").write_text("from ..a.x import f\n")
    (package / "c" / "w.py").write_text("")
    files = module_files(package)
    edges = {(e.source, e.target) for e in module_imports(files)}
    assert edges == {
        ("exchange_server.a.x", "exchange_server.b"), ("exchange_server.a.x", "exchange_server.b.y"),
        ("exchange_server.a.x", "exchange_server.a.z"),
        ("exchange_server.a.z", "exchange_server.c"), ("exchange_server.a.z", "exchange_server.c.w"),
        ("exchange_server.b.y", "exchange_server.a"), ("exchange_server.b.y", "exchange_server.a.x"),
    }
    cycles = cycle_edges(module_imports(files))
    assert [{(e.source, e.target) for e in c} for c in cycles] == [
        {("exchange_server.a.x", "exchange_server.b.y"), ("exchange_server.b.y", "exchange_server.a.x")}]
    packages = {(e.source, e.target) for e in package_imports(module_imports(files))}
    assert packages == {("a", "b"), ("a", "c"), ("b", "a")}
    assert [set(c) for c in strongly_connected({"a", "b", "c"}, packages) if len(c) > 1] == [{"a", "b"}]


def test_tarjan_finds_every_component_of_a_long_chain() -> None:
    nodes = [str(i) for i in range(5000)]
    edges = list(zip(nodes, nodes[1:], strict=False)) + [("4999", "0"), ("x", "y")]
    components = strongly_connected(nodes, edges)
    assert sorted(len(c) for c in components) == [1, 1, 5000]


def test_no_module_import_cycles() -> None:
    new = _unlisted(cycle_edges(module_imports()), KNOWN_CYCLES)
    assert not new, "module import cycles:\n" + describe(new)


def test_no_package_import_cycles() -> None:
    new = _unlisted(cycle_edges(package_imports(module_imports())), KNOWN_PACKAGE_CYCLES)
    assert not new, "package import cycles:\n" + describe(new)


def test_known_cycles_are_still_there() -> None:
    edges = module_imports()
    stale = (_stale(cycle_edges(edges), KNOWN_CYCLES)
             + _stale(cycle_edges(package_imports(edges)), KNOWN_PACKAGE_CYCLES))
    assert not stale, "no longer on a cycle, delete from the allowlist:\n" + "\n".join(stale)


def _reachable(start: str, edges: Iterable[Import]) -> set[str]:
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    seen, todo = {start}, [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_client_and_the_api_description_need_no_server_package() -> None:
    # the runtime API description (api) and the client use only the protocol table (common):
    # the documentation builder (apidoc) and the servers stay out of their imports
    packages = package_imports(module_imports())
    assert _reachable("api", packages) == {"api", "common"}
    assert _reachable("client", packages) == {"client", "api", "common"}


def test_the_method_table_is_below_the_gateways_and_the_rpc_layer() -> None:
    packages = {(e.source, e.target) for e in package_imports(module_imports())}
    assert {("accesshttp", "common"), ("accessws", "common"), ("rpc", "common")} <= packages
    assert not {"accesshttp", "accessws", "api", "apidoc"} & _reachable("rpc", package_imports(
        module_imports()))


if __name__ == "__main__":
    all_edges = module_imports()
    print("modules:\n" + (describe(cycle_edges(all_edges)) or "    no cycles"))
    print("packages:\n" + (describe(cycle_edges(package_imports(all_edges))) or "    no cycles"))
