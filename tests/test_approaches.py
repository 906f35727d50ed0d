"""Notebook 04's approaches (helpers.approaches): raw pixels, parameter counts, the comparison table, the whole run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import approaches, freezing, sample_efficiency
from helpers.settings import load_settings

SETTINGS = load_settings({"profile": "smoke"}, environ={})

# --------------------------------------------------------------------------- raw pixels


def _save(path, array):
    from PIL import Image

    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture()
def coloured_images(tmp_path):
    """Three generated images: solid red (PNG, 20 px), solid green (JPEG, 40x30), left-red/right-blue (PNG)."""
    red = np.zeros((20, 20, 3)) + [255, 0, 0]
    green = np.zeros((30, 40, 3)) + [0, 255, 0]
    halves = np.zeros((16, 16, 3))
    halves[:, :8] = [255, 0, 0]
    halves[:, 8:] = [0, 0, 255]
    return [
        _save(tmp_path / "red.png", red),
        _save(tmp_path / "green.jpg", green),
        _save(tmp_path / "halves.png", halves),
    ]


def test_raw_pixel_features_shape_dtype_range(coloured_images):
    features = approaches.raw_pixel_features(coloured_images, size=8, settings=SETTINGS)
    assert features.shape == (3, 8 * 8 * 3)
    assert features.dtype == np.float32
    assert features.min() >= 0.0 and features.max() <= 1.0


def test_raw_pixel_features_keep_order_and_layout(coloured_images):
    features = approaches.raw_pixel_features(coloured_images, size=8, settings=SETTINGS)
    pixels = features.reshape(3, 8, 8, 3)
    np.testing.assert_allclose(pixels[0].mean(axis=(0, 1)), [1, 0, 0], atol=0.02)  # red first
    np.testing.assert_allclose(pixels[1].mean(axis=(0, 1)), [0, 1, 0], atol=0.05)  # then green (JPEG)
    # Flattened row by row, channel last: pixel (0, 0) is red, pixel (0, 7) is blue.
    np.testing.assert_allclose(features[2, 0:3], [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(features[2, 7 * 3 : 8 * 3], [0, 0, 1], atol=0.02)
    reversed_ = approaches.raw_pixel_features(coloured_images[::-1], size=8, settings=SETTINGS)
    np.testing.assert_array_equal(reversed_, features[::-1])
    frame = pd.DataFrame({"path": coloured_images, "label": ["a", "b", "c"]})
    np.testing.assert_array_equal(approaches.raw_pixel_features(frame, size=8, settings=SETTINGS), features)


def test_raw_pixel_features_reject_bad_input(coloured_images):
    with pytest.raises(TypeError, match="not one path"):
        approaches.raw_pixel_features(coloured_images[0], size=8, settings=SETTINGS)
    with pytest.raises(ValueError, match="positive"):
        approaches.raw_pixel_features(coloured_images, size=0, settings=SETTINGS)
    with pytest.raises(ValueError, match="'path' column"):
        approaches.raw_pixel_features(pd.DataFrame({"file": coloured_images}), size=8, settings=SETTINGS)
    with pytest.raises(TypeError, match="settings"):
        approaches.raw_pixel_features(coloured_images, size=8)  # notebook 04's exercise signature: not the kit's


# --------------------------------------------------------------------------- models


def test_raw_pixel_models_exist_in_classic():
    from helpers import classic

    assert approaches.RAW_PIXEL_MODELS[0] == "logistic_regression"
    assert set(approaches.RAW_PIXEL_MODELS) <= set(classic.MODEL_TITLES)


def test_count_trainable_parameters_of_sklearn_models():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    y2, y3 = np.arange(30) % 2, np.arange(30) % 3
    assert freezing.count_trainable_parameters(LogisticRegression().fit(X, y2)) == 5 + 1
    assert freezing.count_trainable_parameters(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y3)) == 3 * 5 + 3
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y2)
    nodes = sum(tree.tree_.node_count for tree in forest.estimators_)
    assert 0 < freezing.count_trainable_parameters(forest) <= nodes * 2
    with pytest.raises(TypeError, match="cannot count"):
        freezing.count_trainable_parameters(object())


# --------------------------------------------------------------------------- the table


def _result(name, y_true, y_pred, seconds=1.0, params=10, family="raw pixels"):
    return approaches.ApproachResult(name, family, np.asarray(y_true), np.asarray(y_pred), ["a", "b"], seconds, params)


def test_balanced_accuracy_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    from helpers import evaluation

    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    assert evaluation.balanced_accuracy(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    names = ["a", "b", "c"]
    as_names = evaluation.balanced_accuracy([names[i] for i in y_true], [names[i] for i in y_pred], names)
    assert as_names == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert np.isnan(evaluation.balanced_accuracy([], []))


def test_comparison_table_columns_values_and_ranking():
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    # Imbalanced test set: 8 of class 0, 2 of class 1.
    y = np.array([0] * 8 + [1] * 2)
    results = [
        _result("always a", y, np.zeros(10)),  # accuracy 0.8, balanced 0.5
        _result("balanced", y, [0] * 6 + [1] * 2 + [1] * 2, seconds=5.0),  # accuracy 0.8, balanced 0.875
        _result("slow twin", y, [0] * 7 + [1] + [1, 0], seconds=9.0),  # accuracy 0.8, balanced 0.6875
        _result("fast twin", y, [0] * 7 + [1] + [1, 0], seconds=2.0, params=1000),
    ]
    table = approaches.comparison_table(results)
    assert tuple(table.columns) == approaches.TABLE_COLUMNS
    assert list(table["rank"]) == [1, 2, 3, 4]
    # Balanced accuracy first (accuracy is tied), then training time breaks the tie between the twins.
    assert list(table["approach"]) == ["balanced", "fast twin", "slow twin", "always a"]
    for _, row in table.iterrows():
        source = next(r for r in results if r.approach == row["approach"])
        assert row["accuracy"] == pytest.approx(accuracy_score(source.y_true, source.y_pred))
        assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(source.y_true, source.y_pred))
        assert row["train_seconds"] == source.train_seconds
        assert row["trained_parameters"] == source.trained_parameters


def test_comparison_table_accuracy_decides_when_balanced_ties():
    y = np.array([0, 0, 1, 1])
    table = approaches.comparison_table([_result("worse", y, [0, 1, 1, 0]), _result("better", y, [0, 0, 1, 1])])
    assert list(table["approach"]) == ["better", "worse"]


def test_comparison_table_rejects_bad_results():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="no results"):
        approaches.comparison_table([])
    with pytest.raises(ValueError, match="unique"):
        approaches.comparison_table([_result("x", y, y), _result("x", y, y)])
    with pytest.raises(ValueError, match="same split"):
        approaches.comparison_table([_result("x", y, y), _result("y", y[::-1], y)])
    with pytest.raises(ValueError, match="predictions"):
        _result("short", y, y[:3])
    with pytest.raises(ValueError, match="family"):
        _result("odd", y, y, family="magic")


def test_majority_baseline():
    result = approaches.majority_baseline([1, 1, 0], [0, 1, 1, 1], ["a", "b"])
    np.testing.assert_array_equal(result.y_pred, [1, 1, 1, 1])
    assert result.accuracy == 0.75 and result.balanced_accuracy == 0.5


# --------------------------------------------------------------------------- the notebook's own models and answers


def _toy_split() -> approaches.SharedSplit:
    frame = pd.DataFrame({
        "path": [f"/img/{i}.png" for i in range(8)],
        "label": ["drawing", "photo"] * 4,
        "split": ["train", "train", "train", "train", "validation", "validation", "test", "test"],
    })
    return approaches.SharedSplit(frame, ["drawing", "photo"])


def test_keras_result_scores_a_model_the_notebook_trained():
    import keras

    split = _toy_split()
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.layers[-1].set_weights([np.array([[5.0, -5.0], [-5.0, 5.0]]), np.zeros(2)])  # class = larger input
    history = {"loss": [0.9, 0.5], "accuracy": [0.5, 1.0], "val_loss": [0.8, 0.6], "val_accuracy": [0.5, 1.0]}
    result = approaches.keras_result(
        "toy", "transfer learning", model, np.array([[1.0, 0.0], [0.0, 1.0]]), split, seconds=1.5, history=history,
        phase="phase 1: head",
    )
    np.testing.assert_array_equal(result.y_true, [0, 1])
    np.testing.assert_array_equal(result.y_pred, [0, 1])
    assert result.accuracy == 1.0 and result.train_seconds == 1.5 and result.trained_parameters == 6
    assert result.test_paths == ["/img/6.png", "/img/7.png"] and result.probabilities.shape == (2, 2)
    assert list(result.history["phase"]) == ["phase 1: head"] * 2 and list(result.history["epoch"]) == [1, 2]
    assert approaches.keras_result("toy", "transfer learning", model, np.eye(2), split, seconds=0,
                                   trained_parameters=3).trained_parameters == 3
    with pytest.raises(ValueError, match="one softmax row per test image"):
        approaches.keras_result("toy", "transfer learning", model, np.eye(2)[:1], split, seconds=0)


def test_use_answer_returns_the_value_or_says_which_exercise_to_fix(capsys):
    assert approaches.use_answer("Exercise 1 (double)", lambda x: 2 * x, 4, instead="nothing") == 8
    assert capsys.readouterr().out == ""

    def unfinished(x):
        raise NotImplementedError()

    assert approaches.use_answer("Exercise 2 (raw_pixels)", unfinished, 1, instead="the raw pixels are left out") is None
    said = capsys.readouterr().out
    assert said.startswith("Exercise 2 (raw_pixels) does not work yet (NotImplementedError)")
    assert "the raw pixels are left out" in said and "test cell passes" in said

    def refuse(value):
        raise ValueError("it returned 3 rows, not 4")

    assert approaches.use_answer("Exercise 3", lambda: 3, instead="skipped", check=refuse) is None
    assert "it returned 3 rows, not 4" in capsys.readouterr().out


def test_classifier_check_names_what_is_wrong():
    import keras

    check = approaches.classifier_check((8, 8, 3), 2)
    inputs = keras.Input((8, 8, 3))
    good = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    check(good)
    with pytest.raises(ValueError, match="not a keras.Model"):
        check("a model")
    wrong = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match=r"expected \(8, 8, 3\) images to 2 class probabilities"):
        check(wrong)


# --------------------------------------------------------------------------- integration (real PACS images)


@pytest.mark.integration
def test_comparison_on_pacs_images(real_weights, shared_data):
    """The runner on the smoke profile's PACS images: one split, every approach scored on the same test images."""
    from helpers import datasets

    settings = real_weights
    frame = datasets.load_dataset("photo_vs_drawing", settings, download_ok=False)
    split = approaches.shared_split(frame, settings)
    assert set(split.class_names) == {"drawing", "photo"}
    train, test = split.rows("train"), split.rows("test")
    assert not set(train) & set(test)
    assert np.bincount(split.labels("test")).min() >= 1

    comparison = approaches.run_comparison(
        split, settings, approaches=("transfer", "small_cnn", "raw_pixels", "deep_features", "baseline")
    )
    families = [result.family for result in comparison.results]
    assert families.count("transfer learning") == 2 and families.count("raw pixels") == 2
    for result in comparison.results:
        np.testing.assert_array_equal(result.y_true, split.labels("test"))
        if result.family != "baseline":
            assert result.probabilities.shape == (len(test), 2)
            assert result.test_paths == list(split.test["path"])
    table = comparison.table()
    assert len(table) == len(comparison.results) and table["accuracy"].between(0, 1).all()
    assert comparison.result("majority class").accuracy == pytest.approx(0.5)  # the split is balanced
    # The transfer run's features are the deep features: the pretrained base, avg-pooled, any route
    # (the transfer run pools feature maps cached in float16: about 3 significant digits).
    assert comparison.features.shape == (len(split.frame), 768)
    direct = approaches.deep_features(split, settings, progress=False)
    np.testing.assert_allclose(comparison.features, direct, rtol=1e-2, atol=2e-3)
    # Phase 2 trains the head again plus the last block: more parameters than phase 1.
    head_only, fine_tuned = comparison.results[:2]
    assert fine_tuned.trained_parameters > head_only.trained_parameters > 0
    # Raw pixels of the real images: 32x32x3 numbers in [0, 1], one row per image of the split.
    assert comparison.pixels.shape == (len(split.frame), 3072)
    assert 0.0 <= comparison.pixels.min() and comparison.pixels.max() <= 1.0

    learners = sample_efficiency.sample_efficiency_learners(split, settings, features=comparison.features, pixels=comparison.pixels)
    runs = sample_efficiency.sample_efficiency(
        learners, split.labels("train"), split.labels("test"), settings.scale.sample_sizes, 2, base_seed=settings.seed
    )
    assert set(runs["approach"]) == set(learners)
    assert len(runs) == len(learners) * len(sample_efficiency.usable_sample_sizes(split.labels("train"), settings.scale.sample_sizes)) * 2
