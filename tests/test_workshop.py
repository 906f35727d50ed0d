"""The README's workshop command: prepare, setup check, then JupyterLab serving notebooks/ on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import workshop

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_lab_command_listens_on_loopback_only():
    command = workshop.lab_command(9999, headless=True, notebook_dir=ROOT / "notebooks")
    assert "--ServerApp.ip=127.0.0.1" in command and "--no-browser" in command
    assert f"--ServerApp.root_dir={ROOT / 'notebooks'}" in command


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_workshop_command_checks_then_serves_jupyterlab(tmp_path, kit_settings):
    port, token = _free_port(), "kit-test-token"
    env = dict(os.environ, JUPYTER_TOKEN=token, KIT_BACKBONE="mobilenet", KIT_ALPHA="0.75",
               KIT_CACHE_DIR=str(tmp_path / "cache"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    if kit_settings.weights_mirror:
        env |= {"KIT_WEIGHTS_MIRROR": str(kit_settings.weights_mirror), "KIT_DATA_DIR": str(kit_settings.data_dir)}
    log = tmp_path / "workshop.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "helpers", "workshop", "--headless", "--offline", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        status = None
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=5) as reply:
                    status = json.load(reply)
                    break
            except OSError:
                time.sleep(1)
        text = log.read_text()
        assert status is not None, f"JupyterLab did not answer on 127.0.0.1:{port}:\n{text[-3000:]}"
        names = {item["name"] for item in status["content"]}
        assert names == {p.name for p in (ROOT / "notebooks").iterdir() if not p.name.startswith(".")}
        # The setup check ran first and printed the device summary and the cache status.
        assert text.index("Device:") < text.index("Launching JupyterLab")
        assert "Weights cache:" in text and "Preparing weights and datasets" in text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
