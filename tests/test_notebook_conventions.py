"""Every solutions notebook follows the kit's skeleton and graded-cell conventions (README.md,
"Course pipeline (nbgrader)").

Checked on every notebook in ``solutions/<assignment>/<assignment>.ipynb`` (all
assignments found there, whoever wrote them), without running them:

* skeleton: a ``# `` title first, a "Learning objectives" list, the "Expected time",
  exactly one setup cell (``from helpers import session`` / ``kit = session.start()``)
  as the first code cell, committed without outputs, the kit's named kernel (``tl-workshop``);
* no sizes edited into code: no profile overrides, no ``sys.path`` hacks, no star imports;
* graded test cells: locked, descriptive ``test_*`` grade_id, points, a docstring
  first, every assert with a message for the student, visible checks then
  ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS``, no value left as output
  (nbgrader would read it as partial credit);
* answer cells: ``### BEGIN SOLUTION`` ... ``### END SOLUTION``; written answers:
  markdown, graded by hand, with points;
* the points of every graded cell and the total stated in a markdown cell near the top.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from helpers.kernel import KERNEL_NAME

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
ASSIGNMENT_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")
TEST_ID = re.compile(r"^test_[a-z0-9_]{3,}$")
GRADE_ID = re.compile(r"^[a-z][a-z0-9_]{3,}$")
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
HIDDEN_MARKERS = ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")
SETUP = re.compile(r"^\s*kit\s*=\s*session\.start\(\s*\)\s*$", re.MULTILINE)


def _assignment_dirs() -> list[Path]:
    return sorted(p for p in SOLUTIONS.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _notebooks() -> list[Path]:
    return [d / f"{d.name}.ipynb" for d in _assignment_dirs() if (d / f"{d.name}.ipynb").is_file()]


NOTEBOOKS = _notebooks()
IDS = [path.parent.name for path in NOTEBOOKS]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _nbgrader(cell: nbformat.NotebookNode) -> dict:
    return dict(cell.metadata.get("nbgrader", {}))


def _is_test_cell(cell: nbformat.NotebookNode) -> bool:
    meta = _nbgrader(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell.cell_type == "code"


def _setup_index(notebook: nbformat.NotebookNode) -> int:
    indices = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and "session.start(" in c.source]
    return indices[0] if indices else -1


def test_solutions_hold_the_course_assignments():
    names = [d.name for d in _assignment_dirs()]
    assert {"00_setup_check", "01_pretrained_scoring"} <= set(names), f"solutions/ holds {names}"
    for folder in _assignment_dirs():
        assert ASSIGNMENT_NAME.match(folder.name), (
            f"solutions/{folder.name}: name assignments NN_words_with_underscores (e.g. 02_retrain_simpsons)"
        )
        notebooks = sorted(p.name for p in folder.glob("*.ipynb"))
        assert notebooks == [f"{folder.name}.ipynb"], (
            f"solutions/{folder.name} must hold exactly one notebook named {folder.name}.ipynb, found {notebooks}"
        )
    assert (SOLUTIONS / "header.ipynb").is_file(), "solutions/header.ipynb (the nbgrader header) is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_valid_notebook_with_the_venv_kernel(path):
    notebook = _read(path)
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) >= (4, 5), f"{path.name}: save as nbformat 4.5+ (cell ids)"
    kernel = notebook.metadata.get("kernelspec", {})
    assert kernel.get("name") == KERNEL_NAME and kernel.get("language") == "python", (
        f"{path.name}: use the kit's named kernel {KERNEL_NAME!r} (python -m helpers kernel installs it), not {kernel}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs(path):
    notebook = _read(path)
    dirty = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: clear the outputs of cells {dirty} before committing"
    assert "widgets" not in notebook.metadata, f"{path.name}: saved widget state in the metadata; clear it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_skeleton_title_objectives_time_setup(path):
    notebook = _read(path)
    cells = notebook.cells
    assert cells and cells[0].cell_type == "markdown" and cells[0].source.startswith("# "), (
        f"{path.name}: the first cell must be a markdown title starting with '# '"
    )
    setup = _setup_index(notebook)
    assert setup >= 0, f"{path.name}: no setup cell (from helpers import session / kit = session.start())"
    before = "\n".join(c.source for c in cells[:setup] if c.cell_type == "markdown")
    objectives = re.search(r"^#+\s*Learning objectives\s*$(.*)", before, re.MULTILINE | re.DOTALL | re.IGNORECASE)
    assert objectives, f"{path.name}: add a 'Learning objectives' heading before the setup cell"
    assert re.search(r"^\s*(?:[-*]|\d+\.)\s+\S", objectives.group(1), re.MULTILINE), (
        f"{path.name}: list the learning objectives as a bulleted or numbered list"
    )
    assert re.search(r"expected time", before, re.IGNORECASE), (
        f"{path.name}: state the 'Expected time' (CPU, workshop profile) before the setup cell"
    )
    code = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    assert code[0] == setup, f"{path.name}: the setup cell must be the first code cell"
    starts = [i for i in code if "session.start(" in cells[i].source]
    assert starts == [setup], f"{path.name}: call session.start() once, in the setup cell (found in cells {starts})"
    source = cells[setup].source
    assert "from helpers import session" in source and SETUP.search(source), (
        f"{path.name}: the setup cell must be `from helpers import session` / `kit = session.start()` "
        "(no overrides: sizes come from the profile, kit.scale)"
    )
    assert any(c.cell_type == "markdown" and c.source.startswith("## ") for c in cells[setup:]), (
        f"{path.name}: organise the notebook in '## ' sections after the setup cell"
    )


FORBIDDEN = [
    (re.compile(r"\bsys\.path\b"), "no sys.path hacks: helpers is an installed package"),
    (re.compile(r"^\s*from\s+\S+\s+import\s+\*", re.MULTILINE), "no star imports"),
    (re.compile(r"os\.environ\[[^\]]*\]\s*=|os\.environ\.(setdefault|update)|%env\b"), "do not set environment variables in a notebook: settings come from kit.toml / KIT_*"),
    (re.compile(r"""\bprofile\s*=\s*["']"""), "do not choose a profile in code: it comes from KIT_PROFILE"),
    (re.compile(r"^\s*[!%]\s*pip\b", re.MULTILINE), "no pip installs from a notebook: dependencies belong in pyproject.toml"),
]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_sizes_or_settings_edited_into_code(path):
    notebook = _read(path)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for pattern, rule in FORBIDDEN:
            assert not pattern.search(cell.source), f"{path.name}, cell {index}: {rule}"


