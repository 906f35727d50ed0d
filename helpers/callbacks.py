"""The history a training phase leaves, as a table.

Notebook 02's students write the callbacks themselves (exercise 4: early stopping, the best
checkpoint, TensorBoard); :func:`tensorboard_available` says whether TensorBoard logs can be
written. :func:`history_frame` turns a phase's Keras history into one row per epoch and :func:`merge_histories` joins consecutive phases, epochs
numbered on, which :func:`helpers.plots.learning_curves` draws with a line at each of
:func:`phase_boundaries`.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping

import pandas as pd

PHASE_HEAD = "phase 1: head"
PHASE_BLOCKS = "phase 2: last block"
HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy"]


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (needed to write TensorBoard logs) is installed.

    Taught in notebook 02, section 5.
    """
    return importlib.util.find_spec("tensorboard") is not None


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
