"""The classroom JupyterHub, end to end, on a real hub with real Unix accounts.

As root only (the hub creates accounts and runs each user's server as that user); skipped
with the reason elsewhere. The test creates an instructor and three students from a
roster, starts JupyterHub and configurable-http-proxy on 127.0.0.1 with the shipped
configuration (``classroom/``), and plays a class through the hub's REST API with each
user's own API token, calling the nbgrader server extensions' endpoints as JupyterLab's
Assignments tab and the formgrader do:

1. the instructor releases notebook 01 (formgrader API);
2. each student fetches it, answers it (right, half-right, blank) and submits it;
3. what students cannot read is checked as those Unix users: another student's home, the
   instructor's course folder, the exchange's inbound folder and another student's submission;
4. the instructor collects (formgrader API), autogrades with the kit's command in the
   course folder (``python -m instructor_tools autograde``), grades the written answer by hand
   (formgrader API) and releases feedback;
5. each student fetches their feedback, and every score (per cell, in the gradebook and
   in the feedback each student reads) is asserted exactly;
6. one Chromium check logs in as a student and sees notebook 01 in the Assignments tab.

The accounts, the hub, its proxy, every server and kernel are removed afterwards, also
when the test fails (a crashed run's leftovers are removed by the next run). Each
step's time is printed and written to ``tests/artifacts/hub_e2e_timings.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from helpers import kernel
from instructor_tools.isolation import cgroups
from instructor_tools.serving import hub

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ARTIFACTS = Path(os.environ.get("KIT_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
BASE = Path("/tmp/kit-hub-e2e")  # fixed, so that a crashed run's hub and accounts are found and removed
ASSIGNMENT = "01_pretrained_scoring"
COURSE = hub.COURSE_ID
INSTRUCTOR = "kit-instructor"
STUDENTS = {"kit-right": "right", "kit-half": "half", "kit-blank": "blank"}
USERS = [INSTRUCTOR, *STUDENTS]
# The half-right student solves these two exercises (and so passes these tests), not results_table.
HALF_SOLVED = {"preprocess", "top_k_with_threshold"}
HALF_PASSES = {"test_preprocess", "test_top_k_order", "test_top_k_threshold"}
HALF_WRITTEN = "ImageNet has no class for this."
MANUAL = {"right": 1.0, "half": 0.5}  # share of the written answer's points the instructor gives
RUNUSER = shutil.which("runuser") or "/usr/sbin/runuser"  # root's PATH may lack sbin


# --------------------------------------------------------------------------- fast checks (any user)


def _roster(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text(text)
    return path


def test_roster_is_read_with_defaults(tmp_path):
    members = hub.read_roster(_roster(tmp_path, "Username,Role,Name,Password\nteach,instructor,Ada,\nalice,,Alice A,\n\nbob,STUDENT,,long-enough-1\n"))
    assert members == [
        hub.Member("teach", "instructor", "Ada", ""),
        hub.Member("alice", "student", "Alice A", ""),
        hub.Member("bob", "student", "", "long-enough-1"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name\nalice\n", "header with at least a 'username'"),
        ("username,role\nAlice,student\nteach,instructor\n", "line 2: 'Alice' is not a valid Unix user name"),
        ("username,role\nteach,instructor\nalice,teacher\n", "line 3: role 'teacher'"),
        ("username,role\nteach,instructor\nalice,student\nalice,student\n", "line 4: 'alice' is already listed on line 3"),
        ("username,role\nalice,student\n", "needs one instructor"),
        ("username,role,name,password\nteach,instructor,,short\n", "8 characters"),
    ],
)
def test_bad_rosters_are_refused_with_the_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        hub.read_roster(_roster(tmp_path, text))


def test_missing_roster_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="roster.example.csv"):
        hub.read_roster(tmp_path / "nope.csv")


def test_limits_are_checked():
    assert cgroups.parse_memory("1.5GiB") == int(1.5 * 2**30)
    with pytest.raises(ValueError, match="3G, 512M"):
        cgroups.parse_memory("lots")
    with pytest.raises(ValueError, match="cpus must be positive"):
        cgroups.Limits(cpus=0)
    with pytest.raises(ValueError, match="at least 8"):
        cgroups.Limits(tasks=2)


def test_unreachable_folders_are_found(tmp_path):
    closed = tmp_path / "closed"
    (closed / "env" / "bin").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(closed, 0o700)
    try:
        assert closed in hub.unreachable_folders([closed / "env" / "bin" / "python"])
        os.chmod(closed, 0o711)
        assert closed not in hub.unreachable_folders([closed / "env" / "bin" / "python"])
    finally:
        os.chmod(closed, 0o700)


def test_the_instructors_package_is_closed_to_others_and_put_back(tmp_path):
    """hub start's part (root only): the folder goes to the instructors' group, mode 0750; stop's part puts
    the group and mode back, and a second start (after a crash) keeps the first record."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("groupadd") is None:
        pytest.skip("changing a folder's group and creating a group needs root on Linux (groupadd)")
    import grp

    package, state = tmp_path / "instructor_tools", tmp_path / "state"
    package.mkdir()
    state.mkdir()
    os.chmod(package, 0o755)
    before = os.stat(package)
    group_existed = hub.INSTRUCTORS_GROUP in {g.gr_name for g in grp.getgrall()}
    record = hub.close_instructor_package([], state, package=package)
    try:
        closed = os.stat(package)
        assert (oct(closed.st_mode & 0o7777), closed.st_gid) == ("0o750", grp.getgrnam(hub.INSTRUCTORS_GROUP).gr_gid)
        hub.close_instructor_package([], state, package=package)
        assert json.loads(record.read_text())["mode"] == 0o755, "the mode before the first start is kept"
    finally:
        reopened = hub.open_instructor_package(state)
    after = os.stat(package)
    assert reopened == package and (after.st_mode, after.st_gid) == (before.st_mode, before.st_gid)
    assert not record.exists() and hub.open_instructor_package(state) is None, "nothing left to put back"
    assert (hub.INSTRUCTORS_GROUP in {g.gr_name for g in grp.getgrall()}) == group_existed, "a group it created is removed"


