"""Retraining a pretrained backbone: a new head first (phase 1), then the last block(s) (phase 2).

The Dataiku lab's retraining recipe, in Keras:

* the backbone without its ImageNet classifier (``include_top=False``) plus a new
  **head**: pooling (``avg``, ``max`` or ``flatten``), dropout, a softmax layer over
  the new classes with optional L1/L2 regularisation (:func:`build_head`);
* **phase 1**, last layer only: the base frozen and called with ``training=False``,
  Adam at ``settings.learning_rate`` (1e-3), batch size and epochs from the settings;
* **phase 2**, last block: the last block(s) of the base unfrozen (BatchNormalization
  layers stay frozen, in inference mode), recompiled at a tenth of the learning rate.

Both phases are fast on a CPU because nothing is computed twice:

* Phase 1 trains the head on the base's features, computed **once** per image by
  :func:`helpers.features.extract_features` (cached on disk). The head is trained from
  its pooled output, so only one vector per image is kept in memory (768 numbers for
  MobileNet 0.75 instead of its 7x7x768 map); ``flatten`` keeps the whole map, flat.
* Phase 2 caches the **input of the last block(s)** instead (the output of the layer
  just before them, :func:`helpers.backbones.block_input_layer`) and trains the *tail*
  -- a sub-model from that tensor through the unfrozen block(s) and the head -- on it.
  The frozen layers before the block would give the same output every epoch, so they
  run once. Phase 1's features then come from these activations through the (still
  frozen) last block, which is much cheaper than a second pass over the images.
  When the activations do not fit :data:`DEFAULT_MEMORY_BUDGET_MB` (``float16``
  halves them) or when augmentation is on (every epoch sees different pixels), phase
  2 falls back to ordinary end-to-end training on the images.
* Random augmentation cannot be computed once, but a fixed one can: with
  ``mirror=True`` a left-right mirrored copy of every training image goes through the
  same extraction, doubling the training data of both phases for one more pass over
  the training images.

Every path trains with Keras's own ``fit`` (compiled metrics, callbacks, the
distribution strategy), on cached arrays with all of an epoch's steps in one call
(``steps_per_execution``): measured like for like over whole phases, a training loop
of the kit's own did not save the 3x of a phase's time that would justify keeping it
(``benchmarks/REPORT.md``, training-loop section). Every model is built and trained
under :func:`helpers.device.strategy` (``MirroredStrategy`` over several GPUs).

The trained layers are the layers of one ordinary Keras model (:func:`assemble_model`:
image -> base -> head), so the result saves to ``.keras`` and reloads like any other.
The tests check that each fast path gives that model's predictions.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import backbones, device, features, pipeline
from helpers.files import atomic_path, atomic_write
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

POOLINGS = ("avg", "max", "flatten")
DEFAULT_POOLING = "avg"
DEFAULT_DROPOUT = 0.2
DEFAULT_MEMORY_BUDGET_MB = 1024.0
FINETUNE_LEARNING_RATE_FACTOR = 0.1
OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")
# Notebook 02's recipe (Retrainer and fit_last_blocks options), chosen on the validation
# split of the Simpsons group split: benchmarks section 8 measures it against the alternatives.
WORKSHOP_RECIPE: dict[str, Any] = {
    "mirror": True, "n_blocks": 2, "schedule": "cosine", "learning_rate": 3e-4, "balance_classes": True, "flip_test": True,
}
RUNS_SUBDIR = "runs"
PHASE_HEAD = "phase 1: head"
PHASE_BLOCKS = "phase 2: last block"
HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy"]

_POOLING_LAYER_NAMES = {"avg": "head_avg_pool", "max": "head_max_pool", "flatten": "head_flatten"}
# extract_features recognises these names as pooling after the extracted layer.
_EXTRACTOR_POOLING_NAMES = {"avg": "features_avg", "max": "features_max", "flatten": "features_flat"}


# --------------------------------------------------------------------------- model


def _pooling_layer(pooling: str, name: str) -> "keras.layers.Layer":
    import keras

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS} (the lab's Average / Max / Flatten), not {pooling!r}.")
    return {
        "avg": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
        "flatten": keras.layers.Flatten,
    }[pooling](name=name)


def _regularizer(l1: float, l2: float) -> Any:
    import keras

    for name, value in (("l1", l1), ("l2", l2)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a number >= 0 (0 = no {name.upper()} penalty), not {value!r}.")
    if l1 and l2:
        return keras.regularizers.L1L2(l1=float(l1), l2=float(l2))
    if l1:
        return keras.regularizers.L1(float(l1))
    if l2:
        return keras.regularizers.L2(float(l2))
    return None


@device.under_strategy
def build_head(
    feature_shape: Sequence[int | None],
    n_classes: int,
    *,
    pooling: str = DEFAULT_POOLING,
    dropout: float = DEFAULT_DROPOUT,
    l1: float = 0.0,
    l2: float = 0.0,
    seed: int | None = None,
    name: str = "head",
) -> "keras.Model":
    """The new classifier put on top of a pretrained base: pooling, dropout, softmax.

    Args:
        feature_shape: Shape of the base's output for one image, e.g. ``(7, 7, 768)``
            (``base.output_shape[1:]``).
        n_classes: Number of classes (characters).
        pooling: ``"avg"`` (global average), ``"max"`` (global max) or ``"flatten"``
            (keep every position: many more weights).
        dropout: Share of the pooled features dropped at random during training (0 = none).
        l1: L1 penalty on the softmax layer's weights (0 = none).
        l2: L2 penalty on the softmax layer's weights (0 = none).
        seed: Seed of the weight initialisation and of the dropout mask.
        name: Model name.

    Returns:
        A Functional ``keras.Model`` from the 4-D feature map to class probabilities
        (layers ``head_<pooling>``, ``head_dropout``, ``head_predictions``).

    Raises:
        ValueError: A feature shape that is not a 3-D map, fewer than 2 classes, an
            unknown pooling, a dropout outside [0, 1) or a negative penalty.
    """
    import keras

    shape = tuple(feature_shape)
    if len(shape) != 3:
        raise ValueError(
            f"feature_shape must be the 3-D shape of one feature map (height, width, channels), not {shape}; "
            "load the base with include_top=False and pooling=None (backbones.load_base)."
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValueError(f"n_classes must be a whole number >= 2, not {n_classes!r}.")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a share in [0, 1), not {dropout!r}.")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS} (the lab's Average / Max / Flatten), not {pooling!r}.")
    regularizer = _regularizer(l1, l2)
    inputs = keras.Input(shape=shape, name=f"{name}_features")
    x = _pooling_layer(pooling, _POOLING_LAYER_NAMES[pooling])(inputs)
    x = keras.layers.Dropout(float(dropout), seed=seed, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        int(n_classes),
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        kernel_regularizer=regularizer,
        name="head_predictions",
    )(x)
    return keras.Model(inputs, outputs, name=name)


def head_pooling(head: "keras.Model") -> str:
    """Which pooling a head built by :func:`build_head` uses (``avg``, ``max`` or ``flatten``)."""
    for pooling, layer_name in _POOLING_LAYER_NAMES.items():
        if any(layer.name == layer_name for layer in head.layers):
            return pooling
    raise ValueError(f"model {head.name!r} is not a head built by training.build_head (no head pooling layer).")


@device.under_strategy
def head_after_pooling(head: "keras.Model") -> "keras.Model":
    """The part of ``head`` after its pooling layer (dropout + softmax), sharing its weights.

    Phase 1 trains this on pooled features: pooling has no weights, so training it on
    pooled vectors trains the head itself, with one vector per image in memory.
    """
    import keras

    pool = head.get_layer(_POOLING_LAYER_NAMES[head_pooling(head)])
    return keras.Model(pool.output, head.output, name=f"{head.name}_after_pooling")


@device.under_strategy
def assemble_model(base: "keras.Model", head: "keras.Model", *, name: str | None = None) -> "keras.Model":
    """The whole classifier as one ordinary Keras model: image -> base -> head.

    The base is called with ``training=False``: its BatchNormalization layers always
    run in inference mode, even in phase 2 when some of its layers are trained. The
    model takes images already preprocessed for the backbone (what
    :func:`helpers.pipeline.make_dataset` yields) and shares its layers with ``base``
    and ``head``, so training either trains it.

    Args:
        base: The pretrained base (``include_top=False``, 4-D output).
        head: A head whose input matches the base's output (:func:`build_head`).
        name: Model name; ``<base>_retrained`` by default.

    Raises:
        ValueError: The head does not fit the base's output.
    """
    import keras

    if tuple(head.input_shape[1:]) != tuple(base.output_shape[1:]):
        raise ValueError(
            f"the head takes inputs of shape {tuple(head.input_shape[1:])} but the base gives "
            f"{tuple(base.output_shape[1:])}; build the head with feature_shape=base.output_shape[1:]."
        )
    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    features = base(inputs, training=False)
    outputs = head(features)
    return keras.Model(inputs, outputs, name=name or f"{base.name}_retrained")


@device.under_strategy
def block_input_model(base: "keras.Model", backbone: backbones.Backbone, n_blocks: int = 1) -> "keras.Model":
    """A model from images to the input of the last ``n_blocks`` blocks (the activations phase 2 caches)."""
    import keras

    layer = backbones.block_input_layer(base, backbone, n_blocks)
    # Named like backbones.load_feature_extractor's models, so their feature caches are shared.
    return keras.Model(base.input, base.get_layer(layer).output, name=f"{backbone.key}_{layer}_features")


@device.under_strategy
def base_tail(base: "keras.Model", backbone: backbones.Backbone, n_blocks: int = 1) -> "keras.Model":
    """The last ``n_blocks`` blocks of ``base`` as a model of their own, sharing its layers."""
    import keras

    layer = backbones.block_input_layer(base, backbone, n_blocks)
    return keras.Model(base.get_layer(layer).output, base.output, name=f"{base.name}_last_{n_blocks}")


@device.under_strategy
def mirrored(model: "keras.Model") -> "keras.Model":
    """``model`` applied to left-right mirrored images (a fixed augmentation that can be cached).

    Named ``<model>_mirrored``, so its features are cached apart from the model's own.
    """
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    return keras.Model(inputs, model(keras.ops.flip(inputs, axis=2)), name=f"{model.name}_mirrored")


@device.under_strategy
def flip_averaged(model: "keras.Model") -> "keras.Model":
    """``model`` with test-time flip averaging: the mean of its outputs on the image and its mirror image.

    An ordinary Keras model sharing ``model``'s layers (it saves and reloads like it),
    named ``<model>_flip_averaged``.
    """
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = keras.layers.Average(name="flip_average")([model(inputs), model(keras.ops.flip(inputs, axis=2))])
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_averaged")


def cosine_schedule(learning_rate: float, steps: int) -> "keras.optimizers.schedules.LearningRateSchedule":
    """A learning rate decaying from ``learning_rate`` to 0 along a cosine over ``steps`` steps."""
    import keras

    return keras.optimizers.schedules.CosineDecay(float(learning_rate), decay_steps=max(int(steps), 1))


@device.under_strategy
def tail_model(
    base: "keras.Model", head: "keras.Model", backbone: backbones.Backbone, n_blocks: int = 1
) -> "keras.Model":
    """The sub-model phase 2 trains: block-input activations -> last block(s) -> head.

    It shares every layer with ``base`` and ``head`` (and so with the model of
    :func:`assemble_model`); its blocks are called with ``training=False`` like the base.
    """
    import keras

    part = base_tail(base, backbone, n_blocks)
    inputs = keras.Input(shape=part.input_shape[1:], name="block_input")
    outputs = head(part(inputs, training=False))
    return keras.Model(inputs, outputs, name=f"tail_last_{n_blocks}")


def set_phase(base: "keras.Model", backbone: backbones.Backbone, phase: int, n_blocks: int = 1) -> list[str]:
    """Freeze the base for a phase: 1 = everything frozen; 2 = the last ``n_blocks`` blocks trainable.

    BatchNormalization layers stay frozen in both phases (see
    :func:`helpers.backbones.freeze_all_but_last`). Recompile afterwards.

    Returns:
        Names of the base's layers left trainable.
    """
    if phase not in (1, 2):
        raise ValueError(f"phase must be 1 (head only) or 2 (last block(s) too), not {phase!r}.")
    if phase == 2 and n_blocks < 1:
        raise ValueError("phase 2 retrains at least one block: n_blocks must be >= 1.")
    return backbones.freeze_all_but_last(base, backbone, 0 if phase == 1 else n_blocks)


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3) -> "keras.optimizers.Optimizer":
    """An optimizer by name (the lab's choices): ``adam`` (default), ``sgd`` (momentum 0.9) or ``rmsprop``."""
    import keras

    if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        rate: Any = learning_rate
    elif not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number (the lab starts at 0.001), not {learning_rate!r}.")
    else:
        rate = float(learning_rate)
    key = str(name).lower()
    if key == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    if key == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=0.9)
    if key == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=rate)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {name!r}.")


