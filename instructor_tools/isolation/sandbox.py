"""Where a submission's kernel runs when it is graded: a bubblewrap sandbox with limits.

Autograding runs student code. Each submission's kernel is started inside
`bubblewrap <https://github.com/containers/bubblewrap>`_ (Debian's ``bubblewrap``
package), which builds a private view of the file system from read-only pieces:

- read-only: the system (``/usr``, ``/etc`` essentials), the Python installation and
  environment, the ``helpers`` package, and the course data and weight files the
  notebooks need (the grader's weights cache, mirror and data folders);
- private and size-limited (a ``tmpfs``): the home, the kit's cache and ``/tmp``,
  and a copy of the submission's own folder, which is the kernel's working folder;
- nothing else: not ``solutions/``, the gradebook, ``submitted/``, ``autograded/``,
  ``feedback/``, the instructor's home or other processes (new PID namespace), and no
  network (new network namespace; nbgrader talks to the kernel over Unix sockets in
  a folder bound into the sandbox, ``KernelManager.transport = "ipc"``).

Limits per kernel (:class:`Limits`): memory and number of processes/threads through
a control group where the machine lets the grader create one (cgroup v2, or the v1
``memory`` and ``pids`` hierarchies; :class:`instructor_tools.isolation.cgroups.ControlGroup`, the hub's
implementation too), else through resource limits (``prlimit``);
the size of the private folders; open files; no core dumps. The per-cell time
limit is nbgrader's (the profile's ``cell_timeout``).

Taught nowhere: instructor tooling behind ``python -m instructor_tools autograde`` (see the
instructor guide, "What a submission can and cannot do").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Mapping

import helpers
from helpers.kernel import KERNEL_NAME
from helpers.settings import load_settings
from helpers.weights import models_dir
from instructor_tools.isolation import cgroups

# Inside the sandbox: the student's home (a tmpfs), the working copy of the
# submission folder, and where read-only course files are bound.
HOME = "/home/student"
WORK = f"{HOME}/work"
SUBMISSION = "/srv/submission"
COURSE_FILES = "/srv/course"
# Private, size-limited folders (tmpfs) that replace the grader's.
PRIVATE = (HOME, "/tmp")
CGROUP_PREFIX = "tl-kit-grading"
# The controllers a kernel's control group uses (no CPU limit: nbgrader's cell timeout bounds time).
CGROUP_CONTROLLERS = ("memory", "pids")
# Environment variables that reach a sandboxed kernel (everything else is cleared:
# the grader's environment may hold tokens and paths that are none of the student's business).
PASSED_PREFIXES = ("KIT_", "TF_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "PYDEVD_", "NBGRADER_")
PASSED_NAMES = ("LANG", "LC_ALL", "TZ", "MPLBACKEND", "CUDA_VISIBLE_DEVICES")
# Settings whose folders are bound read-only at the same path.
DATA_SETTINGS = ("weights_mirror", "data_mirror", "data_dir")


class SandboxUnavailable(RuntimeError):
    """No sandbox can be used here (with the reason); see :func:`probe`."""


class KernelCannotStart(RuntimeError):
    """The course's kernel does not start for grading (the grader's setup, not a submission); see :func:`check_kernel`."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one submission's kernel may use.

    The defaults fit a 2-core, 8 GB laptop grading two submissions at a time.

    Attributes:
        memory_mb: Memory of the kernel and everything it starts (a TensorFlow kernel
            with MobileNet in the grading profile peaks near 1.5 GB).
        processes: Processes and threads (TensorFlow starts a few dozen threads).
        disk_mb: Size of the private home, cache and ``/tmp`` together (they live in
            memory: counted in ``memory_mb`` where a control group limits it).
        open_files: Open file descriptors.
        output_kb: Output kept per cell; the rest is dropped with a note (a cell that
            prints megabytes cannot fill the grader's memory).
    """

    memory_mb: int = 3072
    processes: int = 512
    disk_mb: int = 1024
    open_files: int = 1024
    output_kb: int = 8192

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Limits.{field.name} must be an int, not {type(value).__name__}.")
            if value < 1:
                raise ValueError(f"Limits.{field.name} must be at least 1 (got {value}).")
        if self.processes < cgroups.MIN_TASKS:
            raise ValueError(
                f"Limits.processes must be at least {cgroups.MIN_TASKS} (got {self.processes}): a kernel runs more "
                "threads than that before any cell."
            )

    def group_limits(self) -> cgroups.Limits:
        """The part a control group enforces: memory (private folders included) and processes/threads."""
        return cgroups.Limits(memory_bytes=self.memory_mb * 2**20, tasks=self.processes)


@dataclasses.dataclass(frozen=True)
class Probe:
    """Whether the sandbox works here.

    Attributes:
        available: bubblewrap starts a process with every namespace it needs.
        reason: Why not, in words an instructor can act on ("" when available).
        bwrap: The bubblewrap program.
        cgroup: How memory and processes are limited: ``"cgroup v2"``, ``"cgroup v1"``
            or ``"rlimit"``.
    """

    available: bool
    reason: str
    bwrap: str | None
    cgroup: str


def _cgroup_mode() -> str:
    """``cgroup v2`` or ``cgroup v1`` when this process may create limited groups, else ``rlimit``."""
    version = cgroups.detect(need=CGROUP_CONTROLLERS)
    return f"cgroup {version}" if version else "rlimit"


@functools.cache
def probe(kernel_name: str = KERNEL_NAME) -> Probe:
    """Check once per process that grading can run here: bubblewrap builds a sandbox like the grader's
    (no network, new PIDs), and the real kernel command starts inside one and answers.

    The kernel is the course's (``kernel_name``), started exactly as grading starts it
    (:func:`kernel_manager_class`, the same binds and environment) on an empty
    submission; it must reply and import ``helpers``. A layout the sandbox cannot
    show (a Python under a folder it replaces, a kernel spec pointing at a missing
    program) is reported here, with the kernel's own words, before any submission
    is touched.

    Args:
        kernel_name: The Jupyter kernel the notebooks are graded with.

    Returns:
        A :class:`Probe`; ``available`` False with the ``reason`` when grading cannot be sandboxed.
    """
    if not sys.platform.startswith("linux"):
        return Probe(False, f"bubblewrap needs Linux (this is {sys.platform})", None, "rlimit")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Probe(False, "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)", None, "rlimit")
    command = [bwrap, "--unshare-all", "--die-with-parent", *_system_binds(), "--proc", "/proc", "--dev", "/dev", "true"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Probe(False, f"bubblewrap could not start ({error})", bwrap, "rlimit")
    if result.returncode != 0:
        why = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"
        return Probe(
            False,
            f"bubblewrap cannot create namespaces here ({why}); enable unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1) or grade as root",
            bwrap,
            "rlimit",
        )
    found = Probe(True, "", bwrap, _cgroup_mode())
    failure = check_kernel(found, kernel_name)
    if failure:
        return Probe(False, failure, bwrap, found.cgroup)
    return found


# The only files of the instructor's package a graded kernel sees (read-only): what it needs to import
# the hidden tests' numpy comparisons at start (instructor_tools.grading.preprocessors.PRELOAD_COMPARISONS);
# never the grader, the tamper rules or the rest of the package.
COMPARISON_FILES = ("__init__.py", "grading/__init__.py", "grading/comparisons.py")


def _comparison_mounts() -> list[tuple[str, list[str]]]:
    package = Path(__file__).resolve().parents[1]  # instructor_tools/
    return [(str(package / name), ["--ro-bind", str(package / name), str(package / name)]) for name in COMPARISON_FILES]


def _system_mounts() -> list[tuple[str, list[str]]]:
    """Read-only mounts of the operating system: programs, libraries and the few ``/etc`` files they read."""
    mounts: list[tuple[str, list[str]]] = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(top)
        if path.is_symlink():
            mounts.append((top, ["--symlink", os.readlink(path), top]))
        elif path.is_dir():
            mounts.append((top, ["--ro-bind", top, top]))
    for name in (
        "passwd", "group", "hosts", "nsswitch.conf", "localtime", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
        "alternatives", "fonts", "mime.types", "ssl/certs",
    ):
        mounts.append((f"/etc/{name}", ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]))
    return mounts


def _system_binds() -> list[str]:
    """The system's mounts as bubblewrap arguments (what :func:`probe` starts ``true`` with)."""
    return [word for _, args in _system_mounts() for word in args]


def _ordered_mounts(mounts: list[tuple[str, list[str]]]) -> list[str]:
    """bubblewrap arguments that mount from the root down, so that no mount hides another.

    bubblewrap mounts in the order it is given: a private ``/tmp`` mounted after a
    read-only bind of ``/tmp/course/.venv`` would hide the environment (the kernel then
    fails with "exec: .../python: not found"). Mounting parents before children lets
    every bind show through the private folders above it, wherever the course, the
    environment and the Python installation live.

    Raises:
        SandboxUnavailable: A bind would cover one of the sandbox's own folders (its
            private home, the submission, the course files), which would hide them.
    """
    own = [HOME, WORK, SUBMISSION, COURSE_FILES]
    for target, args in mounts:
        if args[0] not in {"--ro-bind", "--ro-bind-try", "--bind"}:
            continue
        covered = [inside for inside in own if inside == target or Path(target) in Path(inside).parents]
        if covered and not (target.startswith(COURSE_FILES + "/") or target == SUBMISSION):
            raise SandboxUnavailable(
                f"{args[1]} would be mounted at {target}, over the sandbox's own {covered[0]}; move it (for example "
                "the virtual environment or Python installation) to another folder, then grade again"
            )
    ordered = sorted(mounts, key=lambda mount: len(Path(mount[0]).parts))  # stable: same depth keeps its order
    return [word for _, args in ordered for word in args]


# Asked of the kernel's Python (isolated mode, as the sandboxed kernel sees it): its
# installation folders, its package folders (a ``.pth`` file may add one from elsewhere) and
# where it finds the two packages a course kernel needs.
_WHERE_SCRIPT = (
    "import importlib.util, json, sys\n"
    "found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]\n"
    "for name in ('helpers', 'ipykernel'):\n"
    "    spec = importlib.util.find_spec(name)\n"
    "    found += list(spec.submodule_search_locations or []) if spec else []\n"
    "found += [p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))]\n"
    "print(json.dumps(found))\n"
)


@functools.cache
def _python_paths(executable: str | None = None) -> tuple[Path, ...]:
    """What a kernel's Python needs, read-only: its installation, its environment and the ``helpers`` package.

    ``executable`` is the kernel command's program (the grader's Python by default).
    A virtual environment's ``python`` links into a base installation that may live
    anywhere (``/usr``, ``/opt/conda``, pyenv under a home): both are bound. The
    ``helpers`` package is bound on its own, never the project folder around it
    (``solutions/`` and the gradebook stay out of reach).
    """
    program = Path(executable or sys.executable)
    paths = [program.parent.parent, program.resolve().parent.parent]
    if executable is None or program.resolve() == Path(sys.executable).resolve():
        paths += [Path(sys.base_prefix), Path(sys.prefix), Path(helpers.__file__).resolve().parent]
    try:
        answer = subprocess.run([str(program), "-I", "-c", _WHERE_SCRIPT], capture_output=True, text=True, timeout=60)
        paths += [Path(p) for p in json.loads(answer.stdout)] if answer.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass  # a Python that cannot answer fails the kernel check, with its own words
    paths += _linked_library_folders(program.resolve())
    unique: list[Path] = []
    for path in paths:
        path = path.resolve()
        if path == Path("/") or not path.exists():
            continue
        if not any(path == kept or kept in path.parents for kept in unique):
            unique = [kept for kept in unique if path not in kept.parents] + [path]
    return tuple(unique)


def _linked_library_folders(program: Path) -> list[Path]:
    """Folders outside the system's of the shared libraries ``program`` loads (a ``libpython`` that a
    build's run path finds in another installation)."""
    ldd = shutil.which("ldd")
    if ldd is None or not program.is_file():
        return []
    try:
        listing = subprocess.run([ldd, str(program)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    folders = []
    for line in listing.splitlines():
        library = line.partition("=>")[2].split("(")[0].strip()
        if library.startswith("/") and not library.startswith(("/usr/", "/lib", "/bin/", "/sbin/")):
            folders.append(Path(library).resolve().parent)
    return folders


def data_paths(environment: Mapping[str, str | None]) -> dict[str, Path]:
    """The folders of course data and weights a kernel with this environment reads, by setting.

    The grader's weights cache (``<cache_dir>/keras/models``) is included as
    ``weights_cache``: inside, it becomes the private cache's mirror, so the notebooks
    find the weights without a download.
    """
    merged = {k: v for k, v in os.environ.items()} | {k: v for k, v in environment.items() if v is not None}
    for name, value in environment.items():
        if value is None:
            merged.pop(name, None)
    settings = load_settings(environ=merged)
    found: dict[str, Path] = {}
    for name in DATA_SETTINGS:
        value = getattr(settings, name)
        if value is not None and Path(value).is_dir():
            found[name] = Path(value).resolve()
    cache = models_dir(settings)
    if cache.is_dir():
        found["weights_cache"] = cache.resolve()
    return found


@dataclasses.dataclass
class Sandbox:
    """One submission's sandbox: the command that starts its kernel, and its control group.

    Build with :func:`prepare`; call :meth:`close` when grading is over.

    Attributes:
        probe: What :func:`probe` found (``probe.available`` False: run unsandboxed,
            but still in the private folder).
        limits: The limits applied.
        scratch: A private folder of the grader (mode 700) holding the submission's
            copy and the kernel's sockets.
        submission: The copy of the submission folder the kernel works in.
        ipc: Folder of the kernel's connection file and Unix sockets.
        environment: The environment the kernel gets (``KIT_*`` and the like).
        binds: Read-only folders of course data, by setting name.
        output: What the kernel process (and the sandbox around it) wrote to its
            standard output and error: the sandbox's own errors ("exec: ... not
            found"), Python's fatal errors. Kept bounded; read with ``output.text()``.
    """

    probe: Probe
    limits: Limits
    scratch: Path
    submission: Path
    ipc: Path
    environment: dict[str, str]
    binds: dict[str, Path]
    cgroup: cgroups.ControlGroup | None = None
    output: "OutputTail" = dataclasses.field(default_factory=lambda: OutputTail())

    @property
    def sandboxed(self) -> bool:
        return self.probe.available

    def kernel_config(self) -> dict[str, Any]:
        """Settings of the kernel manager: Unix sockets in :attr:`ipc`, and this sandbox's wrapper."""
        return {"transport": "ipc", "ip": str(self.ipc / "kernel"), "connection_file": str(self.ipc / "kernel.json")}

    def wrap(self, kernel_command: list[str]) -> list[str]:
        """The command that starts ``kernel_command`` inside the sandbox (or, unsandboxed, in the copy)."""
        if not self.sandboxed:
            # Still a private cache: a submission must not write into the grader's (other
            # students' kernels read it).
            env = ["KIT_CACHE_DIR=" + str(self.scratch / "cache")]
            if "weights_mirror" not in self.binds and "weights_cache" in self.binds:
                env.append("KIT_WEIGHTS_MIRROR=" + str(self.binds["weights_cache"]))
            return [shutil.which("env") or "/usr/bin/env", "-u", "KERAS_HOME", *env, *kernel_command]
        assert self.probe.bwrap is not None
        args = [self.probe.bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL"]
        args += _ordered_mounts(self._mounts(kernel_command[0] if kernel_command else None))
        args += ["--clearenv"]
        for name, value in sorted(self._inside_environment().items()):
            args += ["--setenv", name, value]
        args += ["--chdir", HOME, "--"]
        # Copy the submission into the private home, then become the kernel.
        start = f"mkdir -p {WORK} && cp -R {SUBMISSION}/. {WORK}/ && cd {WORK} && exec \"$@\""
        command = ["/bin/sh", "-c", start, "kernel", *kernel_command]
        return self._limited(args + command)

    def _mounts(self, program: str | None) -> list[tuple[str, list[str]]]:
        """Every mount of the sandbox as ``(target inside, bubblewrap arguments)``, in no particular order."""
        mounts = _system_mounts()
        if program and not os.path.isabs(program):
            program = shutil.which(program) or program
        for path in _python_paths(program if program and os.path.isabs(program) else None):
            mounts.append((str(path), ["--ro-bind", str(path), str(path)]))
        mounts += _comparison_mounts()
        mounts += [("/proc", ["--proc", "/proc"]), ("/dev", ["--dev", "/dev"])]
        size = str(self.limits.disk_mb * 1024 * 1024)
        for private in PRIVATE:
            mounts.append((private, ["--size", size, "--tmpfs", private]))
        mounts.append((SUBMISSION, ["--ro-bind", str(self.submission), SUBMISSION]))
        mounts.append((str(self.ipc), ["--bind", str(self.ipc), str(self.ipc)]))
        for name, path in self.binds.items():
            mounts.append((f"{COURSE_FILES}/{name}", ["--ro-bind", str(path), f"{COURSE_FILES}/{name}"]))
        return mounts

    def _inside_environment(self) -> dict[str, str]:
        env = {
            name: value
            for name, value in os.environ.items()
            if name.startswith(PASSED_PREFIXES) or name in PASSED_NAMES
        }
        env |= {k: v for k, v in self.environment.items()}
        env |= {
            "HOME": HOME,
            "USER": "student",
            "TMPDIR": "/tmp",
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONNOUSERSITE": "1",
            "MPLCONFIGDIR": f"{HOME}/.config/matplotlib",
            "KIT_CACHE_DIR": f"{HOME}/.cache/tl-workshop-kit",
            # The kernel's parent (the grader) is outside its PID namespace: 1 tells ipykernel
            # not to watch it (bubblewrap ends the kernel with the grader) and not to print
            # its "connect another client" notice into the grader's terminal.
            "JPY_PARENT_PID": "1",
        }
        env.pop("KERAS_HOME", None)  # the kit points Keras at its private cache
        env.pop("KIT_CONFIG", None)
        for name in DATA_SETTINGS:
            env.pop(f"KIT_{name.upper()}", None)
        if "weights_mirror" in self.binds:
            env["KIT_WEIGHTS_MIRROR"] = f"{COURSE_FILES}/weights_mirror"
        elif "weights_cache" in self.binds:
            env["KIT_WEIGHTS_MIRROR"] = f"{COURSE_FILES}/weights_cache"
        if "data_mirror" in self.binds:
            env["KIT_DATA_MIRROR"] = f"{COURSE_FILES}/data_mirror"
        if "data_dir" in self.binds:
            env["KIT_DATA_DIR"] = f"{COURSE_FILES}/data_dir"
        return env

    def _limited(self, command: list[str]) -> list[str]:
        """``command`` in this sandbox's control group (or under resource limits), without core dumps."""
        limits = [f"--nofile={self.limits.open_files}", "--core=0"]
        if self.cgroup is None:
            memory = self.limits.memory_mb * 1024 * 1024
            limits += [f"--data={memory}"]
            if os.geteuid() != 0:  # root is exempt from RLIMIT_NPROC
                limits += [f"--nproc={self.limits.processes + _process_count()}"]
        prlimit = shutil.which("prlimit") or "prlimit"
        command = [prlimit, *limits, *command]
        if self.cgroup is None:
            return command
        join = " ".join(f'echo $$ > {shlex.quote(str(p))} || exit 97;' for p in self.cgroup.procs_files())
        return ["/bin/sh", "-c", f'{join} exec "$@"', "sandbox", *command]

    def out_of_memory(self) -> bool:
        """Whether the kernel was stopped by the memory limit."""
        return bool(self.cgroup and self.cgroup.out_of_memory())

    def peak_memory_mb(self) -> float | None:
        """Peak memory of the kernel and its private folders, where a control group measured it."""
        return self.cgroup.usage()["peak_mib"] if self.cgroup else None

    def close(self) -> None:
        """Stop anything left running and remove the control group and the private folder."""
        if self.cgroup is not None:
            self.cgroup.remove(grace=0)  # the kernel was shut down already: what is left is killed at once
            cgroups.remove_parent(parent=CGROUP_PREFIX)
        shutil.rmtree(self.scratch, ignore_errors=True)


def _process_count() -> int:
    """Processes this user already runs (RLIMIT_NPROC counts them all)."""
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def copy_without_links(source: Path, target: Path) -> None:
    """Copy a submission folder, leaving out its links (a link could point anywhere on the grader's disk)."""
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for link in [p for p in target.rglob("*") if p.is_symlink()]:
        link.unlink()


def prepare(
    submission: Path | str,
    *,
    environment: Mapping[str, str | None] | None = None,
    limits: Limits | None = None,
    use_sandbox: bool = True,
    found: Probe | None = None,
) -> Sandbox:
    """A private folder with a copy of ``submission`` and, where available, a sandbox around it.

    Args:
        submission: The submission's folder (its notebook and any files beside it).
        environment: Environment of the kernel (``KIT_*`` settings); ``None`` values unset.
        limits: :class:`Limits`; the defaults when None.
        use_sandbox: False runs the kernel unsandboxed (still in the private copy).
        found: What :func:`probe` found, when the caller already knows (a grading
            worker process need not start the probe's kernel again).

    Returns:
        A :class:`Sandbox`; its :meth:`Sandbox.close` removes everything it made.
    """
    import tempfile

    source = Path(submission)
    if not source.is_dir():
        raise FileNotFoundError(f"submission folder {source} does not exist.")
    limits = limits or Limits()
    if not use_sandbox:
        found = Probe(False, "sandbox turned off", None, "rlimit")
    elif found is None:
        found = probe()
    scratch = Path(tempfile.mkdtemp(prefix="kit-grade-"))
    scratch.chmod(0o700)
    try:
        copy = scratch / "submission"
        copy_without_links(source, copy)
        ipc = scratch / "ipc"
        ipc.mkdir()
        env = {k: v for k, v in (environment or {}).items() if v is not None}
        binds = data_paths(environment or {})
        box = Sandbox(found, limits, scratch, copy, ipc, env, binds)
        if found.available and found.cgroup != "rlimit":
            box.cgroup = cgroups.ControlGroup(
                uuid.uuid4().hex[:12], parent=CGROUP_PREFIX, version=found.cgroup.split()[-1],
                controllers=CGROUP_CONTROLLERS,
            )
            try:
                box.cgroup.create(limits.group_limits())
            except OSError:  # not allowed after all: resource limits instead
                box.cgroup.remove(grace=0)
                box.cgroup = None
        return box
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise


@functools.cache
def kernel_manager_class() -> type:
    """A Jupyter kernel manager that starts its kernel through :meth:`Sandbox.wrap`.

    The sandbox is handed over as the ``sandbox`` attribute of the config
    (``config.SandboxedKernelManager.sandbox_id``) through :data:`ACTIVE`.
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import Unicode

    class SandboxedKernelManager(AsyncKernelManager):
        """nbclient's kernel manager, its kernel started inside the submission's sandbox."""

        sandbox_id = Unicode("", config=True, help="Key of the active Sandbox in instructor_tools.isolation.sandbox.ACTIVE.")

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            command = super().format_kernel_cmd(extra_arguments)
            box = ACTIVE.get(self.sandbox_id)
            if box is None:
                raise RuntimeError("no sandbox is prepared for this kernel; grade through instructor_tools.grading.grader.")
            if box.sandboxed:
                # A SIGINT to the process group would stop bubblewrap itself (and with it the
                # kernel): interrupt through the kernel's control channel instead.
                self.kernel_spec.interrupt_mode = "message"
            return box.wrap(command)

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            box = ACTIVE.get(self.sandbox_id)
            if box is not None:
                # Into a pipe the grader drains (bounded), not the grader's terminal: the
                # sandbox's own errors then reach the report, and a student's prints do not.
                kw["stdout"], kw["stderr"] = subprocess.PIPE, subprocess.STDOUT
            await super()._async_launch_kernel(kernel_cmd, **kw)
            process = getattr(self.provisioner, "process", None)
            if box is not None and process is not None and process.stdout is not None:
                box.output.follow(process.stdout)

    return SandboxedKernelManager


class OutputTail:
    """The first and last few KB of a stream, drained by a thread so that the writer never blocks."""

    def __init__(self, head: int = 16384, tail: int = 16384) -> None:
        self._head = bytearray()
        self._tail = bytearray()
        self._limits = (head, tail)
        self._dropped = 0
        self._threads: list[Any] = []

    def follow(self, stream: Any) -> None:
        """Read ``stream`` until it ends, in a daemon thread."""
        import threading

        def drain() -> None:
            for chunk in iter(lambda: stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536), b""):
                self.add(chunk)
            stream.close()

        thread = threading.Thread(target=drain, name="kit-kernel-output", daemon=True)
        thread.start()
        self._threads.append(thread)

    def add(self, chunk: bytes) -> None:
        head, tail = self._limits
        room = head - len(self._head)
        self._head += chunk[:room]
        rest = chunk[max(room, 0):]
        self._tail += rest
        if len(self._tail) > tail:
            self._dropped += len(self._tail) - tail
            del self._tail[: len(self._tail) - tail]

    def text(self, wait: float = 0.0) -> str:
        """What was kept, as text (``wait``: seconds to let the thread finish reading first)."""
        for thread in self._threads:
            thread.join(wait)
        middle = f"\n[... {self._dropped} bytes left out ...]\n" if self._dropped else ""
        return (bytes(self._head).decode(errors="replace") + middle + bytes(self._tail).decode(errors="replace"))


def reason_from_output(output: str) -> str:
    """The line of a kernel's output that says why it could not start, or its last line.

    >>> reason_from_output("kernel: 1: exec: /tmp/c/.venv/bin/python: not found\\n")
    'kernel: 1: exec: /tmp/c/.venv/bin/python: not found'
    >>> reason_from_output("noise\\nbwrap: Can't find source path /x: No such file or directory\\nmore")
    "bwrap: Can't find source path /x: No such file or directory"
    >>> reason_from_output("")
    'the kernel wrote nothing'
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in ("bwrap:", "exec:", "not found", "No such file", "Fatal Python error", "Error", "Permission denied"):
        for line in lines:
            if marker in line:
                return line
    return lines[-1] if lines else "the kernel wrote nothing"


def _run_coroutine(coroutine: Any) -> Any:
    """Run a coroutine to its end, also from inside a running event loop (in a thread of its own)."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def check_kernel(found: Probe, kernel_name: str = KERNEL_NAME, timeout: float = 90) -> str:
    """Start the course's kernel in a sandbox once, exactly as grading does; "" when it answers, else why not.

    The kernel runs on an empty submission with the grader's environment, must reply
    to ``kernel_info`` and import ``helpers``. The answer quotes the sandbox or the
    kernel ("exec: .../python: not found") and says what to do.

    Args:
        found: A probe whose bubblewrap works (``available``), or an unsandboxed one.
        kernel_name: The Jupyter kernel to start.
        timeout: Seconds the kernel has to start and answer.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kit-probe-") as folder:
        try:
            box = prepare(folder, use_sandbox=found.available, found=found)
        except SandboxUnavailable as error:
            return str(error)
        ACTIVE[box.scratch.name] = box
        try:
            problem = _run_coroutine(_ask_kernel(box, kernel_name, timeout))
        finally:
            ACTIVE.pop(box.scratch.name, None)
            box.close()
    if not problem:
        return ""
    where = "inside the grading sandbox" if found.available else "for grading"
    said = reason_from_output(box.output.text(wait=2))
    return (
        f"the kernel {kernel_name!r} does not start {where}: {problem}; it said: {said}. Check that the kernel's "
        "Python has the kit installed (make setup, then python -m helpers kernel) and that every folder it needs "
        "exists, then grade again (this check runs before any submission is touched)"
    )


async def _ask_kernel(box: Sandbox, kernel_name: str, timeout: float) -> str:
    """Start a kernel in ``box``, ask it to import ``helpers``; "" or what went wrong."""
    import asyncio

    from jupyter_client.kernelspec import NoSuchKernel

    manager = kernel_manager_class()(kernel_name=kernel_name, sandbox_id=box.scratch.name, **box.kernel_config())
    try:
        await manager.start_kernel()
    except NoSuchKernel:
        return f"no kernel spec named {kernel_name!r} is installed"
    except Exception as error:  # noqa: BLE001 - any start failure is reported with its words
        return f"it could not be launched ({type(error).__name__}: {error})"
    client = manager.client()
    client.start_channels()
    try:
        try:
            await client.wait_for_ready(timeout=timeout)
        except (RuntimeError, TimeoutError, asyncio.TimeoutError) as error:
            return "it died before replying" if "died" in str(error) else f"no reply within {timeout:.0f} s"
        reply = await client.execute_interactive(
            "import helpers", timeout=timeout, store_history=False, output_hook=lambda message: None
        )
        if reply["content"]["status"] != "ok":
            return f"it cannot import the kit ({reply['content'].get('ename')}: {reply['content'].get('evalue')})"
        return ""
    except (TimeoutError, asyncio.TimeoutError):
        return f"it did not answer within {timeout:.0f} s"
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


# sandbox id -> Sandbox, for the kernel managers nbclient creates from a config.
ACTIVE: dict[str, Sandbox] = {}


def describe(found: Probe, limits: Limits) -> str:
    """One line for the grading report."""
    if not found.available:
        return f"UNSANDBOXED: {found.reason}"
    return (
        f"sandboxed (bubblewrap; memory {limits.memory_mb} MB and {limits.processes} processes by {found.cgroup}, "
        f"{limits.disk_mb} MB private disk, no network)"
    )

