"""Retraining (helpers.heads, freezing, compiling, callbacks, retraining, saved_models): the head, freezing per
phase, fast paths equal to plain Keras, the assembled model, saved models.

Unit tests build tiny models; structure checks use ResNet50 with ``weights=None`` at
64 px; the equivalence checks use the real MobileNet alpha 0.75 ImageNet weights on a
few real Simpsons frames (skipped where ../shared/data is absent).
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import backbones, callbacks, compiling, features, freezing, heads, pipeline, retraining, saved_models

TOLERANCE = 1e-4
ROOT = Path(__file__).resolve().parents[1]


def _weight_paths(weights) -> set[str]:
    return {weight.path for weight in weights}


def _expected_trainable(base, head, backbone, n_blocks: int) -> set[str]:
    """What phase 2 must train: every non-BatchNorm weight of the last blocks, and the head."""
    import keras

    names = {name for block in backbones.blocks(base, backbone)[-n_blocks:] for name in block}
    wanted = set()
    for layer in base.layers:
        if layer.name in names and not isinstance(layer, keras.layers.BatchNormalization):
            wanted |= _weight_paths(layer.weights)
    return wanted | _weight_paths(head.weights)


def _batchnorm_statistics(model) -> dict[str, np.ndarray]:
    import keras

    stats = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            stats[f"{layer.name}/mean"] = layer.moving_mean.numpy().copy()
            stats[f"{layer.name}/variance"] = layer.moving_variance.numpy().copy()
    return stats


# --------------------------------------------------------------------------- the head


@pytest.mark.parametrize(
    ("pooling", "layer_type", "inputs_per_class"),
    [("avg", "GlobalAveragePooling2D", 8), ("max", "GlobalMaxPooling2D", 8), ("flatten", "Flatten", 3 * 2 * 8)],
)
def test_build_head_pooling_dropout_softmax(pooling, layer_type, inputs_per_class):
    head = heads.build_head((3, 2, 8), 4, pooling=pooling, dropout=0.3, seed=1)
    kinds = [type(layer).__name__ for layer in head.layers]
    assert kinds == ["InputLayer", layer_type, "Dropout", "Dense"]
    assert head.get_layer("head_dropout").rate == pytest.approx(0.3)
    dense = head.get_layer("head_predictions")
    assert dense.kernel.shape == (inputs_per_class, 4)
    assert head.output_shape == (None, 4)
    assert heads.head_pooling(head) == pooling
    probabilities = np.asarray(head(np.random.default_rng(0).normal(size=(5, 3, 2, 8)).astype("float32")))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6) and (probabilities >= 0).all()


def test_build_head_regularizers():
    import keras

    assert heads.build_head((2, 2, 4), 3).get_layer("head_predictions").kernel_regularizer is None
    l1 = heads.build_head((2, 2, 4), 3, l1=0.01).get_layer("head_predictions").kernel_regularizer
    l2 = heads.build_head((2, 2, 4), 3, l2=0.02).get_layer("head_predictions").kernel_regularizer
    both = heads.build_head((2, 2, 4), 3, l1=0.01, l2=0.02).get_layer("head_predictions").kernel_regularizer
    assert isinstance(l1, keras.regularizers.L1) and float(l1.l1) == pytest.approx(0.01)
    assert isinstance(l2, keras.regularizers.L2) and float(l2.l2) == pytest.approx(0.02)
    assert isinstance(both, keras.regularizers.L1L2)
    assert float(both.l1) == pytest.approx(0.01) and float(both.l2) == pytest.approx(0.02)
    head = heads.build_head((2, 2, 4), 3, l2=0.5)
    head(np.ones((1, 2, 2, 4), "float32"))
    assert len(head.losses) == 1 and float(head.losses[0]) > 0  # the penalty reaches the loss


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (((7, 768), 3), {}, "3-D shape"),
        (((7, 7, 768), 1), {}, "n_classes"),
        (((7, 7, 768), 3), {"pooling": "mean"}, "pooling"),
        (((7, 7, 768), 3), {"dropout": 1.0}, "dropout"),
        (((7, 7, 768), 3), {"l2": -0.1}, "l2"),
    ],
)
def test_build_head_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        heads.build_head(*args, **kwargs)


def test_head_after_pooling_shares_the_head_weights():
    head = heads.build_head((3, 3, 6), 3, seed=2)
    top = heads.head_after_pooling(head)
    maps = np.random.default_rng(1).normal(size=(4, 3, 3, 6)).astype("float32")
    assert np.allclose(np.asarray(top(maps.mean(axis=(1, 2)))), np.asarray(head(maps)), atol=1e-6)
    dense = head.get_layer("head_predictions")
    dense.kernel.assign(np.zeros(dense.kernel.shape, "float32"))
    assert np.allclose(np.asarray(top(maps.mean(axis=(1, 2)))), 1 / 3, atol=1e-6)  # same variable


def test_flipped_model_sees_left_right_flipped_images():
    import keras

    inputs = keras.Input((4, 6, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs), name="tiny")
    flipped = heads.flipped(model)
    images = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype("float32")
    assert flipped.name == "tiny_flipped"
    assert np.allclose(np.asarray(flipped(images)), np.asarray(model(images[:, :, ::-1])), atol=1e-6)
    assert not np.allclose(np.asarray(flipped(images)), np.asarray(model(images)), atol=1e-3)


def _tiny_classifier(size: int, classes: int):
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x), name="tiny_classifier")


def _split_frame(folder: Path, names: list[str]) -> pd.DataFrame:
    from PIL import Image

    rows = []
    for index, split in enumerate(["train", "train", "validation", "test", "test"]):
        label = names[index % len(names)]
        path = folder / f"{label}_{index}.png"
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(path)
        rows.append({"path": str(path), "label": label, "split": split})
    return pd.DataFrame(rows)


def test_save_model_then_load_model_checks_it_fits_the_data(kit_settings, tmp_path):
    import keras

    settings = kit_settings.replace(cache_dir=tmp_path / "cache")
    size = backbones.input_size(settings)
    names = ["bart", "homer"]
    frame = _split_frame(tmp_path, names)
    model = _tiny_classifier(size, 2)
    path = saved_models.save_model(model, settings, frame, names, name="tiny", results={"test accuracy": 0.75})
    assert path == saved_models.saved_model_path(settings, "tiny") and path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.json", "tiny.keras"], "no partial file left behind"
    reloaded, info = saved_models.load_model(settings, frame, names, name="tiny")
    images = np.random.default_rng(0).uniform(-1, 1, size=(3, size, size, 3)).astype("float32")
    assert np.allclose(np.asarray(reloaded(images)), np.asarray(model(images)), atol=1e-6)
    assert info["results"] == {"test accuracy": 0.75} and info["class_names"] == names

    with pytest.raises(saved_models.SavedModelMismatch, match="class_names"):
        saved_models.load_model(settings, frame, ["homer", "bart"], name="tiny")
    other_test = frame.assign(split=["train", "test", "validation", "test", "train"])
    with pytest.raises(saved_models.SavedModelMismatch, match="test_files"):
        saved_models.load_model(settings, other_test, names, name="tiny")
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        saved_models.load_model(settings, frame, names, name="missing")
    with pytest.raises(ValueError, match="3 class names"):
        saved_models.save_model(model, settings, frame, names + ["lisa"], name="tiny")
    with pytest.raises(ValueError, match="plain file name"):
        saved_models.saved_model_path(settings, "../elsewhere")
    assert isinstance(keras.models.load_model(path), keras.Model)

    # Saving again replaces both files; a save cut off between the renames leaves a
    # model without its metadata, which is refused rather than trusted.
    saved_models.save_model(model, settings, frame, names, name="tiny", results={"test accuracy": 0.8})
    assert saved_models.load_model(settings, frame, names, name="tiny")[1]["results"] == {"test accuracy": 0.8}
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        saved_models.load_model(settings, frame, names, name="tiny")


# --------------------------------------------------------------------------- settings of training


def test_compile_model_sparse_crossentropy_adam_accuracy():
    import keras

    head = heads.build_head((2, 2, 4), 3)
    compiling.compile_model(head, 0.003)
    assert isinstance(head.loss, keras.losses.SparseCategoricalCrossentropy)
    assert isinstance(head.optimizer, keras.optimizers.Adam)
    assert float(head.optimizer.learning_rate) == pytest.approx(0.003)
    history = head.fit(np.ones((6, 2, 2, 4), "float32"), np.array([0, 1, 2, 0, 1, 2]), epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert isinstance(compiling.make_optimizer("sgd", 0.01), keras.optimizers.SGD)
    with pytest.raises(ValueError, match="optimizer"):
        compiling.make_optimizer("adagrad")
    with pytest.raises(ValueError, match="learning_rate"):
        compiling.make_optimizer("adam", 0)


def test_label_smoothing_compiles_the_categorical_loss_for_one_hot_labels():
    """Keras's sparse loss has no label smoothing: the categorical one on one-hot rows, its accuracy named the same."""
    import keras

    model = _small_classifier(3)
    compiling.compile_model(model, 0.01, label_smoothing=0.1)
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    x, y = _small_data(12, 8)
    targets = compiling.one_hot_labels(y, 3)
    assert targets.shape == (12, 3) and np.array_equal(targets.argmax(axis=1), y) and targets.sum() == 12
    probabilities = model.predict(x, verbose=0)
    smoothed = targets * 0.9 + 0.1 / 3
    expected = -np.mean(np.sum(smoothed * np.log(probabilities), axis=1))
    result = model.evaluate(x, targets, verbose=0, return_dict=True)
    penalty = 0.01 * float(np.sum(model.layers[-1].kernel.numpy() ** 2))  # the small classifier's L2
    assert result["loss"] == pytest.approx(expected + penalty, rel=1e-4)
    assert result["accuracy"] == pytest.approx(np.mean(probabilities.argmax(axis=1) == y))
    history = model.fit(x, targets, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match="label_smoothing"):
            compiling.compile_model(model, 0.01, label_smoothing=bad)
    with pytest.raises(ValueError, match="class ids"):
        compiling.one_hot_labels([0, 3], 3)