@device.under_strategy
def compile_model(
    model: "keras.Model", learning_rate: float, *, optimizer: str = "adam", label_smoothing: float = 0.0
) -> "keras.Model":
    """Compile a softmax classifier for integer labels: sparse categorical cross-entropy, accuracy.

    Labels are class ids (0, 1, 2...), not one-hot vectors, hence the *sparse* loss.
    Call again after changing which layers are trainable.

    With ``label_smoothing`` > 0 the targets are softened (the true class gets
    ``1 - label_smoothing`` plus its share of ``label_smoothing`` spread over all
    classes), which keeps the model from growing over-confident on a small training
    set. Keras's sparse loss has no such option, so the model is then compiled with
    the *categorical* loss and accuracy: train it on one-hot labels
    (:func:`one_hot_labels`); :class:`Retrainer` does that itself.
    """
    import keras

    if (
        not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool)
        or not 0.0 <= label_smoothing < 1.0
    ):
        raise ValueError(f"label_smoothing must be a share in [0, 1) (0 = off, 0.1 is usual), not {label_smoothing!r}.")
    if label_smoothing:
        loss: Any = keras.losses.CategoricalCrossentropy(label_smoothing=float(label_smoothing))
        metric: Any = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss, metric = keras.losses.SparseCategoricalCrossentropy(), keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss, metrics=[metric])
    return model


