"""The student's and the instructor's JupyterLab servers, TensorBoard through jupyter-server-proxy,
and the student bundle. The slow tests start real servers on 127.0.0.1 and talk to them over HTTP;
the browser checks of the same servers are in tests/test_browser.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterator

import nbformat
import pytest

from helpers import kernel, lab_server, tensorboard_in_lab
from instructor_tools.course import bundle, course_folder
from instructor_tools.serving import instructor_lab

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- configuration (fast)


def test_student_config_turns_off_exactly_the_instructor_tools():
    server = json.loads((lab_server.STUDENT_CONFIG_DIR / "jupyter_server_config.json").read_text())
    assert server["ServerApp"]["jpserver_extensions"] == {name: False for name in lab_server.INSTRUCTOR_SERVER_EXTENSIONS}
    page = json.loads((lab_server.STUDENT_CONFIG_DIR / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] == {name: True for name in lab_server.INSTRUCTOR_PLUGINS}
    assert "@jupyter/nbgrader:validate-assignment" not in page["disabledExtensions"], "students keep Validate"
    from helpers import unmodified_notebooks

    assert server["ServerApp"]["contents_manager_class"] == lab_server.CONTENTS_MANAGER == unmodified_notebooks.CLASS_NAME
    assert f"--ServerApp.contents_manager_class={lab_server.CONTENTS_MANAGER}" in instructor_lab.instructor_command(1, True, ROOT)


def test_culling_options_and_server_environments():
    assert lab_server.culling_options(0) == []
    assert "--MappingKernelManager.cull_idle_timeout=90" in lab_server.culling_options(1.5)
    assert "--MappingKernelManager.cull_connected=False" in lab_server.culling_options(1.5)
    for bad in (-1, "ten", True):
        with pytest.raises(ValueError, match="cull_idle_minutes"):
            lab_server.culling_options(bad)
    student = lab_server.student_environment({"PATH": "/usr/bin", "JUPYTER_CONFIG_PATH": "/elsewhere"})
    assert student["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [
        str(lab_server.STUDENT_CONFIG_DIR), str(lab_server.COMMON_CONFIG_DIR), "/elsewhere"]
    instructor = instructor_lab.instructor_environment({"PATH": "/usr/bin", "JUPYTER_CONFIG_PATH": str(lab_server.STUDENT_CONFIG_DIR)})
    assert instructor["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent), "alembic must be found"
    assert instructor["JUPYTER_CONFIG_PATH"] == str(lab_server.COMMON_CONFIG_DIR), "no student config on the instructor's"
    command = lab_server.student_command(9999, True, ROOT / "notebooks", 20)
    assert "--ServerApp.ip=127.0.0.1" in command and "--MappingKernelManager.cull_idle_timeout=1200" in command


@pytest.mark.parametrize("folder", [
    lab_server.COMMON_CONFIG_DIR, ROOT / "classroom" / "jupyter" / "student", ROOT / "classroom" / "jupyter" / "instructor",
], ids=["laptop", "hub-student", "hub-instructor"])
def test_every_server_offers_the_kits_kernel_only_and_no_news_popup(folder):
    server = json.loads((folder / "jupyter_server_config.json").read_text())
    assert server["KernelSpecManager"] == {"allowed_kernelspecs": [kernel.KERNEL_NAME], "ensure_native_kernel": False}
    assert server["MappingKernelManager"]["default_kernel_name"] == kernel.KERNEL_NAME
    assert server["LabApp"]["news_url"] is None
    page = json.loads((folder / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"][lab_server.NEWS_PLUGIN] is True


def test_binder_serves_the_student_config_and_the_common_one():
    start = (ROOT / "binder" / "start").read_text()
    for folder in (lab_server.STUDENT_CONFIG_DIR, lab_server.COMMON_CONFIG_DIR):
        assert f"${{REPO_DIR:-$PWD}}/{folder.relative_to(ROOT).as_posix()}" in start, f"binder/start misses {folder}"


def test_only_graded_assignments_are_assignments(tmp_path):
    """Notebooks 00 and 05 are released to students but have nothing to grade: no gradebook entry, not in the
    formgrader."""
    assert instructor_lab.graded_assignments(ROOT) == [
        "01_pretrained_scoring", "02_retrain_simpsons", "03_features_classic_ml", "04_photo_vs_drawing"]
    root = _toy_course(tmp_path)
    assert instructor_lab.is_graded(root / "solutions" / "toy") and not instructor_lab.is_graded(root / "solutions" / "extra")
    assert instructor_lab.graded_assignments(root) == ["toy"]

    from nbgrader.apps.api import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    instructor_lab.list_graded_assignments_only()
    instructor_lab.list_graded_assignments_only()  # idempotent: nbgrader_config.py runs it on every formgrader request
    config = course_folder.load_config(root)
    api = NbGraderAPI(CourseDirectory(config=config), config=config)
    assert api.get_source_assignments() == {"toy"}


def test_prepare_exchange_creates_the_course_exchange(tmp_path):
    root = _toy_course(tmp_path)
    folder = instructor_lab.prepare_exchange(root)
    assert folder == root / "exchange" and folder.is_dir()
    assert folder.stat().st_mode & 0o777 == 0o777, "students submit into it, as nbgrader's release sets it"
    assert instructor_lab.prepare_exchange(root) == folder, "a second call finds it"
    (root / "nbgrader_config.py").write_text((root / "nbgrader_config.py").read_text()
                                             + "\nc.Exchange.root = '/proc/no-exchange-here'\n")
    with pytest.raises(OSError):
        instructor_lab.prepare_exchange(root)


def test_tensorboard_is_registered_with_jupyter_server_proxy():
    from importlib.metadata import entry_points

    found = {e.name: e.value for e in entry_points(group="jupyter_serverproxy_servers")}
    assert found.get("tensorboard") == "helpers.tensorboard_in_lab:server_proxy", "reinstall the kit: pip install -e ."
    config = tensorboard_in_lab.server_proxy()
    command = config["command"](6123)
    assert command[command.index("--host") + 1] == "127.0.0.1" and command[command.index("--port") + 1] == "6123"
    assert config["launcher_entry"]["title"] == "TensorBoard" and Path(config["launcher_entry"]["icon_path"]).is_file()


# --------------------------------------------------------------------------- the student bundle


def test_bundle_holds_what_students_need_and_nothing_else(tmp_path):
    path = bundle.build_bundle(tmp_path / "student.zip")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        readme = archive.read(f"{bundle.BUNDLE_NAME}/README.md").decode()
        texts = {n: archive.read(n).decode(errors="replace") for n in names if n.endswith((".ipynb", ".py", ".toml", ".yml", ".json", ".md"))}
    assert {n.split("/")[0] for n in names} == {bundle.BUNDLE_NAME}, "one folder, named like the zip"
    top = {n.split("/")[1] for n in names}
    assert top == {"notebooks", "helpers", "README.md", "LICENSE", *bundle.ENVIRONMENT_FILES}, top
    released = {p.relative_to(ROOT).as_posix() for p in (ROOT / "notebooks").glob("*/*.ipynb")}
    assert {n.split("/", 1)[1] for n in names if n.endswith(".ipynb")} == released
    students_library = {p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("*.py") if "__pycache__" not in p.parts}
    assert students_library <= {n.split("/", 1)[1] for n in names}, "the whole students' library"
    for name, text in texts.items():
        for marker in bundle.FORBIDDEN_MARKERS:
            assert marker not in text, f"{name} holds {marker!r}"
    leaked = [n for n in names if re.search(
        r"instructor_tools|solutions/|/nbgrader_config\.py$|gradebook|submitted/|autograded/|feedback/|tests/|__pycache__|\.egg-info|"
        r"^[^/]*/(classroom|benchmarks|slides|docs|Makefile)", n)]
    # the student's server's own nbgrader config (its Validate button's timeouts) is the one allowed
    assert leaked == [f"{bundle.BUNDLE_NAME}/helpers/jupyter/student/nbgrader_config.py"], leaked
    assert not [n for n, text in texts.items() if re.search(r"^\s*(from|import) instructor_tools", text, re.M)], \
        "nothing in the zip imports the instructor's package"
    assert "python -m helpers workshop" in readme and 'pip install -e ".[cpu]"' in readme
    assert list((tmp_path).iterdir()) == [path], "no temporary file is left beside the zip"


def _toml(text: str) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads(text)


def test_the_bundles_environment_files_stay_in_step_with_the_project(tmp_path):
    """The zip's pyproject.toml is the project's cut to the students' library: same dependencies and
    cpu/gpu/export extras, helpers only (no instructor's script, extra or package); its environment.yml
    keeps exactly the pip lines of the dependencies and the cpu extra."""
    with zipfile.ZipFile(bundle.build_bundle(tmp_path / "student.zip")) as archive:
        student = _toml(archive.read(f"{bundle.BUNDLE_NAME}/pyproject.toml").decode())
        environment = archive.read(f"{bundle.BUNDLE_NAME}/environment.yml").decode()
    project = _toml((ROOT / "pyproject.toml").read_text())
    mine, theirs = student["project"], project["project"]
    assert student["build-system"] == project["build-system"]
    for key in ("name", "version", "requires-python", "dependencies", "readme", "license"):
        assert mine[key] == theirs[key], key
    assert mine["optional-dependencies"] == {e: theirs["optional-dependencies"][e] for e in ("cpu", "gpu", "export")}
    assert mine["scripts"] == {"tlkit": theirs["scripts"]["tlkit"]}, "no tlkit-instructor pointing at a missing module"
    assert mine["entry-points"] == theirs["entry-points"], "TensorBoard's Launcher tile is the students' library's"
    assert student["tool"]["setuptools"] == {
        "packages": {"find": {"include": ["helpers*"]}},
        "package-data": {"helpers": project["tool"]["setuptools"]["package-data"]["helpers"]},
    }
    assert "instructor" not in json.dumps(student), "nothing of the instructor's package or extra"

    import yaml
    from packaging.requirements import Requirement

    pip = next(item["pip"] for item in yaml.safe_load(environment)["dependencies"] if isinstance(item, dict))
    wanted = theirs["dependencies"] + theirs["optional-dependencies"]["cpu"]
    assert sorted(str(Requirement(line)) for line in pip if not line.startswith("-e")) == sorted(str(Requirement(r)) for r in wanted)
    assert "-e ." in pip and not re.search(r"instructor_tools|jupyterhub|pytest|make setup", environment), environment


def test_the_bundle_refuses_a_project_without_the_students_extras(tmp_path):
    text = (ROOT / "pyproject.toml").read_text().replace("\nexport = [", "\nexported = [")
    with pytest.raises(ValueError, match=r"lacks the extras \['export'\]"):
        bundle.student_pyproject(text)
    with pytest.raises(ValueError, match="no \\[project\\] table"):
        bundle.student_pyproject("[tool.x]\na = 1\n")


def test_bundle_refuses_a_release_with_a_solution(tmp_path):
    root = tmp_path / "course"
    shutil.copytree(ROOT / "helpers", root / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "notebooks" / "x").mkdir(parents=True)
    leaked = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    nbformat.write(leaked, root / "notebooks" / "x" / "x.ipynb")
    with pytest.raises(ValueError, match="refusing to bundle"):
        bundle.build_bundle(tmp_path / "out.zip", root=root)
    assert not (tmp_path / "out.zip").exists()


# --------------------------------------------------------------------------- real servers (slow)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(command: list[str], env: dict[str, str], cwd: Path, work: Path, timeout: float = 120) -> Iterator[str]:
    """Run a Jupyter server command with a token on a free port; yield its base URL; stop it (and its kernels)."""
    token = secrets.token_hex(16)
    port = int(next(a.split("=")[1] for a in command if a.startswith("--ServerApp.port=")))
    env = env | {
        "JUPYTER_TOKEN": token,
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"),
        "IPYTHONDIR": str(work / "ipython"),
    }
    log_path = work / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command + ["--ServerApp.port_retries=0"],
                                   cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer from {base}:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield f"{base}|{token}|{log_path}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # a kernel or TensorBoard left behind by a crash
        process.wait(timeout=10)


def http(url: str, token: str, method: str = "GET", data: bytes | None = None, timeout: float = 30) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def _student_root(tmp_path: Path) -> Path:
    root = tmp_path / "notebooks"
    (root / "02_retrain_simpsons").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "02_retrain_simpsons" / "02_retrain_simpsons.ipynb", root / "02_retrain_simpsons")
    return root


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_student_server_has_no_instructor_tools_and_culls_idle_kernels(tmp_path):
    """(TensorBoard through this server is opened in the browser check, tests/test_browser_servers.py.)"""
    root = _student_root(tmp_path)
    port = _free_port()
    command = lab_server.student_command(port, True, root, cull_idle_minutes=0.1)  # 6 s
    with running_server(command, lab_server.student_environment(), ROOT, tmp_path) as server:
        base, token, log = server.split("|")
        status, page = http(f"{base}/lab", token)
        assert status == 200
        disabled = json.loads(re.search(r'id="jupyter-config-data"[^>]*>(.*?)</script>', page, re.S).group(1))["disabledExtensions"]
        assert set(lab_server.INSTRUCTOR_PLUGINS) <= set(disabled)
        assert "@jupyter/nbgrader:validate-assignment" not in disabled
        assert lab_server.NEWS_PLUGIN in disabled, "no 'official Jupyter news?' pop-up in a classroom"
        assert http(f"{base}/formgrader", token)[0] == 404, "the student's server must not serve the formgrader"
        specs = json.loads(http(f"{base}/api/kernelspecs", token)[1])
        assert (specs["default"], list(specs["kernelspecs"])) == (kernel.KERNEL_NAME, [kernel.KERNEL_NAME]), specs

        # a released notebook is served with its kernel's full language_info (JupyterLab then leaves it unmodified)
        from helpers.unmodified_notebooks import kernel_language_info

        model = json.loads(http(f"{base}/api/contents/02_retrain_simpsons/02_retrain_simpsons.ipynb", token)[1])
        assert model["content"]["metadata"]["language_info"] == kernel_language_info()
        on_disk = json.loads((root / "02_retrain_simpsons" / "02_retrain_simpsons.ipynb").read_text())
        assert on_disk["metadata"]["language_info"] == {"name": "python"}, "reading must not write the file"
        assert http(f"{base}/assignments", token)[0] == 404 and http(f"{base}/courses", token)[0] == 404

        # an idle kernel with no tab open is shut down
        status, body = http(f"{base}/api/kernels", token, "POST", b"{}")
        assert status == 201, body
        kernel_id = json.loads(body)["id"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(k["id"] == kernel_id for k in json.loads(http(f"{base}/api/kernels", token)[1])):
            time.sleep(2)
        assert all(k["id"] != kernel_id for k in json.loads(http(f"{base}/api/kernels", token)[1])), "idle kernel not culled"

        text = Path(log).read_text()
    assert "The exchange directory does not exist" not in text and "Error fetching courses" not in text, text[-2000:]


def _toy_course(tmp_path: Path) -> Path:
    root = tmp_path / "course"
    (root / "solutions" / "toy").mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copy(ROOT / "solutions" / "header.ipynb", root / "solutions")
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
    answer = nbformat.v4.new_code_cell("def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION")
    answer.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False, "grade_id": "add", "schema_version": 3}
    test = nbformat.v4.new_code_cell('"""Checks add."""\nassert add(1, 2) == 3, "add(1, 2) should be 3"')
    test.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "test_add", "points": 1,
                                 "schema_version": 3}
    notebook.cells = [nbformat.v4.new_markdown_cell("# Toy"), answer, test]
    nbformat.write(notebook, root / "solutions" / "toy" / "toy.ipynb")
    # an ungraded notebook released from solutions/ (like notebook 05): no assignment
    (root / "solutions" / "extra").mkdir()
    extra = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Explore"), nbformat.v4.new_code_cell("x = 1")])
    extra.metadata = notebook.metadata
    nbformat.write(extra, root / "solutions" / "extra" / "extra.ipynb")
    return root


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_instructor_server_formgrader_works_on_a_fresh_course_without_tools_on_path(tmp_path):
    from nbgrader.api import Gradebook

    root = _toy_course(tmp_path)
    db_url = f"sqlite:///{root / 'gradebook.db'}"
    with course_folder.kernel_environment(course_folder.tools_on_path()), Gradebook(db_url, "tl-workshop") as gradebook:
        gradebook.add_assignment("extra")  # recorded by an earlier kit, before ungraded notebooks were left out
    bare = {k: v for k, v in os.environ.items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}
    process = subprocess.run(  # as a user would, with the environment not activated
        [sys.executable, "-c", "from instructor_tools.serving import instructor_lab; print(instructor_lab.prepare_gradebook(%r))" % str(root)],
        env=bare, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert "['toy']" in process.stdout and (root / "gradebook.db").is_file()
    with Gradebook(db_url) as gradebook:
        assert [a.name for a in gradebook.assignments] == ["toy"], "the ungraded 'extra' leaves the gradebook"
    assert not (root / "notebooks").exists(), "recording the assignment must not write a release"
    instructor_lab.prepare_exchange(root)
    port = _free_port()
    with running_server(instructor_lab.instructor_command(port, True, root), instructor_lab.instructor_environment(bare), root, tmp_path) as server:
        base, token, log = server.split("|")
        status, page = http(f"{base}/formgrader", token)
        assert status == 200 and "formgrader" in page.lower()
        assert 'id="warning-exchange"' not in page, "the formgrader warns that the exchange folder is missing"
        status, body = http(f"{base}/formgrader/api/assignments", token)
        assert status == 200, body
        assert [a["name"] for a in json.loads(body)] == ["toy"], Path(log).read_text()[-3000:]
        specs = json.loads(http(f"{base}/api/kernelspecs", token)[1])
        assert (specs["default"], list(specs["kernelspecs"])) == (kernel.KERNEL_NAME, [kernel.KERNEL_NAME])


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bundle_readme_commands_work_from_the_unzipped_bundle(tmp_path, kit_settings):
    """The student README's two commands, run from the unzipped bundle: its pyproject installs (pip resolves
    the kit's metadata from the bundle), and its workshop command serves the bundle's notebooks to a
    student's JupyterLab. This environment stands in for the `.venv` the first command creates."""
    with zipfile.ZipFile(bundle.build_bundle(tmp_path / "student.zip")) as archive:
        archive.extractall(tmp_path / "unzipped")
    folder = tmp_path / "unzipped" / bundle.BUNDLE_NAME
    readme = (folder / "README.md").read_text()
    commands = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert commands == [
        'python3 -m venv .venv && .venv/bin/python -m pip install -e ".[cpu]"',
        ".venv/bin/python -m helpers workshop",
    ]

    # 1. the install: pip builds the kit's metadata from the bundle and resolves the cpu extra
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "-e", ".[cpu]"],
                             cwd=folder, capture_output=True, text=True, timeout=300)
    if install.returncode != 0 and re.search(r"(?i)connection|network|resolve host|no matching distribution", install.stderr):
        pytest.skip(f"pip cannot reach a package index to build the bundle's metadata: {install.stderr[-300:]}")
    assert install.returncode == 0 and "Would install tl-workshop-helpers" in install.stdout, install.stderr[-2000:]

    # 2. the workshop, from the bundle's own helpers package
    port, token = _free_port(), "bundle-test-token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")} | {
        "PYTHONPATH": str(folder), "JUPYTER_TOKEN": token, "KIT_BACKBONE": "mobilenet", "KIT_ALPHA": "0.75",
        "KIT_PROFILE": "smoke", "KIT_CACHE_DIR": str(tmp_path / "cache"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    if kit_settings.weights_mirror:
        env |= {"KIT_WEIGHTS_MIRROR": str(kit_settings.weights_mirror), "KIT_DATA_DIR": str(kit_settings.data_dir)}
    log = tmp_path / "workshop.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "helpers", "workshop", "--headless", "--offline", "--port", str(port)],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        listing = None
        deadline = time.monotonic() + 300
        while listing is None and time.monotonic() < deadline and process.poll() is None:
            status, body = (0, "")
            with contextlib.suppress(OSError):
                status, body = http(f"http://127.0.0.1:{port}/api/contents", token, timeout=5)
            if status == 200:
                listing = {item["name"] for item in json.loads(body)["content"]}
            else:
                time.sleep(1)
        text = log.read_text()
        assert listing is not None, f"the bundle's workshop command did not serve JupyterLab:\n{text[-3000:]}"
        assert listing == {p.name for p in (folder / "notebooks").iterdir()}
        assert f"Launching JupyterLab on {folder / 'notebooks'}" in text, "the bundle must serve its own notebooks"
        assert http(f"http://127.0.0.1:{port}/formgrader", token)[0] == 404, "a student's server has no formgrader"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
