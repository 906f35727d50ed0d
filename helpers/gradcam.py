"""Grad-CAM: where in the image a classifier found its answer.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a convolutional layer's
output by how much the class score grows with it (the gradient, averaged over the
positions), sums the weighted channels and keeps the positive part: a coarse map,
one value per position of that layer (7x7 for most backbones at 224 px), high where
the evidence for the class lies. Upsampled and laid over the image, it shows whether
a model that says "Bart" looks at Bart or at the couch behind him.

The layer comes from the backbone table (:attr:`helpers.backbones.Backbone.cam_layer`:
the end of the last block, the last spatial map before the classifier pools it), so
the same call works for every backbone. Two kinds of model are understood:

* a backbone's ImageNet classifier (:func:`helpers.backbones.load_classifier`), the
  layer one of its own layers;
* a retrained model (:func:`helpers.heads.assemble_model`: image -> base -> head),
  the layer inside the nested base; more generally any model whose layers form a
  chain with the base among them.

The class score is the logit (the softmax's input), as in the paper: a confident
softmax has vanishing gradients. Images are decoded and resized like the kit's
pipeline and preprocessed for the settings' backbone. Figures: :func:`overlay` gives
the blended image, :func:`helpers.plots.gradcam_grid` draws a gallery.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from helpers import backbones, pipeline
from helpers.device import import_tensorflow
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = ["GradCam", "build_gradcam_model", "compute", "overlay"]

DEFAULT_ALPHA = 0.45


@dataclasses.dataclass
class GradCam:
    """Grad-CAM heatmaps for a batch of images.

    Returned by :func:`compute` in notebook 02, section 7, notebook 04, section 6 and notebook 05, section 6.

    Attributes:
        images: The images as the model saw them, uint8 ``(n, size, size, 3)``.
        heatmaps: ``(n, h, w)`` in [0, 1] (the layer's grid), 1 at each image's strongest evidence;
            all zero where nothing in the layer pushes the class up.
        class_ids: The class each heatmap explains (the prediction unless asked otherwise).
        probabilities: The model's outputs ``(n, classes)``.
        layer: Name of the layer the heatmaps come from.
    """

    images: np.ndarray
    heatmaps: np.ndarray
    class_ids: np.ndarray
    probabilities: np.ndarray
    layer: str

    def overlays(self, alpha: float = DEFAULT_ALPHA) -> list[np.ndarray]:
        """Each image with its heatmap laid over it (:func:`overlay`)."""
        return [overlay(image, heatmap, alpha=alpha) for image, heatmap in zip(self.images, self.heatmaps)]

    def peak(self, index: int = 0) -> tuple[float, float]:
        """Where heatmap ``index`` is highest, as (row, column) fractions of the image (0 = top/left)."""
        heatmap = self.heatmaps[int(index)]
        row, column = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        return (row + 0.5) / heatmap.shape[0], (column + 0.5) / heatmap.shape[1]


def _find_layer(model: "keras.Model", name: str) -> tuple[int | None, Any]:
    """(position of the nested model holding ``name`` in ``model.layers``, or None if direct; the layer)."""
    import keras

    try:
        return None, model.get_layer(name)
    except ValueError:
        pass
    for position, layer in enumerate(model.layers):
        if isinstance(layer, keras.Model):
            try:
                return position, layer.get_layer(name)
            except ValueError:
                continue
    raise ValueError(
        f"model {model.name!r} has no layer {name!r}, neither directly nor in a nested model; pass layer= with the "
        "name of a convolutional layer (helpers.backbones.candidate_layers lists them) or settings for its backbone."
    )


def _score_parts(model: "keras.Model") -> tuple["keras.Model | None", Any]:
    """Split the end of a model into (the part before its last layer, that last layer).

    The last layer is the one whose input holds the logits (``Activation("softmax")``)
    or computes them (``Dense(activation="softmax")``). For a model ending in a nested
    model (a head), the split is inside it.
    """
    import keras

    last = model.layers[-1]
    if isinstance(last, keras.Model):
        body = keras.Model(last.inputs, last.layers[-1].input, name=f"{last.name}_body")
        return body, last.layers[-1]
    return None, last


def _logits(last: Any, inputs: Any) -> tuple[Any, bool]:
    """(class scores before the softmax, True) from the last layer's input; (its output, False) otherwise."""
    import keras

    activation = getattr(last, "activation", None)
    softmax = activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"
    if isinstance(last, keras.layers.Activation) and softmax:
        return inputs, True
    if isinstance(last, keras.layers.Dense) and softmax:
        scores = keras.ops.matmul(inputs, last.kernel)
        return (scores + last.bias if last.use_bias else scores), True
    return last(inputs), False


def build_gradcam_model(model: "keras.Model", layer: str) -> "keras.Model":
    """A model from images to ``[layer's output, the last layer's input]`` (see :func:`compute`).

    Used inside :func:`compute` (notebook 02, section 7).

    Raises:
        ValueError: The layer is not in the model (nor in a nested model), its output is
            not a spatial map, or the model is not a chain around a nested base.
    """
    import keras

    position, target = _find_layer(model, layer)
    if len(target.output.shape) != 4:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(target.output.shape)}; Grad-CAM needs a spatial map "
            "(batch, height, width, channels): choose a convolutional layer before the global pooling."
        )
    body, _ = _score_parts(model)
    if position is None:
        before_last = model.layers[-1].input
        outputs = [target.output, body(before_last) if body is not None else before_last]
        # One input tensor, not a list of one: Keras warns when called with a tensor otherwise.
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        grad_model = keras.Model(inputs, outputs, name=f"{model.name}_gradcam")
    else:
        # A nested base (assemble_model): run the chain of outer layers, the base split at the layer.
        inner, rest = model.layers[position], model.layers[position + 1 :]
        if not rest:
            raise ValueError(f"the model ends with {inner.name!r}; pass that model itself to Grad-CAM.")
        inputs = keras.Input(shape=model.input_shape[1:], name="image")
        x = inputs
        for outer in model.layers[1:position]:
            x = outer(x)
        cam, x = keras.Model(inner.inputs, [target.output, inner.output])(x, training=False)
        for outer in rest[:-1]:
            x = outer(x)
        grad_model = keras.Model(inputs, [cam, body(x) if body is not None else x], name=f"{model.name}_gradcam")
    _check_same_outputs(model, grad_model)
    return grad_model


