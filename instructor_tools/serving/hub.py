"""``python -m instructor_tools hub start|stop|status``: the classroom JupyterHub on one Linux server.

``start`` (as root) reads a CSV roster, creates the Unix accounts that do not exist yet
(first-login passwords in ``<state>/passwords.csv``, readable by root only), prepares the
nbgrader exchange, the instructor's private course folder (``~<instructor>/tl-workshop``,
a copy of this project's course) and the ``tl-workshop`` kernel, installs
configurable-http-proxy from the npm registry into ``classroom/node_modules`` when it is
missing (``npm ci``, pinned by ``classroom/package-lock.json``), then starts JupyterHub
on ``classroom/jupyterhub_config.py`` in the background and prints its URL.
``stop`` stops the hub, its proxy, every user's server and kernel (``--remove-users``
also deletes the accounts ``start`` created); ``status`` says what runs and what each
user's server uses.

The roster (``classroom/roster.example.csv``)::

    username,role,name,password
    teacher,instructor,Ada Lovelace,
    alice,student,Alice Liddell,
    bob,student,,Choose-a-passphrase-1

``role`` is ``instructor`` or ``student`` (default); an empty password is generated.
Accounts that already exist are used as they are (their password is never changed),
and ``--remove-users`` only ever deletes accounts that ``start`` created.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from helpers import kernel
from instructor_tools.course.roster import ROLES, Member, read_members
from instructor_tools.isolation import cgroups

ROOT = Path(__file__).resolve().parents[2]
CLASSROOM = ROOT / "classroom"
CONFIG_FILE = CLASSROOM / "jupyterhub_config.py"
DEFAULT_STATE = Path("/srv/tl-workshop-hub")
DEFAULT_EXCHANGE = Path("/srv/nbgrader/exchange")
#: The GECOS comment of every account ``hub start`` creates: only those are ever removed.
ACCOUNT_MARKER = "tl-workshop classroom"
COURSE_FOLDER = "tl-workshop"
COURSE_ID = "tl-workshop"
#: Per-role limits. A student's workshop-profile kernel peaks at 1.6 GiB (notebook 05, measured;
#: docs/instructor-guide.md, "Sizing a hub server"), its JupyterLab server takes 0.13 GiB more and
#: TensorBoard, opened from the Launcher, about 0.5 GiB: 2.5 GiB leaves room for all three.
DEFAULT_LIMITS: dict[str, dict[str, Any]] = {
    "student": {"memory": "2.5G", "cpus": 1.0, "tasks": 512},
    "instructor": {"memory": "8G", "cpus": 2.0, "tasks": 1024},
}


class HubError(RuntimeError):
    """The hub cannot be started, stopped or read; the message says what to do."""


# --------------------------------------------------------------------------- roster


def read_roster(path: Path | str) -> list[Member]:
    """The members of the class roster (:func:`instructor_tools.course.roster.read_members`), with an instructor.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a bad line (the message names it), or no instructor.
    """
    members = read_members(path)
    if not any(m.role == "instructor" for m in members):
        raise ValueError(f"{path}: the roster needs one instructor (role 'instructor').")
    return members


# --------------------------------------------------------------------------- accounts


def _run(command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise HubError(f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()}")
    return result


def _account(username: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(username)
    except KeyError:
        return None


def created_by_hub(username: str) -> bool:
    """Whether ``username`` exists and was created by ``hub start`` (its comment says so)."""
    entry = _account(username)
    return entry is not None and entry.pw_gecos.split(",")[0].endswith(ACCOUNT_MARKER)


def ensure_accounts(members: Sequence[Member], home_base: Path | None = None) -> dict[str, str]:
    """Create the roster's missing Unix accounts; returns their first-login passwords.

    Every new account gets a private home (0700) and a private group named like the
    user; the instructors join every student's group, which is how they read the
    students' (private) submissions in the exchange (:mod:`helpers.private_submissions`).
    """
    passwords: dict[str, str] = {}
    for member in members:
        if _account(member.username) is None:
            comment = f"{member.name} - {ACCOUNT_MARKER}" if member.name else ACCOUNT_MARKER
            command = ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", "--comment", comment]
            if home_base is not None:
                command += ["--base-dir", str(home_base)]
            _run(command + [member.username])
            password = member.password or secrets.token_urlsafe(9)
            _run(["chpasswd"], input=f"{member.username}:{password}\n")
            passwords[member.username] = password
        os.chmod(pwd.getpwnam(member.username).pw_dir, 0o700)
    students = [m.username for m in members if m.role == "student"]
    for instructor in (m.username for m in members if m.role == "instructor"):
        if students:
            _run(["usermod", "--append", "--groups", ",".join(students), instructor])
    return passwords


def _kill_user_processes(uid: int, grace: float = 3.0) -> None:
    """End every process of one (classroom) user, by process id."""
    import psutil

    def owned() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["uids"]):
            try:
                if process.info["uids"] and process.info["uids"].real == uid:
                    found.append(process)
            except psutil.Error:
                continue
        return found

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        victims = owned()
        for process in victims:
            try:
                process.send_signal(sig)
            except psutil.Error:
                pass
        psutil.wait_procs(victims, timeout=wait)


def remove_accounts(usernames: Sequence[str]) -> list[str]:
    """Delete the accounts ``hub start`` created (home included); returns who was removed.

    Accounts without the hub's marker (the instructor's own account, a system user) are
    never touched.
    """
    removed = []
    for username in usernames:
        if not created_by_hub(username):
            continue
        entry = pwd.getpwnam(username)
        _kill_user_processes(entry.pw_uid)
        result = subprocess.run(["userdel", "--remove", username], capture_output=True, text=True)
        if _account(username) is not None:
            raise HubError(f"could not remove the account {username}: {result.stderr.strip()}")
        try:  # userdel keeps a private group that still has members (the instructor joins each student's)
            if grp.getgrgid(entry.pw_gid).gr_name == username:
                _run(["groupdel", username])
        except KeyError:
            pass
        removed.append(username)
    return removed


# --------------------------------------------------------------------------- shared folders, course, kernel


#: Parts of the project students must not read on a shared server: the answers and hidden
#: tests (also in git's history) and any grading done in the project folder itself.
PRIVATE_PARTS = ("solutions", ".git", "submitted", "autograded", "feedback", "gradebook.db")


def protect_answers(root: Path = ROOT) -> list[Path]:
    """Take every permission of "others" off the project's private parts; returns what was changed.

    The students' servers run the kit from this project (its ``helpers`` package), so the
    project stays readable; only :data:`PRIVATE_PARTS` are closed (the owner and group
    keep their rights, so the instructor's copies and root's commands are unaffected).
    """
    changed = []
    for name in PRIVATE_PARTS:
        path = root / name
        if path.exists() and os.stat(path).st_mode & 0o007:
            os.chmod(path, os.stat(path).st_mode & ~0o007 & 0o7777)
            changed.append(path)
    return changed


#: The instructor's package, installed (editable) in the environment every user's server runs.
INSTRUCTOR_PACKAGE = ROOT / "instructor_tools"
#: The group that may read it on the hub: root and the roster's instructors.
INSTRUCTORS_GROUP = "tl-workshop-instructors"
#: In the state folder: the package folder's group and mode before ``start`` closed it, for ``stop``.
PACKAGE_RECORD = "instructor-package.json"


def close_instructor_package(instructors: Sequence[str], state_dir: Path, package: Path = INSTRUCTOR_PACKAGE) -> Path:
    """Make the instructor's package readable by root and the instructors only; returns its record.

    The students' servers and kernels run the kit's environment, where ``instructor_tools``
    is installed from this project: a student could import the grading code, the tamper
    rules and the references of the hidden tests. The package folder goes to the group
    :data:`INSTRUCTORS_GROUP` (created if missing; the instructors join it, so their
    servers load the course's ``nbgrader_config.py``, which imports the package) with mode
    0750, so a student's ``import instructor_tools`` fails with "Permission denied". Its
    group and mode before are kept in ``<state>/instructor-package.json`` (the first
    record stays when a hub that crashed is started again) and put back by
    :func:`open_instructor_package`, which ``stop`` calls.
    """
    record = state_dir / PACKAGE_RECORD
    created = False
    try:
        gid = grp.getgrnam(INSTRUCTORS_GROUP).gr_gid
    except KeyError:
        _run(["groupadd", "--system", INSTRUCTORS_GROUP])
        gid, created = grp.getgrnam(INSTRUCTORS_GROUP).gr_gid, True
    for instructor in instructors:
        _run(["usermod", "--append", "--groups", INSTRUCTORS_GROUP, instructor])
    before = os.stat(package)
    saved = json.loads(record.read_text()) if record.is_file() else {
        "path": str(package), "gid": before.st_gid, "mode": before.st_mode & 0o7777, "group_created": False}
    saved["group_created"] = saved["group_created"] or created
    record.write_text(json.dumps(saved, indent=1) + "\n")
    os.chmod(record, 0o600)
    os.chown(package, -1, gid)
    os.chmod(package, (before.st_mode & 0o7700) | 0o050)  # the owner as it was, the group reads, others nothing
    return record


def open_instructor_package(state_dir: Path) -> Path | None:
    """Put back the group and mode :func:`close_instructor_package` recorded; returns the folder (None: nothing to do).

    The group it created is removed too (its members keep their other groups).
    """
    record = state_dir / PACKAGE_RECORD
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())
    package = Path(saved["path"])
    if package.exists():
        os.chown(package, -1, saved["gid"])
        os.chmod(package, saved["mode"])
    if saved.get("group_created"):
        subprocess.run(["groupdel", INSTRUCTORS_GROUP], capture_output=True, text=True)
    record.unlink()
    return package


def ensure_exchange(path: Path) -> Path:
    """nbgrader's exchange: a folder everyone can write to, sticky so nobody deletes another's files."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, 0, 0)
    os.chmod(path, 0o1777)
    return path


def ensure_course(instructor: str, source: Path = ROOT) -> Path:
    """The instructor's course folder ``~/tl-workshop`` (0700), copied from ``source`` the first time.

    It holds ``nbgrader_config.py``, ``solutions/`` and ``notebooks/``; grading work
    already in it is never overwritten. Students enter its gradebook when their first
    submission is collected (``nbgrader db student import`` adds the whole roster).
    """
    entry = pwd.getpwnam(instructor)
    course = Path(entry.pw_dir) / COURSE_FOLDER
    if not (course / "nbgrader_config.py").is_file():
        course.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / "nbgrader_config.py", course / "nbgrader_config.py")
        for folder in ("solutions", "notebooks"):
            shutil.copytree(source / folder, course / folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    _run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(course)])
    os.chmod(course, 0o700)
    return course


