"""Notebook 04: transfer learning against training from scratch, raw pixels and deep features.

Four families of approaches are trained and scored on *one* shared stratified split:

(a) transfer learning: the pretrained backbone plus a new head, then its last block
    fine-tuned (the recipe of notebook 02, from :mod:`helpers.training`);
(b) from scratch: the same backbone architecture with random initial weights plus the
    same head (the Wolfram example's "reset the net"), and a small CNN;
(c) raw pixels: images downsized and flattened, into logistic regression and one other
    scikit-learn model;
(d) deep features: the backbone's features (:mod:`helpers.features`) into logistic regression.

:func:`shared_split` makes the one split; ``run_*`` train each approach on it (or
:func:`run_comparison` all of them) and give :class:`ApproachResult` objects, which
:func:`comparison_table` ranks (accuracy, balanced accuracy, training time, trained
parameters). :func:`sample_efficiency` measures test accuracy against the number of
training images per class, several seeds per point, for every approach whose inputs are
computed once (deep features, raw pixels, images in memory), so each point only refits
the last model; :func:`summarize_sample_efficiency` gives the means and error bars.
Their figures are :func:`helpers.plots.comparison` and :func:`helpers.plots.sample_efficiency`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import backbones, classic, device, evaluation, features, pipeline, splits, training
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

# BatchNormalization momentum of the from-scratch models. Keras's default (0.99) averages
# the statistics of the last ~100 batches; a from-scratch network trained for a few
# dozen steps changes its weights so fast that such stale statistics make it predict a
# single class at test time (measured: 50 % on photo vs drawing, although it fits the
# training images). 0.5 follows the current weights.
SCRATCH_BN_MOMENTUM = 0.5

# scikit-learn models on raw pixels (helpers.classic names): logistic regression and one other.
RAW_PIXEL_MODELS = ("logistic_regression", "extra_trees")

FAMILIES = ("transfer learning", "from scratch", "raw pixels", "deep features", "baseline")

# Train / validation / test shares of the shared split. The test share is larger than the
# kit's default (0.15) so that the approaches are told apart by more than a few images;
# validation only serves early stopping of the Keras models.
SPLIT_FRACTIONS = (0.6, 0.15, 0.25)


@contextlib.contextmanager
def _quiet_retracing() -> Iterator[None]:
    """Hide TensorFlow's "N out of the last N calls ... triggered tf.function retracing" warning.

    The comparison trains several models one after the other in one kernel; each traces
    its own functions once, which TensorFlow counts as retracing and warns about, although
    nothing is wrong. Other warnings and errors still show.
    """
    logger = logging.getLogger("tensorflow")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


# --------------------------------------------------------------------------- inputs


def _paths(images: pd.DataFrame | Sequence[str] | Iterable[str]) -> list[str]:
    if isinstance(images, pd.DataFrame):
        if "path" not in images.columns:
            raise ValueError("the frame has no 'path' column; pass a dataset frame or a list of image paths.")
        return [str(p) for p in images["path"]]
    if isinstance(images, (str, bytes)):
        raise TypeError("pass a list of image paths (or a dataset frame), not a single path string.")
    return [str(p) for p in images]


def load_images(images: pd.DataFrame | Sequence[str], size: int, settings: Settings | None = None) -> np.ndarray:
    """Decode images into one uint8 array, resized to ``size`` x ``size``, order kept.

    Decoding and resizing are the kit's pipeline's (:func:`helpers.pipeline.make_dataset`,
    no preprocessing), so these pixels are exactly what the Keras models see.

    Args:
        images: A dataset frame (its ``path`` column) or a sequence of image paths.
        size: Side of the square output, in pixels.
        settings: Course settings (scan cache, batch size); loaded when omitted.

    Returns:
        Array of shape ``(n, size, size, 3)``, dtype uint8.

    Raises:
        TypeError: ``images`` is a single path string.
        ValueError: ``size`` is not a positive integer, or a file is unusable.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive number of pixels, not {size!r}.")
    paths = _paths(images)
    out = np.empty((len(paths), int(size), int(size), 3), dtype=np.uint8)
    if not paths:
        return out
    dataset = pipeline.make_dataset(paths, settings=settings, size=int(size), preprocess=False, shuffle=False)
    done = 0
    for batch in dataset:
        values = np.asarray(batch)
        out[done : done + len(values)] = values.astype(np.uint8)  # whole numbers 0-255 already
        done += len(values)
    if done != len(paths):
        raise RuntimeError(f"the image pipeline yielded {done} images for {len(paths)} paths; check the image files.")
    return out


