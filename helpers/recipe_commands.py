"""The lab's recipes as commands: ``python -m helpers score|extract|retrain`` (also ``tlkit <command>``).

Each command parses its options, runs the recipe from :mod:`helpers.recipes` with
progress bars on the terminal, writes its result atomically and returns an exit code:

== ==================================================================================
0  done (files that could not be read are listed in the ``error`` column, and counted)
1  nothing to show for it: no image found, or not one image could be read
2  bad input: a missing folder or file, a labels table without its columns, an
   unknown layer, an output that already exists, too few images or classes
3  the pretrained weights are missing and cannot be downloaded (offline)
4  ``export-model`` (or ``retrain --export``): an export's predictions differ from the Keras model's beyond its tolerance
== ==================================================================================
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

from helpers import backbones, device, export, recipes, retraining, saved_models, sources, weights
from helpers.download import UnsafeArchiveError
from helpers.settings import load_settings

EXIT_OK, EXIT_NOTHING, EXIT_BAD_INPUT, EXIT_NO_WEIGHTS = 0, 1, 2, 3


def _settings_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (default: kit.toml, then KIT_* variables)")
    group.add_argument("--backbone", help="pretrained network, a key of the backbone table (e.g. mobilenet)")
    group.add_argument("--alpha", type=float, help="width multiplier for mobilenet / mobilenet_v2 (e.g. 0.75)")
    group.add_argument("--image-size", type=int, help="square input size in pixels")
    group.add_argument("--batch-size", type=int, help="images per batch")
    group.add_argument("--profile", help="run size: smoke, grading, workshop, laptop, full (epochs for retrain)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes")


def _settings(args: argparse.Namespace) -> Any:
    """Settings from kit.toml and KIT_*, the command's options winning; the weights cache and device ready."""
    names = {"backbone": "backbone", "alpha": "alpha", "image_size": "image_size", "batch_size": "batch_size",
             "profile": "profile"}
    overrides = {setting: getattr(args, option) for option, setting in names.items() if getattr(args, option) is not None}
    settings = load_settings(overrides)
    # As a notebook's setup does: the kit's own Keras cache, seeded from the weights mirror if there is one.
    weights.configure_keras_home(settings)
    weights.seed_cache(settings, known_md5=backbones.known_md5s())
    device.setup(settings)  # TensorFlow imported quietly, threads and GPUs as the settings say
    return settings


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(text, file=sys.stderr)