def test_hub_start_refuses_without_root(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(hub.HubError, match="run it as root"):
        hub.start(_roster(tmp_path, "username,role\nteach,instructor\n"), state_dir=tmp_path / "state")


def test_a_student_over_the_memory_limit_is_stopped_alone():
    """A process in a user's control group meets that group's limit (root, writable cgroups only)."""
    if cgroups.detect() is None:
        pytest.skip("control groups are not writable here (not root, or no cgroup v1/v2 mount): limits cannot be enforced")
    group = cgroups.ControlGroup("kit-test-limit", parent="tl-workshop-hub-test")
    try:
        assert group.create(cgroups.Limits(memory_bytes=150 * 2**20, cpus=0.5, tasks=64)) == ["memory 150 MiB", "0.5 CPU", "64 tasks"]
        hog = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3); b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
        group.add(hog.pid)
        assert hog.pid in group.processes()
        assert hog.wait(timeout=60) == -9, "the kernel's OOM killer stops the process over its limit"
        usage = group.usage()
        assert usage["peak_mib"] is not None and usage["peak_mib"] <= 151
    finally:
        group.remove()
        for folder in {f.parent for f in group.paths().values()}:
            folder.rmdir()


def test_sizing_table_is_the_smaller_of_memory_and_cpu():
    from benchmarks import hub_load

    costs = {"a": {"peak_mib": 1000.0, "cpu_s": 60.0}, "b": {"peak_mib": 1920.0, "cpu_s": 120.0}}
    table = hub_load.sizing_table(costs, idle_server_mib=128.0)
    # 2 GiB per student (1920 + 128 MiB); 600 s / 120 CPU-s = 5 students per core
    assert "| 8 cores, 32 GiB | 15 | 40 | **15** |" in table
    assert "| 4 cores, 16 GiB | 7 | 20 | **7** |" in table
    assert any("heaviest notebook (b)" in line for line in table)