def raw_pixel_features(
    images: pd.DataFrame | Sequence[str], size: int = RAW_PIXEL_SIZE, settings: Settings | None = None
) -> np.ndarray:
    """Raw-pixel features: each image downsized to ``size`` x ``size`` RGB and flattened.

    No learned features at all: the numbers a classifier sees are the pixel values,
    scaled to [0, 1], row by row, channel last (``R, G, B`` of pixel (0, 0) first).

    Args:
        images: A dataset frame (its ``path`` column) or a sequence of image paths.
        size: Side of the thumbnail; 32 gives 3,072 features per image.
        settings: Course settings; loaded when omitted.

    Returns:
        float32 array of shape ``(n, size * size * 3)``, rows in the order of ``images``.
    """
    pixels = load_images(images, size, settings)
    return pixels.reshape(len(pixels), -1).astype(np.float32) / 255.0


def scratch_image_size(settings: Settings) -> int:
    """Image side for the from-scratch models in this profile (``Profile.scratch_image_size``, never above the backbone's)."""
    full = backbones.input_size(settings)
    chosen = settings.run.scratch_image_size
    return full if chosen is None else min(chosen, full)


# --------------------------------------------------------------------------- models


def count_trainable_parameters(model: Any) -> int:
    """Number of parameters training changes: Keras trainable weights, or a fitted sklearn model's.

    For scikit-learn models this counts what ``fit`` learned in the final estimator
    (coefficients and intercepts of linear models; support vectors and dual
    coefficients of SVMs; one threshold per split node and the leaf values of trees;
    the stored training set of k-nearest neighbours). Scaler statistics are not counted.

    Raises:
        TypeError: ``model`` is neither a Keras model nor a fitted scikit-learn estimator.
    """
    if hasattr(model, "trainable_weights"):
        return int(sum(int(np.prod(weight.shape)) for weight in model.trainable_weights))
    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    if hasattr(estimator, "best_estimator_"):  # a fitted search: count the refit winner
        return count_trainable_parameters(estimator.best_estimator_)
    if hasattr(estimator, "coef_"):
        return int(np.size(estimator.coef_) + np.size(getattr(estimator, "intercept_", 0)))
    if hasattr(estimator, "support_vectors_"):
        return int(np.size(estimator.support_vectors_) + np.size(estimator.dual_coef_) + np.size(estimator.intercept_))
    if hasattr(estimator, "tree_"):
        tree = estimator.tree_
        return int(np.sum(tree.children_left >= 0) + np.size(tree.value[tree.children_left < 0]))
    if hasattr(estimator, "estimators_") and len(getattr(estimator, "estimators_", [])):
        members = np.ravel(estimator.estimators_)
        return int(sum(count_trainable_parameters(member) for member in members))
    if hasattr(estimator, "_fit_X"):
        return int(np.size(estimator._fit_X))
    raise TypeError(
        f"cannot count the parameters of {type(model).__name__}; pass a Keras model or a fitted scikit-learn estimator."
    )


