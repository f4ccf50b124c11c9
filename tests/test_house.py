"""The dependency rule of DESIGN.md section 2, read from the source with `ast` (nothing is imported):
every top-level package of src/orchestrator has a layer in LAYERS, a package imports only packages
at its own layer or below, the package graph and the module graph have no cycle, and Ray is
imported only by the actors. The last test runs the same checks on a small tree written into
tmp_path, so a green run here means "no violation", not "a checker that cannot see one".

What counts as an import: `import a.b`, `from a import b` and relative forms (resolved against the
importing module's package), anywhere in a module (function-level lazy imports included), and
`importlib.import_module("a.b")` / `__import__("a.b")` with a constant name (an f-string or a name
read from a table cannot be resolved statically and is not seen). Importing `a.b.c` runs every
package on the way down, so it is an edge to each of them that exists in the tree; an edge to the
importer's own enclosing package is dropped (Python has already started importing it).

Imports under `if TYPE_CHECKING:` never run. They count for the package-level checks (layers,
package cycles, Ray), because naming a type from another package is a dependency on it in the design;
they do not count for the module-level cycle check, whose concern is import-time order, and where
such a block is the standard way to name a type without a runtime cycle.
"""
from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "orchestrator"

# The layers, bottom (0) to top. A package may import packages at its own layer or below; imports
# between packages of one layer are allowed as long as they form no cycle (test_no_package_cycle).
LAYERS: dict[str, int] = {
    # 0 - a utility every layer may use: the metrics recorder and catalogue, no orchestrator import.
    "telemetry": 0,
    # ... and a package's names imported on first use (PEP 562), for any package's __init__.
    "lazy": 0,
    # 1 - foundations with no ML in them: blob store, event journal, the manifest's schema.
    "storage": 1,
    "journal": 1,
    "manifest": 1,
    # 2 - the ML core: runs in-process (`orch train`) with no Ray; the registry finds the variants.
    "data": 2,
    "models": 2,
    "training": 2,
    "eval": 2,
    # ... and an experiment as it runs (its checked plan, by value; the run's journal writes): no Ray.
    "experiment": 2,
    # ... and what tests and harnesses plug into it (the probe variant, loaded by name): no Ray.
    "testing": 2,
    # 3 - the Ray actors: thin shells that move work and state between processes; and the results
    # table, read back from the journal (no Ray).
    "actors": 3,
    "results": 3,
    # 4 - the application layer: run, submit, resume, status, results, cancel over the actors.
    "app": 4,
    # 5 - front ends over the application: the CLI, the head's HTTP API, the HTML report.
    "cli": 5,
    "api": 5,
    "report": 5,
}

# The root __init__ runs before every module of the tree, so it sits below everything and may import
# no package of the tree (whatever it imported would become a dependency of every package).
ROOT_LAYER = -1

# Ray belongs to the actors. Any other file that imports it is listed here with the reason; an entry
# whose file no longer imports Ray fails the test, so the list only shrinks.
RAY_PACKAGES = {"actors"}
RAY_FILES: dict[str, str] = {
    # The HTTP API turns a Ray failure raised through orchestrator.app into a 503 instead of a 500.
    "api/app.py": "catches ray.exceptions.RayError from the actors' calls",
}


# ------------------------------------------------------------------------------ reading the tree

@dataclass(frozen=True)
class Import:
    module: str       # importing module, dotted ("orchestrator.data.shapes")
    path: Path
    line: int
    text: str         # the statement as written, normalised by ast.unparse
    target: str       # absolute dotted name imported ("orchestrator.storage.base", "ray.exceptions")
    guarded: bool     # under `if TYPE_CHECKING:`

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root.parents[1])}:{self.line}: {self.text}"


