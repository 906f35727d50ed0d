"""Scoring images with a pretrained ImageNet classifier: top labels above a minimum probability.

As in the Dataiku lab's image-classification recipe:
each image gets at most ``k`` labels (default 5) whose probability is at least
``min_probability`` (default 0.1), and the result is a table with one row per image:
``image`` (its path), ``predictions`` (``{label: probability}``, most probable first)
and ``error`` (why the file could not be scored, or None). A file that cannot be read
gets an error in its row instead of stopping the run.

The probabilities are kept (:class:`Scores`), so the table can be rebuilt for another
``k`` or threshold without running the network again (the notebook's slider does).
Notebook 01's exercises write the one-image rule (``top_k_with_threshold``) and the table
(``results_table``) themselves; the kit applies the rule to a whole batch at once
(:func:`top_labels`, on a 2-D array) and builds tables through :meth:`Scores.table`.
:func:`helpers.plots.predictions` draws a results table as an image grid.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import device, pipeline, scan
from helpers.explore import imagenet_class_names
from helpers import progress as progress_bars
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "CARTOON_OR_PAPER_LABELS",
    "DEFAULT_K",
    "DEFAULT_MIN_PROBABILITY",
    "K_SLIDER",
    "SLIDER_COLUMNS",
    "Scores",
    "THRESHOLD_SLIDER",
    "cartoon_or_paper_share",
    "format_predictions",
    "imagenet_class_names",
    "predict_files",
    "score_files",
    "slider_table",
    "top_labels",
]

DEFAULT_K = 5
DEFAULT_MIN_PROBABILITY = 0.1
TABLE_COLUMNS = ["image", "predictions", "error"]
#: Notebook 01's sliders, (min, max, step): ``k`` and ``min_probability``. The notebook's
#: text about them is checked at these values (tests/test_scoring.py).
K_SLIDER = (1, 10, 1)
THRESHOLD_SLIDER = (0.0, 0.9, 0.05)
SLIDER_COLUMNS = ["image", "shows", "labels kept", "labels (probability)"]

# ImageNet classes that name a printed, drawn or paper object rather than something
# in the picture: what a network trained on photographs answers when shown a cartoon
# frame (MobileNet's top label for most Simpsons frames is comic_book or jigsaw_puzzle).
CARTOON_OR_PAPER_LABELS = frozenset(
    {
        "comic_book", "book_jacket", "web_site", "envelope", "menu", "crossword_puzzle",
        "jigsaw_puzzle", "binder", "packet", "carton", "paper_towel", "toilet_tissue",
    }
)


def _check_k_and_threshold(k: int, min_probability: float) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a whole number of labels, at least 1 (got {k!r}).")
    if not 0.0 <= float(min_probability) <= 1.0:
        raise ValueError(f"min_probability must be between 0 and 1 (got {min_probability!r}).")


def top_labels(
    probabilities: Any,
    class_names: Sequence[str],
    k: int = DEFAULT_K,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
) -> list[dict[str, float]]:
    """For each image of a batch, its ``k`` most probable labels at or above a threshold.

    Used by :meth:`Scores.table` (notebook 01, sections 4 and 5; notebook 05, section 7) and the
    ``score`` command. Batch-level on purpose: notebook 01's exercise writes the rule for one image.

    >>> top_labels([[0.1, 0.6, 0.3], [0.5, 0.05, 0.45]], ["cat", "dog", "fox"], k=2, min_probability=0.2)
    [{'dog': 0.6, 'fox': 0.3}, {'cat': 0.5, 'fox': 0.45}]

    Args:
        probabilities: Class probabilities of a batch of images, shape ``(n_images, n_classes)``.
        class_names: Name of each class, in the classifier's output order.
        k: Most labels to keep per image (the lab's "max number of class labels", 5).
        min_probability: Least probability to keep a label (the lab's "min probability threshold", 0.1).

    Returns:
        One ``{label: probability}`` per image, ordered from most to least probable (ties:
        first class first); plain Python floats; empty where no label reaches ``min_probability``.

    Raises:
        ValueError: Probabilities not 2-D (one row per image), not matching ``class_names``, or bad ``k``/threshold.
    """
    values = np.asarray(probabilities, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(
            f"pass a batch of probabilities, one row per image (2-D), not an array of shape {values.shape}; "
            "for one image, pass [row]."
        )
    if values.shape[1] != len(class_names):
        raise ValueError(f"{values.shape[1]} probabilities per image but {len(class_names)} class names; they must match.")
    _check_k_and_threshold(k, min_probability)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return [
        {str(class_names[i]): float(row[i]) for i in kept if row[i] >= min_probability}
        for row, kept in zip(values, order)
    ]


@dataclasses.dataclass
class Scores:
    """The classifier's output for a list of files.

    Returned by :func:`predict_files` in notebook 01, sections 4 and 5 (``table``, ``take``, ``concat``).

    Attributes:
        paths: Each file, as given.
        probabilities: ``(n_files, n_classes)``; a row of NaN where the file could not be read.
        errors: Per file, None or why it could not be read.
        class_names: Name of each class (column).
    """

    paths: list[str]
    probabilities: np.ndarray
    errors: list[str | None]
    class_names: list[str]

    def table(self, k: int = DEFAULT_K, min_probability: float = DEFAULT_MIN_PROBABILITY) -> pd.DataFrame:
        """The results table for this ``k`` and threshold: columns ``image``, ``predictions``, ``error``.

        One row per file, in order; ``predictions`` is ``{label: probability}`` (:func:`top_labels`;
        ``{}`` for a file with an error), ``error`` is None for a scored file.
        """
        return _results_table(self.paths, self.probabilities, self.errors, self.class_names, k, min_probability)

    def take(self, rows: Sequence[int]) -> "Scores":
        """The scores of some files only (by position)."""
        rows = [int(row) for row in rows]
        return Scores(
            [self.paths[r] for r in rows], self.probabilities[rows], [self.errors[r] for r in rows], self.class_names
        )

    @staticmethod
    def concat(parts: Sequence["Scores"]) -> "Scores":
        """Scores of several runs one after the other (same classes)."""
        if not parts:
            raise ValueError("nothing to concatenate: pass at least one Scores.")
        if any(list(part.class_names) != list(parts[0].class_names) for part in parts):
            raise ValueError("these scores use different class names; score them with the same classifier.")
        return Scores(
            [p for part in parts for p in part.paths],
            np.concatenate([part.probabilities for part in parts]),
            [e for part in parts for e in part.errors],
            parts[0].class_names,
        )

    def top_labels(self) -> list[str | None]:
        """Each file's most probable label whatever its probability (None for unreadable files)."""
        return [
            None if error is not None else str(self.class_names[int(np.argmax(row))])
            for row, error in zip(self.probabilities, self.errors)
        ]


def _results_table(
    paths: Sequence[str],
    probabilities: Any,
    errors: Sequence[str | None],
    class_names: Sequence[str],
    k: int,
    min_probability: float,
) -> pd.DataFrame:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) != len(paths) or len(errors) != len(paths):
        raise ValueError(
            f"need one row of probabilities and one error entry per file: {len(paths)} files, "
            f"probabilities of shape {probabilities.shape}, {len(errors)} errors."
        )
    _check_k_and_threshold(k, min_probability)
    scored = [row for row, error in enumerate(errors) if error is None]
    labels = iter(top_labels(probabilities[scored], class_names, k, min_probability))
    predictions = [{} if error is not None else next(labels) for error in errors]
    # Object columns built from Series keep None as None (a list of dicts would turn it into NaN).
    return pd.DataFrame(
        {
            "image": pd.Series([str(p) for p in paths], dtype=object),
            "predictions": pd.Series(predictions, dtype=object),
            "error": pd.Series(list(errors), dtype=object),
        },
        columns=TABLE_COLUMNS,
    )


def predict_files(
    paths: Sequence[str | os.PathLike[str]],
    model: "keras.Model",
    settings: Settings | None = None,
    *,
    class_names: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> Scores:
    """Run the classifier over files; unreadable files are reported, not fatal.

    Taught in notebook 01, section 4; used again in section 5, by notebook 02, sections 7 and 8 and by notebook 05,
    section 7.

    Every file is checked first (:func:`helpers.scan.inspect_paths`: missing, empty,
    corrupt, not an image...); the usable ones go through the kit's input pipeline
    (:func:`helpers.pipeline.make_dataset`: decode, resize, the backbone's own
    ``preprocess_input``) in batches, in order.

    Args:
        paths: Image files.
        model: The backbone with its ImageNet classifier (:func:`helpers.backbones.load_classifier`).
        settings: Course settings (backbone, image size, batch size); loaded when omitted.
        class_names: Class names; the 1000 ImageNet classes by default.
        batch_size: Images per batch; ``settings.batch_size`` by default.
        progress: Show a progress bar (one step per batch).

    Returns:
        :class:`Scores` (probabilities and errors, in the order of ``paths``).

    Raises:
        ValueError: The model's outputs do not match the class names.
    """
    settings = settings or load_settings()
    names = list(class_names) if class_names is not None else imagenet_class_names(settings)
    paths = [str(p) for p in paths]
    probabilities = np.full((len(paths), len(names)), np.nan, dtype=np.float32)
    usable, errors = scan.usable_rows(paths, settings=settings)
    if usable:
        batch_size = int(batch_size or settings.batch_size)
        dataset = pipeline.make_dataset([paths[row] for row in usable], settings=settings, batch_size=batch_size)
        batches = progress_bars.bar(dataset, total=math.ceil(len(usable) / batch_size), desc="scoring", unit="batch", disable=not progress)
        output = np.concatenate([np.asarray(device.predict_batch(model, batch)) for batch in batches])
        if output.ndim != 2 or output.shape[1] != len(names):
            raise ValueError(
                f"the model gives outputs of shape {output.shape[1:]} but there are {len(names)} class names; "
                "score with the backbone's ImageNet classifier (backbones.load_classifier)."
            )
        probabilities[usable] = output
    return Scores(paths, probabilities, errors, names)


def score_files(
    paths: Sequence[str | os.PathLike[str]],
    model: "keras.Model",
    settings: Settings | None = None,
    *,
    k: int = DEFAULT_K,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
    class_names: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score files into the results table (``image``, ``predictions``, ``error``).

    Not called in a notebook: the ``python -m helpers score`` command uses it (notebook 05, section 7 shows that
    command).

    Shorthand for ``predict_files(...).table(k, min_probability)``; see :func:`predict_files`.
    """
    _check_k_and_threshold(k, min_probability)
    scores = predict_files(
        paths, model, settings, class_names=class_names, batch_size=batch_size, progress=progress
    )
    return scores.table(k, min_probability)


def format_predictions(predictions: Mapping[str, float], error: str | None = None) -> str:
    """One image's labels as short text, most probable first.

    Used inside :func:`slider_table` (notebook 01, section 5).

    >>> format_predictions({"comic_book": 0.791, "jigsaw_puzzle": 0.031})
    'comic_book 0.79 · jigsaw_puzzle 0.03'
    >>> format_predictions({})
    '(no label reaches the threshold)'
    >>> format_predictions({}, error="truncated: the file ends early")
    'not scored: truncated: the file ends early'
    """
    if error is not None:
        return f"not scored: {error}"
    if not predictions:
        return "(no label reaches the threshold)"
    return " · ".join(f"{label} {probability:.2f}" for label, probability in predictions.items())


def slider_table(
    scores: Scores,
    shows: Sequence[str],
    k: int = DEFAULT_K,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
) -> pd.DataFrame:
    """The table under notebook 01's sliders: what each image shows and the labels it keeps.

    Args:
        scores: The scored images (:func:`predict_files`).
        shows: Per image, what it shows (a Simpsons character, "photo: cat"...): files
            with the same name are then told apart.
        k: Most labels per image.
        min_probability: Least probability to keep a label.

    Returns:
        Columns ``image`` (the file name), ``shows``, ``labels kept`` and ``labels
        (probability)`` (readable text, see :func:`format_predictions`), one row per file.
    """
    if len(shows) != len(scores.paths):
        raise ValueError(f"give one description per image: {len(scores.paths)} images, {len(shows)} descriptions.")
    table = scores.table(k, min_probability)
    return pd.DataFrame(
        {
            "image": [Path(path).name for path in table["image"]],
            "shows": [str(item) for item in shows],
            "labels kept": [len(predictions) for predictions in table["predictions"]],
            "labels (probability)": [
                format_predictions(predictions, error) for predictions, error in zip(table["predictions"], table["error"])
            ],
        },
        columns=SLIDER_COLUMNS,
    )


def cartoon_or_paper_share(
    top_labels: Sequence[str | None], labels: frozenset[str] | set[str] = CARTOON_OR_PAPER_LABELS
) -> float:
    """Share of scored images whose top ImageNet label is a cartoon or paper object.

    Used by notebook 01, section 6.

    Args:
        top_labels: Each image's most probable label (None for an unreadable file,
            left out of the count); :meth:`Scores.top_labels` gives them.
        labels: The labels that count.

    Returns:
        A number between 0 and 1 (NaN when no image was scored).
    """
    scored = [label for label in top_labels if label is not None]
    if not scored:
        return float("nan")
    return sum(label in labels for label in scored) / len(scored)