def test_augmentation_layers_change_images_only_in_training():
    augmentation = pipeline.augmentation_layers(seed=3)
    kinds = [type(layer).__name__ for layer in augmentation.layers]
    assert kinds == ["RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast"]
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    assert np.allclose(np.asarray(augmentation(images, training=False)), images)
    changed = np.asarray(augmentation(images, training=True))
    assert changed.shape == images.shape and not np.allclose(changed, images)
    assert changed.min() >= 0 and changed.max() <= 255  # contrast works on 0..255 pixels
    flip_only = pipeline.augmentation_layers(rotation=0, zoom=0, contrast=0)
    assert [type(layer).__name__ for layer in flip_only.layers] == ["RandomFlip"]
    with pytest.raises(ValueError, match="switched off"):
        pipeline.augmentation_layers(flip=False, rotation=0, zoom=0, contrast=0)
    with pytest.raises(ValueError, match="rotation"):
        pipeline.augmentation_layers(rotation=-0.1)


def test_activation_memory_budget_picks_float32_float16_or_nothing():
    shape = (7, 7, 768)  # MobileNet 0.75's last block input at 224 px
    assert retraining.activation_megabytes(shape, 1000, "float16") == pytest.approx(75.264)
    assert retraining.choose_activation_dtype(shape, 1000, budget_mb=200) == "float32"
    assert retraining.choose_activation_dtype(shape, 1000, budget_mb=100) == "float16"
    assert retraining.choose_activation_dtype(shape, 1000, budget_mb=50) is None


