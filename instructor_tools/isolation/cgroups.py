"""Control groups (Linux cgroup v1 or v2): memory, CPU and process limits for the hub and the grader.

One implementation, :class:`ControlGroup`, for both places that limit what a process
tree may use:

- the classroom hub (``classroom/jupyterhub_config.py``) puts each user's Jupyter
  server, and so every kernel and terminal it starts, into a group of its own under
  :data:`PARENT` before the server runs: one student's runaway notebook then meets its
  own memory limit (the kernel is killed and restarts, the others keep working), gets
  at most its share of the cores, and cannot fork-bomb the server;
- autograding (:mod:`instructor_tools.isolation.sandbox`) puts each submission's kernel into a group under
  ``tl-kit-grading`` (memory and processes only), removed when the kernel ends.

Both layouts are handled:

- cgroup v2 (a single hierarchy, ``/sys/fs/cgroup/cgroup.controllers`` exists):
  ``<root>/<parent>/<name>/`` with ``memory.max``, ``cpu.max`` and ``pids.max``;
- cgroup v1 (one hierarchy per controller): ``<root>/<controller>/<parent>/<name>/``
  for ``memory`` (``memory.limit_in_bytes``), ``cpu`` (``cpu.cfs_quota_us``),
  ``pids`` (``pids.max``) and, for accounting only, ``cpuacct``.

Where no controller is writable (an unprivileged container, macOS), :func:`detect`
says so: the hub runs without enforced limits (it reports that at start) and the
grader falls back to resource limits (``prlimit``).
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The parent group of every classroom user's group.
PARENT = "tl-workshop-hub"
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "pids", "cpuacct")
#: Fewest processes/threads a group may allow: a Jupyter server or an idle kernel already runs more.
MIN_TASKS = 8
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_memory(text: str | int | None) -> int | None:
    """Bytes from a size such as ``"3G"``, ``"512M"``, ``"1.5GiB"`` or a plain number of bytes.

    >>> parse_memory("3G"), parse_memory("512M"), parse_memory(1024), parse_memory(None)
    (3221225472, 536870912, 1024, None)
    """
    if text is None or text == "":
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise ValueError(f"memory limit must be positive, got {text}.")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"cannot read the memory size {text!r}: write it like 3G, 512M or 1.5GiB.")
    number, unit = float(match.group(1)), match.group(2).lower()
    value = int(number * 1024 ** " kmgt".index(unit or " "))
    if value <= 0:
        raise ValueError(f"memory limit must be positive, got {text!r}.")
    return value


@dataclass(frozen=True)
class Limits:
    """What a control group enforces: bytes of memory, cores (1.5 = one and a half), processes/threads.

    None leaves that resource unlimited. (A graded kernel's other limits, its private
    disk, open files and output, are :class:`instructor_tools.isolation.sandbox.Limits`.)

    >>> Limits(memory_bytes=parse_memory("6G"), cpus=1.0, tasks=512).tasks
    512
    """

    memory_bytes: int | None = None
    cpus: float | None = None
    tasks: int | None = None

    def __post_init__(self) -> None:
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise ValueError(f"memory_bytes must be positive, got {self.memory_bytes}.")
        if self.cpus is not None and self.cpus <= 0:
            raise ValueError(f"cpus must be positive, got {self.cpus}.")
        if self.tasks is not None and self.tasks < MIN_TASKS:
            raise ValueError(
                f"a Jupyter server or kernel needs more than {self.tasks} processes/threads; allow at least {MIN_TASKS}."
            )


def detect(root: Path = CGROUP_ROOT, need: Iterable[str] = ()) -> str | None:
    """``"v2"`` or ``"v1"`` when this process can create control groups under ``root``, else None.

    Args:
        root: Where the control groups are mounted.
        need: Controllers that must work (for example ``("memory", "pids")``): on v2
            available and handed down from ``root`` (``cgroup.subtree_control``), on v1
            each hierarchy writable. Empty: any writable layout (v1: the memory hierarchy).
    """
    root = Path(root)
    wanted = set(need)
    if (root / "cgroup.controllers").is_file():
        if os.access(root, os.W_OK) and all(
            wanted <= set(_read_words(root / name)) for name in ("cgroup.controllers", "cgroup.subtree_control")
        ):
            return "v2"
        if not wanted:
            return None
    if all((root / name).is_dir() and os.access(root / name, os.W_OK) for name in (wanted or {"memory"})):
        return "v1"
    return None


class ControlGroup:
    """One control group (on v1, one folder per controller): create with limits, add processes,
    measure, kill, remove.

    Args:
        name: The group's own folder name (letters, digits, ``.``, ``_``, ``-``).
        root: Where the control groups are mounted.
        parent: The folder that holds the group (created when needed).
        version: ``"v2"`` or ``"v1"``; detected from ``root`` when None.
        controllers: Which controllers the group uses (a subset of :data:`V1_CONTROLLERS`;
            on v2 ``cpuacct`` is part of ``cpu``).
    """

    def __init__(
        self,
        name: str,
        *,
        root: Path = CGROUP_ROOT,
        parent: str = PARENT,
        version: str | None = None,
        controllers: Iterable[str] = V1_CONTROLLERS,
    ):
        for part in (name, parent):
            if not _NAME.match(part):
                raise ValueError(f"control group names use letters, digits, '.', '_' and '-' only, got {part!r}.")
        if version not in (None, "v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2' (or None to detect it), got {version!r}.")
        self.controllers = tuple(controllers)
        unknown = set(self.controllers) - set(V1_CONTROLLERS)
        if unknown:
            raise ValueError(f"unknown controllers {sorted(unknown)}: use some of {', '.join(V1_CONTROLLERS)}.")
        self.name = name
        self.root = Path(root)
        self.parent = parent
        self.version = version or detect(self.root)

    def __repr__(self) -> str:
        return f"ControlGroup({self.parent}/{self.name}, {self.version})"

    def paths(self) -> dict[str, Path]:
        """controller -> folder of this group (one folder, ``"unified"``, for every controller on v2)."""
        if self.version == "v2":
            return {"unified": self.root / self.parent / self.name}
        if self.version == "v1":
            return {
                controller: self.root / controller / self.parent / self.name
                for controller in V1_CONTROLLERS
                if controller in self.controllers and (self.root / controller).is_dir() and os.access(self.root / controller, os.W_OK)
            }
        return {}

    def create(self, limits: Limits) -> list[str]:
        """Create the group(s) and write the limits; returns what is enforced, in words.

        Raises:
            OSError: A limit could not be written (the caller decides whether to go on without it).
        """
        if self.version == "v2":
            return self._create_v2(limits)
        enforced: list[str] = []
        for controller, folder in self.paths().items():
            folder.mkdir(parents=True, exist_ok=True)
            if controller == "memory" and limits.memory_bytes:
                _write(folder / "memory.limit_in_bytes", str(limits.memory_bytes))
                # no swapping around the limit where the kernel accounts swap
                _write(folder / "memory.memsw.limit_in_bytes", str(limits.memory_bytes), quiet=True)
                enforced.append(f"memory {limits.memory_bytes / 2**20:.0f} MiB")
            elif controller == "cpu" and limits.cpus:
                _write(folder / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(folder / "cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US)))
                enforced.append(f"{limits.cpus:g} CPU")
            elif controller == "pids" and limits.tasks:
                _write(folder / "pids.max", str(limits.tasks))
                enforced.append(f"{limits.tasks} tasks")
        return enforced

    def _create_v2(self, limits: Limits) -> list[str]:
        parent = self.root / self.parent
        parent.mkdir(exist_ok=True)
        for folder in (self.root, parent):  # the controllers must be handed down level by level
            wanted = set(self._v2_controllers()) & set(_read_words(folder / "cgroup.controllers"))
            _write(folder / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)), quiet=True)
        folder = parent / self.name
        folder.mkdir(exist_ok=True)
        enforced: list[str] = []
        if limits.memory_bytes and "memory" in self.controllers:
            _write(folder / "memory.max", str(limits.memory_bytes))
            _write(folder / "memory.swap.max", "0", quiet=True)
            enforced.append(f"memory {limits.memory_bytes / 2**20:.0f} MiB")
        if limits.cpus and "cpu" in self.controllers:
            _write(folder / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
            enforced.append(f"{limits.cpus:g} CPU")
        if limits.tasks and "pids" in self.controllers:
            _write(folder / "pids.max", str(limits.tasks))
            enforced.append(f"{limits.tasks} tasks")
        return enforced

    def _v2_controllers(self) -> list[str]:
        return [c for c in ("memory", "cpu", "pids") if c in self.controllers or (c == "cpu" and "cpuacct" in self.controllers)]

    def procs_files(self) -> list[Path]:
        """The files a process writes its id to, to join the group (a shell's ``echo $$ > file``)."""
        return [folder / "cgroup.procs" for folder in self.paths().values()]

    def add(self, pid: int) -> None:
        """Move a process (and its future children) into the group(s)."""
        for path in self.procs_files():
            if path.parent.is_dir():
                path.write_text(str(pid))

    def processes(self) -> set[int]:
        """Every process in the group(s)."""
        found: set[int] = set()
        for path in self.procs_files():
            try:
                found |= {int(line) for line in path.read_text().split()}
            except (OSError, ValueError):
                continue
        return found

    def usage(self) -> dict[str, float | None]:
        """Memory now and at peak (MiB) and CPU-seconds used so far (None where not accounted)."""
        paths = self.paths()
        result: dict[str, float | None] = {"memory_mib": None, "peak_mib": None, "cpu_s": None}
        if self.version == "v2":
            folder = paths["unified"]
            result["memory_mib"] = _read_number(folder / "memory.current", 2**20)
            result["peak_mib"] = _read_number(folder / "memory.peak", 2**20)
            try:
                stat = dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines())
                result["cpu_s"] = int(stat["usage_usec"]) / 1e6
            except (OSError, KeyError, ValueError):
                pass
            return result
        if "memory" in paths:
            result["memory_mib"] = _read_number(paths["memory"] / "memory.usage_in_bytes", 2**20)
            result["peak_mib"] = _read_number(paths["memory"] / "memory.max_usage_in_bytes", 2**20)
        if "cpuacct" in paths:
            result["cpu_s"] = _read_number(paths["cpuacct"] / "cpuacct.usage", 1e9)
        return result

    def out_of_memory(self) -> bool:
        """Whether the memory limit was hit: the kernel's OOM killer acted in the group (or, on v1, an
        allocation failed at the limit)."""
        for folder in self.paths().values():
            for name in ("memory.events", "memory.oom_control"):
                for line in _read_lines(folder / name):
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip() not in {"", "0"}:
                        return True
            if (folder / "memory.failcnt").is_file() and "".join(_read_lines(folder / "memory.failcnt")) not in {"", "0"}:
                return True
        return False

    def kill(self, grace: float = 5.0) -> set[int]:
        """SIGTERM every process in the group, then SIGKILL what is left after ``grace`` seconds
        (``grace`` 0: SIGKILL at once); returns the processes that were there."""
        victims = self.processes()
        steps = [(signal.SIGKILL, 2.0)] if grace <= 0 else [(signal.SIGTERM, grace), (signal.SIGKILL, 2.0)]
        for sig, wait in steps:
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.05)
            if not self.processes():
                break
        return victims

    def remove(self, grace: float = 5.0) -> None:
        """Kill what is left in the group(s) (see :meth:`kill`) and delete them."""
        self.kill(grace)
        for folder in self.paths().values():
            for _ in range(20):  # the kernel refuses rmdir until the last process has been reaped
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def groups(root: Path = CGROUP_ROOT, parent: str = PARENT) -> list[ControlGroup]:
    """Every group under ``parent`` (the hub's users, for stopping and status)."""
    version = detect(root)
    base = root / parent if version == "v2" else root / "memory" / parent
    if version is None or not base.is_dir():
        return []
    return [ControlGroup(p.name, root=root, parent=parent, version=version) for p in sorted(base.iterdir()) if p.is_dir()]


def remove_parent(root: Path = CGROUP_ROOT, parent: str = PARENT) -> None:
    """Delete the (empty) parent group(s) once every group in it is gone; one still in use stays."""
    version = detect(root)
    folders = [root / parent] if version == "v2" else [root / c / parent for c in V1_CONTROLLERS]
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # missing, or a group is still inside
            pass


def _write(path: Path, value: str, quiet: bool = False) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        if quiet:
            return False
        raise


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _read_lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines()]
    except OSError:
        return []


def _read_number(path: Path, scale: float) -> float | None:
    try:
        return round(int(path.read_text().split()[0]) / scale, 1)
    except (OSError, ValueError, IndexError):
        return None
