"""The kit's named kernel: installed where Jupyter finds it, runs this environment, and every notebook asks for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import kernel


def test_install_writes_a_spec_that_runs_this_environment(tmp_path):
    folder = kernel.install(prefix=str(tmp_path))
    assert folder == tmp_path / "share" / "jupyter" / "kernels" / kernel.KERNEL_NAME
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and spec["language"] == "python"
    kernel.install(prefix=str(tmp_path))  # idempotent: refreshing an existing spec is fine
    assert sorted(p.name for p in folder.iterdir()) == ["kernel.json"], "no temporary file left behind"


def test_jupyter_finds_the_kernel_and_it_imports_the_kit():
    """A real kernel started by name, as nbgrader and JupyterLab start it, imports helpers."""
    from jupyter_client.manager import start_new_kernel

    assert kernel.installed() is not None, "run `python -m helpers kernel` (make setup does)"
    manager, client = start_new_kernel(kernel_name=kernel.KERNEL_NAME)
    try:
        reply = client.execute_interactive("import helpers, sys; print(sys.executable)", timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_the_command_line_installs_it(tmp_path):
    """``python -m helpers kernel --user`` writes a spec Jupyter finds, and the kernel it starts imports the kit."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    data = tmp_path / "jupyter-data"
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_DATA_DIR": str(data)}
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "kernel", "--user"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    folder = data / "kernels" / kernel.KERNEL_NAME
    assert str(folder) in result.stdout, f"the command says where it installed the kernel: {result.stdout}"
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable, "the kernel runs the Python that installed it"
    assert "{connection_file}" in spec["argv"] and spec["display_name"] == kernel.DISPLAY_NAME

    # Another Jupyter (one that knows only the user's data folder) finds that spec and starts the kit's kernel from it.
    specs = KernelSpecManager(kernel_dirs=[str(data / "kernels")])
    assert Path(specs.get_kernel_spec(kernel.KERNEL_NAME).resource_dir) == folder
    manager = KernelManager(kernel_name=kernel.KERNEL_NAME, kernel_spec_manager=specs)
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    printed: list[str] = []
    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(
            "import helpers, sys; print(sys.executable)", timeout=60, output_hook=_collect(printed)
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        assert "".join(printed).strip() == sys.executable, f"the kernel runs {printed}, not {sys.executable}"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _collect(into: list[str]):
    """An output hook keeping what the kernel printed."""

    def hook(message: dict) -> None:
        if message["msg_type"] == "stream":
            into.append(message["content"]["text"])

    return hook