def test_merge_histories_numbers_epochs_across_phases():
    merged = callbacks.merge_histories(
        {
            callbacks.PHASE_HEAD: {"loss": [1.0, 0.5], "val_loss": [1.1, 0.9]},
            callbacks.PHASE_BLOCKS: {"loss": [0.4, 0.3, 0.2], "val_loss": [0.8, 0.7, 0.75]},
        }
    )
    assert merged["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert merged["phase"].tolist() == [callbacks.PHASE_HEAD] * 2 + [callbacks.PHASE_BLOCKS] * 3
    assert merged["loss"].tolist() == [1.0, 0.5, 0.4, 0.3, 0.2]
    assert callbacks.phase_boundaries(merged) == [(2.5, callbacks.PHASE_BLOCKS)]
    assert callbacks.merge_histories({}).empty
    with pytest.raises(ValueError, match="different lengths"):
        callbacks.history_frame({"loss": [1.0], "val_loss": [1.0, 2.0]})


def test_make_callbacks_early_stopping_best_checkpoint_tensorboard(tmp_path):
    import keras

    made, checkpoint = callbacks.make_callbacks(tmp_path, callbacks.PHASE_HEAD, patience=3)
    stop = [c for c in made if isinstance(c, keras.callbacks.EarlyStopping)]
    best = [c for c in made if isinstance(c, keras.callbacks.ModelCheckpoint)]
    assert len(stop) == 1 and stop[0].monitor == "val_loss" and stop[0].patience == 3
    assert len(best) == 1 and best[0].monitor == "val_loss" and best[0].save_best_only
    assert checkpoint.parent == tmp_path and checkpoint.name.endswith(".weights.h5")
    boards = [c for c in made if isinstance(c, keras.callbacks.TensorBoard)]
    assert len(boards) == (1 if callbacks.tensorboard_available() else 0)
    none = callbacks.make_callbacks(tmp_path, "x", patience=1, tensorboard=False)[0]
    assert not [c for c in none if isinstance(c, keras.callbacks.TensorBoard)]
    with pytest.raises(ValueError, match="patience"):
        callbacks.make_callbacks(tmp_path, "x", patience=0)


def _small_classifier(seed: int, *, dropout: float = 0.0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12,))
    hidden = keras.layers.Dropout(dropout)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_regularizer=keras.regularizers.L2(0.01))(hidden)
    return compiling.compile_model(keras.Model(inputs, outputs), 0.01)


def _small_data(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, 12)).astype("float32"), rng.integers(0, 3, count)


def test_cached_arrays_train_with_keras_fit_and_the_labs_callbacks(tmp_path):
    """Arrays (cached features, float16 activations) go through Keras's fit: early stopping, best weights restored."""
    x, y = _small_data(32, 4)
    x_val, _ = _small_data(16, 5)
    y_val = np.random.default_rng(6).integers(0, 3, 16)  # unrelated labels: val_loss soon stops falling
    made, checkpoint = callbacks.make_callbacks(tmp_path, callbacks.PHASE_HEAD, patience=2)
    model = _small_classifier(7)
    history = retraining._fit(
        model, x.astype("float16"), y, (x_val, y_val), epochs=60, batch_size=8, callbacks=made,
        checkpoint=checkpoint, verbose=0, seed=1,
    )
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}, "compiled metrics are reported"
    epochs = len(history["loss"])
    best = int(np.argmin(history["val_loss"]))
    assert epochs < 60 and epochs == best + 3, "patience 2: two epochs after the best, then stop"
    loss = model.evaluate(x_val, y_val, batch_size=8, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(history["val_loss"][best], rel=1e-4), "the best epoch's weights are restored"
    if callbacks.tensorboard_available():
        assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))


