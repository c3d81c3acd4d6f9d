"""The import-layer contract of docs/architecture.md, checked on the source (no imports are run).

1. A module imports our own modules only from its own layer or the layers below it.
2. Imports of our own modules sit at module level (never inside functions), so the graph below is the
   whole graph.
3. There are no import cycles between our modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gpu_tiler

PACKAGE = Path(gpu_tiler.__file__).resolve().parent

# lowest first; a module belongs to the first layer with a prefix that matches its name
LAYERS = [
    ("core", ["gpu_tiler._config", "gpu_tiler._errors", "gpu_tiler._devices", "gpu_tiler._registry",
              "gpu_tiler._kernels"]),
    ("backends", ["gpu_tiler._backends"]),
    ("execution", ["gpu_tiler._execution"]),
    ("planning", ["gpu_tiler._planning"]),
    ("io", ["gpu_tiler._io", "gpu_tiler.data"]),
    ("engine", ["gpu_tiler._engine"]),
    ("operations", ["gpu_tiler.filters", "gpu_tiler._morphology", "gpu_tiler.labels", "gpu_tiler.measure",
                    "gpu_tiler.ndmeasure", "gpu_tiler.transforms"]),
    ("tools", ["gpu_tiler._tools", "gpu_tiler.testing"]),
    ("interface", ["gpu_tiler.cli", "gpu_tiler.__main__", "gpu_tiler._demo", "gpu_tiler"]),
]


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to docs/architecture.md and LAYERS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    base = PACKAGE.parent.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def own_imports(path: Path):
    """(target module, line, at module level) for each import of one of our modules in ``path``."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "gpu_tiler":
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                yield (sub if is_module(sub) else target), node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "gpu_tiler":
                    yield alias.name, node.lineno, id(node) in top


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: sorted({t for t, _, _ in own_imports(p) if t != m}) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_run_down_the_layers_only():
    upward = []
    for module, path in MODULES.items():
        for target, line, _ in own_imports(path):
            if layer_of(target) > layer_of(module):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} ({LAYERS[layer_of(module)][0]}) "
                              f"imports {target} ({LAYERS[layer_of(target)][0]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_our_modules_are_imported_at_module_level():
    hidden = [f"{path.relative_to(PACKAGE.parent)}:{line}: {target}"
              for module, path in MODULES.items() for target, line, top in own_imports(path) if not top]
    assert not hidden, "imports of our modules inside functions (move them to the top):\n" + "\n".join(hidden)


def strongly_connected(graph):
    """Tarjan's strongly connected components with more than one module (or a self loop)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert strongly_connected(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module, target", [("gpu_tiler._io.sinks", "gpu_tiler.filters"),
                                            ("gpu_tiler._backends._cupy", "gpu_tiler._engine.tiles")])
def test_an_upward_import_would_be_caught(module, target):
    assert layer_of(target) > layer_of(module)


def test_the_kernel_sources_live_inside_the_package():
    from gpu_tiler._kernels import kernel_dir

    assert kernel_dir().resolve().parent == PACKAGE
    assert not (PACKAGE.parent / "kernels").exists() or (PACKAGE.parent / "kernels").resolve() == kernel_dir().resolve()


def test_the_architecture_document_names_every_layer():
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for name, prefixes in LAYERS:
        assert name in text
        for prefix in prefixes:
            short = prefix.removeprefix("gpu_tiler.").removeprefix("gpu_tiler")
            assert not short or short.split(".")[0] in text, f"docs/architecture.md does not mention {short}"
