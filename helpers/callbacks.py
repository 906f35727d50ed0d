"""A training phase's callbacks, and the history they leave as a table.

:func:`make_callbacks` gives the lab's callbacks (early stopping and the best checkpoint
by ``val_loss``, TensorBoard logs); :func:`history_frame` turns a phase's Keras history
into one row per epoch and :func:`merge_histories` joins consecutive phases, epochs
numbered on, which :func:`helpers.plots.learning_curves` draws with a line at each of
:func:`phase_boundaries`.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

PHASE_HEAD = "phase 1: head"
PHASE_BLOCKS = "phase 2: last block"
HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy"]


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed to write TensorBoard logs) is installed.

    Taught in notebook 02, section 5.
    """
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

    No caller left in the kit: notebook 02 writes these callbacks in Keras (exercise 4) and
    :func:`helpers.retraining.fit_two_phases` does the same; kept for its tests (a candidate for removal).

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
    """One phase's history (a Keras ``History`` or its ``.history`` dict) as a table, one row per epoch.

    Taught in notebook 02, sections 5 and 6 (the learning curves).
    """
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

    Taught in notebook 02, section 6 (both phases in one learning curve).

    Args:
        histories: ``{phase name: History or .history dict}`` in training order.

    Returns:
        Columns ``epoch`` (1, 2, ... across phases), ``phase``, then the metrics
        (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``...).

    >>> history = merge_histories({"phase 1": {"loss": [0.9, 0.7]}, "phase 2": {"loss": [0.5]}})
    >>> history.values.tolist()
    [[1, 'phase 1', 0.9], [2, 'phase 1', 0.7], [3, 'phase 2', 0.5]]
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
    """Where each phase after the first starts, as ``(x, phase)`` with x half-way between epochs.

    Used by :func:`helpers.plots.learning_curves` (notebook 02, section 6).

    >>> phase_boundaries(merge_histories({"phase 1": {"loss": [0.9, 0.7]}, "phase 2": {"loss": [0.5]}}))
    [(2.5, 'phase 2')]
    """
    if "phase" not in history.columns or history.empty:
        return []
    phases = history["phase"].to_numpy()
    epochs = history["epoch"].to_numpy()
    return [(float(epochs[i]) - 0.5, str(phases[i])) for i in range(1, len(phases)) if phases[i] != phases[i - 1]]