def test_training_is_reproducible_from_the_seed(tmp_path):
    x, y = _small_data(40, 2)
    validation = _small_data(10, 3)

    def trained(seed: int) -> list[np.ndarray]:
        model = _small_classifier(5, dropout=0.3)
        retraining._fit(
            model, x, y, validation, epochs=2, batch_size=8, callbacks=[], checkpoint=tmp_path / "none.weights.h5",
            verbose=0, seed=seed,
        )
        return model.get_weights()

    first, again, other = trained(1), trained(1), trained(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


# --------------------------------------------------------------------------- structure: ResNet50, random weights


@pytest.fixture(scope="module")
def resnet(kit_settings):
    settings = kit_settings.replace(backbone="resnet50", alpha=None, image_size=64)
    backbone = backbones.get_backbone(settings=settings)
    base = backbones.load_base(settings, weights=None)
    head = heads.build_head(base.output_shape[1:], 3, seed=0)
    return settings, backbone, base, head, heads.assemble_model(base, head)


def test_resnet50_each_phase_trains_exactly_the_right_weights(resnet):
    _, backbone, base, head, model = resnet
    freezing.freeze_for_phase(base, backbone, 1)
    assert _weight_paths(model.trainable_weights) == _weight_paths(head.weights)
    for n_blocks in (1, 2):
        trainable_layers = freezing.freeze_for_phase(base, backbone, 2, n_blocks)
        expected = _expected_trainable(base, head, backbone, n_blocks)
        assert _weight_paths(model.trainable_weights) == expected
        assert all("_bn" not in name for name in trainable_layers)
        tail = heads.tail_model(base, head, backbone, n_blocks)
        assert _weight_paths(tail.trainable_weights) == expected
    assert {w.path.split("/")[0] for w in model.trainable_weights} >= {"conv5_block2_1_conv", "head_predictions"}
    with pytest.raises(ValueError, match="phase"):
        freezing.freeze_for_phase(base, backbone, 3)


def test_parameter_table_counts_trainable_and_frozen_per_part(resnet):
    _, backbone, base, head, model = resnet
    freezing.freeze_for_phase(base, backbone, 1)
    table = freezing.parameter_table(model)
    assert list(table.index) == [base.name, head.name, "total"]
    assert table.loc[head.name, "trainable"] == head.count_params() and table.loc[base.name, "trainable"] == 0
    assert table.loc["total", "total"] == model.count_params()
    freezing.freeze_for_phase(base, backbone, 2, 1)
    table = freezing.parameter_table(model)
    assert table.loc[base.name, "trainable"] == sum(int(np.prod(w.shape)) for w in base.trainable_weights) > 0
    assert (table["trainable"] + table["frozen"] == table["total"]).all()


def test_resnet50_tail_gives_the_full_models_predictions(resnet):
    settings, backbone, base, head, model = resnet
    images = np.random.default_rng(0).normal(0, 50, size=(3, 64, 64, 3)).astype("float32")
    expected = np.asarray(model(images, training=False))  # eager calls: no graph tracing for 3 images
    for n_blocks in (1, 2):
        activations = heads.block_input_model(base, backbone, n_blocks)(images, training=False)
        tail = heads.tail_model(base, head, backbone, n_blocks)
        assert np.abs(np.asarray(tail(activations, training=False)) - expected).max() < TOLERANCE


def test_assemble_model_rejects_a_head_of_the_wrong_shape(resnet):
    _, _, base, _, _ = resnet
    with pytest.raises(ValueError, match="feature_shape"):
        heads.assemble_model(base, heads.build_head((7, 7, 768), 3))


# --------------------------------------------------------------------------- real MobileNet on real frames


@pytest.fixture(scope="module")
def simpsons_frame(shared_data) -> pd.DataFrame:
    """Four frames of each of three characters: two to train on, one to validate, one to test."""
    root = shared_data / "datasets" / "simpsons" / "simpsons_dataset"
    if not root.is_dir():
        pytest.skip(f"no Simpsons frames at {root}")
    rows = []
    for character in ("bart_simpson", "homer_simpson", "lisa_simpson"):
        for path, split in zip(sorted((root / character).glob("*.jpg"))[:4], ("train", "train", "validation", "test")):
            rows.append({"path": str(path), "label": character, "split": split})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def mobilenet(real_weights):
    base = backbones.load_base(real_weights)
    return real_weights, backbones.get_backbone(settings=real_weights), base


@pytest.mark.integration
@pytest.mark.parametrize("pooling", ["avg", "flatten"])
def test_head_on_cached_features_gives_the_full_models_predictions(mobilenet, simpsons_frame, pooling):
    settings, backbone, base = mobilenet
    head = heads.build_head(base.output_shape[1:], 3, pooling=pooling, seed=4)
    model = heads.assemble_model(base, head)
    retrainer = retraining.Retrainer(settings, simpsons_frame, base, head, augment=pipeline.augmentation_layers(),
                                   progress=False, tensorboard=False)
    pooled = retrainer.features()  # the plain extractor path: phase 2 would train on images here
    assert pooled.shape == (len(simpsons_frame), 768 if pooling == "avg" else 7 * 7 * 768)
    fast = heads.head_after_pooling(head).predict(pooled, verbose=0)
    plain = pipeline.predict_images(model, simpsons_frame, settings)
    assert np.abs(fast - plain).max() < TOLERANCE
    if pooling == "avg":  # notebook 03's default extractor reads the very same cache file
        files = len(features.cache_table(settings))
        shared = features.extract_features(backbones.load_feature_extractor(settings), simpsons_frame, settings,
                                           progress=False)
        assert len(features.cache_table(settings)) == files and np.array_equal(shared, pooled)


@pytest.mark.integration
@pytest.mark.parametrize("n_blocks", [1, 2])
def test_tail_on_cached_block_inputs_gives_the_full_models_predictions(mobilenet, simpsons_frame, n_blocks):
    settings, backbone, base = mobilenet
    head = heads.build_head(base.output_shape[1:], 3, seed=5)
    model = heads.assemble_model(base, head)
    extractor = heads.block_input_model(base, backbone, n_blocks)
    activations = features.extract_features(extractor, simpsons_frame, settings, cache=False, progress=False)
    expected_shape = {1: (7, 7, 768), 2: (14, 14, 384)}[n_blocks]
    assert activations.shape == (len(simpsons_frame), *expected_shape)
    fast = heads.tail_model(base, head, backbone, n_blocks).predict(activations, verbose=0)
    plain = pipeline.predict_images(model, simpsons_frame, settings)
    assert np.abs(fast - plain).max() < TOLERANCE


@pytest.fixture(scope="module")
def trained(mobilenet, simpsons_frame, tmp_path_factory):
    """Both phases, two epochs each, on the fast paths; snapshots taken before training."""
    settings, backbone, base = mobilenet
    base = backbones.load_base(settings)  # a fresh base: training changes it
    head = heads.build_head(base.output_shape[1:], 3, seed=6)
    retrainer = retraining.Retrainer(settings, simpsons_frame, base, head, run_dir=tmp_path_factory.mktemp("run"),
                                   flip_copies=True, progress=False)
    snapshot = {
        "weights": {w.path: w.numpy().copy() for w in base.weights},
        "statistics": _batchnorm_statistics(base),
        "phase 1 trainable": _weight_paths(retrainer.model.trainable_weights),
    }
    retrainer.fit_head(epochs=2)
    snapshot["after phase 1"] = {w.path: w.numpy().copy() for w in base.weights}
    # Large, so that the block surely moves; kept whatever validation says (the fallback has its own test).
    retrainer.fit_last_blocks(epochs=2, learning_rate=1e-2, keep_better=False)
    snapshot["phase 2 trainable"] = _weight_paths(retrainer.model.trainable_weights)
    return retrainer, snapshot


@pytest.mark.integration
def test_retrainer_phases_train_exactly_the_right_weights(trained):
    retrainer, snapshot = trained
    base, head, backbone = retrainer.base, retrainer.head, retrainer.backbone
    assert snapshot["phase 1 trainable"] == _weight_paths(head.weights)
    assert snapshot["phase 2 trainable"] == _expected_trainable(base, head, backbone, 1)
    for path, before in snapshot["weights"].items():  # phase 1 leaves the whole base alone
        assert np.array_equal(snapshot["after phase 1"][path], before), path
    last_block = {name for name in backbones.blocks(base, backbone)[-1]}
    moved = {w.path for w in base.weights if not np.array_equal(w.numpy(), snapshot["weights"][w.path])}
    assert moved and {path.split("/")[0] for path in moved} <= last_block
    assert "conv_pw_13/kernel" in moved
    assert [r.path for r in retrainer.reports] == ["cached features", "cached activations"]


@pytest.mark.integration
def test_retrainer_flipped_copies_of_the_training_images(trained):
    from helpers import pipeline

    retrainer, _ = trained
    train = retrainer.frame.iloc[retrainer.rows("train")]
    # Every image has its flipped copy (they do not depend on the split; flip_test uses them).
    assert retrainer._flipped_activations.shape == (len(retrainer.frame), 7, 7, 768)
    assert retrainer._flipped_features.shape == (len(retrainer.frame), 768)
    images = np.concatenate(list(pipeline.make_dataset(train["path"], settings=retrainer.settings)))
    extractor = heads.block_input_model(retrainer.base, retrainer.backbone, 1)
    expected = np.asarray(extractor(images[:, :, ::-1], training=False))
    assert np.abs(retrainer._flipped_activations[retrainer.rows("train")] - expected).max() < TOLERANCE
    x_train, y_train = retrainer._training_arrays(retrainer.activations(), retrainer._flipped_activations)
    assert len(x_train) == 2 * len(train) and list(y_train) == list(retrainer.labels[retrainer.rows("train")]) * 2
    assert "flipped copy" in retrainer.plan()


@pytest.mark.integration
def test_retrainer_batchnorm_statistics_do_not_move(trained):
    retrainer, snapshot = trained
    after = _batchnorm_statistics(retrainer.base)
    assert after.keys() == snapshot["statistics"].keys() and after
    for name, before in snapshot["statistics"].items():
        assert np.array_equal(after[name], before), f"{name} moved during training"


@pytest.mark.integration
def test_retrainer_history_checkpoints_and_logs(trained):
    retrainer, _ = trained
    history = retrainer.history()
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["phase"].tolist() == [callbacks.PHASE_HEAD] * 2 + [callbacks.PHASE_BLOCKS] * 2
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    assert callbacks.phase_boundaries(history) == [(2.5, callbacks.PHASE_BLOCKS)]
    report = retrainer.report()
    assert list(report.index) == [callbacks.PHASE_HEAD, callbacks.PHASE_BLOCKS]
    assert report.loc[callbacks.PHASE_BLOCKS, "learning_rate"] == pytest.approx(1e-2)
    assert (report["best_epoch"] >= 1).all() and (report["best_epoch"] <= report["epochs"]).all()
    checkpoints = sorted(p.name for p in Path(retrainer.run_dir).glob("*.weights.h5"))
    assert checkpoints == ["phase-1-head.weights.h5", "phase-2-last-block.weights.h5"]
    if callbacks.tensorboard_available():
        logs = list((Path(retrainer.run_dir) / "logs").rglob("events.out.tfevents.*"))
        assert logs, "TensorBoard logs were not written"


@pytest.mark.integration
def test_retrained_model_fast_predictions_save_and_reload(trained, tmp_path):
    import keras

    retrainer, _ = trained
    test = retrainer.frame[retrainer.frame["split"] == "test"]
    plain = pipeline.predict_images(retrainer.model, test, retrainer.settings)
    assert np.abs(retrainer.predict("test") - plain).max() < TOLERANCE
    assert retrainer.accuracy("test") == pytest.approx(float(np.mean(plain.argmax(1) == retrainer.labels[retrainer.rows("test")])))
    path = tmp_path / "simpsons.keras"
    retrainer.model.save(path)
    reloaded = keras.models.load_model(path)
    assert type(reloaded) is keras.Model or isinstance(reloaded, keras.Model)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in retrainer.model.layers]
    assert np.abs(pipeline.predict_images(reloaded, test, retrainer.settings) - plain).max() < 1e-6


