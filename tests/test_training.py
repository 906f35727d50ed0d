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

from helpers import backbones, callbacks, compiling, features, freezing, heads, pipeline, retraining

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

    assert heads.build_head((2, 2, 4), 3, seed=0).get_layer("head_predictions").kernel_regularizer is None
    l1 = heads.build_head((2, 2, 4), 3, l1=0.01, seed=0).get_layer("head_predictions").kernel_regularizer
    l2 = heads.build_head((2, 2, 4), 3, l2=0.02, seed=0).get_layer("head_predictions").kernel_regularizer
    both = heads.build_head((2, 2, 4), 3, l1=0.01, l2=0.02, seed=0).get_layer("head_predictions").kernel_regularizer
    assert isinstance(l1, keras.regularizers.L1) and float(l1.l1) == pytest.approx(0.01)
    assert isinstance(l2, keras.regularizers.L2) and float(l2.l2) == pytest.approx(0.02)
    assert isinstance(both, keras.regularizers.L1L2)
    assert float(both.l1) == pytest.approx(0.01) and float(both.l2) == pytest.approx(0.02)
    head = heads.build_head((2, 2, 4), 3, l2=0.5, seed=0)
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
        heads.build_head(*args, seed=0, **kwargs)


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


# --------------------------------------------------------------------------- settings of training


