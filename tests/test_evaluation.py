"""helpers.evaluation: accuracy, per-class scores, confusion tables, mistakes, confused pairs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import evaluation

NAMES = ["bart", "homer", "lisa"]
# 10 images: bart 3 right and 1 called homer; homer 2 right and 2 called lisa; lisa 2 right.
TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
PRED = np.array([0, 0, 0, 1, 1, 2, 2, 1, 2, 2])


def _probabilities(pred: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """Random probabilities whose most probable class is ``pred`` for each row."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(len(pred), n_classes))
    values[np.arange(len(pred)), pred] = values.max(axis=1) + rng.uniform(0.5, 2.0, size=len(pred))
    return values / values.sum(axis=1, keepdims=True)


def test_accuracy_ids_names_and_empty():
    assert evaluation.accuracy(TRUE, PRED) == pytest.approx(7 / 10)
    names_true = [NAMES[i] for i in TRUE]
    names_pred = [NAMES[i] for i in PRED]
    assert evaluation.accuracy(names_true, names_pred, NAMES) == pytest.approx(0.7)
    assert np.isnan(evaluation.accuracy([], []))
    with pytest.raises(ValueError, match="one prediction per image"):
        evaluation.accuracy([0, 1], [0])


def test_as_class_ids_rejects_unknown_names_and_ids():
    assert evaluation.as_class_ids(["lisa", "bart"], NAMES).tolist() == [2, 0]
    assert evaluation.as_class_ids(np.array([1, 2]), NAMES).tolist() == [1, 2]
    with pytest.raises(ValueError, match="not among the class names"):
        evaluation.as_class_ids(["maggie"], NAMES)
    with pytest.raises(ValueError, match="outside 0..2"):
        evaluation.as_class_ids([3], NAMES)


def test_confusion_table_counts_and_normalized_rows():
    table = evaluation.confusion_table(TRUE, PRED, NAMES)
    assert table.index.name == "true" and table.columns.name == "predicted"
    assert table.loc["bart", "homer"] == 1 and table.loc["homer", "lisa"] == 2 and table.loc["lisa", "lisa"] == 2
    assert table.to_numpy().sum() == len(TRUE)
    from sklearn.metrics import confusion_matrix

    assert np.array_equal(table.to_numpy(), confusion_matrix(TRUE, PRED, labels=[0, 1, 2]))
    normalized = evaluation.confusion_table(TRUE, PRED, NAMES + ["maggie"], normalize=True)
    assert np.allclose(normalized.to_numpy()[:3].sum(axis=1), 1.0)
    assert normalized.loc["maggie"].sum() == 0


def test_classification_table_matches_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    table = evaluation.classification_table(TRUE, PRED, NAMES)
    precision, recall, f1, support = precision_recall_fscore_support(TRUE, PRED, labels=[0, 1, 2], zero_division=0)
    assert list(table.columns) == ["precision", "recall", "f1", "support"]
    assert list(table.index) == NAMES + ["macro avg", "weighted avg"]
    assert np.allclose(table.loc[NAMES, "precision"], precision)
    assert np.allclose(table.loc[NAMES, "recall"], recall)
    assert np.allclose(table.loc[NAMES, "f1"], f1)
    assert table.loc[NAMES, "support"].tolist() == support.tolist()
    for average in ("macro", "weighted"):
        expected = precision_recall_fscore_support(TRUE, PRED, labels=[0, 1, 2], average=average, zero_division=0)
        assert np.allclose(table.loc[f"{average} avg", ["precision", "recall", "f1"]].to_numpy(dtype=float), expected[:3])
    assert table.loc["macro avg", "support"] == len(TRUE)


def test_classification_table_class_never_predicted_scores_zero():
    table = evaluation.classification_table([0, 1, 2], [0, 0, 1], NAMES)
    assert table.loc["lisa", "precision"] == 0 and table.loc["lisa", "recall"] == 0 and table.loc["lisa", "f1"] == 0