def _check_same_outputs(model: "keras.Model", grad_model: "keras.Model") -> None:
    """Refuse a rebuilt model that does not compute what the original computes (a branching graph)."""
    import keras

    probe = np.random.default_rng(0).uniform(-1, 1, size=(1, *model.input_shape[1:])).astype("float32")
    expected = np.asarray(model(probe, training=False))
    _, last = _score_parts(model)
    scores, is_logit = _logits(last, grad_model(probe, training=False)[1])
    got = np.asarray(keras.ops.softmax(scores, axis=-1) if is_logit else scores)
    if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-4):
        raise ValueError(
            f"cannot follow model {model.name!r} from the Grad-CAM layer to its output: use a backbone classifier "
            "or a model whose layers form a chain (image -> base -> head, as helpers.heads.assemble_model builds)."
        )


def _pixels(images: Sequence[Any], size: int, settings: Settings) -> np.ndarray:
    arrays = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            arrays.append(pipeline.load_image(image, size, settings=settings))
            continue
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"an image must be a file path or a (height, width, 3) array, not shape {array.shape}.")
        if array.shape[:2] != (size, size):
            from PIL import Image

            array = np.asarray(Image.fromarray(array.astype(np.uint8)).resize((size, size), Image.BILINEAR))
        arrays.append(array.astype(np.uint8))
    return np.stack(arrays)