def test_zero_to_jupyterhub_values_match_the_kit():
    """classroom/z2jh: the chart values use the kit's settings, folders, limits and image (never deployed here)."""
    import yaml

    from helpers.settings import load_settings

    values = yaml.safe_load((hub.CLASSROOM / "z2jh" / "values.yaml").read_text())
    single = values["singleuser"]
    env = single["extraEnv"]
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("KIT_")}, config_file=os.devnull)
    assert (settings.profile, settings.backbone) == ("workshop", "mobilenet")
    for key in ("JUPYTER_CONFIG_PATH",):
        assert (ROOT / Path(env[key]).relative_to("/opt/tl-workshop")).is_dir(), f"{key} names a folder of the kit"
    assert single["memory"]["limit"] == hub.DEFAULT_LIMITS["student"]["memory"]
    assert single["cpu"]["limit"] == hub.DEFAULT_LIMITS["student"]["cpus"]
    mounts = {m["mountPath"] for m in single["storage"]["extraVolumeMounts"]}
    assert {env["KIT_EXCHANGE_ROOT"], str(Path(env["KIT_DATA_DIR"]).parent)} <= mounts
    assert "FROM " in (dockerfile := (hub.CLASSROOM / "z2jh" / "Dockerfile").read_text())
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which the project has"
    assert "--file environment.yml" in dockerfile and "helpers kernel" in dockerfile


def test_binder_setup_installs_the_kit():
    """binder/: the kit from pyproject.toml (no second list of packages), the kernel, the student's JupyterLab."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    binder = ROOT / "binder"
    assert [line for line in (binder / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")] == ["-e .[cpu]"]
    assert "cpu" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert (binder / "runtime.txt").read_text().strip() == "python-3.11"
    for script in ("postBuild", "start"):
        assert os.access(binder / script, os.X_OK), f"binder/{script} must be executable"
    assert "helpers kernel" in (binder / "postBuild").read_text()
    assert "helpers/jupyter/student" in (binder / "start").read_text() and (ROOT / "helpers" / "jupyter" / "student").is_dir()


# --------------------------------------------------------------------------- the end-to-end class (root)


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "the classroom hub runs on Linux (Unix accounts, PAM, control groups)"
    if os.geteuid() != 0:
        return "the hub test creates Unix accounts and runs servers as them: run it as root"
    if shutil.which("useradd") is None or shutil.which("runuser") is None:
        return "useradd/runuser are missing (package `passwd`/`util-linux`)"
    if not (Path(sys.executable).parent / "jupyterhub").exists():
        return "JupyterHub is not installed in this environment: pip install -e '.[instructor]'"
    if shutil.which("npm") is None and not (hub.CLASSROOM / "node_modules" / ".bin" / "configurable-http-proxy").exists():
        return "configurable-http-proxy is missing and npm is not installed to get it"
    if not SHARED_DATA.is_dir():
        return f"course data not found at {SHARED_DATA}: notebook 01 is graded with the real MobileNet weights"
    return None


class Timer:
    """Wall time of each step, printed and kept for the artifact."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Step:
            def __enter__(self):
                self.began = time.perf_counter()

            def __exit__(self, *exc):
                timer.steps[name] = round(time.perf_counter() - self.began, 1)
                print(f"[hub e2e] {name}: {timer.steps[name]:.1f} s", flush=True)

        return _Step()


def _request(url: str, token: str, method: str = "GET", body: Any = None, timeout: float = 120) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Authorization": f"token {token}", "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