def _asserts(tree: ast.AST) -> list[ast.Assert]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Assert)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_graded_cells_follow_the_conventions(path):
    notebook = _read(path)
    seen: set[str] = set()
    for index, cell in enumerate(notebook.cells):
        meta = _nbgrader(cell)
        where = f"{path.name}, cell {index}"
        text = cell.source
        if not meta:
            assert not any(m in text for m in SOLUTION_MARKERS + HIDDEN_MARKERS), (
                f"{where}: solution / hidden-test markers only work in cells with nbgrader metadata"
            )
            continue
        grade_id = meta.get("grade_id", "")
        where = f"{path.name}, cell {index} ({grade_id})"
        assert GRADE_ID.match(grade_id), f"{where}: give the cell a descriptive grade_id (lowercase_with_underscores)"
        assert grade_id not in seen, f"{where}: grade_id used twice"
        seen.add(grade_id)
        assert meta.get("schema_version") == 3, f"{where}: nbgrader metadata schema_version must be 3"
        grade, solution, locked = bool(meta.get("grade")), bool(meta.get("solution")), bool(meta.get("locked"))
        if grade and not solution:
            assert cell.cell_type == "code", f"{where}: an autograded test must be a code cell"
            assert locked, f"{where}: lock test cells (locked=true) so students cannot edit them"
            assert TEST_ID.match(grade_id), f"{where}: name test cells test_<what_it_checks>"
            assert float(meta.get("points", 0)) > 0, f"{where}: give the test cell points"
            tree = ast.parse(text)
            assert tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(
                getattr(tree.body[0], "value", None), ast.Constant
            ) and isinstance(tree.body[0].value.value, str), f"{where}: open the test cell with a docstring saying what it checks"
            assert all(node.msg is not None for node in _asserts(tree)), (
                f"{where}: every assert needs a message telling the student what to fix"
            )
            assert not isinstance(tree.body[-1], ast.Expr) or len(tree.body) == 1, (
                f"{where}: do not end a test cell with an expression: nbgrader reads its value as partial credit"
            )
            assert all(m in text for m in HIDDEN_MARKERS), f"{where}: add hidden tests between {HIDDEN_MARKERS}"
            visible, hidden = text.split(HIDDEN_MARKERS[0], 1)
            hidden = hidden.split(HIDDEN_MARKERS[1], 1)[0]
            assert "assert" in visible.split('"""', 2)[-1], f"{where}: start with visible sanity checks (asserts)"
            assert "assert" in hidden, f"{where}: the hidden section must check something (asserts)"
            assert not any(m in text for m in SOLUTION_MARKERS), f"{where}: no solution markers in a test cell"
        elif solution and not grade:
            assert cell.cell_type == "code", f"{where}: autograded answers are code cells (written answers: grade=true)"
            assert not locked, f"{where}: answer cells must stay editable"
            assert all(m in text for m in SOLUTION_MARKERS), f"{where}: put the solution between {SOLUTION_MARKERS}"
            assert text.index(SOLUTION_MARKERS[0]) < text.index(SOLUTION_MARKERS[1]), f"{where}: markers in the wrong order"
            assert not any(m in text for m in HIDDEN_MARKERS), f"{where}: hidden tests belong in locked test cells"
        elif solution and grade:
            assert cell.cell_type == "markdown", f"{where}: manually graded answers are written (markdown) answers"
            assert float(meta.get("points", 0)) > 0, f"{where}: give the written answer points"
        else:
            assert cell.cell_type == "markdown" and locked, f"{where}: unexpected nbgrader cell (not a test, answer or written answer)"


