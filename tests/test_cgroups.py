"""One control-group implementation for the hub's users and the grader's kernels (instructor_tools.isolation.cgroups).

The layouts are checked on a stand-in ``/sys/fs/cgroup`` (a folder tree: what gets written
where, for cgroup v1 and v2); the limit itself on the real one, where this process may
create groups (root with writable cgroups), skipped with the reason elsewhere. The hub's
end-to-end use is in tests/test_hub.py, the grader's in tests/test_grading_hostile.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from instructor_tools.isolation import cgroups, sandbox


def _v2_root(tmp_path: Path, enabled: str = "") -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text(enabled)
    return root


def _v1_root(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    for controller in ("memory", "cpu", "cpuacct", "pids", "freezer"):
        (root / controller).mkdir(parents=True)
    return root


def _read(path: Path) -> str:
    return path.read_text().strip()


def test_v2_a_users_group_gets_memory_cpu_and_tasks(tmp_path):
    root = _v2_root(tmp_path)
    group = cgroups.ControlGroup("alice", root=root)
    assert group.version == "v2"
    enforced = group.create(cgroups.Limits(memory_bytes=cgroups.parse_memory("1G"), cpus=1.5, tasks=64))
    assert enforced == ["memory 1024 MiB", "1.5 CPU", "64 tasks"]
    folder = root / cgroups.PARENT / "alice"
    assert _read(folder / "memory.max") == str(2**30) and _read(folder / "memory.swap.max") == "0"
    assert _read(folder / "cpu.max") == "150000 100000" and _read(folder / "pids.max") == "64"
    assert set(_read(root / "cgroup.subtree_control").split()) == {"+cpu", "+memory", "+pids"}, (
        "the controllers are handed down to the parent group"
    )
    assert group.procs_files() == [folder / "cgroup.procs"]


def test_v2_a_graded_kernels_group_limits_memory_and_processes_only(tmp_path):
    root = _v2_root(tmp_path, "memory pids")
    limits = sandbox.Limits(memory_mb=512, processes=64)
    group = cgroups.ControlGroup("k1", root=root, parent=sandbox.CGROUP_PREFIX, controllers=sandbox.CGROUP_CONTROLLERS)
    assert group.create(limits.group_limits()) == ["memory 512 MiB", "64 tasks"]
    folder = root / sandbox.CGROUP_PREFIX / "k1"
    assert _read(folder / "memory.max") == str(512 * 2**20) and _read(folder / "pids.max") == "64"
    assert not (folder / "cpu.max").exists(), "a kernel's time is bounded by the cell timeout, not a CPU quota"
    assert set(_read(root / "cgroup.subtree_control").split()) == {"+memory", "+pids"}


def test_v1_one_folder_per_controller(tmp_path):
    root = _v1_root(tmp_path)
    hub_group = cgroups.ControlGroup("alice", root=root)
    assert hub_group.version == "v1"
    assert hub_group.create(cgroups.Limits(memory_bytes=2**30, cpus=0.5, tasks=100)) == [
        "memory 1024 MiB", "0.5 CPU", "100 tasks"]
    assert _read(root / "memory" / cgroups.PARENT / "alice" / "memory.limit_in_bytes") == str(2**30)
    assert _read(root / "cpu" / cgroups.PARENT / "alice" / "cpu.cfs_quota_us") == "50000"
    assert _read(root / "pids" / cgroups.PARENT / "alice" / "pids.max") == "100"
    assert set(hub_group.paths()) == {"memory", "cpu", "pids", "cpuacct"}
    kernel_group = cgroups.ControlGroup("k1", root=root, parent=sandbox.CGROUP_PREFIX,
                                        controllers=sandbox.CGROUP_CONTROLLERS)
    kernel_group.create(sandbox.Limits(memory_mb=300, processes=50).group_limits())
    assert sorted(kernel_group.paths()) == ["memory", "pids"]
    assert _read(root / "pids" / sandbox.CGROUP_PREFIX / "k1" / "pids.max") == "50"


def test_out_of_memory_and_peak_are_read_from_either_layout(tmp_path):
    root = _v2_root(tmp_path)
    group = cgroups.ControlGroup("k2", root=root, parent=sandbox.CGROUP_PREFIX)
    group.create(cgroups.Limits(memory_bytes=2**28))
    folder = root / sandbox.CGROUP_PREFIX / "k2"
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert not group.out_of_memory(), "hitting the limit without a kill is not out of memory"
    (folder / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (folder / "memory.peak").write_text(str(300 * 2**20))
    assert group.out_of_memory() and group.usage()["peak_mib"] == 300.0
    v1 = _v1_root(tmp_path / "v1")
    group = cgroups.ControlGroup("k3", root=v1, parent=sandbox.CGROUP_PREFIX, controllers=("memory", "pids"))
    group.create(cgroups.Limits(memory_bytes=2**28))
    (v1 / "memory" / sandbox.CGROUP_PREFIX / "k3" / "memory.failcnt").write_text("0\n")
    assert not group.out_of_memory()
    (v1 / "memory" / sandbox.CGROUP_PREFIX / "k3" / "memory.failcnt").write_text("12\n")
    assert group.out_of_memory()


def test_detect_needs_the_controllers_handed_down_on_v2(tmp_path):
    root = _v2_root(tmp_path, "cpu")
    assert cgroups.detect(root) == "v2", "the hub hands the controllers down itself"
    assert cgroups.detect(root, need=("memory", "pids")) is None, "the grader's kernels need memory and pids enabled"
    (root / "cgroup.subtree_control").write_text("cpu memory pids")
    assert cgroups.detect(root, need=("memory", "pids")) == "v2"
    assert cgroups.detect(_v1_root(tmp_path / "v1"), need=("memory", "pids")) == "v1"
    assert cgroups.detect(tmp_path / "nothing") is None


def test_bad_names_and_limits_are_refused():
    with pytest.raises(ValueError, match="letters, digits"):
        cgroups.ControlGroup("../etc")
    with pytest.raises(ValueError, match="letters, digits"):
        cgroups.ControlGroup("alice", parent="a/b")
    with pytest.raises(ValueError, match="unknown controllers"):
        cgroups.ControlGroup("alice", controllers=("memory", "gpu"))
    with pytest.raises(ValueError, match="at least 8"):
        sandbox.Limits(processes=4)
    with pytest.raises(ValueError, match="memory_bytes must be positive"):
        cgroups.Limits(memory_bytes=0)


def test_a_graded_kernels_group_stops_a_memory_hog_and_says_so():
    """On the real control groups: the grader's group kills a process over its limit, reports it, and
    leaves nothing behind."""
    version = cgroups.detect(need=sandbox.CGROUP_CONTROLLERS)
    if version is None:
        pytest.skip("control groups are not writable here (not root, or no cgroup v1/v2 mount)")
    group = cgroups.ControlGroup("kit-test-oom", parent=sandbox.CGROUP_PREFIX + "-test", version=version,
                                 controllers=sandbox.CGROUP_CONTROLLERS)
    try:
        group.create(sandbox.Limits(memory_mb=100, processes=64).group_limits())
        hog = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(0.3); b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
        )
        group.add(hog.pid)
        assert hog.wait(timeout=60) == -9, "the kernel's OOM killer stops the process over its limit"
        assert group.out_of_memory()
        peak = group.usage()["peak_mib"]
        assert peak is not None and peak <= 101, f"peak {peak} MiB within the 100 MiB limit"
    finally:
        group.remove(grace=0)
        cgroups.remove_parent(parent=sandbox.CGROUP_PREFIX + "-test")
    assert not any(path.exists() for path in group.paths().values()), "the group is removed"
