"""The project's layering (docs/design.md, "Layout"): the import contracts in pyproject.toml
hold, the library never reaches into ``tools/``, and the tools are thin (no ``sys.path``
edits: the package is installed)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [ROOT / "mypt_lightning", ROOT / "data_modules"]


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_library_never_imports_tools():
    offenders = []
    for package in LIBRARY:
        for path in package.rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            if any(n == "tools" or n.startswith("tools.") for n in _imports(path)) or "tools/" in "".join(
                    line for line in source.splitlines() if "run_path" in line or "spec_from_file_location" in line):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_tools_do_not_edit_sys_path():
    offenders = [p.name for p in sorted((ROOT / "tools").glob("*.py")) + [ROOT / "run.py"]
                 if "sys.path" in p.read_text(encoding="utf-8")]
    assert not offenders, f"tools that edit sys.path (the package is installed: drop it): {offenders}"
