"""The package's map stays true: no import cycle, and no import that runs up the layers that
CONTRIBUTING.md states (read from there, so the document and the code cannot drift apart).
Imports inside functions count too: they hide a cycle from Python, not from a reader."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "kdbench"
CORE = "core"  # the modules at the top of the package: its vocabulary
API = "kdbench"  # the public API (`kdbench/__init__.py`, `__main__`): may import anything


def layer_order() -> list[str]:
    """The layers, lowest first, from CONTRIBUTING.md's line `Layers, lowest first: ...`."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    match = re.search(r"Layers, lowest first: (.+?)\(the public API\)", text, re.DOTALL)
    assert match, "CONTRIBUTING.md must state 'Layers, lowest first: ... (the public API)'"
    return re.findall(r"`([a-z_]+)/?`", match.group(1))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if module in ("kdbench", "kdbench.__main__"):
        return API
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return CORE


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The kdbench modules `path` imports, anywhere in it (`from kdbench.x import y` names the
    module kdbench.x.y when that is a module, else kdbench.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "kdbench"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "kdbench":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(p, known) - {m} for m, p in mods.items()}


def test_layers_are_stated_and_cover_every_subpackage():
    order = layer_order()
    assert order[0] == CORE and order[-1] == API, order
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(order) - {CORE, API}, (subpackages, order)


def test_no_import_runs_up_the_layers():
    rank = {name: i for i, name in enumerate(layer_order())}
    upward = [
        f"{m} ({layer_of(m)}) imports {t} ({layer_of(t)})"
        for m, targets in graph().items()
        for t in targets
        if rank[layer_of(t)] > rank[layer_of(m)]
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                return [*path[path.index(t) :], t]
            if t not in state and (cycle := visit(t)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (cycle := visit(m)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The checks above could pass by seeing nothing: show they find what they look for."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from kdbench.cli.app import main\n")
    assert imports_of(a, set(modules())) == {"kdbench.cli.app"}
    b = tmp_path / "b.py"
    b.write_text("from kdbench.runs import store\nfrom kdbench.records import Record\n")
    assert imports_of(b, set(modules())) == {"kdbench.runs.store", "kdbench.records"}
    assert layer_of("kdbench.runs.store") == "runs" and layer_of("kdbench.records") == CORE
