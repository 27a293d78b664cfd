"""The package levels of soraprep import each other without a cycle.

A level is a top-level subpackage (``soraprep.curate``, ``soraprep.caption``, ``soraprep.video``, ...) or the
package's own top-level modules taken together (``soraprep``: types, manifest*, the shared records). Edges come
from every ``import`` / ``from ... import`` in every module, read from the source with ``ast`` — including
imports inside functions and under ``TYPE_CHECKING``, which a runtime import check would miss. A cycle between
levels means neither can be understood, tested or reused without the other; the neutral ones (``stages``:
the stage protocol and registry; ``storage``: files and stores) exist so that none is needed.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import soraprep

PACKAGE_DIR = Path(soraprep.__file__).resolve().parent

Edges = dict[str, dict[str, list[str]]]   # level -> imported level -> ["file:line", ...]


def _module_name(path: Path, pkg_dir: Path) -> str:
    parts = [pkg_dir.name, *path.relative_to(pkg_dir).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _level(module: str, pkg_dir: Path) -> str:
    """``pkg.sub`` for anything inside the subpackage ``sub``; ``pkg`` for the package's top-level modules."""
    parts = module.split(".")
    if len(parts) >= 2 and (pkg_dir / parts[1]).is_dir():
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names a (possibly relative) import statement brings in; ``from a import b`` gives ``a.b``
    as well as ``a``, so that ``from soraprep import curate`` counts as an import of ``soraprep.curate``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names if a.name != "*"]


def level_graph(pkg_dir: Path = PACKAGE_DIR) -> Edges:
    """Import edges between the levels of the package in ``pkg_dir`` (edges inside one level are left out)."""
    pkg = pkg_dir.name
    edges: Edges = defaultdict(lambda: defaultdict(list))
    for path in sorted(pkg_dir.rglob("*.py")):
        module = _module_name(path, pkg_dir)
        src_level = _level(module, pkg_dir)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = [n for n in _imported(node, module, path.name == "__init__.py")
                     if n == pkg or n.startswith(pkg + ".")]
            for dst_level in sorted({_level(n, pkg_dir) for n in names} - {src_level}):
                edges[src_level][dst_level].append(f"{path.relative_to(pkg_dir.parent)}:{node.lineno}")
    return edges


def find_cycle(edges: Edges) -> list[str] | None:
    """One cycle of levels (first level repeated at the end), or None: depth-first search, three colours."""
    colour: dict[str, int] = {}   # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(level: str) -> list[str] | None:
        colour[level] = 1
        stack.append(level)
        for nxt in sorted(edges.get(level, {})):
            if colour.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour and (found := visit(nxt)):
                return found
        stack.pop()
        colour[level] = 2
        return None

    for level in sorted(edges):
        if level not in colour and (found := visit(level)):
            return found
    return None


def describe(cycle: list[str], edges: Edges) -> str:
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:], strict=False):
        sites = edges[a][b]
        lines.append(f"  {a} -> {b}: {', '.join(sites[:5])}{' ...' if len(sites) > 5 else ''}")
    return "\n".join(lines)


def test_package_levels_have_no_import_cycle():
    edges = level_graph()
    assert "soraprep.curate" in edges and "soraprep.caption" in edges  # the walk saw the package
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle between package levels:\n" + describe(cycle, edges)


def test_neutral_levels_import_no_other_level():
    edges = level_graph()
    assert dict(edges.get("soraprep.stages", {})) == {}, "soraprep.stages must stay neutral ground"
    assert dict(edges.get("soraprep.storage", {})) == {}, "soraprep.storage must not import the manifest or stages"
    assert "soraprep.curate" not in edges["soraprep.caption"]  # caption's stage registers through soraprep.stages


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, "__init__.py")
    _write(pkg, "core.py", "X = 1\n")
    _write(pkg, "a/__init__.py")
    _write(pkg, "a/stage.py", "from pkg.b.run import go\nfrom pkg import core\n")
    _write(pkg, "b/__init__.py")
    _write(pkg, "b/run.py", "def go():\n    from ..a import stage  # lazy, relative: still an edge\n    return stage\n")
    edges = level_graph(pkg)
    assert edges["pkg.b"]["pkg.a"] == ["pkg/b/run.py:2"]
    assert edges["pkg.a"]["pkg"] == ["pkg/a/stage.py:2"]
    cycle = find_cycle(edges)
    assert cycle == ["pkg.a", "pkg.b", "pkg.a"]
    assert "pkg/b/run.py:2" in describe(cycle, edges)
    _write(pkg, "b/run.py", "def go():\n    from pkg import core\n    return core\n")
    assert find_cycle(level_graph(pkg)) is None
