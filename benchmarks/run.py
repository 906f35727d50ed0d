"""The benchmark command: ``python -m benchmarks --size tiny|full [--only SECTIONS]``.

Sections (all by default):

- ``extraction``: 1. the kit's feature extraction from files against bare predict;
- ``head``: 2. a head-training epoch on cached features against plain Keras;
- ``block``: 3. a last-block epoch on cached block inputs against plain Keras, with
  the equivalence check;
- ``scaling``: 6. time against the number of images, with the log-log slope;
- ``notebooks``: 4. every notebook's wall time per profile, and 7. the accuracies the
  notebooks end with (from the workshop profile run);
- ``grading``: 5. autograding throughput of a simulated class (solutions, half-right,
  blank and damaged submissions), every score checked against what its kind must get;
- ``ablation``: 8. notebook 02's retraining recipe change by change on the Simpsons
  group split (frames of unseen episodes), 3 seeds, with the random split beside it
  (``KIT_BENCHMARK_CACHE`` names a kit cache to reuse for the extracted arrays);
- ``sandbox``: 9. a class of 30 for every graded notebook, graded sandboxed, and the
  sandbox's overhead per submission (sandboxed against unsandboxed, alternating).

``--size full`` writes ``benchmarks/REPORT.md``, ``benchmarks/results.json`` and
``benchmarks/plots/*.png``; ``--size tiny`` (seconds; what the test suite runs)
writes to ``benchmarks/out/tiny`` (ignored by git) unless ``--out`` says otherwise; a
run never replaces the results of the other size. With ``--only`` (or
``--notebooks``), the sections not run are kept from the previous ``results.json`` in
the output folder (each section records its own date and machine), so a long section
can be re-run alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks import common

SECTIONS = ("extraction", "head", "block", "scaling", "notebooks", "grading", "ablation", "sandbox", "training_loop")
RESULTS_FILE = "results.json"
REPORT_FILE = "REPORT.md"
DEFAULT_OUT = {"full": common.ROOT / "benchmarks", "tiny": common.ROOT / "benchmarks" / "out" / "tiny"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the kit's CPU-first claims (as ratios), the notebook budgets and accuracy; write a report.",
    )
    parser.add_argument("--size", choices=sorted(common.SIZES), default="full", help="tiny: seconds (tests); full: the committed report")
    parser.add_argument(
        "--only", default="", help=f"comma-separated sections to run (default all): {','.join(SECTIONS)}"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: benchmarks/ for full, benchmarks/out/tiny for tiny)")
    parser.add_argument("--shared", type=Path, default=common.DEFAULT_SHARED, help="course data folder with keras_home/models and datasets (default ../shared/data)")
    parser.add_argument("--profiles", default=None, help="profiles for the notebook timings (default: smoke,workshop for full; smoke for tiny)")
    parser.add_argument("--notebooks", default=None, help="comma-separated assignments to time (default: every one in solutions/); merged into the previous results")
    parser.add_argument(
        "--submissions", type=int, default=None,
        help="size of the simulated class to autograde, its kinds (solution, half right, blank...) shared out "
        "in proportion (default: 30 for full, 2 for tiny: a solution and a blank)",
    )
    parser.add_argument("--assignment", default=None, help="assignment to autograde (default 01_pretrained_scoring; a toy one for tiny)")
    parser.add_argument("--keep-scratch", action="store_true", help="keep the scratch folder (executed notebooks, caches) and print its path")
    return parser


def _sections(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()] or list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}.")
    return [name for name in SECTIONS if name in chosen]


def _existing(out: Path) -> dict[str, Any]:
    """The results already in ``out`` (empty when there are none or they cannot be read)."""
    try:
        data = json.loads((out / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _previous(out: Path, size: str) -> dict[str, Any]:
    """The previous results of the same size in ``out`` (empty when there are none)."""
    data = _existing(out)
    return data if data.get("size") == size else {}


def _guarded(name: str, work: Callable[[], dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    """Run one section; a Skip or an error becomes an entry of the report instead of a crash.

    The section records the machine it ran on, since a later partial run may keep it
    beside sections measured elsewhere.
    """
    print(f"== {name}", flush=True)
    load = common.load_average()
    began = time.perf_counter()
    try:
        result = work()
    except common.Skip as skip:
        print(f"   skipped: {skip}", flush=True)
        result = {"date": common.now(), "skipped": str(skip)}
    except Exception as error:  # noqa: BLE001 - reported in the report and the exit code
        traceback.print_exc()
        result = {"date": common.now(), "error": f"{type(error).__name__}: {error}"[:2000]}
    result["section_seconds"] = round(time.perf_counter() - began, 1)
    result["load_average_before"] = load
    result["load_average_after"] = common.load_average()
    result["machine"] = machine
    print(f"   {name} took {result['section_seconds']} s", flush=True)
    return result


def run(
    size_name: str,
    sections: Sequence[str],
    out: Path,
    shared: Path | None,
    *,
    profiles: Sequence[str] | None = None,
    notebook_names: Sequence[str] | None = None,
    submissions: int | None = None,
    assignment: str | None = None,
    keep_scratch: bool = False,
) -> dict[str, Any]:
    """Run the chosen sections and write the report; return the results written to ``results.json``."""
    from benchmarks import report

    size = common.SIZES[size_name]
    scratch = Path(tempfile.mkdtemp(prefix="kit-benchmarks-"))
    context = common.Context(size, shared if shared and shared.is_dir() else None, scratch)
    results: dict[str, Any] = {
        "size": size.name,
        "generated": common.now(),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "hardware": common.hardware(),
    }
    machine = common.machine(results["hardware"])
    previous = _previous(out, size.name)
    results["sections"] = dict(previous.get("sections", {}))
    kept = [name for name in SECTIONS if name in results["sections"] and name not in sections]
    if kept:
        results["kept_from_earlier_runs"] = kept
    if previous.get("inputs"):
        results["inputs"] = previous["inputs"]
    try:
        in_process = [s for s in sections if s in ("extraction", "head", "block", "scaling")]
        if in_process:
            from benchmarks import core

            state: dict[str, Any] = {}

            def prepared() -> dict[str, Any]:
                if not state:
                    state.update(core.prepare(context))
                return state

            for name in in_process:
                results["sections"][name] = _guarded(
                    name, lambda name=name: core.SECTIONS[name](context, prepared()), machine
                )
                if state:
                    results["inputs"] = state["describe"]
        if "notebooks" in sections:
            from benchmarks import notebooks

            def timed_notebooks() -> dict[str, Any]:
                chosen = tuple(profiles or size.profiles)
                if size.toy_notebooks:
                    paths = notebooks.toy_notebooks(scratch / "toy-notebooks")
                else:
                    paths = notebooks.course_notebooks()
                    if notebook_names:
                        known = {path.parent.name: path for path in paths}
                        unknown = sorted(set(notebook_names) - set(known))
                        if unknown:
                            raise ValueError(f"unknown notebook(s) {unknown}; choose from {sorted(known)}.")
                        paths = [known[name] for name in known if name in notebook_names]
                return notebooks.merge(results["sections"].get("notebooks"), notebooks.run(context, chosen, paths))

            results["sections"]["notebooks"] = _guarded("notebooks", timed_notebooks, machine)
        if "grading" in sections:
            from benchmarks import grading

            results["sections"]["grading"] = _guarded(
                "grading",
                lambda: grading.run(context, size.submissions if submissions is None else submissions, assignment),
                machine,
            )
        if "ablation" in sections:
            from benchmarks import ablation

            earlier = results["sections"].get("ablation")
            results["sections"]["ablation"] = _guarded("ablation", lambda: ablation.run(context, earlier), machine)
        if "sandbox" in sections:
            from benchmarks import grading as sandboxed_grading

            results["sections"]["sandbox"] = _guarded(
                "sandbox",
                lambda: sandboxed_grading.run_every_notebook(
                    context, size.submissions if submissions is None else submissions
                ),
                machine,
            )
        if "training_loop" in sections:
            from benchmarks import training_loop

            results["sections"]["training_loop"] = _guarded(
                "training_loop", lambda: training_loop.run(context), machine
            )
        if "inputs" not in results:
            results["inputs"] = {}
        report.write(out, results)
    finally:
        if keep_scratch:
            print(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``; exit code 1 when a section failed with an error."""
    args = _parser().parse_args(argv)
    sections = _sections(args.only)
    out = (args.out or DEFAULT_OUT[args.size]).resolve()
    other = _existing(out).get("size")
    if other not in (None, args.size):
        raise SystemExit(
            f"{out / RESULTS_FILE} holds a {other}-size run, which a {args.size}-size run would replace; "
            "pass --out to write somewhere else."
        )
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()] if args.profiles else None
    from helpers.device import import_tensorflow, quiet_environment

    quiet_environment()
    if any(s in sections for s in ("extraction", "head", "block", "scaling")):
        # Keras warns about retracing when many models are fitted in one process: expected here.
        import_tensorflow().get_logger().setLevel("ERROR")
    results = run(
        args.size, sections, out, args.shared, profiles=profiles, submissions=args.submissions,
        notebook_names=[n.strip() for n in args.notebooks.split(",") if n.strip()] if args.notebooks else None,
        assignment=args.assignment, keep_scratch=args.keep_scratch,
    )
    print(f"report: {out / REPORT_FILE}")
    failed = [name for name in sections if "error" in results["sections"].get(name, {})]
    if failed:
        print(f"sections with errors: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