class Classroom:
    """The running hub with every user's API token."""

    def __init__(self, running: hub.Hub, home: Path, timer: Timer) -> None:
        self.hub = running
        self.home = home
        self.timer = timer
        self.tokens: dict[str, str] = {}
        self.passwords: dict[str, str] = {}

    def user(self, name: str, path: str, method: str = "GET", body: Any = None, timeout: float = 180) -> Any:
        """A request to ``/user/<name>/<path>`` through the hub's proxy with that user's token."""
        return _request(f"{self.hub.url}user/{name}/{path}", self.tokens[name], method, body, timeout)

    def as_user(self, name: str, script: str, *args: str) -> Any:
        """Run Python as that Unix user (what their terminal or kernel could do); returns its JSON output."""
        result = subprocess.run(
            [RUNUSER, "-u", name, "--", sys.executable, "-c", script, *args], cwd=self.home / name,
            capture_output=True, text=True, timeout=60, env={"HOME": str(self.home / name), "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _grant_traverse(folders: list[Path]) -> dict[Path, int]:
    """Let other users enter ``folders`` (the environment's Python lives under one); returns the old modes."""
    modes = {folder: os.stat(folder).st_mode & 0o7777 for folder in folders}
    for folder, mode in modes.items():
        os.chmod(folder, mode | 0o001)
    return modes


def _cleanup(state: Path) -> None:
    """Stop any hub started from ``state`` and remove the test's accounts (a crashed run's too)."""
    if (state / "hub.json").is_file():
        hub.stop(state, remove_users=True)
    hub.remove_accounts(USERS)
    hub.open_instructor_package(state)  # a start that failed before its hub.json was written


@pytest.fixture(scope="module")
def classroom():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    foreign = [u for u in USERS if hub._account(u) is not None and not hub.created_by_hub(u)]
    if foreign:
        pytest.skip(f"accounts {foreign} exist and were not created by the kit: the test will not touch them")
    state = BASE / "state"
    _cleanup(state)
    shutil.rmtree(BASE, ignore_errors=True)
    BASE.mkdir(parents=True)
    os.chmod(BASE, 0o755)
    roster = BASE / "roster.csv"
    roster.write_text(
        "username,role,name,password\n"
        f"{INSTRUCTOR},instructor,Test Instructor,\n" + "".join(f"{s},student,,\n" for s in STUDENTS)
    )
    modes = _grant_traverse(hub.unreachable_folders())
    # hub start closes the project's answers to other users; the test puts their modes back afterwards
    modes |= {ROOT / name: os.stat(ROOT / name).st_mode & 0o7777 for name in hub.PRIVATE_PARTS if (ROOT / name).exists()}
    package = os.stat(hub.INSTRUCTOR_PACKAGE)  # hub stop must put its group and mode back (checked below)
    timer = Timer()
    uids: set[int] = set()
    root_pids: set[int] = set()
    try:
        models, datasets = SHARED_DATA / "keras_home" / "models", SHARED_DATA / "datasets"
        with timer("start hub (accounts, course, proxy)"):
            running = hub.start(
                roster, state_dir=state, exchange=BASE / "exchange", ip="127.0.0.1", port=_free_port(),
                home_base=BASE / "home", profile="smoke",
                kit={"KIT_WEIGHTS_MIRROR": str(models), "KIT_DATA_DIR": str(datasets),
                     "KIT_BACKBONE": "mobilenet", "KIT_ALPHA": "0.75"},
            )
        room = Classroom(running, BASE / "home", timer)
        uids = {hub._account(name).pw_uid for name in USERS}
        root_pids = {running.pid(), int((state / "jupyterhub-proxy.pid").read_text())}  # the hub and its proxy
        for line in (state / "passwords.csv").read_text().splitlines()[1:]:
            name, _, password = line.split(",")
            room.passwords[name] = password
        yield room
    finally:
        with timer("stop hub, remove accounts"):
            _cleanup(state)
        left = _processes_left(uids, root_pids)
        for folder, mode in modes.items():
            os.chmod(folder, mode)
        after = os.stat(hub.INSTRUCTOR_PACKAGE)
        if (after.st_mode, after.st_gid) != (package.st_mode, package.st_gid):
            os.chown(hub.INSTRUCTOR_PACKAGE, -1, package.st_gid)
            os.chmod(hub.INSTRUCTOR_PACKAGE, package.st_mode & 0o7777)
        shutil.rmtree(BASE, ignore_errors=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "hub_e2e_timings.json").write_text(json.dumps(timer.steps, indent=1) + "\n")
        print("[hub e2e] step times (s): " + json.dumps(timer.steps), flush=True)
    assert not left, f"processes left behind by the hub test: {left}"
    assert (oct(after.st_mode), after.st_gid) == (oct(package.st_mode), package.st_gid), "hub stop reopens instructor_tools"
    assert not [u for u in USERS if hub._account(u) is not None], "the test's accounts are removed"


def _processes_left(uids: set[int], pids: set[int]) -> list[str]:
    """Processes of the test's users, the hub and its proxy, or anything started from the test's folder, still alive."""
    import psutil

    left = []
    for process in psutil.process_iter(["pid", "uids", "cmdline", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(process.info["cmdline"] or [])
            mine = process.info["uids"] and process.info["uids"].real in uids
            if mine or process.info["pid"] in pids or str(BASE) in command:
                left.append(f"{process.info['pid']}: {command[:100]}")
        except psutil.Error:
            continue
    return left


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_servers(room: Classroom, names: list[str], timeout: float = 240) -> None:
    for name in names:
        room.tokens[name] = room.hub.api(f"users/{name}/tokens", "POST", {"note": "hub e2e test", "expires_in": 3600})["token"]
        room.hub.api(f"users/{name}/server", "POST")
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            if (room.hub.api(f"users/{name}")["servers"].get("") or {}).get("ready"):
                pending.discard(name)
        time.sleep(0.5)
    assert not pending, f"servers not ready after {timeout:.0f} s: {sorted(pending)}; see {room.hub.state_dir / 'jupyterhub.log'}"


def _release(room: Classroom) -> None:
    """The instructor releases notebook 01 from the formgrader (what its Release button calls)."""
    result = room.user(INSTRUCTOR, f"formgrader/api/assignment/{ASSIGNMENT}/release", "POST")
    assert result["success"], result.get("error") or result.get("log")


def _answers(kind: str, source: dict) -> dict[str, str]:
    """grade_id -> the source a student of this kind writes in each answer cell."""
    solutions = {}
    for cell in source["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            text = "".join(cell["source"])
            lines = [line for line in text.splitlines() if line.strip() not in {"### BEGIN SOLUTION", "### END SOLUTION"}]
            solutions[meta["grade_id"]] = "\n".join(lines)
    if kind == "right":
        return solutions
    if kind == "half":
        written = {g for g, c in _graded(source).items() if c["cell_type"] == "markdown"}
        return {g: s for g, s in solutions.items() if g in HALF_SOLVED} | {g: HALF_WRITTEN for g in written}
    return {}


def _graded(notebook: dict) -> dict[str, dict]:
    return {c["metadata"]["nbgrader"]["grade_id"]: c for c in notebook["cells"] if c["metadata"].get("nbgrader", {}).get("grade")}


def _feedback_scores(html: str) -> tuple[dict[str, float], float, float]:
    cells = {m.group(1): float(m.group(2)) for m in re.finditer(r'href="#([\w-]+)">[^<]*</a> \(Score: ([\d.]+) / [\d.]+\)', html)}
    total = re.search(r"\(Score: ([\d.]+) / ([\d.]+)\)</h4>", html)
    assert total, "the feedback names the notebook's total score"
    return cells, float(total.group(1)), float(total.group(2))


def _import_check(role: str) -> dict:
    """A notebook whose first graded cell passes when this role's kernel can (instructor) or cannot (student)
    import the instructor's package, and whose second always fails with what the first found, which proves
    the Validator ran both."""
    if role == "student":
        probe = ("try:\n    import instructor_tools.grading.grader\nexcept (ImportError, PermissionError) as error:\n"
                 "    found = f'{type(error).__name__}: {error}'\nelse:\n"
                 "    raise AssertionError('a student kernel imported instructor_tools')")
    else:
        probe = "import instructor_tools.grading.grader\n\nfound = instructor_tools.grading.grader.__file__"
    cells = [
        {"cell_type": "code", "source": source, "metadata": {"nbgrader": {
            "grade": True, "solution": False, "locked": True, "task": False, "points": 1, "grade_id": grade_id,
            "schema_version": 3}}, "outputs": [], "execution_count": None}
        for grade_id, source in (("probe", probe), ("report", "raise AssertionError(f'found: {found}')"))
    ]
    return {"cells": cells, "metadata": {"kernelspec": {"name": kernel.KERNEL_NAME, "display_name": "Python (tl-workshop)",
                                                        "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def _validate_import_check(room: Classroom, name: str, role: str) -> str:
    """The Validate button on :func:`_import_check` in ``name``'s server; returns what its kernel found."""
    room.user(name, "api/contents/kit-import-check", "PUT", {"type": "directory"})
    path = "kit-import-check/check.ipynb"
    room.user(name, f"api/contents/{path}", "PUT", {"type": "notebook", "format": "json", "content": _import_check(role)})
    result = room.user(name, "assignments/validate", "POST", {"path": path})
    assert result["success"], result["value"]
    failed = result["value"].get("failed", [])
    assert len(failed) == 1 and "found: " in failed[0]["raw_error"], f"{name}'s probe cell failed: {failed}"
    room.user(name, f"api/contents/{path}", "DELETE")
    message = re.sub(r"\x1b\[[0-9;]*m", "", failed[0]["raw_error"]).strip().splitlines()[-1]
    return message.rsplit("found: ", 1)[1].strip()


CANNOT_READ = r"""
import json, os, sys
outcome = {}
for path in sys.argv[1:]:
    try:
        os.listdir(path) if os.path.isdir(path) else open(path, "rb").read(1)
        outcome[path] = "read"
    except PermissionError:
        outcome[path] = "denied"
    except FileNotFoundError:
        outcome[path] = "missing"
print(json.dumps(outcome))
"""


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_class_on_the_hub_end_to_end(classroom: Classroom):
    room, timer = classroom, classroom.timer
    source = json.loads((ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").read_text())
    graded = _graded(source)
    points = {g: float(c["metadata"]["nbgrader"]["points"]) for g, c in graded.items()}
    written = sorted(g for g, c in graded.items() if c["cell_type"] == "markdown")
    tests = sorted(set(points) - set(written))
    assert written and tests, "notebook 01 has autograded tests and a written answer"

    with timer("start 4 single-user servers"):
        _start_servers(room, USERS)
    # every server runs the kit's named kernel by default, inside its user's control group
    for name in USERS:
        assert room.user(name, "api/kernelspecs")["default"] == kernel.KERNEL_NAME
    if cgroups.detect() is not None:
        usage = hub.status(room.hub.state_dir)["users"]
        assert all(usage[name].get("memory_mib") for name in USERS), f"each server is in its control group: {usage}"

    with timer("instructor_tools: a student's kernel cannot import it, the instructor's can (Validate button)"):
        found = _validate_import_check(room, "kit-half", "student")
        assert "Permission denied" in found, found
        assert _validate_import_check(room, INSTRUCTOR, "instructor").startswith(str(hub.INSTRUCTOR_PACKAGE)), \
            "the instructor's kernel imports the instructor's package from the project"
        assert room.as_user(INSTRUCTOR, "import json, instructor_tools.grading.grader as g; print(json.dumps(g.__file__))")

    with timer("instructor releases 01 (formgrader API)"):
        _release(room)

    with timer("3 students fetch, answer, submit (Assignments tab API)"):
        for student, kind in STUDENTS.items():
            listed = room.user(student, f"assignments?course_id={COURSE}")
            assert [a["assignment_id"] for a in listed["value"] if a["status"] == "released"] == [ASSIGNMENT]
            fetched = room.user(student, "assignments/fetch", "POST", {"course_id": COURSE, "assignment_id": ASSIGNMENT})
            assert any(a["assignment_id"] == ASSIGNMENT and a["status"] == "fetched" for a in fetched["value"]), fetched
            path = f"api/contents/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
            notebook = room.user(student, path)["content"]
            for cell in notebook["cells"]:
                grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
                answer = _answers(kind, source).get(grade_id)
                if answer is not None:
                    cell["source"] = answer
            room.user(student, path, "PUT", {"type": "notebook", "format": "json", "content": notebook})
            submitted = room.user(student, "assignments/submit", "POST", {"course_id": COURSE, "assignment_id": ASSIGNMENT})
            assert submitted.get("success", True) is not False, submitted
            assert any(a["status"] == "submitted" for a in submitted["value"]), submitted

    with timer("isolation checks as the students' Unix users"):
        inbound = BASE / "exchange" / COURSE / "inbound"
        submissions = {s: next(inbound.glob(f"{s}+{ASSIGNMENT}+*")) for s in STUDENTS}
        course = room.home / INSTRUCTOR / hub.COURSE_FOLDER
        for student in STUDENTS:
            others = [s for s in STUDENTS if s != student]
            targets = [
                room.home / others[0],  # another student's home
                room.home / others[0] / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                course,  # the instructor's course folder
                ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",  # the answers in the project the servers run from
                ROOT / ".git" / "HEAD",  # and in its history
                hub.INSTRUCTOR_PACKAGE / "grading" / "grader.py",  # the instructor's package (grading, tamper rules)
                course / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                course / "gradebook.db",
                inbound,  # the exchange's inbound (listing it would reveal the submissions)
                submissions[others[0]],  # another student's submission, by its full name
                submissions[others[0]] / f"{ASSIGNMENT}.ipynb",
            ]
            outcome = room.as_user(student, CANNOT_READ, *map(str, targets))
            assert set(outcome.values()) == {"denied"}, f"{student} could read: {outcome}"
            own = room.as_user(student, CANNOT_READ, str(submissions[student] / f"{ASSIGNMENT}.ipynb"))
            assert set(own.values()) == {"read"}, "a student can read their own submission"

    with timer("instructor collects (formgrader API)"):
        result = room.user(INSTRUCTOR, f"formgrader/api/assignment/{ASSIGNMENT}/collect", "POST")
        assert result["success"], result.get("error") or result.get("log")
        assert sorted(p.name for p in (course / "submitted").iterdir()) == sorted(STUDENTS)

    with timer("instructor autogrades 3 submissions (python -m instructor_tools autograde)"):
        home = room.home / INSTRUCTOR
        env = {
            "HOME": str(home), "USER": INSTRUCTOR, "LANG": "C.UTF-8",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "KIT_CACHE_DIR": str(home / ".cache" / "tl-workshop-kit"),
            **room.hub.settings["kit"],
        }
        graded_run = subprocess.run(
            [RUNUSER, "-u", INSTRUCTOR, "--", sys.executable, "-m", "instructor_tools", "autograde", ASSIGNMENT, "--jobs", "2"],
            cwd=course, env=env, capture_output=True, text=True, timeout=600,
        )
        assert graded_run.returncode == 0, graded_run.stdout + graded_run.stderr
        print(graded_run.stdout, flush=True)
        # the kit's autograde runs each submission's kernel in its sandbox, also as the (unprivileged) instructor
        assert "UNSANDBOXED" not in graded_run.stdout + graded_run.stderr, graded_run.stdout + graded_run.stderr

    auto_expected = {
        "right": {g: points[g] for g in tests},
        "half": {g: (points[g] if g in HALF_PASSES else 0.0) for g in tests},
        "blank": {g: 0.0 for g in tests},
    }
    with timer("manual grade of the written answer, feedback released (formgrader API)"):
        notebook_id = ASSIGNMENT
        rows = room.user(INSTRUCTOR, f"formgrader/api/submitted_notebooks/{ASSIGNMENT}/{notebook_id}")
        by_student = {row["student"]: row for row in rows}
        assert sorted(by_student) == sorted(STUDENTS)
        for student, kind in STUDENTS.items():
            grades = {g["name"]: g for g in room.user(INSTRUCTOR, f"formgrader/api/grades?submission_id={by_student[student]['id']}")}
            assert {g: grades[g]["auto_score"] for g in tests} == auto_expected[kind], f"{student} autograded"
            for grade_id in written:
                if kind == "blank":  # an untouched written answer is not sent to the instructor
                    assert not grades[grade_id]["needs_manual_grade"]
                    continue
                assert grades[grade_id]["needs_manual_grade"], f"{student}'s written answer waits for a manual grade"
                updated = room.user(INSTRUCTOR, f"formgrader/api/grade/{grades[grade_id]['id']}", "PUT",
                                    {"manual_score": MANUAL[kind] * points[grade_id]})
                assert updated["manual_score"] == MANUAL[kind] * points[grade_id]
        for action in ("generate_feedback", "release_feedback"):
            result = room.user(INSTRUCTOR, f"formgrader/api/assignment/{ASSIGNMENT}/{action}", "POST")
            assert result["success"], result.get("error") or result.get("log")

    expected_cells = {
        kind: auto_expected[kind] | {g: MANUAL.get(kind, 0.0) * points[g] for g in written} for kind in STUDENTS.values()
    }
    total = sum(points.values())
    summary = {s["student"]: s for s in room.user(INSTRUCTOR, f"formgrader/api/submissions/{ASSIGNMENT}")}
    for student, kind in STUDENTS.items():
        assert summary[student]["score"] == sum(expected_cells[kind].values()), f"{student} total in the gradebook"
        assert summary[student]["max_score"] == total

    with timer("3 students fetch their feedback"):
        for student, kind in STUDENTS.items():
            room.user(student, "assignments/fetch_feedback", "POST", {"course_id": COURSE, "assignment_id": ASSIGNMENT})
            folder = room.user(student, f"api/contents/{ASSIGNMENT}/feedback")["content"]
            assert len(folder) == 1, f"{student} gets exactly one feedback"
            page = room.user(student, "api/contents/" + urllib.parse.quote(f"{folder[0]['path']}/{ASSIGNMENT}.html"))
            cells, score, max_score = _feedback_scores(page["content"])
            assert cells == expected_cells[kind], f"{student}'s feedback, cell by cell"
            assert (score, max_score) == (sum(expected_cells[kind].values()), total)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.timeout(300)
def test_student_sees_notebook_01_in_the_assignments_tab(classroom: Classroom, tmp_path):
    """Chromium logs in as a student (with the first-login password) and opens the Assignments tab."""
    from test_browser import RequestLog, _wait, chromium_session

    room = classroom
    student = "kit-blank"
    with room.timer("browser: log in, Assignments tab shows 01"):
        if not (BASE / "exchange" / COURSE / "outbound" / ASSIGNMENT).is_dir():  # run on its own
            _start_servers(room, [INSTRUCTOR, student])
            _release(room)
        from selenium.webdriver.common.by import By

        with chromium_session(tmp_path / "profile") as driver:
            requests = RequestLog(driver)
            driver.get(room.hub.url + "hub/login")
            _wait(lambda: driver.find_element(By.ID, "username_input"), 60, "the hub's login form")
            driver.find_element(By.ID, "username_input").send_keys(student)
            driver.find_element(By.ID, "password_input").send_keys(room.passwords[student])
            driver.find_element(By.ID, "login_submit").click()
            _wait(lambda: "/hub/login" not in driver.current_url, 60, "the login to go through")
            driver.get(f"{room.hub.url}user/{student}/lab")
            menu = _wait(
                lambda: next(e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text == "Nbgrader"),
                120, "JupyterLab's Nbgrader menu",
            )
            menu.click()
            _wait(
                lambda: next(e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-itemLabel") if e.text == "Assignment List"),
                30, "the Assignment List menu item",
            ).click()
            _wait(lambda: ASSIGNMENT in driver.find_element(By.ID, "nbgrader-assignment-list").text
                  if driver.find_elements(By.ID, "nbgrader-assignment-list") else
                  ASSIGNMENT in driver.find_element(By.CSS_SELECTOR, ".lm-DockPanel").text,
                  90, f"{ASSIGNMENT} in the Assignments tab")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "hub_assignments_tab.png"))
            print(f"screenshot: {ARTIFACTS / 'hub_assignments_tab.png'}")
            assert requests.outside() == [], "the hub's pages load nothing from outside this machine"


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
def test_tensorboard_opens_through_the_hub(classroom: Classroom):
    """A student's TensorBoard (jupyter-server-proxy) answers at /user/<name>/tensorboard/, behind the hub's login."""
    from importlib.metadata import entry_points

    if "tensorboard" not in {e.name for e in entry_points(group="jupyter_serverproxy_servers")}:
        pytest.skip("the kit's TensorBoard proxy entry point is not installed (pip install -e . again)")
    room, student = classroom, "kit-half"
    with room.timer("TensorBoard through the hub (first start)"):
        if not (room.hub.api(f"users/{student}")["servers"].get("") or {}).get("ready"):
            _start_servers(room, [student])
        request = urllib.request.Request(f"{room.hub.url}user/{student}/tensorboard/", headers={"Authorization": f"token {room.tokens[student]}"})
        with urllib.request.urlopen(request, timeout=180) as response:
            page = response.read().decode(errors="replace")
        assert response.status == 200 and "tensorboard" in page.lower(), page[:300]
    with pytest.raises(urllib.error.HTTPError) as anonymous:  # without a login the hub answers, not TensorBoard
        opener = urllib.request.build_opener(_NoRedirect)
        opener.open(f"{room.hub.url}user/{student}/tensorboard/", timeout=30)
    assert anonymous.value.code in (302, 401, 403)
    # the other student's token does not open this student's TensorBoard
    other = "kit-right"
    room.tokens.setdefault(other, room.hub.api(f"users/{other}/tokens", "POST", {"note": "hub e2e test"})["token"])
    request = urllib.request.Request(f"{room.hub.url}user/{student}/tensorboard/", headers={"Authorization": f"token {room.tokens[other]}"})
    with pytest.raises(urllib.error.HTTPError) as foreign:
        urllib.request.build_opener(_NoRedirect).open(request, timeout=30)
    assert foreign.value.code in (302, 403, 404)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None
