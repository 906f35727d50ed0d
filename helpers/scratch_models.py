"""Models trained from scratch, for notebook 04's approach (b): a small CNN and the "reset" backbone.

Both start from random weights and train every layer, so their BatchNormalization
layers use a low momentum (:data:`SCRATCH_BN_MOMENTUM`) and their images are smaller
on a CPU (:func:`scratch_image_size`, from the profile). :mod:`helpers.approaches`
trains and scores them on the shared split; :mod:`helpers.sample_efficiency` retrains
the small CNN on subsets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from helpers import backbones, device, heads
from helpers.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import keras


# BatchNormalization momentum of the from-scratch models. Keras's default (0.99) averages
# the statistics of the last ~100 batches; a from-scratch network trained for a few
# dozen steps changes its weights so fast that such stale statistics make it predict a
# single class at test time (measured: 50 % on photo vs drawing, although it fits the
# training images). 0.5 follows the current weights.
SCRATCH_BN_MOMENTUM = 0.5


def scratch_image_size(settings: Settings) -> int:
    """Image side for the from-scratch models in this profile (``Profile.scratch_image_size``, never above the backbone's).

    Taught in notebook 04, section 3 (training from scratch).
    """
    full = backbones.input_size(settings)
    chosen = settings.scale.scratch_image_size
    return full if chosen is None else min(chosen, full)



@device.under_strategy
def small_cnn(
    settings: Settings,
    num_classes: int,
    *,
    image_size: int | None = None,
    filters: Sequence[int] = (16, 32, 64),
    dropout: float = 0.3,
    name: str = "small_cnn",
) -> "keras.Model":
    """The kit's small convolutional network for training from scratch, sized by the course settings.

    Used by the kit's own runs of notebook 04's approaches (:func:`helpers.approaches.run_small_cnn`,
    the ``compare`` figures) and by :mod:`helpers.sample_efficiency` when no builder is given;
    notebook 04's exercise 1 has students write their own (``build_small_cnn``), which the notebook uses.

    Input: RGB images with values 0-255 (rescaled inside the model). Each stage is a
    3x3 convolution, batch normalisation (momentum :data:`SCRATCH_BN_MOMENTUM`), ReLU
    and 2x2 max pooling; then global average pooling, dropout and a softmax over the
    classes. With the default filters it has about 24 thousand parameters, every one of
    them trained. Return value: an uncompiled model (compile with
    :func:`helpers.compiling.compile_model`).

    Args:
        settings: Course settings: the input side is the profile's from-scratch image size
            (:func:`scratch_image_size`) unless ``image_size`` is given.
        num_classes: Number of classes (at least 2).
        image_size: Side of the square input images, instead of the profile's.
        filters: Number of filters of each convolutional stage.
        dropout: Dropout rate before the classifier.
        name: Model name.

    Raises:
        TypeError: ``settings`` is not the course settings.
        ValueError: A size, count or rate is out of range.
    """
    import keras

    if not isinstance(settings, Settings):
        raise TypeError(
            f"settings must be the course settings (kit.settings), not {type(settings).__name__}; "
            "pass image_size=... for another input size."
        )
    image_size = scratch_image_size(settings) if image_size is None else int(image_size)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}.")
    if not filters or any(int(f) < 1 for f in filters):
        raise ValueError("filters must list at least one positive number of filters per stage.")
    if image_size < 2 ** len(filters):
        raise ValueError(f"image_size {image_size} is too small for {len(filters)} pooling stages; use larger images.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), not {dropout}.")
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    for stage, count in enumerate(filters, start=1):
        # No bias: the batch normalisation that follows has its own shift.
        x = keras.layers.Conv2D(int(count), 3, padding="same", use_bias=False, name=f"conv{stage}")(x)
        x = keras.layers.BatchNormalization(momentum=SCRATCH_BN_MOMENTUM, name=f"bn{stage}")(x)
        x = keras.layers.Activation("relu", name=f"relu{stage}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


@device.under_strategy
def build_scratch_backbone(
    settings: Settings,
    num_classes: int,
    *,
    image_size: int | None = None,
) -> "keras.Model":
    """The Wolfram example's "reset the net": the backbone's architecture with random weights, plus the head.

    The model notebook 04, section 3 builds in plain Keras, as one call for
    :func:`helpers.approaches.run_scratch_backbone` (the slides' figures and the tests).

    The same layers as the pretrained backbone (``weights=None``) and the same head as
    transfer learning, but nothing is pretrained, so *every* layer is trained,
    BatchNormalization included (random weights have no statistics worth freezing;
    their momentum is :data:`SCRATCH_BN_MOMENTUM`, for short training runs).
    Inputs are images preprocessed with the backbone's ``preprocess_input``, as for
    transfer learning.

    Args:
        settings: Course settings (backbone, alpha).
        num_classes: Number of classes.
        image_size: Input side; :func:`scratch_image_size` by default.

    Returns:
        An uncompiled model whose every weight except BatchNorm moving statistics is trainable.
    """
    import keras

    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}.")
    size = image_size or scratch_image_size(settings)
    base = backbones.load_base(settings.replace(image_size=size), weights=None, pooling=None)
    base.trainable = True
    model = _attach_head(base, num_classes, settings)
    for layer in model.layers:
        layer.trainable = True
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = SCRATCH_BN_MOMENTUM
    return model


@device.under_strategy
def _attach_head(base: "keras.Model", num_classes: int, settings: Settings) -> "keras.Model":
    """image -> base -> transfer learning's head (:func:`helpers.heads.build_head`), all trainable.

    Unlike :func:`helpers.heads.assemble_model`, the base is *not* called with
    ``training=False``: its BatchNormalization layers must learn their statistics.
    """
    import keras

    head = heads.build_head(base.output_shape[1:], num_classes, seed=settings.seed)
    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    outputs = head(base(inputs))
    return keras.Model(inputs, outputs, name=f"{base.name}_from_scratch")