@device.under_strategy
def build_small_cnn(
    image_size: int,
    num_classes: int,
    *,
    filters: Sequence[int] = (16, 32, 64),
    dropout: float = 0.3,
    name: str = "small_cnn",
) -> "keras.Model":
    """A small convolutional network for training from scratch, built with the Functional API.

    Input: RGB images with values 0-255 (rescaled inside the model). Each stage is a
    3x3 convolution, batch normalisation (momentum :data:`SCRATCH_BN_MOMENTUM`), ReLU
    and 2x2 max pooling; then global average pooling, dropout and a softmax over the
    classes. With the default filters it has about 24 thousand parameters, every one of
    them trained. Return value: an uncompiled model (compile with
    :func:`helpers.training.compile_model`).

    Args:
        image_size: Side of the square input images.
        num_classes: Number of classes (at least 2).
        filters: Number of filters of each convolutional stage.
        dropout: Dropout rate before the classifier.
        name: Model name.

    Raises:
        ValueError: A size, count or rate is out of range.
    """
    import keras

    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}.")
    if not filters or any(int(f) < 1 for f in filters):
        raise ValueError("filters must list at least one positive number of filters per stage.")
    if image_size < 2 ** len(filters):
        raise ValueError(f"image_size {image_size} is too small for {len(filters)} pooling stages; use larger images.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), not {dropout}.")
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for stage, count in enumerate(filters, start=1):
        # No bias: the batch normalisation that follows has its own shift.
        x = keras.layers.Conv2D(int(count), 3, padding="same", use_bias=False, name=f"conv{stage}")(x)
        x = keras.layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"bn{stage}")(x)
        x = keras.layers.Activation("relu", name=f"relu{stage}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


@device.under_strategy
def build_scratch_backbone(
    settings: Settings,
    num_classes: int,
    *,
    image_size: int | None = None,
) -> "keras.Model":
    """The Wolfram example's "reset the net": the backbone's architecture with random weights, plus the head.

    The same layers as the pretrained backbone (``weights=None``) and the same head as
    transfer learning, but nothing is pretrained, so *every* layer is trained,
    BatchNormalization included (random weights have no statistics worth freezing;
    their momentum is :data:`SCRATCH_BN_MOMENTUM`, for short training runs).
    Inputs are images preprocessed with the backbone's ``preprocess_input``, as for
    transfer learning.

    Args:
        settings: Course settings (backbone, alpha).
        num_classes: Number of classes.
        image_size: Input side; :func:`scratch_image_size` by default.

    Returns:
        An uncompiled model whose every weight except BatchNorm moving statistics is trainable.
    """
    import keras

    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}.")
    size = image_size or scratch_image_size(settings)
    base = backbones.load_base(settings.replace(image_size=size), weights=None, pooling=None)
    base.trainable = True
    model = _attach_head(base, num_classes, settings)
    for layer in model.layers:
        layer.trainable = True
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = SCRATCH_BN_MOMENTUM
    return model


@device.under_strategy
def _attach_head(base: "keras.Model", num_classes: int, settings: Settings) -> "keras.Model":
    """image -> base -> transfer learning's head (:func:`helpers.training.build_head`), all trainable.

    Unlike :func:`helpers.training.assemble_model`, the base is *not* called with
    ``training=False``: its BatchNormalization layers must learn their statistics.
    """
    import keras

    head = training.build_head(base.output_shape[1:], num_classes, seed=settings.seed)
    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    outputs = head(base(inputs))
    return keras.Model(inputs, outputs, name=f"{base.name}_from_scratch")


# --------------------------------------------------------------------------- results


@dataclasses.dataclass
class ApproachResult:
    """One approach's predictions on the shared test split, and what training it cost.

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
        history: Keras training history, one row per epoch (:func:`helpers.training.history_frame`
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
    """The no-skill baseline: always predict the class most frequent in training."""
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
        count_trainable_parameters(estimator), probabilities, list(split.test["path"]), notes,
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
        pixels = raw_pixel_features(split.frame, size, settings)
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

    Attributes:
        retrainer: The :class:`helpers.training.Retrainer` (model, histories, phase reports).
        head_only: Scored after phase 1 (new head on the frozen pretrained base).
        fine_tuned: Scored after phase 2 (head + last block); its time and parameters count both phases.
        features: Pooled features of the frozen *pretrained* base for every image of the split
            (phase 1's inputs): the deep features of approach (d).
    """

    retrainer: Any
    head_only: ApproachResult
    fine_tuned: ApproachResult
    features: np.ndarray

    @property
    def results(self) -> list[ApproachResult]:
        """Both results, phase 1 first."""
        return [self.head_only, self.fine_tuned]


