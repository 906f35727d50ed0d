"""Retraining a pretrained backbone in two phases: a new head (phase 1), then the last block(s) too (phase 2).

Notebook 02 teaches these steps one by one, in Keras: the student's head, freezing function,
compile function and callbacks, ``fit`` on cached feature maps, then on cached block inputs.
:func:`fit_two_phases` is the same steps in one call (notebook 02's default recipe,
:data:`DEFAULT_RECIPE`), for the ``retrain`` command, notebook 04's approaches
(:func:`helpers.approaches.run_transfer`), the slides' learning-curve figure and the benchmarks
(section 8 compares each of the recipe's tricks with the default by switching its argument off).

The lab's retraining recipe, in Keras:

* the backbone without its ImageNet classifier (``include_top=False``) plus a new
  **head**: pooling, dropout, a softmax layer over the new classes
  (:func:`helpers.heads.build_head`);
* **phase 1**, last layer only: the base frozen and called with ``training=False``,
  Adam at ``settings.learning_rate`` (1e-3), early stopping that restores the best epoch;
* **phase 2**, last blocks: the last block(s) of the base unfrozen (BatchNormalization
  layers stay frozen, in inference mode), recompiled at a lower learning rate.

Both phases are fast on a CPU because nothing is computed twice: one pass over the images
(:func:`helpers.heads.cached_outputs_model` and :func:`helpers.features.cached_arrays`) keeps the
base's feature maps (phase 1 fits the head on them) and the input of the last block(s) (phase 2
fits the *tail*, a model from that input through the unfrozen blocks and the head, on them),
in float16 on disk, memory-mapped and fed to ``fit`` a batch at a time (:func:`helpers.features.batches`).
A fixed augmentation, the left-right flip, is computed in the same pass.

The trained layers are the layers of one ordinary Keras model
(:func:`helpers.heads.assemble_model`: image -> base -> head), so the result saves to
``.keras`` and reloads like any other; the tests check that the cached paths give that model's predictions.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from helpers import backbones, features, pipeline
from helpers.callbacks import PHASE_BLOCKS, PHASE_HEAD, merge_histories
from helpers.compiling import compile_model, cosine_schedule, one_hot_labels
from helpers.freezing import count_trainable_parameters, freeze_all_but_last_blocks
from helpers.heads import assemble_model, flip_averaged, tail_model
from helpers.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import keras


# The lab's phase 2 learning rate relative to phase 1's (notebook 04's plain recipe).
FINETUNE_LEARNING_RATE_FACTOR = 0.1


def balanced_class_weights(labels: Sequence[int] | np.ndarray, n_classes: int) -> dict[int, float]:
    """Keras ``class_weight``: each class weighs the inverse of its share of ``labels`` (the training class ids).

    Used by :func:`fit_two_phases` (notebook 02, section 4, writes the same line).

    A class with half as many images weighs twice as much, so every class counts as much in
    the loss; on average an image weighs 1. A class without images gets the largest weight.

    >>> balanced_class_weights([0, 0, 0, 1], 2)
    {0: 0.6666666666666666, 1: 2.0}
    """
    ids = np.asarray(labels)
    if ids.ndim != 1 or not len(ids) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError("labels must be a non-empty 1-D array of class ids (0, 1, 2...).")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a whole number of at least 1, not {n_classes!r}.")
    if ids.min() < 0 or ids.max() >= n_classes:
        raise ValueError(f"class ids must lie between 0 and {n_classes - 1}; got {ids.min()} to {ids.max()}.")
    counts = np.bincount(ids, minlength=int(n_classes))
    return {k: len(ids) / (int(n_classes) * max(int(n), 1)) for k, n in enumerate(counts)}


# ---------------------------------------------------------------------------- notebook 02's steps, as one call

# Notebook 02's default recipe (section 2 writes each value as a visible constant; tests/test_training.py
# checks that they agree). Chosen on the validation frames of the Simpsons group split (benchmarks section 8).
DEFAULT_RECIPE: dict[str, Any] = {
    "n_blocks": 3, "phase2_learning_rate": 3e-4, "label_smoothing": 0.1, "flips": True, "class_weights": True,
}


@dataclasses.dataclass
class TwoPhaseResult:
    """What :func:`fit_two_phases` trained.

    Not called in a notebook: what the ``retrain`` command (notebook 05's summary names it) gets back.

    Attributes:
        model: Images in, probabilities out: the base and the head, averaged with the flipped
            image when the recipe trains on flips (:func:`helpers.heads.flip_averaged`).
        class_names: Class ``i`` is ``class_names[i]``.
        history: Both phases' epochs (:func:`helpers.callbacks.merge_histories`).
        phases: One row per phase: epochs, seconds, trained parameters, validation accuracy, kept.
        validation_accuracy: The kept model's validation accuracy.
        test_probabilities: Probabilities of the test rows (fast path), or None without test rows.
        head_test_probabilities: The same after phase 1 alone (the head on the frozen base), or None.
    """

    model: Any
    class_names: list[Any]
    history: pd.DataFrame
    phases: pd.DataFrame
    validation_accuracy: float
    test_probabilities: np.ndarray | None
    head_test_probabilities: np.ndarray | None = None


class _EpochLines:
    """Keras callback printing one plain line per epoch (for logs: no bar, no escape codes)."""

    def __new__(cls, phase: str, epochs: int, stream: Any) -> Any:
        import keras

        class EpochLine(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                values = " ".join(f"{key} {value:.4f}" for key, value in (logs or {}).items() if "learning" not in key)
                print(f"{phase}: epoch {epoch + 1}/{epochs}: {values}", file=stream, flush=True)

        return EpochLine()


def _both_views(model: "keras.Model", views: Sequence[np.ndarray], rows: np.ndarray, batch_size: int) -> np.ndarray:
    """Mean probabilities over the views (the images, and their flips) of some rows."""
    return np.mean(
        [model.predict(features.batches(view, rows=rows, batch_size=batch_size), verbose=0) for view in views], axis=0
    )


def _positive_epochs(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number of epochs of at least 1 (or None for the profile's), not {value!r}.")
    return int(value)


def _check_inputs(
    frame: Any, base: "keras.Model", head: "keras.Model", arrays: Sequence[Any], backbone: backbones.Backbone,
    n_blocks: Any, label_smoothing: Any, phase2_learning_rate: Any, phase2_schedule: str, extra_callbacks: Sequence[Any],
) -> None:
    """Every check of :func:`fit_two_phases`, before anything trains or is written."""
    import keras

    if not isinstance(frame, pd.DataFrame) or not {"path", "label", "split"} <= set(frame.columns):
        raise ValueError(
            "frame must be a DataFrame with 'path', 'label' and 'split' columns; "
            "split it first with helpers.splits.split_dataset(frame)."
        )
    present = set(frame["split"])
    if not {"train", "validation"} <= present:
        raise ValueError(
            f"the frame needs train and validation rows (it has {sorted(present)}): validation data drives "
            "early stopping and the choice between the phases."
        )
    if phase2_schedule not in ("cosine", "constant"):
        raise ValueError(f"phase2_schedule must be 'cosine' or 'constant', not {phase2_schedule!r}.")
    max_blocks = len(backbone.block_ends) - 1
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or not 1 <= n_blocks <= max_blocks:
        raise ValueError(f"n_blocks must be a whole number between 1 and {max_blocks}, not {n_blocks!r}.")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be a share in [0, 1) (0 = off, 0.1 is usual), not {label_smoothing!r}.")
    if isinstance(phase2_learning_rate, bool) or not isinstance(phase2_learning_rate, (int, float)) or not phase2_learning_rate > 0:
        raise ValueError(f"phase2_learning_rate must be a positive number (3e-4 is notebook 02's), not {phase2_learning_rate!r}.")
    if len(arrays) not in (2, 4) or any(len(a) != len(frame) for a in arrays):
        raise ValueError("arrays must be the 2 or 4 outputs of heads.cached_outputs_model for these rows of frame.")
    classes = frame["label"].nunique()
    if head.output_shape[-1] != classes:
        raise ValueError(
            f"the head has {head.output_shape[-1]} outputs but the data has {classes} classes; "
            "build it with n_classes=len(class_names)."
        )
    block_shape = tuple(base.get_layer(backbones.block_input_layer(base, backbone, int(n_blocks))).output.shape[1:])
    wanted = {"block inputs": block_shape, "feature maps": tuple(head.input_shape[1:])}
    for index, array in enumerate(arrays):
        what = "block inputs" if index % 2 == 0 else "feature maps"
        if tuple(array.shape[1:]) != wanted[what]:
            raise ValueError(
                f"arrays[{index}] should hold {what} of shape {wanted[what]}, not {tuple(array.shape[1:])}: make the "
                f"arrays with heads.cached_outputs_model(base, backbone, n_blocks={n_blocks}) of this base."
            )
    strangers = [type(c).__name__ for c in extra_callbacks if not isinstance(c, keras.callbacks.Callback)]
    if strangers:
        raise TypeError(f"extra_callbacks must be Keras callbacks (keras.callbacks.Callback), not {strangers}.")


def fit_two_phases(
    settings: Settings,
    frame: pd.DataFrame,
    base: "keras.Model",
    head: "keras.Model",
    arrays: Sequence[np.ndarray],
    *,
    n_blocks: int = DEFAULT_RECIPE["n_blocks"],
    phase2_learning_rate: float = DEFAULT_RECIPE["phase2_learning_rate"],
    label_smoothing: float = DEFAULT_RECIPE["label_smoothing"],
    class_weights: bool = DEFAULT_RECIPE["class_weights"],
    phase2_schedule: str = "cosine",
    keep_better: bool = True,
    run_dir: str | Path,
    epoch_lines: Any = None,
    head_epochs: int | None = None,
    block_epochs: int | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> TwoPhaseResult:
    """Notebook 02's two phases on cached arrays, in one call: the steps sections 5 to 7 show one by one.

    Not called in a notebook: the ``retrain`` command runs it (notebook 05's summary names it),
    and so do notebook 04's approaches, the slides and the benchmarks.

    Phase 1 freezes the base and fits the head on the cached feature maps; phase 2
    unfreezes the last ``n_blocks`` blocks (BatchNormalization stays frozen), recompiles
    with a cosine decay from ``phase2_learning_rate`` and fits the tail (the blocks' input
    to the output) on the cached block inputs, from the epoch where phase 1 stopped.
    Both use early stopping that restores the best epoch; phase 2 is kept only when it
    beats phase 1 on validation. The arrays are read a batch at a time (never copied whole).

    Each trick of the recipe is one argument, the same line of Keras as in notebook 02; the flips
    are 4 arrays (trained on both views, predictions averaged).

    Args:
        settings: Course settings (batch size, learning rate, epochs, patience, seed).
        frame: ``path``, ``label`` and ``split`` (train and validation rows needed), in the arrays' row order.
        base: The pretrained base.
        head: A new head for the base (:func:`helpers.heads.build_head`), one output per class.
        arrays: From :func:`helpers.features.cached_arrays` of
            :func:`helpers.heads.cached_outputs_model` with the same ``n_blocks``: block
            inputs and feature maps, then the same for the flipped images (4 arrays) or not (2).
        n_blocks: Blocks retrained in phase 2.
        phase2_learning_rate: Phase 2's starting learning rate (cosine decay to 0).
        label_smoothing: Label smoothing of the categorical loss (0: the sparse loss on class ids).
        class_weights: Weigh each class by the inverse of its share of the training images
            (:func:`balanced_class_weights`).
        phase2_schedule: ``cosine`` (notebook 02's default) or ``constant`` (notebook 04's plain
            recipe: the same rate every step).
        keep_better: Keep phase 2 only when it beats phase 1 on validation (the lesson's rule);
            False keeps it whatever (tests that must see phase 2's weights).
        run_dir: Folder for the phases' best checkpoints (``phase 1.keras``, ``phase 2.keras``).
        epoch_lines: A stream for one plain line per epoch (None: silent).
        head_epochs: Most epochs of phase 1; ``settings.scale.head_epochs`` when None.
        block_epochs: Most epochs of phase 2; ``settings.scale.finetune_epochs`` when None.
        extra_callbacks: More Keras callbacks for both phases' ``fit``, after the recipe's
            (the benchmarks' epoch clock; a callback's ``model`` is the head, then the tail).

    Raises:
        ValueError: A frame, arrays, head or option that does not fit (the message says which and
            what to change). Nothing is trained or written then.
        TypeError: An extra callback that is not a Keras callback.
    """
    extra_callbacks = list(extra_callbacks)
    backbone = backbones.get_backbone(settings=settings)
    _check_inputs(frame, base, head, arrays, backbone, n_blocks, label_smoothing, phase2_learning_rate, phase2_schedule,
                  extra_callbacks)
    options = _Options(
        int(n_blocks), phase2_learning_rate, label_smoothing, phase2_schedule, keep_better, Path(run_dir), epoch_lines,
        _positive_epochs("head_epochs", head_epochs) or settings.scale.head_epochs,
        _positive_epochs("block_epochs", block_epochs) or settings.scale.finetune_epochs, extra_callbacks,
    )
    return _both_phases(settings, base, head, backbone, _prepare_data(settings, frame, arrays, label_smoothing,
                                                                      class_weights), options, len(arrays) == 4)


@dataclasses.dataclass(frozen=True)
class _Options:
    """What fit_two_phases was asked for, checked."""

    n_blocks: int
    phase2_learning_rate: float
    label_smoothing: float
    phase2_schedule: str
    keep_better: bool
    run_dir: Path
    epoch_lines: Any
    head_epochs: int
    block_epochs: int
    extra_callbacks: list[Any]

    def callbacks(self, phase: str, epochs: int, patience: int) -> list[Any]:
        """The recipe's callbacks for one phase, its epoch lines, then the caller's."""
        lines = [_EpochLines(phase, epochs, self.epoch_lines)] if self.epoch_lines is not None else []
        return _recipe_callbacks(self.run_dir / f"{phase}.keras", patience) + lines + self.extra_callbacks


def _both_phases(
    settings: Settings, base: "keras.Model", head: "keras.Model", backbone: Any, data: "_PhaseData", options: _Options,
    flips: bool,
) -> TwoPhaseResult:
    """Phase 1 (the head), phase 2 (the last blocks and the head) and the phase kept: fit_two_phases's steps."""
    options.run_dir.mkdir(parents=True, exist_ok=True)
    patience = settings.scale.early_stopping_patience
    # Phase 1: the head on the frozen base's feature maps.
    freeze_all_but_last_blocks(base, backbone, 0)
    compile_model(head, settings.learning_rate, label_smoothing=options.label_smoothing)
    history1, seconds1 = _fit_phase(head, data, data.map_views, options.head_epochs, 0,
                                    options.callbacks("phase 1", options.head_epochs, patience))
    accuracy1 = data.validation_accuracy(head, data.map_views)
    test1 = data.test_probabilities(head, data.map_views)

    # Phase 2: the last blocks and the head, on the cached block inputs.
    tail = tail_model(base, head, backbone, options.n_blocks)
    phase1_weights = tail.get_weights()
    start, epochs = len(history1.epoch), options.block_epochs
    rate = _phase2_rate(options.phase2_learning_rate, options.phase2_schedule, epochs, data)
    history2, seconds2 = _fit_last_blocks(tail, base, backbone, options.n_blocks, data, rate, options.label_smoothing,
                                          epochs, start, options.callbacks("phase 2", start + epochs, patience))
    accuracy2 = data.validation_accuracy(tail, data.block_views)
    kept = accuracy2 > accuracy1 or not options.keep_better  # phase 2 must beat phase 1 on validation, not tie
    if not kept:
        tail.set_weights(phase1_weights)
    phases = _phase_table(
        options.n_blocks, [history1, history2], [seconds1, seconds2], [head, tail], [accuracy1, accuracy2], kept
    )
    model = assemble_model(base, head)
    return TwoPhaseResult(
        model=flip_averaged(model) if flips else model,
        class_names=list(data.names),
        history=merge_histories({PHASE_HEAD: history1.history, PHASE_BLOCKS: history2.history}),
        phases=phases,
        validation_accuracy=accuracy2 if kept else accuracy1,
        test_probabilities=data.test_probabilities(tail, data.block_views) if kept else test1,
        head_test_probabilities=test1,
    )


@dataclasses.dataclass
class _PhaseData:
    """The cached arrays, labels and rows both phases read (nothing copied: views of the arrays)."""

    names: list[Any]
    ids: np.ndarray
    targets: np.ndarray
    rows: dict[str, np.ndarray]
    weights: dict[int, float] | None
    block_views: list[np.ndarray]
    map_views: list[np.ndarray]
    batch: int
    seed: int

    def validation_accuracy(self, model: "keras.Model", views: list[np.ndarray]) -> float:
        """Accuracy on the validation rows, predictions averaged over the views."""
        predicted = _both_views(model, views, self.rows["validation"], 2 * self.batch)
        return float(np.mean(predicted.argmax(axis=1) == self.ids[self.rows["validation"]]))

    def test_probabilities(self, model: "keras.Model", views: list[np.ndarray]) -> np.ndarray | None:
        """Probabilities on the test rows (None without test rows)."""
        return _both_views(model, views, self.rows["test"], 2 * self.batch) if len(self.rows["test"]) else None


def _prepare_data(
    settings: Settings, frame: pd.DataFrame, arrays: Sequence[np.ndarray], label_smoothing: float, class_weights: bool
) -> _PhaseData:
    """Labels, targets (one-hot with label smoothing, class ids without), rows of each split and class weights."""
    names = pipeline.class_names(frame)
    ids = pipeline.encode_labels(frame["label"], names)
    # compile_model takes one-hot targets with label smoothing (the categorical loss), class ids without.
    targets = one_hot_labels(ids, len(names)) if label_smoothing else ids
    rows = {name: np.flatnonzero(frame["split"].to_numpy() == name) for name in ("train", "validation", "test")}
    weights = balanced_class_weights(ids[rows["train"]], len(names)) if class_weights else None
    return _PhaseData(list(names), ids, targets, rows, weights, list(arrays[0::2]), list(arrays[1::2]),
                      settings.batch_size, settings.seed)


def _phase2_rate(learning_rate: float, schedule: str, epochs: int, data: _PhaseData) -> Any:
    """Phase 2's learning rate: a cosine decay to 0 over its steps, or the same rate every step."""
    if schedule != "cosine":
        return learning_rate
    steps = epochs * len(features.batches(data.block_views, data.targets, rows=data.rows["train"],
                                          batch_size=data.batch))  # every view of every training row
    return cosine_schedule(learning_rate, steps)


def _fit_last_blocks(
    tail: "keras.Model", base: "keras.Model", backbone: Any, n_blocks: int, data: _PhaseData, rate: Any,
    label_smoothing: float, epochs: int, initial_epoch: int, callbacks: list[Any],
) -> tuple[Any, float]:
    """Phase 2: unfreeze the last ``n_blocks`` blocks (BatchNormalization stays frozen), recompile, fit the tail."""
    freeze_all_but_last_blocks(base, backbone, n_blocks)
    compile_model(tail, rate, label_smoothing=label_smoothing)
    return _fit_phase(tail, data, data.block_views, epochs, initial_epoch, callbacks)


def _phase_table(
    n_blocks: int, histories: list[Any], seconds: list[float], models: list[Any], accuracies: list[float], kept: bool
) -> pd.DataFrame:
    """One row per phase: epochs, seconds, trained parameters, validation accuracy and which phase was kept."""
    return pd.DataFrame(
        {
            "epochs": [len(history.epoch) for history in histories],
            "seconds": [round(s, 1) for s in seconds],
            "trained parameters": [count_trainable_parameters(model) for model in models],
            "validation accuracy": accuracies,
            "kept": [not kept, kept],
        },
        index=pd.Index(["phase 1: the head", f"phase 2: the last {n_blocks} block(s) and the head"], name="phase"),
    )


def _recipe_callbacks(checkpoint: Path, patience: int) -> list[Any]:
    """Early stopping that restores the best epoch, and the best epoch's checkpoint (notebook 02's exercise 4)."""
    import keras

    return [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor="val_loss", save_best_only=True),
    ]


def _fit_phase(
    model: "keras.Model", data: _PhaseData, views: list[np.ndarray], epochs: int, initial_epoch: int, callbacks: list[Any]
) -> tuple[Any, float]:
    """One phase's ``fit`` on batches of the cached ``views``: its History and its seconds."""
    import keras

    if initial_epoch == 0:
        keras.utils.set_random_seed(data.seed)
    began = time.perf_counter()
    history = model.fit(
        features.batches(views, data.targets, rows=data.rows["train"], batch_size=data.batch, shuffle=True,
                         seed=data.seed),
        validation_data=features.batches(views[0], data.targets, rows=data.rows["validation"], batch_size=data.batch),
        initial_epoch=initial_epoch, epochs=initial_epoch + epochs, class_weight=data.weights, verbose=0,
        callbacks=callbacks,
    )
    return history, time.perf_counter() - began
