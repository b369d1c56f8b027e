"""The dependency rule, read from the source with `ast`: every import of every module, at module level
and inside functions (and importlib calls with a literal name), checked against what its package may
import. models -> traces -> sim -> analysis; testbed and the `edgevlm` command line sit on top.

Also: each shared contract is defined once, in traces/; and a function-level import only defers a
heavy optional library (torch, transformers, dask, selenium, matplotlib/seaborn, fastapi/uvicorn/httpx,
PIL), saying so in a comment."""

from __future__ import annotations

import ast
import functools
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Repository folders that are `edgevlm.<name>` once installed, plus the `edgevlm` package itself.
PACKAGES = ("sim", "traces", "models", "analysis", "testbed", "scenarios")
HEAVY = ("torch", "transformers", "tokenizers", "safetensors", "PIL", "dask", "distributed", "selenium",
         "matplotlib", "seaborn", "fastapi", "starlette", "uvicorn", "httpx")

_UPPER = ("edgevlm.models", "edgevlm.analysis", "edgevlm.testbed", "edgevlm.cli")
#: Package -> imports it must never make (a name or any of its submodules).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "traces": _UPPER + ("edgevlm.sim", "torch", "transformers"),
    "sim": _UPPER + ("torch", "transformers"),
    "models": ("edgevlm.sim", "edgevlm.analysis", "edgevlm.testbed", "edgevlm.cli"),
    "analysis": ("edgevlm.models", "edgevlm.testbed", "edgevlm.cli", "torch", "transformers"),
    "testbed": ("edgevlm.cli",),
    "scenarios": ("edgevlm",),
    "edgevlm.commands": ("edgevlm",),  # the registration mechanism every package may use imports none
}


def module_name(path: Path) -> str:
    """`edgevlm.x.y` for a file of the checkout (sim/x.py -> edgevlm.sim.x)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts if parts[0] == "edgevlm" else ["edgevlm", *parts])


def source_files() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    return files + sorted((ROOT / "edgevlm").glob("*.py"))


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, inside a function?) of every import in `source`, relative ones
    resolved, plus importlib.import_module / __import__ calls with a literal name."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((child.lineno, a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from X import Y`: X.Y (module or attribute); the rule and the closure cover X with it
                out.extend((child.lineno, base if a.name == "*" else f"{base}.{a.name}", in_function)
                           for a in child.names)
            elif isinstance(child, ast.Call) and _is_dynamic_import(child.func) and child.args \
                    and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str):
                out.append((child.lineno, child.args[0].value, in_function))
            visit(child, inner)

    visit(tree, False)
    return out


def _is_dynamic_import(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")


def _package_of(module: str) -> str:
    if module == "edgevlm.commands":
        return module
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "edgevlm"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in `source` (of `module`) that breaks the dependency rule, as 'line: name'."""
    forbidden = FORBIDDEN.get(_package_of(module), ())
    bad: dict[int, str] = {}
    for line, name, _ in imports(source, module, is_package):
        if line in bad:
            continue
        if name.split(".")[0] in PACKAGES:
            bad[line] = f"{line}: {name} (a bare top-level name; import edgevlm.{name})"
        elif any(_under(name, f) for f in forbidden):
            bad[line] = f"{line}: {name}"
    return list(bad.values())


def test_the_scanner_catches_violations():
    """Synthetic modules: each forbidden pattern is reported, the allowed ones are not."""
    sim_bad = textwrap.dedent("""
        import torch
        from edgevlm.sim.runner import run
        import numpy as np

        def f():
            from edgevlm.models.backend import load_backend
            import transformers.models
            import models.cli
            from edgevlm import analysis
            return importlib.import_module("edgevlm.testbed.cli")

        class A:
            def g(self):
                from ...analysis import report
                from . import engine
                import sim.runner
    """)
    found = violations(sim_bad, "edgevlm.sim.policies.base")
    assert [v.split(":")[0] for v in found] == ["2", "7", "8", "9", "10", "11", "15", "17"], found
    assert "edgevlm.analysis.report" in found[6] and "bare" in found[7] and "bare" in found[3]
    assert "edgevlm.models.backend" in found[1] and "edgevlm.testbed.cli" in found[5]
    assert violations("def f():\n    import edgevlm.sim.engine\n", "edgevlm.traces.io") == ["2: edgevlm.sim.engine"]
    assert violations("from edgevlm.testbed import edge\n", "edgevlm.analysis.report") == ["1: edgevlm.testbed.edge"]
    assert violations("import edgevlm.cli\n", "edgevlm.testbed.cli") == ["1: edgevlm.cli"]
    assert violations("from . import x\n", "edgevlm.sim", is_package=True) == []
    allowed = "import numpy\nfrom edgevlm.traces import read_trace\nimport edgevlm.sim.engine\nimport torchvision\n"
    assert violations(allowed, "edgevlm.sim.x") == []
    assert violations("import torch\nfrom edgevlm.sim import run\n", "edgevlm.testbed.engine") == []
    assert violations("import edgevlm.sim\n", "edgevlm.commands") == ["1: edgevlm.sim"]


