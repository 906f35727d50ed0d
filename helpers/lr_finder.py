"""A learning-rate finder: the loss over exponentially growing learning rates, on a copy of the model.

Leslie Smith's range test, as fast.ai's ``lr_find`` popularised it: train a *copy* of the
model for one short sweep, multiplying the learning rate by the same factor at every
batch (1e-7 up to 10 by default), and record the loss. The loss first barely moves
(the rate is too small to matter), then falls (useful rates), then explodes (the steps
overshoot). A good rate lies on the falling slope, before the minimum:

* ``steepest`` -- where the smoothed loss falls fastest (per decade of learning rate);
* ``minimum / 10`` -- a tenth of the rate with the lowest smoothed loss (the minimum
  itself is already at the edge of divergence).

:func:`find_learning_rate` takes any compiled Keras model and its arrays, so the same
call serves phase 1 (the head on cached features) and phase 2 (the last blocks on
cached block inputs). The model passed in is never changed: its weights, optimizer
and ``trainable`` flags are copied, and the copy is thrown away.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import keras
    from matplotlib.figure import Figure

__all__ = ["LRFinderResult", "find_learning_rate", "smooth", "suggest"]


def smooth(losses: Any, beta: float = 0.9) -> np.ndarray:
    """Exponential moving average of a loss curve, bias-corrected (the first values are not pulled to 0).

    Used by :func:`find_learning_rate` (notebook 02, section 5: the learning-rate finder).

    >>> smooth([1.0, 1.0, 1.0]).round(6).tolist()
    [1.0, 1.0, 1.0]
    >>> smooth([4.0, 0.0], beta=0.5).round(3).tolist()  # (0.5*4 + 0.5*0) / (1 - 0.25)
    [4.0, 1.333]
    """
    values = np.asarray(losses, dtype=np.float64)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), not {beta}.")
    out = np.empty_like(values)
    average = 0.0
    for i, value in enumerate(values):
        average = beta * average + (1.0 - beta) * value
        out[i] = average / (1.0 - beta ** (i + 1))
    return out


def suggest(learning_rates: Any, smoothed: Any) -> tuple[float, float]:
    """The suggested rates of a sweep: ``(steepest descent, minimum / 10)``.

    Used by :func:`find_learning_rate` (notebook 02, section 5: the learning-rate finder).

    ``steepest`` is where the smoothed loss falls fastest per decade of learning rate,
    searched before the minimum (past it the loss rises). The slope at each rate is the
    least-squares slope over a window of about 0.8 decade around it, so that the noise of
    single batches (large at the tiny rates of the flat start) does not win over the real
    descent. ``minimum / 10`` is a tenth of the rate at the lowest smoothed loss. With too
    short a stretch before the minimum ``steepest`` falls back to ``minimum / 10``.

    >>> rates = np.logspace(-5, 0, 6)          # 1e-5 ... 1
    >>> loss = np.array([1.0, 0.98, 0.6, 0.55, 0.5, 3.0])
    >>> steepest, tenth = suggest(rates, loss)
    >>> round(float(steepest), 6), round(float(tenth), 6)
    (0.001, 0.01)
    """
    rates = np.asarray(learning_rates, dtype=np.float64)
    values = np.asarray(smoothed, dtype=np.float64)
    if rates.shape != values.shape or rates.ndim != 1 or len(rates) < 2:
        raise ValueError("give one smoothed loss per learning rate (at least 2 of each).")
    best = int(np.nanargmin(values))
    tenth = float(rates[best] / 10.0)
    logs = np.log10(rates)
    per_decade = (len(rates) - 1) / max(float(logs[-1] - logs[0]), 1e-12)
    half = max(2, int(round(0.4 * per_decade)))  # window half-width in points: about 0.4 decade
    centres = range(half, best - half + 1)  # whole windows, all before the minimum
    if not len(centres):
        return tenth, tenth
    slopes = [np.polyfit(logs[i - half : i + half + 1], values[i - half : i + half + 1], 1)[0] for i in centres]
    return float(rates[centres[int(np.argmin(slopes))]]), tenth


@dataclasses.dataclass
class LRFinderResult:
    """A learning-rate sweep: the rates tried, the losses, the suggestion.

    Returned by :func:`find_learning_rate` (notebook 02, section 5).

    Attributes:
        learning_rates: The rate of each batch.
        losses: The training loss of each batch.
        smoothed: ``losses`` smoothed (:func:`smooth`); the suggestion reads this.
        steepest: Where the smoothed loss falls fastest (the suggestion).
        minimum_over_10: A tenth of the rate with the lowest smoothed loss.
        stopped: Why the sweep ended: ``"diverged"`` (the loss exploded) or ``"end"``.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    steepest: float
    minimum_over_10: float
    stopped: str

    @property
    def suggestion(self) -> float:
        """The suggested learning rate: :attr:`steepest`."""
        return self.steepest

    def table(self) -> pd.DataFrame:
        """One row per batch: ``learning_rate``, ``loss``, ``smoothed``."""
        return pd.DataFrame({"learning_rate": self.learning_rates, "loss": self.losses, "smoothed": self.smoothed})

    def plot(self, ax: Any = None) -> "Figure":
        """The smoothed loss against the learning rate (log scale), the two suggestions marked."""
        import matplotlib.pyplot as plt

        if ax is None:
            figure, ax = plt.subplots(figsize=(6.5, 3.6))
        else:
            figure = ax.figure
        ax.plot(self.learning_rates, self.losses, color="0.8", linewidth=1, label="loss per batch")
        ax.plot(self.learning_rates, self.smoothed, color="C0", linewidth=2, label="smoothed")
        for rate, colour, text in ((self.steepest, "C3", "steepest"), (self.minimum_over_10, "C2", "minimum / 10")):
            ax.axvline(rate, color=colour, linestyle="--", linewidth=1, label=f"{text}: {rate:.1e}")
        ax.set_xscale("log")
        finite = self.smoothed[np.isfinite(self.smoothed)]
        if len(finite):  # past divergence the raw loss is huge: keep the useful part in view
            low, start = float(finite.min()), float(finite[0])
            ax.set_ylim(low - 0.1 * abs(start - low) - 1e-6, max(start, low) + 0.6 * abs(start - low) + 1e-6)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        ax.set_title(f"Learning-rate finder ({len(self.losses)} batches, {self.stopped})")
        ax.legend(loc="best", fontsize="small")
        figure.tight_layout()
        return figure