def one_hot_labels(labels: Sequence[int] | np.ndarray, n_classes: int) -> np.ndarray:
    """Class ids as one-hot rows (``float32``), the targets of a model compiled with label smoothing.

    >>> one_hot_labels([2, 0], 3).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    ids = np.asarray(labels)
    if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= n_classes)):
        raise ValueError(f"labels must be a 1-D array of class ids in [0, {n_classes}), not shape {ids.shape}.")
    return np.eye(int(n_classes), dtype="float32")[ids.astype(int)]


def _weight_count(weights: Sequence[Any]) -> int:
    return int(sum(math.prod(int(d) for d in w.shape) for w in weights))


def parameter_table(model: "keras.Model") -> pd.DataFrame:
    """Trainable and frozen parameters of each part of a model (base, head...) and in total.

    "Frozen" counts every weight training leaves alone, including BatchNormalization's
    moving statistics. Re-run after changing ``trainable`` to see what a phase trains.
    """
    rows = []
    for layer in model.layers:
        if not layer.weights:
            continue
        rows.append(
            {
                "part": layer.name,
                "trainable": _weight_count(layer.trainable_weights),
                "frozen": _weight_count(layer.non_trainable_weights),
            }
        )
    rows.append(
        {
            "part": "total",
            "trainable": _weight_count(model.trainable_weights),
            "frozen": _weight_count(model.non_trainable_weights),
        }
    )
    table = pd.DataFrame(rows, columns=["part", "trainable", "frozen"]).set_index("part")
    table["total"] = table["trainable"] + table["frozen"]
    return table


def trainable_weight_names(model: "keras.Model") -> list[str]:
    """Paths of a model's trainable weights (``layer/kernel``...), for checking what a phase trains."""
    return sorted(weight.path for weight in model.trainable_weights)


def augmentation_layers(
    *,
    flip: bool = True,
    rotation: float = 0.1,
    zoom: float = 0.1,
    contrast: float = 0.1,
    seed: int | None = None,
) -> "keras.Sequential":
    """Random augmentation as Keras preprocessing layers: flip, rotation, zoom, contrast.

    The layers work on pixels in [0, 255], *before* the backbone's preprocessing
    (pass them as ``augment=`` to :func:`helpers.pipeline.make_dataset`); they only
    change images when called with ``training=True``.

    Args:
        flip: Mirror images left-right half of the time (a character mirrored is the
            same character; upside-down would not be).
        rotation: Largest rotation, as a share of a full turn (0.1 = 36 degrees); 0 = none.
        zoom: Largest zoom in or out, as a share of the size; 0 = none.
        contrast: Largest contrast change (0.1 = +-10%); 0 = none.
        seed: Seed of the random draws.

    Raises:
        ValueError: Negative amounts, or every augmentation switched off.
    """
    import keras

    for name, value in (("rotation", rotation), ("zoom", zoom), ("contrast", contrast)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1) (0 = off), not {value!r}.")
    layers: list[Any] = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="random_flip"))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="nearest", seed=seed, name="random_rotation"))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="nearest", seed=seed, name="random_zoom"))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed, name="random_contrast"))
    if not layers:
        raise ValueError("every augmentation is switched off; use augment=None instead of an empty augmentation.")
    return keras.Sequential(layers, name="augmentation")


# --------------------------------------------------------------------------- memory


def activation_megabytes(shape: Sequence[int | None], rows: int, dtype: str = "float32") -> float:
    """Memory in MB (1e6 bytes) of ``rows`` activations of ``shape`` (one image's shape)."""
    values = math.prod(int(d) for d in shape if d is not None)
    return rows * values * np.dtype(dtype).itemsize / 1e6


def choose_activation_dtype(
    shape: Sequence[int | None], rows: int, budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
) -> str | None:
    """``float32`` if the activations fit ``budget_mb``, else ``float16`` if that fits, else None."""
    for dtype in ("float32", "float16"):
        if activation_megabytes(shape, rows, dtype) <= budget_mb:
            return dtype
    return None


# --------------------------------------------------------------------------- callbacks and histories


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed to write TensorBoard logs) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def make_callbacks(
    run_dir: str | Path,
    phase: str,
    *,
    patience: int,
    tensorboard: bool = True,
    log_dir: str | Path | None = None,
) -> tuple[list[Any], Path]:
    """The lab's callbacks: early stopping, best checkpoint by ``val_loss``, TensorBoard logs.

    Args:
        run_dir: Folder of this training run (checkpoints and ``logs/``).
        phase: Phase name, used in file names.
        patience: Epochs without a lower ``val_loss`` before stopping.
        tensorboard: Write TensorBoard logs under ``<log_dir>/<phase>`` (skipped, with a
            warning, when the ``tensorboard`` package is not installed).
        log_dir: Folder of this run's TensorBoard logs; ``<run_dir>/logs`` by default.

    Returns:
        The callbacks and the checkpoint path (``<run_dir>/<phase>.weights.h5``).
    """
    import keras

    if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1:
        raise ValueError(f"patience must be a whole number of epochs >= 1, not {patience!r}.")
    run_dir = Path(run_dir)
    slug = _slug(phase)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / f"{slug}.weights.h5"
    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience)),
        keras.callbacks.ModelCheckpoint(
            str(checkpoint), monitor="val_loss", save_best_only=True, save_weights_only=True
        ),
    ]
    if tensorboard and tensorboard_available():
        logs = Path(log_dir) if log_dir is not None else run_dir / "logs"
        callbacks.append(keras.callbacks.TensorBoard(str(logs / slug), write_graph=False, profile_batch=0))
    elif tensorboard:
        warnings.warn(
            "TensorBoard logs are not written: the tensorboard package is not installed "
            "(`pip install tensorboard`, a dependency of the kit).",
            stacklevel=2,
        )
    return callbacks, checkpoint


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def history_frame(history: Any, phase: str = PHASE_HEAD, *, first_epoch: int = 1) -> pd.DataFrame:
    """One phase's history (a Keras ``History`` or its ``.history`` dict) as a table, one row per epoch."""
    values = getattr(history, "history", history)
    if not isinstance(values, Mapping):
        raise TypeError(f"pass a Keras History or its .history dict, not {type(history).__name__}.")
    lengths = {len(v) for v in values.values()}
    if len(lengths) > 1:
        raise ValueError(f"the history's metrics have different lengths {sorted(lengths)}.")
    epochs = lengths.pop() if lengths else 0
    if not epochs:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    table = pd.DataFrame({key: [float(v) for v in series] for key, series in values.items()})
    table.insert(0, "phase", phase)
    table.insert(0, "epoch", range(first_epoch, first_epoch + epochs))
    ordered = [c for c in HISTORY_COLUMNS if c in table.columns]
    return table[ordered + [c for c in table.columns if c not in ordered]].reset_index(drop=True)