def test_every_module_follows_the_dependency_rule():
    files = source_files()
    assert len(files) > 80
    bad = []
    for path in files:
        mod = module_name(path)
        bad += [f"{path.relative_to(ROOT)}:{v}" for v in violations(path.read_text(), mod, path.name == "__init__.py")]
    assert not bad, "imports against the dependency rule:\n" + "\n".join(bad)


# ---------------------------------------------------------------- one home per contract

#: Shared contracts and the one module that defines each.
CONTRACTS = {
    "EVENT_SCHEMA": "traces/eventlog.py", "TIME_COLUMNS": "traces/eventlog.py", "STATUSES": "traces/eventlog.py",
    "WRITER_OPTIONS": "traces/eventlog.py", "TEXT_BYTES_PER_TOKEN": "traces/protocol.py",
    "BBOX_REQUEST_BYTES": "traces/protocol.py", "ATTENTION_REQUEST_BYTES": "traces/protocol.py",
    "LEVEL_REQUEST_BYTES": "traces/protocol.py", "PROG_COLUMNS": "traces/schema.py",
    "PER_QUALITY_COLUMNS": "traces/schema.py", "TRACE_SCHEMA": "traces/schema.py",
}


def _assigned_names(tree: ast.Module) -> set[str]:
    """Names a module assigns at module level."""
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name):
                    names.add(n.id)
    return names


def test_each_contract_is_defined_once_in_traces():
    where: dict[str, list[str]] = {name: [] for name in CONTRACTS}
    for path in source_files():
        for name in _assigned_names(ast.parse(path.read_text())) & set(CONTRACTS):
            where[name].append(str(path.relative_to(ROOT)))
    assert where == {name: [home] for name, home in CONTRACTS.items()}


# ---------------------------------------------------------------- function-level imports


def _top_level_imports(module: str) -> list[str]:
    """Imports a module makes when it is imported (module level, TYPE_CHECKING blocks left out)."""
    parts = module.split(".")
    parents = [".".join(parts[:i]) for i in range(1, len(parts))]
    path = _path_of(module)
    if path is None:  # an attribute (from X import Y), or not ours: importing it imports its parents
        return parents
    tree = ast.parse(path.read_text())
    out: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                out.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                out.append(node.module or "")
                out.extend(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return parents + out


def _path_of(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != "edgevlm":
        return None
    base = ROOT / "edgevlm" if len(parts) == 1 or parts[1] not in PACKAGES else ROOT / parts[1]
    rest = parts[1:] if base.name == "edgevlm" else parts[2:]
    p = base.joinpath(*rest)
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    return p.with_suffix(".py") if p.with_suffix(".py").is_file() else None


@functools.lru_cache(maxsize=None)
def heavy_at_import(module: str) -> frozenset[str]:
    """The heavy libraries importing `module` loads (following edgevlm's module-level imports)."""
    seen, todo, found = set(), [module], set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        top = m.split(".")[0]
        if top in HEAVY:
            found.add(top)
        elif top == "edgevlm":
            todo.extend(_top_level_imports(m))
    return frozenset(found)


def _says_deferred(lines: list[str], lineno: int) -> bool:
    """A comment with 'defer' on the import's line or above it within its block of imports."""
    i = lineno - 1
    while i >= 0:
        line = lines[i].strip()
        if "defer" in line.lower() and "#" in line:
            return True
        if i < lineno - 1 and not (line.startswith(("import ", "from ", "#")) or not line):
            return False
        i -= 1
    return False


def test_function_level_imports_only_defer_heavy_libraries():
    bad = []
    statements = set()
    for path in source_files():
        src = path.read_text()
        lines = src.splitlines()
        mod = module_name(path)
        for line, name, in_function in imports(src, mod, path.name == "__init__.py"):
            if not in_function:
                continue
            if (path, line) in statements:
                continue
            statements.add((path, line))
            where = f"{path.relative_to(ROOT)}:{line}: {name}"
            if not heavy_at_import(name) - heavy_at_import(mod):
                bad.append(where + " (defers nothing heavy the module does not load already: import it at module "
                                   "level)")
            elif not _says_deferred(lines, line):
                bad.append(where + " (say what it defers in a comment)")
    assert not bad, f"{len(bad)} function-level imports that defer nothing heavy:\n" + "\n".join(bad)
    assert len(statements) > 10  # the deferred ones the scan saw


@pytest.mark.parametrize("module, heavy", [("edgevlm.analysis.plots", "matplotlib"),
                                          ("edgevlm.models.llava", "torch"), ("edgevlm.testbed.server", "fastapi")])
def test_heavy_closure_follows_module_level_imports(module, heavy):
    assert heavy in heavy_at_import(module)
    assert not heavy_at_import("edgevlm.sim.engine") and not heavy_at_import("edgevlm.traces.io")