def compute(
    model: "keras.Model",
    images: Sequence[Any],
    settings: Settings | None = None,
    *,
    layer: str | None = None,
    class_ids: Sequence[int] | None = None,
    batch_size: int = 16,
) -> GradCam:
    """Grad-CAM heatmaps of a model's predictions (or of chosen classes) for some images.

    Taught in notebook 02, section 7 (where the network looks); used again by notebook 04, section 6 and notebook 05,
    section 6.

    Args:
        model: A backbone's classifier or a retrained model (see the module docstring);
            it takes images preprocessed for the settings' backbone.
        images: File paths, or uint8 RGB arrays (resized to the model's input size).
        settings: Course settings (backbone: its preprocessing and its Grad-CAM layer).
        layer: The layer to explain; the backbone table's ``cam_layer`` by default.
        class_ids: The class to explain for each image; the predicted class by default.
        batch_size: Images per gradient computation.

    Returns:
        A :class:`GradCam` (heatmaps, classes, probabilities, the images as seen).

    Raises:
        ValueError: No images, a bad layer or model (see :func:`build_gradcam_model`),
            ``class_ids`` of the wrong length or out of range.
    """
    import keras

    tf = import_tensorflow()
    settings = settings or load_settings()
    backbone = backbones.get_backbone(settings=settings)
    images = list(images)
    if not images:
        raise ValueError("no images given; pass at least one path or array.")
    layer = layer or backbone.cam_layer
    size = int(model.input_shape[1] or backbones.input_size(settings, backbone))
    pixels = _pixels(images, size, settings)
    grad_model = build_gradcam_model(model, layer)
    _, last = _score_parts(model)
    n_classes = int(model.output_shape[-1])
    if class_ids is not None:
        class_ids = [int(c) for c in class_ids]
        if len(class_ids) != len(images):
            raise ValueError(f"{len(class_ids)} class ids for {len(images)} images; give one per image.")
        if any(not 0 <= c < n_classes for c in class_ids):
            raise ValueError(f"class ids must be between 0 and {n_classes - 1}.")

    heatmaps, chosen, outputs = [], [], []
    for start in range(0, len(pixels), batch_size):
        batch = backbone.preprocess(pixels[start : start + batch_size].astype("float32"))
        batch = tf.constant(batch)
        with tf.GradientTape() as tape:
            cam, before_last = grad_model(batch, training=False)
            scores, is_logit = _logits(last, before_last)
            probabilities = keras.ops.softmax(scores, axis=-1) if is_logit else scores
            ids = (
                np.asarray(class_ids[start : start + batch_size])
                if class_ids is not None
                else np.argmax(np.asarray(probabilities), axis=-1)
            )
            picked = tf.gather(scores, tf.constant(ids, dtype="int32"), axis=1, batch_dims=1)
            total = tf.reduce_sum(picked)  # images are independent (inference mode): one gradient for all
        gradients = tape.gradient(total, cam)
        if gradients is None:
            raise ValueError(f"the class scores do not depend on layer {layer!r}; choose a layer the prediction uses.")
        weights = tf.reduce_mean(gradients, axis=(1, 2))  # one weight per channel and image
        maps = tf.nn.relu(tf.einsum("bhwc,bc->bhw", cam, weights)).numpy()
        peaks = maps.reshape(len(maps), -1).max(axis=1)
        maps = maps / np.where(peaks > 0, peaks, 1.0)[:, None, None]
        heatmaps.append(maps.astype(np.float32))
        chosen.append(ids)
        outputs.append(np.asarray(probabilities, dtype=np.float32))
    return GradCam(pixels, np.concatenate(heatmaps), np.concatenate(chosen).astype(int), np.concatenate(outputs), layer)


def overlay(image: Any, heatmap: Any, *, alpha: float = DEFAULT_ALPHA, colormap: str = "jet") -> np.ndarray:
    """Lay a heatmap over an image: the map upsampled to the image, coloured, blended.

    Used by ``plots.gradcam_grid`` (notebook 02, section 7).

    Args:
        image: uint8 RGB array ``(height, width, 3)``.
        heatmap: ``(h, w)`` values in [0, 1] (any grid; upsampled bilinearly).
        alpha: Weight of the heatmap's colour (0 = the image alone, 1 = the map alone).
        colormap: A matplotlib colormap name (``jet``: red = strong evidence, blue = none).

    Returns:
        uint8 RGB array of the image's shape.

    >>> import numpy as np
    >>> picture = np.zeros((8, 8, 3), dtype=np.uint8)
    >>> blended = overlay(picture, np.eye(2), alpha=1.0)
    >>> blended.shape, blended.dtype.name
    ((8, 8, 3), 'uint8')
    >>> bool(blended[0, 0, 0] > blended[0, 7, 0])  # red where the map is 1, blue where it is 0
    True
    """
    import matplotlib
    from PIL import Image

    picture = np.asarray(image)
    if picture.ndim != 3 or picture.shape[2] != 3:
        raise ValueError(f"image must be a (height, width, 3) array, not shape {picture.shape}.")
    values = np.asarray(heatmap, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (height, width), not shape {values.shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}.")
    height, width = picture.shape[:2]
    resized = np.asarray(Image.fromarray(np.clip(values, 0, 1)).resize((width, height), Image.BILINEAR))
    coloured = matplotlib.colormaps[colormap](np.clip(resized, 0, 1))[..., :3] * 255.0
    blended = (1.0 - alpha) * picture.astype(np.float32) + alpha * coloured
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
