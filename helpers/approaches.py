"""Notebook 04's approaches: transfer learning against training from scratch, raw pixels and deep features.

Four families of approaches are trained and scored on *one* shared stratified split:

(a) transfer learning: the pretrained backbone plus a new head, then its last block
    fine-tuned (the recipe of notebook 02, from :mod:`helpers.retraining`);
(b) from scratch: the same backbone architecture with random initial weights plus the
    same head (the Wolfram example's "reset the net"), and a small CNN
    (:mod:`helpers.scratch_models`);
(c) raw pixels: images downsized and flattened, into logistic regression and one other
    scikit-learn model;
(d) deep features: the backbone's features (:mod:`helpers.features`) into logistic regression.

:func:`shared_split` makes the one split. Notebook 04 defines, compiles and fits its Keras models
itself and scores them with :func:`keras_result`; ``run_*`` repeat those recipes for the slides
and tests (:func:`run_comparison` all of them). Every approach gives an :class:`ApproachResult`, which
:func:`comparison_table` ranks (accuracy, balanced accuracy, training time, trained
parameters); :func:`helpers.plots.comparison` draws the table. How each approach fares
with fewer labelled images is :mod:`helpers.sample_efficiency`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from helpers import (
    backbones, callbacks, classic, compiling, device, evaluation, features, freezing, heads, pipeline, retraining,
    splits,
)
from helpers.scratch_models import build_scratch_backbone, scratch_image_size, small_cnn
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

# Side of the square thumbnails flattened into raw-pixel features (32x32x3 = 3,072 numbers).
RAW_PIXEL_SIZE = 32

# Columns of the comparison table, in order.
TABLE_COLUMNS = (
    "rank", "approach", "family", "accuracy", "accuracy_low", "accuracy_high", "test_images", "balanced_accuracy",
    "train_seconds", "trained_parameters",
)

# scikit-learn models on raw pixels (helpers.classic names): logistic regression and one other.
RAW_PIXEL_MODELS = ("logistic_regression", "extra_trees")

FAMILIES = ("transfer learning", "from scratch", "raw pixels", "deep features", "baseline")

# Train / validation / test shares of the shared split. The test share is larger than the
# kit's default (0.15) so that the approaches are told apart by more than a few images;
# validation only serves early stopping of the Keras models.
SPLIT_FRACTIONS = (0.6, 0.15, 0.25)


def raw_pixel_features(
    images: pd.DataFrame | Sequence[str], size: int = RAW_PIXEL_SIZE, *, settings: Settings
) -> np.ndarray:
    """Raw-pixel features: each image downsized to ``size`` x ``size`` RGB and flattened.

    Used by the kit's own runs of notebook 04's approach (c) (:func:`run_raw_pixels`, :func:`run_comparison`);
    notebook 04's exercise 2 has students write their own (``raw_pixels``), which the notebook uses.
    The course settings are required (keyword only): they say how images are decoded.

    No learned features at all: the numbers a classifier sees are the pixel values,
    scaled to [0, 1], row by row, channel last (``R, G, B`` of pixel (0, 0) first).

    Args:
        images: A dataset frame (its ``path`` column) or a sequence of image paths.
        size: Side of the thumbnail; 32 gives 3,072 features per image.
        settings: Course settings (``kit.settings``).

    Returns:
        float32 array of shape ``(n, size * size * 3)``, rows in the order of ``images``.
    """
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be the course settings (kit.settings), not {type(settings).__name__}.")
    pixels = pipeline.load_images(images, size, settings)
    return pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class ApproachResult:
    """One approach's predictions on the shared test split, and what training it cost.

    Taught in notebook 04, section 6 (results).

    Attributes:
        approach: Display name, unique within a comparison.
        family: One of :data:`FAMILIES`.
        y_true: True class ids of the test images.
        y_pred: Predicted class ids, same order.
        class_names: Names of the class ids.
        train_seconds: Wall time of training (feature extraction not included; see notes).
        trained_parameters: Number of parameters training changed.
        probabilities: Predicted class probabilities ``(n, classes)``, when available.
        test_paths: Paths of the test images, for the misclassified gallery.
        notes: A sentence on what was trained (image size, epochs, caches).
        history: Keras training history, one row per epoch (:func:`helpers.callbacks.history_frame`
            columns: ``epoch``, ``phase``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``), when any.
    """

    approach: str
    family: str
    y_true: np.ndarray
    y_pred: np.ndarray
    class_names: list[str]
    train_seconds: float
    trained_parameters: int
    probabilities: np.ndarray | None = None
    test_paths: list[str] | None = None
    notes: str = ""
    history: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        self.y_true = np.asarray(self.y_true).astype(np.int64).ravel()
        self.y_pred = np.asarray(self.y_pred).astype(np.int64).ravel()
        if self.y_true.shape != self.y_pred.shape:
            raise ValueError(
                f"{self.approach}: {len(self.y_true)} true labels but {len(self.y_pred)} predictions; "
                "predict every test image once, in order."
            )
        if self.family not in FAMILIES:
            raise ValueError(f"{self.approach}: family {self.family!r} is not one of {FAMILIES}.")

    @property
    def accuracy(self) -> float:
        """Share of test images classified correctly."""
        return evaluation.accuracy(self.y_true, self.y_pred)

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present in the test set (:func:`helpers.evaluation.balanced_accuracy`)."""
        return evaluation.balanced_accuracy(self.y_true, self.y_pred)


