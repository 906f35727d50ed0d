"""The backbone table: blocks, freezing (BatchNorm stays frozen), feature layers, real MobileNet labels."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import backbones, freezing
from helpers.settings import load_settings

# What "the last block" must mean for each backbone (a prefix every layer of it shares).
LAST_BLOCK_PREFIXES = {
    "resnet50": ("conv5_block3_",),
    "mobilenet": ("conv_dw_13", "conv_pw_13", "conv_pad_13"),
    "mobilenet_v2": ("block_16_", "Conv_1", "out_relu"),
    "efficientnet_b0": ("block7a_", "top_"),
    "vgg16": ("block5_",),
    "inception_v3": (),  # generic layer names; checked through its boundaries instead
}


def _settings(tmp_path, name, **extra):
    return load_settings({"backbone": name, "cache_dir": str(tmp_path), **extra}, environ={})


@pytest.fixture(scope="module", params=sorted(backbones.BACKBONES))
def random_base(request, tmp_path_factory):
    """Each backbone's base with random weights (same architecture and names as ImageNet's)."""
    name = request.param
    settings = _settings(tmp_path_factory.mktemp(name), name)
    return name, backbones.load_base(settings, weights=None)


def _trainable_weight_ids(model):
    return {id(w) for w in model.trainable_weights}


def test_block_ends_exist_and_partition_the_layers(random_base):
    name, model = random_base
    table = backbones.BACKBONES[name]
    parts = backbones.blocks(model, table)
    assert len(parts) == len(table.block_ends)
    flat = [layer for part in parts for layer in part]
    assert len(flat) == len(set(flat)), "a layer belongs to two blocks"
    assert parts[-1][-1] == table.block_ends[-1]
    prefixes = LAST_BLOCK_PREFIXES[name]
    if prefixes:
        assert all(layer.startswith(prefixes) for layer in parts[-1]), parts[-1]
    else:
        assert parts[-1][-1] == "mixed10" and "mixed9" not in parts[-1]


def test_freezing_leaves_exactly_the_last_block_trainable(random_base):
    import keras

    name, model = random_base
    table = backbones.BACKBONES[name]
    last, second = backbones.blocks(model, table)[-1], backbones.blocks(model, table)[-2]

    assert freezing.freeze_all_but_last_blocks(model, table, 0) == []
    assert model.trainable_weights == []

    trainable = freezing.freeze_all_but_last_blocks(model, table, 1)
    expected = {
        id(w)
        for layer in model.layers
        if layer.name in last and not isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.weights
    }
    assert expected, f"{name}: the last block has weights to train"
    assert _trainable_weight_ids(model) == expected
    assert all(not isinstance(model.get_layer(n), keras.layers.BatchNormalization) for n in trainable)
    assert all(not layer.trainable for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))

    freezing.freeze_all_but_last_blocks(model, table, 2)
    names = {layer.name for layer in model.layers if layer.trainable and layer.weights}
    assert names and names <= set(last) | set(second)
    assert any(n in second for n in names)


def test_block_input_layer_is_the_previous_block_end(random_base):
    name, model = random_base
    table = backbones.BACKBONES[name]
    assert backbones.block_input_layer(model, table, 1) == table.block_ends[-2]
    with pytest.raises(ValueError, match="n_blocks"):
        backbones.block_input_layer(model, table, 0)


def test_blocks_of_the_wrong_backbone_are_refused(tmp_path):
    model = backbones.load_base(_settings(tmp_path, "mobilenet"), weights=None)
    with pytest.raises(ValueError, match="not a ResNet50"):
        backbones.blocks(model, backbones.BACKBONES["resnet50"])


@pytest.mark.parametrize("name", ["resnet50", "mobilenet"])
def test_feature_extractor_gives_penultimate_vectors(tmp_path, name):
    settings = _settings(tmp_path, name)
    extractor = backbones.load_feature_extractor(settings, weights=None)
    width = {"resnet50": 2048, "mobilenet": 1024}[name]
    assert tuple(extractor.output.shape) == (None, width)
    maps = backbones.load_feature_extractor(settings, weights=None, layer=backbones.BACKBONES[name].block_ends[-2], pooling=None)
    assert len(maps.output.shape) == 4


def test_unknown_layer_and_pooling_are_clear_errors(tmp_path):
    settings = _settings(tmp_path, "mobilenet")
    with pytest.raises(ValueError, match="no layer"):
        backbones.load_feature_extractor(settings, weights=None, layer="nope")
    with pytest.raises(ValueError, match="pooling"):
        backbones.load_base(settings, weights=None, pooling="mean")


def test_alpha_validation_and_weight_file_names(tmp_path):
    with pytest.raises(ValueError, match="alpha"):
        backbones.get_backbone("mobilenet").resolve_alpha(0.6)
    with pytest.raises(ValueError, match="no width multiplier"):
        backbones.get_backbone("resnet50").resolve_alpha(0.5)
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.get_backbone("alexnet")
    settings = _settings(tmp_path, "mobilenet", alpha=0.75)
    assert backbones.weight_file_name(settings, include_top=True) == "mobilenet_7_5_224_tf.h5"
    assert backbones.weight_file_name(settings, include_top=False) == "mobilenet_7_5_224_tf_no_top.h5"
    v2 = _settings(tmp_path, "mobilenet_v2", alpha=0.35)
    assert backbones.weight_file_name(v2, False) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert backbones.weight_file_name(_settings(tmp_path, "resnet50"), False).endswith("_notop.h5")


def test_every_backbone_has_a_complete_row():
    for row in backbones.table_rows():
        assert row["blocks"] >= 5 and row["input"] in (224, 299)
    for backbone in backbones.BACKBONES.values():
        assert callable(backbone.preprocess) and callable(backbone.decode_predictions)


def test_models_are_built_under_the_device_strategy(tmp_path):
    """The base remembers the strategy it was built under: fit and predict then run under it."""
    from helpers import device

    base = backbones.load_base(_settings(tmp_path, "mobilenet", alpha=0.25, image_size=96), weights=None)
    assert base.distribute_strategy is device.strategy()


@pytest.mark.integration
def test_mobilenet_with_real_weights_labels_the_cat_photo(real_weights):
    import tensorflow as tf
    from PIL import Image

    from helpers import datasets

    model = backbones.load_classifier(real_weights)
    table = backbones.get_backbone(settings=real_weights)
    chelsea = np.asarray(Image.open(datasets.SAMPLE_PHOTOS / "cat.jpg").convert("RGB"))
    image = tf.image.resize(chelsea[None].astype("float32"), (224, 224)).numpy()
    top5 = table.decode_predictions(model.predict(table.preprocess(image), verbose=0), top=5)[0]
    labels = [label for _, label, _ in top5]
    assert {"Egyptian_cat", "tabby", "tiger_cat"} & set(labels[:3]), labels
    assert np.isclose(sum(p for *_, p in table.decode_predictions(model.predict(table.preprocess(image), verbose=0), top=1000)[0]), 1.0, atol=1e-3)
