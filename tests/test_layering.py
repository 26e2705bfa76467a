"""The structure holds: no import circle between the project's modules, dependencies point one way
(flows -> tasks -> mtcore), the ML core never imports prefect or ray, mtcore's sub-packages import only
the layers below them (as each sub-package's docstring says), and no module grows past ~400 lines.

Imports are read from the source (ast), at any depth in a module, including those inside functions:
a lazy import that closes a circle is still a circle. Imports under `if TYPE_CHECKING:` are only
for annotations and never run, so they do not count.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mtcore", "tasks", "flows")
MAX_LINES = 400

# mtcore's layers, bottom up, and what each may import ("errors": the package root, mtcore and
# mtcore.errors, which every layer may import). metrics and data are side by side: neither needs the other.
LAYERS = {
    "errors": set(),
    "io": {"errors"},
    "method": {"errors", "io"},
    "data": {"errors", "io", "method"},
    "metrics": {"errors", "io", "method"},
    "eval": {"errors", "io", "method", "data", "metrics"},
    "toy": {"errors", "io", "method", "data", "metrics", "eval"},
}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _runtime_nodes(tree: ast.AST):
    """Every node except those inside `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imported_names(path: Path) -> set[str]:
    """Dotted names a module imports at run time (for `from a.b import c`: a.b and a.b.c)."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path):
            # the longest project module the name refers to (a.b.c may be a module or a name in a.b)
            parts = imported.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n])
                if candidate in modules:
                    targets.add(candidate)
                    break
        targets.discard(name)
        # a package's __init__ is imported with any of its modules; that is not a circle
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_circle_between_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    # the check above can fail: a circle in a made-up graph is found
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package, forbidden", [
    ("mtcore", ("prefect", "ray", "tasks", "flows")),
    ("tasks", ("flows",)),
])
def test_dependencies_point_one_way(package, forbidden):
    offenders = []
    for name, path in project_modules().items():
        if name.split(".")[0] != package:
            continue
        for imported in imported_names(path):
            if imported.split(".")[0] in forbidden:
                offenders.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not offenders, offenders


def test_no_module_is_too_long():
    long = {str(p.relative_to(ROOT)): n for p in project_modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def layer_of(module: str) -> str | None:
    """The layer of an mtcore module ("mtcore.io.storage" -> "io"; the package root -> "errors")."""
    parts = module.split(".")
    if parts[0] != "mtcore":
        return None
    if len(parts) == 1 or parts[1] == "errors":
        return "errors"
    return parts[1] if parts[1] in LAYERS else "?" + parts[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports between mtcore's sub-packages that LAYERS does not allow, and modules in no layer."""
    offenders = []
    for name, targets in sorted(graph.items()):
        layer = layer_of(name)
        if layer is None:
            continue
        if layer.startswith("?"):
            offenders.append(f"{name} is in no layer (put it in one of {sorted(LAYERS)})")
            continue
        for target in sorted(targets):
            other = layer_of(target)
            if other is not None and other != layer and other not in LAYERS[layer]:
                offenders.append(f"{name} ({layer}) imports {target} ({other})")
    return offenders


def test_mtcore_sub_packages_import_only_the_layers_below():
    offenders = upward_imports(import_graph())
    assert not offenders, offenders


def test_the_layer_check_finds_an_upward_import():
    # the check above can fail: made-up upward imports and a stray module are found
    assert upward_imports({"mtcore.method.models": {"mtcore.toy.model"}}) == [
        "mtcore.method.models (method) imports mtcore.toy.model (toy)"]
    assert upward_imports({"mtcore.io.storage": {"mtcore.data.keys"}}) == [
        "mtcore.io.storage (io) imports mtcore.data.keys (data)"]
    assert upward_imports({"mtcore.data.keys": {"mtcore.method.config", "mtcore", "mtcore.errors"}}) == []
    assert upward_imports({"mtcore.stray": set()}) == ["mtcore.stray is in no layer (put it in one of "
                                                       f"{sorted(LAYERS)})"]


@pytest.mark.parametrize("layer", [name for name in LAYERS if name != "errors"])
def test_each_sub_package_says_what_it_may_import(layer):
    doc = ast.get_docstring(ast.parse((ROOT / "mtcore" / layer / "__init__.py").read_text())) or ""
    said = re.search(r"May import: (.*?)(?:\.\s*$|\(|\n\n)", doc, re.S | re.M)
    assert said, f"mtcore/{layer}/__init__.py: its docstring does not say what it may import"
    named = {"errors" if n == "errors" else n for n in re.findall(r"mtcore\.(\w+)", said.group(1))}
    assert named == LAYERS[layer], f"mtcore/{layer}: the docstring says {sorted(named)}, LAYERS {sorted(LAYERS[layer])}"


def test_only_the_package_root_and_errors_stand_outside_the_sub_packages():
    loose = sorted(p.name for p in (ROOT / "mtcore").glob("*.py"))
    assert loose == ["__init__.py", "errors.py"], loose


def test_the_library_entry_points_load_on_first_use():
    # `import mtcore.errors` stays light (no torch); each name mtcore lists resolves to its module's object
    code = ("import sys, mtcore, mtcore.errors; assert 'torch' not in sys.modules, 'torch imported'; "
            "import mtcore.method.inversion, mtcore.data.catalog; "
            "assert mtcore.invert is mtcore.method.inversion.invert; "
            "assert mtcore.read_table is mtcore.data.catalog.read_table; "
            "missing = [n for n in mtcore.__all__ if getattr(mtcore, n, None) is None]; assert not missing, missing; "
            "print(len(mtcore.__all__))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 10
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import mtcore
        mtcore.nope  # noqa: B018
