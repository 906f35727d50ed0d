"""No function of the students' library passes a graded exercise's tests.

For every answer cell of every solutions notebook, each function the cell defines is
replaced by every public ``helpers`` function with the same name or a signature that takes
every call the exercise's tests make (``from helpers.heads import build_head as build_head``
in place of the ``def``), and the exercise's test cells run again: each must raise.
Otherwise a student could import the answer instead of writing it. The test prints every
(cell, helpers function) pair it tried and what each test cell said.

Cheap by construction: one kernel (smoke profile, MobileNet) runs, notebook after notebook,
only the cells the answer and test cells need (found from the names each cell binds and
reads), up to the last graded test; the solution must pass its tests there first, so a
substitution that fails does so because of the function, not a missing variable. The
substitutions of one function run inside the kernel in one go (edited answer cell, then its
test cells, as ``exec`` in the notebook's namespace), then the original answer is put back.
"""

from __future__ import annotations

import ast
import json
import queue
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = ["01_pretrained_scoring", "02_retrain_simpsons", "03_features_classic_ml", "04_photo_vs_drawing"]
CELL_TIMEOUT = 300  # seconds per run: notebook 04's trainings take under a minute, one function's substitutions less

# The kit's functions closest to an exercise (its old reference, its batch-level or settings-driven form, its
# neighbours in the same module): each must be among the candidates found and tried, so the test cannot pass by
# trying nothing. (freeze_all_but_last_blocks is no candidate for freeze_for_phase: it cannot take the test's
# `freeze_for_phase(base, backbone, 2, n_blocks=2)`, its third parameter being n_blocks.)
LOOK_ALIKES = {
    "top_k_with_threshold": {"helpers.scoring.top_labels"},
    "results_table": {"helpers.classic.results_table"},
    "build_head": {"helpers.heads.build_head"},
    "compile_with_label_smoothing": {"helpers.compiling.compile_model"},
    "held_out_scores": {"helpers.evaluation.accuracy_interval", "helpers.evaluation.accuracy_row"},
    "per_class_accuracy": {"helpers.evaluation.classification_table", "helpers.evaluation.accuracy"},
    "groups_on_both_sides": {"helpers.splits.split_summary", "helpers.splits.frame_number_groups"},
    "extract": {"helpers.features.extract_features", "helpers.pipeline.predict_images"},
    "label_from_name": {"helpers.sources.label_rule", "helpers.splits.frame_number"},
    "make_classifier": {"helpers.classic.candidates"},
    "choose_by_cv": {"helpers.classic.select_by_cv"},
    "build_small_cnn": {"helpers.scratch_models.small_cnn"},
    "comparison_table": {"helpers.approaches.comparison_table"},
}

# Modules whose functions start servers, install kernels or run commands: calling them with an exercise's
# arguments would have effects outside the kernel, and none of them computes an answer.
NOT_TRIED = {
    "helpers.__main__", "helpers.cli", "helpers.demo", "helpers.kernel", "helpers.lab_server", "helpers.prepare",
    "helpers.recipe_commands", "helpers.tensorboard_in_lab", "helpers.workshop",
}

# Run in the kernel: the public functions of every helpers module that could stand in for `target`: the
# same name, or a signature that accepts every call the exercise's tests make (`shapes`: the number of
# positional arguments and the keywords of each call); with no direct call to go by, the same number of
# required positional parameters. A function that cannot take a test's call raises there, so it cannot pass.
CANDIDATES = '''
def _kit_candidates(target, shapes, not_tried):
    import importlib, inspect, pkgutil
    import helpers

    def required(signature):
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return [p for p in signature.parameters.values() if p.kind in kinds and p.default is inspect.Parameter.empty]

    def accepts(signature):
        if not shapes:
            return len(required(signature)) == len(required(inspect.signature(target)))
        for positional, keywords in shapes:
            try:
                signature.bind(*[None] * positional, **dict.fromkeys(keywords))
            except TypeError:
                return False
        return True

    found = []
    for info in sorted(pkgutil.iter_modules(helpers.__path__), key=lambda info: info.name):
        name = f"helpers.{info.name}"
        if info.name.startswith("_") or name in not_tried:
            continue
        module = importlib.import_module(name)
        for attribute, value in sorted(vars(module).items()):
            if attribute.startswith("_") or not inspect.isfunction(value) or value.__module__ != name:
                continue
            try:
                signature = inspect.signature(value)
            except (TypeError, ValueError):
                continue
            if attribute == target.__name__ or accepts(signature):
                found.append(f"{name}.{attribute}")
    return found
'''


