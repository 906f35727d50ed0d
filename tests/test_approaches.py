"""Notebook 04's comparison helpers: raw pixels, from-scratch models, the table, sample efficiency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers import compare
from helpers.settings import PROFILES

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
    features = compare.raw_pixel_features(coloured_images, size=8)
    assert features.shape == (3, 8 * 8 * 3)
    assert features.dtype == np.float32
    assert features.min() >= 0.0 and features.max() <= 1.0


def test_raw_pixel_features_keep_order_and_layout(coloured_images):
    features = compare.raw_pixel_features(coloured_images, size=8)
    pixels = features.reshape(3, 8, 8, 3)
    np.testing.assert_allclose(pixels[0].mean(axis=(0, 1)), [1, 0, 0], atol=0.02)  # red first
    np.testing.assert_allclose(pixels[1].mean(axis=(0, 1)), [0, 1, 0], atol=0.05)  # then green (JPEG)
    # Flattened row by row, channel last: pixel (0, 0) is red, pixel (0, 7) is blue.
    np.testing.assert_allclose(features[2, 0:3], [1, 0, 0], atol=0.02)
    np.testing.assert_allclose(features[2, 7 * 3 : 8 * 3], [0, 0, 1], atol=0.02)
    reversed_ = compare.raw_pixel_features(coloured_images[::-1], size=8)
    np.testing.assert_array_equal(reversed_, features[::-1])
    frame = pd.DataFrame({"path": coloured_images, "label": ["a", "b", "c"]})
    np.testing.assert_array_equal(compare.raw_pixel_features(frame, size=8), features)


def test_raw_pixel_features_reject_bad_input(coloured_images):
    with pytest.raises(TypeError, match="list of image paths"):
        compare.raw_pixel_features(coloured_images[0], size=8)
    with pytest.raises(ValueError, match="positive"):
        compare.raw_pixel_features(coloured_images, size=0)
    with pytest.raises(ValueError, match="'path' column"):
        compare.raw_pixel_features(pd.DataFrame({"file": coloured_images}), size=8)


# --------------------------------------------------------------------------- models


def _conv_bn_parameters(filters, channels=3):
    """Trainable parameters of the small CNN, from its architecture: 3x3 convs without bias, BN gamma/beta."""
    total, previous = 0, channels
    for count in filters:
        total += 3 * 3 * previous * count + 2 * count
        previous = count
    return total, previous


@pytest.mark.parametrize("filters,classes", [((16, 32, 64), 2), ((8, 8), 3)])
def test_small_cnn_parameter_count_and_structure(filters, classes):
    import keras

    model = compare.build_small_cnn(32, classes, filters=filters)
    assert model.output_shape == (None, classes)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == list(filters)
    conv_bn, last = _conv_bn_parameters(filters)
    expected = conv_bn + last * classes + classes
    assert compare.count_trainable_parameters(model) == expected
    # Only the BatchNorm moving statistics are not trained.
    assert model.count_params() - expected == 2 * sum(filters)


def test_small_cnn_trains_one_step():
    from helpers import training

    model = training.compile_model(compare.build_small_cnn(32, 2, filters=(4, 8)), 1e-2)
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1] * 4)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(images, labels)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    assert np.isfinite(loss)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_small_cnn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        compare.build_small_cnn(32, 1)
    with pytest.raises(ValueError, match="too small"):
        compare.build_small_cnn(4, 2, filters=(8, 8, 8))
    with pytest.raises(ValueError, match="dropout"):
        compare.build_small_cnn(32, 2, dropout=1.0)


@pytest.fixture(scope="module")
def scratch_settings(tmp_path_factory):
    """MobileNet alpha 0.75 settings; no weight file is needed for random weights."""
    from helpers.settings import load_settings

    cache = tmp_path_factory.mktemp("scratch")
    return load_settings({"backbone": "mobilenet", "alpha": 0.75, "cache_dir": str(cache), "profile": "smoke"}, environ={})


def test_scratch_backbone_is_random_fully_trainable_and_trains(scratch_settings, monkeypatch):
    import keras

    from helpers import backbones, device

    calls = []
    original = backbones.load_base

    def recording_load_base(settings, **kwargs):
        calls.append(kwargs)
        return original(settings, **kwargs)

    monkeypatch.setattr(backbones, "load_base", recording_load_base)
    keras.utils.set_random_seed(1)
    model = compare.build_scratch_backbone(scratch_settings, 2, image_size=32)
    assert [call["weights"] for call in calls] == [None], "the reset net must be built with random weights"
    assert model.output_shape == (None, 2)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.trainable and layer.momentum == compare.SCRATCH_BN_MOMENTUM for layer in norms)
    # Every weight is trained except the BatchNorm moving statistics (mean and variance: 2 per channel).
    moving = sum(2 * int(layer.moving_mean.shape[0]) for layer in norms)
    assert compare.count_trainable_parameters(model) == model.count_params() - moving
    # The backbone's own architecture: its table's blocks are all there.
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    table = backbones.get_backbone(settings=scratch_settings)
    assert len(backbones.blocks(base, table)) == len(table.block_ends)

    # One eager training step (tracing a Keras train function for MobileNet takes tens of seconds on 2 cores).
    tf = device.import_tensorflow()
    images = np.random.default_rng(0).uniform(-1, 1, size=(4, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1, 0, 1])
    before = [w.copy() for w in model.get_weights()]
    optimizer = keras.optimizers.Adam(1e-3)
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(labels, model(images, training=True))
    gradients = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in gradients), "every trainable weight must get a gradient"
    optimizer.apply_gradients(zip(gradients, model.trainable_weights))
    assert np.isfinite(float(loss))
    changed = [not np.allclose(a, b) for a, b in zip(before, model.get_weights())]
    assert changed[0] and changed[-1], "the first convolution and the head must both learn"


def test_scratch_image_size_follows_the_profile(scratch_settings):
    for profile, run in PROFILES.items():
        expected = run.scratch_image_size or 224
        assert compare.scratch_image_size(scratch_settings.replace(profile=profile)) == expected


def test_raw_pixel_models_exist_in_classic():
    from helpers import classic

    assert compare.RAW_PIXEL_MODELS[0] == "logistic_regression"
    assert set(compare.RAW_PIXEL_MODELS) <= set(classic.MODEL_TITLES)


def test_count_trainable_parameters_of_sklearn_models():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 5))
    y2, y3 = np.arange(30) % 2, np.arange(30) % 3
    assert compare.count_trainable_parameters(LogisticRegression().fit(X, y2)) == 5 + 1
    assert compare.count_trainable_parameters(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y3)) == 3 * 5 + 3
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y2)
    nodes = sum(tree.tree_.node_count for tree in forest.estimators_)
    assert 0 < compare.count_trainable_parameters(forest) <= nodes * 2
    with pytest.raises(TypeError, match="cannot count"):
        compare.count_trainable_parameters(object())


# --------------------------------------------------------------------------- the table


def _result(name, y_true, y_pred, seconds=1.0, params=10, family="raw pixels"):
    return compare.ApproachResult(name, family, np.asarray(y_true), np.asarray(y_pred), ["a", "b"], seconds, params)


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
    table = compare.comparison_table(results)
    assert tuple(table.columns) == compare.TABLE_COLUMNS
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
    table = compare.comparison_table([_result("worse", y, [0, 1, 1, 0]), _result("better", y, [0, 0, 1, 1])])
    assert list(table["approach"]) == ["better", "worse"]


def test_comparison_table_rejects_bad_results():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="no results"):
        compare.comparison_table([])
    with pytest.raises(ValueError, match="unique"):
        compare.comparison_table([_result("x", y, y), _result("x", y, y)])
    with pytest.raises(ValueError, match="same split"):
        compare.comparison_table([_result("x", y, y), _result("y", y[::-1], y)])
    with pytest.raises(ValueError, match="predictions"):
        _result("short", y, y[:3])
    with pytest.raises(ValueError, match="family"):
        _result("odd", y, y, family="magic")


def test_majority_baseline():
    result = compare.majority_baseline([1, 1, 0], [0, 1, 1, 1], ["a", "b"])
    np.testing.assert_array_equal(result.y_pred, [1, 1, 1, 1])
    assert result.accuracy == 0.75 and result.balanced_accuracy == 0.5


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
    chosen = compare.subsample_per_class(labels, 2, seed=0)
    assert np.bincount(labels[chosen]).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(chosen, compare.subsample_per_class(labels, 2, seed=0))
    assert any(not np.array_equal(chosen, compare.subsample_per_class(labels, 2, seed=s)) for s in range(1, 6))
    with pytest.raises(ValueError, match="fewer than 4"):
        compare.subsample_per_class(labels, 4, seed=0)
    assert compare.usable_sample_sizes(labels, [1, 3, 4, 10]) == [1, 3]


def test_sample_efficiency_runs_every_size_seed_and_learner_on_the_same_subsets():
    from sklearn.linear_model import LogisticRegression

    X_train, y_train = _blobs(20, seed=0)
    X_test, y_test = _blobs(10, seed=1)
    seen: dict[str, list[tuple[int, ...]]] = {"informative": [], "noise only": []}

    def recording(name, columns):
        fit = compare.sklearn_learner(lambda: LogisticRegression())

        def fit_predict(x_train, y_fit, x_test, seed):
            seen[name].append(tuple(x_train[:, -1].astype(int)))  # last column: row id
            return fit(x_train[:, columns], y_fit, x_test[:, columns], seed)

        return fit_predict

    ids_train = np.c_[X_train, np.arange(len(X_train))]
    ids_test = np.c_[X_test, np.arange(len(X_test))]
    learners = {
        "informative": compare.Learner(ids_train, ids_test, recording("informative", [0])),
        "noise only": compare.Learner(ids_train, ids_test, recording("noise only", [1, 2, 3])),
    }
    runs = compare.sample_efficiency(learners, y_train, y_test, sizes=[2, 5, 50], seeds=3)
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

    summary = compare.summarize_sample_efficiency(runs)
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
    learners = {"lr": compare.Learner(X_train, X_test, compare.sklearn_learner(lambda: LogisticRegression()))}
    first = compare.sample_efficiency(learners, y_train, y_test, sizes=[3, 6], seeds=[7])
    again = compare.sample_efficiency(learners, y_train, y_test, sizes=[3, 6], seeds=[7])
    pd.testing.assert_frame_equal(first.drop(columns="train_seconds"), again.drop(columns="train_seconds"))
    summary = compare.summarize_sample_efficiency(first)
    assert (summary["std"] == 0).all() and (summary["runs"] == 1).all()


def test_sample_efficiency_rejects_bad_input():
    X, y = _blobs(4, seed=0)
    ok = compare.Learner(X, X, lambda a, b, c, s: np.zeros(len(c)))
    with pytest.raises(ValueError, match="no learners"):
        compare.sample_efficiency({}, y, y, [2], 1)
    with pytest.raises(ValueError, match="none of the sizes"):
        compare.sample_efficiency({"ok": ok}, y, y, [10], 1)
    with pytest.raises(ValueError, match="rows"):
        compare.sample_efficiency({"bad": compare.Learner(X[:3], X, ok.fit_predict)}, y, y, [2], 1)
    with pytest.raises(ValueError, match="seeds"):
        compare.sample_efficiency({"ok": ok}, y, y, [2], [])


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
        return compare.keras_learner(build, epochs=3, batch_size=8, learning_rate=0.05)

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


# --------------------------------------------------------------------------- integration (real PACS images)


@pytest.mark.integration
def test_comparison_on_pacs_images(real_weights, shared_data):
    """The runner on the smoke profile's PACS images: one split, every approach scored on the same test images."""
    from helpers import datasets

    settings = real_weights
    frame = datasets.load_dataset("photo_vs_drawing", settings, download_ok=False)
    split = compare.shared_split(frame, settings)
    assert set(split.class_names) == {"drawing", "photo"}
    train, test = split.rows("train"), split.rows("test")
    assert not set(train) & set(test)
    assert np.bincount(split.labels("test")).min() >= 1

    comparison = compare.run_comparison(
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
    # The transfer run's features are the deep features: the pretrained base, avg-pooled, any route.
    assert comparison.features.shape == (len(split.frame), 768)
    direct = compare.deep_features(split, settings, progress=False)
    np.testing.assert_allclose(comparison.features, direct, rtol=1e-3, atol=1e-4)
    # Phase 2 trains the head again plus the last block: more parameters than phase 1.
    head_only, fine_tuned = comparison.results[:2]
    assert fine_tuned.trained_parameters > head_only.trained_parameters > 0
    # Raw pixels of the real images: 32x32x3 numbers in [0, 1], one row per image of the split.
    assert comparison.pixels.shape == (len(split.frame), 3072)
    assert 0.0 <= comparison.pixels.min() and comparison.pixels.max() <= 1.0

    learners = compare.sample_efficiency_learners(split, settings, features=comparison.features, pixels=comparison.pixels)
    runs = compare.sample_efficiency(
        learners, split.labels("train"), split.labels("test"), settings.run.sample_sizes, 2, base_seed=settings.seed
    )
    assert set(runs["approach"]) == set(learners)
    assert len(runs) == len(learners) * len(compare.usable_sample_sizes(split.labels("train"), settings.run.sample_sizes)) * 2
