"""The import graph: no circles, and no package reaches into another package's private modules.

Imports are read from the source as the layering test reads them (module level and inside
functions alike), so a lazy import cannot hide a circle. A module importing its own parent
package (``from . import _sibling``) is not an edge: a submodule always runs inside its package.
"""

from __future__ import annotations

import pytest

from test_layering import _sources, imports_of

#: Top-level packages; ``featurestore.cli`` belongs to ``featurestore`` (it may use its private modules).
PACKAGES = ("featurestore", "export", "heads")


def _graph() -> dict[str, set[str]]:
    sources = dict(_sources())
    graph = {}
    for module, path in sources.items():
        imported = imports_of(path.read_text(), module, path.name == "__init__.py")
        graph[module] = {name for name in imported
                         if name in sources and name != module and not module.startswith(name + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def private_imports(graph: dict[str, set[str]]) -> list[str]:
    """``A imports B`` where B is a private module (a ``_name`` part) of another top-level package."""
    problems = []
    for module, imported in graph.items():
        for name in imported:
            if name.split(".")[0] != module.split(".")[0] and any(
                    part.startswith("_") and not part.startswith("__") for part in name.split(".")[1:]):
                problems.append(f"{module} imports {name}")
    return sorted(problems)


def test_no_import_circles():
    assert circles(_graph()) == []


def test_no_package_imports_another_packages_private_module():
    assert private_imports(_graph()) == []


@pytest.mark.parametrize("graph, expected", [
    ({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}, [["a.x", "a.y", "a.z"]]),
    ({"a.x": {"a.y"}, "a.y": set()}, []),
])
def test_the_circle_finder_finds_circles(graph, expected):
    assert circles(graph) == expected


def test_the_private_import_rule_catches_a_reach_across():
    graph = {"heads.fit": {"featurestore._time", "heads._blocks"}, "featurestore.cli.fit": {"featurestore._config"}}
    assert private_imports(graph) == ["heads.fit imports featurestore._time"]
