"""Student submissions: collect a folder of them into ``submitted/``, and rehearsal submissions
(the solutions answered into the release, edited as students do) for checking the grading setup.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from helpers.files import atomic_copy
from instructor_tools.course.course_folder import (
    check_assignments,
    list_assignments,
    release_notebook,
    resolve_root,
    source_notebook,
)


def _notebook_grade_ids(path: Path) -> set[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        for cell in data.get("cells", [])
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    }


def _guess_assignment(path: Path, root: Path) -> str:
    """The assignment a loose submission belongs to: the one sharing most graded cells with it.

    Raises:
        ValueError: The file is not a readable notebook, or has no graded cell of any assignment.
    """
    try:
        ids = _notebook_grade_ids(path)
    except (ValueError, UnicodeDecodeError, AttributeError) as error:
        raise ValueError(f"not a readable notebook ({type(error).__name__}); pass --assignment to grade it anyway") from None
    best = max(list_assignments(root), key=lambda a: len(ids & _notebook_grade_ids(source_notebook(a, root))))
    if not ids & _notebook_grade_ids(source_notebook(best, root)):
        raise ValueError("has no graded cell of any assignment; pass --assignment")
    return best


def solution_submission(assignment: str, root: Path | str | None = None) -> Any:
    """The release notebook answered as the solutions do: what a perfect student submits.

    Every answer cell of the release gets its source cell's code without the
    ``### BEGIN/END SOLUTION`` lines; written answers get the model answer. Locked and
    test cells are left as released. For checking the grading setup end to end.

    Returns:
        An ``nbformat`` notebook.
    """
    import nbformat

    root = resolve_root(root)
    source = nbformat.read(source_notebook(assignment, root), as_version=4)
    answers = {
        cell.metadata["nbgrader"]["grade_id"]: cell.source
        for cell in source.cells
        if cell.metadata.get("nbgrader", {}).get("solution")
    }
    released = release_notebook(assignment, root)
    if not released.is_file():
        raise FileNotFoundError(f"{released} is missing; run: python -m instructor_tools generate {assignment}")
    submission = nbformat.read(released, as_version=4)
    for cell in submission.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            lines = answers[grade_id].splitlines()
            cell.source = "\n".join(
                line for line in lines if line.strip() not in {"### BEGIN SOLUTION", "### END SOLUTION"}
            )
    return submission


def edit_submission(
    notebook: Any,
    *,
    replace: Mapping[str, str] | None = None,
    delete: Sequence[str] = (),
    duplicate: Sequence[str] = (),
) -> Any:
    """A copy of a submission with cells changed as students do, to rehearse grading.

    Args:
        notebook: An ``nbformat`` notebook (for example :func:`solution_submission`).
        replace: grade_id -> new source of that cell.
        delete: grade_ids of cells to delete.
        duplicate: grade_ids of cells to copy (the copy follows the original, with a new cell id).

    Returns:
        The edited copy; ``notebook`` is unchanged.
    """
    import copy

    replace = dict(replace or {})
    edited = copy.deepcopy(notebook)
    known = {cell.metadata.get("nbgrader", {}).get("grade_id") for cell in edited.cells}
    unknown = sorted((set(replace) | set(delete) | set(duplicate)) - known)
    if unknown:
        raise ValueError(f"no cell with grade_id {unknown} in this notebook.")
    cells = []
    for cell in edited.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in delete:
            continue
        if grade_id in replace:
            cell.source = replace[grade_id]
        cells.append(cell)
        if grade_id in duplicate:
            twin = copy.deepcopy(cell)
            twin.id = f"{cell.get('id', grade_id)}-copy"[:64]
            cells.append(twin)
    edited.cells = cells
    return edited


@dataclasses.dataclass
class Collected:
    """What :func:`collect_submissions` copied into ``submitted/``.

    Attributes:
        found: assignment -> students.
        skipped: ``(file, why)`` for each notebook that could not be placed.
    """

    found: dict[str, list[str]]
    skipped: list[tuple[str, str]]


def collect_submissions(
    folder: Path | str,
    root: Path | str | None = None,
    assignment: str | None = None,
) -> Collected:
    """Copy a folder of submissions into the course's ``submitted/`` folder (nbgrader's layout).

    Accepts nbgrader's layout (``<student>/<assignment>/<assignment>.ipynb``),
    ``<student>/<assignment>.ipynb``, or loose ``<student>.ipynb`` files (their assignment
    is ``assignment`` or the one whose graded cells they contain). Each file is copied to
    a temporary name, then renamed. A loose file whose assignment cannot be told is
    skipped (and listed), never guessed.

    Returns:
        A :class:`Collected`.
    """
    root = resolve_root(root)
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"submissions folder {folder} does not exist.")
    if assignment is not None:
        check_assignments(root, [assignment])
    known = list_assignments(root)
    found: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []

    def place(source: Path, student: str, name: str) -> None:
        target = root / "submitted" / student / name / f"{name}.ipynb"
        if source.resolve() != target.resolve():
            atomic_copy(source, target)
        found.setdefault(name, []).append(student)

    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix == ".ipynb":
            try:
                place(entry, entry.stem, assignment or _guess_assignment(entry, root))
            except ValueError as error:
                skipped.append((str(entry), str(error)))
        elif entry.is_dir():
            for name in known:
                if assignment and name != assignment:
                    continue
                for candidate in (entry / name / f"{name}.ipynb", entry / f"{name}.ipynb"):
                    if candidate.is_file():
                        place(candidate, entry.name, name)
                        break
    return Collected({name: sorted(set(students)) for name, students in found.items()}, skipped)
