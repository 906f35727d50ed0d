"""Wall time of every notebook per profile, and the accuracies the notebooks end with.

Each notebook of ``solutions/`` (solutions and hidden tests included) is copied to a
scratch folder and executed there, top to bottom, in a fresh ``python3`` kernel with
the profile's per-cell timeout and the environment a classroom would have
(``KIT_PROFILE``, MobileNet alpha 0.75, the course data, one fresh kit cache per
profile shared by the notebooks in course order, as a student working through the
course has). The wall time runs from the kernel's start to the end of the last cell.

Then one extra cell, run in the same kernel after the timing stops, reports the
notebook's results: every number whose name contains "acc" (``test_accuracy``...),
every dict of such numbers and every small table with an accuracy column
(comparison tables), leaving out
per-epoch histories and per-seed runs (tables with an ``epoch`` or ``seed`` column)
and the names the graded test cells define (their toy inputs and expected values).
That is how the accuracy of each notebook's final models is read without a second
training run.

What one student's kernel costs a shared server (the classroom hub's sizing) is read
from the kernel process itself when its last cell has run: its peak resident memory
(the kernel's ``VmHWM`` high-water mark plus the largest child process, MiB) and its
CPU-seconds (user + system, children included).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import ROOT, Context, now

WORKSHOP_BUDGET_S = 300.0  # each notebook, workshop profile, MobileNet, 2 cores
SMOKE_BUDGET_S = 300.0  # all notebooks together, smoke profile
PROBE_MARKER = "KIT-BENCHMARK-RESULTS "
PROBE_SOURCE = r'''
def _kit_benchmark_results(ignored):
    import json, numbers
    found = {}
    for name, value in list(globals().items()):
        if name.startswith("_") or isinstance(value, bool) or name in ignored:
            continue
        try:
            if isinstance(value, numbers.Real) and "acc" in name.lower():
                found[name] = float(value)
            elif type(value).__name__ == "DataFrame" and len(value) <= 60:
                columns = [c for c in value.columns if "acc" in str(c).lower()]
                per_run = {"epoch", "seed"} & {str(c).lower() for c in value.columns}
                if columns and not per_run:
                    table = value.reset_index()
                    found[name] = json.loads(table.to_json(orient="records", default_handler=str))
            elif isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
                scores = {k: float(v) for k, v in value.items()
                          if "acc" in k.lower() and isinstance(v, numbers.Real) and not isinstance(v, bool)}
                if scores:
                    found[name] = scores
            elif hasattr(value, "accuracy") and hasattr(value, "name") and isinstance(getattr(value, "accuracy"), numbers.Real):
                found[name] = {"model": str(value.name), "accuracy": float(value.accuracy)}
        except Exception as error:  # a result we cannot read is reported, never fatal
            found[name] = f"unreadable: {error}"
    print(%r + json.dumps(found, default=str))
_kit_benchmark_results(set(%%r))
''' % PROBE_MARKER


def course_notebooks(root: Path = ROOT) -> list[Path]:
    """The source notebook of every assignment, in course order."""
    from instructor_tools.course import course_folder

    return [course_folder.source_notebook(name, root) for name in course_folder.list_assignments(root)]


def toy_notebooks(folder: Path) -> list[Path]:
    """Two tiny notebooks without TensorFlow, for the tiny run (each in its own folder).

    Their results are known: ``toy_a`` reports ``test_accuracy`` 0.5 and ``scores``
    {"test accuracy": 0.6}; its graded test cell's ``expected_accuracy`` is not a result.
    ``toy_b`` reports the ``results`` table; its per-epoch ``history`` is not a result.
    """
    import nbformat

    sources = {
        "toy_a": [
            "import time\ntime.sleep(0.1)",
            "test_accuracy = 0.5\nscores = {'test accuracy': 0.6, 'seconds': 3.0}",
            "expected_accuracy = 0.9\nassert test_accuracy < expected_accuracy",
        ],
        "toy_b": [
            "import pandas as pd\nresults = pd.DataFrame({'approach': ['x', 'y'], 'accuracy': [0.25, 0.75]})\n"
            "history = pd.DataFrame({'epoch': [1, 2], 'accuracy': [0.1, 0.2]})",
        ],
    }
    paths = []
    for name, cells in sources.items():
        notebook = nbformat.v4.new_notebook()
        notebook.metadata = {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}}
        notebook.cells = [nbformat.v4.new_markdown_cell(f"# {name}")] + [nbformat.v4.new_code_cell(c) for c in cells]
        for index, cell in enumerate(notebook.cells):
            cell.id = f"{name}-{index}"
        if name == "toy_a":
            notebook.cells[-1].metadata["nbgrader"] = {
                "grade": True, "solution": False, "locked": True, "grade_id": "test_toy", "points": 1, "schema_version": 3,
            }
        path = folder / name / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, path)
        paths.append(path)
    return paths


def _cell_seconds(cell: Any) -> float | None:
    """A cell's run time from nbclient's timing metadata."""
    import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    began, ended = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not began or not ended:
        return None
    parse = datetime.datetime.fromisoformat
    return (parse(ended.replace("Z", "+00:00")) - parse(began.replace("Z", "+00:00"))).total_seconds()


def _test_cell_names(notebook: Any) -> list[str]:
    """Names assigned in graded test cells: toy inputs and expected values, not the notebook's results."""
    import ast

    names: set[str] = set()
    for cell in notebook.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:  # IPython magics: nothing to learn from this cell
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
    return sorted(names)


