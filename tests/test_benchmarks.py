"""The benchmarks: their arithmetic, the report's structure, and the tiny run end to end.

The tiny run checks that the benchmark code works and that its report is complete
and well formed (every ratio a finite positive number), never that the goals are
met: CI machines are too noisy for that. Its output goes to a temporary folder,
never into benchmarks/.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import common, grading, report
from benchmarks import run as bench_run

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("extraction", "head", "block", "scaling", "notebooks", "grading", "ablation", "sandbox", "training_loop")


def test_loglog_slope_reads_linear_and_quadratic_growth():
    counts = [100, 200, 400, 800]
    assert common.loglog_slope(counts, [0.01 * n for n in counts]) == pytest.approx(1.0)
    assert common.loglog_slope(counts, [1e-5 * n * n for n in counts]) == pytest.approx(2.0)
    assert common.loglog_slope(counts, [3.0] * 4) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("counts", "seconds"),
    [([100], [1.0]), ([100, 200], [1.0]), ([100, 200], [0.0, 1.0]), ([100, 100], [1.0, 2.0])],
)
def test_loglog_slope_refuses_what_it_cannot_fit(counts, seconds):
    with pytest.raises(ValueError):
        common.loglog_slope(counts, seconds)


def test_alternate_warms_up_then_interleaves_the_repetitions():
    calls = []
    timings = common.alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] + ["a", "b"] * 3, "one untimed warm-up each, then A B alternating"
    assert all(len(t.wall) == 3 and len(t.cpu) == 3 for t in timings.values())
    assert all(t.median >= 0 for t in timings.values())
    with pytest.raises(ValueError):
        common.alternate({"a": lambda: None}, repeats=0)


def test_ratio_of_a_zero_time_is_nan_not_a_crash():
    assert common.ratio(2.0, 4.0) == 0.5
    assert math.isnan(common.ratio(1.0, 0.0))


def test_hardware_names_cpu_cores_ram_and_tensorflow():
    facts = common.hardware()
    assert facts["cpu"] and facts["cores"] >= 1
    assert facts["tensorflow"], "the TensorFlow version belongs in the report"


def test_report_of_skipped_failed_and_missing_sections_keeps_every_heading(tmp_path):
    results = {
        "size": "tiny",
        "generated": common.now(),
        "command": "python -m benchmarks --size tiny",
        "hardware": common.hardware(),
        "sections": {
            "extraction": {"skipped": "no course data here"},
            "head": {"error": "RuntimeError: boom"},
        },
    }
    path = report.write(tmp_path, results)
    text = path.read_text()
    for heading in report.HEADINGS:
        assert heading in text, f"missing heading {heading!r}"
    assert "Skipped: no course data here" in text
    assert "RuntimeError: boom" in text
    assert "Not run yet" in text
    assert json.loads((tmp_path / "results.json").read_text())["ratios"] == {}


def test_summary_lists_the_claims_in_section_order(tmp_path):
    results = {"size": "tiny", "generated": common.now(), "command": "python -m benchmarks", "hardware": common.hardware(),
               "sections": {}}
    text = report.write(tmp_path, results).read_text()
    summary = text.split(report.HEADINGS[0])[1].split(report.HEADINGS[1])[0]
    numbers = [int(line[2:].split(".")[0]) for line in summary.splitlines() if line[2:3].isdigit()]
    assert numbers and numbers == sorted(numbers), f"the summary's claims are out of order: {numbers}"


def _ablation_section(rows: list[tuple[dict, str, int, float]]) -> dict:
    """A section 8 of the current format, from rows of (options, split, seeds, validation accuracy)."""
    from benchmarks import ablation
    from helpers import retraining

    def fake_run(accuracy: float) -> dict:
        return {"val1": accuracy - 0.02, "val": accuracy, "test": accuracy - 0.01, "correct": 90, "test_images": 100,
                "train_s": 100.0, "train_cpu_s": 150.0, "phase2_kept": True, "epochs": [10, 14]}

    section = {
        "date": "2026-12-01T00:00:00+00:00", "source": "Simpsons, workshop profile", "weights": "ImageNet",
        "seeds": [42, 43, 44], "epochs": {"head": 40, "blocks": 14}, "format": ablation.RUNS_FORMAT,
        "default_recipe": dict(retraining.DEFAULT_RECIPE), "extraction_s": {"median": 30.0, "max": 40.0}, "goal": 0.92,
        "kit_default": {"row": ablation.DEFAULT_NAME, "options": dict(retraining.DEFAULT_RECIPE),
                        "reason": ablation.DEFAULT_REASON},
    }
    section["rows"] = [
        ablation._row(ablation.DEFAULT_NAME if not options else "a change", split, [fake_run(accuracy)] * seeds)
        | {"options": options} for options, split, seeds, accuracy in rows
    ]
    return section


def test_ablation_keeps_an_earlier_row_only_for_the_same_recipe_split_seeds_and_data():
    """KIT_BENCHMARK_KEEP_ROWS: a row of earlier results stands in for runs no longer cached, marked so."""
    from benchmarks import ablation

    previous = _ablation_section([({}, "random", 1, 0.95), ({}, "group", 3, 0.93), ({"label_smoothing": 0.0}, "group", 3, 0.94)])
    same = {key: previous[key] for key in ("source", "weights", "seeds", "epochs", "format", "default_recipe")}
    seeds = tuple(previous["seeds"])
    row = ablation._earlier_row(previous, {}, "group", seeds, same)
    assert row is not None and row["split"] == "group" and row["options"] == {} and row["measured"] == previous["date"]
    assert ablation._earlier_row(previous, {}, "random", seeds[:1], same)["split"] == "random"
    assert ablation._earlier_row(previous, {"label_smoothing": 0.5}, "group", seeds, same) is None, "another recipe"
    assert ablation._earlier_row(previous, {}, "group", seeds[:2], same) is None, "other seeds"
    assert ablation._earlier_row(previous, {}, "group", seeds, same | {"epochs": {"head": 1, "blocks": 1}}) is None
    other_default = same | {"default_recipe": same["default_recipe"] | {"n_blocks": 2}}
    assert ablation._earlier_row(previous, {}, "group", seeds, other_default) is None, "the default recipe changed"
    assert ablation._earlier_row(None, {}, "group", seeds, same) is None
    # Results of the first format (changes to the lab's recipe, before fit_two_phases): their {} is another recipe.
    committed = json.loads((ROOT / "benchmarks" / "results.json").read_text())["sections"]["ablation"]
    if committed.get("format") != ablation.RUNS_FORMAT:
        old_same = same | {key: committed[key] for key in ("source", "weights", "seeds", "epochs")}
        assert ablation._earlier_row(committed, {}, "group", tuple(committed["seeds"]), old_same) is None
    section = previous | {"rows": [previous["rows"][0], row | {"kept_from_earlier": True}, *previous["rows"][2:]]}
    text = "\n".join(report._ablation(section))
    assert f"**{row['recipe']}** (kit default) †" in text and f"Kept from the run of {row['measured']}" in text
    assert "Best on validation: a change" in text and ablation.DEFAULT_REASON in text, "a better row says why the default differs"
    assert "Note: measured before" in "\n".join(report._ablation(section | {"note": "measured before the change."}))


def test_ablation_switches_off_one_trick_of_the_default_recipe_per_row():
    """Section 8 compares each trick as a visible change: one argument of fit_two_phases away from notebook 02's default."""
    import inspect

    from benchmarks import ablation
    from helpers import retraining

    arguments = inspect.signature(retraining.fit_two_phases).parameters
    defaults = dict(retraining.DEFAULT_RECIPE) | {"phase2_schedule": arguments["phase2_schedule"].default}
    for name, change in ablation.CHANGES.items():
        assert len(change) == 1, f"{name!r} changes more than one thing"
        (key, value), = change.items()
        assert key in arguments or key == "flips", f"{name!r}: {key} is not an argument of fit_two_phases"
        assert value != defaults[key], f"{name!r} leaves the default's {key} as it is"
        assert ablation.NOTEBOOK_LINES[name] in ablation._title(name), "each row names notebook 02's line that changes"
    wanted = ablation._rows_wanted((42, 43, 44))
    assert [(name, split) for name, split, *_ in wanted[:2]] == [(ablation.DEFAULT_NAME, "random"), (ablation.DEFAULT_NAME, "group")]
    assert {names for _, _, names, _ in wanted[2:]} >= {(name,) for name in ablation.CHANGES}
    lab = ablation._recipe(ablation.COMBINATIONS["the lab's recipe (every trick off)"])
    assert lab["n_blocks"] == 1 and lab["label_smoothing"] == 0.0 and not lab["flips"] and not lab["class_weights"]
    assert lab["phase2_schedule"] == "constant" and lab["phase2_learning_rate"] == pytest.approx(1e-4)