def merge_histories(histories: Mapping[str, Any]) -> pd.DataFrame:
    """Histories of consecutive phases as one table: epochs numbered on, a ``phase`` column.

    Args:
        histories: ``{phase name: History or .history dict}`` in training order.

    Returns:
        Columns ``epoch`` (1, 2, ... across phases), ``phase``, then the metrics
        (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``...).
    """
    parts, first = [], 1
    for phase, history in histories.items():
        part = history_frame(history, phase, first_epoch=first)
        parts.append(part)
        first += len(part)
    if not parts:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def phase_boundaries(history: pd.DataFrame) -> list[tuple[float, str]]:
    """Where each phase after the first starts, as ``(x, phase)`` with x half-way between epochs."""
    if "phase" not in history.columns or history.empty:
        return []
    phases = history["phase"].to_numpy()
    epochs = history["epoch"].to_numpy()
    return [(float(epochs[i]) - 0.5, str(phases[i])) for i in range(1, len(phases)) if phases[i] != phases[i - 1]]


def _fit(
    model: "keras.Model",
    x: Any,
    y: Any,
    validation: tuple[Any, ...] | Any,
    *,
    epochs: int,
    batch_size: int | None,
    callbacks: list[Any],
    checkpoint: Path,
    verbose: int,
    seed: int,
) -> dict[str, list[float]]:
    """Train with the phase's callbacks, then restore the best checkpoint (lowest val_loss).

    Arrays (``y`` given: cached features or activations, shuffled every epoch) and
    datasets of images both go through Keras's ``fit``, under the strategy the model
    was built in (:func:`helpers.device.under_strategy`).
    """
    import keras

    checkpoint.unlink(missing_ok=True)  # a stale checkpoint must never be restored
    keras.utils.set_random_seed(seed)
    if y is not None:
        # All of an epoch's steps in one call: about twice as fast as a call per step on
        # cached arrays (benchmarks/REPORT.md, training-loop section); callbacks still run per epoch.
        model.steps_per_execution = max(1, math.ceil(len(x) / int(batch_size)))
        model.train_function = model.test_function = model.predict_function = None
        history = model.fit(
            x, y, batch_size=int(batch_size), validation_data=validation, epochs=int(epochs), shuffle=True,
            callbacks=callbacks, verbose=verbose,
        )
    else:
        history = model.fit(  # the dataset shuffles itself every epoch (Keras warns when told to)
            x, validation_data=validation, epochs=int(epochs), callbacks=callbacks, verbose=verbose, shuffle=False
        )
    if checkpoint.is_file():
        model.load_weights(str(checkpoint))
    return {key: [float(v) for v in values] for key, values in history.history.items()}


# --------------------------------------------------------------------------- the two phases


@dataclasses.dataclass
class PhaseReport:
    """What one phase did.

    Attributes:
        phase: Phase name.
        path: ``cached features``, ``cached activations`` or ``images`` (end to end).
        epochs: Epochs run (early stopping may stop before the profile's number).
        best_epoch: Epoch (within the phase) with the lowest ``val_loss``, restored at the end.
        seconds: Training time.
        trainable: Parameters trained.
        learning_rate: Learning rate used.
        val_accuracy: Validation accuracy of the restored (best) epoch.
        kept: Whether the model keeps this phase's weights (phase 2 is dropped when it
            does not beat phase 1 on validation: :meth:`Retrainer.fit_last_blocks`).
    """

    phase: str
    path: str
    epochs: int
    best_epoch: int
    seconds: float
    trainable: int
    learning_rate: float
    val_accuracy: float = math.nan
    kept: bool = True


