"""Regenerate the deck's figures and numbers from real runs of the kit.

    python slides/figures.py                       # workshop profile, MobileNet alpha 0.75 (about 10 min on 2 cores)
    python slides/figures.py --profile smoke       # every figure on a handful of images (about 2 min)
    python slides/figures.py --only backbones topk # some figures only (the manifest keeps the others)

Each figure is made by the kit's own helpers, on the course data, exactly as the
notebooks do it: the backbone table (parameters, and images per second measured on this
machine), the top-k predictions of the ImageNet classifier (notebook 01), the learning
curve of the two-phase retraining (notebook 02), the best classic model on deep features
(notebook 03), and the photo-vs-drawing comparison and sample-efficiency curve
(notebook 04). The PNGs go to ``slides/figures/`` and every number the deck quotes goes to
``slides/figures/manifest.json`` (``{{name}}`` in ``slides/deck.md``), with the settings,
versions and machine of the run.

Settings are the kit's (``KIT_*`` variables, ``kit.toml``) with the profile, backbone and
alpha given here. When ``../shared/data`` (the course data beside the project) exists and
no mirror or data folder is configured, it is used. Nothing is downloaded when ``--offline``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers.files import atomic_write

SLIDES = Path(__file__).resolve().parent
ROOT = SLIDES.parent
FIGURES = SLIDES / "figures"
SHARED_DATA = ROOT.parent / "shared" / "data"
DPI = 100
# Whether a dataset missing from the data folder and the mirror may be downloaded (--offline: no).
DOWNLOAD_OK = True
# Slide-friendly figure sizes in inches at DPI (the deck is 1280 x 720).
WIDE = (10.5, 4.6)


# --------------------------------------------------------------------------- settings and output


def figure_settings(profile: str, backbone: str = "mobilenet", alpha: float | None = 0.75, **overrides: Any):
    """The kit's settings for a figure run, pointed at ``../shared/data`` when it is there."""
    from helpers.settings import load_settings

    changes: dict[str, Any] = {"profile": profile, "backbone": backbone, "alpha": alpha} | overrides
    configured = load_settings()
    if SHARED_DATA.is_dir():
        if configured.weights_mirror is None and "weights_mirror" not in overrides:
            changes["weights_mirror"] = str(SHARED_DATA / "keras_home" / "models")
        if configured.sources.get("data_dir", "default") == "default" and "data_dir" not in overrides:
            changes["data_dir"] = str(SHARED_DATA / "datasets")
    return configured.replace(**changes)


def save_figure(figure: Any, path: Path, *, max_bytes: int = 250_000) -> Path:
    """Write a Matplotlib figure as PNG atomically (temporary file, then rename), and close it.

    Figures full of photographs compress badly; above ``max_bytes`` the PNG is reduced
    to a 256-colour palette, which keeps the committed file and the deck small.
    """
    import matplotlib.pyplot as plt
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        with Image.open(io.BytesIO(data)) as image:
            smaller = io.BytesIO()
            image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(
                smaller, format="png", optimize=True
            )
            data = smaller.getvalue()
    atomic_write(path, data)
    return path




def _dataset(name: str, settings):
    from helpers import datasets

    return datasets.load_dataset(name, settings, download_ok=DOWNLOAD_OK)


def _percent(value: float) -> str:
    return f"{100 * float(value):.0f}%"


# --------------------------------------------------------------------------- the figures


