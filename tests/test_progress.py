"""The kit's progress bars read complete in a saved notebook's plain-text fallback (GitHub, nbviewer,
nbgrader's feedback HTML), and stay tqdm's text bar outside a notebook."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import kernel, progress

ROOT = Path(__file__).resolve().parents[1]

_CELLS = {
    "finished": "from helpers import progress\nfor _ in progress.bar(range(40), desc='frames', unit='img'):\n    pass",
    "hidden when done": "with progress.bar(total=10, desc='weights.h5', unit='B', leave=False) as b:\n    b.update(10)",
    "stopped by an error": (
        "try:\n    for i in progress.bar(range(10), desc='broken'):\n        if i == 4:\n            raise KeyError(i)\n"
        "except KeyError:\n    pass"
    ),
    "turned off": "for _ in progress.bar(range(3), desc='quiet', disable=True):\n    pass",
}


def _plain_texts(cell) -> list[str]:
    return [o["data"]["text/plain"] for o in cell.outputs if o.get("output_type") == "display_data"]


def test_saved_notebook_bars_read_how_they_ended():
    """Executed in the kit's kernel (as nbgrader and nbconvert do), each bar's saved text/plain is its last state."""
    from nbclient import NotebookClient

    assert kernel.installed() is not None, "run `python -m helpers kernel` (make setup does)"
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": kernel.KERNEL_NAME, "language": "python", "display_name": kernel.DISPLAY_NAME}}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in _CELLS.values()]
    NotebookClient(notebook, timeout=60, kernel_name=kernel.KERNEL_NAME).execute()
    cells = dict(zip(_CELLS, notebook.cells))

    finished = _plain_texts(cells["finished"])
    assert len(finished) == 1 and re.match(r"frames: 100%\|#+\| 40/40 \[", finished[0]), finished
    widget = [o for o in cells["finished"].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widget, "a live notebook still shows tqdm's widget"
    hidden = cells["hidden when done"].outputs
    assert [o["data"] for o in hidden] == [{"text/plain": hidden[0]["data"]["text/plain"]}], "a hidden bar leaves text only"
    assert re.match(r"weights\.h5: 100%\|#+\| 10/10 ", hidden[0]["data"]["text/plain"]), hidden
    broken = _plain_texts(cells["stopped by an error"])
    assert len(broken) == 1 and " 4/10 " in broken[0] and "40%" in broken[0], f"an interrupted bar says how far: {broken}"
    assert cells["turned off"].outputs == []
    streams = [o for cell in notebook.cells for o in cell.outputs if o.get("output_type") == "stream"]
    assert streams == [], f"no stray text or stderr around the bars: {streams}"


def test_outside_a_notebook_it_is_the_text_bar_on_stderr():
    # a fresh process, as in a terminal: tqdm.auto decides once per process whether it runs in a notebook, and
    # takes one that merely imported ipykernel (a Jupyter server) for a notebook; there is no kernel to draw in
    script = ("import ipykernel.zmqshell\nfrom helpers import progress\n"
              "with progress.bar(total=5, desc='files', unit='file') as files:\n    files.update(5)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "" and re.search(r"files: 100%\|\S+\| 5/5", run.stderr), run
    assert list(progress.bar(iter([1, 2, 3]), disable=True)) == [1, 2, 3]
    with pytest.raises(TypeError, match="desc must be a string"):
        progress.bar(range(3), desc=3)
    with pytest.raises(TypeError, match="unit must be a string"):
        progress.bar(range(3), unit=None)


def test_the_kit_draws_its_bars_through_helpers_progress():
    """A bare tqdm bar would save '0%' in a notebook: every helper goes through progress.bar."""
    direct = []
    for path in sorted((ROOT / "helpers").glob("*.py")):
        if path.name == "progress.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(name == "tqdm" or name.startswith("tqdm.") for name in names):
                    direct.append(f"{path.name}:{node.lineno}")
    assert direct == [], f"use helpers.progress.bar instead of tqdm in {direct}"