def module_index(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root (root's own name is the top package)."""
    mods = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def unit(module: str) -> str:
    """The top-level package (or top-level module, such as cli) that a module belongs to; "" for
    the root __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(node: ast.AST, package: str, mods: dict[str, Path]) -> list[str]:
    """Absolute dotted names an import node brings in ([] for one that cannot be resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            parts = package.split(".")
            if node.level - 1 >= len(parts):
                return []  # above the top package: an ImportError at run time, not an edge
            parts = parts[: len(parts) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        # `from base import x` runs base; when x is a submodule it runs that too.
        return [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        name = node.args[0].value
        fn = node.func
        called = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
        if called in ("import_module", "__import__") and isinstance(name, str):
            return [] if name.startswith(".") else [name]
    return []


def read_imports(root: Path) -> list[Import]:
    mods = module_index(root)
    found: list[Import] = []
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))

        def visit(node: ast.AST, guarded: bool) -> None:  # called below, within this iteration
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for child in node.body:
                    visit(child, True)
                for child in node.orelse:
                    visit(child, guarded)
                return
            for target in _targets(node, package, mods):  # noqa: B023
                found.append(Import(module, path, node.lineno, ast.unparse(node), target, guarded))  # noqa: B023
            for child in ast.iter_child_nodes(node):
                visit(child, guarded)

        visit(tree, False)
    return found


def module_edges(root: Path, imports: list[Import]) -> dict[tuple[str, str], list[Import]]:
    """(importer, imported module of the tree) -> the imports that make the edge."""
    mods = module_index(root)
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in imports:
        parts = imp.target.split(".")
        for i in range(1, len(parts) + 1):
            dst = ".".join(parts[:i])
            if dst in mods and dst != imp.module and not imp.module.startswith(dst + "."):
                edges.setdefault((imp.module, dst), []).append(imp)
    return edges


def package_edges(root: Path, imports: list[Import]) -> dict[tuple[str, str], list[Import]]:
    edges: dict[tuple[str, str], list[Import]] = {}
    for (src, dst), via in module_edges(root, imports).items():
        a, b = unit(src), unit(dst)
        if a != b:
            edges.setdefault((a, b), []).extend(via)
    return edges


# ------------------------------------------------------------------------------ graph helpers

def cycles(edges: dict[tuple[str, str], list[Import]]) -> list[list[str]]:
    """One shortest cycle through each strongly connected component with more than one node."""
    succ: dict[str, set[str]] = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
        succ.setdefault(b, set())

    def reach(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for n in succ[todo.pop()]:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return seen

    found, done = [], set()
    for start in sorted(succ):
        if start in done:
            continue
        forward = reach(start)
        component = {n for n in forward if start in reach(n)}
        done |= component
        if len(component) < 2:
            continue
        # breadth-first search from start back to start, inside the component
        prev: dict[str, str] = {}
        queue = deque([start])
        while queue:
            n = queue.popleft()
            if start in succ[n]:
                path = [n]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                found.append(path[::-1] + [start])
                break
            for m in sorted(succ[n] & component):
                if m not in prev and m != start:
                    prev[m] = n
                    queue.append(m)
    return found


def statements(via: list[Import]) -> list[Import]:
    """One Import per statement (a statement may reach a package and its submodule), in file order."""
    unique = {(str(i.path), i.line, i.text): i for i in via}
    return [unique[k] for k in sorted(unique)]


def describe_cycle(root: Path, cycle: list[str], edges: dict[tuple[str, str], list[Import]]) -> str:
    lines = ["import cycle: " + " -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        via = statements(edges[(a, b)])
        more = f"  (+{len(via) - 1} more)" if len(via) > 1 else ""
        lines.append(f"  {a} -> {b}: {via[0].where(root)}{more}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the checks

def unplaced_packages(root: Path, layers: dict[str, int]) -> list[str]:
    present = {unit(m) for m in module_index(root)} - {""}
    problems = [f"{root.relative_to(root.parents[1])}/{name}: package (or top-level module) has no "
                f"layer; add it to LAYERS in tests/test_house.py with its layer and why"
                for name in sorted(present - set(layers))]
    problems += [f"LAYERS names {name!r}, which is not under {root.relative_to(root.parents[1])}: "
                 f"remove or rename the entry" for name in sorted(set(layers) - present)]
    return problems


def package_cycles(root: Path) -> list[str]:
    edges = package_edges(root, read_imports(root))
    return [describe_cycle(root, c, edges) for c in cycles(edges)]


def module_cycles(root: Path) -> list[str]:
    edges = module_edges(root, [i for i in read_imports(root) if not i.guarded])
    return [describe_cycle(root, c, edges) for c in cycles(edges)]


def upward_imports(root: Path, layers: dict[str, int]) -> list[str]:
    problems = []
    for (a, b), via in sorted(package_edges(root, read_imports(root)).items()):
        la = ROOT_LAYER if a == "" else layers.get(a)
        lb = layers.get(b)
        if la is None or lb is None or lb <= la:
            continue  # an unplaced package is test_every_package_has_a_layer's finding
        for imp in statements(via):
            problems.append(f"{imp.where(root)}  [{a or 'root __init__'} (layer {la}) imports "
                            f"{b} (layer {lb})]")
    return problems


def ray_imports(root: Path, packages: set[str], files: dict[str, str]) -> list[str]:
    problems, seen = [], set()
    for imp in read_imports(root):
        if imp.target.split(".")[0] != "ray":
            continue
        rel = imp.path.relative_to(root).as_posix()
        seen.add(rel)
        if unit(imp.module) not in packages and rel not in files:
            problems.append(f"{imp.where(root)}  [Ray outside {', '.join(sorted(packages))}/]")
    problems += [f"RAY_FILES lists {rel}, which imports no Ray any more: remove the entry"
                 for rel in sorted(set(files) - seen)]
    return sorted(set(problems))


def _report(problems: list[str]) -> str:
    return f"{len(problems)} finding(s):\n" + "\n".join(problems)


# ------------------------------------------------------------------------------ the real tree

def test_every_package_has_a_layer():
    problems = unplaced_packages(SRC, LAYERS)
    assert not problems, _report(problems)


def test_no_package_cycle():
    problems = package_cycles(SRC)
    assert not problems, _report(problems)


def test_no_upward_import():
    problems = upward_imports(SRC, LAYERS)
    assert not problems, _report(problems)


def test_no_module_cycle():
    problems = module_cycles(SRC)
    assert not problems, _report(problems)


def test_ray_only_in_the_actors():
    problems = ray_imports(SRC, RAY_PACKAGES, RAY_FILES)
    assert not problems, _report(problems)


# ------------------------------------------------------------------------------ the checker can fail

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """Writes files (paths relative to the package root "pkg") under tmp_path/src/pkg, with an empty
    __init__.py in every folder that lacks one; returns the package root."""
    root = tmp_path / "src" / "pkg"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        if not (d / "__init__.py").exists():
            (d / "__init__.py").write_text("")
    return root


TOY_LAYERS = {"base": 0, "core": 1, "peer": 1, "top": 2}


def test_checker_sees_violations(tmp_path):
    root = _tree(tmp_path, {
        "base/store.py": "def helper():\n    from pkg.core import engine  # upward, lazy\n",
        # a cycle between two packages of one layer, one side a function-level relative import
        "core/engine.py": "import os\nfrom pkg.peer.tools import tool\n",
        "peer/tools.py": "def tool():\n    from ..core import engine\n",
        # a cycle of modules inside one package, through `from . import`
        "top/a.py": "from . import b\n",
        "top/b.py": "from .a import thing\n",
        # the same shape under TYPE_CHECKING: never runs, so no module cycle
        "top/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import T\n",
        "top/d.py": "from pkg.top import c\n",
        # Ray from the core, once directly and once through importlib
        "core/remote.py": ("import importlib\n\ndef f():\n    import ray\n"
                           "    importlib.import_module('ray.util')\n"),
        "top/driver.py": "from ray import remote\n",
        "newpkg/thing.py": "",
        "loose.py": "",
    })

    assert unplaced_packages(root, TOY_LAYERS) == [
        "src/pkg/loose: package (or top-level module) has no layer; add it to LAYERS in "
        "tests/test_house.py with its layer and why",
        "src/pkg/newpkg: package (or top-level module) has no layer; add it to LAYERS in "
        "tests/test_house.py with its layer and why"]
    assert unplaced_packages(root, {**TOY_LAYERS, "loose": 2, "newpkg": 2, "gone": 1}) == [
        "LAYERS names 'gone', which is not under src/pkg: remove or rename the entry"]

    pc = package_cycles(root)
    assert len(pc) == 1 and pc[0].startswith("import cycle: core -> peer -> core"), pc
    assert "src/pkg/core/engine.py:2: from pkg.peer.tools import tool" in pc[0]
    assert "src/pkg/peer/tools.py:2: from ..core import engine" in pc[0]

    up = upward_imports(root, TOY_LAYERS)
    assert up == ["src/pkg/base/store.py:2: from pkg.core import engine  [base (layer 0) imports core "
                  "(layer 1)]"], up

    mc = "\n".join(module_cycles(root))
    assert "pkg.top.a -> pkg.top.b -> pkg.top.a" in mc
    assert "pkg.core.engine -> pkg.peer.tools -> pkg.core.engine" in mc
    assert "pkg.top.c" not in mc and "pkg.top.d" not in mc, mc

    ray = ray_imports(root, {"top"}, {"base/store.py": "stale"})
    assert ray == [
        "RAY_FILES lists base/store.py, which imports no Ray any more: remove the entry",
        "src/pkg/core/remote.py:4: import ray  [Ray outside top/]",
        "src/pkg/core/remote.py:5: importlib.import_module('ray.util')  [Ray outside top/]"], ray
    assert ray_imports(root, {"top", "core"}, {}) == []


def test_root_init_may_import_no_package(tmp_path):
    root = _tree(tmp_path, {"__init__.py": "from .core import engine\n", "core/engine.py": ""})
    assert upward_imports(root, TOY_LAYERS) == [
        "src/pkg/__init__.py:1: from .core import engine  [root __init__ (layer -1) imports core "
        "(layer 1)]"]
