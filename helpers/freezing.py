"""What a phase trains: the base frozen for phase 1 or 2, and the parameters training changes.

Phase 1 trains the head alone, the whole base frozen (``n_blocks=0``); phase 2 also trains the
base's last block(s), BatchNormalization layers still frozen (:func:`freeze_all_but_last_blocks`;
notebook 02's exercise writes the same rule by phase, ``freeze_for_phase``). :func:`parameter_table`
shows, per part of a model, what is trainable and what is frozen; :func:`count_trainable_parameters`
counts what training changes in a Keras model or a fitted scikit-learn model (notebook 04's
comparison table).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from helpers import backbones

if TYPE_CHECKING:  # pragma: no cover
    import keras


def freeze_all_but_last_blocks(model: "keras.Model", backbone: backbones.Backbone, n_blocks: int = 0) -> list[str]:
    """Freeze the base except its last ``n_blocks`` blocks; BatchNorm stays frozen everywhere.

    Used for both phases by the kit's own training (the ``retrain`` command, notebook 04's
    transfer approach, the benchmarks): 0 blocks for phase 1, the last ``n_blocks`` for phase 2.
    Counted in blocks, not phases: notebook 02's exercise (``freeze_for_phase``) is the students' to write.

    BatchNormalization layers keep ``trainable=False`` even inside unfrozen blocks, so
    they run in inference mode and their moving statistics never move (fine-tuning
    with batch statistics from small batches wrecks the pretrained features).
    Recompile the model after calling this.

    Args:
        model: The backbone's base (or classifier) model.
        backbone: Its table row.
        n_blocks: How many blocks, counted from the end, to make trainable (0 = none).

    Returns:
        Names of the layers left trainable.
    """
    import keras

    all_blocks = backbones.blocks(model, backbone)
    if not 0 <= n_blocks <= len(all_blocks):
        raise ValueError(f"n_blocks must be between 0 and {len(all_blocks)}, not {n_blocks}.")
    unfrozen = {name for block in all_blocks[len(all_blocks) - n_blocks :] for name in block} if n_blocks else set()
    if not unfrozen:
        model.trainable = False
        return []
    model.trainable = True  # containers must be trainable for their layers' flags to count
    trainable = []
    for layer in model.layers:
        keep = layer.name in unfrozen and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = keep
        if keep:
            trainable.append(layer.name)
    return trainable


def _weight_count(weights: Sequence[Any]) -> int:
    return int(sum(math.prod(int(d) for d in w.shape) for w in weights))


def parameter_table(model: "keras.Model") -> pd.DataFrame:
    """Trainable and frozen parameters of each part of a model (base, head...) and in total.

    Taught in notebook 02, section 3.

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


def count_trainable_parameters(model: Any) -> int:
    """Number of parameters training changes: Keras trainable weights, or a fitted sklearn model's.

    Taught in notebook 04, section 6 (results).

    For scikit-learn models this counts what ``fit`` learned in the final estimator
    (coefficients and intercepts of linear models; support vectors and dual
    coefficients of SVMs; one threshold per split node and the leaf values of trees;
    the stored training set of k-nearest neighbours). Scaler statistics are not counted.

    Raises:
        TypeError: ``model`` is neither a Keras model nor a fitted scikit-learn estimator.
    """
    if hasattr(model, "trainable_weights"):
        return _weight_count(model.trainable_weights)
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