def _probe_results(cell: Any) -> dict[str, Any]:
    for output in cell.get("outputs", []):
        text = output.get("text", "")
        for line in text.splitlines():
            if line.startswith(PROBE_MARKER):
                return json.loads(line[len(PROBE_MARKER):])
    return {}


def kernel_cost(pid: int | None) -> dict[str, float | None]:
    """Peak resident memory (MiB) and CPU-seconds of a running kernel process so far.

    The peak is the kernel's own high-water mark (``VmHWM`` in ``/proc/<pid>/status``,
    exact, no sampling) plus the largest high-water mark among its live children;
    CPU-seconds are user + system time of the kernel and its children. ``None`` where
    the platform does not say (no ``/proc``, or the process is gone).

    >>> import os
    >>> cost = kernel_cost(os.getpid())
    >>> cost["cpu_s"] is None or cost["cpu_s"] >= 0
    True
    """
    if pid is None:
        return {"peak_mib": None, "cpu_s": None}
    import psutil

    def high_water(process: "psutil.Process") -> float | None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        children = process.children(recursive=True)
    except psutil.Error:
        return {"peak_mib": None, "cpu_s": None}
    peak = high_water(process)
    child_peaks = [p for p in (high_water(child) for child in children) if p is not None]
    if peak is not None and child_peaks:
        peak += max(child_peaks)
    cpu = times.user + times.system + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    for child in children:
        try:
            child_times = child.cpu_times()
            cpu += child_times.user + child_times.system
        except psutil.Error:
            continue
    return {"peak_mib": None if peak is None else round(peak, 1), "cpu_s": round(cpu, 1)}


def _kernel_pid(client: Any) -> int | None:
    """The process id of an nbclient kernel started locally (None for remote kernels)."""
    process = getattr(getattr(client.km, "provisioner", None), "process", None)
    return getattr(process, "pid", None)


