"""The new head on a pretrained base, and the models built from the two that share their layers.

The Dataiku lab's retraining puts a new **head** on the backbone without its ImageNet
classifier (``include_top=False``): pooling (``avg``, ``max`` or ``flatten``), dropout and
a softmax layer over the new classes, with optional L1/L2 regularisation
(:func:`build_head`). :func:`assemble_model` makes the whole classifier one ordinary
Keras model (image -> base -> head), which saves to ``.keras`` and reloads like any other.

The other models here share its layers, so training one trains it: the head after its
pooling (phase 1 trains it on cached pooled features), the base's last block(s) and the
tail from their input (phase 2 trains it on cached activations), a flipped view (a fixed
augmentation that can be cached) and test-time flip averaging. Every model is built under
:func:`helpers.device.strategy`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from helpers import backbones, device

if TYPE_CHECKING:  # pragma: no cover
    import keras


POOLINGS = ("avg", "max", "flatten")
DEFAULT_POOLING = "avg"
DEFAULT_DROPOUT = 0.2
_POOLING_LAYER_NAMES = {"avg": "head_avg_pool", "max": "head_max_pool", "flatten": "head_flatten"}


def pooling_layer(pooling: str, name: str) -> "keras.layers.Layer":
    """A new pooling layer of a head's kind: ``avg`` (global average), ``max`` (global max) or ``flatten``.

    Used by :func:`build_head` (notebook 02, section 2, exercise 1 has students write the head).
    """
    import keras

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS} (the lab's Average / Max / Flatten), not {pooling!r}.")
    return {
        "avg": keras.layers.GlobalAveragePooling2D,
        "max": keras.layers.GlobalMaxPooling2D,
        "flatten": keras.layers.Flatten,
    }[pooling](name=name)


def _regularizer(l1: float, l2: float) -> Any:
    import keras

    for name, value in (("l1", l1), ("l2", l2)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a number >= 0 (0 = no {name.upper()} penalty), not {value!r}.")
    if l1 and l2:
        return keras.regularizers.L1L2(l1=float(l1), l2=float(l2))
    if l1:
        return keras.regularizers.L1(float(l1))
    if l2:
        return keras.regularizers.L2(float(l2))
    return None


@device.under_strategy
def build_head(
    feature_shape: Sequence[int | None],
    n_classes: int,
    *,
    seed: int | None,
    pooling: str = DEFAULT_POOLING,
    dropout: float = DEFAULT_DROPOUT,
    l1: float = 0.0,
    l2: float = 0.0,
    name: str = "head",
) -> "keras.Model":
    """The new classifier put on top of a pretrained base: pooling, dropout, softmax, seeded.

    Used by the kit's own training (the ``retrain`` command, notebook 04's transfer and from-scratch
    approaches, the slides and benchmarks); notebook 02's exercise 1 has students write their own.
    The seed is required (keyword only): the kit's heads start from the same weights on every run.

    Args:
        feature_shape: Shape of the base's output for one image, e.g. ``(7, 7, 768)``
            (``base.output_shape[1:]``).
        n_classes: Number of classes (characters).
        pooling: ``"avg"`` (global average), ``"max"`` (global max) or ``"flatten"``
            (keep every position: many more weights).
        dropout: Share of the pooled features dropped at random during training (0 = none).
        l1: L1 penalty on the softmax layer's weights (0 = none).
        l2: L2 penalty on the softmax layer's weights (0 = none).
        seed: Seed of the weight initialisation and of the dropout mask (None: a random start).
        name: Model name.

    Returns:
        A Functional ``keras.Model`` from the 4-D feature map to class probabilities
        (layers ``head_<pooling>``, ``head_dropout``, ``head_predictions``).

    Raises:
        ValueError: A feature shape that is not a 3-D map, fewer than 2 classes, an
            unknown pooling, a dropout outside [0, 1) or a negative penalty.
    """
    import keras

    shape = tuple(feature_shape)
    if len(shape) != 3:
        raise ValueError(
            f"feature_shape must be the 3-D shape of one feature map (height, width, channels), not {shape}; "
            "load the base with include_top=False and pooling=None (backbones.load_base)."
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValueError(f"n_classes must be a whole number >= 2, not {n_classes!r}.")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a share in [0, 1), not {dropout!r}.")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS} (the lab's Average / Max / Flatten), not {pooling!r}.")
    regularizer = _regularizer(l1, l2)
    inputs = keras.Input(shape=shape, name=f"{name}_features")
    x = pooling_layer(pooling, _POOLING_LAYER_NAMES[pooling])(inputs)
    x = keras.layers.Dropout(float(dropout), seed=seed, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        int(n_classes),
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        kernel_regularizer=regularizer,
        name="head_predictions",
    )(x)
    return keras.Model(inputs, outputs, name=name)


def head_pooling(head: "keras.Model") -> str:
    """Which pooling a head built by :func:`build_head` uses (``avg``, ``max`` or ``flatten``).

    Not called in a notebook (notebook 02's head is the student's own): used by :func:`head_after_pooling`.
    """
    for pooling, layer_name in _POOLING_LAYER_NAMES.items():
        if any(layer.name == layer_name for layer in head.layers):
            return pooling
    raise ValueError(f"model {head.name!r} is not a head built by heads.build_head (no head pooling layer).")


@device.under_strategy
def head_after_pooling(head: "keras.Model") -> "keras.Model":
    """The part of ``head`` after its pooling layer (dropout + softmax), sharing its weights.

    Not called in a notebook: the benchmarks' training-loop section trains it on notebook 03's pooled features.

    Phase 1 trains this on pooled features: pooling has no weights, so training it on
    pooled vectors trains the head itself, with one vector per image in memory.
    """
    import keras

    pool = head.get_layer(_POOLING_LAYER_NAMES[head_pooling(head)])
    return keras.Model(pool.output, head.output, name=f"{head.name}_after_pooling")


@device.under_strategy
def assemble_model(base: "keras.Model", head: "keras.Model", *, name: str | None = None) -> "keras.Model":
    """The whole classifier as one ordinary Keras model: image -> base -> head.

    Taught in notebook 02, section 2.

    The base is called with ``training=False``: its BatchNormalization layers always
    run in inference mode, even in phase 2 when some of its layers are trained. The
    model takes images already preprocessed for the backbone (what
    :func:`helpers.pipeline.make_dataset` yields) and shares its layers with ``base``
    and ``head``, so training either trains it.

    Args:
        base: The pretrained base (``include_top=False``, 4-D output).
        head: A head whose input matches the base's output (:func:`build_head`).
        name: Model name; ``<base>_retrained`` by default.

    Raises:
        ValueError: The head does not fit the base's output.
    """
    import keras

    if tuple(head.input_shape[1:]) != tuple(base.output_shape[1:]):
        raise ValueError(
            f"the head takes inputs of shape {tuple(head.input_shape[1:])} but the base gives "
            f"{tuple(base.output_shape[1:])}; build the head with feature_shape=base.output_shape[1:]."
        )
    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    features = base(inputs, training=False)
    outputs = head(features)
    return keras.Model(inputs, outputs, name=name or f"{base.name}_retrained")


@device.under_strategy
def block_input_model(base: "keras.Model", backbone: backbones.Backbone, n_blocks: int = 1) -> "keras.Model":
    """A model from images to the input of the last ``n_blocks`` blocks (the activations phase 2 caches).

    Used in notebooks 04 and 05 (their cached block inputs) and by the benchmarks' equivalence check.
    """
    import keras

    layer = backbones.block_input_layer(base, backbone, n_blocks)
    # Named like backbones.load_feature_extractor's models, so their feature caches are shared.
    return keras.Model(base.input, base.get_layer(layer).output, name=f"{backbone.key}_{layer}_features")


@device.under_strategy
def base_tail(base: "keras.Model", backbone: backbones.Backbone, n_blocks: int = 1) -> "keras.Model":
    """The last ``n_blocks`` blocks of ``base`` as a model of their own, sharing its layers.

    Used by :func:`tail_model` (notebook 02, section 6) and in notebooks 04 and 05.
    """
    import keras

    layer = backbones.block_input_layer(base, backbone, n_blocks)
    return keras.Model(base.get_layer(layer).output, base.output, name=f"{base.name}_last_{n_blocks}")


@device.under_strategy
def tail_model(
    base: "keras.Model", head: "keras.Model", backbone: backbones.Backbone, n_blocks: int = 1
) -> "keras.Model":
    """The sub-model phase 2 trains: block-input activations -> last block(s) -> head.

    Taught in notebook 02, section 6 (the model phase 2 fits on the cached block inputs).

    It shares every layer with ``base`` and ``head`` (and so with the model of
    :func:`assemble_model`); its blocks are called with ``training=False`` like the base.
    """
    import keras

    part = base_tail(base, backbone, n_blocks)
    inputs = keras.Input(shape=part.input_shape[1:], name="block_input")
    outputs = head(part(inputs, training=False))
    return keras.Model(inputs, outputs, name=f"tail_last_{n_blocks}")


@device.under_strategy
def flipped(model: "keras.Model") -> "keras.Model":
    """``model`` applied to left-right flipped images (a fixed augmentation that can be cached).

    Not called in a notebook (notebook 02's flips come from ``features.cached_arrays(flips=True)``): the tests'
    reference for those flipped arrays.

    Named ``<model>_flipped``, so its features are cached apart from the model's own.
    """
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    return keras.Model(inputs, model(keras.ops.flip(inputs, axis=2)), name=f"{model.name}_flipped")


@device.under_strategy
def flip_averaged(model: "keras.Model") -> "keras.Model":
    """``model`` with test-time flip averaging: the mean of its outputs on the image and on its left-right flip.

    Used in notebook 02, section 7 (the final model, averaged with the flipped image).

    An ordinary Keras model sharing ``model``'s layers (it saves and reloads like it),
    named ``<model>_flip_averaged``.
    """
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    outputs = keras.layers.Average(name="flip_average")([model(inputs), model(keras.ops.flip(inputs, axis=2))])
    return keras.Model(inputs, outputs, name=f"{model.name}_flip_averaged")


@device.under_strategy
def cached_outputs_model(base: "keras.Model", backbone: backbones.Backbone, n_blocks: int = 1) -> "keras.Model":
    """The one pass over the images that both phases need: the last block(s)' input and the base's output.

    Taught in notebook 02, section 4 (what the frozen layers compute, computed once).

    The outputs are, in order: the input of the last ``n_blocks`` blocks (phase 2 trains
    from it) and the base's feature map (phase 1 trains the head on it). The base is
    called with ``training=False``. Feed the model to :func:`helpers.features.cached_arrays`
    (``flips=True`` adds the same two for the flipped images).
    """
    import keras

    layer = backbones.block_input_layer(base, backbone, n_blocks)
    both = keras.Model(base.input, [base.get_layer(layer).output, base.output], name=f"{backbone.key}_{layer}_and_output")
    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    return keras.Model(inputs, list(both(inputs, training=False)), name=f"{both.name}_cached")
