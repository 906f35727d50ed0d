"""Benchmark: autograde a class of 30 submissions of one notebook in the grading profile.

Builds a scratch course folder with the kit's nbgrader config and one assignment
(01_pretrained_scoring by default), generates its release, writes a realistic class of
submissions -- complete, half-right (top-k without the threshold), blank, a duplicated
test cell, a deleted test cell and one infinite loop -- then times
``helpers.course.autograde`` on them and checks every score against what each kind of
submission must get. The target: 30 submissions in at most 10 minutes on 2 CPU cores.

Run from the project root, with the backbone and data the class uses, for example::

    KIT_BACKBONE=mobilenet KIT_ALPHA=0.75 \\
    KIT_WEIGHTS_MIRROR=../shared/data/keras_home/models KIT_DATA_DIR=../shared/data/datasets \\
    .venv/bin/python benchmarks/autograde_class.py --jobs 2

Writes ``benchmarks/out/autograde_class.json`` (the timings and the scores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from helpers import course

ROOT = Path(__file__).resolve().parents[1]
NO_THRESHOLD = '''def top_k_with_threshold(probabilities, class_names, k=5, min_probability=0.1):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities)[:k]
    return {class_names[i]: float(probabilities[i]) for i in order}'''
# (kind, how many of the 30, grade_ids that kind must fail)
MIX = [
    ("solution", 12, set()),
    ("no_threshold", 8, {"test_top_k_threshold"}),
    ("blank", 6, None),  # None: every graded cell scores 0
    ("duplicated_test", 2, set()),
    ("deleted_test", 1, {"test_top_k_threshold"}),
    ("infinite_loop", 1, {"test_results_table"}),
]


def _submissions(assignment: str, root: Path) -> dict[str, nbformat.NotebookNode]:
    solution = course.solution_submission(assignment, root)
    answers = {cell.metadata.get("nbgrader", {}).get("grade_id"): cell.source for cell in solution.cells}
    wrong = course.edit_submission(solution, replace={"top_k_with_threshold": NO_THRESHOLD})
    return {
        "solution": solution,
        "no_threshold": wrong,
        "blank": nbformat.read(course.release_notebook(assignment, root), as_version=4),
        "duplicated_test": course.edit_submission(solution, duplicate=["test_preprocess"]),
        "deleted_test": course.edit_submission(wrong, delete=["test_top_k_threshold"]),
        "infinite_loop": course.edit_submission(
            solution, replace={"results_table": "while True:\n    pass\n" + answers["results_table"]}
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="01_pretrained_scoring")
    parser.add_argument("--jobs", type=int, default=course.DEFAULT_JOBS)
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: the grading profile's)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "out" / "autograde_class.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kit-class-") as scratch:
        root = Path(scratch)
        (root / "solutions").mkdir()
        shutil.copy(ROOT / "nbgrader_config.py", root)
        shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
        shutil.copytree(ROOT / "solutions" / args.assignment, root / "solutions" / args.assignment)
        course.generate(root=root)
        kinds = _submissions(args.assignment, root)
        expected = {}
        for kind, count, failing in MIX:
            for number in range(count):
                student = f"{kind}_{number:02d}"
                target = root / "submitted" / student / args.assignment / f"{args.assignment}.ipynb"
                target.parent.mkdir(parents=True)
                nbformat.write(kinds[kind], target)
                expected[student] = failing
        began = time.perf_counter()
        scores = course.autograde(args.assignment, root=root, timeout=args.timeout, jobs=args.jobs)
        seconds = time.perf_counter() - began

    source = nbformat.read(course.source_notebook(args.assignment, ROOT), as_version=4)
    auto = {  # the autograded test cells and their points
        meta["grade_id"]: float(meta["points"])
        for meta in (cell.metadata.get("nbgrader", {}) for cell in source.cells)
        if meta.get("grade") and not meta.get("solution")
    }
    wrong = []
    for score in scores:
        failing = expected[score.student]
        for grade_id, points in auto.items():
            want = 0.0 if failing is None or grade_id in failing else points
            if score.cells[grade_id].score != want:
                wrong.append(f"{score.student}/{grade_id}: {score.cells[grade_id].score} instead of {want}")
    result = {
        "assignment": args.assignment,
        "submissions": len(scores),
        "jobs": args.jobs,
        "cpu_count": os.cpu_count(),
        "load_average_after": os.getloadavg(),
        "profile": course.GRADING_PROFILE,
        "cell_timeout": args.timeout or course.load_config(ROOT, profile=course.GRADING_PROFILE).Execute.timeout,
        "seconds": round(seconds, 1),
        "seconds_per_submission": round(seconds / max(1, len(scores)), 1),
        "scores": {s.student: s.score for s in scores},
        "unexpected": wrong,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}, indent=1))
    return 1 if wrong or len(scores) != sum(count for _, count, _ in MIX) else 0


if __name__ == "__main__":
    raise SystemExit(main())