def majority_baseline(y_train: Sequence[int], y_test: Sequence[int], class_names: Sequence[str]) -> ApproachResult:
    """The no-skill baseline: always predict the class most frequent in training.

    Taught in notebook 04, section 6 (results).
    """
    y_train = np.asarray(y_train)
    if not len(y_train):
        raise ValueError("y_train is empty; the baseline needs the training labels.")
    values, counts = np.unique(y_train, return_counts=True)
    majority = int(values[np.argmax(counts)])
    return ApproachResult(
        "majority class", "baseline", np.asarray(y_test), np.full(len(y_test), majority), list(class_names),
        0.0, 0, notes=f"always predicts {class_names[majority]!r}",
    )


def comparison_table(results: Sequence[ApproachResult]) -> pd.DataFrame:
    """Rank approaches: accuracy (with its 95 % Wilson interval), balanced accuracy, time and parameters.

    Taught in notebook 04, section 6 (after the students' own ``comparison_table`` of exercise 3, which has
    five columns; this one adds the family, the accuracy's interval and the number of test images).

    Ranking: higher balanced accuracy first (it is not fooled by class imbalance),
    then higher accuracy, then less training time, then fewer parameters.

    Args:
        results: One :class:`ApproachResult` per approach, all on the same test images.

    Returns:
        DataFrame with columns :data:`TABLE_COLUMNS`, best first, ``rank`` from 1.

    Raises:
        ValueError: No results, duplicate approach names, or results on different test sets.
    """
    results = list(results)
    if not results:
        raise ValueError("no results to compare; run at least one approach first.")
    names = [r.approach for r in results]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"approach names must be unique; {duplicates} appear more than once.")
    reference = results[0].y_true
    for result in results[1:]:
        if result.y_true.shape != reference.shape or not np.array_equal(result.y_true, reference):
            raise ValueError(
                f"{result.approach!r} was scored on different test images than {results[0].approach!r}; "
                "every approach must use the same split."
            )
    frame = pd.DataFrame(
        {
            "approach": names,
            "family": [r.family for r in results],
            "accuracy": [r.accuracy for r in results],
            "accuracy_low": [evaluation.wilson_interval(int(np.sum(r.y_pred == r.y_true)), len(r.y_true))[0] for r in results],
            "accuracy_high": [evaluation.wilson_interval(int(np.sum(r.y_pred == r.y_true)), len(r.y_true))[1] for r in results],
            "test_images": [len(r.y_true) for r in results],
            "balanced_accuracy": [r.balanced_accuracy for r in results],
            "train_seconds": [float(r.train_seconds) for r in results],
            "trained_parameters": [int(r.trained_parameters) for r in results],
        }
    )
    frame = frame.sort_values(
        ["balanced_accuracy", "accuracy", "train_seconds", "trained_parameters"],
        ascending=[False, False, True, True],
        kind="mergesort",  # stable: ties keep the order the approaches were given in
    ).reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame[list(TABLE_COLUMNS)]


