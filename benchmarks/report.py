"""The benchmark report: ``REPORT.md``, the raw ``results.json`` and the plots under ``plots/``.

Every file is written to a temporary name and renamed, so an interrupted run leaves
the previous report whole.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

from benchmarks import training_loop
from benchmarks.common import SUPERLINEAR_SLOPE, atomic_write, machine

PLOTS_DIR = "plots"
HEADINGS = (
    "## Summary",
    "## 1. Feature extraction",
    "## 2. Head-training epoch",
    "## 3. Last-block epoch",
    "## 4. Notebook wall times",
    "## 5. Autograding throughput",
    "## 6. Scaling",
    "## 7. Accuracy",
    "## 8. Retraining recipe on unseen episodes",
    "## 9. Sandboxed grading of every notebook",
    "## Training loop on cached arrays: the kit's own loop against Keras's fit",
    "## Method",
)


# --------------------------------------------------------------------------- helpers


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Every side-by-side ratio of the run, by name (what the summary and the tests read)."""
    sections = results.get("sections", {})
    found = {}
    for name, key in (("extraction", "ratio"), ("head", "ratio"), ("block", "ratio"), ("grading", "ratio_budget_to_projected")):
        value = sections.get(name, {}).get(key)
        if value is not None:
            found[f"{name}.{key}"] = float(value)
    return found


