"""The sample-efficiency experiment (helpers.sample_efficiency): subsets per class, learners, the summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import sample_efficiency

# --------------------------------------------------------------------------- sample efficiency


def _blobs(per_class, seed):
    """Two classes: feature 0 separates them, the other 7 are noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], per_class)
    X = rng.normal(size=(len(y), 8))
    X[:, 0] += 3.0 * (2 * y - 1)
    return X, y


def test_subsample_per_class():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 4)
    chosen = sample_efficiency.subsample_per_class(labels, 2, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(chosen, sample_efficiency.subsample_per_class(labels, 2, seed=0))
    assert any(not np.array_equal(chosen, sample_efficiency.subsample_per_class(labels, 2, seed=s)) for s in range(1, 6))
    with pytest.raises(ValueError, match="fewer than 4"):
        sample_efficiency.subsample_per_class(labels, 4, seed=0)
    assert sample_efficiency.usable_sample_sizes(labels, [1, 3, 4, 10]) == [1, 3]


def test_sample_efficiency_runs_every_size_seed_and_learner_on_the_same_subsets():
    from sklearn.linear_model import LogisticRegression

    X_train, y_train = _blobs(20, seed=0)
    X_test, y_test = _blobs(10, seed=1)
    seen: dict[str, list[tuple[int, ...]]] = {"informative": [], "noise only": []}

    def recording(name, columns):
        fit = sample_efficiency.sklearn_learner(lambda: LogisticRegression())

        def fit_predict(x_train, y_fit, x_test, seed):
            seen[name].append(tuple(x_train[:, -1].astype(int)))  # last column: row id
            return fit(x_train[:, columns], y_fit, x_test[:, columns], seed)

        return fit_predict

    ids_train = np.c_[X_train, np.arange(len(X_train))]
    ids_test = np.c_[X_test, np.arange(len(X_test))]
    learners = {
        "informative": sample_efficiency.Learner(ids_train, ids_test, recording("informative", [0])),
        "noise only": sample_efficiency.Learner(ids_train, ids_test, recording("noise only", [1, 2, 3])),
    }
    runs = sample_efficiency.sample_efficiency(learners, y_train, y_test, sizes=[2, 5, 50], seeds=3)
    assert list(runs.columns) == ["approach", "per_class", "seed", "accuracy", "balanced_accuracy", "train_seconds"]
    assert len(runs) == 2 * 3 * 2  # 50 per class is skipped: the pool has 20
    assert sorted(runs["per_class"].unique()) == [2, 5]
    assert sorted(runs["seed"].unique()) == [0, 1, 2]
    # Both learners saw exactly the same training images for each (size, seed), n per class.
    assert seen["informative"] == seen["noise only"]
    assert len(set(seen["informative"])) == 6
    for ids in seen["informative"]:
        assert np.bincount(y_train[list(ids)]).tolist() in ([2, 2], [5, 5])
    assert runs.loc[runs["approach"] == "informative", "accuracy"].mean() > 0.9

    summary = sample_efficiency.summarize_sample_efficiency(runs)
    assert list(summary.columns) == ["approach", "per_class", "mean", "std", "sem", "runs"]
    assert list(summary["approach"]) == ["informative"] * 2 + ["noise only"] * 2
    for _, row in summary.iterrows():
        values = runs[(runs["approach"] == row["approach"]) & (runs["per_class"] == row["per_class"])]["accuracy"]
        assert row["runs"] == 3
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
        assert row["sem"] == pytest.approx(np.std(values, ddof=1) / np.sqrt(3))


def test_sample_efficiency_is_reproducible_and_single_seed_has_zero_spread():
    from sklearn.linear_model import LogisticRegression

    X_train, y_train = _blobs(12, seed=2)
    X_test, y_test = _blobs(6, seed=3)
    learners = {"lr": sample_efficiency.Learner(X_train, X_test, sample_efficiency.sklearn_learner(lambda: LogisticRegression()))}
    first = sample_efficiency.sample_efficiency(learners, y_train, y_test, sizes=[3, 6], seeds=[7])
    again = sample_efficiency.sample_efficiency(learners, y_train, y_test, sizes=[3, 6], seeds=[7])
    pd.testing.assert_frame_equal(first.drop(columns="train_seconds"), again.drop(columns="train_seconds"))
    summary = sample_efficiency.summarize_sample_efficiency(first)
    assert (summary["std"] == 0).all() and (summary["runs"] == 1).all()


def test_sample_efficiency_rejects_bad_input():
    X, y = _blobs(4, seed=0)
    ok = sample_efficiency.Learner(X, X, lambda a, b, c, s: np.zeros(len(c)))
    with pytest.raises(ValueError, match="no learners"):
        sample_efficiency.sample_efficiency({}, y, y, [2], 1)
    with pytest.raises(ValueError, match="none of the sizes"):
        sample_efficiency.sample_efficiency({"ok": ok}, y, y, [10], 1)
    with pytest.raises(ValueError, match="rows"):
        sample_efficiency.sample_efficiency({"bad": sample_efficiency.Learner(X[:3], X, ok.fit_predict)}, y, y, [2], 1)
    with pytest.raises(ValueError, match="seeds"):
        sample_efficiency.sample_efficiency({"ok": ok}, y, y, [2], [])


def test_keras_learner_restarts_from_the_seeds_weights_every_call():
    # Random labels: what the model predicts depends on its weights, not on an easy boundary.
    rng = np.random.default_rng(3)
    X_train, y_train = rng.normal(size=(20, 8)), rng.integers(0, 2, 20)
    build_count = []

    def build():
        import keras

        build_count.append(1)
        inputs = keras.Input((8,))
        hidden = keras.layers.Dropout(0.3)(keras.layers.Dense(4, activation="relu")(inputs))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))

    def learner():
        return sample_efficiency.keras_learner(build, epochs=3, batch_size=8, learning_rate=0.05)

    fit_predict = learner()
    first = fit_predict(X_train, y_train, X_train, 0)
    assert first.shape == (20,) and set(first) <= {0, 1}
    fit_predict(X_train[:6], y_train[:6], X_train, 1)  # trains the kept model further...
    again = fit_predict(X_train, y_train, X_train, 0)  # ...yet seed 0 starts over from its own weights
    np.testing.assert_array_equal(first, again)
    other_seed = fit_predict(X_train, y_train, X_train, 5)
    assert not np.array_equal(first, other_seed), "another seed must start from other weights"
    np.testing.assert_array_equal(learner()(X_train[:6], y_train[:6], X_train, 1), fit_predict(X_train[:6], y_train[:6], X_train, 1))
    assert len(build_count) == 6  # fresh initial weights on every call