def run_transfer(split: SharedSplit, settings: Settings, *, progress: bool = True, verbose: int = 0) -> TransferRun:
    """Approach (a): the pretrained base plus a new head (phase 1), then its last block (phase 2).

    Notebook 02's recipe from :mod:`helpers.training`, fast on a CPU: phase 1 trains on
    cached features, phase 2 on cached block-input activations; epochs, learning rate
    and early stopping come from the settings. Training times are the two phases' fits
    (the one-off activation pass is in the notes).

    Args:
        split: The shared split.
        settings: Course settings (backbone, profile, seed, caches).
        progress: Print what each phase does.
        verbose: Keras ``fit`` verbosity.
    """
    import keras

    keras.utils.set_random_seed(settings.seed)
    base = backbones.load_base(settings)
    head = training.build_head(base.output_shape[1:], len(split.class_names), seed=settings.seed)
    retrainer = training.Retrainer(settings, split.frame, base, head, tensorboard=False, progress=progress, verbose=verbose)
    if list(retrainer.class_names) != list(split.class_names):  # both sort the same labels; a guard, not a case
        raise ValueError(f"class order differs: {retrainer.class_names} vs {split.class_names}.")
    title = backbones.get_backbone(settings=settings).title
    y_test, paths = split.labels("test"), list(split.test["path"])

    with _quiet_retracing():
        retrainer.fit_head()
        probabilities = retrainer.predict("test")
    features = np.array(retrainer.features(), copy=True)  # the pretrained base's features, before phase 2 changes it
    head_report = retrainer.reports[-1]
    head_only = ApproachResult(
        f"transfer: {title} + new head", "transfer learning", y_test, np.argmax(probabilities, axis=1),
        split.class_names, head_report.seconds, head_report.trainable, probabilities, paths,
        f"phase 1 only: head on cached features, {head_report.epochs} epochs",
        training.history_frame(retrainer.histories[training.PHASE_HEAD], training.PHASE_HEAD),
    )

    with _quiet_retracing():
        retrainer.fit_last_blocks()
        probabilities = retrainer.predict("test")
    block_report = retrainer.reports[-1]
    extraction = sum(retrainer.timings.get(key, 0.0) for key in ("activations", "features"))
    fine_tuned = ApproachResult(
        f"transfer: {title} + head + last block", "transfer learning", y_test, np.argmax(probabilities, axis=1),
        split.class_names, head_report.seconds + block_report.seconds,
        block_report.trainable,  # phase 2 trains the head again, plus the block
        probabilities, paths,
        f"phase 1 ({head_report.epochs} epochs) then phase 2 on {block_report.path} ({block_report.epochs} epochs"
        + ("" if block_report.kept else "; not kept: it did not beat phase 1 on validation, so this is phase 1's model")
        + f"); one-off activation pass {extraction:.0f} s",
        retrainer.history(),
    )
    return TransferRun(retrainer, head_only, fine_tuned, features)


def deep_features(split: SharedSplit, settings: Settings, *, progress: bool = True) -> np.ndarray:
    """The pretrained backbone's features of every image of ``split.frame`` (disk-cached)."""
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
        monitor="val_loss", patience=settings.run.early_stopping_patience, restore_best_weights=True
    )
    with _quiet_retracing():
        began = time.perf_counter()
        history = model.fit(
            datasets["train"], validation_data=datasets["validation"], epochs=epochs, callbacks=[stop],
            shuffle=False,  # the training dataset shuffles itself every epoch
            verbose=verbose,
        )
        seconds = time.perf_counter() - began
        probabilities = model.predict(datasets["test"], verbose=0)
    return probabilities, seconds, training.history_frame(history, "from scratch")