def figure_backbones(
    settings, output: Path, *, keys: Sequence[str] | None = None, batch: int = 16, repeats: int = 3
) -> dict[str, str]:
    """Parameters of every backbone in the kit's table, and their speed measured here.

    Each network is built with random weights (speed does not depend on the values, and
    no download is needed) and called on a batch of random images: one warm-up call, then
    ``repeats`` timed calls. Speed is counted in images per *CPU-second* (the CPU time the
    process used, over all its threads): unlike wall time it hardly changes when other
    programs share the machine, and a laptop with ``n`` free cores runs about ``n`` times
    that. ``keys`` limits the table to some backbones (all by default).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from helpers import backbones
    from helpers.device import import_tensorflow

    import_tensorflow()
    import keras

    rows = []
    for key in keys or list(backbones.BACKBONES):
        backbone = backbones.get_backbone(key)
        alpha = settings.alpha if key == settings.backbone else None
        local = settings.replace(backbone=key, alpha=alpha, image_size=None)
        model = backbones.load_classifier(local, weights=None)
        size = backbones.input_size(local, backbone)
        data = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
        model(data, training=False)  # the first call builds the model: not timed
        cpu_seconds = []
        for _ in range(repeats):
            began = time.process_time()
            model(data, training=False)
            cpu_seconds.append(time.process_time() - began)
        resolved = backbone.resolve_alpha(alpha)
        label = backbone.title + (f", alpha {resolved:g}" if resolved is not None else "")
        rows.append({"key": key, "label": label, "parameters": model.count_params(), "rate": batch / max(min(cpu_seconds), 1e-9)})
        del model
        keras.backend.clear_session()
    figure, (left, right) = plt.subplots(1, 2, figsize=WIDE, sharey=True)
    labels = [row["label"] for row in rows]
    positions = np.arange(len(rows))[::-1]
    mark = ["#1a6fb5" if row["key"] == settings.backbone else "#9db8d2" for row in rows]
    left.barh(positions, [row["parameters"] / 1e6 for row in rows], color=mark)
    left.set_yticks(positions, labels)
    left.set_xlabel("parameters (millions)")
    right.barh(positions, [row["rate"] for row in rows], color=mark)
    right.set_xlabel("images per CPU-second, measured (x cores for a whole machine)")
    for axis, values, fmt in ((left, [r["parameters"] / 1e6 for r in rows], "{:.1f}"), (right, [r["rate"] for r in rows], "{:.0f}")):
        for y, value in zip(positions, values):
            axis.text(value, y, " " + fmt.format(value), va="center", fontsize=9)
        axis.spines[["top", "right"]].set_visible(False)
    figure.suptitle("The kit's backbones: size and CPU speed (dark: the one used in class)", fontsize=12)
    save_figure(figure, output / "backbones.png")
    numbers = {f"{row['key']}_speed": f"{row['rate']:.0f}" for row in rows}
    speed = {row["key"]: row["rate"] for row in rows}
    if "resnet50" in speed and settings.backbone in speed and settings.backbone != "resnet50":
        numbers["speedup_vs_resnet50"] = f"{speed[settings.backbone] / speed['resnet50']:.1f}"
    return numbers


def figure_topk(settings, output: Path, *, per_source: int = 3) -> dict[str, str]:
    """Notebook 01: the ImageNet classifier's top labels (k=3, p >= 0.1) on photos and Simpsons frames."""
    from helpers import backbones, plots, scoring, weights

    weights.configure_keras_home(settings)
    weights.seed_cache(settings, known_md5=backbones.known_md5s())
    photos = _dataset("photos", settings).head(per_source)
    simpsons = _dataset("simpsons", settings)
    # One frame per character first, so the figure shows several characters.
    frames = simpsons.groupby("label", sort=True).head(1).head(per_source)
    model = backbones.load_classifier(settings)
    everything = scoring.predict_files(list(simpsons["path"]), model, settings)
    table = scoring.score_files(list(photos["path"]) + list(frames["path"]), model, settings, k=3, min_probability=0.1)
    figure = plots.predictions(table, limit=2 * per_source, columns=per_source, size=180)
    # Name each image by what it shows (the files of different characters share names).
    names = [Path(p).stem.replace("_", " ") for p in photos["path"]] + [
        str(label).replace("_", " ") for label in frames["label"]
    ]
    for axis, name in zip(figure.axes, names):
        axis.set_title(name, fontsize=9)
    save_figure(figure, output / "topk.png")
    return {
        "simpsons_paper_share": _percent(scoring.cartoon_or_paper_share(everything.top_labels())),
        "simpsons_classes": str(simpsons["label"].nunique()),
        "simpsons_images": str(len(simpsons)),
    }


def figure_learning_curve(settings, output: Path) -> dict[str, str]:
    """Notebook 02: the two-phase retraining on the Simpsons frames, and its learning curves."""
    import numpy as np

    from helpers import backbones, features, heads, pipeline, plots, retraining, splits, weights

    weights.configure_keras_home(settings)
    weights.seed_cache(settings, known_md5=backbones.known_md5s())
    frame = splits.split_dataset(_dataset("simpsons", settings), seed=settings.seed)
    base = backbones.load_base(settings)
    backbone = backbones.get_backbone(settings=settings)
    recipe = retraining.DEFAULT_RECIPE  # notebook 02's default, step for step (fit_two_phases)
    head = heads.build_head(base.output_shape[1:], len(pipeline.class_names(frame)), seed=settings.seed)
    arrays = features.cached_arrays(
        heads.cached_outputs_model(base, backbone, recipe["n_blocks"]), frame, settings,
        name="frames and their flips", flips=recipe["flips"], progress=False,
    )
    with tempfile.TemporaryDirectory(prefix="kit-figures-run-") as run_dir:
        result = retraining.fit_two_phases(settings, frame, base, head, arrays, run_dir=run_dir)
    head_accuracy = float(result.phases["validation accuracy"].iloc[0])
    finetune_accuracy = result.validation_accuracy  # the kept model's (phase 2 only when it beat phase 1)
    truth = pipeline.encode_labels(frame.loc[frame["split"] == "test", "label"], result.class_names)
    test_accuracy = float(np.mean(result.test_probabilities.argmax(axis=1) == truth))
    figure = plots.learning_curves(result.history)
    save_figure(figure, output / "learning_curve.png")
    return {
        "head_val_accuracy": _percent(head_accuracy),
        "finetune_val_accuracy": _percent(finetune_accuracy),
        "test_accuracy": _percent(test_accuracy),
        "simpsons_train_images": str(int((frame["split"] == "train").sum())),
    }


