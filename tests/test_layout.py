"""The package's house rules: no import circles (function-local imports included), and
imports run one way between the stage folders (README, "Where each stage lives")."""

from __future__ import annotations

import ast
from pathlib import Path

import sparsecell

ROOT = Path(sparsecell.__file__).parent

#: Each stage's layer: a module may import its own layer or a lower one, never a higher.
LAYERS = {
    "errors": 0, "catalogue": 0,
    "formats": 1,
    "config": 2,
    "metrics": 3, "models": 3, "report": 3,
    "datasets": 4, "losses": 4,
    "inference": 5,
    "training": 6, "classical": 6,
    "slides": 7,
    "evidence": 8, "demo": 8, "annotate": 8, "cli": 9, "__init__": 9,
}  # fmt: skip
#: The one downward exception: training data from slides reads them with the slide reader
#: and their QuPath annotations (datasets -> slides.reader, which imports only formats).
ALLOWED = {("datasets.slides", "slides.reader")}


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


def _imports(name: str, path: Path, mods) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (type-checking-only imports left out)."""
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    skip = set()
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` blocks import nothing at run time
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    out = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in skip:
            continue
        if node.level:
            base = pkg[: len(pkg) - node.level + 1] if node.level > 1 else pkg
            target = ".".join(base + ([node.module] if node.module else []))
        elif node.module and node.module.startswith("sparsecell."):
            target = node.module[len("sparsecell."):]
        else:
            continue
        for t in [target] + [f"{target}.{a.name}" if target else a.name for a in node.names]:
            if t in mods and t != name:
                out.add(t)
    return out


def _graph():
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_no_import_cycles_even_in_function_bodies():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "sparsecell"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from .a import f\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    try:
        test_no_import_cycles_even_in_function_bodies()
    except AssertionError as e:
        assert "a -> b -> a" in str(e)
    else:
        raise AssertionError("the cycle a <-> b was not found")


def test_imports_run_down_the_layers():
    graph = _graph()
    up = []
    for m, targets in graph.items():
        for t in targets:
            lm, lt = LAYERS[m.split(".")[0]], LAYERS[t.split(".")[0]]
            if lt > lm and (m, t) not in ALLOWED:
                up.append(f"{m} -> {t}")
    assert up == [], "imports against the layers: " + ", ".join(sorted(up))


def test_every_stage_has_a_layer():
    assert {m.split(".")[0] for m in _modules()} <= set(LAYERS)
