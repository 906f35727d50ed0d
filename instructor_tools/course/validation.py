"""Validation: run a notebook with nbgrader's validator and report every graded test.

Uses nbgrader's Python API (:class:`nbgrader.validator.Validator`) because the
``nbgrader validate`` command exits 0 even when tests fail.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Mapping

from helpers.settings import load_settings
from instructor_tools.course.course_folder import find_course_root, kernel_environment, load_config
from instructor_tools.grading import preprocessors


@dataclasses.dataclass
class ValidationResult:
    """What validating one notebook found.

    Attributes:
        notebook: The notebook validated.
        invert: True when every graded test was expected to *fail* (a release notebook).
        profile: The profile the kernel ran in.
        results: nbgrader's own result (keys ``failed``, ``passed``, ``changed``, ``type_changed``).
        graded: grade_id -> (score, max points) of every autograded test cell.
        errors: ``"cell N (grade_id): Error: message"`` for every code cell that raised.
        seconds: Wall time of the run.
    """

    notebook: Path
    invert: bool
    profile: str
    results: dict[str, list[dict[str, str]]]
    graded: dict[str, tuple[float, float]]
    errors: list[str]
    seconds: float

    @property
    def failed(self) -> list[str]:
        """grade_ids of test cells that did not earn full points."""
        return [gid for gid, (score, points) in self.graded.items() if score < points]

    @property
    def passed(self) -> list[str]:
        """grade_ids of test cells that earned full points."""
        return [gid for gid, (score, points) in self.graded.items() if score >= points]

    @property
    def ok(self) -> bool:
        """Solutions: every test passes and no cell raised. Inverted: no test passes."""
        if self.results.get("changed") or self.results.get("type_changed"):
            return False
        if self.invert:
            return not self.results.get("passed") and not self.passed
        return not self.results.get("failed") and not self.failed and not self.errors

    def summary(self) -> str:
        """One line for humans, plus the details of what went wrong."""
        verdict = "ok" if self.ok else "FAILED"
        what = "tests failing as expected" if self.invert else "tests passing"
        count = len(self.failed) if self.invert else len(self.passed)
        lines = [
            f"{verdict:6} {self.notebook} [{self.profile}]: {count}/{len(self.graded)} {what}, {self.seconds:.0f} s"
        ]
        if self.results.get("changed"):
            lines.append(f"  {len(self.results['changed'])} locked cell(s) were changed")
        if self.results.get("type_changed"):
            lines.append(f"  {len(self.results['type_changed'])} cell(s) changed type")
        if self.invert:
            lines += [f"  passes without an answer: {gid}" for gid in self.passed]
        else:
            lines += [f"  fails: {gid}" for gid in self.failed]
            lines += [f"  error: {error}" for error in self.errors]
        return "\n".join(lines)


def _cell_errors(notebook: Any) -> list[str]:
    errors = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
                label = f"cell {index}" + (f" ({grade_id})" if grade_id else "")
                errors.append(f"{label}: {output.get('ename')}: {str(output.get('evalue', ''))[:300]}")
                break
    return errors


def _graded_scores(notebook: Any) -> dict[str, tuple[float, float]]:
    from nbgrader import utils

    graded = {}
    for cell in notebook.cells:
        if utils.is_grade(cell) and not utils.is_solution(cell) and cell.cell_type == "code":
            score, points = utils.determine_grade(cell)
            graded[cell.metadata.nbgrader["grade_id"]] = (float(score), float(points))
    return graded


def validate(
    notebook: Path | str,
    *,
    invert: bool = False,
    profile: str | None = None,
    timeout: int | None = None,
    environment: Mapping[str, str | None] | None = None,
) -> ValidationResult:
    """Execute a notebook with nbgrader's validator and report every graded test.

    Args:
        notebook: The ``.ipynb`` to validate (a solutions notebook, a release, a submission).
        invert: Expect every graded test to fail (checks that a release does not pass blank).
        profile: Profile for the kernel (``KIT_PROFILE``); the environment's by default.
        timeout: Seconds per cell; the profile's ``cell_timeout`` by default.
        environment: Extra environment variables for the kernel.

    Returns:
        A :class:`ValidationResult`; ``result.ok`` says whether it passed.
    """
    from nbgrader.validator import Validator

    class RecordingValidator(Validator):
        """nbgrader's validator that keeps the executed notebook for the error report."""

        executed: Any = None

        def _preprocess(self, nb: Any) -> Any:
            nb = super()._preprocess(nb)
            self.executed = nb
            return nb

    path = Path(notebook).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    env = dict(environment or {})
    if profile is not None:
        env["KIT_PROFILE"] = profile
    with kernel_environment(env):
        profile_name = load_settings().profile
        config = load_config(find_course_root(path.parent), profile=profile_name, timeout=timeout)
        # The kernel imports the hidden tests' comparisons before any cell, as the grader's does.
        config.Execute.extra_arguments = preprocessors.with_comparisons(config.Execute.get("extra_arguments", []))
        validator = RecordingValidator(config=config)
        validator.invert = invert
        began = time.perf_counter()
        results = validator.validate(str(path))
        seconds = time.perf_counter() - began
    executed = validator.executed
    if executed is None:  # cell types changed: nbgrader stops before executing
        return ValidationResult(path, invert, profile_name, results, {}, [], seconds)
    return ValidationResult(
        path, invert, profile_name, results, _graded_scores(executed), _cell_errors(executed), seconds
    )
