"""The boltzgen package has no import cycles, top-level or function-level.

The import graph is built from the source with :mod:`ast` (no module is imported): every
``import`` and ``from ... import`` statement anywhere in a module (module level, inside
functions, under ``if TYPE_CHECKING``, in ``try`` blocks) gives edges, relative imports
resolved:

* ``import boltzgen.x.y`` → ``boltzgen.x.y``;
* ``from boltzgen.x import name`` → ``boltzgen.x`` (its ``__init__`` must have run to its end to
  provide ``name``), and ``boltzgen.x.name`` too if that is a module; so a package ``__init__``
  that re-exports from its submodules has edges to them;
* both → the packages enclosing the imported module (``boltzgen.x``: their ``__init__`` runs
  first), EXCEPT the packages enclosing the importing module itself, which are already being
  imported when it runs. So a submodule that imports a sibling directly
  (``from boltzgen.x._b import f`` or ``from boltzgen.x import _b`` inside ``boltzgen/x/_a.py``)
  has no edge to its own package and is in no cycle with it, whereas one that imports a
  re-exported name through the package (``from boltzgen.x import f``) is.

Imports by name (``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "boltzgen"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name → source file, for every ``.py`` under ``root`` (a package dir)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _ancestors(name: str) -> set[str]:
    """The packages enclosing module ``name``: ``a.b.c`` → {``a``, ``a.b``}."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _statement_deps(node: ast.Import | ast.ImportFrom, name: str, modules) -> set[str]:
    """What one import statement in module ``name`` makes it depend on (any dotted names).

    The named modules (for ``from P import n``: P itself unless every n is a submodule of P,
    and each submodule P.n), and the packages enclosing them, whose ``__init__`` runs first,
    except those enclosing ``name`` itself (they are already being imported).
    """
    is_package = modules[name].name == "__init__.py"
    own = _ancestors(name) | ({name} if is_package else set())
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        if node.level:  # relative: level 1 is the package containing the module
            base = name.split(".") if is_package else name.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        subs = {f"{base}.{alias.name}" for alias in node.names} & set(modules)
        # an attribute of P (not a submodule) needs P's __init__ to have run to its end
        named = subs if len(subs) == len(node.names) else subs | {base}
    implicit = set().union(*(_ancestors(m) for m in named)) - own
    return named | implicit


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the package's modules it imports (self-imports dropped), from the source."""
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _statement_deps(node, name, modules)
        graph[name] = {m for m in deps if m in modules and m != name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str, work: list) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        work.append((node, iter(sorted(graph.get(node, ())))))

    for start in sorted(graph):
        if start in index:
            continue
        work: list = []
        visit(start, work)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    visit(child, work)
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle [a, b, …, a] per strongly connected component with >1 module.

    The cycle runs through the component's smallest name (breadth-first search back to it).
    Deterministic: sorted by the cycle's first module. Empty if and only if there is no cycle.
    """
    cycles = []
    for component in strongly_connected(graph):
        first = min(component)
        previous: dict[str, str | None] = {first: None}
        frontier, closing = [first], None
        while closing is None:
            assert frontier, f"{first} is not on a cycle of its component"
            following = []
            for node in frontier:
                if first in graph[node]:
                    closing = node
                    break
                for child in sorted(graph[node] & component):
                    if child not in previous:
                        previous[child] = node
                        following.append(child)
            frontier = following
        path = []
        while closing is not None:
            path.append(closing)
            closing = previous[closing]
        cycles.append([*reversed(path), first])
    return sorted(cycles)


def describe(graph: dict[str, set[str]]) -> str:
    """One line per cycle, ``a → b → a``, with the modules of its component when there are more."""
    lines = []
    for cycle in find_cycles(graph):
        (component,) = [c for c in strongly_connected(graph) if cycle[0] in c]
        rest = sorted(component - set(cycle))
        lines.append(
            " → ".join(cycle) + (f"  (its component also has {', '.join(rest)})" if rest else "")
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The cycle finder and the graph builder on hand-made inputs
# --------------------------------------------------------------------------------------------


def test_find_cycles_on_hand_made_graphs():
    assert find_cycles({}) == []
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []  # a diamond-free DAG
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    graph = {
        "a": {"b"},
        "b": {"c"},
        "c": {"a", "d"},  # a → b → c → a, and c → d leaves it
        "d": {"e"},
        "e": {"d"},  # a second component, d ↔ e
        "f": {"a", "d"},  # points into both, in neither
    }
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    # the shortest cycle through the component's first node is named
    graph = {"a": {"b", "x"}, "b": {"c"}, "c": {"a"}, "x": {"a"}}
    assert find_cycles(graph) == [["a", "x", "a"]]
    # a long chain: iterative, no recursion limit
    n = 5000
    chain = {f"m{i:05d}": {f"m{i + 1:05d}"} for i in range(n)}
    chain[f"m{n:05d}"] = set()
    assert find_cycles(chain) == []
    chain[f"m{n:05d}"] = {"m00000"}
    (cycle,) = find_cycles(chain)
    assert len(cycle) == n + 2 and cycle[0] == cycle[-1] == "m00000"


def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return module_files(root / "pkg", "pkg")


def test_import_graph_resolution(tmp_path):
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.sub import thing\nfrom . import _util\n",
            "pkg/_util.py": "import os\nimport pkg.sub._b as b\n",
            "pkg/sub/__init__.py": "from ._a import thing\n",
            "pkg/sub/_a.py": (
                "from pkg.sub._b import helper\n"
                "def f():\n"
                "    from .. import _util\n"
                "    from ._b import other\n"
            ),
            "pkg/sub/_b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg\n"
            ),
            "pkg/sub/_c.py": "from pkg.sub import _a, thing\nfrom pkg.sub._c import x\n",
        },
    )
    assert sorted(modules) == [
        "pkg",
        "pkg._util",
        "pkg.sub",
        "pkg.sub._a",
        "pkg.sub._b",
        "pkg.sub._c",
    ]
    assert import_graph(modules) == {
        "pkg": {"pkg.sub", "pkg._util"},  # `from pkg.sub import thing`: thing is no module
        "pkg._util": {"pkg.sub._b", "pkg.sub"},  # os is outside; pkg.sub's __init__ runs first
        "pkg.sub": {"pkg.sub._a"},  # relative, in an __init__: from the package itself
        "pkg.sub._a": {"pkg.sub._b", "pkg._util"},  # function-level, relative (..)
        "pkg.sub._b": {"pkg"},  # under TYPE_CHECKING
        "pkg.sub._c": {"pkg.sub", "pkg.sub._a"},  # thing is no module; self-import dropped
    }
    # the shortest of the cycles through pkg
    assert find_cycles(import_graph(modules)) == [["pkg", "pkg._util", "pkg.sub._b", "pkg"]]


def test_a_module_importing_through_its_own_package_is_a_cycle(tmp_path):
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg._a import f\nfrom pkg._b import g\n",
            "pkg/_a.py": "from pkg import _c\ndef f():\n    from pkg._b import g\n",
            "pkg/_b.py": "def g():\n    pass\n",
            "pkg/_c.py": "",
        },
    )
    # siblings imported directly, or as submodules of the own package: no edge to pkg
    assert import_graph(modules)["pkg._a"] == {"pkg._b", "pkg._c"}
    assert find_cycles(import_graph(modules)) == []
    (tmp_path / "pkg/_b.py").write_text("def g():\n    from pkg import f\n", encoding="utf-8")
    assert find_cycles(import_graph(modules)) == [["pkg", "pkg._b", "pkg"]]


# --------------------------------------------------------------------------------------------
# The package itself
# --------------------------------------------------------------------------------------------


def test_graph_covers_the_package():
    modules = module_files(ROOT)
    graph = import_graph(modules)
    assert {"boltzgen", "boltzgen.flows", "boltzgen.flows._cnf", "boltzgen.systems"} <= set(graph)
    assert "boltzgen.flows._cnf" in graph["boltzgen.flows"]  # the package re-exports CNF
    assert "boltzgen.flows._fields" in graph["boltzgen.flows._cnf"]
    assert "boltzgen.systems._ising" in graph["boltzgen.systems._ising_exact"]


def test_no_import_cycles():
    graph = import_graph(module_files(ROOT))
    report = describe(graph)
    print(f"import cycles in {PACKAGE}:\n{report or 'none'}")
    assert not report, f"import cycles in {PACKAGE}:\n{report}"