@pytest.mark.integration
def test_phase2_trains_on_images_over_budget_or_with_augmentation(mobilenet, simpsons_frame, tmp_path):
    settings, backbone, _ = mobilenet
    base = backbones.load_base(settings)
    head = heads.build_head(base.output_shape[1:], 3, seed=7)
    over_budget = retraining.Retrainer(settings, simpsons_frame, base, head, memory_budget_mb=0.01, progress=False)
    assert over_budget.activation_dtype is None and over_budget.phase2_path == "images"
    assert "too large" in over_budget.plan()
    with pytest.raises(RuntimeError, match="images"):
        over_budget.activations()
    retrainer = retraining.Retrainer(settings, simpsons_frame, base, head, augment=pipeline.augmentation_layers(seed=1),
                                   run_dir=tmp_path, progress=False, tensorboard=False)
    assert retrainer.activation_dtype == "float32" and retrainer.phase2_path == "images"
    assert "augmentation" in retrainer.plan()
    statistics = _batchnorm_statistics(base)
    retrainer.fit_head(epochs=1)
    retrainer.fit_last_blocks(epochs=1)
    assert [r.path for r in retrainer.reports] == ["cached features", "images"]
    assert _weight_paths(retrainer.model.trainable_weights) == _expected_trainable(base, head, backbone, 1)
    for name, before in statistics.items():
        assert np.array_equal(_batchnorm_statistics(base)[name], before), f"{name} moved during end-to-end training"
    test = retrainer.frame[retrainer.frame["split"] == "test"]
    assert np.abs(retrainer.predict("test") - pipeline.predict_images(retrainer.model, test, settings)).max() < 1e-6