# --------------------------------------------------------------------------- the shared split


@dataclasses.dataclass
class SharedSplit:
    """The one stratified train/validation/test split every approach is trained and scored on.

    Taught in notebook 04, section 1 (the one split every approach shares).

    Attributes:
        frame: Every image (``path``, ``label``, ``split``), in a fixed order; arrays computed
            for the whole frame (features, pixels) are indexed with :meth:`rows`.
        class_names: Sorted class names; a class id is a position in this list.
    """

    frame: pd.DataFrame
    class_names: list[str]

    def rows(self, split: str) -> np.ndarray:
        """Positions in :attr:`frame` of the images of one split (frame order)."""
        if split not in splits.SPLITS:
            raise ValueError(f"split must be one of {splits.SPLITS}, not {split!r}.")
        return np.flatnonzero(self.frame["split"].to_numpy() == split)

    def part(self, split: str) -> pd.DataFrame:
        """The images of one split, index reset."""
        return self.frame.iloc[self.rows(split)].reset_index(drop=True)

    def labels(self, split: str) -> np.ndarray:
        """Class ids of one split's images."""
        return np.asarray(pipeline.encode_labels(self.part(split)["label"], self.class_names), dtype=np.int64)

    @property
    def train(self) -> pd.DataFrame:
        """Training images."""
        return self.part("train")

    @property
    def validation(self) -> pd.DataFrame:
        """Validation images (early stopping of the Keras models)."""
        return self.part("validation")

    @property
    def test(self) -> pd.DataFrame:
        """Test images: every approach is scored on exactly these."""
        return self.part("test")


def shared_split(frame: pd.DataFrame, settings: Settings | None = None) -> SharedSplit:
    """Split a dataset once (stratified, seeded by ``settings.seed``) for every approach to share.

    Taught in notebook 04, section 1 (the one split every approach shares).

    The shares are :data:`SPLIT_FRACTIONS`; a frame that already has a ``split`` column keeps it.

    Raises:
        ValueError: Fewer than two classes, or a split without images of every class.
    """
    settings = settings or load_settings()
    if "split" not in frame.columns:
        frame = splits.split_dataset(frame, seed=settings.seed, fractions=SPLIT_FRACTIONS)
    frame = frame.reset_index(drop=True)
    names = list(pipeline.class_names(frame))
    if len(names) < 2:
        raise ValueError(f"the dataset has {len(names)} class(es); a comparison needs at least two.")
    for split in splits.SPLITS:
        present = set(frame.loc[frame["split"] == split, "label"])
        if present != set(names):
            raise ValueError(
                f"the {split} split lacks images of {sorted(set(names) - present)}; "
                "use a larger profile or more images per class."
            )
    return SharedSplit(frame, names)


# --------------------------------------------------------------------------- the approaches

def _sklearn_result(
    name: str, family: str, estimator: Any, x_train: np.ndarray, split: SharedSplit, x_test: np.ndarray, notes: str
) -> ApproachResult:
    began = time.perf_counter()
    estimator.fit(x_train, split.labels("train"))
    seconds = time.perf_counter() - began
    probabilities = estimator.predict_proba(x_test) if hasattr(estimator, "predict_proba") else None
    predicted = np.argmax(probabilities, axis=1) if probabilities is not None else estimator.predict(x_test)
    return ApproachResult(
        name, family, split.labels("test"), predicted, split.class_names, seconds,
        freezing.count_trainable_parameters(estimator), probabilities, list(split.test["path"]), notes,
    )