def figure_features(settings, output: Path) -> dict[str, str]:
    """Notebook 03: deep features of the Simpsons frames into classic models chosen by cross-validation."""
    import numpy as np

    from helpers import backbones, classic, features, pipeline, splits, weights

    weights.configure_keras_home(settings)
    weights.seed_cache(settings, known_md5=backbones.known_md5s())
    frame = splits.split_dataset(_dataset("simpsons", settings), seed=settings.seed)
    extractor = backbones.load_feature_extractor(settings)
    matrix = np.asarray(features.extract_features(extractor, frame, settings, progress=False))
    matrix = matrix.reshape(len(matrix), -1)
    classes = pipeline.class_names(frame)
    labels = pipeline.encode_labels(frame["label"], classes)
    train = (frame["split"] == "train").to_numpy()
    test = (frame["split"] == "test").to_numpy()
    selection = classic.select_by_cv(matrix[train], labels[train], seed=settings.seed, verbose=False)
    results = classic.results_table(selection, matrix[test], labels[test])
    chosen = results[results["chosen"]].iloc[0]
    return {
        "feature_size": f"{matrix.shape[1]:,}",
        "features_model": str(chosen["title"]).lower(),
        "features_test_accuracy": _percent(chosen["test accuracy"]),
    }


def _best(table, family: str) -> dict[str, str]:
    """The best test accuracy of one family of approaches, as ``{pvd_<family>_accuracy: "NN%"}`` (empty if absent)."""
    rows = table[table["family"] == family]
    key = {"transfer learning": "transfer", "from scratch": "scratch", "raw pixels": "pixels",
           "deep features": "features"}[family]
    return {f"pvd_{key}_accuracy": _percent(rows["accuracy"].max())} if len(rows) else {}


def figure_photo_vs_drawing(settings, output: Path, *, approaches: Sequence[str] | None = None) -> dict[str, str]:
    """Notebook 04: every approach on one split of photographs vs drawings, and the sample-efficiency curve.

    ``approaches`` limits the comparison (names of :data:`helpers.approaches.APPROACHES`; all by default).
    """
    from helpers import backbones, pipeline, plots, sample_efficiency, scratch_models, weights
    from helpers.approaches import APPROACHES, run_comparison

    weights.configure_keras_home(settings)
    weights.seed_cache(settings, known_md5=backbones.known_md5s())
    frame = _dataset("photo_vs_drawing", settings)
    comparison = run_comparison(frame, settings, approaches=approaches or APPROACHES)
    table = comparison.table()
    baseline = comparison.result("majority class").accuracy
    figure = plots.comparison(table, chance=baseline)
    figure.set_size_inches(WIDE[0], 0.45 * len(table) + 1.4)
    figure.axes[0].spines[["top", "right"]].set_visible(False)
    save_figure(figure, output / "photo_vs_drawing.png")

    split = comparison.split
    images = pipeline.load_images(split.frame, scratch_models.scratch_image_size(settings), settings)
    learners = sample_efficiency.sample_efficiency_learners(
        split, settings, features=comparison.features, pixels=comparison.pixels, images=images
    )
    train_labels = split.labels("train")
    sizes = sample_efficiency.usable_sample_sizes(train_labels, settings.scale.sample_sizes)
    runs = sample_efficiency.sample_efficiency(
        learners, train_labels, split.labels("test"), sizes, settings.scale.sample_seeds, base_seed=settings.seed
    )
    summary = sample_efficiency.summarize_sample_efficiency(runs)
    figure = plots.sample_efficiency(summary, chance=1 / len(split.class_names))
    figure.set_size_inches(*WIDE)
    figure.axes[0].legend(fontsize=9, loc="lower right")
    save_figure(figure, output / "sample_efficiency.png")
    per_class = frame["label"].value_counts()
    numbers = {
        "pvd_per_class": str(int(per_class.min())) if per_class.min() == per_class.max() else f"{per_class.min()}-{per_class.max()}",
        "pvd_baseline_accuracy": _percent(baseline),
        "pvd_sample_sizes": ", ".join(str(size) for size in sizes),
    }
    for family in ("transfer learning", "from scratch", "raw pixels", "deep features"):
        numbers |= _best(table, family)
    return numbers