def test_compile_model_sparse_crossentropy_adam_accuracy():
    import keras

    head = heads.build_head((2, 2, 4), 3, seed=0)
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
    """Float16 arrays through features.batches and fit, with fit_two_phases's callbacks: early stopping restores the best epoch."""
    import keras

    x, y = _small_data(32, 4)
    x_val, _ = _small_data(16, 5)
    y_val = np.random.default_rng(6).integers(0, 3, 16)  # unrelated labels: val_loss soon stops falling
    model = _small_classifier(7)
    keras.utils.set_random_seed(1)
    history = model.fit(
        features.batches(x.astype("float16"), y, batch_size=8, shuffle=True, seed=1),
        validation_data=features.batches(x_val.astype("float16"), y_val, batch_size=8), epochs=60, verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True),
                   keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_loss", save_best_only=True)],
    ).history
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}, "compiled metrics are reported"
    epochs = len(history["loss"])
    best = int(np.argmin(history["val_loss"]))
    assert epochs < 60 and epochs == best + 3, "patience 2: two epochs after the best, then stop"
    loss = model.evaluate(x_val.astype("float16").astype("float32"), y_val, batch_size=8, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(history["val_loss"][best], rel=1e-4), "the best epoch's weights are restored"
    assert (tmp_path / "best.keras").is_file(), "the best checkpoint is saved"


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
    freezing.freeze_all_but_last_blocks(base, backbone, 0)
    assert _weight_paths(model.trainable_weights) == _weight_paths(head.weights)
    for n_blocks in (1, 2):
        trainable_layers = freezing.freeze_all_but_last_blocks(base, backbone, n_blocks)
        expected = _expected_trainable(base, head, backbone, n_blocks)
        assert _weight_paths(model.trainable_weights) == expected
        assert all("_bn" not in name for name in trainable_layers)
        tail = heads.tail_model(base, head, backbone, n_blocks)
        assert _weight_paths(tail.trainable_weights) == expected
    assert {w.path.split("/")[0] for w in model.trainable_weights} >= {"conv5_block2_1_conv", "head_predictions"}
    with pytest.raises(ValueError, match="n_blocks"):
        freezing.freeze_all_but_last_blocks(base, backbone, 99)


def test_parameter_table_counts_trainable_and_frozen_per_part(resnet):
    _, backbone, base, head, model = resnet
    freezing.freeze_all_but_last_blocks(base, backbone, 0)
    table = freezing.parameter_table(model)
    assert list(table.index) == [base.name, head.name, "total"]
    assert table.loc[head.name, "trainable"] == head.count_params() and table.loc[base.name, "trainable"] == 0
    assert table.loc["total", "total"] == model.count_params()
    freezing.freeze_all_but_last_blocks(base, backbone, 1)
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
        heads.assemble_model(base, heads.build_head((7, 7, 768), 3, seed=0))


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
    plain = pipeline.predict_images(model, simpsons_frame, settings)
    maps = features.extract_features(base, simpsons_frame, settings, cache=False, progress=False)
    assert maps.shape == (len(simpsons_frame), 7, 7, 768)
    assert np.abs(head.predict(maps, verbose=0) - plain).max() < TOLERANCE  # phase 1's fast path: the head on the maps
    if pooling == "avg":  # notebook 03's cached features (the pooled maps) through the head's softmax layer
        pooled = features.extract_features(backbones.load_feature_extractor(settings), simpsons_frame, settings,
                                           progress=False)
        assert pooled.shape == (len(simpsons_frame), 768)
        assert np.abs(heads.head_after_pooling(head).predict(pooled, verbose=0) - plain).max() < TOLERANCE


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


# --------------------------------------------------------------------------- fit_two_phases on generated arrays


class _CountedReads:
    """A cached array that records the most rows one read took (a whole-array conversion counts every row)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.largest = 0

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index):
        part = self.array[index]
        self.largest = max(self.largest, len(part) if np.ndim(part) == self.array.ndim else 1)
        return part

    def __array__(self, dtype=None, copy=None):
        self.largest = len(self.array)
        return np.asarray(self.array, dtype=dtype)


def _phase_recorder(base):
    """A Keras callback recording, for each fit: what trains, the epochs run, the base's weights at the end."""
    import keras

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.fits: list[dict] = []

        def on_train_begin(self, logs=None):
            self.fits.append({"model": self.model.name, "trainable": _weight_paths(self.model.trainable_weights),
                              "epochs": []})

        def on_epoch_end(self, epoch, logs=None):
            self.fits[-1]["epochs"].append(epoch + 1)

        def on_train_end(self, logs=None):
            self.fits[-1]["base"] = {w.path: w.numpy().copy() for w in base.weights}

    return Recorder()


@pytest.fixture(scope="module")
def generated_run(kit_settings, tmp_path_factory):
    """fit_two_phases with ResNet50 (random weights, 64 px) on generated float16 arrays, read through counters."""
    settings = kit_settings.replace(backbone="resnet50", alpha=None, image_size=64, batch_size=4)
    backbone = backbones.get_backbone(settings=settings)
    base = backbones.load_base(settings, weights=None)
    head = heads.build_head(base.output_shape[1:], 3, seed=0)
    block_shape = heads.block_input_model(base, backbone, 1).output_shape[1:]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(24)], "label": ["a", "b", "c", "a"] * 6,
                          "split": ["train"] * 16 + ["validation"] * 4 + ["test"] * 4})
    arrays = [_CountedReads(rng.normal(size=(24, *shape)).astype("float16"))
              for shape in (block_shape, base.output_shape[1:])]
    before = {w.path: w.numpy().copy() for w in base.weights}
    initial = base.get_weights()
    statistics = _batchnorm_statistics(base)
    recorder = _phase_recorder(base)
    folder = tmp_path_factory.mktemp("generated")
    options = {"n_blocks": 1, "phase2_learning_rate": 1e-2, "phase2_schedule": "constant", "keep_better": False,
               "head_epochs": 2, "block_epochs": 1}
    result = retraining.fit_two_phases(settings, frame, base, head, arrays, run_dir=folder / "run",
                                       extra_callbacks=[recorder], **options)
    return {"settings": settings, "backbone": backbone, "base": base, "head": head, "arrays": arrays, "frame": frame,
            "before": before, "initial": initial, "statistics": statistics, "recorder": recorder, "result": result,
            "run_dir": folder / "run", "folder": folder, "options": options,
            "trained": head.get_weights() + [w.numpy().copy() for w in base.weights]}


def test_two_phases_read_the_cached_arrays_a_batch_at_a_time(generated_run):
    """The memory budget: the arrays (memory maps in use) are never copied whole, only a batch of rows at a time."""
    batch = generated_run["settings"].batch_size
    for index, counted in enumerate(generated_run["arrays"]):
        assert 0 < counted.largest <= 2 * batch < len(counted), (
            f"arrays[{index}]: a read of {counted.largest} rows; training reads {batch}, predicting {2 * batch}"
        )