def run_scratch_backbone(
    split: SharedSplit,
    settings: Settings,
    *,
    image_size: int | None = None,
    epochs: int | None = None,
    verbose: int = 0,
) -> ApproachResult:
    """Approach (b), reset: the backbone's architecture with random weights plus the head, all trained.

    Args:
        split: The shared split.
        settings: Course settings (backbone, seed, learning rate, batch size, profile).
        image_size: Input side; :func:`scratch_image_size` by default (small on a CPU).
        epochs: Epochs; ``settings.run.scratch_epochs`` by default (early stopping on val_loss).
        verbose: Keras ``fit`` verbosity.
    """
    import keras

    size = image_size or scratch_image_size(settings)
    epochs = epochs or settings.run.scratch_epochs
    keras.utils.set_random_seed(settings.seed)
    model = build_scratch_backbone(settings, len(split.class_names), image_size=size)
    training.compile_model(model, settings.learning_rate)
    probabilities, seconds, history = _fit_keras(
        model, split, settings, size=size, preprocess=True, epochs=epochs, verbose=verbose
    )
    title = backbones.get_backbone(settings=settings).title
    return ApproachResult(
        f"{title} from random weights", "from scratch", split.labels("test"), np.argmax(probabilities, axis=1),
        split.class_names, seconds, count_trainable_parameters(model), probabilities, list(split.test["path"]),
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

    Args:
        split: The shared split.
        settings: Course settings (seed, learning rate, batch size, profile).
        build: ``(image_size, num_classes) -> uncompiled model`` taking 0-255 pixels;
            :func:`build_small_cnn` by default.
        image_size: Input side; :func:`scratch_image_size` by default.
        epochs: Epochs; ``settings.run.scratch_epochs`` by default (early stopping on val_loss).
        verbose: Keras ``fit`` verbosity.
    """
    import keras

    size = image_size or scratch_image_size(settings)
    epochs = epochs or settings.run.scratch_epochs
    keras.utils.set_random_seed(settings.seed)
    model = training.compile_model((build or build_small_cnn)(size, len(split.class_names)), settings.learning_rate)
    probabilities, seconds, history = _fit_keras(
        model, split, settings, size=size, preprocess=False, epochs=epochs, verbose=verbose
    )
    return ApproachResult(
        "small CNN from scratch", "from scratch", split.labels("test"), np.argmax(probabilities, axis=1),
        split.class_names, seconds, count_trainable_parameters(model), probabilities, list(split.test["path"]),
        f"{size}x{size} px, up to {epochs} epochs from random weights", history,
    )


# --------------------------------------------------------------------------- sample efficiency


def subsample_per_class(labels: Sequence[int], per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` random examples of every class (sorted), reproducible by seed.

    Raises:
        ValueError: ``per_class`` is below 1 or a class has fewer examples.
    """
    labels = np.asarray(labels)
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, not {per_class}.")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"class {label!r} has {len(members)} training examples, fewer than {per_class}; "
                "use smaller sample sizes or a bigger profile."
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclasses.dataclass
class Learner:
    """One approach in the sample-efficiency experiment.

    Attributes:
        train_inputs: Inputs of the whole training pool (features, pixels or images), one row per example.
        test_inputs: Inputs of the test images.
        fit_predict: ``(x_train, y_train, x_test, seed) -> predicted class ids of x_test``;
            trains a fresh model every call.
    """

    train_inputs: np.ndarray
    test_inputs: np.ndarray
    fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def sklearn_learner(make_estimator: Callable[[], Any]) -> Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]:
    """A ``fit_predict`` for :class:`Learner` that fits a fresh scikit-learn estimator each call.

    Args:
        make_estimator: Returns an unfitted estimator (for example a Pipeline with scaling).
    """

    def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
        estimator = make_estimator()
        if "random_state" in estimator.get_params():
            estimator.set_params(random_state=seed)
        return np.asarray(estimator.fit(x_train, y_train).predict(x_test))

    return fit_predict


def keras_learner(
    build: Callable[[], "keras.Model"],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
) -> Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]:
    """A ``fit_predict`` for :class:`Learner` that trains the model from fresh random weights each call.

    Each call draws the seed's own initial weights (``build()`` after seeding) and trains
    them from a reset optimizer. The first call's compiled model is kept and its weights
    and optimizer state are overwritten in later calls: Keras then reuses its traced
    training function instead of tracing a new model for every point of the curve
    (seconds each on a CPU). There is no validation set to stop on in this experiment
    (its point is how little labelled data there is), so training runs exactly ``epochs``.
    """
    state: dict[str, Any] = {}

    def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
        import keras

        keras.utils.set_random_seed(seed)
        fresh = build()
        if "model" not in state:
            model = training.compile_model(fresh, learning_rate)
            model.optimizer.build(model.trainable_variables)
            state["model"] = model
            state["optimizer"] = [np.array(v.numpy(), copy=True) for v in model.optimizer.variables]
        else:
            model = state["model"]
            # Every variable, dropout seed states included, then the optimizer as it was before any step.
            for target, source in zip(model.variables, fresh.variables):
                target.assign(source)
            for variable, value in zip(model.optimizer.variables, state["optimizer"]):
                variable.assign(value)
        with _quiet_retracing():
            model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
            return np.argmax(model.predict(x_test, batch_size=batch_size, verbose=0), axis=1)

    return fit_predict