# --------------------------------------------------------------------------- the run

FIGURES_BY_NAME: dict[str, Callable[[Any, Path], dict[str, str]]] = {
    "backbones": figure_backbones,
    "topk": figure_topk,
    "learning_curve": figure_learning_curve,
    "features": figure_features,
    "photo_vs_drawing": figure_photo_vs_drawing,
}
# The PNG files each figure function writes (the manifest lists them).
FILES = {
    "backbones": ["backbones.png"],
    "topk": ["topk.png"],
    "learning_curve": ["learning_curve.png"],
    "features": [],
    "photo_vs_drawing": ["photo_vs_drawing.png", "sample_efficiency.png"],
}


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    for name in ("tl-workshop-helpers", "tensorflow-cpu", "tensorflow", "keras", "scikit-learn", "matplotlib"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def run(names: Sequence[str], settings, output: Path = FIGURES, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make the named figures into ``output`` and update its ``manifest.json``.

    Returns:
        The manifest written.
    """
    import matplotlib

    matplotlib.use("Agg")
    manifest_path = output / "manifest.json"
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("run", {}).get("profile") not in (None, settings.profile) and set(names) != set(FIGURES_BY_NAME):
        log(f"note: the manifest was made in profile {manifest['run']['profile']!r}; mixing profiles in one deck")
    numbers: dict[str, str] = dict(manifest.get("numbers", {}))
    figures: dict[str, Any] = dict(manifest.get("figures", {}))
    numbers |= {
        "profile": settings.profile,
        "backbone": _backbone_label(settings),
    }
    for name in names:
        began = time.perf_counter()
        log(f"== {name}")
        made = FIGURES_BY_NAME[name](settings, output)
        seconds = time.perf_counter() - began
        numbers |= made
        figures[name] = {"files": FILES[name], "seconds": round(seconds, 1), "profile": settings.profile,
                         "numbers": sorted(made)}
        log(f"   {seconds:.0f} s: {', '.join(f'{k}={v}' for k, v in made.items())}")
    manifest = {
        "generated_by": "slides/figures.py",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "run": {
            "profile": settings.profile,
            "backbone": settings.backbone,
            "alpha": settings.alpha,
            "seed": settings.seed,
            "cpus": os.cpu_count(),
            "load_average": [round(x, 1) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "machine": platform.machine(),
            "python": platform.python_version(),
            "versions": _versions(),
        },
        "figures": dict(sorted(figures.items())),
        "numbers": dict(sorted(numbers.items())),
    }
    atomic_write(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest


def _backbone_label(settings) -> str:
    from helpers import backbones

    backbone = backbones.get_backbone(settings=settings)
    alpha = backbone.resolve_alpha(settings.alpha)
    return backbone.title + (f" with alpha {alpha:g}" if alpha is not None else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description="Regenerate the deck's figures from real runs of the kit.")
    parser.add_argument("--profile", default="workshop", help="run profile (default workshop)")
    parser.add_argument("--backbone", default="mobilenet", help="backbone (default mobilenet)")
    parser.add_argument("--alpha", type=float, default=0.75, help="MobileNet width (default 0.75)")
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES_BY_NAME), help="make only these figures")
    parser.add_argument("--output", type=Path, default=FIGURES, help="folder for the PNGs and manifest.json")
    parser.add_argument("--offline", action="store_true", help="never download (mirrors and caches only)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    settings = figure_settings(args.profile, args.backbone, args.alpha)
    from helpers import backbones, weights

    weights.configure_keras_home(settings)
    weights.seed_cache(settings, known_md5=backbones.known_md5s())
    global DOWNLOAD_OK
    DOWNLOAD_OK = not args.offline
    began = time.perf_counter()
    try:
        run(args.only or list(FIGURES_BY_NAME), settings, args.output)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Figures written to {args.output} in {time.perf_counter() - began:.0f} s; rebuild the deck: python slides/build.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
