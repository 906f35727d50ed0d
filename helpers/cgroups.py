"""Per-user memory, CPU and process limits with Linux control groups (v1 or v2).

The classroom hub (``classroom/jupyterhub_config.py``) puts each user's Jupyter
server, and so every kernel and terminal it starts, into a control group of its own
before the server runs: one student's runaway notebook then meets its own memory
limit (the kernel is killed and restarts, the others keep working), gets at most its
share of the cores, and cannot fork-bomb the server.

Both layouts are handled:

- cgroup v2 (a single hierarchy, ``/sys/fs/cgroup/cgroup.controllers`` exists):
  ``<root>/<parent>/<user>/`` with ``memory.max``, ``cpu.max`` and ``pids.max``;
- cgroup v1 (one hierarchy per controller): ``<root>/<controller>/<parent>/<user>/``
  for ``memory`` (``memory.limit_in_bytes``), ``cpu`` (``cpu.cfs_quota_us``),
  ``pids`` (``pids.max``) and, for accounting only, ``cpuacct``.

Where no controller is writable (an unprivileged container, macOS), :func:`detect`
says so and the hub runs without enforced limits; it reports that at start.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
#: The parent group of every classroom user's group.
PARENT = "tl-workshop-hub"
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "pids", "cpuacct")
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
    """What one user may use: bytes of memory, cores (1.5 = one and a half), processes."""

    memory_bytes: int | None = None
    cpus: float | None = None
    tasks: int | None = None

    def __post_init__(self) -> None:
        if self.cpus is not None and self.cpus <= 0:
            raise ValueError(f"cpus must be positive, got {self.cpus}.")
        if self.tasks is not None and self.tasks < 8:
            raise ValueError(f"a Jupyter server needs more than {self.tasks} processes/threads; allow at least 8.")


def detect(root: Path = CGROUP_ROOT) -> str | None:
    """``"v2"`` or ``"v1"`` when this process can create control groups under ``root``, else None."""
    if (root / "cgroup.controllers").is_file():
        return "v2" if os.access(root, os.W_OK) else None
    if (root / "memory").is_dir() and os.access(root / "memory", os.W_OK):
        return "v1"
    return None


class UserGroup:
    """The control group(s) of one user: create with limits, add processes, read usage, kill, remove."""

    def __init__(self, name: str, *, root: Path = CGROUP_ROOT, parent: str = PARENT, version: str | None = None):
        if not _NAME.match(name):
            raise ValueError(f"control group names use letters, digits, '.', '_' and '-' only, got {name!r}.")
        self.name = name
        self.root = Path(root)
        self.parent = parent
        self.version = version or detect(self.root)

    def paths(self) -> dict[str, Path]:
        """controller -> folder of this user's group (one folder for every controller on v2)."""
        if self.version == "v2":
            return {"unified": self.root / self.parent / self.name}
        if self.version == "v1":
            return {
                controller: self.root / controller / self.parent / self.name
                for controller in V1_CONTROLLERS
                if (self.root / controller).is_dir() and os.access(self.root / controller, os.W_OK)
            }
        return {}

    def create(self, limits: Limits) -> list[str]:
        """Create the group(s) and write the limits; returns what is enforced, in words."""
        enforced: list[str] = []
        if self.version == "v2":
            parent = self.root / self.parent
            parent.mkdir(exist_ok=True)
            for folder in (self.root, parent):  # the controllers must be handed down level by level
                wanted = {"memory", "cpu", "pids"} & set((folder / "cgroup.controllers").read_text().split())
                _write(folder / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)), quiet=True)
            folder = parent / self.name
            folder.mkdir(exist_ok=True)
            if limits.memory_bytes and _write(folder / "memory.max", str(limits.memory_bytes)):
                _write(folder / "memory.swap.max", "0", quiet=True)
                enforced.append(f"memory {limits.memory_bytes / 2**20:.0f} MiB")
            if limits.cpus and _write(folder / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}"):
                enforced.append(f"{limits.cpus:g} CPU")
            if limits.tasks and _write(folder / "pids.max", str(limits.tasks)):
                enforced.append(f"{limits.tasks} tasks")
            return enforced
        for controller, folder in self.paths().items():
            folder.mkdir(parents=True, exist_ok=True)
            if controller == "memory" and limits.memory_bytes:
                if _write(folder / "memory.limit_in_bytes", str(limits.memory_bytes)):
                    # no swapping around the limit where the kernel accounts swap
                    _write(folder / "memory.memsw.limit_in_bytes", str(limits.memory_bytes), quiet=True)
                    enforced.append(f"memory {limits.memory_bytes / 2**20:.0f} MiB")
            elif controller == "cpu" and limits.cpus:
                _write(folder / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                if _write(folder / "cpu.cfs_quota_us", str(int(limits.cpus * CPU_PERIOD_US))):
                    enforced.append(f"{limits.cpus:g} CPU")
            elif controller == "pids" and limits.tasks:
                if _write(folder / "pids.max", str(limits.tasks)):
                    enforced.append(f"{limits.tasks} tasks")
        return enforced

    def add(self, pid: int) -> None:
        """Move a process (and its future children) into the group(s)."""
        for folder in self.paths().values():
            if folder.is_dir():
                (folder / "cgroup.procs").write_text(str(pid))

    def processes(self) -> set[int]:
        """Every process in the group(s)."""
        found: set[int] = set()
        for folder in self.paths().values():
            try:
                found |= {int(line) for line in (folder / "cgroup.procs").read_text().split()}
            except OSError:
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

    def kill(self, grace: float = 5.0) -> set[int]:
        """SIGTERM every process in the group, then SIGKILL what is left after ``grace`` seconds."""
        victims = self.processes()
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self.processes():
                break
        return victims

    def remove(self) -> None:
        """Kill what is left in the group(s) and delete them."""
        self.kill()
        for folder in self.paths().values():
            for _ in range(20):  # the kernel refuses rmdir until the last process has been reaped
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def groups(root: Path = CGROUP_ROOT, parent: str = PARENT) -> list[UserGroup]:
    """Every user's group under ``parent`` (for stopping and status)."""
    version = detect(root)
    base = root / parent if version == "v2" else root / "memory" / parent
    if version is None or not base.is_dir():
        return []
    return [UserGroup(p.name, root=root, parent=parent, version=version) for p in sorted(base.iterdir()) if p.is_dir()]


def remove_parent(root: Path = CGROUP_ROOT, parent: str = PARENT) -> None:
    """Delete the (empty) parent group(s) once every user's group is gone."""
    version = detect(root)
    folders = [root / parent] if version == "v2" else [root / c / parent for c in V1_CONTROLLERS]
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # missing, or a user's group is still inside
            pass


def _write(path: Path, value: str, quiet: bool = False) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        if quiet:
            return False
        raise


def _read_number(path: Path, scale: float) -> float | None:
    try:
        return round(int(path.read_text().split()[0]) / scale, 1)
    except (OSError, ValueError, IndexError):
        return None
