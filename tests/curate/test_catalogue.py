"""curate/catalogue.py is the one list of built-in stage modules, and soraprep.stages is neutral ground."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import soraprep
from soraprep.curate import catalogue

PACKAGE_DIR = Path(soraprep.__file__).resolve().parent
_REGISTRIES = {"soraprep.stages", "soraprep.stages.registry", "soraprep.curate.registry"}


def _registering_modules() -> set[str]:
    """Modules of soraprep that decorate a class with the stage registry's ``@register(...)``."""
    found = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                 and n.module in _REGISTRIES for a in n.names if a.name == "register"}
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id in names
                    for d in node.decorator_list):
                rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
                found.add(".".join(rel.parts))
    return found


def test_every_built_in_stage_module_is_in_the_catalogue():
    listed = {m.__name__ for m in catalogue.MODULES}
    missing = _registering_modules() - listed
    assert not missing, f"add these stage modules to soraprep/curate/catalogue.py (MODULES): {sorted(missing)}"
    assert listed <= _registering_modules()
    assert {"probe", "analyze", "split", "score", "filter", "cut", "bucket", "caption"} <= set(catalogue.STAGES)


def test_stage_protocol_imports_neither_curate_nor_caption_and_the_catalogue_fills_the_registry():
    code = ("import sys, soraprep.stages as s; "
            "bad = [m for m in sys.modules if m.startswith(('soraprep.curate', 'soraprep.caption'))]; "
            "assert not bad and not s.STAGES, (bad, list(s.STAGES)); "
            "import soraprep.curate.catalogue as c; "
            "assert c.STAGES is s.STAGES and 'caption' in s.STAGES and 'cut' in s.STAGES; "
            "assert 'torch' not in sys.modules, 'the catalogue must not import torch'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE_DIR.parent)
    assert res.returncode == 0, res.stderr