def test_two_phases_train_exactly_the_right_weights_and_keep_batchnorm(generated_run):
    run = generated_run
    base, head, backbone = run["base"], run["head"], run["backbone"]
    phase1, phase2 = run["recorder"].fits
    assert phase1["trainable"] == _weight_paths(head.weights), "phase 1 trains the head only"
    assert phase2["trainable"] == _expected_trainable(base, head, backbone, 1), "phase 2: the last block (no BN) + head"
    assert all(np.array_equal(phase1["base"][k], v) for k, v in run["before"].items()), "phase 1 leaves the base alone"
    moved = {path for path, value in run["before"].items() if not np.array_equal(value, phase2["base"][path])}
    last_block = set(backbones.blocks(base, backbone)[-1])
    assert moved and {path.split("/")[0] for path in moved} <= last_block, "phase 2 moves the last block only"
    for name, value in _batchnorm_statistics(base).items():
        assert np.array_equal(value, run["statistics"][name]), f"{name} moved during training"


def test_two_phases_history_continues_the_epochs_and_the_recipe_is_visible(generated_run):
    import keras

    run = generated_run
    result, (phase1, phase2) = run["result"], run["recorder"].fits
    assert phase1["epochs"] == [1, 2] and phase2["epochs"] == [3], "epochs overridden; phase 2 continues phase 1's count"
    assert result.history["epoch"].tolist() == [1, 2, 3]
    assert result.history["phase"].tolist() == [callbacks.PHASE_HEAD] * 2 + [callbacks.PHASE_BLOCKS]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(result.history.columns)
    assert result.phases["epochs"].tolist() == [2, 1] and result.phases["kept"].tolist() == [False, True]
    assert sorted(p.name for p in run["run_dir"].glob("*.keras")) == ["phase 1.keras", "phase 2.keras"]
    loss = run["head"].loss  # the default recipe smooths the labels: the categorical loss on one-hot targets
    assert isinstance(loss, keras.losses.CategoricalCrossentropy) and loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    assert result.test_probabilities.shape == result.head_test_probabilities.shape == (4, 3)
    assert not result.model.name.endswith("flip_averaged"), "2 arrays: no flips, so no flip averaging"


def test_two_phases_are_reproducible_from_the_seed(generated_run):
    """fit_two_phases seeds Keras and the batches' order: the same seed gives the same weights, another seed others."""
    run = generated_run
    base = run["base"]

    def trained(seed: int) -> list[np.ndarray]:
        base.set_weights(run["initial"])
        head = heads.build_head(base.output_shape[1:], 3, seed=0)  # the fixture's head started from these weights
        retraining.fit_two_phases(run["settings"].replace(seed=seed), run["frame"], base, head, run["arrays"],
                                  run_dir=run["folder"] / f"seed {seed}", **run["options"])
        return head.get_weights() + [w.numpy().copy() for w in base.weights]

    again, other = trained(run["settings"].seed), trained(run["settings"].seed + 1)
    assert all(np.array_equal(a, b) for a, b in zip(run["trained"], again)), "the same seed, the same weights"
    assert not all(np.array_equal(a, b) for a, b in zip(run["trained"], other)), "another seed, other weights"


def test_balanced_class_weights_make_every_class_count_the_same():
    weights = retraining.balanced_class_weights(np.array([0] * 6 + [1] * 2 + [2] * 4), 4)
    assert weights[1] == pytest.approx(2 * weights[2]) == pytest.approx(3 * weights[0]), "half the images, twice the weight"
    assert weights[0] * 6 == pytest.approx(weights[1] * 2) == pytest.approx(weights[2] * 4)
    assert weights[3] == max(weights.values()), "a class without training images gets the largest weight"
    for labels, n_classes, message in (([], 3, "non-empty"), ([0, 3], 3, "between 0 and 2"), ([0.5], 2, "class ids"),
                                       ([0, 1], 0, "n_classes")):
        with pytest.raises(ValueError, match=message):
            retraining.balanced_class_weights(np.asarray(labels), n_classes)