@pytest.mark.parametrize("mix", [grading.REALISTIC_MIX, grading.GENERIC_MIX, grading.TOY_MIX], ids=["realistic", "generic", "toy"])
@pytest.mark.parametrize("submissions", [1, 2, 7, 29, 30, 31, 60])
def test_class_mix_shares_the_kinds_out_in_proportion_with_a_solution(mix, submissions):
    counts = grading.class_mix(mix, submissions)
    assert sum(counts.values()) == submissions
    assert counts["solution"] >= 1, "every simulated class needs a solution to show full marks are possible"
    total = sum(kind.share for kind in mix)
    for kind in mix:
        exact = submissions * kind.share / total
        assert abs(counts[kind.name] - exact) < 1 or (kind.name == "solution" and counts[kind.name] == 1), (
            f"{kind.name}: {counts[kind.name]} for a share of {exact:.2f}"
        )


def test_class_mix_of_thirty_is_the_realistic_class():
    assert sum(kind.share for kind in grading.REALISTIC_MIX) == grading.CLASS_SIZE
    counts = grading.class_mix(grading.REALISTIC_MIX, grading.CLASS_SIZE)
    assert counts == {kind.name: kind.share for kind in grading.REALISTIC_MIX}
    assert grading.class_mix(grading.TOY_MIX, 2) == {"solution": 1, "blank": 1}
    with pytest.raises(ValueError):
        grading.class_mix(grading.REALISTIC_MIX, 0)
    with pytest.raises(ValueError):
        grading.class_mix(grading.REALISTIC_MIX[1:], 30)


