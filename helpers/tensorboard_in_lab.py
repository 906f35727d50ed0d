"""TensorBoard inside JupyterLab, through jupyter-server-proxy.

The kit registers TensorBoard with jupyter-server-proxy (the ``jupyter_serverproxy_servers``
entry point in ``pyproject.toml``): every JupyterLab of this environment, the student's,
the instructor's and a JupyterHub's single-user servers, shows a **TensorBoard** tile in
its Launcher and serves it at ``<server URL>/tensorboard/``. The first visit starts
TensorBoard on a free loopback port; it reads every log folder under the server's root
(notebook 02 writes its own in ``logs/`` beside the notebook) and stops with the server.
Nothing listens on another address, and the link works behind a hub's proxy because the
address is relative to the user's server.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

#: The path under the Jupyter server where TensorBoard answers (``/tensorboard/``, or ``/user/<name>/tensorboard/`` on a hub).
PROXY_NAME = "tensorboard"
ICON = Path(__file__).resolve().parent / "jupyter" / "tensorboard.svg"


def server_root() -> Path:
    """The folder the running Jupyter server serves (its ``root_dir``), else the current folder."""
    try:
        from jupyter_server.serverapp import ServerApp

        if ServerApp.initialized():
            return Path(ServerApp.instance().root_dir).expanduser().resolve()
    except ImportError:  # pragma: no cover - jupyter_server is a dependency of JupyterLab
        pass
    return Path.cwd().resolve()


def tensorboard_command(port: int, logdir: Path | str | None = None) -> list[str]:
    """The TensorBoard command line: loopback only, on ``port``, reading ``logdir`` (the server's root).

    >>> tensorboard_command(6006, "/course")[-6:]
    ['--logdir', '/course', '--port', '6006', '--host', '127.0.0.1']
    """
    return [
        sys.executable, "-m", "tensorboard.main",
        "--reload_interval", "15",
        "--logdir", str(logdir if logdir is not None else server_root()),
        "--port", str(int(port)),
        "--host", "127.0.0.1",
    ]


def server_proxy() -> dict[str, Any]:
    """jupyter-server-proxy's description of TensorBoard (the ``jupyter_serverproxy_servers`` entry point)."""
    return {
        "command": lambda port: tensorboard_command(port),
        # TensorBoard imports TensorFlow: allow a slow laptop its first start.
        "timeout": 90,
        "environment": {"TF_CPP_MIN_LOG_LEVEL": "2"},
        "new_browser_tab": False,
        "launcher_entry": {"enabled": True, "title": "TensorBoard", "icon_path": str(ICON), "category": "Other"},
    }


def log_dir(name: str, folder: Path | str = "logs") -> Path:
    """A fresh TensorBoard log folder ``<folder>/<name>-<time>`` (relative to the notebook's folder).

    >>> import os
    >>> str(log_dir("simpsons", "logs")).startswith(os.path.join("logs", "simpsons-"))
    True
    """
    import time

    if not name or not str(name).strip():
        raise ValueError("give the run a name, for example log_dir('simpsons').")
    return Path(folder) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
