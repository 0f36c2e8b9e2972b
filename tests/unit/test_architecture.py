"""The import contract of docs/architecture.md, checked over server/ with ast.

Every `import server...` and `from server... import` counts, at module level, inside functions
and under TYPE_CHECKING alike: a lazy import still ties the two modules together, and a circle
through one is still a circle. The allowed edges are read from the doc itself, so the doc and
the check cannot drift apart.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"
DOC = ROOT / "docs" / "architecture.md"

# Layers that do no I/O of their own: none of these, at any depth, may be imported there.
PURE = ("server.rules", "server.manifests", "server.domain")
IO_LIBRARIES = ("grpc", "aiohttp", "kubernetes_asyncio")


@dataclass(frozen=True)
class Rule:
    """One line of the contract: modules of `layer` may import from `allowed` (and `layer`)."""

    layer: str
    package: bool  # `server.x.*`: the package and everything in it; else the one module
    allowed: frozenset[str]

    def holds(self, module: str) -> bool:
        return module == self.layer or (self.package and module.startswith(self.layer + "."))


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


_RULE_LINE = re.compile(r"^- (`[^`]+`(?:, `[^`]+`)*) → (\(nothing\)|`[^`]+`(?:, `[^`]+`)*)$")
_NAME = re.compile(r"`([^`]+)`")


def parse_contract(text: str) -> list[Rule]:
    """The contract lines of the doc: "- `server.x.*` → `server.a`, `server.b`"."""
    rules = []
    for line in text.splitlines():
        match = _RULE_LINE.match(line.strip())
        if match is None:
            continue
        allowed = frozenset(_NAME.findall(match.group(2)))
        for name in _NAME.findall(match.group(1)):
            package = name.endswith(".*")
            rules.append(Rule(name.removesuffix(".*"), package, allowed))
    return rules


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str, known: set[str]) -> str:
    """`from server.a import b` names server.a.b when that is a module, else server.a."""
    return name if name in known else name.rpartition(".")[0]


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> Iterator[Import]:
    """Every import of a `server` module (or of any library) in one module's source."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                yield Import(module, _resolve(f"{base}.{alias.name}", known | {base}), node.lineno)


def collect(root: Path) -> tuple[set[str], list[Import]]:
    """The modules under root (the `server` package) and every import they make."""
    paths = sorted(root.rglob("*.py"))
    base = root.parent
    known = {module_name(path, base) for path in paths}
    found: list[Import] = []
    for path in paths:
        module = module_name(path, base)
        source = path.read_text(encoding="utf-8")
        found.extend(imports_of(source, module, path.name == "__init__.py", known))
    return known, found


def layer_of(module: str, rules: Iterable[Rule]) -> Rule | None:
    # The longest match: `server.x.y` would be its own layer inside `server.x.*`.
    matching = [rule for rule in rules if rule.holds(module)]
    return max(matching, key=lambda rule: len(rule.layer), default=None)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component (Tarjan), as a path a → ... → a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_circle_in(component, edges) for component in components]


def _circle_in(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest circle through the component's first module (breadth first, inside it)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(edges.get(node, set()) & component):
                if target == start:
                    chain = [node]
                    while chain[-1] != start:
                        chain.append(came_from[chain[-1]])
                    return [*reversed(chain), start]
                if target not in came_from:
                    came_from[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle in {component}")  # pragma: no cover


def _is_pure(module: str) -> bool:
    return any(module == layer or module.startswith(layer + ".") for layer in PURE)


def check(rules: list[Rule], known: set[str], found: list[Import]) -> list[str]:
    """Every breach of the contract, as a sentence that says where and what to do."""
    problems = []
    for module in sorted(known):
        if layer_of(module, rules) is None:
            problems.append(f"{module} is in no layer of docs/architecture.md: add it to the list")
    graph: dict[str, set[str]] = {}
    reported: set[tuple[str, str]] = set()
    for imp in found:
        pair = (imp.importer, imp.imported)
        if pair in reported:
            continue  # `from m import a, b` is one edge
        reported.add(pair)
        where = f"{imp.importer} (line {imp.line}) imports {imp.imported}"
        top = imp.imported.split(".")[0]
        if top in IO_LIBRARIES:
            if _is_pure(imp.importer):
                problems.append(f"{where}: {imp.importer} is pure (no {top})")
            continue
        if top != "server":
            continue
        graph.setdefault(imp.importer, set()).add(imp.imported)
        source, target = layer_of(imp.importer, rules), layer_of(imp.imported, rules)
        if source is None or target is None:
            continue  # reported above as in no layer
        if target.layer != source.layer and target.layer not in source.allowed:
            problems.append(f"{where}: {source.layer} may not import {target.layer}")
    for circle in cycles(graph):
        problems.append("import circle: " + " → ".join(circle))
    return problems


@pytest.fixture(scope="module")
def contract() -> list[Rule]:
    return parse_contract(DOC.read_text(encoding="utf-8"))


def test_the_import_contract_holds(contract: list[Rule]) -> None:
    known, found = collect(SERVER)
    problems = check(contract, known, found)
    assert not problems, "docs/architecture.md's import contract is broken:\n" + "\n".join(problems)


def test_the_check_is_not_vacuous(contract: list[Rule]) -> None:
    """The doc's list was found and read as meant, and the tree's imports were found."""
    layers = {rule.layer: rule for rule in contract}
    assert {"server.api", "server.domain", "server.kube", "server.rules"} <= layers.keys()
    assert "server.domain" in layers["server.api"].allowed
    assert "server.api" not in layers["server.domain"].allowed
    assert layers["server.wrapping"].allowed == frozenset()
    assert layers["server.kube"].package
    assert not layers["server.manifests"].package
    known, found = collect(SERVER)
    assert len(known) > 30
    assert len(found) > 100
    pairs = {(imp.importer, imp.imported) for imp in found}
    assert ("server.app", "server.config") in pairs
    assert ("server.manifests", "server.rules") in pairs


def test_the_collector_sees_every_kind_of_import() -> None:
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import server.kube.client as client
from server.domain import pointing
from server.rules import RuleError
from . import sibling
from .sibling import thing
if TYPE_CHECKING:
    from server.api.edge import Edge
def later() -> None:
    from server.observability import tracing
"""
    known = {
        "server.kube.client",
        "server.domain",
        "server.domain.pointing",
        "server.rules",
        "server.observability.tracing",
        "server.api.edge",
        "server.auth.sibling",
    }
    found = {imp.imported for imp in imports_of(source, "server.auth.gate", False, known)}
    assert {
        "server.kube.client",
        "server.domain.pointing",
        "server.rules",
        "server.auth.sibling",
        "server.api.edge",
        "server.observability.tracing",
    } <= found


def test_a_breach_of_each_kind_is_reported(contract: list[Rule]) -> None:
    known = {"server.rules", "server.kube.client", "server.kube.limits", "server.stray"}
    found = [
        Import("server.rules", "server.kube.client", 1),  # upward
        Import("server.rules", "grpc", 2),  # pure layer doing I/O
        Import("server.kube.client", "server.kube.limits", 3),  # a circle...
        Import("server.kube.limits", "server.kube.client", 4),  # ...inside one layer
    ]
    problems = "\n".join(check(contract, known, found))
    assert "server.rules may not import server.kube" in problems
    assert "server.rules is pure (no grpc)" in problems
    assert "server.stray is in no layer" in problems
    assert "import circle: server.kube.client → server.kube.limits → server.kube.client" in problems