def execute(path: Path, workdir: Path, environment: dict[str, str | None], timeout: int) -> dict[str, Any]:
    """Run a copy of one notebook in ``workdir``; return its wall time, kernel cost, slowest cells, status, results.

    Args:
        path: The notebook (its folder is copied, so files beside it are there too).
        workdir: Scratch folder; the copy runs in ``workdir/<folder name>``.
        environment: Environment variables for the kernel.
        timeout: Seconds one cell may run.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from instructor_tools.course import course_folder

    folder = workdir / path.parent.name
    shutil.copytree(path.parent, folder, dirs_exist_ok=True)
    notebook = nbformat.read(folder / path.name, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    status, error, results = "ok", "", {}
    with course_folder.kernel_environment(environment):
        began = time.perf_counter()
        with client.setup_kernel():
            try:
                for index, cell in enumerate(notebook.cells):
                    client.execute_cell(cell, index)
            except (CellExecutionError, CellTimeoutError, DeadKernelError) as failure:
                status = "timeout" if isinstance(failure, CellTimeoutError) else "error"
                error = str(failure).strip().splitlines()[-1][:300] if str(failure).strip() else type(failure).__name__
            seconds = time.perf_counter() - began
            cost = kernel_cost(_kernel_pid(client))
            if status == "ok":
                probe = nbformat.v4.new_code_cell(PROBE_SOURCE % (_test_cell_names(notebook),))
                notebook.cells.append(probe)
                try:
                    client.execute_cell(probe, len(notebook.cells) - 1)
                    results = _probe_results(probe)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as failure:
                    results = {"probe_error": str(failure)[-300:]}
                notebook.cells.pop()
    cells = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            duration = _cell_seconds(cell)
            if duration is not None:
                cells.append({"cell": cell.get("id", str(index)), "seconds": round(duration, 2)})
    slowest = sorted(cells, key=lambda c: -c["seconds"])[:3]
    return {
        "notebook": path.parent.name,
        "date": now(),
        "seconds": round(seconds, 2),
        "peak_mib": cost["peak_mib"],
        "cpu_s": cost["cpu_s"],
        "status": status,
        "error": error,
        "slowest_cells": slowest,
        "results": results,
    }


def summarize(profile: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One profile's rows with their total and the verdict on the profile's budget."""
    total = sum(row["seconds"] for row in rows)
    all_ok = all(row["status"] == "ok" for row in rows)
    budget: dict[str, Any] | None = None
    if profile == "smoke":
        budget = {"rule": "all notebooks together", "limit_s": SMOKE_BUDGET_S, "met": all_ok and total <= SMOKE_BUDGET_S}
    elif profile == "workshop":
        worst = max((row["seconds"] for row in rows), default=0.0)
        budget = {"rule": "each notebook", "limit_s": WORKSHOP_BUDGET_S, "met": all_ok and worst <= WORKSHOP_BUDGET_S}
    for row in rows:
        row["within_budget"] = row["status"] == "ok" and (profile != "workshop" or row["seconds"] <= WORKSHOP_BUDGET_S)
    return {"notebooks": rows, "total_s": round(total, 2), "budget": budget}


def merge(previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Fold a partial run (some profiles, some notebooks) into the previous results, row by row."""
    if not previous or "profiles" not in previous:
        return new
    profiles = {name: list(entry["notebooks"]) for name, entry in previous["profiles"].items()}
    for name, entry in new["profiles"].items():
        rows = {row["notebook"]: row for row in profiles.get(name, [])}
        rows.update({row["notebook"]: row for row in entry["notebooks"]})
        profiles[name] = sorted(rows.values(), key=lambda row: row["notebook"])
    return new | {"profiles": {name: summarize(name, rows) for name, rows in profiles.items()}}


def run(context: Context, profiles: Sequence[str], notebooks: Sequence[Path] | None = None) -> dict[str, Any]:
    """Time every notebook in each profile (section 4) and collect their results (section 7).

    Args:
        context: Where the course data and the scratch folder are.
        profiles: Profiles to run, e.g. ``("smoke", "workshop")``.
        notebooks: Notebooks to run; every assignment of ``solutions/`` by default (the
            tiny run passes toy notebooks).

    Returns:
        ``{"profiles": {profile: {"notebooks": [...], "total_s": ..., "budget": ...}}}``.
    """
    from helpers.settings import PROFILES

    notebooks = list(notebooks) if notebooks is not None else course_notebooks()
    out: dict[str, Any] = {"date": now(), "profiles": {}}
    for profile in profiles:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}.")
        workdir = context.scratch / f"notebooks-{profile}"
        environment = context.kernel_environment(profile, workdir / "cache")
        rows = []
        for path in notebooks:
            print(f"  {profile}: {path.parent.name} ...", flush=True)
            row = execute(path, workdir, environment, PROFILES[profile].cell_timeout)
            print(f"    {row['seconds']:.1f} s, {row['status']} {row['error']}", flush=True)
            rows.append(row)
        out["profiles"][profile] = summarize(profile, rows)
    return out
