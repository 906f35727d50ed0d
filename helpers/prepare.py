"""``python -m helpers prepare``: get everything a course run needs, before class.

For the current settings it seeds the kit's weights cache from the weights mirror,
checks (and, online, downloads) the backbone's weight files, makes every course
dataset available (data dir, then data mirror, then download), loads the profile's
selection of each to verify it, and prints a table of what is ready and what is
missing, with the fix for each. With ``--offline`` nothing is downloaded: an
instructor's mirror folder is enough.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Sequence

from helpers import backbones, datasets, weights
from helpers.settings import Settings, load_settings

READY, MISSING, WARNING = "ready", "missing", "warning"


def _row(item: str, status: str, where: str = "", fix: str = "") -> dict[str, str]:
    return {"item": item, "status": status, "where": where, "fix": fix}


def _weight_rows(settings: Settings, offline: bool, progress: bool) -> list[dict[str, str]]:
    rows = []
    try:
        for result in weights.seed_cache(settings, known_md5=backbones.known_md5s()):
            if result.status == "bad-checksum":
                rows.append(_row(f"mirror file {result.name}", WARNING, str(settings.weights_mirror), result.detail))
    except FileNotFoundError as error:
        rows.append(_row("weights mirror", WARNING, str(settings.weights_mirror), f"{error}"))
    backbone = backbones.get_backbone(settings=settings)
    files = [backbones.weight_file(settings, include_top, backbone) for include_top in (True, False)]
    files.append((weights.CLASS_INDEX_FILE, weights.CLASS_INDEX_URL))
    for file_name, url in files:
        known_md5 = backbones.known_md5s()
        result = weights.check_weights(settings, file_name, known_md5=known_md5)
        if result.status != "present" and not offline:
            try:
                weights.ensure_weights(settings, file_name, url, known_md5=known_md5, progress=progress)
            except weights.WeightsMissingError:
                pass  # reported below as missing, with the fix
            result = weights.check_weights(settings, file_name, known_md5=known_md5)
        if result.status == "present":
            rows.append(_row(f"weights {file_name}", READY, result.detail))
        else:
            rows.append(
                _row(
                    f"weights {file_name}",
                    MISSING if result.status == "missing" else "bad",
                    str(weights.models_dir(settings)),
                    weights.missing_weights_message(file_name, settings).splitlines()[1]
                    if result.status == "missing"
                    else result.detail,
                )
            )
    return rows


def _dataset_row(name: str, settings: Settings, offline: bool) -> dict[str, str]:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = datasets.load_dataset(name, settings, download_ok=not offline)
    except (datasets.DatasetMissingError, OSError, ValueError) as error:
        lines = str(error).splitlines()
        fix = next((line[len("To fix: "):] for line in lines if line.startswith("To fix: ")), lines[-1] if lines else "")
        return _row(f"dataset {name}", MISSING, str(settings.data_dir), fix)
    classes = frame["label"].nunique()
    skipped = len(frame.attrs.get("dropped", []))
    where = f"{frame.attrs.get('root', '')} ({len(frame)} images, {classes} classes, profile {settings.profile})"
    note = f"{skipped} unusable file(s) skipped" if skipped else ""
    if caught and not note:
        note = str(caught[0].message)
    return _row(f"dataset {name}", READY, where, note)


def prepare(
    settings: Settings | None = None,
    offline: bool = False,
    names: Sequence[str] | None = None,
    *,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Make weights and datasets available; one row per item.

    Args:
        settings: Course settings; loaded when omitted.
        offline: Never download (use the data dir and the mirrors only).
        names: Datasets to prepare (default: every course dataset).
        progress: Show download progress bars.

    Returns:
        Rows with ``item``, ``status`` (``ready``, ``missing``, ``bad`` -- a file with
        the wrong checksum -- or ``warning`` -- a problem with a mirror that does not
        stop the course), ``where`` and ``fix``; for notebook 00 to display
        (``pandas.DataFrame(rows)``).
    """
    settings = settings or load_settings()
    specs = datasets.iter_specs(names)
    weights.configure_keras_home(settings)
    rows = _weight_rows(settings, offline, progress)
    rows += [_dataset_row(spec.name, settings, offline) for spec in specs]
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a plain-text table (item, status, where, fix)."""
    columns = ["item", "status", "where", "fix"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    widths["where"] = min(widths["where"], 70)
    lines = ["  ".join(c.ljust(widths[c]) for c in columns[:-1]) + "  fix"]
    lines.append("  ".join("-" * widths[c] for c in columns[:-1]) + "  ---")
    for row in rows:
        where = str(row.get("where", ""))
        if len(where) > widths["where"]:
            where = "..." + where[-(widths["where"] - 3):]
        cells = [str(row.get("item", "")).ljust(widths["item"]), str(row.get("status", "")).ljust(widths["status"]),
                 where.ljust(widths["where"])]
        lines.append("  ".join(cells) + "  " + str(row.get("fix", "")))
    return "\n".join(lines)


def all_ready(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether every row is ready (warnings about mirrors do not count against it)."""
    return all(row["status"] in (READY, WARNING) for row in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns 0 when everything needed is ready, else 1."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers prepare",
        description="Seed the weights cache and make every course dataset available (data dir, mirror, download).",
    )
    parser.add_argument("--offline", action="store_true", help="never download; use the data dir and mirrors only")
    parser.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        choices=sorted(datasets.CATALOG),
        help=f"datasets to prepare (default: all of {', '.join(datasets.CATALOG)})",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    options = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        settings = load_settings()
    except (ValueError, FileNotFoundError) as error:
        print(f"prepare: {error}", file=sys.stderr)
        return 1
    print(f"Preparing for profile {settings.profile!r}, backbone {settings.backbone!r}"
          + (" (offline)" if options.offline else ""))
    rows = prepare(settings, offline=options.offline, names=options.datasets, progress=not options.quiet)
    print(format_table(rows))
    ready = all_ready(rows)
    print("\nEverything is ready." if ready else "\nSome items are missing: see the fix column, then run prepare again.")
    return 0 if ready else 1