def usable_sample_sizes(labels: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """The sizes (images per class) that every class of the training pool can supply."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    smallest = int(np.min(np.unique(labels, return_counts=True)[1]))
    return sorted({int(s) for s in sizes if 1 <= int(s) <= smallest})


def sample_efficiency(
    learners: Mapping[str, Learner],
    y_train: Sequence[int],
    y_test: Sequence[int],
    sizes: Sequence[int],
    seeds: int | Sequence[int],
    *,
    base_seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Test accuracy against training images per class, for every learner and seed.

    For each size ``n`` and seed, the same ``n`` training images per class (drawn from
    the training pool with that seed) are given to every learner, which trains a fresh
    model and predicts the fixed test set. Sizes larger than the smallest class are
    skipped (see :func:`usable_sample_sizes`).

    Args:
        learners: Approach name -> :class:`Learner`.
        y_train: Class ids of the training pool (rows of every learner's ``train_inputs``).
        y_test: Class ids of the test images.
        sizes: Training images per class to try.
        seeds: Number of seeds (``base_seed``, ``base_seed + 1``, ...) or explicit seeds.
        base_seed: First seed when ``seeds`` is a number.
        progress: Show a tqdm progress bar.

    Returns:
        Long DataFrame: ``approach, per_class, seed, accuracy, balanced_accuracy, train_seconds``.

    Raises:
        ValueError: No learners, no seeds, no usable size, or inputs whose rows do not match the labels.
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if not learners:
        raise ValueError("no learners given; pass a dict of approach name -> Learner.")
    seed_list = list(range(base_seed, base_seed + int(seeds))) if np.isscalar(seeds) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must be at least 1 (or a non-empty list of seeds).")
    for name, learner in learners.items():
        if len(learner.train_inputs) != len(y_train) or len(learner.test_inputs) != len(y_test):
            raise ValueError(
                f"learner {name!r} has {len(learner.train_inputs)} training and {len(learner.test_inputs)} test rows, "
                f"but there are {len(y_train)} training and {len(y_test)} test labels."
            )
    usable = usable_sample_sizes(y_train, sizes)
    if not usable:
        raise ValueError(
            f"none of the sizes {list(sizes)} fits the training pool (smallest class: "
            f"{int(np.min(np.unique(y_train, return_counts=True)[1])) if len(y_train) else 0} images)."
        )
    runs = [(size, seed, name) for size in usable for seed in seed_list for name in learners]
    if progress:
        from tqdm.auto import tqdm

        runs = tqdm(runs, desc="sample efficiency", unit="fit")
    rows = []
    for size, seed, name in runs:
        learner = learners[name]
        chosen = subsample_per_class(y_train, size, seed)
        began = time.perf_counter()
        predicted = np.asarray(
            learner.fit_predict(learner.train_inputs[chosen], y_train[chosen], learner.test_inputs, seed)
        ).ravel()
        seconds = time.perf_counter() - began
        rows.append(
            {
                "approach": name,
                "per_class": size,
                "seed": seed,
                "accuracy": float(np.mean(predicted == y_test)),
                "balanced_accuracy": evaluation.balanced_accuracy(y_test, predicted),
                "train_seconds": seconds,
            }
        )
    return pd.DataFrame(rows, columns=["approach", "per_class", "seed", "accuracy", "balanced_accuracy", "train_seconds"])


def summarize_sample_efficiency(runs: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean and spread over seeds of each approach at each size: the points and error bars.

    Args:
        runs: The output of :func:`sample_efficiency`.
        metric: Column to summarise (``accuracy`` or ``balanced_accuracy``).

    Returns:
        DataFrame ``approach, per_class, mean, std, sem, runs``: ``std`` is the sample
        standard deviation over seeds (ddof=1; 0 with a single seed), ``sem`` the
        standard error of the mean (``std / sqrt(runs)``).
    """
    missing = {"approach", "per_class", metric} - set(runs.columns)
    if missing:
        raise ValueError(f"runs lacks columns {sorted(missing)}; pass the output of sample_efficiency().")
    grouped = runs.groupby(["approach", "per_class"], sort=False)[metric]
    summary = grouped.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, runs="count")
    summary = summary.reset_index()
    summary["sem"] = summary["std"] / np.sqrt(summary["runs"])
    order = {name: i for i, name in enumerate(dict.fromkeys(runs["approach"]))}
    summary = summary.sort_values(["approach", "per_class"], key=lambda c: c.map(order) if c.name == "approach" else c)
    return summary[["approach", "per_class", "mean", "std", "sem", "runs"]].reset_index(drop=True)