def _graded(notebook: nbformat.NotebookNode) -> dict[str, float]:
    return {
        _nbgrader(c)["grade_id"]: float(_nbgrader(c).get("points", 0))
        for c in notebook.cells
        if _nbgrader(c).get("grade")
    }


def _numbers(line: str) -> set[float]:
    return {float(n) for n in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", line)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_points_per_cell_and_total_are_stated(path):
    notebook = _read(path)
    graded = _graded(notebook)
    if not graded:
        assert not any(_nbgrader(c) for c in notebook.cells), f"{path.name}: nbgrader cells without any graded cell"
        return
    first = min(i for i, c in enumerate(notebook.cells) if _nbgrader(c))
    stated = [c.source for c in notebook.cells[:first] if c.cell_type == "markdown" and re.search(r"point", c.source, re.I)]
    assert stated, f"{path.name}: state the points of each graded cell and the total in a markdown cell near the top"
    lines = "\n".join(stated).splitlines()
    for grade_id, points in graded.items():
        rows = [line for line in lines if f"`{grade_id}`" in line]
        assert rows, f"{path.name}: the points table must name `{grade_id}` (in backticks) with its points"
        assert any(points in _numbers(row) for row in rows), f"{path.name}: `{grade_id}` is worth {points:g} points"
    total = sum(graded.values())
    totals = [line for line in lines if "total" in line.lower()]
    assert any(total in _numbers(line) for line in totals), f"{path.name}: state the total, {total:g} points"


def test_helpers_modules_export_every_public_function():
    """A module with ``__all__`` lists each of its public functions and classes there (no silent omissions)."""
    import ast

    omissions = {}
    for path in sorted((ROOT / "helpers").glob("*.py")):
        tree = ast.parse(path.read_text())
        exported = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                exported = set(ast.literal_eval(node.value))
        if exported is None:
            continue
        public = {
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_")
        }
        if public - exported:
            omissions[path.name] = sorted(public - exported)
    assert not omissions, f"add these to __all__ (or make them private with a leading _): {omissions}"