def use_answer(exercise: str, function: Callable[..., Any], *args: Any, instead: str,
               check: Callable[[Any], None] | None = None, **kwargs: Any) -> Any:
    """Call a student's function for the rest of the notebook; if it fails, say which exercise to fix and go on.

    Used by notebook 04, sections 3 and 4 (the answers of exercises 1 and 2 train and score the
    approaches that follow): a mistake in one exercise must not stop every later cell, and
    must not hide which exercise caused it.

    Args:
        exercise: What the student sees, for example ``"Exercise 1 (build_small_cnn)"``.
        function: The student's function.
        *args: Its arguments.
        instead: What the notebook does without it, for example ``"the small CNN is left out"``.
        check: Raises ValueError (with what to fix) when the returned value cannot be used.
        **kwargs: Its keyword arguments.

    Returns:
        The function's value, or None (after printing why) when it raised or failed ``check``.

    >>> use_answer("Exercise 9 (half)", lambda x: x / 2, 3, instead="nothing")
    1.5
    >>> use_answer("Exercise 9 (half)", lambda x: x / 0, 3, instead="this step is skipped")
    Exercise 9 (half) does not work yet (ZeroDivisionError: division by zero), so this step is skipped. Fix it until its test cell passes, then run this cell again.
    """
    try:
        value = function(*args, **kwargs)
        if check is not None:
            check(value)
    except Exception as problem:  # a student's answer may raise anything: report it, never stop here
        reason = f"{type(problem).__name__}: {problem}".strip().rstrip(":")
        print(f"{exercise} does not work yet ({reason}), so {instead}. "
              "Fix it until its test cell passes, then run this cell again.")
        return None
    return value


def classifier_check(input_shape: Sequence[int], num_classes: int) -> Callable[[Any], None]:
    """A ``check`` for :func:`use_answer`: the value is a Keras model from ``input_shape`` to ``num_classes`` values.

    Used by notebook 04, section 3 (the small CNN of exercise 1).
    """
    import keras

    def check(model: Any) -> None:
        if not isinstance(model, keras.Model):
            raise ValueError(f"it returned a {type(model).__name__}, not a keras.Model")
        if tuple(model.input_shape[1:]) != tuple(input_shape) or tuple(model.output_shape[1:]) != (num_classes,):
            raise ValueError(
                f"the model maps {tuple(model.input_shape[1:])} to {tuple(model.output_shape[1:])}; expected "
                f"{tuple(input_shape)} images to {num_classes} class probabilities"
            )

    return check


def keras_result(
    approach: str,
    family: str,
    model: "keras.Model",
    x_test: Any,
    split: SharedSplit,
    *,
    seconds: float,
    history: Any = None,
    phase: str = "training",
    trained_parameters: int | None = None,
    notes: str = "",
) -> ApproachResult:
    """Score a Keras model the notebook trained on the shared split's test images.

    Taught in notebook 04, sections 2 and 3: the notebook defines, compiles and fits each
    model; this only predicts ``x_test`` (the test images, or what the model takes for
    them: cached features, block inputs) and records the result for the comparison.

    Args:
        approach: Display name.
        family: One of :data:`FAMILIES`.
        model: The trained model, its output a softmax over ``split.class_names``.
        x_test: Its inputs for ``split.test``, in that order.
        split: The shared split.
        seconds: Wall time of the ``fit`` call(s).
        history: The ``History`` that ``fit`` returned (or its ``.history`` dict, or a table).
        phase: Phase name of the history rows.
        trained_parameters: Parameters training changed; the model's trainable ones by default.
        notes: A sentence on what was trained.

    Raises:
        ValueError: The model's outputs do not match the test images or the classes.
    """
    probabilities = np.asarray(model.predict(x_test, batch_size=64, verbose=0))
    expected = (len(split.test), len(split.class_names))
    if probabilities.shape != expected:
        raise ValueError(
            f"{approach}: the model gave outputs of shape {probabilities.shape} for the test images; expected "
            f"{expected} (one softmax row per test image, one column per class)."
        )
    if isinstance(history, pd.DataFrame) or history is None:
        table = history
    else:
        table = callbacks.history_frame(history, phase)
    count = freezing.count_trainable_parameters(model) if trained_parameters is None else int(trained_parameters)
    return ApproachResult(
        approach, family, split.labels("test"), np.argmax(probabilities, axis=1), split.class_names, float(seconds),
        count, probabilities, list(split.test["path"]), notes, table,
    )


