"""The code's layers run one way: every `edgetl` import (top-level, inside a function, under TYPE_CHECKING) goes
from a layer to the same layer or a lower one, and no two modules import each other, directly or round a
loop. Read with `ast`, so lazy imports count; a violation names the file and line.

The order is written once, here, and shown in the README's Architecture section.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "edgetl"

# Lowest first. A module may import from its own layer or any layer before it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core",
        (
            "edgetl",
            "edgetl.contract",
            "edgetl.errors",
            "edgetl.fileio",
            "edgetl.machine",
            "edgetl.registry",
            "edgetl.progress",
            "edgetl.preprocess",
            "edgetl.images",
            "edgetl.texts",
            "edgetl.records",
            "edgetl.config",
            "edgetl.verdict",
        ),
    ),
    ("ops", ("edgetl.ops",)),
    ("tokenizer_graphs", ("edgetl.tokenizer_graphs",)),
    ("deploy", ("edgetl.deploy",)),
    ("bench", ("edgetl.bench",)),
    ("remote", ("edgetl.remote",)),  # the host's side of `edgetl deploy` over SSH: no torch either
    # device side ends here (tests/deploy/test_import_boundary.py); the training stack starts
    ("models", ("edgetl.models",)),
    ("data", ("edgetl.data",)),
    ("export", ("edgetl.export",)),
    ("quant", ("edgetl.quant",)),
    ("train", ("edgetl.train",)),
    ("compare", ("edgetl.compare",)),
    ("cli", ("edgetl.cli", "edgetl.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact_only = prefix == "edgetl"  # the package itself, not everything under it
            hit = module == prefix or (not exact_only and module.startswith(prefix + "."))
            if hit and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best


def resolve(target: str) -> str:
    """The module an import loads: `from edgetl.export import graph` names edgetl.export.graph, not the package."""
    return target if target in MODULES else target.rsplit(".", 1)[0] if target.rsplit(".", 1)[0] in MODULES else target


def imports_of(module: str, path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "edgetl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "edgetl":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append((sub if sub in MODULES else source, node.lineno))
    return [(resolve(t), line) for t, line in found]


EDGES = {m: imports_of(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_go_down_the_layers():
    wrong = []
    for module, targets in EDGES.items():
        for target, line in targets:
            if layer_of(target) > layer_of(module):
                rel = MODULES[module].relative_to(ROOT.parent)
                wrong.append(
                    f"{rel}:{line} imports {target} ({LAYERS[layer_of(target)][0]}), "
                    f"a layer above {LAYERS[layer_of(module)][0]}"
                )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = {m: {t for t, _ in targets if t in MODULES and t != m} for m, targets in EDGES.items()}
    found = cycles(graph)
    detail = []
    for component in found:
        members = set(component)
        for m in component:
            for t, line in EDGES[m]:
                if t in members and t != m:
                    detail.append(f"  {MODULES[m].relative_to(ROOT.parent)}:{line} imports {t}")
    assert not found, "modules that import each other:\n" + "\n".join(detail)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from edgetl.cli import main\n", "imports edgetl.cli.main (cli), a layer above"),
        ("def f():\n    from edgetl.train.run import run_train\n", "imports edgetl.train.run (train)"),
    ],
)
def test_the_check_catches_an_upward_import(tmp_path, source, expected):
    """The rule can fail: a lazy import from deploy up into train or cli is reported with file and line."""
    path = ROOT / "deploy" / "bundle.py"
    module = module_name(path)
    fake = tmp_path / "bundle.py"
    fake.write_text(source)
    targets = imports_of(module, fake)
    assert targets and all(layer_of(t) > layer_of(module) for t, _ in targets)
    message = f"{targets[0][0]} ({LAYERS[layer_of(targets[0][0])][0]}), a layer above"
    assert expected.split("imports ")[1].split(",")[0] in message


def test_the_cycle_check_catches_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_modules_and_functions_stay_small():
    """No module over 400 lines, no function over 60: a newcomer reads one in a sitting."""
    big = []
    for path in MODULES.values():
        source = path.read_text()
        rel = path.relative_to(ROOT.parent)
        if source.count("\n") > MAX_MODULE_LINES:
            big.append(f"{rel}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{rel}:{node.lineno} {node.name}() is {length} lines")
    assert not big, "split these:\n" + "\n".join(big)