def _run(args: argparse.Namespace, work: Callable[[], int]) -> int:
    """Run a command, turning the errors a user can fix into a message and an exit code."""
    try:
        with warnings.catch_warnings():
            if args.quiet:
                warnings.simplefilter("ignore")
            return work()
    except weights.WeightsMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_WEIGHTS
    except (FileNotFoundError, FileExistsError, NotADirectoryError, sources.DatasetError, UnsafeArchiveError,
            ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _images(args: argparse.Namespace, location: str) -> list[str]:

    images, skipped = recipes.list_images(location)
    if skipped:
        _say(args, f"note: {len(skipped)} file(s) not named like images were skipped, e.g. {Path(skipped[0]).name}")
    return images


def _finish(args: argparse.Namespace, table: Any, what: str) -> int:

    path = recipes.write_table(table, args.output, overwrite=args.overwrite)
    errors = int((table["error"] != "").sum())
    print(f"{what} {len(table) - errors} of {len(table)} image(s) -> {path}" + (f" ({errors} with an error)" if errors else ""))
    return EXIT_NOTHING if errors == len(table) else EXIT_OK


def score_parser() -> argparse.ArgumentParser:
    """The options of ``score``."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers score",
        description="Label every image of a folder (the lab's image classification recipe): a CSV or Parquet table "
        "with the columns image, prediction ({label: probability}, most probable first) and error.",
    )
    parser.add_argument("folder", help="a folder of images (sub-folders included) or one image file")
    parser.add_argument("--model", help="a model folder written by `retrain` (default: the ImageNet classifier)")
    parser.add_argument("-k", "--top", type=int, default=5, help="most labels per image (default 5)")
    parser.add_argument("--min-probability", type=float, default=0.1, help="least probability of a label (default 0.1)")
    parser.add_argument("-o", "--output", default="scores.csv", help="result table, .csv or .parquet (default scores.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    _settings_options(parser)
    return parser


def score_main(argv: Sequence[str]) -> int:
    """``score FOLDER``: label every image with the ImageNet classifier or a retrained model."""
    args = score_parser().parse_args(argv)

    def work() -> int:
        images = _images(args, args.folder)
        if not images:
            print(f"error: no image files in {args.folder}", file=sys.stderr)
            return EXIT_NOTHING
        table = recipes.score_images(
            images, _settings(args), model=args.model, k=args.top, min_probability=args.min_probability,
            progress=not args.quiet,
        )
        return _finish(args, table, "scored")

    return _run(args, work)


def extract_parser() -> argparse.ArgumentParser:
    """The options of ``extract``."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers extract",
        description="Extract one layer's values for every image of a folder (the lab's feature extraction recipe): a "
        "table with the columns image, features (one vector) and error.",
    )
    parser.add_argument("folder", help="a folder of images (sub-folders included) or one image file")
    parser.add_argument("--layer", help="layer name (default: the penultimate layer); list them with --list-layers")
    parser.add_argument("--pooling", choices=("avg", "max", "flatten", "none"), default="avg",
                        help="how a spatial layer becomes a vector (default avg)")
    parser.add_argument("--list-layers", action="store_true", help="print the layers one can extract, and stop")
    parser.add_argument("-o", "--output", default="features.csv",
                        help="result table, .csv (vectors as JSON lists) or .parquet (default features.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    _settings_options(parser)
    return parser


def extract_main(argv: Sequence[str]) -> int:
    """``extract FOLDER``: one layer's values per image, for classic machine learning."""
    args = extract_parser().parse_args(argv)

    def work() -> int:
        settings = _settings(args)
        if args.list_layers:
            backbone = backbones.get_backbone(settings=settings)
            model = backbones.load_classifier(settings) if backbone.feature_layer else backbones.load_base(settings)
            for name, shape in backbones.candidate_layers(model):
                print(f"{name}\t{shape}")
            return EXIT_OK
        if Path(args.output).suffix.lower() not in recipes.TABLE_FORMATS:
            raise ValueError(f"--output must end in .csv or .parquet, not {args.output!r}.")
        images = _images(args, args.folder)
        if not images:
            print(f"error: no image files in {args.folder}", file=sys.stderr)
            return EXIT_NOTHING
        pooling = None if args.pooling == "none" else args.pooling
        table = recipes.extract_images(images, settings, layer=args.layer, pooling=pooling, progress=not args.quiet)
        return _finish(args, table, "extracted")

    return _run(args, work)


def retrain_parser() -> argparse.ArgumentParser:
    """The options of ``retrain``."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers retrain",
        description="Retrain the backbone on your own labelled images (the lab's retraining recipe): a new head, then "
        "the last block, on a split that keeps near-duplicate images together. Writes a model folder (model.keras, "
        "model.json with the class names and preprocessing, report.md, history.csv, split.csv...) that `score "
        "--model` uses.",
    )
    parser.add_argument("--images", required=True, help="the image folder: one sub-folder per class, or the folder "
                        "the labels table's paths are relative to")
    parser.add_argument("--labels", help="a CSV labels table (default: the sub-folders of --images are the classes)")
    parser.add_argument("--path-column", default="path", help="the table's image path column (default path)")
    parser.add_argument("--label-column", default="target", help="the table's label column (default target)")
    parser.add_argument("-o", "--output", default="retrained-model", help="model folder (default retrained-model)")
    parser.add_argument(
        "--blocks", type=int, default=None,
        help=f"blocks retrained in phase 2 (default {retraining.DEFAULT_RECIPE['n_blocks']}, notebook 02's recipe)",
    )
    parser.add_argument(
        "--no-flip-copies", action="store_true",
        help="do not train (and predict) on left-right flipped copies of the images as well",
    )
    parser.add_argument(
        "--export", action="store_true",
        help="then export the model to OUTPUT/export, as export-model does: SavedModel, TFLite (float16) and ONNX "
        "(when installed), each checked against the Keras model on the test split (exit 4 if one disagrees)",
    )
    _settings_options(parser)
    return parser


def retrain_main(argv: Sequence[str]) -> int:
    """``retrain --images DIR``: the two-phase retraining recipe on your own labelled images."""
    args = retrain_parser().parse_args(argv)

    def work() -> int:
        result = recipes.run_retrain(
            args.images, args.output, _settings(args), labels=args.labels, path_column=args.path_column,
            label_column=args.label_column, n_blocks=args.blocks, flips=not args.no_flip_copies,
            # Bars only on a terminal: a redirected log gets one plain line per epoch, no escape codes.
            progress=not args.quiet, bars=not args.quiet and sys.stderr.isatty(),
            epoch_lines=None if args.quiet else sys.stdout,
        )
        print(result.report)
        print(f"model saved in {result.folder} (score with: python -m helpers score FOLDER --model {result.folder})")
        if args.export:  # the saved folder, reloaded: what is exported is what was saved
            return export_folder(result.folder, quiet=args.quiet)
        return EXIT_OK

    return _run(args, work)


EXIT_EXPORT_MISMATCH = 4


def export_folder(
    folder: str | Path,
    *,
    output: str | Path | None = None,
    formats: Sequence[str] | None = None,
    quantisation: str = "float16",
    quiet: bool = False,
) -> int:
    """Export a model folder written by ``retrain`` (SavedModel, TFLite, ONNX), checked on its own test split.

    What ``export-model`` runs, and what ``retrain --export`` can call once the model is saved. The
    export goes to ``<folder>/export`` unless ``output`` is given; the test split comes from the
    folder's ``split.csv`` (without one, the check runs on generated images). Prints the report.

    Returns:
        ``EXIT_OK``, or ``EXIT_EXPORT_MISMATCH`` when an export differs beyond its tolerance.
    """
    import pandas as pd

    folder = Path(folder).expanduser().resolve()
    if export.is_saved_model(folder):
        raise ValueError(f"{folder} is already an export; give the model folder written by `retrain`.")
    model, info = saved_models.load_model(folder)
    settings = saved_models.model_settings(info, load_settings())
    device.setup(settings)
    test_paths = test_labels = None
    split_file = folder / "split.csv"
    if split_file.is_file():
        split = pd.read_csv(split_file)
        test = split.loc[split["split"] == "test"]
        if len(test):
            test_paths, test_labels = test["path"].astype(str).tolist(), [str(v) for v in test["label"]]
    report = export.export_model(
        model, Path(output).expanduser() if output else folder / "export", info["class_names"], settings,
        test_paths=test_paths, test_labels=test_labels, formats=formats, quantisation=quantisation,
        batch_size=8,  # the check's batches: 32 images at once cost the process about 1.5 GB more
    )
    print(report)
    if not quiet:
        print(f"score with the export: python -m helpers score FOLDER --model {report.folder}", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_EXPORT_MISMATCH


def export_model_parser() -> argparse.ArgumentParser:
    """The options of ``export-model``."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers export-model",
        description="Export a retrained model for use elsewhere: a TensorFlow SavedModel (its serving signature takes "
        "RGB pixels and answers probabilities, the label and the class names), a LiteRT/TFLite file (float16 or "
        "dynamic-range quantised) and ONNX (when tf2onnx and onnxruntime are installed). Each export is reloaded "
        "and checked against the Keras model on the folder's test split: export.csv gives sizes, test accuracy, "
        "agreement and the largest probability difference.",
    )
    parser.add_argument("model", help="a model folder written by `retrain` (model.keras, model.json, split.csv)")
    parser.add_argument("-o", "--output", help="the export folder (default: MODEL/export)")
    parser.add_argument("--formats", help=f"comma-separated, some of {','.join(export.FORMATS)} (default: all, onnx "
                        "when installed)")
    parser.add_argument("--quantisation", choices=export.QUANTISATIONS, default="float16",
                        help="the TFLite file's weights: float16 (default) or dynamic (8-bit)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no notes")
    return parser


def export_model_main(argv: Sequence[str]) -> int:
    """``export-model MODEL``: SavedModel, TFLite and ONNX exports of a retrained model, each checked."""
    args = export_model_parser().parse_args(argv)

    def work() -> int:
        formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
        return export_folder(args.model, output=args.output, formats=formats, quantisation=args.quantisation,
                             quiet=args.quiet)

    return _run(args, work)


# Each command's option parser, by name (the README's examples are checked against them).
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "score": score_parser,
    "extract": extract_parser,
    "retrain": retrain_parser,
    "export-model": export_model_parser,
}