def run_raw_pixels(
    split: SharedSplit,
    settings: Settings,
    *,
    pixels: np.ndarray | None = None,
    size: int = RAW_PIXEL_SIZE,
    models: Sequence[str] = RAW_PIXEL_MODELS,
) -> list[ApproachResult]:
    """Approach (c): raw pixels, downsized and flattened, into scikit-learn models.

    Taught in notebook 04, section 4 (raw pixels).

    Args:
        split: The shared split.
        settings: Course settings (seed).
        pixels: Raw-pixel features of every image of ``split.frame``; computed when omitted.
        size: Thumbnail side when computing them.
        models: Names of :func:`helpers.classic.make_pipeline` models (scaling + classifier).

    Returns:
        One result per model.
    """
    if pixels is None:
        pixels = raw_pixel_features(split.frame, size, settings=settings)
    if len(pixels) != len(split.frame):
        raise ValueError(f"{len(pixels)} rows of pixels for {len(split.frame)} images; compute them on split.frame.")
    side = int(round(np.sqrt(pixels.shape[1] / 3)))
    return [
        _sklearn_result(
            f"raw pixels + {classic.MODEL_TITLES.get(name, name).lower()}", "raw pixels",
            classic.make_pipeline(name, seed=settings.seed), pixels[split.rows("train")], split,
            pixels[split.rows("test")], f"{side}x{side} RGB thumbnails, {pixels.shape[1]:,} numbers per image",
        )
        for name in models
    ]


@dataclasses.dataclass
class TransferRun:
    """Approach (a), both phases, and what they leave behind.

    Taught in notebook 04, section 2 (transfer learning).

    Attributes:
        result: What :func:`helpers.retraining.fit_two_phases` trained (model, history, phase table).
        head_only: Scored after phase 1 (new head on the frozen pretrained base).
        fine_tuned: Scored after phase 2 (head + last block); its time and parameters count both phases.
        features: Pooled features of the frozen *pretrained* base for every image of the split
            (phase 1's inputs, average-pooled): the deep features of approach (d).
    """

    result: Any
    head_only: ApproachResult
    fine_tuned: ApproachResult
    features: np.ndarray

    @property
    def results(self) -> list[ApproachResult]:
        """Both results, phase 1 first."""
        return [self.head_only, self.fine_tuned]