def _score(student, cells):
    from instructor_tools.grading import grader

    return grader.SubmissionScore(
        student, "a", sum(cells.values()), 5.0,
        {g: grader.CellScore(g, v, {"t1": 2.0, "t2": 3.0}[g], v, False) for g, v in cells.items()},
    )


def test_unexpected_scores_lists_every_cell_that_differs_from_its_kind():
    points = {"t1": 2.0, "t2": 3.0}
    expected = {"solution_00": frozenset(), "half_00": frozenset({"t2"}), "blank_00": None, "lost_00": frozenset()}
    scores = [
        _score("solution_00", {"t1": 2.0, "t2": 3.0}),
        _score("half_00", {"t1": 2.0, "t2": 3.0}),  # passes a test it must fail
        _score("blank_00", {"t1": 0.0}),  # t2 missing from the gradebook
        _score("stranger_00", {"t1": 2.0, "t2": 3.0}),
    ]
    assert grading.unexpected_scores(scores, expected, points) == [
        "lost_00: not graded",
        "blank_00/t2: got None, expected 0.0",
        "half_00/t2: got 3.0, expected 0.0",
        "stranger_00: graded, but not one of the simulated class",
    ]
    assert grading.unexpected_scores(scores[:1], {"solution_00": frozenset()}, points) == []