@pytest.mark.integration
def test_float16_activations_when_float32_would_not_fit(mobilenet, simpsons_frame):
    settings, backbone, base = mobilenet
    head = heads.build_head(base.output_shape[1:], 3, seed=8)
    rows = len(simpsons_frame)
    budget = (retraining.activation_megabytes((7, 7, 768), rows, "float16") + retraining.activation_megabytes((7, 7, 768), rows)) / 2
    retrainer = retraining.Retrainer(settings, simpsons_frame, base, head, memory_budget_mb=budget, progress=False)
    assert retrainer.activation_dtype == "float16" and retrainer.phase2_path == "cached activations"
    assert retrainer.activations().dtype == np.float16
    test = simpsons_frame[simpsons_frame["split"] == "test"]
    plain = pipeline.predict_images(retrainer.model, test, settings)
    assert np.abs(retrainer.predict("test") - plain).max() < 2e-2  # float16 rounding of the activations only


def test_retrainer_validates_its_inputs(resnet):
    settings, _, base, head, _ = resnet
    frame = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": ["x", "y"], "split": ["train", "train"]})
    with pytest.raises(ValueError, match="validation"):
        retraining.Retrainer(settings, frame, base, head)
    with pytest.raises(ValueError, match="split"):
        retraining.Retrainer(settings, frame.drop(columns="split"), base, head)
    frame.loc[1, "split"] = "validation"
    with pytest.raises(ValueError, match="outputs"):
        retraining.Retrainer(settings, frame, base, head)  # 3 outputs, 2 classes
    with pytest.raises(ValueError, match="n_blocks"):
        retraining.Retrainer(settings, frame, base, heads.build_head(base.output_shape[1:], 2), n_blocks=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        retraining.Retrainer(settings, frame, base, heads.build_head(base.output_shape[1:], 2), label_smoothing=1.0)
    assert math.isclose(retraining.FINETUNE_LEARNING_RATE_FACTOR, 0.1)


@pytest.mark.integration
def test_flip_test_averages_with_the_flipped_image_and_exports_that_model(trained):
    retrainer, _ = trained
    test = retrainer.frame[retrainer.frame["split"] == "test"]
    plain = pipeline.predict_images(retrainer.model, test, retrainer.settings)
    flipped = pipeline.predict_images(heads.flipped(retrainer.model), test, retrainer.settings)
    retrainer.flip_test = True
    try:
        fast = retrainer.predict("test")
        exported = pipeline.predict_images(retrainer.export_model(), test, retrainer.settings)
    finally:
        retrainer.flip_test = False
    assert np.abs(fast - (plain + flipped) / 2).max() < TOLERANCE
    assert np.abs(exported - fast).max() < TOLERANCE
    assert retrainer.export_model() is retrainer.model


@pytest.mark.integration
def test_phase2_that_does_not_beat_phase1_is_dropped(mobilenet, simpsons_frame, tmp_path):
    settings, backbone, _ = mobilenet
    base = backbones.load_base(settings)  # a fresh base: this test wrecks it, then expects it back
    head = heads.build_head(base.output_shape[1:], 3, seed=9)
    # Validated on its own training frames, phase 1 surely reaches 100 %: a wrecked phase 2 cannot beat it.
    train = simpsons_frame[simpsons_frame["split"] == "train"]
    frame = pd.concat([train, train.assign(split="validation"), simpsons_frame[simpsons_frame["split"] == "test"]])
    retrainer = retraining.Retrainer(settings, frame, base, head, run_dir=tmp_path, progress=False, tensorboard=False)
    retrainer.fit_head(epochs=40, learning_rate=1e-2)
    assert retrainer.accuracy("validation") == 1.0
    phase1 = retrainer.predict("test")
    weights = [w.copy() for w in retrainer.model.get_weights()]
    retrainer.fit_last_blocks(epochs=1, learning_rate=50.0)  # a learning rate that can only make things worse
    report = retrainer.report()
    assert not report.loc[callbacks.PHASE_BLOCKS, "kept"] and report.loc[callbacks.PHASE_HEAD, "kept"]
    assert all(np.array_equal(a, b) for a, b in zip(retrainer.model.get_weights(), weights)), "phase 1's weights are back"
    assert np.abs(retrainer.predict("test") - phase1).max() < TOLERANCE
    plain = pipeline.predict_images(retrainer.model, frame[frame["split"] == "test"], settings)
    assert np.abs(plain - phase1).max() < TOLERANCE
    with pytest.raises(ValueError, match="schedule"):
        retrainer.fit_last_blocks(schedule="linear")


@pytest.mark.integration
@pytest.mark.parametrize("augment", [False, True], ids=["cached-activations", "images"])
def test_label_smoothing_trains_both_phases_on_one_hot_targets(mobilenet, simpsons_frame, tmp_path, augment):
    """Both phases compile the smoothed categorical loss; phase 2 on cached activations or on images (one-hot map)."""
    import keras

    settings, _, _ = mobilenet
    base = backbones.load_base(settings)  # a fresh base: training changes it
    head = heads.build_head(base.output_shape[1:], 3, seed=10)
    retrainer = retraining.Retrainer(
        settings, simpsons_frame, base, head, label_smoothing=0.1, augment=pipeline.augmentation_layers(seed=1) if augment
        else None, run_dir=tmp_path, progress=False, tensorboard=False,
    )
    retrainer.fit_head(epochs=2)
    retrainer.fit_last_blocks(epochs=1, keep_better=False)
    assert [r.path for r in retrainer.reports] == ["cached features", "images" if augment else "cached activations"]
    trained = retrainer.model if augment else retrainer._submodel("tail")
    assert isinstance(trained.loss, keras.losses.CategoricalCrossentropy)
    for phase in (callbacks.PHASE_HEAD, callbacks.PHASE_BLOCKS):
        history = retrainer.histories[phase]
        assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history)
        assert all(0.0 <= v <= 1.0 for v in history["val_accuracy"]) and all(np.isfinite(history["loss"]))
    probabilities = retrainer.predict("test")
    assert probabilities.shape == (3, 3) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_balance_classes_repeats_the_smaller_classes(resnet):
    settings, _, base, _, _ = resnet
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(12)], "label": ["x"] * 7 + ["y"] * 2 + ["z"] * 3,
                          "split": ["train"] * 6 + ["validation"] + ["train"] * 2 + ["train", "train", "validation"]})
    head = heads.build_head(base.output_shape[1:], 3, seed=0)
    plain = retraining.Retrainer(settings, frame, base, head, progress=False, tensorboard=False)
    balanced = retraining.Retrainer(settings, frame, base, head, balance_classes=True, progress=False, tensorboard=False)
    assert list(np.bincount(plain.labels[plain._training_rows()])) == [6, 2, 2]
    rows = balanced._training_rows()
    assert list(np.bincount(balanced.labels[rows])) == [6, 6, 6]
    assert set(rows) == set(plain._training_rows()), "only training rows, each of them at least once"
    with pytest.raises(ValueError, match="flip_copies"):
        retraining.Retrainer(settings, frame, base, head, flip_test=True)