class Retrainer:
    """The lab's two-phase retraining of a base + head on a split dataset, fast on a CPU.

    Typical use (notebook 02)::

        base = backbones.load_base(settings)
        head = training.build_head(base.output_shape[1:], len(names))
        retrainer = training.Retrainer(settings, frame, base, head)
        retrainer.fit_head()            # phase 1
        retrainer.fit_last_blocks()     # phase 2
        retrainer.model.save("simpsons.keras")

    Args:
        settings: Course settings (backbone, batch size, learning rate, epochs, cache).
        frame: Dataset with ``path``, ``label`` and ``split`` (train, validation, test).
        base: The pretrained base (``backbones.load_base(settings)``).
        head: Its new head (:func:`build_head`).
        n_blocks: Blocks retrained in phase 2 (1 = the last block, 2 = the last two).
        augment: None, or augmentation layers (:func:`augmentation_layers`) applied to the
            training images in phase 2, which then trains end to end on the images.
        mirror: Also train on a mirrored copy of every training image, extracted once
            like the originals (both phases; phase 2 only on cached activations). The
            copies are made for every image, so that they do not depend on the split
            and :meth:`predict` can average over both views (``flip_test``).
        flip_test: Average each image's prediction with its mirror image's (test-time
            augmentation; needs ``mirror``). :meth:`predict`, :meth:`accuracy` and
            :meth:`export_model` then use both views.
        balance_classes: Repeat the training images of the smaller classes until each
            class has as many as the largest (like class weights, for the cached paths).
        label_smoothing: Soften the training targets of both phases by this share
            (0 = off; see :func:`compile_model`).
        memory_budget_mb: Most memory for phase 2's cached activations; beyond it
            (even in ``float16``) phase 2 trains end to end on the images.
        optimizer: ``adam`` (the lab's), ``sgd`` or ``rmsprop``.
        tensorboard: Write TensorBoard logs (in ``log_dir``, one folder per phase).
        log_dir: Folder of the TensorBoard logs; ``<run_dir>/logs`` by default. Notebooks
            pass a folder beside themselves (``tensorboard_proxy.log_dir("simpsons")``),
            inside the JupyterLab root, where the Launcher's TensorBoard reads them.
        run_dir: Folder for checkpoints and logs; ``<cache_dir>/runs/<backbone>-<time>``
            by default.
        progress: Print what happens (feature extraction progress bars, choices).
        verbose: Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).

    Attributes:
        model: The whole classifier (:func:`assemble_model`), trained by both phases.
        class_names: Class names; class id ``i`` is ``class_names[i]``.
        labels: Class id of every row of ``frame``.
        reports: One :class:`PhaseReport` per phase run.
        timings: Seconds spent extracting features / activations and training each phase.
    """

    def __init__(
        self,
        settings: Settings | None,
        frame: pd.DataFrame,
        base: "keras.Model",
        head: "keras.Model",
        *,
        n_blocks: int = 1,
        augment: Any = None,
        mirror: bool = False,
        flip_test: bool = False,
        balance_classes: bool = False,
        label_smoothing: float = 0.0,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        optimizer: str = "adam",
        tensorboard: bool = True,
        run_dir: str | Path | None = None,
        log_dir: str | Path | None = None,
        progress: bool = True,
        verbose: int = 0,
    ) -> None:
        self.settings = settings or load_settings()
        self.backbone = backbones.get_backbone(settings=self.settings)
        if not isinstance(frame, pd.DataFrame) or not {"path", "label", "split"} <= set(frame.columns):
            raise ValueError(
                "frame must be a DataFrame with 'path', 'label' and 'split' columns; "
                "split it first with helpers.splits.split_dataset(frame)."
            )
        present = set(frame["split"])
        if not {"train", "validation"} <= present:
            raise ValueError(
                f"the frame needs 'train' and 'validation' rows (it has {sorted(present)}): validation data drives "
                "early stopping and the best checkpoint."
            )
        max_blocks = len(self.backbone.block_ends) - 1
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or not 1 <= n_blocks <= max_blocks:
            raise ValueError(f"n_blocks must be a whole number between 1 and {max_blocks}, not {n_blocks!r}.")
        make_optimizer(optimizer)  # validate the name now, not after minutes of extraction
        if (
            not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool)
            or not 0.0 <= label_smoothing < 1.0
        ):
            raise ValueError(f"label_smoothing must be a share in [0, 1) (0 = off, 0.1 is usual), not {label_smoothing!r}.")
        self.frame = frame.reset_index(drop=True)
        self.class_names = pipeline.class_names(self.frame)
        if head.output_shape[-1] != len(self.class_names):
            raise ValueError(
                f"the head has {head.output_shape[-1]} outputs but the data has {len(self.class_names)} classes; "
                "build it with n_classes=len(class_names)."
            )
        self.labels = pipeline.encode_labels(self.frame["label"], self.class_names)
        self.base, self.head = base, head
        set_phase(base, self.backbone, 1)  # start frozen: parameter_table(model) then shows phase 1
        self.model = assemble_model(base, head)
        self.n_blocks = int(n_blocks)
        self.augment = augment
        self.mirror = bool(mirror)
        if flip_test and not self.mirror:
            raise ValueError("flip_test averages over mirrored copies: pass mirror=True too.")
        self.flip_test = bool(flip_test)
        self.balance_classes = bool(balance_classes)
        self.label_smoothing = float(label_smoothing)
        self.phase1_weights: list[np.ndarray] | None = None
        self.memory_budget_mb = float(memory_budget_mb)
        self.optimizer = optimizer
        self.tensorboard = tensorboard
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(run_dir) if run_dir else self.settings.cache_dir / RUNS_SUBDIR / f"{self.backbone.key}-{stamp}"
        self.log_dir = Path(log_dir) if log_dir else self.run_dir / "logs"
        self.progress = progress
        self.verbose = verbose
        self.histories: dict[str, dict[str, list[float]]] = {}
        self.reports: list[PhaseReport] = []
        self.timings: dict[str, float] = {}
        self._features: np.ndarray | None = None
        self._activations: np.ndarray | None = None
        self._mirrored_features: np.ndarray | None = None
        self._mirrored_activations: np.ndarray | None = None
        self._features_current = False  # False once phase 2 changed the base
        self._submodels: dict[str, Any] = {}  # built once: every new model would trace its functions again
        self.activation_shape = tuple(block_input_model(base, self.backbone, self.n_blocks).output_shape[1:])
        self.activation_dtype = choose_activation_dtype(self.activation_shape, self._cached_rows(), self.memory_budget_mb)

    # ------------------------------------------------------------------ planning

    @property
    def phase2_path(self) -> str:
        """How phase 2 will train: ``cached activations`` or ``images`` (and why)."""
        if self.augment is not None:
            return "images"
        return "cached activations" if self.activation_dtype else "images"

    def _cached_rows(self) -> int:
        """Rows of cached arrays: every image, plus a mirrored copy of each when mirroring."""
        return len(self.frame) * (2 if self.mirror else 1)

    def plan(self) -> str:
        """A few sentences saying how each phase will train and how much memory it needs."""
        rows = self._cached_rows()
        shape = "x".join(str(d) for d in self.activation_shape)
        need32 = activation_megabytes(self.activation_shape, rows, "float32")
        copies = f" (with a mirrored copy of each of the {len(self.frame)} images)" if self.mirror else ""
        lines = [
            f"Phase 1 (head): trained on the base's pooled features, computed once for {rows} images{copies}.",
            f"Phase 2 (last {self.n_blocks} block{'s' if self.n_blocks > 1 else ''}): block input {shape} per image, "
            f"{need32:.0f} MB in float32 for {rows} images (budget {self.memory_budget_mb:.0f} MB).",
        ]
        if self.augment is not None:
            lines.append("  -> trains end to end on the images: augmentation changes the pixels every epoch.")
        elif self.activation_dtype is None:
            lines.append("  -> too large even in float16: trains end to end on the images (slower).")
        else:
            lines.append(
                f"  -> trains the last block(s) + head on cached activations ({self.activation_dtype}); "
                "phase 1's features come from them through the frozen last block."
            )
        return "\n".join(lines)

    def rows(self, split: str) -> np.ndarray:
        """Positions (in ``frame``) of the rows of one split."""
        return np.flatnonzero(self.frame["split"].to_numpy() == split)

    # ------------------------------------------------------------------ cached arrays

    def _extract(self, model: "keras.Model", *, rows: np.ndarray | None = None, dtype: str = "float32") -> np.ndarray:
        """The one call site of feature extraction (disk-cached, progress bar): features.extract_features."""
        frame = self.frame if rows is None else self.frame.iloc[rows]
        return features.extract_features(model, frame, self.settings, cache=True, progress=self.progress, dtype=dtype)

    @device.under_strategy
    def _pooled_extractor(self) -> "keras.Model":
        import keras

        pooling = head_pooling(self.head)
        pooled = _pooling_layer(pooling, _EXTRACTOR_POOLING_NAMES[pooling])(self.base.output)
        # Named like backbones.load_feature_extractor's model of the same layer: notebook 03's
        # cached features of the pretrained base are then the ones phase 1 needs.
        name = f"{self.backbone.key}_{self.base.layers[-1].name}_features"
        return keras.Model(self.base.input, pooled, name=name)

    def activations(self) -> np.ndarray:
        """Phase 2's cached block-input activations for every row (computed on first use).

        Raises:
            RuntimeError: Phase 2 trains on images (augmentation, or over the memory budget).
        """
        if self.phase2_path != "cached activations":
            raise RuntimeError(f"phase 2 trains on the images here, not on cached activations:\n{self.plan()}")
        if self._activations is None:
            began = time.perf_counter()
            model = block_input_model(self.base, self.backbone, self.n_blocks)
            self._activations = self._extract(model, dtype=self.activation_dtype or "float16")
            if self.mirror:
                self._mirrored_activations = self._extract(mirrored(model), dtype=self.activation_dtype or "float16")
            self.timings["activations"] = time.perf_counter() - began
        return self._activations

    def features(self) -> np.ndarray:
        """Phase 1's pooled features of the frozen base for every row (computed on first use)."""
        if self._features is not None and self._features_current:
            return self._features
        if self.phase2_path == "cached activations":
            # The layers before the last block(s) never train, so the activations stay valid.
            activations = self.activations()
            began = time.perf_counter()
            self._features = self._through_last_blocks(activations)
            if self.mirror:
                self._mirrored_features = self._through_last_blocks(self._mirrored_activations)
        else:
            began = time.perf_counter()
            extractor = self._pooled_extractor()
            self._features = self._extract(extractor)
            if self.mirror:
                self._mirrored_features = self._extract(mirrored(extractor))
        self.timings["features"] = time.perf_counter() - began
        self._features_current = True
        return self._features

    def _training_rows(self) -> np.ndarray:
        """Positions of the training rows; with ``balance_classes``, the smaller classes' rows repeated."""
        train = self.rows("train")
        if not self.balance_classes:
            return train
        per_class = [train[self.labels[train] == k] for k in np.unique(self.labels[train])]
        largest = max(len(rows) for rows in per_class)
        return np.sort(np.concatenate([np.resize(rows, largest) for rows in per_class]))

    def _training_arrays(self, values: np.ndarray, mirrored_values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The training rows of ``values`` and their labels, followed by the mirrored copies when asked."""
        train = self._training_rows()
        if not self.mirror:
            return values[train], self.labels[train]
        return np.concatenate([values[train], mirrored_values[train]]), np.concatenate([self.labels[train]] * 2)

    def _targets(self, labels: np.ndarray) -> np.ndarray:
        """What the compiled loss takes: class ids, or one-hot rows with label smoothing (:func:`compile_model`)."""
        return one_hot_labels(labels, len(self.class_names)) if self.label_smoothing else labels

    @device.under_strategy
    def _submodel(self, name: str) -> "keras.Model":
        """The sub-models sharing the model's layers: ``top`` (head after pooling), ``tail``, ``pooled tail``."""
        import keras

        if name not in self._submodels:
            if name == "top":
                model = head_after_pooling(self.head)
            elif name == "tail":
                model = tail_model(self.base, self.head, self.backbone, self.n_blocks)
            elif name == "pooled tail":  # block input -> last block(s) -> the head's pooling
                part = base_tail(self.base, self.backbone, self.n_blocks)
                inputs = keras.Input(shape=part.input_shape[1:])
                pooled = _pooling_layer(head_pooling(self.head), "pool")(part(inputs, training=False))
                model = keras.Model(inputs, pooled, name="pooled_tail")
            else:  # pragma: no cover - internal names only
                raise KeyError(name)
            self._submodels[name] = model
        return self._submodels[name]

    def _through_last_blocks(self, activations: np.ndarray) -> np.ndarray:
        """Pooled features from block inputs: the last block(s) and the head's pooling, batch by batch."""
        return self._submodel("pooled tail").predict(activations, batch_size=self.settings.batch_size * 2, verbose=0)

    # ------------------------------------------------------------------ training

    def _say(self, text: str) -> None:
        if self.progress:
            print(text)

    def fit_head(
        self, *, epochs: int | None = None, learning_rate: float | None = None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Phase 1: train the head on the frozen base's cached features.

        Args:
            epochs: Most epochs; ``settings.run.head_epochs`` by default.
            learning_rate: ``settings.learning_rate`` (1e-3) by default.
            batch_size: ``settings.batch_size`` by default.

        Returns:
            The phase's history (:func:`history_frame`).
        """
        epochs = int(epochs or self.settings.run.head_epochs)
        learning_rate = float(learning_rate or self.settings.learning_rate)
        set_phase(self.base, self.backbone, 1)
        features = self.features()
        validation = self.rows("validation")
        x_train, y_train = self._training_arrays(features, self._mirrored_features)
        top = compile_model(
            self._submodel("top"), learning_rate, optimizer=self.optimizer, label_smoothing=self.label_smoothing
        )
        callbacks, checkpoint = make_callbacks(
            self.run_dir, PHASE_HEAD, patience=self.settings.run.early_stopping_patience, tensorboard=self.tensorboard,
            log_dir=self.log_dir,
        )
        self._say(f"{PHASE_HEAD}: {len(x_train)} training images, features {features.shape[1:]}, up to {epochs} epochs.")
        began = time.perf_counter()
        history = _fit(
            top, x_train, self._targets(y_train), (features[validation], self._targets(self.labels[validation])),
            epochs=epochs, batch_size=batch_size or self.settings.batch_size, callbacks=callbacks,
            checkpoint=checkpoint, verbose=self.verbose, seed=self.settings.seed,
        )
        seconds = time.perf_counter() - began
        self.phase1_weights = None
        table = self._record(PHASE_HEAD, "cached features", history, seconds, _weight_count(top.trainable_weights), learning_rate)
        self.phase1_weights = [np.array(w) for w in self.model.get_weights()]  # phase 2 falls back to these
        return table

    def fit_last_blocks(
        self,
        *,
        epochs: int | None = None,
        learning_rate: float | None = None,
        batch_size: int | None = None,
        schedule: str = "constant",
        keep_better: bool = True,
    ) -> pd.DataFrame:
        """Phase 2: unfreeze the last ``n_blocks`` blocks (BatchNorm stays frozen) and continue.

        Trains on cached block-input activations when they fit, else end to end on
        the images (with augmentation when given). Phase 2 can make a model worse
        (too little data, too high a learning rate): its result is kept only if it
        beats phase 1 on the validation split (higher accuracy, or the same accuracy
        and a lower loss); otherwise the model goes back to phase 1's weights, and
        :meth:`report` says so (column ``kept``).

        Args:
            epochs: Most epochs; ``settings.run.finetune_epochs`` by default.
            learning_rate: A tenth of ``settings.learning_rate`` by default.
            batch_size: ``settings.batch_size`` by default.
            schedule: ``"constant"`` (the lab's) or ``"cosine"``: the learning rate
                decays to 0 along the cosine over the phase's epochs.
            keep_better: Fall back to phase 1's weights when phase 2 does not beat it on
                validation (needs phase 1 run first; False keeps phase 2 whatever happens).

        Returns:
            The phase's history (:func:`history_frame`).
        """
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}.")
        epochs = int(epochs or self.settings.run.finetune_epochs)
        learning_rate = float(learning_rate or self.settings.learning_rate * FINETUNE_LEARNING_RATE_FACTOR)
        batch_size = int(batch_size or self.settings.batch_size)
        path = self.phase2_path
        validation = self.rows("validation")
        before = self._validation_score() if keep_better and self.phase1_weights is not None else None
        if path == "cached activations":
            activations = self.activations()  # extracted (or read from the disk cache) before timing training
            x_train, y_train = self._training_arrays(activations, self._mirrored_activations)
        set_phase(self.base, self.backbone, 2, self.n_blocks)
        callbacks, checkpoint = make_callbacks(
            self.run_dir, PHASE_BLOCKS, patience=self.settings.run.early_stopping_patience, tensorboard=self.tensorboard,
            log_dir=self.log_dir,
        )
        self._say(f"{PHASE_BLOCKS}: last {self.n_blocks} block(s) + head on {path}, up to {epochs} epochs, "
                  f"learning rate {learning_rate:g}.")
        if path == "images" and self.mirror and self.augment is None:
            self._say("  (no mirrored copies on this path: pass augmentation layers to flip images at random.)")
        steps = math.ceil((len(x_train) if path == "cached activations" else len(self.rows("train"))) / batch_size)
        rate = learning_rate if schedule == "constant" else cosine_schedule(learning_rate, epochs * steps)
        if path == "cached activations":
            trained = compile_model(
                self._submodel("tail"), rate, optimizer=self.optimizer, label_smoothing=self.label_smoothing
            )
            began = time.perf_counter()
            history = _fit(
                trained, x_train, self._targets(y_train),
                (activations[validation], self._targets(self.labels[validation])), epochs=epochs, batch_size=batch_size,
                callbacks=callbacks, checkpoint=checkpoint, verbose=self.verbose, seed=self.settings.seed,
            )
        else:
            trained = compile_model(self.model, rate, optimizer=self.optimizer, label_smoothing=self.label_smoothing)
            train_data, validation_data = self._image_datasets(batch_size)
            began = time.perf_counter()
            history = _fit(
                trained, train_data, None, validation_data, epochs=epochs, batch_size=None, callbacks=callbacks,
                checkpoint=checkpoint, verbose=self.verbose, seed=self.settings.seed,
            )
        seconds = time.perf_counter() - began
        self._features_current = False  # the base changed: phase 1's features are out of date
        table = self._record(PHASE_BLOCKS, path, history, seconds, _weight_count(trained.trainable_weights), learning_rate)
        if before is not None:
            after = self._validation_score()
            # Better: higher accuracy, or the same and a lower loss (a NaN never is).
            beats = after[0] > before[0] or (after[0] == before[0] and after[1] < before[1])
            if not beats:  # phase 2 did not beat phase 1: go back to phase 1's model
                self.model.set_weights(self.phase1_weights)
                self._features_current = self._features is not None
                self.reports[-1].kept = False
                self._say(
                    f"  phase 2 did not beat phase 1 on validation (accuracy {after[0]:.1%} vs {before[0]:.1%}): "
                    "the model keeps phase 1's weights."
                )
        return table

    def _validation_score(self) -> tuple[float, float]:
        """(validation accuracy, validation loss) of the model as it is; a model that outputs NaN scores 0 and inf."""
        probabilities = self.predict("validation")
        truth = self.labels[self.rows("validation")]
        if not np.all(np.isfinite(probabilities)):
            return 0.0, math.inf
        loss = -float(np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-7, 1.0))))
        return float(np.mean(np.argmax(probabilities, axis=1) == truth)), loss

    def _image_datasets(self, batch_size: int) -> tuple[Any, Any]:
        """tf.data datasets of the training (shuffled, augmented) and validation images."""
        tf = device.import_tensorflow()
        part = {name: self.frame.iloc[self.rows(name)] for name in ("train", "validation")}
        train = pipeline.make_dataset(
            part["train"]["path"], part["train"]["label"], settings=self.settings, batch_size=batch_size,
            shuffle=True, augment=self.augment, cache=True, classes=self.class_names,
        )
        # ignore_errors hides the length; telling Keras avoids its "ran out of data" warning.
        train = train.apply(tf.data.experimental.assert_cardinality(math.ceil(len(part["train"]) / batch_size)))
        validation = pipeline.make_dataset(
            part["validation"]["path"], part["validation"]["label"], settings=self.settings, batch_size=batch_size,
            cache=True, classes=self.class_names,
        )
        if self.label_smoothing:  # the categorical loss takes one-hot labels (compile_model)
            n_classes = len(self.class_names)
            train, validation = (
                data.map(lambda images, labels: (images, tf.one_hot(labels, n_classes))) for data in (train, validation)
            )
        return train, validation

    def _record(
        self, phase: str, path: str, history: dict[str, list[float]], seconds: float, trainable: int, learning_rate: float
    ) -> pd.DataFrame:
        self.histories[phase] = history
        losses = history.get("val_loss") or [math.nan]
        best = int(np.nanargmin(losses)) + 1 if not all(math.isnan(v) for v in losses) else len(losses)
        self.reports = [r for r in self.reports if r.phase != phase]
        accuracies = history.get("val_accuracy") or []
        best_accuracy = float(accuracies[best - 1]) if len(accuracies) >= best else math.nan
        self.reports.append(PhaseReport(phase, path, len(losses), best, seconds, trainable, learning_rate, best_accuracy))
        self.timings[phase] = seconds
        self._say(f"  {len(losses)} epochs in {seconds:.1f} s; best val_loss at epoch {best} (restored).")
        return history_frame(history, phase)

    # ------------------------------------------------------------------ results

    def history(self) -> pd.DataFrame:
        """Both phases' histories as one table (:func:`merge_histories`), in training order."""
        return merge_histories(self.histories)

    def report(self) -> pd.DataFrame:
        """One row per phase: path, epochs, best epoch, seconds, parameters trained, learning rate."""
        return pd.DataFrame([dataclasses.asdict(r) for r in self.reports]).set_index("phase") if self.reports else (
            pd.DataFrame(columns=[f.name for f in dataclasses.fields(PhaseReport)]).set_index("phase")
        )

    def predict(self, split: str = "test") -> np.ndarray:
        """Class probabilities of one split, computed the fastest exact way available.

        Cached activations go through the tail (after either phase); cached features
        through the head (before phase 2 only); otherwise the images through the whole model.
        """
        rows = self.rows(split)
        if not len(rows):
            raise ValueError(f"the frame has no {split!r} rows.")
        batch = self.settings.batch_size * 2
        if self._activations is not None:
            tail = self._submodel("tail")
            predicted = tail.predict(self._activations[rows], batch_size=batch, verbose=0)
            if self.flip_test:
                predicted = (predicted + tail.predict(self._mirrored_activations[rows], batch_size=batch, verbose=0)) / 2
            return predicted
        if self._features is not None and self._features_current:
            top = self._submodel("top")
            predicted = top.predict(self._features[rows], batch_size=256, verbose=0)
            if self.flip_test:
                predicted = (predicted + top.predict(self._mirrored_features[rows], batch_size=256, verbose=0)) / 2
            return predicted
        return predict_images(self.export_model(), self.frame.iloc[rows], self.settings)

    def export_model(self) -> "keras.Model":
        """The model to save and use: :attr:`model`, wrapped to average over a mirrored view with ``flip_test``."""
        return flip_averaged(self.model) if self.flip_test else self.model

    def accuracy(self, split: str = "test") -> float:
        """Accuracy on one split (via :meth:`predict`)."""
        rows = self.rows(split)
        return float(np.mean(np.argmax(self.predict(split), axis=1) == self.labels[rows]))


def predict_images(model: "keras.Model", frame: pd.DataFrame | Sequence[str], settings: Settings | None = None) -> np.ndarray:
    """A model's outputs for image files, through the kit's pipeline (in order).

    Args:
        model: A model taking preprocessed images (e.g. :func:`assemble_model`'s).
        frame: A frame with a ``path`` column, or a list of paths.
        settings: Course settings (backbone preprocessing, image size, batch size).
    """
    settings = settings or load_settings()
    dataset = pipeline.make_dataset(frame, settings=settings, shuffle=False)
    return model.predict(dataset, verbose=0)


# --------------------------------------------------------------------------- saved models

MODELS_SUBDIR = "models"
RETRAINED_SIMPSONS = "simpsons_retrained"


class SavedModelMismatch(ValueError):
    """A saved model was trained for other classes, another backbone or another test split."""


def saved_model_path(settings: Settings | None = None, name: str = RETRAINED_SIMPSONS) -> Path:
    """Where :func:`save_model` keeps model ``name``: ``<cache_dir>/models/<name>.keras``.

    A known place, so that a later notebook finds an earlier one's model (notebook 03
    compares its classic models with notebook 02's fine-tuned network).
    """
    settings = settings or load_settings()
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name must be a plain file name without folders, not {name!r}.")
    return Path(settings.cache_dir) / MODELS_SUBDIR / f"{name}.keras"


def _model_identity(settings: Settings, frame: pd.DataFrame, class_names: Sequence[str]) -> dict[str, Any]:
    """What a saved model must share with the data it is used on: backbone, input size, classes, test split."""
    test = frame.loc[frame["split"] == "test", "path"] if "split" in frame.columns else frame["path"]
    return {
        "backbone": backbones.get_backbone(settings=settings).key,
        "alpha": settings.alpha,
        "image_size": backbones.input_size(settings),
        "class_names": [str(name) for name in class_names],
        "test_files": features.files_fingerprint(sorted(map(str, test))),
    }


def save_model(
    model: "keras.Model",
    settings: Settings | None,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    *,
    name: str = RETRAINED_SIMPSONS,
    results: Mapping[str, float] | None = None,
) -> Path:
    """Save a trained classifier where later notebooks find it, with what it was trained for.

    Writes ``<name>.keras`` and ``<name>.json`` (backbone, input size, class names, a
    fingerprint of the test split's files, ``results`` such as the test accuracy)
    under ``<cache_dir>/models``. Both are written to temporary files first and renamed,
    so an interrupted save never leaves a half-written model behind.

    Args:
        model: The model (images in, class probabilities out).
        settings: Course settings (cache folder, backbone).
        frame: The split dataset the model was trained and tested on.
        class_names: Class names in output order.
        name: File name without extension.
        results: Numbers to keep with the model (``{"test accuracy": 0.9}``).

    Returns:
        The path of the ``.keras`` file.
    """
    import json

    settings = settings or load_settings()
    if model.output_shape[-1] != len(class_names):
        raise ValueError(
            f"the model has {model.output_shape[-1]} outputs but {len(class_names)} class names were given."
        )
    path = saved_model_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = _model_identity(settings, frame, class_names)
    info["results"] = {str(k): float(v) for k, v in (results or {}).items()}
    info["saved"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with atomic_path(path, suffix=".keras") as staging:  # Keras insists on the .keras suffix
        model.save(staging)
        # The .json vouches for the .keras: drop the old one first, so that an interruption
        # before the metadata is written leaves a model without metadata (refused), never a mismatch.
        path.with_suffix(".json").unlink(missing_ok=True)
    atomic_write(path.with_suffix(".json"), json.dumps(info, indent=1) + "\n")
    return path


@device.under_strategy
def load_model(
    settings: Settings | None,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    *,
    name: str = RETRAINED_SIMPSONS,
) -> tuple["keras.Model", dict[str, Any]]:
    """Reload a model saved by :func:`save_model`, checking it fits this data.

    Args:
        settings: Course settings (cache folder, backbone).
        frame: The split dataset it will be used on.
        class_names: Class names expected, in output order.
        name: File name without extension.

    Returns:
        The model and what was saved with it (``results``, ``saved`` time...).

    Raises:
        FileNotFoundError: No such model: run the notebook that saves it first.
        SavedModelMismatch: It was trained with another backbone, input size, classes
            or test split (another profile or seed): run that notebook again.
    """
    import json

    import keras

    settings = settings or load_settings()
    path = saved_model_path(settings, name)
    info_path = path.with_suffix(".json")
    if not path.is_file() or not info_path.is_file():
        raise FileNotFoundError(f"no saved model {name!r} in {path.parent}: run the notebook that trains it first.")
    info = json.loads(info_path.read_text())
    expected = _model_identity(settings, frame, class_names)
    different = [key for key, value in expected.items() if info.get(key) != value]
    if different:
        raise SavedModelMismatch(
            f"the saved model {name!r} does not match this data ({', '.join(different)} differ): "
            "it was trained with other settings; run the notebook that trains it again with these."
        )
    return keras.models.load_model(path), info