def test_report_shows_unexpected_grades_and_fails_the_budget(tmp_path):
    section = {
        "date": common.now(), "assignment": "01_pretrained_scoring", "submissions": 2, "jobs": 2, "cell_timeout_s": 60,
        "max_points": 10.0, "seconds": 20.0, "seconds_per_submission": 10.0, "projected_class_s": 300.0,
        "class_size": 30, "budget_s": 600.0, "budget_met": False, "ratio_budget_to_projected": 2.0,
        "unexpected": ["blank_00/test_preprocess: got 3.0, expected 0.0"],
        "kinds": [
            {"kind": "solution", "description": "the solution", "submissions": 1, "expected_points": 10.0,
             "scores": [10.0], "unexpected_cells": 0},
            {"kind": "blank", "description": "the release handed back unanswered", "submissions": 1,
             "expected_points": 0.0, "scores": [3.0], "unexpected_cells": 1},
        ],
    }
    results = {"size": "full", "generated": common.now(), "command": "python -m benchmarks", "hardware": common.hardware(),
               "sections": {"grading": section}}
    text = report.write(tmp_path, results).read_text()
    block = text.split(report.HEADINGS[5])[1].split(report.HEADINGS[6])[0]
    assert "Unexpected scores (1)" in block and "blank_00/test_preprocess: got 3.0, expected 0.0" in block
    assert "| the release handed back unanswered | 1 | 0 | 3 | **no** |" in block
    summary = text.split(report.HEADINGS[0])[1].split(report.HEADINGS[1])[0]
    row = next(line for line in summary.splitlines() if line.startswith("| 5. autograding"))
    assert "1 unexpected scores" in row and "0.50 of budget" in row and row.rstrip().endswith("**no** |")


def test_report_sets_the_laptop_profile_against_the_workshop_and_shows_its_ranking():
    def row(notebook, seconds, results=None):
        return {"notebook": notebook, "seconds": seconds, "status": "ok", "error": "", "slowest_cells": [],
                "results": results or {}}

    table = [{"approach": "transfer: head + last block", "accuracy": 0.91},
             {"approach": "raw pixels + logistic regression", "accuracy": 0.83},
             {"approach": "majority class", "accuracy": 0.5}]
    profiles = {
        "workshop": {"notebooks": [row("02_retrain_simpsons", 280.0), row("04_photo_vs_drawing", 200.0)], "total_s": 480.0},
        "laptop": {"notebooks": [row("02_retrain_simpsons", 130.0), row("04_photo_vs_drawing", 150.0, {"table": table})],
                   "total_s": 280.0},
    }
    text = "\n".join(report._notebooks({"profiles": profiles}))
    assert "**laptop against workshop**" in text and "every notebook together — met" in text
    assert "| 02_retrain_simpsons | 280 | 130 | 0.46 | yes |" in text
    assert "| 04_photo_vs_drawing | 200 | 150 | 0.75 | **no** |" in text
    assert "| **the workshop, every notebook above** | 480 | 280 | **0.58** | yes |" in text
    profiles["laptop"]["notebooks"][0]["seconds"] = 200.0
    assert "every notebook together — **not met**" in "\n".join(report._notebooks({"profiles": profiles}))
    ranking = "\n".join(report._laptop_ranking(profiles))
    assert "transfer: head + last block (0.910) > raw pixels + logistic regression (0.830) > majority class (0.500)" in ranking
    assert report._laptop_against_workshop({"workshop": profiles["workshop"]}) == []


def test_partial_run_keeps_earlier_sections_and_flags_another_machine(tmp_path):
    earlier = {
        "size": "tiny", "generated": "2000-01-01T00:00:00+00:00", "command": "python -m benchmarks --size tiny",
        "hardware": {"cpu": "an older CPU", "cores": 1, "ram_gb": 1.0},
        "sections": {"grading": {"date": "2000-01-01T00:00:00+00:00", "skipped": "kept",
                                 "machine": {"cpu": "an older CPU", "cores": 1, "ram_gb": 1.0}}},
    }
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    results = bench_run.run("tiny", [], tmp_path, None)
    assert results["sections"]["grading"] == earlier["sections"]["grading"]
    assert results["kept_from_earlier_runs"] == ["grading"]
    text = (tmp_path / "REPORT.md").read_text()
    assert "Kept from earlier runs (each with its own date): grading." in text
    assert "**Measured on another machine** (see `results.json`): grading." in text
    assert results["generated"][:10] in text


