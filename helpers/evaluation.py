"""Evaluating a classifier on held-out images: accuracy, per-class scores, confusions, mistakes.

Every function takes plain arrays: true labels and predictions (class ids or class
names) or class probabilities, plus the class names, so it works for any model of
any notebook (a Keras softmax, a scikit-learn classifier...). Tables are pandas
DataFrames indexed by class name.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "accuracy",
    "accuracy_interval",
    "accuracy_row",
    "balanced_accuracy",
    "as_class_ids",
    "classification_table",
    "confusion_table",
    "misclassified",
    "most_confused_pairs",
    "predicted_ids",
    "wilson_interval",
]


def as_class_ids(values: Any, class_names: Sequence[Any]) -> np.ndarray:
    """Labels given as class ids or as class names, as an int array of class ids.

    Used inside this module's scores (notebook 02, section 7).

    >>> as_class_ids(["lisa", "bart", "lisa"], ["bart", "lisa"]).tolist()
    [1, 0, 1]
    >>> as_class_ids([1, 0], ["bart", "lisa"]).tolist()
    [1, 0]

    Raises:
        ValueError: A name not in ``class_names``, or an id outside ``0..len(class_names)-1``.
    """
    items = list(values.tolist() if isinstance(values, (np.ndarray, pd.Series)) else values)
    if items and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        ids = np.asarray(items, dtype=np.int64)
        bad = sorted({int(i) for i in ids if not 0 <= i < len(class_names)})
        if bad:
            raise ValueError(f"class ids {bad[:5]} are outside 0..{len(class_names) - 1} ({len(class_names)} classes).")
        return ids
    index = {name: position for position, name in enumerate(class_names)}
    unknown = sorted({str(v) for v in items if v not in index})
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not among the class names {list(class_names)[:10]}.")
    return np.asarray([index[v] for v in items], dtype=np.int64)


def predicted_ids(probabilities: Any) -> np.ndarray:
    """The most probable class of each row of a ``(n_images, n_classes)`` probability array.

    Used by notebook 02, sections 5, 7 and 9, and notebook 05, section 5.
    """
    values = np.asarray(probabilities)
    if values.ndim != 2:
        raise ValueError(f"probabilities must have shape (n_images, n_classes), not {values.shape}.")
    return np.argmax(values, axis=1)


def _pair(y_true: Any, y_pred: Any, class_names: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted labels as arrays of equal length (class ids when ``class_names`` is given)."""
    if class_names is None:
        true, pred = np.asarray(list(y_true)), np.asarray(list(y_pred))
    else:
        true, pred = as_class_ids(y_true, class_names), as_class_ids(y_pred, class_names)
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true labels but {len(pred)} predictions; give one prediction per image.")
    return true, pred


def accuracy(y_true: Any, y_pred: Any, class_names: Sequence[Any] | None = None) -> float:
    """Share of images whose prediction is the true class (NaN when there are none).

    Used by notebook 02, section 7.

    >>> accuracy(["bart", "lisa", "lisa", "bart"], ["bart", "lisa", "bart", "bart"], ["bart", "lisa"])
    0.75

    Args:
        y_true: True labels (ids, or names with ``class_names``).
        y_pred: Predicted labels, same form.
        class_names: Needed when labels are names.
    """
    true, pred = _pair(y_true, y_pred, class_names)
    return float(np.mean(true == pred)) if len(true) else float("nan")


def confusion_table(y_true: Any, y_pred: Any, class_names: Sequence[Any], *, normalize: bool = False) -> pd.DataFrame:
    """The confusion matrix: rows are true classes, columns predicted classes.

    Used by notebook 02, section 7, notebook 04, section 6 and notebook 05, section 5.

    Args:
        y_true: True labels (ids or names).
        y_pred: Predicted labels.
        class_names: Class names (row and column order).
        normalize: Divide each row by its total (each row then sums to 1; rows of
            absent classes stay 0).
    """
    true, pred = _pair(y_true, y_pred, class_names)
    n = len(class_names)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (true, pred), 1)
    values: np.ndarray = counts
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros((n, n), dtype=float), where=totals > 0)
    names = [str(c) for c in class_names]
    return pd.DataFrame(values, index=pd.Index(names, name="true"), columns=pd.Index(names, name="predicted"))