def run_transfer(split: SharedSplit, settings: Settings, *, progress: bool = True) -> TransferRun:
    """Approach (a): the pretrained base plus a new head (phase 1), then its last block (phase 2).

    Repeats what notebook 04, section 2 trains in plain Keras, for the slides' figures
    (``slides/figures.py``, through :func:`run_comparison`) and the tests; the notebook
    itself defines, compiles and fits its models.

    The same visible steps as notebook 02 (:func:`helpers.retraining.fit_two_phases`) with
    notebook 04's plain recipe: one pass over the images caches the last block's input and
    the base's feature maps; phase 1 fits the head on the feature maps, phase 2 the last
    block and the head on the block inputs at a tenth of the learning rate (constant, no
    label smoothing, no class weights, no flips); epochs and early stopping come from the
    settings. Training times are the two phases' fits (the one-off pass is in the notes).

    Args:
        split: The shared split.
        settings: Course settings (backbone, profile, seed, caches).
        progress: Show the extraction's progress bar and one plain line per epoch.
    """
    import sys
    import tempfile

    import keras

    keras.utils.set_random_seed(settings.seed)
    base = backbones.load_base(settings)
    backbone = backbones.get_backbone(settings=settings)
    head = heads.build_head(base.output_shape[1:], len(split.class_names), seed=settings.seed)
    if list(pipeline.class_names(split.frame)) != list(split.class_names):  # both sort the same labels; a guard
        raise ValueError(f"class order differs: {pipeline.class_names(split.frame)} vs {split.class_names}.")
    began = time.perf_counter()
    arrays = features.cached_arrays(
        heads.cached_outputs_model(base, backbone, 1), split.frame, settings, name="images", progress=progress
    )
    extraction = time.perf_counter() - began
    # The pretrained base's feature maps, average-pooled: approach (d)'s features, from the same pass.
    pooled = np.concatenate(
        [np.asarray(arrays[1][i : i + 256], dtype=np.float32).mean(axis=(1, 2)) for i in range(0, len(split.frame), 256)]
    )
    with tempfile.TemporaryDirectory(prefix="kit-transfer-run-") as run_dir:
        result = retraining.fit_two_phases(
            settings, split.frame, base, head, arrays, n_blocks=1, label_smoothing=0.0, class_weights=False,
            phase2_learning_rate=settings.learning_rate * retraining.FINETUNE_LEARNING_RATE_FACTOR,
            phase2_schedule="constant", run_dir=run_dir, epoch_lines=sys.stdout if progress else None,
        )
    title = backbone.title
    y_test, paths = split.labels("test"), list(split.test["path"])
    phases, history = result.phases, result.history
    head_epochs, block_epochs = (int(n) for n in phases["epochs"])
    head_seconds, block_seconds = (float(n) for n in phases["seconds"])
    head_parameters, block_parameters = (int(n) for n in phases["trained parameters"])
    head_only = ApproachResult(
        f"transfer: {title} + new head", "transfer learning", y_test, np.argmax(result.head_test_probabilities, axis=1),
        split.class_names, head_seconds, head_parameters, result.head_test_probabilities, paths,
        f"phase 1 only: head on cached features, {head_epochs} epochs",
        history[history["phase"] == callbacks.PHASE_HEAD].reset_index(drop=True),
    )
    kept = bool(phases["kept"].iloc[1])
    fine_tuned = ApproachResult(
        f"transfer: {title} + head + last block", "transfer learning", y_test, np.argmax(result.test_probabilities, axis=1),
        split.class_names, head_seconds + block_seconds,
        block_parameters,  # phase 2 trains the head again, plus the block
        result.test_probabilities, paths,
        f"phase 1 ({head_epochs} epochs) then phase 2 on cached block inputs ({block_epochs} epochs"
        + ("" if kept else "; not kept: it did not beat phase 1 on validation, so this is phase 1's model")
        + f"); one-off pass over the images {extraction:.0f} s",
        history,
    )
    return TransferRun(result, head_only, fine_tuned, pooled)


def deep_features(split: SharedSplit, settings: Settings, *, progress: bool = True) -> np.ndarray:
    """The pretrained backbone's features of every image of ``split.frame`` (disk-cached).

    Taught in notebook 04, section 5 (deep features).
    """
    extractor = backbones.load_feature_extractor(settings)
    return features.extract_features(extractor, split.frame, settings, progress=progress)


def run_deep_features(
    split: SharedSplit,
    settings: Settings,
    *,
    features: np.ndarray | None = None,
    model: str = "logistic_regression",
) -> ApproachResult:
    """Approach (d): the frozen pretrained backbone's features into logistic regression.

    Taught in notebook 04, section 5 (deep features).

    Args:
        split: The shared split.
        settings: Course settings (backbone, cache, seed).
        features: Features of every image of ``split.frame`` (:func:`deep_features`); computed when omitted.
        model: A :func:`helpers.classic.make_pipeline` model name.
    """
    if features is None:
        features = deep_features(split, settings)
    features = np.asarray(features).reshape(len(features), -1)
    if len(features) != len(split.frame):
        raise ValueError(f"{len(features)} feature rows for {len(split.frame)} images; extract them from split.frame.")
    title = backbones.get_backbone(settings=settings).title
    return _sklearn_result(
        f"deep features + {classic.MODEL_TITLES.get(model, model).lower()}", "deep features",
        classic.make_pipeline(model, seed=settings.seed), features[split.rows("train")], split,
        features[split.rows("test")], f"{title} features ({features.shape[1]:,} per image, extracted once, cached)",
    )


