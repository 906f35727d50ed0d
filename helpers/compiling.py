"""Compiling a classifier for a phase: optimizer, learning-rate schedule, loss and metric.

The lab's optimizers by name (:func:`make_optimizer`: Adam, SGD with momentum, RMSprop), a
cosine decay for phase 2 (:func:`cosine_schedule`) and :func:`compile_model`: sparse
categorical cross-entropy and accuracy for class ids (the categorical loss on
:func:`one_hot_labels` with label smoothing). Recompile after changing ``trainable``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from helpers import device

if TYPE_CHECKING:  # pragma: no cover
    import keras


OPTIMIZERS = ("adam", "sgd", "rmsprop")


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3) -> "keras.optimizers.Optimizer":
    """An optimizer by name (the lab's choices): ``adam`` (default), ``sgd`` (momentum 0.9) or ``rmsprop``.

    Used by :func:`compile_model`, and so by ``retraining.fit_two_phases`` (the ``retrain`` command, notebook 04's approaches).
    """
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


def cosine_schedule(learning_rate: float, steps: int) -> "keras.optimizers.schedules.LearningRateSchedule":
    """A learning rate decaying from ``learning_rate`` to 0 along a cosine over ``steps`` steps.

    Used by ``retraining.fit_two_phases``'s phase 2 (notebook 02, section 6, writes ``CosineDecay`` itself).
    """
    import keras

    return keras.optimizers.schedules.CosineDecay(float(learning_rate), decay_steps=max(int(steps), 1))


@device.under_strategy
def compile_model(
    model: "keras.Model", learning_rate: float, *, optimizer: str = "adam", label_smoothing: float = 0.0
) -> "keras.Model":
    """Compile a softmax classifier for integer labels: sparse categorical cross-entropy, accuracy.

    Used by the kit's own training (:func:`helpers.retraining.fit_two_phases`, notebook 04's approaches, the
    benchmarks); notebook 02's exercise 3 has students write their own compile step for one-hot targets.

    Labels are class ids (0, 1, 2...), not one-hot vectors, hence the *sparse* loss.
    Call again after changing which layers are trainable.

    With ``label_smoothing`` > 0 the targets are softened (the true class gets
    ``1 - label_smoothing`` plus its share of ``label_smoothing`` spread over all
    classes), which keeps the model from growing over-confident on a small training
    set. Keras's sparse loss has no such option, so the model is then compiled with
    the *categorical* loss and accuracy: train it on one-hot labels
    (:func:`one_hot_labels`); :func:`helpers.retraining.fit_two_phases` does that itself.
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

    Used by :func:`helpers.retraining.fit_two_phases` with label smoothing (notebook 02's default recipe).

    >>> one_hot_labels([2, 0], 3).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    ids = np.asarray(labels)
    if ids.ndim != 1 or (ids.size and (ids.min() < 0 or ids.max() >= n_classes)):
        raise ValueError(f"labels must be a 1-D array of class ids in [0, {n_classes}), not shape {ids.shape}.")
    return np.eye(int(n_classes), dtype="float32")[ids.astype(int)]