def sample_efficiency_learners(
    split: SharedSplit,
    settings: Settings,
    *,
    features: np.ndarray | None = None,
    pixels: np.ndarray | None = None,
    images: np.ndarray | None = None,
    small_cnn: Callable[[int, int], "keras.Model"] | None = None,
) -> dict[str, Learner]:
    """The learners of the sample-efficiency experiment, from arrays computed once for ``split.frame``.

    Every learner refits from scratch on each subsample, so only approaches whose
    inputs are cached are included: the deep features (logistic regression), the raw
    pixels (logistic regression and the second model of :data:`RAW_PIXEL_MODELS`) and
    the small CNN on in-memory images. The randomly initialised backbone and the
    fine-tuning phase are left out: each point would retrain millions of weights.

    Args:
        split: The shared split; the training split is the pool subsamples are drawn from.
        settings: Course settings (epochs, batch size, learning rate).
        features: Deep features of every image of ``split.frame`` (skipped when None).
        pixels: Raw-pixel features of every image (skipped when None).
        images: uint8 images of every image, ``(n, s, s, 3)``, for the small CNN (skipped when None).
        small_cnn: ``(image_size, num_classes) -> model``; :func:`build_small_cnn` by default.

    Returns:
        Approach name -> :class:`Learner`, named as in the comparison table.
    """
    train, test = split.rows("train"), split.rows("test")
    learners: dict[str, Learner] = {}

    def sklearn(name: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]:
        return sklearn_learner(lambda: classic.make_pipeline(name, seed=settings.seed))

    def title(name: str) -> str:
        return classic.MODEL_TITLES.get(name, name).lower()

    for label, array in (("features", features), ("pixels", pixels), ("images", images)):
        if array is not None and len(array) != len(split.frame):
            raise ValueError(f"{label} has {len(array)} rows for {len(split.frame)} images; compute it on split.frame.")
    if features is not None:
        flat = np.asarray(features).reshape(len(features), -1)
        learners["deep features + logistic regression"] = Learner(flat[train], flat[test], sklearn("logistic_regression"))
    if pixels is not None:
        for name in RAW_PIXEL_MODELS:
            learners[f"raw pixels + {title(name)}"] = Learner(pixels[train], pixels[test], sklearn(name))
    if images is not None:
        size, classes = int(images.shape[1]), len(split.class_names)
        build = small_cnn or build_small_cnn
        learners["small CNN from scratch"] = Learner(
            images[train], images[test],
            keras_learner(
                lambda: build(size, classes), epochs=settings.run.scratch_epochs,
                batch_size=settings.batch_size, learning_rate=settings.learning_rate,
            ),
        )
    if not learners:
        raise ValueError("give at least one of features, pixels or images.")
    return learners


# --------------------------------------------------------------------------- everything at once

APPROACHES = ("transfer", "scratch_backbone", "small_cnn", "raw_pixels", "deep_features", "baseline")


@dataclasses.dataclass
class Comparison:
    """Everything :func:`run_comparison` trained, on one shared split.

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
        comparison.pixels = raw_pixel_features(split.frame, RAW_PIXEL_SIZE, settings)
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