def call_shapes(sources: list[str], function: str) -> list[tuple[int, list[str]]]:
    """(positional arguments, keyword names) of every direct call of ``function`` in these cells."""
    shapes = set()
    for source in sources:
        for node in ast.walk(ast.parse(_python(source))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == function:
                if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
                    continue  # *args or **kwargs: the shape is not known
                shapes.add((len(node.args), tuple(sorted(k.arg for k in node.keywords))))
    return [(n, list(keywords)) for n, keywords in sorted(shapes)]


# Run in the kernel: each (candidate, edited answer cell), then every test cell, as cells of the notebook;
# (None or why the answer cell failed, per test None or its error, seconds) for each.
TRY = '''
def _kit_try(plan, tests):
    import sys, time
    shell = get_ipython()

    def run(source):
        # exec, not run_cell: IPython's formatted traceback of every failure would cost more than the cell
        try:
            exec(compile(shell.transform_cell(source), "<cell>", "exec"), shell.user_ns)
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # SystemExit too: a command's main() fails the exercise like anything else
            return f"{type(error).__name__}: {error}"[:300]
        return None

    report = []
    for candidate, source in plan:
        began = time.perf_counter()
        failure = run(source)
        outcomes = [] if failure else [run(test) for test in tests]
        report.append([failure, outcomes, time.perf_counter() - began])
        if "matplotlib.pyplot" in sys.modules:  # figures a plotting candidate drew: never shown, never kept
            sys.modules["matplotlib.pyplot"].close("all")
    return report
'''


class Kernel:
    """One notebook kernel: run code, say whether it raised and what it printed."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = CELL_TIMEOUT) -> tuple[str | None, str]:
        """(None or "Error: message", stdout) of running ``code``."""
        printed: list[str] = []
        error: list[str] = []

        def hook(message: dict) -> None:
            kind, content = message["msg_type"], message["content"]
            if kind == "stream" and content.get("name") == "stdout":
                printed.append(content["text"])
            elif kind == "error":
                error.append(f"{content['ename']}: {content['evalue']}"[:300])

        try:
            reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook, store_history=False)
        except (TimeoutError, queue.Empty):
            self.manager.interrupt_kernel()
            return f"TimeoutError: no reply within {timeout} s", "".join(printed)
        if reply["content"]["status"] != "ok":
            return (error[0] if error else reply["content"].get("ename", "error")), "".join(printed)
        return None, "".join(printed)

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def _python(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell defines or changes, names it reads from earlier cells). More is safe, less is not: a name
    counts as read unless the cell binds it first on an earlier line, or binds it in a function, lambda or
    comprehension of its own (parameters, loop variables)."""
    tree = ast.parse(_python(source))
    defined: set[str] = set()
    local: set[str] = set()
    first_store: dict[str, int] = {}
    first_load: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = node.args
            local |= {a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs}
            local |= {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
            if not isinstance(node, ast.Lambda):
                defined.add(node.name)
                local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        elif isinstance(node, ast.comprehension):
            local |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = (alias.asname or alias.name).split(".")[0]
                defined.add(name)
                first_store.setdefault(name, node.lineno)
        elif isinstance(node, ast.Name):
            line = node.lineno
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                defined.add(node.id)
                first_store[node.id] = min(first_store.get(node.id, line), line)
            else:
                first_load[node.id] = min(first_load.get(node.id, line), line)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            first_load[node.target.id] = min(first_load.get(node.target.id, node.lineno), node.lineno)  # x += 1 reads x
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and isinstance(node.ctx, ast.Store):
            base = node.value
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if isinstance(base, ast.Name):
                defined.add(base.id)  # `frame["x"] = ...`, `base.trainable = ...` change what `frame`, `base` hold
    used = {
        name for name, line in first_load.items()
        if name not in local and not (name in first_store and first_store[name] < line)
    }
    return defined, used


def _graded(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def exercises(notebook) -> list[dict]:
    """Each answer cell with the functions it defines and the test cells that check it (up to the next answer)."""
    code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    answers = [i for i in code if _graded(notebook.cells[i]).get("solution")]
    found = []
    for n, index in enumerate(answers):
        end = answers[n + 1] if n + 1 < len(answers) else len(notebook.cells)
        tests = [i for i in code if index < i < end and _graded(notebook.cells[i]).get("grade")]
        tree = ast.parse(_python(notebook.cells[index].source))
        functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
        found.append({"cell": index, "grade_id": _graded(notebook.cells[index])["grade_id"], "functions": functions,
                      "tests": tests})
    return found


def needed_cells(notebook, targets: set[int]) -> list[int]:
    """The code cells to run, in order: the targets and every earlier cell that defines a name a needed cell reads."""
    wanted: set[str] = set()
    needed = []
    for index in range(max(targets), -1, -1):
        cell = notebook.cells[index]
        if cell.cell_type != "code":
            continue
        defined, used = _names(cell.source)
        if index in targets or defined & wanted:
            needed.append(index)
            wanted |= used
    return needed[::-1]


def substituted(source: str, function: str, replacement: str) -> str:
    """The answer cell with the ``def function`` replaced by an import of ``replacement`` under its name."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = source.splitlines()
    module, _, name = replacement.rpartition(".")
    return "\n".join(lines[: first - 1] + [f"from {module} import {name} as {function}"] + lines[node.end_lineno :])


def test_substitution_replaces_only_the_def():
    source = "import numpy as np\n\n\ndef f(x):\n    return x\n\n\ndef g(y):\n    return f(y)\n"
    assert substituted(source, "f", "helpers.files.g") == (
        "import numpy as np\n\n\nfrom helpers.files import g as f\n\n\ndef g(y):\n    return f(y)"
    )


def test_call_shapes_are_read_from_the_tests():
    sources = ["f(1, 2, k=3)\nx = f(a, b)\ng(f)", "assert f(*args) and f(1, 2, k=0)"]
    assert call_shapes(sources, "f") == [(2, []), (2, ["k"])]


def test_needed_cells_follow_the_names_back():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in (
        "import numpy as np", "slow = train()", "frame = np.zeros(3)", "frame[0] = 1", "print(slow)",
        "def answer(x):\n    return x", "assert answer(frame).sum() == 1",
        "i = 3\nslow = [i for i in range(2)]", "ok = [answer(i) for i in range(3)]\nfor n in ok:\n    frame += n",
    )]
    assert needed_cells(notebook, {5, 6}) == [0, 2, 3, 5, 6]
    assert needed_cells(notebook, {5, 8}) == [0, 2, 3, 5, 8], "comprehension variables are the cell's own"


@pytest.fixture(scope="module")
def kernel_env(kit_settings, shared_data) -> dict[str, str]:
    import os

    return dict(
        os.environ, KIT_PROFILE="smoke", KIT_BACKBONE="mobilenet", KIT_ALPHA="0.75",
        KIT_CACHE_DIR=str(kit_settings.cache_dir), KIT_WEIGHTS_MIRROR=str(shared_data / "keras_home" / "models"),
        KIT_DATA_DIR=str(shared_data / "datasets"), TF_CPP_MIN_LOG_LEVEL="2",
    )


@pytest.fixture(scope="module")
def kernel(kernel_env, tmp_path_factory):
    """One kernel for every notebook (TensorFlow and the kit imported once); each notebook starts from an empty
    namespace and a fresh Keras session."""
    started = Kernel(kernel_env, tmp_path_factory.mktemp("notebooks"))
    yield started
    started.close()


@pytest.mark.integration
@pytest.mark.timeout(600)
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_helpers_function_passes_an_exercise(assignment, kernel, capsys):
    began = time.perf_counter()
    notebook = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", as_version=4)
    found = exercises(notebook)
    assert found, f"{assignment} has no answer cells"
    targets = {e["cell"] for e in found} | {t for e in found for t in e["tests"]}
    tried: list[str] = []
    passing: list[str] = []
    lookalikes: dict[str, list[str]] = {}
    costs: dict[str, float] = {}
    error, _ = kernel.run("%reset -f\nimport gc, keras\nkeras.backend.clear_session()\ngc.collect()")
    assert error is None, f"the kernel could not start a new notebook: {error}"
    kernel.run(CANDIDATES + TRY)
    for index in needed_cells(notebook, targets):
        error, _ = kernel.run(notebook.cells[index].source)
        assert error is None, (
            f"{assignment}: cell {index} ({_graded(notebook.cells[index]).get('grade_id', 'not graded')}) raised "
            f"with the solution in place, so the substitutions would prove nothing: {error}"
        )
    for exercise in found:
        answer = notebook.cells[exercise["cell"]].source
        for function in exercise["functions"]:
            shapes = call_shapes([notebook.cells[t].source for t in exercise["tests"]], function)
            error, printed = kernel.run(
                f"print(__import__('json').dumps(_kit_candidates({function}, {shapes!r}, {sorted(NOT_TRIED)!r})))"
            )
            assert error is None, f"finding the candidates for {function} failed: {error}"
            candidates = json.loads(printed.strip().splitlines()[-1])
            lookalikes[function] = candidates
            # Every substitution in one go inside the kernel (a round trip per cell would cost more than the cells).
            plan = [[candidate, substituted(answer, function, candidate)] for candidate in candidates]
            tests = [notebook.cells[test].source for test in exercise["tests"]]
            error, printed = kernel.run(f"print('KIT-RESULT', __import__('json').dumps(_kit_try({plan!r}, {tests!r})))")
            assert error is None, f"trying the candidates for {function} failed: {error}"
            results = json.loads(printed.rpartition("KIT-RESULT ")[2].splitlines()[0])
            for (candidate, _), (failure, outcomes, cost) in zip(plan, results):
                costs[f"{function} <- {candidate}"] = cost
                if failure is not None:  # cannot even stand in (import or definition failed): nothing to test
                    tried.append(f"cell {exercise['cell']} ({function}) <- {candidate}: not importable ({failure})")
                    continue
                tried.append(
                    f"cell {exercise['cell']} ({function}) <- {candidate}: "
                    + "; ".join(f"cell {t} fails ({o})" if o else f"cell {t} PASSES"
                                for t, o in zip(exercise["tests"], outcomes))
                )
                if any(outcome is None for outcome in outcomes):
                    passing.append(f"{function} <- {candidate}")
            error, _ = kernel.run(answer)  # the student's answer back, for the next exercise
            assert error is None, f"putting the answer of cell {exercise['cell']} back failed: {error}"
    seconds = time.perf_counter() - began
    with capsys.disabled():
        print(f"\n{assignment}: {len(tried)} substitutions in {seconds:.0f} s")
        for line in tried:
            print("  " + line)
        slowest = sorted(costs.items(), key=lambda item: -item[1])[:8]
        print("  slowest: " + ", ".join(f"{pair} {cost:.1f} s" for pair, cost in slowest))
    assert not passing, (
        f"{assignment}: these helpers functions pass an exercise's test cell(s), so a student could import the "
        f"answer: {passing}. Give the kit's function another contract (settings-driven, batch-level...), or delete it"
    )
    for function, expected in LOOK_ALIKES.items():
        if function in lookalikes:
            missing = expected - set(lookalikes[function])
            assert not missing, f"{function}: the look-alike(s) {sorted(missing)} were not tried; found {lookalikes[function]}"
    for exercise in found:
        assert exercise["tests"], f"answer cell {exercise['cell']} has no test cell after it"
        for function in exercise["functions"]:
            assert lookalikes.get(function), f"{function}: no helpers function was tried in its place"


# A submission that makes numpy's comparisons always agree, then a wrong answer: the hidden test compares
# through instructor_tools.grading.comparisons, which the kernel imported before the first cell.
PATCHING_ANSWER = (
    "import numpy as np\nnp.allclose = lambda *args, **kwargs: True\n"
    "def double(x):\n    ### BEGIN SOLUTION\n    return np.asarray(x) * 3\n    ### END SOLUTION"
)
COMPARED_TEST = (
    '"""Checks double."""\nimport sys\n'
    'assert "instructor_tools.grading.comparisons" in sys.modules, "the kernel did not import the comparisons at start"\n'
    "### BEGIN HIDDEN TESTS\nfrom instructor_tools.grading import comparisons\n"
    'assert comparisons.allclose(double([1.0, 2.0]), [2.0, 4.0]), "double must multiply by 2"\n### END HIDDEN TESTS'
)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_validators_kernel_has_the_comparisons_before_any_cell(tmp_path):
    """validate's kernel imports the comparisons at start: a patched np.allclose cannot make a wrong answer pass."""
    import shutil

    from instructor_tools.course import validation

    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    path = tmp_path / "compared.ipynb"
    nbformat.write(_compared_notebook(), path)
    result = validation.validate(path, profile="smoke")
    assert result.graded == {"test_double": (0.0, 1.0)}, result.summary()
    assert any("double must multiply by 2" in error for error in result.errors), result.errors


def test_a_graded_kernel_sees_only_the_comparisons_of_the_instructors_package():
    """The sandbox binds three files of instructor_tools read-only (to import the comparisons), never the package."""
    from instructor_tools.isolation import sandbox

    package = Path(sandbox.__file__).resolve().parents[1]
    mounts = sandbox._comparison_mounts()
    assert [target for target, _ in mounts] == [
        str(package / "__init__.py"), str(package / "grading" / "__init__.py"), str(package / "grading" / "comparisons.py")
    ]
    assert all(arguments[0] == "--ro-bind" and Path(arguments[1]).is_file() for _, arguments in mounts)
    bound = sandbox._python_paths()
    assert package not in bound and package.parent not in bound, (
        f"the kernel's Python paths bind the instructor's package or the folder around it: {bound}"
    )


def _compared_notebook(answer: str = PATCHING_ANSWER) -> nbformat.NotebookNode:
    """One exercise (by default an answer that patches np.allclose, then is wrong); its test compares through the
    comparisons."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    notebook.cells = [nbformat.v4.new_code_cell(answer), nbformat.v4.new_code_cell(COMPARED_TEST)]
    notebook.cells[0].metadata["nbgrader"] = {
        "grade": False, "solution": True, "locked": False, "grade_id": "double", "schema_version": 3,
    }
    notebook.cells[1].metadata["nbgrader"] = {
        "grade": True, "solution": False, "locked": True, "grade_id": "test_double", "points": 1, "schema_version": 3,
    }
    for index, cell in enumerate(notebook.cells):
        cell.id = f"compared-{index}"
    return notebook


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_sandboxed_grader_has_the_comparisons_before_any_cell(tmp_path):
    """In the grading sandbox the kernel imports the comparisons at start (three files bound): the patch is
    flagged, the wrong answer scores 0 whatever np.allclose says, and a right one (also patching) scores 1."""
    import shutil

    from instructor_tools.course import release
    from instructor_tools.grading import grader
    from instructor_tools.isolation import sandbox

    if not sandbox.probe().available:
        pytest.skip("no grading sandbox here (bubblewrap)")
    root = tmp_path / "course"
    (root / "solutions" / "compared").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    nbformat.write(_compared_notebook(), root / "solutions" / "compared" / "compared.ipynb")
    release.generate(root=root)
    answers = {"wrong": PATCHING_ANSWER, "right": PATCHING_ANSWER.replace("* 3", "* 2")}
    for student, answer in answers.items():
        submitted = root / "submitted" / student / "compared" / "compared.ipynb"
        submitted.parent.mkdir(parents=True)
        nbformat.write(_compared_notebook(answer), submitted)
    scores = {score.student: score for score in grader.autograde("compared", root=root, timeout=60, sandboxing="require")}
    for student, expected in (("wrong", 0.0), ("right", 1.0)):
        assert {grade_id: cell.score for grade_id, cell in scores[student].cells.items()} == {"test_double": expected}, (
            student, scores[student]
        )
        assert any("np.allclose" in flag for flag in scores[student].flags), scores[student].flags
