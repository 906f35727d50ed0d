"""The kit's named kernel: installed where Jupyter finds it, runs this environment, and every notebook asks for it."""

from __future__ import annotations

import json
import subprocess
import sys

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
    result = subprocess.run(
        [sys.executable, "-m", "helpers", "kernel", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--user" in result.stdout
