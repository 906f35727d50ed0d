"""The kit's named Jupyter kernel, ``tl-workshop``: the kit's environment, by name.

Every notebook (``solutions/`` and the generated ``notebooks/``) and nbgrader ask for
the kernel ``tl-workshop``, not for a generic ``python3``. Opened from a Jupyter that
does not know the kit's environment, a notebook then stops at once with "no kernel
named tl-workshop" (and Jupyter offers to pick one), instead of running in some other
Python and failing later with ``ModuleNotFoundError: No module named 'helpers'``.

``make setup`` installs the kernel into the environment (``python -m helpers kernel``);
``python -m helpers kernel --user`` also makes it visible to the user's other Jupyters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from helpers.files import atomic_write

KERNEL_NAME = "tl-workshop"
DISPLAY_NAME = "Python (tl-workshop)"


def kernel_spec(python: str | None = None) -> dict:
    """The kernel spec: this environment's Python running ipykernel.

    >>> kernel_spec("/env/bin/python")["argv"][:3]
    ['/env/bin/python', '-m', 'ipykernel_launcher']
    """
    return {
        "argv": [python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "metadata": {"debugger": True},
    }


def kernel_dir(*, user: bool = False, prefix: str | None = None) -> Path:
    """Where the spec goes: ``<prefix>/share/jupyter/kernels/tl-workshop`` (the environment), or the user's folder."""
    if user:
        from jupyter_core.paths import jupyter_data_dir

        return Path(jupyter_data_dir()) / "kernels" / KERNEL_NAME
    return Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME


def install(*, user: bool = False, prefix: str | None = None, python: str | None = None) -> Path:
    """Install (or refresh) the ``tl-workshop`` kernel spec; returns its folder.

    Args:
        user: Install for the user (``~/.local/share/jupyter``) so other Jupyters find it
            too; by default it goes into the environment (``sys.prefix``).
        prefix: Environment folder (``sys.prefix`` by default).
        python: Interpreter the kernel runs (this one by default).
    """
    folder = kernel_dir(user=user, prefix=prefix)
    atomic_write(folder / "kernel.json", json.dumps(kernel_spec(python), indent=1) + "\n")
    return folder


def installed() -> Path | None:
    """The folder of the ``tl-workshop`` kernel Jupyter finds from this environment, or None."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        return Path(KernelSpecManager().get_kernel_spec(KERNEL_NAME).resource_dir)
    except NoSuchKernel:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers kernel [--user]``: install the kit's named kernel."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers kernel",
        description=f"Install the Jupyter kernel {KERNEL_NAME!r} (this environment's Python) that every notebook uses.",
    )
    parser.add_argument("--user", action="store_true", help="install for the user, so that other Jupyters find it too")
    options = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    folder = install(user=options.user)
    print(f"Kernel {KERNEL_NAME!r} ({sys.executable}) installed in {folder}")
    return 0
