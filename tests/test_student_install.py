"""The student bundle installs on its own: ``pip install -e .`` from the unzipped zip gives a working
student environment without the instructor's package.

The test builds the bundle, unzips it and creates a fresh virtual environment that sees the
kit's installed third-party packages (TensorFlow, nbgrader, JupyterLab...) through a path file,
but not the kit's own packages: the editable install of this checkout is a finder started by a
``.pth`` file of the kit's environment, which a plain path line does not run. It then installs
the unzipped kit into it with pip (``--no-deps``; offline when the kit's environment has the
build backend the zip's pyproject asks for) and checks, from that environment only:

- ``import instructor_tools`` fails and ``python -m helpers --help`` works;
- the ``tl-workshop`` kernel installs into a temporary Jupyter folder and runs that environment;
- nbgrader's Validator, configured as the student's server configures its Validate button,
  passes a solved toy assignment, fails the unsolved one with the test's message (in the kernel,
  ``instructor_tools`` cannot be imported either), and runs notebook 00 of the bundle top to
  bottom in the smoke profile without an error or a line on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from nbgrader.utils import compute_checksum

from instructor_tools.course import bundle

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Run in the new environment the way the Validate button does (nbgrader's ValidateAssignmentHandler):
# the Jupyter config path of the student's server, nbgrader's config loaded from it, one Validator per notebook.
VALIDATE = r"""
import json, os, sys
from helpers import lab_server
os.environ.update(lab_server.student_environment(dict(os.environ)))
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import jupyter_config_path
from nbgrader.apps import NbGrader
from nbgrader.validator import Validator

paths = jupyter_config_path()
paths.insert(0, os.getcwd())
app = NbGrader()
app.config_file_paths.append(paths)
app.load_config_file()
report = {"kernel": KernelSpecManager().get_kernel_spec("tl-workshop").argv, "results": {}}
for argument in sys.argv[1:]:
    validate_all, path = argument.split(":", 1)
    validator = Validator(config=app.config)
    validator.validate_all = validate_all == "all"  # every code cell, not only the graded ones
    report["results"][path] = validator.validate(path)
print(json.dumps(report))
"""


def _toy(folder: Path, answer: str) -> Path:
    """A released toy assignment: one answer cell and one locked visible test, as nbgrader generates them."""
    solution = nbformat.v4.new_code_cell(answer, metadata={"nbgrader": {
        "grade": False, "solution": True, "locked": False, "task": False, "grade_id": "double", "schema_version": 3}})
    test = nbformat.v4.new_code_cell(
        '"""double(x) returns twice x, in a kernel with the students\' library and without the instructor\'s."""\n'
        "from helpers.settings import load_settings\n\n"
        'assert load_settings().profile == "smoke", "the kernel runs the profile of the server that started it"\n'
        "assert double(2) == 4, \"double(2) should be 4: return 2 * x\"\n"
        "try:\n    import instructor_tools\nexcept ImportError:\n    pass\n"
        "else:\n    raise AssertionError(\"a student's kernel can import instructor_tools\")",
        metadata={"nbgrader": {"grade": True, "solution": False, "locked": True, "task": False, "points": 1,
                               "grade_id": "test_double", "schema_version": 3}},
    )
    test.metadata["nbgrader"]["checksum"] = compute_checksum(test)
    notebook = nbformat.v4.new_notebook(cells=[solution, test], metadata={
        "kernelspec": {"name": "tl-workshop", "display_name": "Python (tl-workshop)", "language": "python"}})
    folder.mkdir(parents=True)
    nbformat.write(notebook, folder / "toy.ipynb")
    return folder / "toy.ipynb"