def test_cosine_schedule_decays_to_zero_and_optimizers_take_it():
    schedule = compiling.cosine_schedule(3e-4, 100)
    assert float(schedule(0)) == pytest.approx(3e-4) and float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(50)) == pytest.approx(1.5e-4, rel=1e-3)
    optimizer = compiling.make_optimizer("adam", schedule)
    assert float(optimizer.learning_rate) == pytest.approx(3e-4)


# --------------------------------------------------------------------------- notebook 02's steps in one call


def test_notebook_02_writes_the_default_recipe_as_visible_constants():
    """The retrain command's recipe (retraining.DEFAULT_RECIPE) is the one notebook 02 teaches, value for value."""
    import nbformat

    book = nbformat.read(ROOT / "solutions" / "02_retrain_simpsons" / "02_retrain_simpsons.ipynb", as_version=4)
    code = "\n".join(cell.source for cell in book.cells if cell.cell_type == "code")
    recipe = retraining.DEFAULT_RECIPE
    for name, key in (("N_BLOCKS", "n_blocks"), ("LABEL_SMOOTHING", "label_smoothing"),
                      ("PHASE2_LEARNING_RATE", "phase2_learning_rate")):
        found = re.search(rf"^{name} = ([0-9.e-]+)\s", code, re.MULTILINE)
        assert found and float(found.group(1)) == recipe[key], f"notebook 02's {name} differs from DEFAULT_RECIPE[{key!r}]"
    assert "CosineDecay(PHASE2_LEARNING_RATE" in code and "class_weight=class_weight" in code
    assert "flipped_block_inputs" in code and recipe["flips"] and recipe["class_weights"]
    assert "initial_epoch=len(history1.epoch)" in code, "phase 2 continues the epoch count (TensorBoard's step axis)"
    assert "Retrainer" not in code, "notebook 02 shows the steps, in Keras"


