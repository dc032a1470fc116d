"""The layer rule (tuning -> zoo -> applications -> keras), read from the import statements, and ruff."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER = {"applications": 1, "zoo": 2, "tuning": 3}
# The one exemption: the command line imports tuning inside the `tune` command only.
EXEMPT = {("zoo/cli.py", "cmd_tune", "tuning")}


def imports(path: Path):
    """(imported top-level package, enclosing function or None) for every import in a module."""
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                found.append((child.module.split(".")[0], function))
            visit(child, function)

    visit(ast.parse(path.read_text()), None)
    return found


def test_imports_only_go_downward():
    violations, used = [], set()
    for package, layer in LAYER.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for module, function in imports(path):
                if LAYER.get(module, 0) <= layer:
                    continue
                if (where, function, module) in EXEMPT:
                    used.add((where, function, module))
                else:
                    violations.append(f"{where} imports {module}" + (f" in {function}()" if function else ""))
    assert violations == []
    assert used == EXEMPT  # the exemption is still needed, and lazily inside its function


def test_architectures_depend_on_keras_and_numpy_only():
    allowed = {"keras", "numpy", "applications", "__future__", "math", "functools", "collections", "typing",
               "dataclasses"}
    for path in sorted((ROOT / "applications").glob("*.py")):
        if path.stem in ("keras_apps", "compat"):  # the keras.applications adapter and its private names
            continue
        assert {module for module, _ in imports(path)} <= allowed, path.name


def test_the_imports_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import tuning.search\nfrom zoo import data\n")
    assert imports(bad) == [("tuning", "f"), ("zoo", None)]


def test_ruff_is_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout[-3000:]