def test_a_run_never_replaces_the_results_of_the_other_size(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({"size": "full", "sections": {}}))
    with pytest.raises(SystemExit, match="full-size run"):
        bench_run.main(["--size", "tiny", "--only", "grading", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "results.json").read_text())["size"] == "full"


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``python -m benchmarks --size tiny`` into a temporary folder: (output folder, results, seconds)."""
    out = tmp_path_factory.mktemp("benchmarks")
    before = {p: p.stat().st_mtime_ns for p in (ROOT / "benchmarks").rglob("*") if p.is_file()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_") and k != "KERAS_HOME"}
    began = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--size", "tiny", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    seconds = time.perf_counter() - began
    assert completed.returncode == 0, f"tiny benchmark failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}"
    after = {p: p.stat().st_mtime_ns for p in (ROOT / "benchmarks").rglob("*") if p.is_file()}
    written = sorted(str(p) for p in after if before.get(p) != after[p] and "__pycache__" not in p.parts)
    assert not written, f"the tiny run wrote into benchmarks/: {written}"
    return out, json.loads((out / "results.json").read_text()), seconds


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_run_writes_a_complete_report(tiny_run):
    out, results, seconds = tiny_run
    text = (out / "REPORT.md").read_text()
    for heading in report.HEADINGS:
        assert heading in text, f"the report lacks {heading!r}"
    hardware = results["hardware"]
    for key in ("cpu", "cores", "ram_gb", "tensorflow"):
        assert hardware.get(key), f"hardware.{key} missing from results.json"
        assert str(hardware[key]) in text, f"the report does not show the {key}"
    assert results["generated"][:10] in text, "the report must carry its date"
    assert results["size"] == "tiny"
    for name in SECTIONS:
        section = results["sections"].get(name)
        assert section is not None, f"section {name} did not run"
        assert "error" not in section, f"section {name} failed: {section.get('error')}"
    plots = sorted((out / report.PLOTS_DIR).glob("*.png"))
    assert plots, "the report has no plots"
    for plot in plots:
        assert _png(plot), f"{plot} is not a PNG"
        assert f"({report.PLOTS_DIR}/{plot.name})" in text, f"{plot.name} is not shown in the report"
    print(f"tiny benchmark run: {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_run_ratios_are_finite_positive_numbers(tiny_run):
    _, results, _ = tiny_run
    ratios = results["ratios"]
    measured = [n for n in ("extraction", "head", "block") if "skipped" not in results["sections"][n]]
    assert "extraction" in measured, "extraction needs nothing but the kit: it must always be measured"
    assert {f"{n}.ratio" for n in measured} <= set(ratios), "every measured comparison must report its ratio"
    for name, value in ratios.items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{name} = {value!r}"
    for name, path in results["sections"]["scaling"]["paths"].items():
        if "skipped" in path:
            continue
        assert math.isfinite(path["slope"]), f"scaling slope of {name} is not finite"
        assert all(p["median_s"] > 0 for p in path["points"]), f"a scaling time of {name} is not positive"
    graded = results["sections"]["grading"]
    assert graded["unexpected"] == [], "every simulated submission must score what its kind must get"
    kinds = {kind["kind"]: kind for kind in graded["kinds"]}
    assert set(kinds) == {"solution", "blank"}, "the tiny class is a solution and a blank"
    assert kinds["solution"]["scores"] == [graded["max_points"]] and kinds["blank"]["scores"] == [0.0]
    for profile in results["sections"]["notebooks"]["profiles"].values():
        assert all(row["status"] == "ok" and row["seconds"] > 0 for row in profile["notebooks"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_run_reads_each_notebooks_results_and_nothing_else(tiny_run):
    _, results, _ = tiny_run
    rows = {row["notebook"]: row for row in results["sections"]["notebooks"]["profiles"]["smoke"]["notebooks"]}
    assert rows["toy_a"]["results"] == {"test_accuracy": 0.5, "scores": {"test accuracy": 0.6}}, (
        "scalars and dicts of accuracies are results; a graded test cell's expected values are not"
    )
    assert rows["toy_b"]["results"] == {"results": [{"index": 0, "approach": "x", "accuracy": 0.25},
                                                    {"index": 1, "approach": "y", "accuracy": 0.75}]}, (
        "tables with an accuracy column are results; per-epoch histories are not"
    )


def test_full_speed_keeps_the_repetitions_that_used_every_core():
    """A repetition whose CPU time equals its wall time ran on one core only; it leaves the median."""
    from benchmarks.common import Timing

    timing = Timing([5.2, 3.1, 5.3, 3.2, 3.0], [5.1, 5.4, 5.2, 5.5, 5.3])
    kept = timing.full_speed()
    assert kept.wall == [3.1, 3.2, 3.0] and kept.median == pytest.approx(3.1)
    assert timing.median == pytest.approx(3.2)  # the whole set is untouched
    lonely = Timing([5.2, 3.1, 5.3], [5.1, 5.4, 5.2])
    assert lonely.full_speed() is lonely, "with fewer than two full-speed repetitions every one must count"
    assert Timing([1.0, 1.0], [1.0, 1.0]).full_speed().wall == [1.0, 1.0]  # a one-core machine keeps all


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_run_ablation_has_every_recipe_and_the_kits_default(tiny_run):
    from benchmarks import ablation
    from helpers import retraining

    out, results, _ = tiny_run
    section = results["sections"]["ablation"]
    recipes = [(row["recipe"], row["split"]) for row in section["rows"]]
    assert recipes[:2] == [(ablation.DEFAULT_NAME, "random"), (ablation.DEFAULT_NAME, "group")], (
        "notebook 02's default on both splits comes first"
    )
    for name in [*ablation.CHANGES, *ablation.COMBINATIONS]:
        assert (ablation._title(name), "group") in recipes, f"the row {name!r} is missing"
    assert section["rows"][1]["options"] == {} and all(row["options"] for row in section["rows"][2:])
    assert all("kept_from_earlier" not in row for row in section["rows"])
    assert section["kit_default"]["row"] == ablation.DEFAULT_NAME
    assert section["kit_default"]["options"] == retraining.DEFAULT_RECIPE == section["default_recipe"]
    for row in section["rows"]:
        pooled = row["test_pooled"]
        assert 0 <= pooled["low"] <= pooled["accuracy"] <= pooled["high"] <= 1 and pooled["images"] > 0
    assert "(kit default)" in (out / "REPORT.md").read_text().split(report.HEADINGS[8])[1]


def test_the_ablation_seeds_can_be_chosen_and_bad_ones_are_refused(monkeypatch):
    """KIT_BENCHMARK_ABLATION_SEEDS replaces the section's seeds (the committed report: one seed), checked."""
    from benchmarks import ablation

    monkeypatch.delenv(ablation.SECTION_SEEDS_ENVIRONMENT, raising=False)
    assert ablation._section_seeds("full") == ablation.SEEDS["full"]
    monkeypatch.setenv(ablation.SECTION_SEEDS_ENVIRONMENT, "42, 7")
    assert ablation._section_seeds("full") == (42, 7)
    for bad in ("forty-two", " , "):
        monkeypatch.setenv(ablation.SECTION_SEEDS_ENVIRONMENT, bad)
        with pytest.raises(ValueError, match="KIT_BENCHMARK_ABLATION_SEEDS"):
            ablation._section_seeds("full")
