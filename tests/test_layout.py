"""The package's layout: sub-packages by stage, and which may import which.

Every module under hpsrl/ is parsed (not imported), and every import it makes, function-local
and TYPE_CHECKING ones included, is an edge between two packages of hpsrl. From the bottom up:

- ``envs`` (environments) and ``agents`` (the algorithms), beside everything else;
- ``cluster`` (where it runs: executor, Slurm, MPI ranks and threads);
- ``deploy`` (hpsrl/deploy.py, ``hpsrl init``: the Snakefile it writes into a user's folder imports
  ``hpsrl.deploy``, so the module keeps that name for every folder written before);
- ``campaign`` (the config, its genes and identity, every file name, the records and their HDF5
  files, the evidence of seeds, the rungs of successive halving);
- ``search`` (where generation g+1 comes from: evolve, the GA's operators, BO, NSGA-II, the
  collection of a generation), which reads the config and writes the records of ``campaign``;
- ``readers`` (reading a campaign: status, best, report, compare, export, evaluate) and, beside
  it, ``training`` (training jobs, the warm pool, and what a failed step leaves for the rerun),
  which needs no more than the campaign's files, the cluster and the agents;
- ``steps`` (hpsrl/steps.py, the workflow's steps between trainings: collect, promote, evolve,
  retest), which joins search and training;
- ``cli`` (hpsrl/cli.py, the ``hpsrl`` command) on top, imported by hpsrl/__main__.py alone.

``hpsrl`` itself (hpsrl/__init__.py: constants, and ``HpsrlError``, the base of every stage's
expected errors) may be imported by any module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpsrl"
ROOT = "hpsrl"  # hpsrl/__init__.py: constants and HpsrlError, importable from anywhere

#: Which packages of hpsrl each one may import (besides itself and ROOT). A new package, or a new
#: dependency between two, is a decision: make it here, in the order of the docstring above.
ALLOWED: dict[str, set[str]] = {
    "envs": set(),
    "agents": {"envs"},
    "cluster": set(),
    "deploy": set(),
    "campaign": {"agents", "envs"},
    "search": {"campaign", "agents", "envs"},
    "readers": {"search", "campaign", "cluster", "agents", "envs"},
    "training": {"campaign", "cluster", "agents", "envs"},
    "steps": {"training", "search", "campaign", "cluster", "agents", "envs"},
    "cli": {
        "steps",
        "training",
        "readers",
        "search",
        "campaign",
        "cluster",
        "deploy",
        "agents",
        "envs",
    },
    "__main__": {"cli"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(name: str) -> Path | None:
    """The file of the module or package ``name`` under hpsrl/, or None where there is none."""
    base = PACKAGE.parent.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_of(name: str) -> str:
    """``hpsrl.search.evolve`` -> ``search``; ``hpsrl.cli`` -> ``cli``; ``hpsrl`` -> ROOT."""
    parts = name.split(".")
    return ROOT if len(parts) == 1 else parts[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every hpsrl module that the module at ``path`` imports, anywhere in it, with its line:
    ``from X import Y`` counts as X, or as X.Y where that is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((node.lineno, submodule if module_path(submodule) else source))
    return [(line, target) for line, target in found if target.split(".")[0] == "hpsrl"]


def import_graph() -> dict[str, list[tuple[str, int, str]]]:
    """Module -> (the hpsrl module it imports, line, package of that module)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[module_name(path)] = [
            (target, line, package_of(target)) for line, target in imports_of(path)
        ]
    return graph


def package_edges(graph: dict[str, list[tuple[str, int, str]]]) -> dict[tuple[str, str], str]:
    """(importing package, imported package) -> one import that makes the edge (module:line)."""
    edges: dict[tuple[str, str], str] = {}
    for module, targets in graph.items():
        source = package_of(module)
        for target, line, package in targets:
            if package not in (source, ROOT):
                edges.setdefault((source, package), f"{module}:{line} imports {target}")
    return edges


def cycle(edges: set[tuple[str, str]]) -> list[str] | None:
    """A cycle of the directed graph ``edges``, as the packages along it, or None."""
    successors: dict[str, set[str]] = {}
    for a, b in edges:
        successors.setdefault(a, set()).add(b)
    state: dict[str, str] = {}  # "open" while on the current path, then "done"

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for following in sorted(successors.get(node, ())):
            if state.get(following) == "open":
                return [*path[path.index(following) :], following]
            if following not in state:
                found = visit(following, [*path, following])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(successors):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_every_import_names_a_module_that_exists(graph):
    """A function-local import of a module that moved fails only when it runs: not here."""
    missing = [
        f"{module}:{line} imports {target}"
        for module, targets in graph.items()
        for target, line, _ in targets
        if module_path(target) is None
    ]
    assert not missing, "imports of hpsrl modules that do not exist:\n" + "\n".join(missing)


def test_only_main_imports_the_cli(graph):
    """The command is a layer on top: nothing in the package depends on it."""
    importers = [
        module
        for module, targets in graph.items()
        for target, _, _ in targets
        if target == "hpsrl.cli" and module != "hpsrl.__main__"
    ]
    assert not importers, f"hpsrl.cli is imported by {importers}; only hpsrl/__main__.py may"


def test_every_package_is_placed(graph):
    packages = {package_of(module) for module in graph} - {ROOT}
    assert packages == set(ALLOWED), (
        f"packages not in ALLOWED: {sorted(packages - set(ALLOWED))}; "
        f"in ALLOWED but gone: {sorted(set(ALLOWED) - packages)}"
    )


def test_the_root_imports_nothing_of_hpsrl(graph):
    """hpsrl/__init__.py holds what every package may import: it imports none."""
    assert graph[ROOT] == []


def test_packages_import_only_what_they_may(graph):
    forbidden = [
        f"{source} -> {target}: {where}"
        for (source, target), where in sorted(package_edges(graph).items())
        if target not in ALLOWED.get(source, set())
    ]
    assert not forbidden, "imports between packages that ALLOWED does not allow:\n" + "\n".join(
        forbidden
    )


def test_no_cycle_between_packages(graph):
    edges = package_edges(graph)
    found = cycle(set(edges))
    assert found is None, "packages import each other: " + " -> ".join(found or [])
    allowed = {(a, b) for a, targets in ALLOWED.items() for b in targets}
    assert cycle(allowed) is None, "ALLOWED itself has a cycle"


def test_the_checks_see_a_forbidden_import():
    """The checks above on a made-up import: campaign importing search, which imports it; and
    a function-local import counts (config checks the rungs with halving inside a function)."""
    edges = package_edges(
        {
            "hpsrl.campaign.config": [("hpsrl.search.evolve", 1, "search")],
            "hpsrl.search.evolve": [("hpsrl.campaign.config", 1, "campaign")],
        }
    )
    assert ("campaign", "search") in edges and "search" not in ALLOWED["campaign"]
    assert cycle(set(edges)) == ["campaign", "search", "campaign"]
    local = [target for _, target in imports_of(PACKAGE / "campaign" / "config.py")]
    assert "hpsrl.campaign.halving" in local
    assert package_of("hpsrl.search.evolve") == "search" and package_of("hpsrl.cli") == "cli"
