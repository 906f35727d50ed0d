"""``python -m helpers workshop``: the one command that opens the workshop.

Prepares the caches (weights and datasets), prints the setup check (settings, device
summary and advice, cache status), then launches JupyterLab on ``notebooks/``,
listening on 127.0.0.1 only. Missing weights or data do not stop the launch: the
table from ``prepare`` says what is missing and how to fix it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from helpers import kernel, lab_server, prepare, session

ROOT = Path(__file__).resolve().parents[1]


def lab_command(
    port: int, headless: bool, notebook_dir: Path, cull_idle_minutes: float = lab_server.DEFAULT_CULL_IDLE_MINUTES
) -> list[str]:
    """The student's JupyterLab command line the workshop runs (see :mod:`helpers.lab_server`)."""
    return lab_server.student_command(port, headless, notebook_dir, cull_idle_minutes)


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare, check, launch JupyterLab. Returns JupyterLab's exit code."""
    parser = argparse.ArgumentParser(prog="python -m helpers workshop", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888, help="port for JupyterLab (default 8888)")
    parser.add_argument("--headless", action="store_true", help="do not open a browser (servers, CI)")
    parser.add_argument("--offline", action="store_true", help="never download; use caches and mirrors only")
    parser.add_argument("--no-lab", action="store_true", help="prepare and check only")
    parser.add_argument(
        "--cull-idle-minutes", type=float, default=lab_server.DEFAULT_CULL_IDLE_MINUTES,
        help="shut down kernels left idle this long with no tab open (default %(default)g; 0 = never)",
    )
    parser.add_argument("--notebook-dir", type=Path, default=ROOT / "notebooks", help="folder to serve (default notebooks/)")
    args = parser.parse_args(list(argv or []))

    print("== Preparing weights and datasets")
    prepare.main(["--offline"] if args.offline else [])
    print("\n== Setup check")
    session.start(verbose=True)
    if args.no_lab:
        return 0
    notebook_dir = args.notebook_dir.resolve()
    headless = args.headless or not (os.environ.get("DISPLAY") or sys.platform == "darwin" or os.name == "nt")
    print(f"\n== Launching JupyterLab on {notebook_dir} at http://127.0.0.1:{args.port}/lab (Ctrl-C to stop)")
    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        print("JupyterLab is not installed in this environment; run `make setup`.", file=sys.stderr)
        return 1
    if kernel.installed() is None:  # a plain `pip install` (the student bundle, conda) does not install it
        print(f"Installing the notebooks' kernel {kernel.KERNEL_NAME!r} into {kernel.install()}")
    try:
        return subprocess.call(
            lab_command(args.port, headless, notebook_dir, args.cull_idle_minutes),
            cwd=ROOT, env=lab_server.student_environment(),
        )
    except KeyboardInterrupt:
        return 0