def _fit_keras(
    model: "keras.Model",
    split: SharedSplit,
    settings: Settings,
    *,
    size: int,
    preprocess: bool,
    epochs: int,
    verbose: int,
) -> tuple[np.ndarray, float, pd.DataFrame]:
    """Train on the split's training images (validation for early stopping); predict the test images."""
    import keras

    tf = device.import_tensorflow()
    datasets = pipeline.split_datasets(split.frame, settings=settings, cache=True, size=size, preprocess=preprocess)
    # The shuffled training set does not know its length; telling Keras avoids its
    # "input ran out of data" warning at the end of the first epoch.
    batches = -(-len(split.rows("train")) // settings.batch_size)
    datasets["train"] = datasets["train"].apply(tf.data.experimental.assert_cardinality(batches))
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=settings.scale.early_stopping_patience, restore_best_weights=True
    )
    began = time.perf_counter()
    history = model.fit(
        datasets["train"], validation_data=datasets["validation"], epochs=epochs, callbacks=[stop],
        shuffle=False,  # the training dataset shuffles itself every epoch
        verbose=verbose,
    )
    seconds = time.perf_counter() - began
    probabilities = model.predict(datasets["test"], verbose=0)
    return probabilities, seconds, callbacks.history_frame(history, "from scratch")


def run_scratch_backbone(
    split: SharedSplit,
    settings: Settings,
    *,
    image_size: int | None = None,
    epochs: int | None = None,
    verbose: int = 0,
) -> ApproachResult:
    """Approach (b), reset: the backbone's architecture with random weights plus the head, all trained.

    Repeats notebook 04, section 3's reset net (which the notebook builds, compiles and
    fits itself) for the slides' figures and the tests.

    Args:
        split: The shared split.
        settings: Course settings (backbone, seed, learning rate, batch size, profile).
        image_size: Input side; :func:`scratch_image_size` by default (small on a CPU).
        epochs: Epochs; ``settings.scale.scratch_epochs`` by default (early stopping on val_loss).
        verbose: Keras ``fit`` verbosity.
    """
    import keras

    size = image_size or scratch_image_size(settings)
    epochs = epochs or settings.scale.scratch_epochs
    keras.utils.set_random_seed(settings.seed)
    model = build_scratch_backbone(settings, len(split.class_names), image_size=size)
    compiling.compile_model(model, settings.learning_rate)
    probabilities, seconds, history = _fit_keras(
        model, split, settings, size=size, preprocess=True, epochs=epochs, verbose=verbose
    )
    title = backbones.get_backbone(settings=settings).title
    return ApproachResult(
        f"{title} from random weights", "from scratch", split.labels("test"), np.argmax(probabilities, axis=1),
        split.class_names, seconds, freezing.count_trainable_parameters(model), probabilities, list(split.test["path"]),
        f"same architecture and head as transfer learning, {size}x{size} px, up to {epochs} epochs", history,
    )


def run_small_cnn(
    split: SharedSplit,
    settings: Settings,
    *,
    build: Callable[[int, int], "keras.Model"] | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    verbose: int = 0,
) -> ApproachResult:
    """Approach (b), small: a small CNN trained from scratch on the split.

    Repeats notebook 04, section 3's fit of the small CNN (the notebook compiles and fits
    the student's own) for the slides' figures and the tests.

    Args:
        split: The shared split.
        settings: Course settings (seed, learning rate, batch size, profile).
        build: ``(image_size, num_classes) -> uncompiled model`` taking 0-255 pixels;
            the kit's :func:`helpers.scratch_models.small_cnn` by default.
        image_size: Input side; :func:`scratch_image_size` by default.
        epochs: Epochs; ``settings.scale.scratch_epochs`` by default (early stopping on val_loss).
        verbose: Keras ``fit`` verbosity.
    """
    import keras

    size = image_size or scratch_image_size(settings)
    epochs = epochs or settings.scale.scratch_epochs
    keras.utils.set_random_seed(settings.seed)
    classes = len(split.class_names)
    model = build(size, classes) if build else small_cnn(settings, classes, image_size=size)
    model = compiling.compile_model(model, settings.learning_rate)
    probabilities, seconds, history = _fit_keras(
        model, split, settings, size=size, preprocess=False, epochs=epochs, verbose=verbose
    )
    return ApproachResult(
        "small CNN from scratch", "from scratch", split.labels("test"), np.argmax(probabilities, axis=1),
        split.class_names, seconds, freezing.count_trainable_parameters(model), probabilities, list(split.test["path"]),
        f"{size}x{size} px, up to {epochs} epochs from random weights", history,
    )


