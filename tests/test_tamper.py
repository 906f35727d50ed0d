"""The static tamper check on the kinds of code a person should look at, and on honest answers."""

from __future__ import annotations

import nbformat
import pytest

from instructor_tools.course import submissions
from instructor_tools.course.course_folder import source_notebook
from instructor_tools.grading import comparisons, tamper

HONEST = [
    "import numpy as np\ndef preprocess(images):\n    x = np.array(images, dtype=np.float32, copy=True)\n    return x / 127.5 - 1",
    "model.compile(optimizer='adam', loss='sparse_categorical_crossentropy')\nhistory = model.fit(x, y)",
    "df['label'] = df['path'].str.split('/').str[-2]\nplt.rcParams['figure.dpi'] = 100",
    "results = {}\nfor name, model in models.items():\n    results[name] = model.score(x_test, y_test)",
    "%matplotlib inline\nprint(open('notes.txt').read())",
]


@pytest.mark.parametrize("source", HONEST)
def test_honest_answers_are_not_flagged(source):
    assert tamper.scan_source(source) == []


@pytest.mark.parametrize(
    ("source", "kind", "words"),
    [
        ("import numpy as np\nnp.allclose = lambda *a, **k: True", "patches", "np.allclose"),
        ("import builtins\nbuiltins.len = lambda x: 3", "patches", "builtins.len"),
        ("setattr(np, 'array_equal', lambda *a: True)", "patches", "setattr on np"),
        ("import sys\nsys.modules['numpy'] = fake", "patches", "sys.modules"),
        ("get_ipython().showtraceback = lambda *a, **k: None", "patches", "showtraceback"),
        ("checks.allclose = lambda *a, **k: True", "patches", "checks.allclose"),
        ("import os\nos._exit(0)", "exits", "os._exit"),
        ("import os\nos.kill(os.getpid(), 9)", "exits", "os.kill"),
        ("import os\nwhile True:\n    os.fork()", "exits", "os.fork"),
        ("import ctypes\nctypes.string_at(0)", "exits", "ctypes"),
        ("open('/work/course/solutions/01/01.ipynb').read()", "outside", "reaches outside"),
        ("import sqlite3\nsqlite3.connect('../../../gradebook.db')", "outside", "gradebook"),
        ("paths = ['../../alice/01/01.ipynb']", "outside", "outside the notebook's folder"),
        ("!cat ~/.ssh/id_rsa", "outside", "shell command"),
        ("import subprocess\nsubprocess.run(['ls', '/'])", "outside", "shell command"),
        ("import socket\nsocket.create_connection(('127.0.0.1', 80))", "outside", "socket"),
        ("def top_k_with_threshold(p, names, k=5, min_probability=0.1):\n"
         "    return scoring.top_k_with_threshold(p, names, k, min_probability)", "reference", "scoring.top_k_with_threshold"),
        ("from helpers.scoring import top_k_with_threshold as reference\n"
         "def top_k_with_threshold(p, names, k=5, min_probability=0.1):\n    return reference(p, names, k, min_probability)",
         "reference", "helpers.scoring.top_k_with_threshold"),
    ],
)
def test_each_kind_of_tampering_is_found_with_its_line(source, kind, words):
    findings = tamper.scan_source(source, reference={"scoring": "scoring", "checks": "checks"})
    assert [f.kind for f in findings].count(kind) >= 1, findings
    finding = next(f for f in findings if f.kind == kind)
    assert words in finding.why or words in finding.code, finding
    assert 1 <= finding.line <= source.count("\n") + 1


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("import instructor_tools", "imports instructor_tools"),
        ("import instructor_tools.grading.comparisons as c", "imports instructor_tools.grading.comparisons"),
        ("from instructor_tools.grading import comparisons", "imports comparisons from instructor_tools.grading"),
        ("from instructor_tools.grading.tamper import scan_source", "imports scan_source from instructor_tools.grading.tamper"),
        ("import importlib\nimportlib.import_module('instructor_tools.grading')",
         "imports instructor_tools.grading, the instructor's package, through importlib.import_module"),
        ("from importlib import import_module as load\nload('instructor_tools')", "through importlib.import_module"),
        ("c = __import__('instructor_tools.grading.comparisons')", "through __import__"),
        ("import sys\nc = sys.modules['instructor_tools.grading.comparisons']", "names the instructor's package"),
    ],
)
def test_any_import_of_the_instructors_package_is_flagged_with_what_it_saw(source, words):
    findings = [f for f in tamper.scan_source(source) if f.kind == "instructor"]
    assert len(findings) == 1, tamper.scan_source(source)
    assert words in findings[0].why, findings[0].why
    assert findings[0].line == source.count("\n") + 1


