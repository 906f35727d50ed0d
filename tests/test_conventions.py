"""Project conventions a Python user expects: the kit speaks of its own files only, a licence, declared dependencies."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "helpers").rglob("*.py"), *(ROOT / "instructor_tools").rglob("*.py"), *(ROOT / "tests").glob("*.py"),
                  *(ROOT / "benchmarks").glob("*.py")])


def test_no_source_points_at_the_documents_the_kit_was_modelled_on():
    """Docstrings and tests describe a source ("the Dataiku lab's recipe") instead of a path outside the repository."""
    marker = "shared/" + "reference"  # split, so this file does not match itself
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SOURCES
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if marker in line
    ]
    assert not offenders, f"references outside the repository: {offenders}; describe the source instead of its path."


def _pyproject() -> dict:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_licence_file_matches_pyproject():
    licence = _pyproject()["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert licence == "MIT" and text.startswith("MIT License"), "LICENSE and pyproject's license must name the same licence"


# Imported only behind a clear "pip install ..." message, for an optional feature.
OPTIONAL_IMPORTS = {"umap": "umap-learn (UMAP maps in notebook 03)", "pyarrow": "pyarrow (Parquet output of extract)"}


def _imported_packages(paths) -> dict[str, str]:
    """Top-level names of third-party packages imported anywhere in ``paths`` (functions included)."""
    import ast
    import sys

    found: dict[str, str] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                local = (ROOT / "tests" / f"{top}.py").is_file()  # a support module beside the tests
                if top not in sys.stdlib_module_names and top not in {"helpers", "instructor_tools", "benchmarks", "conftest"} and not local:
                    found.setdefault(top, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_directly_imported_package_is_declared():
    """The kit imports nothing that pyproject.toml leaves to chance (a transitive dependency may vanish)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    project = _pyproject()["project"]
    declared = {Requirement(line).name.lower().replace("_", "-") for line in project["dependencies"]}
    declared |= {Requirement(line).name.lower() for lines in project["optional-dependencies"].values() for line in lines}
    distributions = importlib.metadata.packages_distributions()
    paths = [*(ROOT / "helpers").rglob("*.py"), *(ROOT / "instructor_tools").rglob("*.py"), ROOT / "nbgrader_config.py",
             *(ROOT / "tests").glob("*.py")]
    missing = []
    for name, where in sorted(_imported_packages(paths).items()):
        if name in OPTIONAL_IMPORTS or name.startswith("test_"):
            continue
        # Not installed here (a marker such as python_version < '3.11'): the import name is the distribution's.
        owners = {d.lower().replace("_", "-") for d in distributions.get(name, [name])}
        if not owners & declared:
            missing.append(f"{name} ({where}; from {sorted(owners) or 'no installed distribution'})")
    assert not missing, f"imported but not declared in pyproject.toml (and environment.yml): {missing}"


def test_switching_tensorflow_flavour_removes_the_other_one_first(tmp_path):
    """`make setup TF_EXTRA=gpu` on a CPU environment uninstalls tensorflow-cpu before installing tensorflow."""
    import platform
    import shutil
    import subprocess

    if shutil.which("make") is None:
        import pytest

        pytest.skip("make is not installed")
    venv = tmp_path / "venv"

    def planned(extra: str) -> list[str]:
        result = subprocess.run(
            ["make", "-n", "setup", f"TF_EXTRA={extra}", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    gpu = planned("gpu")
    uninstall = next(i for i, line in enumerate(gpu) if "pip uninstall" in line)
    install = next(i for i, line in enumerate(gpu) if 'install --quiet -e ".[gpu,dev,instructor]"' in line)
    assert "tensorflow-cpu" in gpu[uninstall] and uninstall < install
    cpu = planned("cpu")
    if (platform.system(), platform.machine()) == ("Linux", "x86_64"):
        assert any("pip uninstall --quiet --yes tensorflow " in line for line in cpu), cpu
    else:
        assert not any("pip uninstall" in line for line in cpu), "elsewhere the cpu extra is plain tensorflow"


# Modules whose every public helper says where a student meets it ("Taught in notebook 02,
# section 3", "Used by notebook 04, section 2", or where it serves when no notebook calls it):
# every student-facing module.
TEACHING_MODULES = (
    "heads", "freezing", "compiling", "callbacks", "retraining", "saved_models", "scratch_models", "approaches",
    "sample_efficiency", "backbones", "classic", "datasets", "evaluation", "explore", "features", "gradcam",
    "pipeline", "plots", "recipes", "scan", "scoring", "session", "sources", "splits", "uploads",
    "lr_finder", "top_losses", "export",
)
# The students' library's own plumbing (commands, servers, caches): outside that rule. The instructor's
# tools are another package, instructor_tools.
TOOLING_MODULES = (
    "timing", "lab_server", "kernel", "unmodified_notebooks", "workshop",
    "cli", "files", "clean_outputs", "tensorboard_in_lab", "weights", "download", "device", "settings", "prepare",
    "recipe_commands", "progress", "demo", "private_submissions",
)


def test_every_module_is_either_student_facing_or_tooling():
    modules = {path.stem for path in (ROOT / "helpers").glob("*.py")} - {"__init__", "__main__"}
    listed = set(TEACHING_MODULES) | set(TOOLING_MODULES)
    assert not set(TEACHING_MODULES) & set(TOOLING_MODULES), "a module is either student-facing or tooling"
    assert modules == listed, (
        f"add {sorted(modules - listed)} to TEACHING_MODULES (students call it) or TOOLING_MODULES, "
        f"and remove {sorted(listed - modules)}."
    )


def test_every_public_helper_of_the_teaching_modules_names_its_notebook():
    import ast
    import re

    silent = []
    for module in TEACHING_MODULES:
        tree = ast.parse((ROOT / "helpers" / f"{module}.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if not re.search(r"notebooks? 0\d", ast.get_docstring(node) or ""):
                    silent.append(f"{module}.{node.name}")
    assert not silent, f"say in the docstring which notebook (and section) teaches or uses each of {silent}."


# A function longer than this is split where a part has a name a reader would look for.
LONGEST_FUNCTION = 80
# None today: a function that must stay long says why here, with its path and name ("helpers/x.py:f").
LONG_FUNCTIONS_ALLOWED: tuple[str, ...] = ()


def _long_functions(paths, root) -> dict[str, int]:
    """``path:name`` -> lines from ``def`` to the last line (docstring included) of every function over the limit."""
    import ast

    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    found[f"{path.relative_to(root).as_posix()}:{node.name}"] = length
    return found


def test_no_function_is_longer_than_80_lines():
    paths = sorted([*(ROOT / "helpers").rglob("*.py"), *(ROOT / "instructor_tools").rglob("*.py")])
    too_long = {name: n for name, n in _long_functions(paths, ROOT).items() if name not in LONG_FUNCTIONS_ALLOWED}
    assert not too_long, (
        "functions over 80 lines (def to last line): "
        + ", ".join(f"{name} ({n} lines)" for name, n in sorted(too_long.items()))
        + "; split each into parts with names a reader would look for (reading, checking, writing, reporting...)."
    )


def test_the_length_check_counts_from_def_to_the_last_line(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(LONGEST_FUNCTION - 2))
    source = tmp_path / "module.py"
    source.write_text(f"@staticmethod\ndef fits():\n    '''Doc.'''\n{body}\n\n\ndef too_long():\n    '''Doc.'''\n{body}\n"
                      "    return None\n")
    assert _long_functions([source], tmp_path) == {"module.py:too_long": LONGEST_FUNCTION + 1}