def test_misclassified_lists_each_mistake_with_probabilities_most_confident_first():
    probabilities = _probabilities(PRED, 3)
    paths = [f"/data/img_{i}.jpg" for i in range(len(TRUE))]
    table = evaluation.misclassified(paths, TRUE, probabilities, NAMES)
    assert list(table.columns) == ["path", "true", "predicted", "probability", "true probability"]
    wrong = np.flatnonzero(TRUE != PRED)
    assert sorted(table.index) == wrong.tolist()
    for row, record in table.iterrows():
        assert record["path"] == paths[row]
        assert record["true"] == NAMES[TRUE[row]] and record["predicted"] == NAMES[PRED[row]]
        assert record["probability"] == pytest.approx(probabilities[row, PRED[row]])
        assert record["true probability"] == pytest.approx(probabilities[row, TRUE[row]])
    assert table["probability"].is_monotonic_decreasing
    # Names as labels give the same table.
    by_name = evaluation.misclassified(paths, [NAMES[i] for i in TRUE], probabilities, NAMES)
    pd.testing.assert_frame_equal(by_name, table)


def test_misclassified_empty_when_all_right_and_checks_shapes():
    probabilities = _probabilities(TRUE, 3)
    assert evaluation.misclassified([str(i) for i in TRUE], TRUE, probabilities, NAMES).empty
    with pytest.raises(ValueError):
        evaluation.misclassified(["a.jpg"], TRUE, probabilities, NAMES)
    with pytest.raises(ValueError, match="n_images, n_classes"):
        evaluation.misclassified(["a.jpg"], [0], np.array([0.2, 0.8]), NAMES)


def test_most_confused_pairs_ranks_off_diagonal_counts():
    pairs = evaluation.most_confused_pairs(TRUE, PRED, NAMES, top=5)
    assert list(pairs.columns) == ["true", "predicted", "count", "share of true class"]
    assert pairs.iloc[0].tolist()[:3] == ["homer", "lisa", 2]
    assert pairs.iloc[0]["share of true class"] == pytest.approx(0.5)
    assert len(pairs) == 2  # homer->lisa (2) and bart->homer (1): only pairs that occur
    assert (pairs["true"] != pairs["predicted"]).all()
    assert len(evaluation.most_confused_pairs(TRUE, PRED, NAMES, top=1)) == 1
    with pytest.raises(ValueError, match="top"):
        evaluation.most_confused_pairs(TRUE, PRED, NAMES, top=0)


def test_predicted_ids_argmax_and_shape_check():
    probabilities = _probabilities(PRED, 3, seed=3)
    assert np.array_equal(evaluation.predicted_ids(probabilities), PRED)
    with pytest.raises(ValueError):
        evaluation.predicted_ids(np.zeros(3))


def test_wilson_interval_brackets_the_accuracy_and_narrows_with_more_images():
    import math

    low, high = evaluation.wilson_interval(230, 245)
    assert low < 230 / 245 < high and 0.89 < low and high < 0.97
    wide, narrow = evaluation.wilson_interval(9, 10), evaluation.wilson_interval(900, 1000)
    assert wide[1] - wide[0] > 3 * (narrow[1] - narrow[0])
    assert evaluation.wilson_interval(10, 10)[1] == pytest.approx(1.0) and evaluation.wilson_interval(10, 10)[0] < 1.0
    assert evaluation.wilson_interval(0, 10)[0] == pytest.approx(0.0)
    assert all(math.isnan(v) for v in evaluation.wilson_interval(0, 0))
    for bad in ((11, 10), (-1, 10)):
        with pytest.raises(ValueError, match="correct"):
            evaluation.wilson_interval(*bad)
    with pytest.raises(ValueError, match="confidence"):
        evaluation.wilson_interval(5, 10, confidence=95)


def test_accuracy_row_gives_the_interval_and_the_number_of_images():
    row = evaluation.accuracy_row(["a", "b", "b", "a"], ["a", "b", "a", "a"], ["a", "b"])
    assert row["test accuracy"] == 0.75 and row["test images"] == 4
    assert row["95% low"] < 0.75 < row["95% high"]