def test_the_package_named_in_plain_words_or_another_package_is_not_flagged():
    assert tamper.scan_source("import instructor\nprint('the instructor tools grade this')") == []


def test_a_submission_importing_the_comparisons_is_flagged_in_its_cell():
    notebook = submissions.solution_submission("01_pretrained_scoring")
    edited = submissions.edit_submission(notebook)
    edited.cells.insert(5, nbformat.v4.new_code_cell(
        "from instructor_tools.grading import comparisons\ncomparisons._ALLCLOSE = lambda *a, **k: True"
    ))
    findings = {(f.kind, f.cell, f.line) for f in tamper.scan_notebook(edited)}
    assert ("instructor", 5, 1) in findings and ("patches", 5, 2) in findings, findings


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("def top_k_with_threshold(p, names, k=5, min_probability=0.1):\n"
         "    return scoring.top_labels([p], names, k, min_probability)[0]", "scoring.top_labels"),
        ("def results_table(paths, probabilities, errors, class_names, k=5, min_probability=0.1):\n"
         "    return scoring.Scores(list(paths), probabilities, list(errors), class_names).table(k, min_probability)",
         "scoring.Scores"),
        ("from helpers.freezing import freeze_all_but_last_blocks as freeze\n"
         "def freeze_for_phase(base, backbone, phase, n_blocks=1):\n"
         "    freeze(base, backbone, 0 if phase == 1 else n_blocks)", "freeze_all_but_last_blocks"),
        ("from pathlib import Path\nfrom helpers import sources\ndef label_from_name(path):\n"
         "    return sources.label_rule('_pic_')(Path(path))", "sources.label_rule"),
    ],
)
def test_answering_with_the_kits_look_alike_is_a_reference(source, words):
    findings = [f for f in tamper.scan_source(source, reference={"scoring": "scoring", "sources": "sources"})
                if f.kind == "reference"]
    assert findings and words in findings[0].why and "which does the same" in findings[0].why, findings


def test_using_the_kit_outside_the_exercise_is_not_a_reference():
    source = "def show(scores):\n    return scoring.Scores.concat([scores]).table(k=3)"
    assert tamper.scan_source(source, reference={"scoring": "scoring"}) == []


def test_unparsable_code_finds_nothing():
    assert tamper.scan_source("def broken(:\n  pass") == []


def test_notebook_scan_reads_answers_and_added_cells_only():
    notebook = submissions.solution_submission("01_pretrained_scoring")
    assert tamper.scan_notebook(notebook) == [], "the solutions themselves are clean"
    cheat = (
        "def top_k_with_threshold(probabilities, class_names, k=5, min_probability=0.1):\n"
        "    return scoring.top_k_with_threshold(probabilities, class_names, k=k, min_probability=min_probability)"
    )
    edited = submissions.edit_submission(notebook, replace={"top_k_with_threshold": cheat})
    extra = nbformat.v4.new_code_cell("np.allclose = lambda *a, **k: True")
    edited.cells.insert(3, extra)
    findings = tamper.scan_notebook(edited)
    kinds = {(f.kind, f.grade_id) for f in findings}
    assert ("reference", "top_k_with_threshold") in kinds
    assert ("patches", "") in kinds
    assert all(f.cell >= 0 for f in findings)
    assert findings[0].describe().startswith(f"[{findings[0].kind}] cell {findings[0].cell}")


def test_locked_cells_are_not_scanned():
    """Locked cells are restored from the source before grading: what a student wrote there never runs."""
    source = nbformat.read(source_notebook("01_pretrained_scoring"), as_version=4)
    locked = next(c for c in source.cells if c.metadata.get("nbgrader", {}).get("locked") and not
                  c.metadata["nbgrader"].get("solution"))
    locked.source = "import os\nos._exit(0)"
    assert not any(f.cell == source.cells.index(locked) for f in tamper.scan_notebook(source))


def test_checks_keep_numpy_as_it_was():
    import numpy as np

    saved = np.allclose, np.array_equal
    try:
        np.allclose = lambda *args, **kwargs: True
        np.array_equal = lambda *args, **kwargs: True
        assert not comparisons.allclose([1.0, 2.0], [1.0, 3.0])
        assert not comparisons.array_equal([1, 2], [1, 3])
        assert comparisons.allclose([1.0], [1.0 + 1e-9])
    finally:
        np.allclose, np.array_equal = saved