def classification_table(y_true: Any, y_pred: Any, class_names: Sequence[Any]) -> pd.DataFrame:
    """Precision, recall, F1 and support of each class, plus macro and weighted averages.

    Taught in notebook 02, section 7 (precision, recall, F1); used again by notebook 05, section 5.

    Precision: of the images predicted as the class, the share that are. Recall: of the
    class's images, the share found. F1: their harmonic mean. A score with nothing to
    divide by (no image predicted as the class) counts as 0, as in scikit-learn.
    """
    from sklearn.metrics import precision_recall_fscore_support

    true, pred = _pair(y_true, y_pred, class_names)
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, zero_division=0
    )
    table = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int)},
        index=pd.Index([str(c) for c in class_names], name="class"),
    )
    total = int(support.sum())
    averages = []
    for name, weights in (("macro avg", np.ones(len(labels))), ("weighted avg", support.astype(float))):
        weight_sum = weights.sum()
        averages.append(
            pd.Series(
                {
                    column: float(np.dot(table[column], weights) / weight_sum) if weight_sum else float("nan")
                    for column in ("precision", "recall", "f1")
                }
                | {"support": total},
                name=name,
            )
        )
    table = pd.concat([table, pd.DataFrame(averages)])
    table["support"] = table["support"].astype(int)
    table.index.name = "class"
    return table


def misclassified(
    paths: Sequence[str] | pd.Series,
    y_true: Any,
    probabilities: Any,
    class_names: Sequence[Any],
) -> pd.DataFrame:
    """The images the model got wrong, most confident mistakes first.

    Used by notebook 02, section 7, notebook 04, section 6 and notebook 05, section 5.

    Args:
        paths: Image file of each row.
        y_true: True labels (ids or names).
        probabilities: ``(n_images, n_classes)`` class probabilities.
        class_names: Class names in output order.

    Returns:
        Columns ``path``, ``true``, ``predicted``, ``probability`` (of the predicted
        class) and ``true probability`` (what the model gave the right class); the
        index is each image's row position.
    """
    values = np.asarray(probabilities, dtype=np.float64)
    paths = [str(p) for p in paths]
    pred = predicted_ids(values)
    true, _ = _pair(y_true, pred, class_names)
    if values.shape[1] != len(class_names) or len(paths) != len(true):
        raise ValueError(
            f"need one path, one label and one row of {len(class_names)} probabilities per image: "
            f"{len(paths)} paths, {len(true)} labels, probabilities {values.shape}."
        )
    wrong = np.flatnonzero(pred != true)
    table = pd.DataFrame(
        {
            "path": [paths[i] for i in wrong],
            "true": [class_names[true[i]] for i in wrong],
            "predicted": [class_names[pred[i]] for i in wrong],
            "probability": values[wrong, pred[wrong]],
            "true probability": values[wrong, true[wrong]],
        },
        index=pd.Index(wrong, name="row"),
    )
    return table.sort_values("probability", ascending=False, kind="stable")