def _number(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return "n/a"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if isinstance(value, float) and 0 < abs(value) < 0.1:
            return f"{value:.{digits}g}"  # small times keep their significant digits (0.0087, not 0.01)
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_number(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def _status(section: dict[str, Any] | None) -> str | None:
    """A line saying why a section has no numbers, or None when it has some."""
    if not section:
        return "_Not run yet: `python -m benchmarks --only <section>`._"
    if "skipped" in section:
        return f"_Skipped: {section['skipped']}_"
    if "error" in section:
        return f"_Failed: `{section['error']}`_"
    return None


def _when(section: dict[str, Any]) -> str:
    load = section.get("load_average_before")
    extra = f", load average {load} at its start" if load is not None else ""
    return f"_Measured {section.get('date', '?')}{extra}; section took {section.get('section_seconds', '?')} s._"


# --------------------------------------------------------------------------- plots


def _save(figure: Any, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, buffer.getvalue())


def _plots(out: Path, results: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = results.get("sections", {})
    folder = out / PLOTS_DIR
    made: dict[str, str] = {}

    extraction = sections.get("extraction", {})
    if "ratio" in extraction:
        figure, ax = plt.subplots(figsize=(5, 3))
        names = ["kit pipeline\n(from files)", "bare predict\n(decoded arrays)"]
        values = [extraction["kit"]["images_per_s"], extraction["bare"]["images_per_s"]]
        ax.bar(names, values, color=["tab:blue", "tab:gray"])
        ax.set_ylabel("images / s (median)")
        ax.set_title(f"Feature extraction: ratio {extraction['ratio']:.2f} (goal ≥ {extraction['goal']})")
        _save(figure, folder / "extraction.png")
        plt.close(figure)
        made["extraction"] = f"{PLOTS_DIR}/extraction.png"

    pairs = [(name, sections.get(name, {})) for name in ("head", "block")]
    pairs = [(name, s) for name, s in pairs if "ratio" in s]
    if pairs:
        figure, ax = plt.subplots(figsize=(6, 3.2))
        labels, kit, bare, floor, plain = [], [], [], [], []
        for name, section in pairs:
            labels.append(f"{'head' if name == 'head' else 'last block'}\nplain ÷ kit ×{section['ratio']:.1f}")
            kit.append(section["kit"]["median_s"])
            bare.append(section.get("kit_bare", {}).get("median_s", float("nan")))
            floor.append(section.get("floor", {}).get("median_s", float("nan")))
            plain.append(section["plain"]["median_s"])
        positions = list(range(len(labels)))
        bars = (
            (plain, "plain Keras fit through the base", "tab:gray"),
            (floor, "Keras fit on the cached arrays", "tab:cyan"),
            (kit, "the kit, with the lab's callbacks", "tab:blue"),
            (bare, "the kit's training alone", "tab:green"),
        )
        for offset, (values, label, colour) in zip((-0.3, -0.1, 0.1, 0.3), bars):
            ax.bar([p + offset for p in positions], values, width=0.2, label=label, color=colour)
        ax.set_xticks(positions, labels)
        ax.set_yscale("log")
        finite = [v for v in kit + bare + floor + plain if v == v and v > 0]
        ax.set_ylim(min(finite) / 4, max(finite) * 3)
        ax.legend(fontsize=8)
        ax.set_ylabel("seconds per epoch (median, log)")
        ax.set_title("One training epoch")
        _save(figure, folder / "training.png")
        plt.close(figure)
        made["training"] = f"{PLOTS_DIR}/training.png"

    scaling = sections.get("scaling", {})
    if scaling.get("paths"):
        figure, ax = plt.subplots(figsize=(6, 4))
        for path in scaling["paths"].values():
            if "points" not in path:
                continue
            counts = [p["images"] for p in path["points"]]
            seconds = [p["median_s"] for p in path["points"]]
            ax.plot(counts, seconds, marker="o", label=f"{path['title']} (slope {path['slope']:.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("images")
        ax.set_ylabel("seconds (median)")
        ax.set_title("Scaling (log-log; slope 1 = linear)")
        ax.legend(fontsize=8)
        _save(figure, folder / "scaling.png")
        plt.close(figure)
        made["scaling"] = f"{PLOTS_DIR}/scaling.png"

    timed = sections.get("notebooks", {}).get("profiles", {})
    if timed:
        figure, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * sum(len(p["notebooks"]) for p in timed.values())))
        labels, values, colours = [], [], []
        palette = {"smoke": "tab:green", "workshop": "tab:blue", "grading": "tab:orange", "full": "tab:purple"}
        for profile, entry in timed.items():
            for row in entry["notebooks"]:
                labels.append(f"{row['notebook']} ({profile})")
                values.append(row["seconds"])
                colours.append(palette.get(profile, "tab:gray") if row["status"] == "ok" else "tab:red")
        ax.barh(labels[::-1], values[::-1], color=colours[::-1])
        if "workshop" in timed:
            ax.axvline(300, color="tab:red", linestyle="--", linewidth=1, label="workshop budget, each (300 s)")
            ax.legend(fontsize=8)
        ax.set_xlabel("wall seconds (kernel start to last cell)")
        ax.set_title("Notebook wall time per profile")
        _save(figure, folder / "notebooks.png")
        plt.close(figure)
        made["notebooks"] = f"{PLOTS_DIR}/notebooks.png"
    return made


# --------------------------------------------------------------------------- markdown


def _summary(results: dict[str, Any]) -> list[str]:
    """One row per claim: what was measured, the ratio it is judged by, the goal, and whether it was met.

    For the time budgets the ratio is the share of the budget used (1.00 = all of it).
    """
    sections = results.get("sections", {})
    rows = []

    def add(claim: str, section: dict[str, Any] | None, measured: str, ratio: str, goal: str, met: Any) -> None:
        if _status(section) is None:
            rows.append((claim, measured, ratio, goal, met))
        else:
            rows.append((claim, "–", "–", goal, _status(section).strip("_")))

    e = sections.get("extraction")
    if e and "ratio" in e:
        add(
            "1. feature extraction, kit ÷ bare predict (images/s)", e,
            f"{e['kit']['images_per_s']:.0f} vs {e['bare']['images_per_s']:.0f} images/s",
            f"{e['ratio']:.2f}", f"≥ {e['goal']}", e.get("goal_met"),
        )
    else:
        add("1. feature extraction, kit ÷ bare predict (images/s)", e, "", "", "≥ 0.9", None)
    for number, name, title, goal in (("2", "head", "head epoch", "≥ ×300"), ("3", "block", "last-block epoch", "≥ ×3")):
        section = sections.get(name)
        if section and "ratio" in section:
            add(
                f"{number}. {title}, plain Keras ÷ kit (s/epoch)", section,
                f"{section['plain']['median_s']:.2f} vs {section.get('kit_bare', section['kit'])['median_s']:.3f} s"
                + (f" (with callbacks {section['kit']['median_s']:.3f} s)" if "kit_bare" in section else ""),
                f"×{section['ratio']:.1f}", f"≥ ×{section['goal']:.0f}", section.get("goal_met"),
            )
        else:
            add(f"{number}. {title}, plain Keras ÷ kit (s/epoch)", section, "", "", goal, None)
        if section and "equivalence" in section:
            eq = section["equivalence"]
            add(
                f"{number}. equivalence, max abs Δ probability", section, f"{eq['max_abs_difference']:.1e}",
                "–", f"≤ {eq['tolerance']:.0e}", eq["met"],
            )
    n = sections.get("notebooks")
    for profile, entry in (n or {}).get("profiles", {}).items():
        budget = entry.get("budget")
        if budget is None:
            continue
        if budget["rule"] == "each notebook":
            worst = max(entry["notebooks"], key=lambda r: r["seconds"])
            used, measured = worst["seconds"], f"slowest {worst['notebook']}: {worst['seconds']:.0f} s"
        else:
            used, measured = entry["total_s"], f"{entry['total_s']:.0f} s in all"
        add(
            f"4. notebooks, {profile} profile", n, measured, f"{used / budget['limit_s']:.2f} of budget",
            f"≤ {budget['limit_s']:.0f} s {budget['rule']}", budget["met"],
        )
    if n is None or "profiles" not in (n or {}):
        add("4. notebooks", n, "", "", "workshop ≤ 300 s each; smoke ≤ 300 s in all", None)
    g = sections.get("grading")
    if g and "projected_class_s" in g:
        add(
            "5. autograding, projected class of 30", g,
            f"{g['projected_class_s']:.0f} s ({g['submissions']} graded, {len(g.get('unexpected', []))} unexpected scores)",
            f"{g['projected_class_s'] / g['budget_s']:.2f} of budget", "≤ 600 s, every score as expected", g.get("budget_met"),
        )
    else:
        add("5. autograding, projected class of 30", g, "", "", "≤ 600 s, every score as expected", None)
    s = sections.get("scaling")
    if s and "paths" in s:
        fitted = [p for p in s["paths"].values() if "slope" in p]
        worse = [p["title"] for p in fitted if p.get("superlinear")]
        steepest = f"steepest slope {max(p['slope'] for p in fitted):.2f}" if fitted else "–"
        add("6. scaling, worse than linear", s, ", ".join(worse) or "none", steepest, f"slope ≤ {SUPERLINEAR_SLOPE}", not worse)
    else:
        add("6. scaling, worse than linear", s, "", "", f"slope ≤ {SUPERLINEAR_SLOPE}", None)
    a = sections.get("ablation")
    if a and "rows" in a:
        chosen = _default_row(a)
        pooled = chosen["test_pooled"]
        add(
            "8. recipe, test accuracy on unseen episodes", a,
            f"{chosen['recipe']}: {_mean_std(chosen['test'])} ({len(a['seeds'])} seeds; 95% "
            f"[{pooled['low']:.3f}, {pooled['high']:.3f}])",
            f"{chosen['test']['mean'] / a['goal']:.2f} of goal", f"≥ {a['goal']:.2f}", chosen["test"]["mean"] >= a["goal"],
        )
    else:
        add("8. recipe, test accuracy on unseen episodes", a, "", "", "≥ 0.92", None)
    s = sections.get("sandbox")
    if s and s.get("classes"):
        slowest = max(s["classes"], key=lambda c: c["projected_class_s"])
        ratio = s.get("overhead", {}).get("ratio")
        add(
            "9. sandboxed grading, class of 30 per notebook", s,
            f"slowest {slowest['assignment']}: {slowest['projected_class_s']:.0f} s"
            + (f"; sandbox overhead ×{ratio:.2f}" if ratio else ""),
            f"{slowest['projected_class_s'] / slowest['budget_s']:.2f} of budget",
            "≤ 600 s each, every score as expected", s.get("budget_met"),
        )
    else:
        add("9. sandboxed grading, class of 30 per notebook", s, "", "", "≤ 600 s each, every score as expected", None)
    return _table(("claim", "measured", "ratio", "goal", "met"), rows)


def _extraction(section: dict[str, Any]) -> list[str]:
    lines = _table(
        ("path", "median s", "images/s", "median CPU s"),
        [
            ("the kit: `features.extract_features` from files", section["kit"]["median_s"], section["kit"]["images_per_s"], section["kit"]["median_cpu_s"]),
            ("bare `model.predict` on decoded arrays", section["bare"]["median_s"], section["bare"]["images_per_s"], section["bare"]["median_cpu_s"]),
        ],
    )
    lines.append(
        f"{section['images']} images, batch {section['batch_size']}, {section['repeats']} alternating repetitions"
        + (
            f"; medians over those that kept both cores busy (CPU ÷ wall ≥ 1.25: kit {section['kit']['full_speed']}, "
            f"bare {section['bare']['full_speed']} of {section['repeats']}; on this shared VM a repetition of either side "
            f"sometimes runs on one core only). Over every repetition: {section['ratio_all']:.2f}. "
            if "full_speed" in section["kit"]
            else ", medians. "
        )
        + f"Ratio (kit ÷ bare, images/s): **{section['ratio']:.2f}** (goal ≥ {section['goal']}; "
        f"{'met' if section['goal_met'] else 'not met'}); by CPU time: {section['ratio_cpu']:.2f}. "
        f"Largest difference between the two feature arrays: {section['max_abs_feature_difference']:.1e}."
    )
    return lines + [""]


def _epoch(section: dict[str, Any], what: str) -> list[str]:
    lines = _table(
        ("path", "median s / epoch", "median CPU s", "repetitions"),
        [
            (section[key]["label"], section[key]["median_s"], section[key]["median_cpu_s"], len(section[key]["wall_s"]))
            for key in ("kit", "kit_bare", "floor", "plain")
            if key in section
        ],
    )
    lines.append(
        f"{section['images']} training and {section['validation']} validation images, batch {section['batch_size']}. "
        f"Ratio (plain ÷ kit, like for like: neither side with callbacks): **×{section['ratio']:.1f}** "
        f"(goal ≥ ×{section['goal']:.0f}; {'met' if section['goal_met'] else 'not met'})"
        + (
            f"; counting the kit's callbacks as well: ×{section['ratio_with_callbacks']:.1f}."
            if "ratio_with_callbacks" in section
            else "."
        )
    )
    once = section.get("one_off")
    if once:
        lines.append(
            f"The kit pays once for {what}: {once['seconds']:.1f} s; with {once['epochs']} epochs "
            f"(the workshop profile) the whole phase takes {once['kit_total_s']:.1f} s against "
            f"{once['plain_total_s']:.1f} s for plain Keras (×{once['ratio']:.1f})."
        )
    if "floor" in section and "kit_bare" in section:
        lines.append(
            f"A bare Keras `fit` of the same model on the same cached arrays takes {section['floor']['median_s']:.3f} s "
            f"per epoch (plain ÷ that ×{section['plain']['median_s'] / section['floor']['median_s']:.1f}): the gain is the "
            "cache, not the loop. The kit trains with "
            + (
                f"Keras's `fit` too, {section['kit_path']}, "
                if "kit_path" in section
                else "that same `fit` (all of an epoch's steps in one call, `steps_per_execution`), "
            )
            + f"here {section['kit_bare']['median_s']:.3f} s per epoch "
            f"(bare `fit` ÷ kit ×{section['floor']['median_s'] / section['kit_bare']['median_s']:.1f}); the lab's callbacks "
            f"change it by {section['kit']['median_s'] - section['kit_bare']['median_s']:+.3f} s per epoch (the best-weights "
            "checkpoint written at every improvement; a negative number is the noise of a shared machine)."
        )
    for note in section.get("notes", []):
        lines.append(f"- {note}")
    return lines + [""] + _equivalence(section)


# A student's kernel on a shared server (1-2 GB each) or an 8 GB laptop: the resident high-water mark of
# every notebook's kernel must stay under its profile's limit.
MEMORY_LIMIT_MIB = {"workshop": 2048, "laptop": 1536}


def _memory_rule(profile: str, entry: dict[str, Any]) -> str:
    """"memory: ≤ 2048 MiB each kernel — met (peak 1639 MiB)", or "" for a profile without a limit."""
    limit = MEMORY_LIMIT_MIB.get(profile)
    peaks = [row["peak_mib"] for row in entry["notebooks"] if row.get("peak_mib") is not None]
    if limit is None or not peaks:
        return ""
    verdict = "met" if max(peaks) <= limit and len(peaks) == len(entry["notebooks"]) else "**not met**"
    return f"; memory: ≤ {limit} MiB each kernel — {verdict} (highest peak {max(peaks):.0f} MiB)"


def _notebooks(section: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for profile, entry in section["profiles"].items():
        budget = entry.get("budget")
        rule = f"budget: ≤ {budget['limit_s']:.0f} s {budget['rule']} — {'met' if budget['met'] else '**not met**'}" if budget else "no budget"
        rule += _memory_rule(profile, entry)
        lines.append(f"**{profile} profile** ({rule}; {entry['total_s']:.0f} s in all)")
        lines.append("")
        lines += _table(
            ("notebook", "wall s", "kernel peak MiB", "kernel CPU s", "status", "slowest cells (s)"),
            [
                (
                    row["notebook"],
                    row["seconds"],
                    "–" if row.get("peak_mib") is None else f"{row['peak_mib']:.0f}",
                    "–" if row.get("cpu_s") is None else f"{row['cpu_s']:.0f}",
                    row["status"] + (f": {row['error']}" if row["error"] else ""),
                    ", ".join(f"{c['cell']} {c['seconds']:.0f}" for c in row["slowest_cells"]),
                )
                for row in entry["notebooks"]
            ],
        )
    return lines + _laptop_against_workshop(section["profiles"])


LAPTOP_SHARE = 0.6  # "about half the workshop time"


def _laptop_against_workshop(profiles: dict[str, Any]) -> list[str]:
    """Each notebook's laptop-profile time as a share of its workshop-profile time (the same run, side by side)."""
    if not {"laptop", "workshop"} <= set(profiles):
        return []
    workshop = {row["notebook"]: row for row in profiles["workshop"]["notebooks"]}
    rows: list[tuple[str, ...]] = []
    laptop_total = workshop_total = 0.0
    for row in profiles["laptop"]["notebooks"]:
        other = workshop.get(row["notebook"])
        if other is None or row["status"] != "ok" or other["status"] != "ok" or not other["seconds"]:
            continue
        share = row["seconds"] / other["seconds"]
        laptop_total += row["seconds"]
        workshop_total += other["seconds"]
        rows.append((row["notebook"], f"{other['seconds']:.0f}", f"{row['seconds']:.0f}", f"{share:.2f}",
                     "yes" if share <= LAPTOP_SHARE else "**no**"))
    if not rows:
        return []
    total_share = laptop_total / workshop_total
    rows.append(("**the workshop, every notebook above**", f"{workshop_total:.0f}", f"{laptop_total:.0f}",
                 f"**{total_share:.2f}**", "yes" if total_share <= LAPTOP_SHARE else "**no**"))
    verdict = "met" if total_share <= LAPTOP_SHARE else "**not met**"
    return [
        "",
        f"**laptop against workshop** (goal: the workshop in about half the time, ≤ {LAPTOP_SHARE:.1f} of it, "
        f"every notebook together — {verdict}; each notebook's share beside it)",
        "",
        *_table(("notebook", "workshop s", "laptop s", "laptop ÷ workshop", "about half"), rows),
    ]


def _accuracy(section: dict[str, Any] | None) -> list[str]:
    if _status(section) is not None:
        return [_status(section), ""]
    profiles = section.get("profiles", {})
    profile = "workshop" if "workshop" in profiles else next(iter(profiles), None)
    if profile is None:
        return ["_No notebook was run._", ""]
    lines = [f"Read from each notebook's own results at the end of its {profile}-profile run (section 4)."]
    if profile != "workshop":
        lines.append(f"_This run has no workshop-profile timings; these are the {profile} profile's numbers (little data)._")
    lines.append("")
    rows = []
    for row in profiles[profile]["notebooks"]:
        results = row.get("results") or {}
        for name, value in results.items():
            if isinstance(value, (int, float)):
                rows.append((row["notebook"], f"`{name}`", f"{value:.3f}"))
            elif isinstance(value, dict):
                label = f"`{name}`" + (f": {value['model']}" if "model" in value else "")
                metrics = _metrics(value)
                rows.append((row["notebook"], label, metrics))
            elif isinstance(value, list):
                for record in value:
                    label = _record_label(record)
                    metrics = _metrics(record)
                    rows.append((row["notebook"], f"`{name}`: {label}", metrics))
        if not results:
            rows.append((row["notebook"], "–", "no accuracy reported" if row["status"] == "ok" else f"not run to the end ({row['status']})"))
    return lines + _table(("notebook", "model / result", "accuracy"), rows) + _laptop_ranking(profiles)


def _laptop_ranking(profiles: dict[str, Any]) -> list[str]:
    """Notebook 04's ranking of approaches in the laptop profile: the lesson must survive the smaller run."""
    row = next((r for r in profiles.get("laptop", {}).get("notebooks", []) if r["notebook"].startswith("04_")), None)
    table = (row or {}).get("results", {}).get("table")
    if not isinstance(table, list) or not table:
        return []
    ranked = " > ".join(f"{_record_label(record)} ({_number(record.get('accuracy'), 3)})" for record in table)
    return ["", f"Notebook 04 in the laptop profile ranks the approaches: {ranked}."]


def _mean_std(spread: dict[str, float]) -> str:
    return f"{spread['mean']:.3f} ± {spread['std']:.3f}"


def _default_row(section: dict[str, Any]) -> dict[str, Any]:
    """The row of the kit's default recipe (named in the section), else the baseline on the group split."""
    wanted = section.get("kit_default", {}).get("row")
    rows = section["rows"]
    return next((r for r in rows if r["recipe"] == wanted and r["split"] == "group"), rows[1])


def _ablation(section: dict[str, Any]) -> list[str]:
    lines = [
        f"Notebook 02's two phases on {section['source']}, weights {section['weights']}; phase 1 up to "
        f"{section['epochs']['head']} epochs, phase 2 up to {section['epochs']['blocks']} (early stopping); seeds "
        f"{', '.join(map(str, section['seeds']))} (each draws its own split and initialisation). Mean ± standard "
        "deviation over the seeds; the interval is the 95 % Wilson interval of the test images of all seeds pooled. "
        "Choices are read on the validation column; the test column is reported, never used to choose. Phase 2 is "
        "kept only when it beats phase 1 on validation.",
        "",
    ]
    if section.get("note"):  # results of an earlier form of this section, kept until it is run again
        lines += [f"Note: {section['note']}", ""]
    rows = []
    chosen = _default_row(section)
    for row in section["rows"]:
        pooled = row["test_pooled"]
        kept = sum(row["phase2_kept"])
        rows.append(
            (
                (("**" + row["recipe"] + "** (kit default)") if row is chosen else row["recipe"])
                + (" †" if row.get("kept_from_earlier") else ""),
                f"{row['split']} ({row['seeds']} seed{'s' if row['seeds'] > 1 else ''})",
                _mean_std(row["val_phase1"]),
                _mean_std(row["val"]),
                _mean_std(row["test"]),
                f"[{pooled['low']:.3f}, {pooled['high']:.3f}] of {pooled['images']}",
                f"{kept} of {len(row['phase2_kept'])}",
                f"{row['train_s']['mean']:.0f} ± {row['train_s']['std']:.0f} ({row['train_cpu_s']['mean']:.0f} CPU)",
            )
        )
    lines += _table(
        ("recipe", "split", "validation, phase 1", "validation, end", "test, end", "test 95% interval", "phase 2 kept",
         "training s (CPU s)"),
        rows,
    )
    lines.append(
        f"Extracting the cached arrays (once per recipe's backbone cut, then read from the kit's cache): median "
        f"{section['extraction_s']['median']:.0f} s, at most {section['extraction_s']['max']:.0f} s. Goal: test "
        f"accuracy ≥ {section['goal']:.2f} on the group split with the kit's default recipe."
        + (
            f" {section['runs_from_cache']} of the {section['runs']} training runs were read from "
            "`KIT_BENCHMARK_CACHE` (measured by earlier processes sharing the seeds; their seconds are theirs)."
            if section.get("runs_from_cache")
            else ""
        )
    )
    group = [row for row in section["rows"] if row["split"] == "group"]
    best = max(group, key=lambda row: row["val"]["mean"]) if group else None
    if best is not None and best is not chosen:
        lines += [
            "",
            f"Best on validation: {best['recipe']} (validation {_mean_std(best['val'])}, test {_mean_std(best['test'])}, "
            f"{best['train_cpu_s']['mean']:.0f} CPU s); the kit's default: {chosen['recipe']} (validation "
            f"{_mean_std(chosen['val'])}, test {_mean_std(chosen['test'])}, {chosen['train_cpu_s']['mean']:.0f} CPU s). "
            + section.get("kit_default", {}).get("reason", ""),
        ]
    kept = sorted({row["measured"] for row in section["rows"] if row.get("kept_from_earlier") and row.get("measured")})
    if kept:
        lines += [
            "",
            f"† Kept from the run of {', '.join(kept)} (`KIT_BENCHMARK_KEEP_ROWS=1`: the same recipe, split, seeds, data "
            "and epochs, its runs no longer in the run cache); the other rows were trained for this run. Training "
            "seconds depend on what else the machine ran at the time: compare the CPU seconds across runs.",
        ]
    return lines + [""]


def _record_label(record: dict[str, Any]) -> str:
    """What a table row is about: its first text field that is not a metric (the approach, the model)."""
    texts = [str(v) for k, v in record.items() if not _is_metric(k) and isinstance(v, str)]
    if texts:
        return texts[0]
    return str(next((v for k, v in record.items() if not _is_metric(k)), ""))


def _is_metric(key: str) -> bool:
    key = key.lower()
    if key.endswith(("_low", "_high", "% low", "% high")):
        return False
    return "acc" in key or key in {"f1", "precision", "recall"}


def _metrics(record: dict[str, Any]) -> str:
    """A result's metrics, with the 95 % interval and the number of test images when the notebook gave them."""
    text = ", ".join(f"{k} {_number(v, 3)}" for k, v in record.items() if _is_metric(k))
    low = next((v for k, v in record.items() if str(k).lower().endswith(("% low", "_low"))), None)
    high = next((v for k, v in record.items() if str(k).lower().endswith(("% high", "_high"))), None)
    images = record.get("test images", record.get("test_images"))
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        text += f" (95% interval [{low:.3f}, {high:.3f}]" + (f", {int(images)} test images" if images else "") + ")"
    return text


def _scaling(section: dict[str, Any]) -> list[str]:
    rows = []
    for path in section["paths"].values():
        if "points" not in path:
            rows.append((path["title"], "–", "–", path.get("skipped", path.get("error", ""))))
            continue
        per = ", ".join(f"{p['images']}: {p['median_s']:.2f}" for p in path["points"])
        rows.append((path["title"], per, f"{path['slope']:.2f}", "**worse than linear**" if path["superlinear"] else "ok"))
    lines = _table(("path", "images: median s", "log-log slope", "verdict"), rows)
    lines.append(
        f"Median of {section['repeats']} repetitions per point. A slope above {SUPERLINEAR_SLOPE} is flagged as worse "
        "than linear; below 1 means fixed costs (tracing, start-up) still weigh at the small sizes."
    )
    return lines + [""]


def _grading(section: dict[str, Any]) -> list[str]:
    lines = [
        f"A simulated class of {section['submissions']} submissions of `{section['assignment']}`, graded with "
        f"`instructor_tools.grading.grader.autograde` in the grading profile ({section.get('cell_timeout_s', '?')} s per cell), "
        f"{section['jobs']} at a time: **{section['seconds']:.0f} s** ({section['seconds_per_submission']:.1f} s each). "
        f"Projected class of {section['class_size']}: **{section['projected_class_s']:.0f} s** "
        f"(goal ≤ {section['budget_s']:.0f} s, every score as expected; "
        f"{'met' if section['budget_met'] else '**not met**'}).",
        "",
    ]
    if "kinds" not in section:  # results older than the class mix: no scores to show
        return lines
    lines += _table(
        ("kind", "submissions", f"expected points (of {_number(section['max_points'], 0)})", "points scored", "as expected"),
        [
            (
                kind["description"],
                kind["submissions"],
                _number(kind["expected_points"], 0),
                ", ".join(sorted({_number(score, 0) for score in kind["scores"]})),
                kind["unexpected_cells"] == 0,
            )
            for kind in section["kinds"]
        ],
    )
    unexpected = section["unexpected"]
    if unexpected:
        lines += [f"**Unexpected scores ({len(unexpected)}):**", ""]
        lines += [f"- `{line}`" for line in unexpected[:20]]
        if len(unexpected) > 20:
            lines.append(f"- … and {len(unexpected) - 20} more (`results.json`)")
        lines.append("")
    else:
        lines += ["Every autograded cell of every submission scored what its kind must get.", ""]
    return lines


def _sandbox(section: dict[str, Any]) -> list[str]:
    classes = section.get("classes", [])
    lines = [
        "Each graded notebook's simulated class, graded with `instructor_tools.grading.grader.autograde` as "
        "`python -m instructor_tools autograde` runs it (sandboxed where bubblewrap works; the grading profile):",
        "",
    ]
    lines += _table(
        ("notebook", "sandbox", "submissions", "jobs", "seconds", "per submission", "projected class of 30",
         "unexpected scores", "goal ≤ 600 s met"),
        [
            (
                c["assignment"], "yes" if c.get("sandbox", "").startswith("sandboxed") else "**no**", c["submissions"],
                c["jobs"], _number(c["seconds"], 0), _number(c["seconds_per_submission"], 1),
                _number(c["projected_class_s"], 0), len(c["unexpected"]), c["budget_met"],
            )
            for c in classes
        ],
    )
    if section.get("note"):
        lines += [f"Note: {section['note']}.", ""]
    overhead = section.get("overhead", {})
    if "skipped" in overhead:
        lines += [f"Sandbox overhead: not measured ({overhead['skipped']}).", ""]
    elif overhead:
        lines += [
            f"Sandbox overhead, measured in the same run: {overhead['submissions']} solutions of "
            f"`{overhead['assignment']}` graded one at a time, sandboxed and unsandboxed alternately "
            f"({overhead['repetitions']} repetitions each): {overhead['sandboxed_s']:.2f} s against "
            f"{overhead['unsandboxed_s']:.2f} s per submission, **×{overhead['ratio']:.2f}** "
            f"({overhead['extra_s']:+.2f} s each). Sandbox: {overhead['sandbox']}.",
            "",
        ]
    return lines


def markdown(results: dict[str, Any], plots: dict[str, str]) -> str:
    """The report as Markdown."""
    hardware = results.get("hardware", {})
    sections = results.get("sections", {})
    inputs = results.get("inputs", {})
    lines = [
        "# Benchmarks of the kit",
        "",
        f"Generated {results.get('generated')} by `{results.get('command')}` (size **{results.get('size')}**).",
        "",
        *_table(
            ("hardware", ""),
            [
                ("CPU", hardware.get("cpu")),
                ("cores", hardware.get("cores")),
                ("RAM (GB)", hardware.get("ram_gb")),
                ("OS", hardware.get("os")),
                ("Python / TensorFlow / Keras", f"{hardware.get('python')} / {hardware.get('tensorflow')} / {hardware.get('keras')}"),
                ("nbgrader", hardware.get("nbgrader")),
                ("load average at start", hardware.get("load_average_at_start")),
            ],
        ),
    ]
    if inputs:
        lines += [f"Backbone: {inputs.get('backbone')}; weights: {inputs.get('weights')}; images: {inputs.get('images')}.", ""]
    kept = results.get("kept_from_earlier_runs")
    if kept:
        lines += [f"Kept from earlier runs (each with its own date): {', '.join(kept)}.", ""]
    here = machine(hardware)
    elsewhere = [name for name, section in sections.items() if section.get("machine") not in (None, here)]
    if elsewhere:
        lines += [f"**Measured on another machine** (see `results.json`): {', '.join(elsewhere)}.", ""]
    lines += [HEADINGS[0], "", *_summary(results)]

    def section_block(heading: str, name: str, body: Any, plot: str | None = None) -> None:
        lines.extend([heading, ""])
        section = sections.get(name)
        status = _status(section)
        if status is not None:
            lines.extend([status, ""])
            return
        lines.extend(body(section))
        if plot and plot in plots:
            lines.extend([f"![{name}]({plots[plot]})", ""])
        lines.extend([_when(section), ""])

    section_block(HEADINGS[1], "extraction", _extraction, "extraction")
    section_block(HEADINGS[2], "head", lambda s: _epoch(s, "extracting the features"), "training")
    section_block(HEADINGS[3], "block", lambda s: _epoch(s, "caching the block inputs"))
    section_block(HEADINGS[4], "notebooks", _notebooks, "notebooks")
    section_block(HEADINGS[5], "grading", _grading)
    section_block(HEADINGS[6], "scaling", _scaling, "scaling")
    lines += [HEADINGS[7], "", *_accuracy(sections.get("notebooks"))]
    section_block(HEADINGS[8], "ablation", _ablation)
    section_block(HEADINGS[9], "sandbox", _sandbox)
    section_block(HEADINGS[-2], "training_loop", training_loop.markdown)
    lines += [HEADINGS[-1], "", *METHOD]
    return "\n".join(lines).rstrip() + "\n"


def _equivalence(section: dict[str, Any]) -> list[str]:
    eq = section.get("equivalence")
    if not eq:
        return []
    return [
        f"Equivalence check (notebook 02's): {eq['description']} Largest difference in predicted probabilities "
        f"over {eq['images']} images: **{eq['max_abs_difference']:.1e}** (tolerance {eq['tolerance']:.0e}; "
        f"{'met' if eq['met'] else '**not met**'}).",
        "",
    ]


METHOD = [
    "- Each comparison runs both sides in one process, alternating them inside every repetition after one untimed "
    "warm-up each (graph tracing); each side is the median of its repetitions, and the ratio is taken between medians. "
    "CPU-time figures (all threads of the process) are given beside wall time: they move less when other work shares the machine.",
    "- Plain Keras baselines are written in `benchmarks/core.py` (keras-io style: Functional API, the frozen base called "
    "with `training=False`, `validation_data`) and get the best case: images decoded, resized and preprocessed in memory.",
    "- The kit's side runs what the notebooks run (`helpers.features.extract_features`; notebook 02's visible phases: "
    "freeze, compile and `fit` on the arrays of its one pass, `features.cached_arrays`, with exercise 4's callbacks; "
    "`helpers.retraining.fit_two_phases` for the recipe's ablation; `instructor_tools.grading.grader.autograde`).",
    "- An epoch is timed by a Keras callback from its start to its end (validation, checkpoints and logs included); "
    "for the kit the callback is added after the lab's callbacks, nothing else changed. "
    "The kit's figure is the median of the epochs after the first of each call (the first traces the training step); "
    "the plain figure is one `fit(epochs=1)` per repetition after a warm-up epoch. Feature extraction and block-input "
    "caching are one-off costs, reported apart and in the whole-phase totals.",
    "- The training-epoch ratios are like for like: the plain `fit` has no callbacks, so the kit's side is the same "
    "call with its callbacks removed (its row with the lab's callbacks -- early stopping, best checkpoint, TensorBoard -- "
    "and the ratio counting them are given too). The `fit` row trains the very model the kit trains on the same cached "
    "arrays with `fit(epochs=1)` once per epoch, which pays `fit`'s start-up every epoch; the kit calls `fit` once "
    "per phase (the training-loop section compares whole phases).",
    "- Notebooks are the `solutions/` sources executed top to bottom with nbclient in a fresh kernel, with KIT_PROFILE "
    "set, MobileNet alpha 0.75 and the course data; one fresh kit cache per profile, shared by the notebooks in course "
    "order as a student's is.",
    "- Autograding grades a simulated class (of notebook 01 by default: solutions, half-right answers, blank notebooks, a "
    "duplicated and a deleted test cell, an infinite loop; `benchmarks/grading.py`) as `python -m instructor_tools autograde` "
    "does, and checks every autograded cell's score against what its kind must get: a grading time only counts when "
    "the grades are right.",
    "- Re-run one part: `python -m benchmarks --only notebooks` (sections: extraction, head, block, scaling, notebooks, "
    "grading, ablation); the others are kept from `results.json`, each with its own date.",
    "- Accuracies are scored on test images none of the choices were made on: the Simpsons split by blocks of frame "
    "numbers (a stand-in for episodes), each with a 95 % Wilson interval and its number of test images.",
    "",
]


def write(out: Path, results: dict[str, Any]) -> Path:
    """Write ``results.json``, the plots and ``REPORT.md`` into ``out``; return the report's path."""
    out = Path(out)
    results["ratios"] = ratios(results)
    plots = _plots(out, results)
    atomic_write(out / "results.json", json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    return atomic_write(out / "REPORT.md", markdown(results, plots))
