"""Classic ML on feature matrices: pipelines, selection by cross-validation, the results table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from helpers import classic


def _blobs(n_per_class: int = 30, n_classes: int = 3, n_features: int = 12, seed: int = 0, spread: float = 1.0):
    """Gaussian classes around random centres, with string labels like image classes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(n_classes, n_features))
    X = np.concatenate([c + rng.normal(0, spread, size=(n_per_class, n_features)) for c in centres]).astype(np.float32)
    y = np.repeat([f"class_{i}" for i in range(n_classes)], n_per_class)
    order = rng.permutation(len(y))
    return X[order], y[order]


def test_make_pipeline_scales_inside_the_pipeline():
    pipeline = classic.make_pipeline("logistic_regression", C=0.5)
    assert isinstance(pipeline, Pipeline)
    assert isinstance(pipeline.steps[0][1], StandardScaler)
    assert pipeline.get_params()["classifier__C"] == 0.5


@pytest.mark.parametrize("name", sorted(classic.MODEL_TITLES))
def test_every_candidate_fits_and_predicts(name):
    X, y = _blobs(n_per_class=12)
    pipeline = classic.make_pipeline(name, seed=1).fit(X, y)
    assert set(pipeline.predict(X)) <= set(y)
    assert (pipeline.predict(X) == y).mean() > 0.8


def test_make_pipeline_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="unknown model"):
        classic.make_pipeline("deep_magic")
    with pytest.raises(ValueError, match="knn"):
        classic.make_pipeline("knn", not_a_parameter=3)


def test_candidates_cover_the_four_families_with_grids():
    models = classic.candidates(seed=3)
    assert list(models) == ["logistic_regression", "linear_svm", "knn", "extra_trees"]
    for pipeline, grid in models.values():
        assert isinstance(pipeline, Pipeline)
        assert all(key.startswith("classifier__") for key in grid)
        pipeline.set_params(**{key: values[0] for key, values in grid.items()})
    assert models["extra_trees"][0].get_params()["classifier__random_state"] == 3


def test_cv_splitter_adapts_folds_and_rejects_tiny_classes():
    assert classic.cv_splitter(["a"] * 3 + ["b"] * 10, 5).get_n_splits() == 3
    assert classic.cv_splitter(["a"] * 10 + ["b"] * 10, 5).get_n_splits() == 5
    with pytest.raises(ValueError, match="fewer than 2"):
        classic.cv_splitter(["a"] + ["b"] * 10, 5)
    with pytest.raises(ValueError, match="two classes"):
        classic.cv_splitter(["a"] * 10, 5)


def test_select_by_cv_table_and_choice():
    X, y = _blobs(n_per_class=20, spread=2.5)
    selection = classic.select_by_cv(X, y, folds=4, seed=0, verbose=False)
    table = selection.table
    assert list(table["model"]) == list(classic.MODEL_TITLES)
    assert {"cv accuracy", "cv std", "best params", "fit seconds", "search seconds"} <= set(table.columns)
    assert table["cv accuracy"].between(0, 1).all()
    assert selection.folds == 4
    best_row = table.sort_values("cv accuracy", ascending=False).iloc[0]
    assert table.set_index("model").loc[selection.best, "cv accuracy"] == best_row["cv accuracy"]
    assert selection.best_model is selection.models[selection.best]
    # Fitted on all the training data: predicts every training label set.
    assert set(selection.best_model.predict(X)) == set(y)


def test_selection_is_reproducible_with_a_seed():
    X, y = _blobs(n_per_class=15, spread=3.0)
    models = ["logistic_regression", "knn"]
    first = classic.select_by_cv(X, y, classic.candidates(models), seed=7, verbose=False)
    second = classic.select_by_cv(X, y, classic.candidates(models), seed=7, verbose=False)
    pd.testing.assert_series_equal(first.table["cv accuracy"], second.table["cv accuracy"])


def test_the_choice_prefers_cross_validation_over_training_fit():
    """1-NN fits the noisy training set perfectly but generalises worse than logistic regression."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 5)).astype(np.float32)
    y = np.where(X[:, 0] + 0.8 * rng.normal(size=160) > 0, "a", "b")
    models = {
        "logistic_regression": (classic.make_pipeline("logistic_regression", C=1.0), {}),
        "one_nn": (classic.make_pipeline("knn", n_neighbors=1), {}),
    }
    selection = classic.select_by_cv(X, y, models, folds=5, verbose=False)
    assert (selection.models["one_nn"].predict(X) == y).mean() == 1.0
    assert selection.best == "logistic_regression"


def test_test_labels_never_change_the_choice():
    """The choice is made before the test split is seen: swapping test labels changes only the test column."""
    X, y = _blobs(n_per_class=25, spread=2.0, seed=1)
    X_test, y_test = _blobs(n_per_class=10, spread=2.0, seed=1)
    selection = classic.select_by_cv(X, y, classic.candidates(["logistic_regression", "knn"]), verbose=False)
    honest = classic.results_table(selection, X_test, y_test)
    swapped = classic.results_table(selection, X_test, np.random.default_rng(0).permutation(y_test))
    assert selection.best == classic.best_by_cv(selection.table)
    assert honest["chosen"].tolist() == swapped["chosen"].tolist()
    assert honest.loc[honest["chosen"], "model"].item() == selection.best
    pd.testing.assert_series_equal(honest["cv accuracy"], swapped["cv accuracy"])
    assert not np.allclose(honest["test accuracy"], swapped["test accuracy"])


def test_results_table_columns_and_order():
    X, y = _blobs(n_per_class=15)
    selection = classic.select_by_cv(X, y, classic.candidates(["linear_svm", "knn"]), verbose=False)
    table = classic.results_table(selection, X, y)
    assert list(table.columns) == [
        "model", "title", "cv accuracy", "cv std", "test accuracy",
        "fit seconds", "search seconds", "best params", "chosen",
    ]
    assert table["cv accuracy"].is_monotonic_decreasing
    assert table["chosen"].sum() == 1


def test_bad_inputs_say_what_to_fix():
    X, y = _blobs(n_per_class=5)
    with pytest.raises(ValueError, match="2-D"):
        classic.select_by_cv(X[:, 0], y, verbose=False)
    with pytest.raises(ValueError, match="labels"):
        classic.select_by_cv(X, y[:-1], verbose=False)
    with pytest.raises(ValueError, match="at least one model"):
        classic.select_by_cv(X, y, {}, verbose=False)
    with pytest.raises(ValueError, match="no model"):
        classic.best_by_cv(pd.DataFrame(columns=["model", "cv accuracy", "cv std", "fit seconds"]))


def test_group_cross_validation_keeps_each_group_in_one_fold():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 40)
    groups = np.array([f"{label}{i // 5}" for i, label in enumerate(y)])  # 8 blocks of 5 per class
    X = rng.normal(size=(80, 3))
    splitter = classic.cv_splitter(y, 5, seed=0, groups=groups)
    for train, held_out in splitter.split(X, y, groups):
        assert not set(groups[train]) & set(groups[held_out]), "a group must not be on both sides of a fold"
    selection = classic.select_by_cv(
        X, y, {"logreg": (classic.make_pipeline("logistic_regression"), {})}, folds=3, groups=groups, verbose=False
    )
    assert selection.folds == 3
    with pytest.raises(ValueError, match="one group per example"):
        classic.cv_splitter(y, 5, groups=groups[:10])
    with pytest.raises(ValueError, match="two groups per class"):
        classic.cv_splitter(y, 5, groups=y)