def most_confused_pairs(y_true: Any, y_pred: Any, class_names: Sequence[Any], *, top: int = 5) -> pd.DataFrame:
    """The (true, predicted) pairs of different classes that occur most often.

    Used by notebook 02, section 7.

    Returns:
        Columns ``true``, ``predicted``, ``count`` and ``share of true class`` (the
        share of that class's images predicted as the other), most frequent first;
        at most ``top`` rows, only pairs that occur.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a whole number >= 1, not {top!r}.")
    counts = confusion_table(y_true, y_pred, class_names).to_numpy()
    totals = counts.sum(axis=1)
    rows = [
        {"true": class_names[i], "predicted": class_names[j], "count": int(counts[i, j]),
         "share of true class": counts[i, j] / totals[i]}
        for i in range(len(class_names))
        for j in range(len(class_names))
        if i != j and counts[i, j] > 0
    ]
    table = pd.DataFrame(rows, columns=["true", "predicted", "count", "share of true class"])
    return table.sort_values(["count", "share of true class"], ascending=False, kind="stable").head(top).reset_index(drop=True)


def balanced_accuracy(y_true: Any, y_pred: Any, class_names: Sequence[Any] | None = None) -> float:
    """Mean over the classes present in ``y_true`` of each class's recall (share of its images found).

    Taught in notebook 04, section 6 (results: exercise 3 computes it, the kit's approaches report it).

    Unlike :func:`accuracy` it is not flattered by class imbalance: always answering the
    majority class scores 1 / number of classes. Matches scikit-learn's
    ``balanced_accuracy_score``; NaN when there are no images.

    Args:
        y_true: True labels (ids, or names with ``class_names``).
        y_pred: Predicted labels, same form.
        class_names: Needed when labels are names.
    """
    true, pred = _pair(y_true, y_pred, class_names)
    if not len(true):
        return float("nan")
    return float(np.mean([np.mean(pred[true == label] == label) for label in np.unique(true)]))


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a share of ``correct`` out of ``total`` (a test accuracy).

    Used by notebook 03, section 6 (the 95 % interval of each test accuracy).

    A test set is a sample: 230 of 245 right is 93.9 %, but another 245 frames from
    the same kind of episodes could give a few points more or less. The interval says
    how many: it holds the true accuracy with probability ``confidence``. Unlike the
    textbook "p ± 1.96·√(p(1-p)/n)" it stays within [0, 1] and works at 100 %.

    Args:
        correct: Images predicted correctly.
        total: Images scored (NaN interval when 0).
        confidence: 0.95 for a 95 % interval.

    Returns:
        (low, high), both shares in [0, 1].

    >>> low, high = wilson_interval(230, 245)
    >>> round(low, 3), round(high, 3)
    (0.901, 0.963)
    """
    from scipy.stats import norm

    if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0:
        raise ValueError(f"total must be a whole number of images >= 0, not {total!r}.")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be between 0 and total ({total}), not {correct!r}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95 for 95 %), not {confidence!r}.")
    if total == 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + confidence / 2))
    share = correct / total
    middle = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * np.sqrt(share * (1 - share) / total + z * z / (4 * total * total))
    # Rounding can put a bound a hair past the share itself (0 of n: low = 3e-17): the
    # interval always contains the observed share.
    return float(min(share, max(0.0, middle - half))), float(max(share, min(1.0, middle + half)))


def accuracy_interval(
    y_true: Any, y_pred: Any, class_names: Sequence[Any] | None = None, *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Accuracy with its Wilson interval: ``(accuracy, low, high)`` (see :func:`wilson_interval`).

    Used by notebook 05, section 5.

    >>> accuracy_interval([0, 1, 1, 0], [0, 1, 0, 0])[0]
    0.75
    """
    true, pred = _pair(y_true, y_pred, class_names)
    correct = int(np.sum(true == pred))
    low, high = wilson_interval(correct, len(true), confidence)
    return (correct / len(true) if len(true) else float("nan")), low, high


def accuracy_row(y_true: Any, y_pred: Any, class_names: Sequence[Any] | None = None, *, confidence: float = 0.95) -> dict[str, Any]:
    """One row of a results table: ``test accuracy``, its interval's ends and the number of test images.

    Used by notebook 02, sections 7 and 9.

    >>> accuracy_row([0, 1, 1, 0], [0, 1, 0, 0])["test images"]
    4
    """
    value, low, high = accuracy_interval(y_true, y_pred, class_names, confidence=confidence)
    percent = int(round(confidence * 100))
    return {"test accuracy": value, f"{percent}% low": low, f"{percent}% high": high, "test images": len(list(y_true))}