@pytest.mark.integration
def test_one_pass_gives_both_phases_arrays_and_the_fast_paths_match_the_model(mobilenet, simpsons_frame, tmp_path):
    """cached_outputs_model: block inputs and feature maps, as they are and flipped, in one pass; both phases train."""
    settings, backbone, base = mobilenet
    base = backbones.load_base(settings)  # a fresh base: training changes it
    head = heads.build_head(base.output_shape[1:], 3, seed=7)
    extractor = heads.cached_outputs_model(base, backbone, 2)
    arrays = features.cached_arrays(extractor, simpsons_frame, settings, flips=True, progress=False)
    assert [a.shape[1:] for a in arrays] == [(14, 14, 384), (7, 7, 768)] * 2
    model = heads.assemble_model(base, head)
    plain = pipeline.predict_images(model, simpsons_frame, settings)
    on_maps = head.predict(features.batches(arrays[1]), verbose=0)
    on_blocks = heads.tail_model(base, head, backbone, 2).predict(features.batches(arrays[0]), verbose=0)
    assert np.abs(on_maps - plain).max() < 0.02 and np.abs(on_blocks - plain).max() < 0.02, "float16 rounding only"
    flipped = heads.tail_model(base, head, backbone, 2).predict(features.batches(arrays[2]), verbose=0)
    assert np.abs(flipped - pipeline.predict_images(heads.flipped(model), simpsons_frame, settings)).max() < 0.02

    before = {w.path: w.numpy().copy() for w in base.weights}
    statistics = _batchnorm_statistics(base)
    lines = io.StringIO()
    result = retraining.fit_two_phases(settings, simpsons_frame, base, head, arrays, n_blocks=2, run_dir=tmp_path / "run",
                                       epoch_lines=lines)
    after = {w.path: w.numpy() for w in base.weights}
    moved = {path for path, value in before.items() if not np.array_equal(value, after[path])}
    allowed = _expected_trainable(base, head, backbone, 2)
    assert result.phases["kept"].sum() == 1
    if result.phases["kept"].iloc[1]:
        assert moved and moved <= allowed, "phase 2 moves the last blocks' weights only"
    else:
        assert not moved, "phase 2 not kept: the base is back to phase 1's weights"
    assert all(np.array_equal(statistics[k], v) for k, v in _batchnorm_statistics(base).items())
    assert result.test_probabilities.shape == (3, 3) and list(result.history["phase"].unique()) == [
        "phase 1: head", "phase 2: last block"]
    assert result.history["epoch"].tolist() == list(range(1, len(result.history) + 1))
    text = lines.getvalue()
    assert text.startswith("phase 1: epoch 1/") and "phase 2: epoch" in text and "\r" not in text
    images = pipeline.predict_images(result.model, simpsons_frame[simpsons_frame["split"] == "test"], settings)
    assert np.abs(images - result.test_probabilities).max() < 0.02, "the saved model is the trained layers"
    with pytest.raises(ValueError, match="outputs of heads.cached_outputs_model"):
        retraining.fit_two_phases(settings, simpsons_frame, base, head, arrays[:3], run_dir=tmp_path / "x")



def test_two_phases_with_notebook_04s_plain_recipe(mobilenet, simpsons_frame, tmp_path):
    """fit_two_phases as notebook 04 trains: class ids (no smoothing), constant phase-2 rate, no flips, phase 2 kept."""
    settings, backbone, base = mobilenet
    base = backbones.load_base(settings)  # a fresh base: training changes it
    head = heads.build_head(base.output_shape[1:], 3, seed=7)
    arrays = features.cached_arrays(heads.cached_outputs_model(base, backbone, 1), simpsons_frame, settings, progress=False)
    assert len(arrays) == 2
    result = retraining.fit_two_phases(
        settings, simpsons_frame, base, head, arrays, n_blocks=1, label_smoothing=0.0, class_weights=False,
        phase2_learning_rate=1e-3, phase2_schedule="constant", keep_better=False, run_dir=tmp_path / "run",
    )
    assert result.phases["kept"].tolist() == [False, True], "keep_better=False keeps phase 2 whatever it scores"
    assert result.head_test_probabilities.shape == result.test_probabilities.shape == (3, 3)
    np.testing.assert_allclose(result.head_test_probabilities.sum(axis=1), 1.0, rtol=1e-4)
    assert np.abs(result.head_test_probabilities - result.test_probabilities).max() > 1e-5, "phase 2 changed the model"
    images = pipeline.predict_images(result.model, simpsons_frame[simpsons_frame["split"] == "test"], settings)
    assert np.abs(images - result.test_probabilities).max() < 0.02, "the returned model is phase 2's, unflipped"
    with pytest.raises(ValueError, match="phase2_schedule must be 'cosine' or 'constant'"):
        retraining.fit_two_phases(settings, simpsons_frame, base, head, arrays, phase2_schedule="linear",
                                  run_dir=tmp_path / "x")

def _names_defined(tree) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def test_notebook_02_graded_tests_never_depend_on_another_exercise():
    """No cascade: each test cell uses its own exercise's answer and cells that need no student function."""
    import ast
    import builtins

    import nbformat

    book = nbformat.read(ROOT / "solutions" / "02_retrain_simpsons" / "02_retrain_simpsons.ipynb", as_version=4)
    defined_by: dict[str, tuple[int, str]] = {}  # name -> (cell index, what kind of cell defined it last)
    checked = 0
    for index, cell in enumerate(book.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        source = cell.source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", "")
        source = source.replace("### BEGIN HIDDEN TESTS", "").replace("### END HIDDEN TESTS", "")
        tree = ast.parse(source)
        if meta.get("grade") and meta.get("grade_id", "").startswith("test_"):
            exercise = meta["grade_id"].removeprefix("test_")
            own = _names_defined(tree)
            used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
            for name in sorted(used - own - set(dir(builtins))):
                assert name in defined_by, f"{meta['grade_id']} uses {name!r}, defined nowhere before it"
                where, kind = defined_by[name]
                assert kind == "plain" or kind == f"answer {exercise}", (
                    f"{meta['grade_id']} uses {name!r} from cell {where} ({kind}): a failed exercise there would fail "
                    "this test too; give the test its own inputs"
                )
            checked += 1
            continue
        calls_needs = any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "needs" for n in ast.walk(tree))
        kind = f"answer {meta['grade_id']}" if meta.get("solution") else ("uses answers" if calls_needs else "plain")
        for name in _names_defined(tree):
            defined_by[name] = (index, kind)
    assert checked == 7, f"expected notebook 02's 7 graded test cells, checked {checked}"