# --------------------------------------------------------------------------- everything at once

APPROACHES = ("transfer", "scratch_backbone", "small_cnn", "raw_pixels", "deep_features", "baseline")


@dataclasses.dataclass
class Comparison:
    """Everything :func:`run_comparison` trained, on one shared split.

    Not a notebook step: sections 1-6 of notebook 04 in one call (the slides' figures).

    Attributes:
        split: The shared split.
        results: One :class:`ApproachResult` per approach, in the order they ran.
        features: Deep features of every image of ``split.frame`` (when computed).
        pixels: Raw-pixel features of every image (when computed).
        seconds: Wall time of the whole run.
    """

    split: SharedSplit
    results: list[ApproachResult]
    features: np.ndarray | None = None
    pixels: np.ndarray | None = None
    seconds: float = 0.0

    def table(self) -> pd.DataFrame:
        """The ranked :func:`comparison_table`."""
        return comparison_table(self.results)

    def result(self, approach: str) -> ApproachResult:
        """The result named ``approach``."""
        for result in self.results:
            if result.approach == approach:
                return result
        raise KeyError(f"no approach {approach!r}; have {[r.approach for r in self.results]}.")


def run_comparison(
    frame: pd.DataFrame | SharedSplit,
    settings: Settings,
    *,
    approaches: Sequence[str] = APPROACHES,
    progress: bool = False,
) -> Comparison:
    """Run the four approaches (and the majority-class baseline) on one shared split.

    Not a notebook step: sections 1-6 of notebook 04 in one call (the slides' figures).

    Args:
        frame: A dataset frame (split here with :func:`shared_split`) or a :class:`SharedSplit`.
        settings: Course settings: backbone, profile (sizes, epochs), seed, caches.
        approaches: Which of :data:`APPROACHES` to run.
        progress: Print one line per approach and show progress bars.

    Returns:
        A :class:`Comparison`.

    Raises:
        ValueError: An unknown approach name.
    """
    unknown = sorted(set(approaches) - set(APPROACHES))
    if unknown:
        raise ValueError(f"unknown approach(es) {unknown}; choose from {APPROACHES}.")
    began = time.perf_counter()
    split = frame if isinstance(frame, SharedSplit) else shared_split(frame, settings)
    comparison = Comparison(split, [])

    def transfer() -> list[ApproachResult]:
        run = run_transfer(split, settings, progress=progress)
        comparison.features = run.features  # the deep features: no second pass over the images
        return run.results

    def deep() -> ApproachResult:
        if comparison.features is None:
            comparison.features = deep_features(split, settings, progress=progress)
        return run_deep_features(split, settings, features=comparison.features)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ("transfer", transfer),
        ("scratch_backbone", lambda: run_scratch_backbone(split, settings)),
        ("small_cnn", lambda: run_small_cnn(split, settings)),
        ("raw_pixels", lambda: run_raw_pixels(split, settings, pixels=comparison.pixels)),
        ("deep_features", deep),
        ("baseline", lambda: majority_baseline(split.labels("train"), split.labels("test"), split.class_names)),
    ]
    if "raw_pixels" in approaches:
        comparison.pixels = raw_pixel_features(split.frame, RAW_PIXEL_SIZE, settings=settings)
    for name, step in steps:
        if name not in approaches:
            continue
        produced = step()
        for result in produced if isinstance(produced, list) else [produced]:
            comparison.results.append(result)
            if progress:
                print(f"{result.approach:<40} accuracy {result.accuracy:6.1%}  ({result.train_seconds:.1f} s)")
    comparison.seconds = time.perf_counter() - began
    return comparison
