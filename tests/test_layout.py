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


def _is_main_guard(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def test_tools_are_thin():
    """Every tools/*.py is a docstring, imports from the library and one ``if __name__ == "__main__":``
    calling it: the parser and the logic live in mypt_lightning (docs/design.md, "Layout")."""
    offenders = {}
    for path in sorted((ROOT / "tools").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        body = tree.body[1:] if ast.get_docstring(tree) is not None else tree.body
        problems = []
        if ast.get_docstring(tree) is None:
            problems.append("no docstring")
        if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)):
            problems.append("defines a function or class")
        imported = _imports(path)
        if "argparse" in imported:
            problems.append("imports argparse")
        if not any(n.startswith("mypt_lightning.") for n in imported):
            problems.append("imports nothing from mypt_lightning")
        if not all(n == "sys" or n.startswith("mypt_lightning.") for n in imported):
            problems.append(f"imports {sorted(n for n in imported if n != 'sys' and not n.startswith('mypt_lightning.'))}")
        if not (body and _is_main_guard(body[-1]) and len(body[-1].body) == 1 and not body[-1].orelse
                and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body[:-1])):
            problems.append('is not imports + one `if __name__ == "__main__":` line')
        docstring_lines = tree.body[0].end_lineno if ast.get_docstring(tree) is not None else 0
        code_lines = [ln for ln in source.splitlines()[docstring_lines:] if ln.strip()]
        if len(code_lines) > 6:
            problems.append(f"{len(code_lines)} lines of code after the docstring (at most 6)")
        if problems:
            offenders[path.name] = problems
    assert not offenders, offenders