def unreachable_folders(paths: Sequence[Path] | None = None) -> list[Path]:
    """Folders on the way to the kit's environment that other users cannot enter.

    Every user's server runs the environment's Python: the interpreter (a venv links to
    it), the environment and this project must be reachable by everyone. A Python built
    under root's home (pyenv in ``/root``, mode 0700) is not; the fix is an environment
    built from a system-wide Python, or ``chmod o+x`` on the folders listed.
    """
    if paths is None:
        paths = [Path(os.path.realpath(sys.executable)), Path(sys.prefix), ROOT]
    blocked: list[Path] = []
    for path in paths:
        for folder in reversed(Path(path).resolve().parents):
            if not os.stat(folder).st_mode & 0o001 and folder not in blocked:
                blocked.append(folder)
    return blocked


def ensure_kernel() -> Path:
    """The kit's environment as the named kernel ``tl-workshop`` (installed into the environment if missing)."""
    return kernel.installed() or kernel.install(prefix=sys.prefix)


def proxy_command(install: bool = True) -> Path:
    """configurable-http-proxy from ``classroom/node_modules`` (installed with ``npm ci`` when missing)."""
    local = CLASSROOM / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return local
    if not install:
        raise HubError("configurable-http-proxy is not installed: run `python -m instructor_tools hub start` (it runs npm ci).")
    npm = shutil.which("npm")
    if npm is None:
        raise HubError(
            "npm is not installed: the hub needs configurable-http-proxy from the npm registry. Install Node.js with "
            "npm (Debian/Ubuntu: `sudo apt-get install npm`), then run this again."
        )
    command = [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
    print(f"Installing configurable-http-proxy into {CLASSROOM / 'node_modules'} ...", file=sys.stderr)
    result = subprocess.run(command, cwd=CLASSROOM, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not local.exists():
        raise HubError(f"`{' '.join(command)}` failed in {CLASSROOM} (exit {result.returncode}): {result.stderr.strip()}")
    return local


# --------------------------------------------------------------------------- the hub process


@dataclass
class Hub:
    """A running (or stopped) hub, as read from its state folder."""

    state_dir: Path

    @property
    def settings(self) -> dict[str, Any]:
        path = self.state_dir / "hub.json"
        if not path.is_file():
            raise HubError(f"no hub was started with the state folder {self.state_dir} (no hub.json).")
        return json.loads(path.read_text())

    @property
    def url(self) -> str:
        settings = self.settings
        host = "127.0.0.1" if settings["ip"] in ("", "0.0.0.0") else settings["ip"]
        return f"http://{host}:{settings['port']}/"

    @property
    def token(self) -> str:
        return (self.state_dir / "admin-token").read_text().strip()

    def pid(self) -> int | None:
        """The hub's process id while it runs."""
        try:
            pid = int((self.state_dir / "hub.pid").read_text())
        except (OSError, ValueError):
            return None
        try:  # reap it if it is our own child that has exited (a zombie still answers kill 0)
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return None
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def api(self, path: str, method: str = "GET", body: Any = None, token: str | None = None, timeout: float = 30) -> Any:
        """Call the hub's REST API (``/hub/api/<path>``) with the admin service's token."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + "hub/api/" + path.lstrip("/"), data=data, method=method,
            headers={"Authorization": f"token {token or self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text else None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(
    roster: Path | str,
    *,
    state_dir: Path = DEFAULT_STATE,
    exchange: Path = DEFAULT_EXCHANGE,
    ip: str = "0.0.0.0",
    port: int = 8000,
    hub_port: int | None = None,
    proxy_api_port: int | None = None,
    home_base: Path | None = None,
    profile: str = "workshop",
    kit: dict[str, str] | None = None,
    limits: dict[str, dict[str, Any]] | None = None,
    timeout: float = 90,
) -> Hub:
    """Prepare everything and start the hub in the background; returns it once it answers.

    Args:
        roster: CSV roster (see the module docstring).
        state_dir: The hub's own folder (database, cookie secret, logs, passwords).
        exchange: nbgrader's exchange folder.
        ip, port: Where the hub's proxy listens (all addresses by default; 127.0.0.1 for tests).
        hub_port, proxy_api_port: The hub's and the proxy API's loopback ports (free ones by default).
        home_base: Folder for new home folders (``/home`` by default).
        profile: The kit's profile every kernel runs (``KIT_PROFILE``).
        kit: Other ``KIT_*`` settings for every kernel, e.g. ``{"KIT_WEIGHTS_MIRROR": ...,
            "KIT_DATA_DIR": ...}`` pointing at the read-only shared weights and datasets.
        limits: Per-role limits overriding :data:`DEFAULT_LIMITS`.
        timeout: Seconds to wait for the hub to answer.

    Raises:
        HubError: not root, JupyterHub or npm missing, a hub already running, or the hub did not start.
    """
    if os.geteuid() != 0:
        raise HubError("the hub creates Unix accounts and runs servers as their users: run it as root (sudo).")
    members = read_roster(roster)
    hub = Hub(Path(state_dir).resolve())
    jupyterhub = _check_can_start(hub)
    proxy = proxy_command()
    try:
        _prepare_server(members, hub.state_dir, Path(exchange), home_base)
    except BaseException:
        open_instructor_package(hub.state_dir)  # no hub runs: the package is not left closed
        raise
    settings = {
        "state_dir": str(hub.state_dir),
        "ip": ip,
        "port": port,
        "hub_port": hub_port or _free_port(),
        "proxy_api_port": proxy_api_port or _free_port(),
        "proxy_command": str(proxy),
        "instructors": [m.username for m in members if m.role == "instructor"],
        "students": [m.username for m in members if m.role == "student"],
        "exchange": str(Path(exchange).resolve()),
        "course_id": COURSE_ID,
        "course_folder": COURSE_FOLDER,
        "profile": profile,
        "kit": dict(kit or {}),
        "limits": {role: dict(DEFAULT_LIMITS[role]) | dict((limits or {}).get(role, {})) for role in ROLES},
    }
    (hub.state_dir / "hub.json").write_text(json.dumps(settings, indent=1) + "\n")
    _launch(hub, jupyterhub, timeout)
    return hub


def _check_can_start(hub: Hub) -> Path:
    """The environment's ``jupyterhub`` program, once nothing stands in the way of starting a hub from it.

    Raises:
        HubError: a hub already runs from this state folder, JupyterHub is not installed, or
            other users cannot reach the environment their servers run.
    """
    if (hub.state_dir / "hub.json").is_file() and hub.pid() is not None:
        raise HubError(
            f"a hub is already running from {hub.state_dir} (pid {hub.pid()}): `python -m instructor_tools hub stop` first."
        )
    jupyterhub = Path(sys.executable).parent / "jupyterhub"
    if not jupyterhub.exists():
        raise HubError("JupyterHub is not installed in this environment: `pip install -e '.[instructor]'`.")
    blocked = unreachable_folders()
    if blocked:
        raise HubError(
            f"the users' servers run {sys.executable}, but other users cannot enter {', '.join(map(str, blocked))}: "
            "build the environment from a system-wide Python (not one in root's home), or `chmod o+x` those folders."
        )
    return jupyterhub


def _prepare_server(members: Sequence[Member], state_dir: Path, exchange: Path, home_base: Path | None) -> None:
    """Everything the hub's users need before it starts: the state folder, the accounts (new passwords
    saved for root), the answers closed to students, the exchange, each instructor's course, the kernel
    and the admin token."""
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    if home_base is not None:
        Path(home_base).mkdir(parents=True, exist_ok=True)
    passwords = ensure_accounts(members, home_base)
    if passwords:
        _save_passwords(state_dir / "passwords.csv", members, passwords)
    closed = protect_answers()
    if closed:
        print(f"Closed to the students (answers, hidden tests, grading): {', '.join(str(p) for p in closed)}", file=sys.stderr)
    close_instructor_package([m.username for m in members if m.role == "instructor"], state_dir)
    print(f"Readable by root and {INSTRUCTORS_GROUP} only (the instructors): {INSTRUCTOR_PACKAGE}", file=sys.stderr)
    ensure_exchange(exchange)
    for member in members:
        if member.role == "instructor":
            ensure_course(member.username)
    ensure_kernel()
    token_file = state_dir / "admin-token"
    if not token_file.exists():
        token_file.write_text(secrets.token_hex(32))
        os.chmod(token_file, 0o600)


def _save_passwords(path: Path, members: Sequence[Member], passwords: dict[str, str]) -> None:
    """Add the new accounts' first-login passwords to ``passwords.csv`` (root only), replacing older lines."""
    rows = [line for line in path.read_text().splitlines()[1:] if line.split(",")[0] not in passwords] if path.exists() else []
    roles = {m.username: m.role for m in members}
    rows += [f"{user},{roles[user]},{password}" for user, password in passwords.items()]
    path.write_text("username,role,first-login password\n" + "\n".join(rows) + "\n")
    os.chmod(path, 0o600)


def _launch(hub: Hub, jupyterhub: Path, timeout: float) -> None:
    """Run JupyterHub on the shipped configuration in the background until its API answers.

    Raises:
        HubError: it exited or did not answer within ``timeout`` seconds (everything it started is stopped).
    """
    state_dir = hub.state_dir
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIT_", "JUPYTER", "KERAS_"))}
    env |= {"KIT_HUB_SETTINGS": str(state_dir / "hub.json"), "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
    log = (state_dir / "jupyterhub.log").open("ab")
    process = subprocess.Popen(
        [str(jupyterhub), "-f", str(CONFIG_FILE)], cwd=state_dir, env=env,
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    log.close()
    (state_dir / "hub.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while True:
        try:
            hub.api("")
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = (state_dir / "jupyterhub.log").read_text(errors="replace")[-3000:]
            stop(state_dir)
            raise HubError(f"JupyterHub did not start (see {state_dir / 'jupyterhub.log'}):\n{tail}")
        time.sleep(0.5)


def stop(state_dir: Path = DEFAULT_STATE, *, remove_users: bool = False, timeout: float = 30) -> list[str]:
    """Stop the hub, its proxy and every user's server and kernel; returns what was done, in words.

    Safe to call when nothing runs. With ``remove_users`` the accounts ``start`` created
    (from the settings it saved) are deleted, homes included.
    """
    hub = Hub(Path(state_dir).resolve())
    done: list[str] = []
    pid = hub.pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)  # JupyterHub stops the servers and the proxy it started
        deadline = time.monotonic() + timeout
        while hub.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if hub.pid() is not None:
            os.killpg(pid, signal.SIGKILL)
        done.append(f"hub (pid {pid}) stopped")
    for pid_file in ("jupyterhub-proxy.pid",):
        try:
            proxy_pid = int((hub.state_dir / pid_file).read_text())
            os.kill(proxy_pid, signal.SIGTERM)
            done.append(f"proxy (pid {proxy_pid}) stopped")
        except (OSError, ValueError):
            pass
    settings: dict[str, Any] = {}
    try:
        settings = hub.settings
    except HubError:
        pass
    users = set(settings.get("instructors", [])) | set(settings.get("students", []))
    for group in cgroups.groups():
        if not users or group.name in users:
            left = group.kill()
            group.remove()
            if left:
                done.append(f"{len(left)} process(es) of {group.name} ended")
    cgroups.remove_parent()
    reopened = open_instructor_package(hub.state_dir)
    if reopened is not None:
        done.append(f"{reopened} readable by every user again")
    (hub.state_dir / "hub.pid").unlink(missing_ok=True)
    if remove_users and users:
        removed = remove_accounts(sorted(users))
        if removed:
            done.append(f"accounts removed: {', '.join(removed)}")
    return done


def status(state_dir: Path = DEFAULT_STATE) -> dict[str, Any]:
    """Whether the hub runs, its URL, and each user's server with what it uses now."""
    hub = Hub(Path(state_dir).resolve())
    settings = hub.settings
    result: dict[str, Any] = {"running": hub.pid() is not None, "url": hub.url, "users": {}}
    usage = {group.name: group.usage() for group in cgroups.groups()}
    if result["running"]:
        for user in hub.api("users"):
            server = (user.get("servers") or {}).get("", {})
            result["users"][user["name"]] = {
                "admin": user.get("admin", False),
                "server": "ready" if server.get("ready") else ("starting" if server.get("pending") else "stopped"),
                "last_activity": user.get("last_activity"),
                **usage.get(user["name"], {}),
            }
    result["limits"] = settings["limits"] if cgroups.detect() else "not enforced (control groups are not writable)"
    return result


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m instructor_tools hub start|stop|status``."""
    parser = argparse.ArgumentParser(prog="python -m instructor_tools hub", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state", type=Path, default=DEFAULT_STATE, help=f"the hub's own folder (default {DEFAULT_STATE})")
    commands = parser.add_subparsers(dest="command", required=True)
    begin = commands.add_parser("start", parents=[common], help="create the accounts and folders, start the hub, print its URL")
    begin.add_argument("--roster", type=Path, required=True, help="CSV roster: username,role,name,password")
    begin.add_argument("--ip", default="0.0.0.0", help="address students connect to (default: all)")
    begin.add_argument("--port", type=int, default=8000, help="port students connect to (default 8000)")
    begin.add_argument("--exchange", type=Path, default=DEFAULT_EXCHANGE, help=f"nbgrader exchange (default {DEFAULT_EXCHANGE})")
    begin.add_argument("--profile", default="workshop", help="the kit's profile every kernel runs (default workshop)")
    begin.add_argument("--weights-mirror", type=Path, help="read-only folder of the weight files (KIT_WEIGHTS_MIRROR)")
    begin.add_argument("--data-dir", type=Path, help="read-only folder of the datasets (KIT_DATA_DIR)")
    begin.add_argument("--backbone", help="KIT_BACKBONE for every kernel (e.g. mobilenet)")
    begin.add_argument("--alpha", help="KIT_ALPHA for every kernel (e.g. 0.75)")
    begin.add_argument("--student-memory", default=DEFAULT_LIMITS["student"]["memory"], help="per-student memory limit")
    begin.add_argument("--student-cpus", type=float, default=DEFAULT_LIMITS["student"]["cpus"], help="per-student cores")
    stop_parser = commands.add_parser("stop", parents=[common], help="stop the hub, every server and kernel")
    stop_parser.add_argument("--remove-users", action="store_true", help="also delete the accounts `start` created")
    commands.add_parser("status", parents=[common], help="what runs, and each user's memory and CPU")
    args = parser.parse_args(list(argv or []))
    try:
        if args.command == "start":
            kit = {
                name: str(value)
                for name, value in {
                    "KIT_WEIGHTS_MIRROR": args.weights_mirror and args.weights_mirror.resolve(),
                    "KIT_DATA_DIR": args.data_dir and args.data_dir.resolve(),
                    "KIT_BACKBONE": args.backbone,
                    "KIT_ALPHA": args.alpha,
                }.items()
                if value
            }
            limits = {"student": {"memory": args.student_memory, "cpus": args.student_cpus}}
            hub = start(args.roster, state_dir=args.state, exchange=args.exchange, ip=args.ip, port=args.port,
                        profile=args.profile, kit=kit, limits=limits)
            print(f"JupyterHub is running: {hub.url}  (log: {hub.state_dir / 'jupyterhub.log'})")
            print(f"First-login passwords of new accounts: {hub.state_dir / 'passwords.csv'} (root only)")
            if cgroups.detect() is None:
                print("warning: control groups are not writable here: per-student limits are NOT enforced.")
            return 0
        if args.command == "stop":
            for line in stop(args.state, remove_users=args.remove_users) or ["nothing was running"]:
                print(line)
            return 0
        report = status(args.state)
        print(f"hub: {'running at ' + report['url'] if report['running'] else 'stopped'}")
        for name, user in report["users"].items():
            memory = f"{user['memory_mib']:.0f} MiB (peak {user['peak_mib']:.0f})" if user.get("memory_mib") is not None else "–"
            cpu = f"{user['cpu_s']:.0f} CPU-s" if user.get("cpu_s") is not None else "–"
            print(f"  {name:<20} {'admin' if user['admin'] else '':<6}{user['server']:<9}{memory:>24} {cpu:>10}")
        limits = report["limits"]
        if isinstance(limits, dict):
            limits = "; ".join(f"{role} {v['memory']}, {v['cpus']:g} CPU, {v['tasks']} tasks" for role, v in limits.items())
        print(f"limits per user: {limits}")
        return 0
    except (HubError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
