"""The package layers of docs/architecture.md hold: every import of yolotr's own code points down (or stays inside its
package), and no module imports itself back through others. Function-level imports count too: they are how the
import circles of the past were hidden."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import yolotr

ROOT = Path(yolotr.__file__).parent

# Bottom to top; a package may import the packages of lower layers and its own modules, nothing else.
LAYERS: list[set[str]] = [
    {"errors", "log", "console", "durable_json"},
    {"config", "distributed"},
    {"model", "data"},
    {"track"},
    {"checkpoint"},
    {"eval", "export"},
    {"guard", "debug"},
    {"engine"},
    {"study", "api", "drill"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, module: str) -> set[str]:
    """Every yolotr module `module` imports, at any depth of its code."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking_block(block) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # `if TYPE_CHECKING:` imports never run
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base == "yolotr" or base.startswith("yolotr."):
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name == "yolotr" or a.name.startswith("yolotr."))
    return found


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "yolotr"


MODULES = _modules()
EDGES = {module: _imports(path, module) for module, path in MODULES.items()}


def test_every_module_imports():
    for info in pkgutil.walk_packages(yolotr.__path__, "yolotr."):
        importlib.import_module(info.name)


def test_every_package_has_a_layer():
    assert {_package(m) for m in MODULES} - {"yolotr"} <= set(LAYER_OF), "add new packages to LAYERS and the docs"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    source = _package(module)
    for target in sorted(EDGES[module]):
        destination = _package(target)
        if destination in (source, "yolotr") or source == "yolotr":
            continue  # its own package; the root package (the version) sits below everything
        assert LAYER_OF[destination] < LAYER_OF[source], (
            f"{module} imports {target}: {source} (layer {LAYER_OF[source]}) may not import {destination} "
            f"(layer {LAYER_OF[destination]}); see docs/architecture.md")


def test_no_module_imports_itself_back_through_others():
    # The root package's `YOLO` attribute imports the API on first use only (yolotr/__init__.py), so that every
    # module may read `yolotr.__version__`: its edges do not take part in circles.
    graph = {m: {t for t in targets if t in MODULES} if m != "yolotr" else set() for m, targets in EDGES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_model_layers_take_plain_arguments_not_the_config():
    """timm's way: a block is built from numbers and switches, so it can be used, tested and read without the config
    tree; only the yaml parser (model/yolo.py) turns a config into keywords."""
    for name in ("yolotr.model.transformer", "yolotr.model.common", "yolotr.model.detect"):
        path = ROOT.parent / (name.replace(".", "/") + ".py")
        assert not {m for m in _imports(path, name) if m.startswith("yolotr.config")}, name
