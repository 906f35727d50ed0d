"""The lab's recipes on your own images: score a folder, extract its features, retrain on its labels.

The Dataiku plugin behind the workshop has three recipes that work on any folder:
*image classification* (a pretrained or retrained network labels every image),
*feature extraction* (one layer's values per image, for classic ML) and *retraining*
(a new head, then the last block, on a labels table). This module runs them on a
folder of your own, for notebook 05 and the command line
(``python -m helpers score|extract|retrain``, :mod:`helpers.recipe_commands`):

* :func:`list_images` -- the image files of a folder (or one file);
* :func:`score_images` -- the lab's results table, ``image``, ``prediction``
  (``{label: probability}``, at most *k* labels above a minimum probability) and
  ``error``, with the ImageNet classifier or a model saved by :func:`save_model`;
* :func:`extract_images` -- ``image``, ``features`` (one vector) and ``error``;
* :func:`labelled_images`, :func:`limit_per_class`, :func:`split_without_leakage`,
  :func:`retrain` -- the retraining recipe step by step: labels from class folders or
  a ``path,target`` table, a split that keeps near-duplicates together, both phases;
* :func:`save_model` / :func:`load_model` -- a model folder (``model.keras`` and
  ``model.json``: backbone, input size, class names, results), which the ``score``
  command and any later notebook reload;
* :func:`write_table` -- CSV or Parquet, written atomically.

A file that cannot be read gets an ``error`` in its row; it never stops a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from helpers import backbones, evaluation, features, files, heads, pipeline, retraining, saved_models, scan, scoring, sources, splits
from helpers.settings import Settings, load_settings

__all__ = [
    "LAB_COLUMNS",
    "RetrainResult",
    "duplicate_groups",
    "extract_images",
    "lab_table",
    "labelled_images",
    "limit_per_class",
    "list_images",
    "retrain_report",
    "run_retrain",
    "score_images",
    "split_without_leakage",
    "write_table",
]

LAB_COLUMNS = ["image", "prediction", "error"]
FEATURE_COLUMNS = ["image", "features", "error"]
TABLE_FORMATS = (".csv", ".parquet")


# --------------------------------------------------------------------------- finding images



def list_images(location: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The image files of a folder (sub-folders included, sorted), or a single image file.

    Used by notebook 05, sections 7 and 8.

    Hidden files and archive leftovers (``__MACOSX``) are ignored.

    Returns:
        ``(images, skipped)``: absolute paths of files named like images, and of the
        other files (``notes.txt``), which a caller reports.

    Raises:
        FileNotFoundError: ``location`` does not exist.
    """
    path = Path(location).expanduser()
    if path.is_file():
        return [str(path.resolve())], []
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist; give a folder of images (or one image file).")
    images, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in sources._IGNORED_DIRS)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            file = str((Path(dirpath) / name).resolve())
            (images if Path(name).suffix.lower() in sources.IMAGE_EXTENSIONS else skipped).append(file)
    return sorted(images), sorted(skipped)


# --------------------------------------------------------------------------- tables


def lab_table(table: pd.DataFrame) -> pd.DataFrame:
    """A results table (:meth:`helpers.scoring.Scores.table`) in the lab's CSV form.

    Used by notebook 05, section 7 (the lab's table form).

    ``prediction`` becomes JSON text (``{"homer_simpson": 0.93}``, most probable first,
    ``{}`` when no label reaches the threshold) and ``error`` an empty string for a
    scored file.

    >>> table = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "predictions": [{"cat": 0.9}, {}],
    ...                       "error": [None, "empty: empty file (0 bytes)"]})
    >>> lab_table(table).to_dict("records")[0]
    {'image': 'a.jpg', 'prediction': '{"cat": 0.9}', 'error': ''}
    """
    return pd.DataFrame(
        {
            "image": table["image"].astype(str),
            "prediction": [json.dumps(p if isinstance(p, dict) else {}) for p in table["predictions"]],
            "error": [e if isinstance(e, str) else "" for e in table["error"]],  # pandas 3 reads None as NaN
        },
        columns=LAB_COLUMNS,
    )


