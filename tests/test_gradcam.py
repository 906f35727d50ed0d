"""Grad-CAM: heatmaps where the answer is known, every backbone of the table, the overlay."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import backbones, gradcam, heads, plots
from helpers.settings import load_settings

SIZE = 32


def _settings(tmp_path, **overrides):
    values = {"profile": "smoke", "backbone": "mobilenet", "alpha": 0.75, "cache_dir": tmp_path / "cache"} | overrides
    return load_settings(values, environ={})


def _two_squares() -> np.ndarray:
    """Grey image, a red square top left (rows/cols 2-9), a blue square bottom right (rows/cols 22-29)."""
    image = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    image[2:10, 2:10] = (255, 0, 0)
    image[22:30, 22:30] = (0, 0, 255)
    return image


def _colour_model():
    """base: a 1x1 convolution whose channel 0 fires on red, channel 1 on blue; head: class 0 = red, 1 = blue.

    Built as the kit's retrained models are (assemble_model: image -> nested base -> head), so the
    heatmap of class 0 must cover the red square and nothing else, class 1 the blue square.
    """
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(2, 1, name="colour_conv")(inputs)
    x = keras.layers.ReLU(name="colour_relu")(x)
    base = keras.Model(inputs, x, name="colour_base")
    # MobileNet preprocessing maps red (255, 0, 0) to (1, -1, -1), grey to about 0.
    kernel = np.array([[1.0, -1.0], [-0.5, -0.5], [-0.5, 1.0]], dtype="float32").reshape(1, 1, 3, 2)
    base.get_layer("colour_conv").set_weights([kernel, np.zeros(2, dtype="float32")])
    head = heads.build_head(base.output_shape[1:], 2, dropout=0.0, seed=0)
    head.get_layer("head_predictions").set_weights([np.eye(2, dtype="float32") * 5.0, np.zeros(2, dtype="float32")])
    return heads.assemble_model(base, head)


def test_heatmap_peaks_on_the_object_that_decides_the_class(tmp_path):
    settings = _settings(tmp_path)
    model = _colour_model()
    image = _two_squares()
    result = gradcam.compute(model, [image, image], settings, layer="colour_relu", class_ids=[0, 1])
    assert result.heatmaps.shape == (2, SIZE, SIZE) and result.layer == "colour_relu"
    red, blue = result.heatmaps
    assert red[2:10, 2:10].min() == pytest.approx(1.0) and red[22:30, 22:30].max() == 0.0
    assert blue[22:30, 22:30].min() == pytest.approx(1.0) and blue[2:10, 2:10].max() == 0.0
    assert red.sum() == pytest.approx(64.0, abs=1.0), "only the red square explains 'red'"
    top_left, bottom_right = result.peak(0), result.peak(1)
    assert top_left[0] < 0.35 and top_left[1] < 0.35 and bottom_right[0] > 0.65 and bottom_right[1] > 0.65
    seen = backbones.get_backbone(settings=settings).preprocess(image[None].astype("float32"))
    np.testing.assert_allclose(result.probabilities[0], np.asarray(model(seen))[0], atol=1e-5)


def test_default_class_is_the_prediction_and_a_one_colour_image_points_at_it(tmp_path):
    settings = _settings(tmp_path)
    model = _colour_model()
    only_red = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    only_red[20:28, 4:12] = (255, 0, 0)
    result = gradcam.compute(model, [only_red], settings, layer="colour_relu")
    assert result.class_ids.tolist() == [0] and result.probabilities[0, 0] > 0.5
    row, column = result.peak(0)
    assert 20 / SIZE <= row <= 28 / SIZE and 4 / SIZE <= column <= 12 / SIZE


def test_bad_layers_and_class_ids_are_refused_with_advice(tmp_path):
    settings = _settings(tmp_path)
    model = _colour_model()
    with pytest.raises(ValueError, match="no layer 'nope'"):
        gradcam.compute(model, [_two_squares()], settings, layer="nope")
    with pytest.raises(ValueError, match="spatial map"):
        gradcam.compute(model, [_two_squares()], settings, layer="head_avg_pool")
    with pytest.raises(ValueError, match="one per image"):
        gradcam.compute(model, [_two_squares()], settings, layer="colour_relu", class_ids=[0, 1])
    with pytest.raises(ValueError, match="between 0 and 1"):
        gradcam.compute(model, [_two_squares()], settings, layer="colour_relu", class_ids=[2])
    with pytest.raises(ValueError, match="no images"):
        gradcam.compute(model, [], settings, layer="colour_relu")


# MobileNet runs in the quick suite; the larger networks take 10-17 s each to build on 2 cores.
BACKBONE_KEYS = [
    key if key == "mobilenet" else pytest.param(key, marks=pytest.mark.slow) for key in sorted(backbones.BACKBONES)
]


@pytest.mark.parametrize("key", BACKBONE_KEYS)
def test_every_backbone_in_the_table_gives_a_heatmap_at_its_table_layer(key, tmp_path):
    """Classifier and retrained model (nested base) of each backbone, random weights, 96 px."""
    backbone = backbones.BACKBONES[key]
    settings = _settings(tmp_path, backbone=key, alpha=None, image_size=96)
    classifier = backbones.load_classifier(settings, weights=None)
    layer = classifier.get_layer(backbone.cam_layer)
    grid = tuple(layer.output.shape[1:3])
    image = np.random.default_rng(1).integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
    result = gradcam.compute(classifier, [image], settings)
    assert result.layer == backbone.cam_layer and result.heatmaps.shape == (1, *grid)
    assert np.isfinite(result.heatmaps).all() and 0.0 <= result.heatmaps.min() and result.heatmaps.max() <= 1.0
    np.testing.assert_allclose(
        result.probabilities, np.asarray(classifier(backbone.preprocess(image[None].astype("float32")))), atol=1e-4
    )
    base = backbones.load_base(settings, weights=None)
    retrained = heads.assemble_model(base, heads.build_head(base.output_shape[1:], 3, seed=0))
    nested = gradcam.compute(retrained, [image], settings)
    assert nested.heatmaps.shape == (1, *grid) and nested.probabilities.shape == (1, 3)


@pytest.mark.integration
def test_real_classifier_looks_at_the_cat_pasted_in_a_corner(real_weights):
    """MobileNet's ImageNet classifier on a grey canvas with a photo of a cat in its top-left quarter."""
    from PIL import Image

    from helpers import datasets, explore

    cat = np.asarray(Image.open(datasets.SAMPLE_PHOTOS / "cat.jpg").convert("RGB").resize((120, 100), Image.BILINEAR))
    canvas = np.full((224, 224, 3), 120, dtype=np.uint8)
    canvas[4:104, 4:124] = cat
    classifier = backbones.load_classifier(real_weights)
    result = gradcam.compute(classifier, [canvas], real_weights)
    names = explore.imagenet_class_names(real_weights)
    assert "cat" in names[int(result.class_ids[0])], f"expected a cat class, got {names[int(result.class_ids[0])]}"
    row, column = result.peak(0)
    assert row < 0.5 and column < 0.6, f"the heatmap should peak on the cat (top left), peaked at {(row, column)}"
    heatmap = result.heatmaps[0]
    assert heatmap[: heatmap.shape[0] // 2, : heatmap.shape[1] // 2].sum() > 0.5 * heatmap.sum()


def test_overlay_blends_and_checks_its_inputs():
    image = np.zeros((10, 20, 3), dtype=np.uint8)
    heatmap = np.zeros((2, 2), dtype=np.float32)
    heatmap[0, 0] = 1.0
    blended = gradcam.overlay(image, heatmap, alpha=0.5)
    assert blended.shape == image.shape and blended.dtype == np.uint8
    assert blended[0, 0, 0] > blended[9, 19, 0] and blended[9, 19, 2] > blended[9, 19, 0], (
        "warm colours where the map is high, blue where it is 0"
    )
    assert np.array_equal(gradcam.overlay(image, heatmap, alpha=0.0), image)
    with pytest.raises(ValueError, match="alpha"):
        gradcam.overlay(image, heatmap, alpha=2)
    with pytest.raises(ValueError, match="2-D"):
        gradcam.overlay(image, np.zeros((2, 2, 2)))


def test_gradcam_grid_draws_image_and_overlay_pairs(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model = _colour_model()
    result = gradcam.compute(model, [_two_squares()] * 3, _settings(tmp_path), layer="colour_relu", class_ids=[0, 1, 0])
    figure = plots.gradcam_grid(result, titles=["a", "b", "c"], columns=2)
    assert len([ax for ax in figure.axes if ax.images]) == 6
    with pytest.raises(ValueError, match="one per image"):
        plots.gradcam_grid(result, titles=["a"])