def test_two_phases_validate_their_inputs_before_anything_trains(resnet, tmp_path):
    settings, backbone, base, head, _ = resnet
    frame = pd.DataFrame({"path": [f"{i}.jpg" for i in range(6)], "label": ["x", "y", "z"] * 2,
                          "split": ["train"] * 3 + ["validation"] * 3})
    block_shape = heads.block_input_model(base, backbone, 1).output_shape[1:]
    arrays = [np.zeros((6, *block_shape), "float16"), np.zeros((6, *base.output_shape[1:]), "float16")]
    run_dir = tmp_path / "run"

    def fit(**changes):
        arguments = {"frame": frame, "head": head, "arrays": arrays, "n_blocks": 1} | changes
        return retraining.fit_two_phases(settings, base=base, run_dir=run_dir, **arguments)

    cases = [
        ({"frame": frame.drop(columns="split")}, ValueError, "split it first"),
        ({"frame": frame.assign(split="train")}, ValueError, "train and validation rows"),
        ({"frame": frame.assign(label=["x", "y"] * 3)}, ValueError, "3 outputs but the data has 2 classes"),
        ({"arrays": arrays[:1]}, ValueError, "outputs of heads.cached_outputs_model"),
        ({"arrays": [a[:5] for a in arrays]}, ValueError, "outputs of heads.cached_outputs_model"),
        ({"n_blocks": 4}, ValueError, r"arrays\[0\] should hold block inputs.*n_blocks=4"),
        ({"arrays": [arrays[0], arrays[1][:, :1]]}, ValueError, r"arrays\[1\] should hold feature maps"),
        ({"n_blocks": 0}, ValueError, "n_blocks must be a whole number between 1 and"),
        ({"n_blocks": True}, ValueError, "n_blocks"),
        ({"label_smoothing": 1.0}, ValueError, "label_smoothing must be a share"),
        ({"phase2_learning_rate": 0}, ValueError, "phase2_learning_rate must be a positive number"),
        ({"phase2_schedule": "linear"}, ValueError, "phase2_schedule must be 'cosine' or 'constant'"),
        ({"head_epochs": 0}, ValueError, "head_epochs must be a whole number"),
        ({"block_epochs": 2.5}, ValueError, "block_epochs must be a whole number"),
        ({"extra_callbacks": [print]}, TypeError, "Keras callbacks"),
    ]
    for changes, error, message in cases:
        with pytest.raises(error, match=message):
            fit(**changes)
    assert not run_dir.exists(), "a refused call writes nothing"
    assert math.isclose(retraining.FINETUNE_LEARNING_RATE_FACTOR, 0.1)


@pytest.mark.integration
def test_phase2_that_does_not_beat_phase1_is_dropped(mobilenet, simpsons_frame, tmp_path):
    settings, backbone, _ = mobilenet
    settings = settings.replace(learning_rate=1e-2)
    base = backbones.load_base(settings)  # a fresh base: this test wrecks it, then expects it back
    head = heads.build_head(base.output_shape[1:], 3, seed=9)
    # Validated on its own training frames, phase 1 surely reaches 100 %: a wrecked phase 2 cannot beat it.
    train = simpsons_frame[simpsons_frame["split"] == "train"]
    frame = pd.concat([train, train.assign(split="validation"), simpsons_frame[simpsons_frame["split"] == "test"]])
    frame = frame.reset_index(drop=True)
    arrays = features.cached_arrays(heads.cached_outputs_model(base, backbone, 1), frame, settings, progress=False)
    before = {w.path: w.numpy().copy() for w in base.weights}
    result = retraining.fit_two_phases(
        settings, frame, base, head, arrays, n_blocks=1, head_epochs=40, label_smoothing=0.0, class_weights=False,
        phase2_learning_rate=50.0, phase2_schedule="constant", run_dir=tmp_path / "run",  # can only make things worse
    )
    assert result.phases["validation accuracy"].iloc[0] == 1.0
    assert result.phases["kept"].tolist() == [True, False] and result.validation_accuracy == 1.0
    assert all(np.array_equal(w.numpy(), before[w.path]) for w in base.weights), "phase 1's weights are back in the base"
    test = frame[frame["split"] == "test"]
    images = pipeline.predict_images(result.model, test, settings)
    assert np.abs(images - result.head_test_probabilities).max() < 0.02, "the returned model is phase 1's (float16 rounding)"
    np.testing.assert_array_equal(result.test_probabilities, result.head_test_probabilities)

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
    assert not re.search(r"\bretraining\b", code), "notebook 02 shows the steps in Keras, not through helpers.retraining"


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
    assert result.model.name.endswith("_flip_averaged"), "4 arrays: trained on flips, so predictions average both views"
    assert sorted(p.name for p in (tmp_path / "run").glob("*.keras")) == ["phase 1.keras", "phase 2.keras"]
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