def write_table(table: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a table as CSV or Parquet (by the file's suffix), atomically.

    Not called in a notebook: the ``python -m helpers score`` and ``extract`` commands write their CSV with it
    (notebook 05, section 7 shows the first).

    In CSV, list and array cells (feature vectors) are written as JSON lists; in
    Parquet they stay lists of floats.

    Raises:
        ValueError: Another suffix.
        FileExistsError: The file exists and ``overwrite`` is False.
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ValueError(f"write the table as .csv or .parquet, not {path.name!r}.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; choose another file or allow overwriting (--overwrite).")
    table = table.copy()
    with files.atomic_path(path, suffix=f".part{suffix}") as temporary:
        if suffix == ".csv":
            for column in table.columns:
                if table[column].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
                    table[column] = [json.dumps(np.asarray(v).tolist()) if v is not None else "" for v in table[column]]
            table.to_csv(temporary, index=False)
        else:
            try:
                import pyarrow  # noqa: F401 - pandas needs it for Parquet
            except ImportError:
                raise ValueError("Parquet needs the pyarrow package (pip install pyarrow); or write a .csv file.") from None
            for column in table.columns:
                if table[column].map(lambda v: isinstance(v, np.ndarray)).any():
                    table[column] = [None if v is None else np.asarray(v, dtype=np.float32).tolist() for v in table[column]]
            table.to_parquet(temporary, index=False)
    return path


# --------------------------------------------------------------------------- score and extract


def score_images(
    paths: Sequence[str],
    settings: Settings | None = None,
    *,
    model: str | os.PathLike | None = None,
    k: int = 5,
    min_probability: float = 0.1,
    progress: bool = False,
) -> pd.DataFrame:
    """Label images with the ImageNet classifier, or with a saved model: the lab's results table.

    Not called in a notebook: the ``python -m helpers score`` command uses it (notebook 05, section 7 shows that
    command).

    Args:
        paths: Image files (:func:`list_images`).
        settings: Course settings (backbone for the ImageNet classifier, batch size, cache).
        model: A model folder saved by :func:`save_model` (or its ``.keras`` file); None =
            the settings' backbone with its ImageNet classifier.
        k: Most labels per image.
        min_probability: Least probability to keep a label.
        progress: Show a progress bar.

    Returns:
        A frame with ``image``, ``prediction`` (JSON ``{label: probability}``) and ``error``.
    """
    settings = settings or load_settings()
    if model is None:
        classifier, class_names = backbones.load_classifier(settings), None
    else:
        classifier, info = saved_models.load_model(model)
        settings, class_names = saved_models.model_settings(info, settings), [str(c) for c in info["class_names"]]
    table = scoring.score_files(
        list(paths), classifier, settings, k=k, min_probability=min_probability, class_names=class_names,
        progress=progress,
    )
    return lab_table(table)


def extract_images(
    paths: Sequence[str],
    settings: Settings | None = None,
    *,
    layer: str | None = None,
    pooling: str | None = "avg",
    progress: bool = False,
) -> pd.DataFrame:
    """One layer's values for each image (the lab's feature extraction): ``image``, ``features``, ``error``.

    Not called in a notebook: the ``python -m helpers extract`` command uses it (named in notebook 05's summary).

    Args:
        paths: Image files.
        settings: Course settings (backbone, batch size, cache).
        layer: Layer name; the penultimate layer by default (``helpers.backbones.candidate_layers``
            lists the others).
        pooling: For a spatial layer: ``avg``, ``max``, ``flatten`` or None (the map, flattened).
        progress: Show a progress bar.

    Returns:
        A frame, one row per path in order; ``features`` is a float32 vector (None for a
        file that cannot be read, with the reason in ``error``).
    """
    settings = settings or load_settings()
    paths = list(paths)
    extractor = backbones.load_feature_extractor(settings, layer=layer, pooling=pooling)
    usable, errors = scan.usable_rows(paths, settings=settings)
    vectors: list[Any] = [None] * len(paths)
    if usable:
        frame = pd.DataFrame({"path": [paths[row] for row in usable]})
        values = features.extract_features(extractor, frame, settings, progress=progress)
        values = values.reshape(len(values), -1)
        for row, vector in zip(usable, values):
            vectors[row] = vector.astype(np.float32)
    return pd.DataFrame(
        {
            "image": pd.Series(paths, dtype=object),
            "features": pd.Series(vectors, dtype=object),
            "error": pd.Series([e or "" for e in errors], dtype=object),
        },
        columns=FEATURE_COLUMNS,
    )


# --------------------------------------------------------------------------- the retraining recipe


def labelled_images(
    images: str | os.PathLike,
    labels: str | os.PathLike | pd.DataFrame | None = None,
    *,
    path_column: str = "path",
    label_column: str = "target",
) -> pd.DataFrame:
    """A labelled dataset: class folders (``images/<class>/<image>``), or a labels table.

    Used by notebook 05, section 1 (class folders, a zip or a labels table).

    Args:
        images: The image folder.
        labels: None = the sub-folders are the classes (or, for ``train/`` + ``val/`` or
            ``test/`` folders of classes, the held-out folder is the test split:
            :func:`helpers.sources.from_split_folders`); else a CSV file (or frame) with a
            path column (relative to ``images``, or absolute) and a label column.
        path_column: The table's path column (the lab's ``path``).
        label_column: The table's label column (the lab's ``target``).

    Returns:
        A frame with ``path`` and ``label``; dropped rows are in ``helpers.sources.dropped``.
    """
    if labels is None:
        if sources.has_split_folders(images):  # train/ + val/: the held-out folder is the test split
            return sources.from_split_folders(images)
        return sources.from_folders(images)
    return sources.from_table(labels, images, path_column=path_column, label_column=label_column)


def limit_per_class(frame: pd.DataFrame, per_class: int, *, seed: int = 0) -> pd.DataFrame:
    """At most ``per_class`` images of each class (0 = all), chosen by a hash of the file name.

    Used by notebook 05, sections 2 and 8.

    The same files are kept on every run and every machine, and adding images to one
    class never changes the choice in another.

    >>> frame = pd.DataFrame({"path": [f"/x/{i}.jpg" for i in range(5)], "label": ["a"] * 4 + ["b"]})
    >>> limit_per_class(frame, 2)["label"].value_counts().to_dict()
    {'a': 2, 'b': 1}
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 0:
        raise ValueError(f"per_class must be a whole number >= 0 (0 = every image), not {per_class!r}.")
    if per_class == 0:
        return frame.reset_index(drop=True)

    def key(path: str) -> str:
        return hashlib.sha1(f"{seed}\x00{os.path.basename(path)}".encode()).hexdigest() + path

    ranks = frame["path"].map(key)
    kept = frame.assign(_rank=ranks).sort_values("_rank").groupby("label", sort=False).head(per_class)
    result = frame.loc[sorted(kept.index)].reset_index(drop=True)
    result.attrs = dict(frame.attrs)
    return result


def split_without_leakage(
    frame: pd.DataFrame,
    settings: Settings | None = None,
    *,
    threshold: float | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Split a labelled dataset so that near-duplicate images never straddle two splits.

    Taught in notebook 05, section 3 (a split that does not leak).

    Photos of one burst or copies of one picture give almost the same features: they
    are grouped (:func:`helpers.splits.near_duplicate_groups` on the backbone's
    features), and each group goes whole to train, validation or test
    (:func:`helpers.splits.split_dataset`, stratified by label, seeded).

    Args:
        frame: ``path`` and ``label`` (usable images: scan them first).
        settings: Course settings (backbone, seed, cache).
        threshold: Cosine distance under which two images are one group; the kit's default.
        progress: Show the extraction's progress bar.

    Returns:
        The frame with ``group`` and ``split`` columns, and the features (rows in its order),
        which the map and the near-duplicate table reuse.
    """
    settings = settings or load_settings()
    extractor = backbones.load_feature_extractor(settings)
    values = features.extract_features(extractor, frame, settings, progress=progress)
    grouped = frame.copy()
    grouped[splits.GROUP_COLUMN] = duplicate_groups(grouped, values, threshold=threshold).to_numpy()
    return splits.split_dataset(grouped, seed=settings.seed), values


def duplicate_groups(frame: pd.DataFrame, values: Any, *, threshold: float | None = None) -> pd.Series:
    """Near-duplicate groups (:func:`helpers.splits.near_duplicate_groups`), named by path inside the folder.

    Taught in notebook 05, section 3 (a split that does not leak); used again in section 8.

    Groups are named after a member's path relative to the images' common folder
    (``dog/pic_001.jpg``), not its bare file name: cameras and datasets reuse names
    (``IMG_0001.jpg`` in every class folder), and two groups must never share a name.
    The names stay the same on every machine, wherever the folder is.

    >>> frame = pd.DataFrame({"path": ["/d/dog/1.jpg", "/d/cat/1.jpg", "/d/cat/2.jpg"]})
    >>> duplicate_groups(frame, [[1.0, 0.0], [0.0, 1.0], [0.0, 0.99]]).tolist()
    ['dog/1.jpg', 'cat/1.jpg', 'cat/1.jpg']
    """
    root = sources.common_folder(frame["path"])
    relative = [os.path.relpath(str(p), root).replace(os.sep, "/") if root else str(p) for p in frame["path"]]
    # near_duplicate_groups names each group after a member's base name: number the rows so that the
    # name says which member it is, then name the group by that member's relative path.
    numbered = pd.DataFrame({"path": [str(i) for i in range(len(frame))]}, index=frame.index)
    options = {} if threshold is None else {"threshold": threshold}
    groups = splits.near_duplicate_groups(numbered, values, **options)
    return pd.Series([relative[int(g)] for g in groups], index=frame.index, name=splits.GROUP_COLUMN, dtype=object)


@dataclasses.dataclass
class RetrainResult:
    """What the ``retrain`` command did.

    Not called in a notebook: what :func:`run_retrain` returns to the ``python -m helpers retrain`` command (named in
    notebook 05's summary).

    Attributes:
        folder: The model folder (:func:`save_model`).
        frame: The dataset with its ``group`` and ``split`` columns.
        problems: Files left out, with the reason (scan problems and dropped rows).
        test_accuracy: Accuracy on the test split (NaN when it is empty).
        report: The short report (also ``report.md`` in the folder).
    """

    folder: Path
    frame: pd.DataFrame
    problems: pd.DataFrame
    test_accuracy: float
    report: str


def retrain_report(
    result: "retraining.TwoPhaseResult",
    settings: Settings,
    frame: pd.DataFrame,
    problems: pd.DataFrame,
    *,
    source: str,
    test_accuracy: float,
    table: pd.DataFrame | None,
) -> str:
    """The short report written beside a retrained model: data, split, phases, test scores.

    Not called in a notebook: :func:`run_retrain` writes it for the ``python -m helpers retrain`` command (named in
    notebook 05's summary).
    """
    backbone = backbones.get_backbone(settings=settings)
    counts = frame.groupby(["label", "split"]).size().unstack(fill_value=0)
    groups = frame["group"].nunique() if "group" in frame.columns else len(frame)
    own_test = " (the test split is the dataset's own held-out folder)" if frame.attrs.get("own_test") else ""
    lines = [
        "# Retrained model",
        "",
        f"- images: {source}; {len(frame)} used, {len(problems)} left out (see problems.csv)",
        f"- classes: {', '.join(map(str, result.class_names))}",
        f"- backbone: {backbone.title} (alpha {settings.alpha}), input {backbones.input_size(settings)} px,"
        f" profile {settings.profile}, seed {settings.seed}",
        f"- split without leakage: {groups} groups of near-duplicates for {len(frame)} images, each group in one split"
        + own_test,
        "- recipe: notebook 02's default ("
        + ", ".join(f"{key} {value}" for key, value in retraining.DEFAULT_RECIPE.items())
        + ")",
        "",
        "## Images per class and split",
        "",
        counts.reindex(columns=[c for c in ("train", "validation", "test") if c in counts.columns]).to_string(),
        "",
        "## Training",
        "",
        result.phases.round(3).to_string(),
        "",
        "## Test",
        "",
        f"test accuracy: {test_accuracy:.1%} on {int((frame['split'] == 'test').sum())} images"
        if np.isfinite(test_accuracy) else "no test images (too few images per class): only validation was measured",
    ]
    if table is not None:
        lines += ["", table.round(3).to_string()]
    return "\n".join(lines) + "\n"


def _usable_images(
    images: str | os.PathLike,
    labels: str | os.PathLike | None,
    path_column: str,
    label_column: str,
    settings: Settings,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Loading and scanning: the usable images (``path``, ``label``, ``split`` when held out) and the files left out."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sources.DroppedRowsWarning)
        frame = labelled_images(images, labels, path_column=path_column, label_column=label_column)
    for warning in caught:
        if progress:
            print(f"note: {warning.message}")
    dropped = sources.dropped(frame).assign(kind="dropped")
    scanned = scan.scan_images(frame, settings=settings)
    problems = pd.concat([dropped, scanned.problems], ignore_index=True)
    if progress:
        print(f"{scanned.summary()}.")
    # A held-out folder (train/ + val/) comes marked split == "test": keep the mark, it stays the test split.
    usable = scanned.good[[c for c in ("path", "label", "split") if c in scanned.good.columns]].reset_index(drop=True)
    return usable, problems


def _split_without_leaks(usable: pd.DataFrame, feature_maps: Any, settings: Settings, progress: bool) -> pd.DataFrame:
    """The split: near-duplicates grouped on the base's pooled feature maps, each group in one split."""
    own_test = "split" in usable.columns and bool((usable["split"] == "test").any())
    # The same pass gives the grouping features: the base's feature maps, average-pooled.
    pooled = np.concatenate([np.asarray(feature_maps[i : i + 256], dtype=np.float32).mean(axis=(1, 2))
                             for i in range(0, len(usable), 256)])
    grouped = usable.copy()
    grouped[splits.GROUP_COLUMN] = duplicate_groups(grouped, pooled).to_numpy()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = splits.split_dataset(grouped, seed=settings.seed)
    frame.attrs["own_test"] = own_test
    for warning in caught:
        if progress and "class" in str(warning.message):
            print(f"note: {warning.message}")
    if not (frame["split"] == "validation").any():
        raise sources.DatasetError(
            "too few images for a validation split (it decides when to stop): give each class at least 3 images."
        )
    return frame


def _train(
    settings: Settings,
    frame: pd.DataFrame,
    base: Any,
    arrays: list[np.ndarray],
    n_classes: int,
    n_blocks: int,
    output: Path,
    epoch_lines: Any,
) -> "retraining.TwoPhaseResult":
    """The training: a new head, then notebook 02's two phases, checkpoints in a run folder beside ``output``."""
    import keras

    keras.utils.set_random_seed(settings.seed)
    head = heads.build_head(base.output_shape[1:], n_classes, seed=settings.seed)
    run_dir = output.parent / f".{output.name}.run-{os.getpid()}"
    try:
        return retraining.fit_two_phases(
            settings, frame, base, head, arrays, n_blocks=n_blocks, run_dir=run_dir,
            epoch_lines=epoch_lines,
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)  # the best epochs are restored; checkpoints served their purpose


def _test_scores(
    result: "retraining.TwoPhaseResult", frame: pd.DataFrame, class_names: list[Any]
) -> tuple[pd.DataFrame | None, float, dict[str, Any]]:
    """The test scores: per-class table, accuracy, and the files kept beside the model (split, history, predictions)."""
    test = frame.loc[frame["split"] == "test"]
    table, test_accuracy = None, float("nan")
    extra: dict[str, Any] = {"split.csv": frame[["path", "label", "group", "split"]], "history.csv": result.history}
    if result.test_probabilities is not None:
        probabilities = result.test_probabilities
        y_true = pipeline.encode_labels(test["label"], class_names)
        y_pred = evaluation.predicted_ids(probabilities)
        test_accuracy = evaluation.accuracy(y_true, y_pred)
        table = evaluation.classification_table(y_true, y_pred, class_names)
        extra["test_predictions.csv"] = test[["path", "label"]].assign(
            predicted=[class_names[i] for i in y_pred], probability=probabilities.max(axis=1)
        )
    return table, test_accuracy, extra


def run_retrain(
    images: str | os.PathLike,
    output: str | os.PathLike,
    settings: Settings | None = None,
    *,
    labels: str | os.PathLike | None = None,
    path_column: str = "path",
    label_column: str = "target",
    n_blocks: int | None = None,
    flips: bool = True,
    progress: bool = True,
    bars: bool | None = None,
    epoch_lines: Any = None,
) -> RetrainResult:
    """The whole retraining recipe, as the ``retrain`` command runs it: load, scan, split, train, test, save.

    Not called in a notebook: the ``python -m helpers retrain`` command (named in notebook 05's summary) runs
    notebook 02's default recipe (:data:`helpers.retraining.DEFAULT_RECIPE`) on the user's images, in one call.

    The images go through the network once (:func:`helpers.features.cached_arrays`, with
    their flips): the same pass gives the features that group near-duplicates and the
    arrays both phases train on. A dataset's own held-out folder (``train/`` + ``val/``)
    stays the test split.

    Args:
        images: The image folder.
        output: The model folder to write.
        settings: Course settings (backbone, profile, seed, batch size).
        labels: A labels table (default: the folders are the classes).
        path_column: The table's path column.
        label_column: The table's label column.
        n_blocks: Blocks retrained in phase 2; the default recipe's by default.
        flips: Also train (and predict) on left-right flipped images.
        progress: Print notes (what was left out, the split's warnings).
        bars: Show the extraction's progress bar; ``progress`` by default.
        epoch_lines: A stream for one plain line per epoch (None: silent).

    Raises:
        FileNotFoundError: The images or the labels table do not exist.
        FileExistsError: ``output`` exists and is not a saved model (it is never replaced).
        helpers.sources.DatasetError: Fewer than 2 classes, or a class without a usable image.
        ValueError: A labels table without the named columns.
    """
    settings = settings or load_settings()
    n_blocks = retraining.DEFAULT_RECIPE["n_blocks"] if n_blocks is None else n_blocks
    output = Path(output).expanduser().resolve()
    if output.exists() and not (output / saved_models.INFO_FILE).is_file() and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"{output} exists and is not a saved model; choose a new folder for the model.")
    usable, problems = _usable_images(images, labels, path_column, label_column, settings, progress)
    base = backbones.load_base(settings)
    backbone = backbones.get_backbone(settings=settings)
    extractor = heads.cached_outputs_model(base, backbone, n_blocks)
    arrays = features.cached_arrays(
        extractor, usable, settings, name="images, as they are and flipped" if flips else "images", flips=flips,
        progress=progress if bars is None else bars,
    )
    frame = _split_without_leaks(usable, arrays[1], settings, progress)
    class_names = pipeline.class_names(frame)
    result = _train(settings, frame, base, arrays, len(class_names), n_blocks, output, epoch_lines)
    table, test_accuracy, extra = _test_scores(result, frame, class_names)
    if len(problems):
        extra["problems.csv"] = problems
    source = f"{images}" + (f" labelled by {labels}" if labels is not None else " (one folder per class)")
    report = retrain_report(result, settings, frame, problems, source=source, test_accuracy=test_accuracy, table=table)
    extra["report.md"] = report
    results = {
        "test accuracy": test_accuracy if np.isfinite(test_accuracy) else None,
        "validation accuracy": result.validation_accuracy,
        "images": len(frame),
        "training seconds": float(result.phases["seconds"].sum()),
        "source": source,
        "recipe": dict(retraining.DEFAULT_RECIPE, n_blocks=n_blocks, flips=flips),
    }
    folder = saved_models.save_model(result.model, output, settings, class_names, results=results, extra=extra)
    return RetrainResult(folder, frame, problems, test_accuracy, report)