def _build_isolation(folder: Path) -> list[str]:
    """``--no-build-isolation --no-index`` (offline) when this environment has the zip's build backend;
    otherwise pip fetches it into an isolated build environment."""
    from packaging.requirements import Requirement

    requires = bundle._load_toml((folder / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, requires):
        try:
            if metadata.version(requirement.name) not in requirement.specifier:
                return []
        except metadata.PackageNotFoundError:
            return []
    return ["--no-build-isolation", "--no-index"]


def test_the_unzipped_bundle_installs_and_validates_without_the_instructors_package(tmp_path):
    with zipfile.ZipFile(bundle.build_bundle(tmp_path / "student.zip")) as archive:
        archive.extractall(tmp_path / "unzipped")
    kit = tmp_path / "unzipped" / bundle.BUNDLE_NAME
    assert not (kit / "instructor_tools").exists()

    # A new environment that sees the kit's third-party packages but not the kit itself.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    shared = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "kit-environment.pth").write_text("".join(f"{path}\n" for path in shared))
    jupyter = tmp_path / "jupyter"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "JUPYTER", "KIT_", "KERAS_"))}
    env |= {
        "PATH": f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}", "JUPYTER_DATA_DIR": str(jupyter),
        "JUPYTER_PATH": str(jupyter), "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "KIT_PROFILE": "smoke", "KIT_BACKBONE": "mobilenet",
        "KIT_ALPHA": "0.75", "KIT_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2",
    }

    def run(*command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        # from tmp_path: neither the checkout nor the unzipped folder is the current directory
        return subprocess.run([str(c) for c in command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)

    imports = "import importlib.util as u; print([bool(u.find_spec(n)) for n in ('nbgrader', 'keras', 'helpers', 'instructor_tools')])"
    assert run(python, "-c", imports).stdout.strip() == "[True, True, False, False]", \
        "before the install the new environment sees the third-party packages and neither of the kit's"

    flags = _build_isolation(kit)
    install = run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", *flags, "-e", kit, timeout=300)
    if install.returncode != 0 and not flags and "Could not find a version" in install.stdout + install.stderr:
        pytest.skip(f"the zip's build backend is not installed here and pip cannot reach an index: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]

    found = run(python, "-c", "import helpers, importlib.util as u; print(helpers.__file__, bool(u.find_spec('instructor_tools')))")
    assert found.stdout.split() == [str(kit / "helpers" / "__init__.py"), "False"], found.stdout + found.stderr
    denied = run(python, "-c", "import instructor_tools")
    assert denied.returncode != 0 and "No module named 'instructor_tools'" in denied.stderr
    usage = run(python, "-m", "helpers", "--help")
    assert usage.returncode == 0 and "python -m helpers <command>" in usage.stdout, usage.stderr
    assert run(venv / "bin" / "tlkit", "--help").returncode == 0, "the students' command is installed"
    assert not (venv / "bin" / "tlkit-instructor").exists(), "no instructor's command pointing at a missing module"

    kernel = run(python, "-m", "helpers", "kernel", "--user")
    assert kernel.returncode == 0 and str(jupyter) in kernel.stdout, kernel.stdout + kernel.stderr
    assert json.loads((jupyter / "kernels" / "tl-workshop" / "kernel.json").read_text())["argv"][0] == str(python)

    solved = _toy(tmp_path / "solved", "def double(x):\n    return 2 * x")
    unsolved = _toy(tmp_path / "unsolved", "def double(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()")
    setup_check = kit / "notebooks" / "00_setup_check" / "00_setup_check.ipynb"
    validated = run(python, "-c", VALIDATE, f"graded:{solved}", f"graded:{unsolved}", f"all:{setup_check}", timeout=240)
    assert validated.returncode == 0, validated.stderr[-3000:]
    report = json.loads(validated.stdout.strip().splitlines()[-1])
    assert report["kernel"][0] == str(python), "the Validator's kernel is the new environment's Python"
    results = report["results"]
    assert results[str(solved)] == {}, f"the solved toy passes its visible test: {results[str(solved)]}"
    failed = results[str(unsolved)]["failed"]
    assert len(failed) == 1 and "NotImplementedError" in failed[0]["raw_error"], failed
    assert results[str(setup_check)] == {}, f"notebook 00 runs top to bottom without an error or stderr: {results[str(setup_check)]}"
