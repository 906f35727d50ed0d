"""The sandbox's command line and limits, without starting a kernel (fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from instructor_tools.isolation import sandbox

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def box(tmp_path, monkeypatch):
    submission = tmp_path / "submitted" / "ana" / "01"
    submission.mkdir(parents=True)
    (submission / "01.ipynb").write_text("{}")
    (submission / "escape").symlink_to("/etc")
    available = sandbox.Probe(True, "", "/usr/bin/bwrap", "rlimit")
    monkeypatch.setattr(sandbox, "probe", lambda: available)
    monkeypatch.setenv("SECRET_TOKEN", "do-not-pass")
    monkeypatch.setenv("KIT_PROFILE", "grading")
    made = sandbox.prepare(submission, limits=sandbox.Limits(memory_mb=700, processes=99, disk_mb=50))
    yield made
    made.close()
    assert not made.scratch.exists(), "close() removes the private folder"


def _binds(command: list[str]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for index, word in enumerate(command):
        if word in {"--ro-bind", "--bind", "--ro-bind-try"}:
            found.setdefault(word, []).append((command[index + 1], command[index + 2]))
    return found


def test_the_private_copy_has_no_links(box):
    assert (box.submission / "01.ipynb").is_file()
    assert not (box.submission / "escape").exists(), "a link in a submission could point anywhere"
    assert oct(box.scratch.stat().st_mode & 0o777) == "0o700"


def test_the_kernel_sees_the_environment_read_only_and_no_course_folder(box):
    command = box.wrap([sys.executable, "-m", "ipykernel_launcher", "-f", str(box.ipc / "kernel.json")])
    binds = _binds(command)
    writable = [target for _, target in binds.get("--bind", [])]
    assert writable == [str(box.ipc)], "only the socket folder is shared writable"
    read_only = [source for source, _ in binds.get("--ro-bind", [])]
    assert str(ROOT / "helpers") in read_only or str(ROOT) not in read_only
    assert str(ROOT) not in read_only, "the project folder (solutions/, gradebook.db) is never mounted"
    assert not any(Path(p) == ROOT / "solutions" or "gradebook" in p for p in read_only)
    for flag in ("--unshare-all", "--die-with-parent", "--clearenv", "--cap-drop"):
        assert flag in command
    assert "--share-net" not in command
    sizes = [command[i + 1] for i, word in enumerate(command) if word == "--size"]
    assert sizes == [str(50 * 2**20)] * 2, "home and /tmp are size-limited tmpfs"


def test_only_the_kits_settings_reach_the_kernel(box):
    command = box.wrap(["python"])
    env = {command[i + 1]: command[i + 2] for i, word in enumerate(command) if word == "--setenv"}
    assert "SECRET_TOKEN" not in env
    assert env["KIT_PROFILE"] == "grading"
    assert env["HOME"] == sandbox.HOME and env["KIT_CACHE_DIR"].startswith(sandbox.HOME)
    assert env["JPY_PARENT_PID"] == "1"


def test_without_a_control_group_resource_limits_apply(box):
    command = box.wrap(["python"])
    assert Path(command[0]).name == "prlimit"
    assert f"--data={700 * 2**20}" in command and "--core=0" in command
    if os.geteuid() != 0:
        assert any(word.startswith("--nproc=") for word in command)


def test_unsandboxed_kernels_still_get_a_private_cache(tmp_path, monkeypatch):
    submission = tmp_path / "sub"
    submission.mkdir()
    made = sandbox.prepare(submission, use_sandbox=False)
    try:
        command = made.wrap(["python", "-m", "ipykernel_launcher"])
        assert not made.sandboxed
        assert f"KIT_CACHE_DIR={made.scratch / 'cache'}" in command
        assert command[-3:] == ["python", "-m", "ipykernel_launcher"]
    finally:
        made.close()


def test_a_missing_submission_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="submission folder"):
        sandbox.prepare(tmp_path / "nope")


def test_the_probe_runs_bubblewrap_for_real():
    found = sandbox.probe()
    if not found.available:
        pytest.skip(f"no sandbox here: {found.reason}")
    base = [found.bwrap, "--unshare-all", "--die-with-parent", *sandbox._system_binds(), "--proc", "/proc",
            "--dev", "/dev"]
    works = subprocess.run([*base, "cat", "/etc/passwd"], capture_output=True, text=True)
    assert works.returncode == 0, f"the same sandbox runs a program and reads the system: {works.stderr}"
    hidden = subprocess.run([*base, "cat", str(ROOT / "README.md")], capture_output=True, text=True)
    assert hidden.returncode == 1 and "No such file or directory" in hidden.stderr, (
        "the project folder is not visible inside the sandbox (cat fails to find it, not bubblewrap to start): "
        f"{hidden.returncode} {hidden.stderr}"
    )
