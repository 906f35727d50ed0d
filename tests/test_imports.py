"""The kit's import rule (written in ``helpers/__init__.py``), checked on the source of both packages.

Parsed with :mod:`ast`, so imports inside functions count too: dependencies between the
kit's modules go one way (no cycle), the students' library (``helpers``) never imports the
instructor's tools (``instructor_tools``), kit modules are imported at the top of a file, and
TensorFlow, Keras and scikit-learn only inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("helpers", "instructor_tools")
# Imported inside functions only: Keras reads KERAS_HOME once, when first imported, so
# the kit must set it first; and importing a helpers module must stay cheap.
LATE_PACKAGES = ("tensorflow", "keras", "sklearn")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _imports(name: str) -> list[tuple[str, int, bool]]:
    """``(imported kit module, line, outside any function)`` for every kit import of one module."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    in_functions = {
        id(inner)
        for outer in ast.walk(tree)
        if isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for inner in ast.walk(outer)
    }
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # ``from helpers import retraining`` imports the module helpers.retraining.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target not in PACKAGES and target != name:
                found.append((target, node.lineno, id(node) not in in_functions))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in _imports(name)} for name in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for neighbour in sorted(graph.get(node, ())):
            if state.get(neighbour) == 1:
                return stack[stack.index(neighbour):] + [neighbour]
            if neighbour not in state and (found := visit(neighbour)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_checker_finds_kit_imports_and_cycles():
    """The parser sees function-level and relative imports, and the cycle search finds a cycle."""
    assert ("helpers.settings", True) in {(target, top) for target, _, top in _imports("helpers.session")}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_kit_modules_import_each_other_one_way():
    cycle = _cycle(_graph())
    assert cycle is None, (
        "import cycle among the kit's modules (function-level imports included): "
        + " -> ".join(cycle or [])
        + ". Move the function that needs the other module to where it belongs, or hand it what it needs."
    )


@pytest.mark.parametrize("name", sorted(MODULES))
def test_kit_modules_are_imported_at_the_top_of_the_file(name):
    late = [f"{target} (line {line})" for target, line, top in _imports(name) if not top]
    assert not late, f"{name} imports kit modules inside functions: {late}; import them at the top of the file."


@pytest.mark.parametrize("name", sorted(MODULES))
def test_tensorflow_keras_and_sklearn_are_imported_inside_functions(name):
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    early = []
    for node in tree.body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        )
        early += [f"{n} (line {node.lineno})" for n in names if n.split(".")[0] in LATE_PACKAGES]
    assert not early, f"{name} imports {early} at import time; import them inside the functions that use them."


def test_the_students_library_never_imports_the_instructors_tools():
    """Every import of every helpers module, functions included, and every module named to importlib."""
    wrong = [
        f"{name} imports {target} (line {line})"
        for name in MODULES if name.split(".")[0] == "helpers"
        for target, line, _ in _imports(name) if target.split(".")[0] == "instructor_tools"
    ]
    for name, path in MODULES.items():
        if name.split(".")[0] != "helpers":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
                "import_module", "__import__"
            }:
                names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                wrong += [f"{name} imports {n} by name (line {node.lineno})" for n in names if n.startswith("instructor_tools")]
    assert not wrong, f"the students' library must work without the instructor's package: {wrong}"


def test_every_instructor_module_is_in_a_sub_package_by_role():
    """instructor_tools holds its command line at the top and everything else in course/grading/isolation/serving."""
    roles = {"course", "grading", "isolation", "serving"}
    loose = [
        name for name in MODULES
        if name.startswith("instructor_tools.") and name.count(".") == 1
        and name.split(".")[1] not in roles | {"cli", "__main__"}
    ]
    assert not loose, f"put {loose} in one of the sub-packages {sorted(roles)} (by who uses it for what)"


def test_the_students_library_imports_and_runs_with_the_instructors_package_hidden():
    """Every helpers module imports, and the students' commands answer, where instructor_tools cannot be found."""
    import subprocess
    import sys

    blocker = (
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'instructor_tools':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (hidden by the test)')\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    helpers_modules = sorted(name for name in MODULES if name.split(".")[0] == "helpers" and name != "helpers.__main__" and ".jupyter." not in name)
    script = blocker + "import importlib\n" + "".join(f"importlib.import_module({name!r})\n" for name in helpers_modules)
    script += "from helpers import cli\nassert cli.main(['--help']) == 0\nprint('imported', len(sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT / "tests")
    assert result.returncode == 0, f"a helpers module needs the instructor's package: {result.stderr[-2000:]}"
