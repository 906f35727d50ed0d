"""JupyterHub configuration of the kit's classroom: one Linux server, one instructor, the students.

Started by ``python -m instructor_tools hub start --roster roster.csv`` (see ``instructor_tools/serving/hub.py``),
which creates the Unix accounts, the exchange, the instructor's course folder and the
``tl-workshop`` kernel, writes the settings this file reads (``hub.json`` in the hub's
state folder, named by ``KIT_HUB_SETTINGS``) and runs ``jupyterhub -f`` on this file.

What it sets up, and why:

- **Accounts and login**: real Unix accounts, logged in with their Unix password (PAM,
  JupyterHub's default authenticator). ``hub start`` gives every new account a
  first-login password from the roster (or a generated one, listed for the instructor in
  ``passwords.csv``); a student changes it with ``passwd`` in a JupyterLab terminal. Only
  the roster may log in; the instructor is the hub's admin.
- **Servers**: JupyterLab (``jupyterhub-singleuser`` of the kit's environment) running as
  the user, in their home folder, opening on ``/lab``. Every server and everything it
  starts lives in a control group of its own with the memory, CPU and process limits of
  the roster's role (:mod:`instructor_tools.isolation.cgroups`; cgroup v1 or v2). Where control groups are
  not writable the limits are only advertised (``MEM_LIMIT``/``CPU_LIMIT``) and ``hub
  start`` says so; on a systemd host ``jupyterhub-systemdspawner`` enforces the same
  limits (see docs/instructor-guide.md).
- **Kernel**: the kit's environment as the named kernel ``tl-workshop``, the default of
  every server; the settings every kernel reads (``KIT_PROFILE``, backbone, the shared
  read-only weights and datasets) come from the spawner's environment, and each user
  keeps a private cache (``~/.cache/tl-workshop-kit``).
- **nbgrader**: the exchange is a shared folder; students' servers have the Assignments
  tab and nothing of the instructor's tools (``classroom/jupyter/student``); submissions
  are private to their student and the instructor (:mod:`helpers.private_submissions`). The
  instructor's server has the formgrader on the course folder ``~/tl-workshop``
  (``classroom/jupyter/instructor``), which no student can read.
- **TensorBoard**: through jupyter-server-proxy at ``/user/<name>/tensorboard/`` (the kit's
  ``helpers.tensorboard_in_lab``), behind the hub's login like everything else.
"""

import json
import os
import pwd
import sys
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner

from instructor_tools.isolation import cgroups

c = get_config()  # noqa: F821 - injected by JupyterHub's (traitlets') config loader

CLASSROOM = Path(__file__).resolve().parent
SETTINGS = json.loads(Path(os.environ["KIT_HUB_SETTINGS"]).read_text())
STATE = Path(SETTINGS["state_dir"])
INSTRUCTORS = set(SETTINGS["instructors"])
STUDENTS = set(SETTINGS["students"])
BIN = Path(sys.executable).parent  # the kit's environment: the hub and every user's server run from it


class ClassroomSpawner(LocalProcessSpawner):
    """Local processes as the user, each user's server inside a control group with the role's limits."""

    def _limits(self) -> cgroups.Limits:
        role = "instructor" if self.user.name in INSTRUCTORS else "student"
        limits = SETTINGS["limits"][role]
        return cgroups.Limits(
            memory_bytes=cgroups.parse_memory(limits.get("memory")),
            cpus=limits.get("cpus"),
            tasks=limits.get("tasks"),
        )

    def make_preexec_fn(self, name):
        drop_privileges = super().make_preexec_fn(name)
        group = getattr(self, "_cgroup", None)

        def preexec():
            if group is not None:
                group.add(os.getpid())  # still root here: join the group, then become the user
            drop_privileges()

        return preexec

    async def start(self):
        limits = self._limits()
        self.mem_limit = limits.memory_bytes  # advertised to the server as MEM_LIMIT / CPU_LIMIT
        self.cpu_limit = limits.cpus
        self._cgroup = None
        if cgroups.detect() is not None:
            group = cgroups.ControlGroup(self.user.name)
            group.kill()  # a kernel left from an earlier server must not count against this one
            enforced = group.create(limits)
            self._cgroup = group
            self.log.info("Limits for %s: %s", self.user.name, ", ".join(enforced) or "none")
        else:
            self.log.warning("Control groups are not writable: %s runs without enforced limits", self.user.name)
        return await super().start()

    async def stop(self, now=False):
        await super().stop(now=now)
        group = getattr(self, "_cgroup", None) or (
            cgroups.ControlGroup(self.user.name) if cgroups.detect() is not None else None
        )
        if group is not None:
            group.remove()  # kernels and terminals the server left behind go with it


def user_environment(spawner):
    """Per-user settings: the role's Jupyter config, the private cache, the course folder."""
    name = spawner.user.name
    home = Path(pwd.getpwnam(name).pw_dir)
    role = "instructor" if name in INSTRUCTORS else "student"
    environment = {
        **spawner.environment,  # a new dict: the configured one is shared by every spawner
        "JUPYTER_CONFIG_PATH": str(CLASSROOM / "jupyter" / role),
        "KIT_CACHE_DIR": str(home / ".cache" / "tl-workshop-kit"),
    }
    if role == "instructor":
        environment["KIT_COURSE_DIR"] = str(home / SETTINGS["course_folder"])
    spawner.environment = environment


c.JupyterHub.ip = SETTINGS["ip"]
c.JupyterHub.port = SETTINGS["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = SETTINGS["hub_port"]
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every user's server
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.default_url = "/hub/home"
c.ConfigurableHTTPProxy.command = [SETTINGS["proxy_command"]]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{SETTINGS['proxy_api_port']}"
c.ConfigurableHTTPProxy.pid_file = str(STATE / "jupyterhub-proxy.pid")
c.ConfigurableHTTPProxy.debug = False

# The kit's own command line (`hub status`, the tests) talks to the hub with this service's token.
c.JupyterHub.services = [{"name": "kit-hub-cli", "api_token": (STATE / "admin-token").read_text().strip()}]
c.JupyterHub.load_roles = [
    {
        "name": "kit-hub-cli",
        "scopes": ["admin:users", "admin:servers", "tokens", "list:users", "read:users", "access:servers"],
        "services": ["kit-hub-cli"],
    }
]

c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.open_sessions = False  # no login session (utmp, pam_systemd) for a web server process
c.Authenticator.allowed_users = INSTRUCTORS | STUDENTS
c.Authenticator.admin_users = INSTRUCTORS
c.Authenticator.delete_invalid_users = True  # a student removed from the roster loses hub access too

c.JupyterHub.spawner_class = ClassroomSpawner
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
c.Spawner.pre_spawn_hook = user_environment
c.Spawner.environment = {
    # the environment's bin/ first: nbgrader runs alembic, TensorBoard and jupyter from there
    "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
    "KIT_PROFILE": SETTINGS["profile"],
    "KIT_EXCHANGE_ROOT": SETTINGS["exchange"],
    "KIT_COURSE_ID": SETTINGS["course_id"],
    **{name: str(value) for name, value in SETTINGS["kit"].items()},
}