def _copy(model: "keras.Model", loss: Any, optimizer: Any, start: float) -> "keras.Model":
    """A compiled copy of ``model``: same layers, weights and ``trainable`` flags; its own optimizer."""
    import keras

    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("the model is not compiled: compile it first, or pass loss= (and optimizer=).")
    if optimizer is None:
        template = getattr(model, "optimizer", None)
        if template is None:
            optimizer = keras.optimizers.Adam(learning_rate=start)
        else:  # the same optimizer and settings, a plain rate (a schedule would fight the sweep)
            optimizer = type(template).from_config({**template.get_config(), "learning_rate": float(start)})
    elif isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    if len(copy.trainable_weights) != len(model.trainable_weights):  # clone_model copies each layer's flag
        raise ValueError("the model's copy does not train the same weights; build the model from standard Keras layers.")
    copy.compile(optimizer=optimizer, loss=loss)
    return copy


def _length(x: Any) -> int:
    arrays = x if isinstance(x, (list, tuple)) else [x]
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"the inputs have different numbers of rows ({sorted(lengths)}); give one row per example.")
    return lengths.pop()


def _take(x: Any, rows: np.ndarray) -> Any:
    """One batch of rows, float32 where the cache is float16 (notebook 02's memory-mapped arrays)."""

    def part(array: Any) -> np.ndarray:
        batch = np.asarray(array[rows])
        return batch.astype(np.float32) if batch.dtype == np.float16 else batch

    return [part(a) for a in x] if isinstance(x, (list, tuple)) else part(x)


def _check_sweep(start: Any, stop: Any, steps: Any, batch_size: Any, diverge: Any) -> None:
    """Refuse rates, steps, batch size or divergence factor a sweep cannot use."""
    if not (isinstance(start, (int, float)) and isinstance(stop, (int, float))) or not 0 < start < stop:
        raise ValueError(f"need 0 < start < stop, not start={start!r}, stop={stop!r} (for example 1e-7 and 10).")
    if int(steps) != steps or steps < 10:
        raise ValueError(f"steps must be a whole number of batches, at least 10, not {steps!r}.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, not {batch_size!r}.")
    if not diverge > 1:
        raise ValueError(f"diverge must be above 1 (a factor over the lowest loss), not {diverge!r}.")


