"""Models trained from scratch (helpers.scratch_models): the small CNN and the reset backbone."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import scratch_models
from helpers.freezing import count_trainable_parameters
from helpers.settings import PROFILES, load_settings

SETTINGS = load_settings({"backbone": "mobilenet", "alpha": 0.75, "profile": "smoke"}, environ={})

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

    model = scratch_models.small_cnn(SETTINGS, classes, image_size=32, filters=filters)
    assert model.output_shape == (None, classes)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == list(filters)
    conv_bn, last = _conv_bn_parameters(filters)
    expected = conv_bn + last * classes + classes
    assert count_trainable_parameters(model) == expected
    # Only the BatchNorm moving statistics are not trained.
    assert model.count_params() - expected == 2 * sum(filters)


def test_small_cnn_trains_one_step():
    from helpers import compiling

    model = compiling.compile_model(scratch_models.small_cnn(SETTINGS, 2, image_size=32, filters=(4, 8)), 1e-2)
    images = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3)).astype("float32")
    labels = np.array([0, 1] * 4)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(images, labels)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    assert np.isfinite(loss)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_small_cnn_takes_its_size_from_the_settings_not_a_number():
    model = scratch_models.small_cnn(SETTINGS, 3)
    side = scratch_models.scratch_image_size(SETTINGS)
    assert model.input_shape == (None, side, side, 3) and model.output_shape == (None, 3)
    with pytest.raises(TypeError, match="course settings"):
        scratch_models.small_cnn(32, 2)  # notebook 04's exercise signature: not the kit's


def test_small_cnn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least 2"):
        scratch_models.small_cnn(SETTINGS, 1, image_size=32)
    with pytest.raises(ValueError, match="too small"):
        scratch_models.small_cnn(SETTINGS, 2, image_size=4, filters=(8, 8, 8))
    with pytest.raises(ValueError, match="dropout"):
        scratch_models.small_cnn(SETTINGS, 2, image_size=32, dropout=1.0)


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
    model = scratch_models.build_scratch_backbone(scratch_settings, 2, image_size=32)
    assert [call["weights"] for call in calls] == [None], "the reset net must be built with random weights"
    assert model.output_shape == (None, 2)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.trainable and layer.momentum == scratch_models.SCRATCH_BN_MOMENTUM for layer in norms)
    # Every weight is trained except the BatchNorm moving statistics (mean and variance: 2 per channel).
    moving = sum(2 * int(layer.moving_mean.shape[0]) for layer in norms)
    assert count_trainable_parameters(model) == model.count_params() - moving
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
        assert scratch_models.scratch_image_size(scratch_settings.replace(profile=profile)) == expected