def _rows_to_sweep(x: Any, y: Any, rows: Any) -> np.ndarray:
    """The row positions the sweep draws its batches from (all rows when ``rows`` is None), checked."""
    length = _length(x)
    if length != _length(y):
        raise ValueError(f"x has {length} rows but y has {_length(y)}; give one target per example.")
    usable = np.arange(length) if rows is None else np.asarray(rows)
    if usable.ndim != 1 or (len(usable) and (not np.issubdtype(usable.dtype, np.integer) or usable.min() < 0
                                             or usable.max() >= length)):
        raise ValueError(f"rows must be whole-number positions between 0 and {length - 1} (train_rows).")
    if len(usable) == 0:
        raise ValueError("no rows to sweep on; give the training arrays (cached features or block inputs).")
    return usable


def _sweep(
    copy: "keras.Model", x: Any, y: Any, rates: np.ndarray, order: np.ndarray, batch_size: int, beta: float,
    diverge: float,
) -> tuple[list[float], str]:
    """Train ``copy`` one batch per rate; the losses, and why the sweep stopped (``"diverged"`` or ``"end"``)."""
    losses: list[float] = []
    for step, rate in enumerate(rates):
        copy.optimizer.learning_rate.assign(float(rate))
        batch = order[step * batch_size : (step + 1) * batch_size]
        value = copy.train_on_batch(_take(x, batch), _take(y, batch), return_dict=True)["loss"]
        losses.append(float(value))
        smoothed_now = smooth(losses, beta)
        if not np.isfinite(smoothed_now[-1]) or (
            step >= 5 and smoothed_now[-1] > diverge * float(np.nanmin(smoothed_now))
        ):
            return losses, "diverged"
    return losses, "end"


def find_learning_rate(
    model: "keras.Model",
    x: Any,
    y: Any,
    *,
    start: float = 1e-7,
    stop: float = 10.0,
    steps: int = 100,
    batch_size: int = 32,
    beta: float = 0.9,
    diverge: float = 4.0,
    loss: Any = None,
    optimizer: Any = None,
    rows: Any = None,
    seed: int = 0,
) -> LRFinderResult:
    """Sweep the learning rate from ``start`` to ``stop`` on a copy of ``model``; suggest a rate.

    Taught in notebook 02, section 5 (before the first ``fit``: which learning rate?).

    Each of ``steps`` batches (drawn in a shuffled order, wrapping around) trains the copy
    one step at a learning rate ``start * (stop / start) ** (i / (steps - 1))``. The sweep
    stops early when the smoothed loss exceeds ``diverge`` times its lowest value, or is
    not finite. ``model`` keeps its weights, its optimizer state and its flags.

    Args:
        model: A compiled Keras model (or pass ``loss``): the head on cached features in
            phase 1, the tail on cached block inputs in phase 2, any model and arrays.
        x: Input array (or a list of arrays for several inputs), one row per example.
        y: Targets, as ``fit`` takes them for the model's loss.
        start: First learning rate (> 0).
        stop: Last learning rate (> ``start``).
        steps: Batches in the sweep (at least 10).
        batch_size: Rows per batch.
        beta: Smoothing of the loss curve (:func:`smooth`).
        diverge: Stop when the smoothed loss exceeds this many times its minimum (> 1).
        loss: The loss; the model's compiled loss by default.
        optimizer: An optimizer (or its name); a fresh copy of the model's by default.
        rows: The rows of ``x`` and ``y`` to sweep on (``train_rows``); all by default. Batches
            are taken from the arrays row by row, so the cached arrays are never copied whole.
        seed: Seed of the batch order.

    Returns:
        :class:`LRFinderResult` (``.suggestion``, ``.plot()``, ``.table()``).

    Raises:
        ValueError: Bad rates, steps or arrays; a model neither compiled nor given a loss.
    """
    _check_sweep(start, stop, steps, batch_size, diverge)
    usable = _rows_to_sweep(x, y, rows)
    copy = _copy(model, loss, optimizer, float(start))
    rates = start * (stop / start) ** (np.arange(int(steps)) / (int(steps) - 1))
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [rng.permutation(usable) for _ in range(math.ceil(steps * batch_size / len(usable)) + 1)]
    )
    losses, stopped = _sweep(copy, x, y, rates, order, int(batch_size), beta, diverge)
    del copy
    values = np.asarray(losses)
    smoothed = smooth(values, beta)
    tried = rates[: len(values)]
    finite = np.isfinite(smoothed)
    steepest, tenth = suggest(tried[finite], smoothed[finite]) if finite.sum() >= 2 else (float(start), float(start))
    return LRFinderResult(tried, values, smoothed, steepest, tenth, stopped)
