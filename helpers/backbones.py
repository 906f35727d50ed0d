"""The backbone table: every pretrained network the kit can use, defined once.

Each :class:`Backbone` records its Keras constructor, preprocessing, default input
size, penultimate (feature) layer, ImageNet weight files, and its blocks as an
ordered list of *block end* layers. Block ``k`` is every layer after the end of
block ``k-1`` up to and including its own end, so "the last block" is the same idea
for every backbone: ResNet50's last residual block (``conv5_block3``), MobileNet's
last depthwise-separable block (``conv_dw_13``/``conv_pw_13``), MobileNetV2's last
inverted-residual block with the final 1x1 convolution, and so on.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

from helpers import device
from helpers import weights as weights_cache
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

_KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _resnet_ends() -> tuple[str, ...]:
    stages = ((2, 3), (3, 4), (4, 6), (5, 3))
    return tuple(f"conv{stage}_block{block}_out" for stage, count in stages for block in range(1, count + 1))


def _mobilenet_v2_ends() -> tuple[str, ...]:
    residual = {2, 4, 5, 7, 8, 9, 11, 12, 14, 15}  # stride 1, same width: these end in an Add
    ends = ["expanded_conv_project_BN"]
    ends += [f"block_{i}_add" if i in residual else f"block_{i}_project_BN" for i in range(1, 16)]
    return tuple(ends + ["out_relu"])  # block_16 and the final 1x1 conv form the last block


def _efficientnet_b0_ends() -> tuple[str, ...]:
    blocks = ["1a", "2a", "2b", "3a", "3b", "4a", "4b", "4c", "5a", "5b", "5c", "6a", "6b", "6c", "6d"]
    ends = [f"block{b}_project_bn" if b.endswith("a") else f"block{b}_add" for b in blocks]
    return tuple(ends + ["top_activation"])  # block7a and the top conv form the last block


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One row of the backbone table.

    Used by notebook 01, sections 1 and 2 (its ``title``, ``preprocess`` and ``decode_predictions``).

    Attributes:
        key: Name used in settings (``KIT_BACKBONE``).
        title: Human name.
        constructor: Name of the constructor in ``keras.applications``.
        module: Submodule of ``keras.applications`` holding ``preprocess_input``.
        input_size: Default square input size.
        feature_layer: Penultimate layer of the classifier (the Dataiku plugin's
            layer -2); None when it is the globally pooled output of the last block.
        block_ends: Output layer of each block, first to last.
        alphas: Width multipliers with ImageNet weights (empty: not applicable).
        default_alpha: Width multiplier used when settings give none.
        cpu_images_per_second: Inference speed at the default size on the 2-core
            reference machine, batch 32, unloaded (MobileNet measured at alpha 0.75).
        weight_file: ``(include_top, alpha, size) -> (file name, url)``.
        known_md5: Weight file name -> md5, for files Keras verifies.
        gradcam_layer: The convolutional layer Grad-CAM reads (:mod:`helpers.gradcam`); None
            means the end of the last block. Its output must still be a spatial map.
    """

    key: str
    title: str
    constructor: str
    module: str
    input_size: int
    feature_layer: str | None
    block_ends: tuple[str, ...]
    alphas: tuple[float, ...]
    default_alpha: float | None
    cpu_images_per_second: float
    weight_file: Callable[[bool, float | None, int], tuple[str, str]]
    known_md5: dict[str, str] = dataclasses.field(default_factory=dict)
    gradcam_layer: str | None = None

    @property
    def cam_layer(self) -> str:
        """The layer Grad-CAM explains: the last spatial map before the classifier pools it."""
        return self.gradcam_layer or self.block_ends[-1]

    @property
    def preprocess(self) -> Callable[[Any], Any]:
        """The backbone's own ``preprocess_input`` (scaling/centering it was trained with)."""
        return importlib.import_module(f"keras.applications.{self.module}").preprocess_input

    @property
    def decode_predictions(self) -> Callable[..., Any]:
        """``decode_predictions`` for this backbone's ImageNet classifier."""
        return importlib.import_module(f"keras.applications.{self.module}").decode_predictions

    def resolve_alpha(self, alpha: float | None) -> float | None:
        """The width multiplier to use, or None for backbones without one."""
        if not self.alphas:
            if alpha not in (None, 1.0):
                raise ValueError(f"backbone {self.key!r} has no width multiplier; leave alpha empty.")
            return None
        alpha = self.default_alpha if alpha is None else float(alpha)
        if alpha not in self.alphas:
            raise ValueError(
                f"{self.title} has ImageNet weights for alpha in {list(self.alphas)}, not {alpha}; "
                "choose one of those (KIT_ALPHA)."
            )
        return alpha


def _simple_files(stem: str, folder: str) -> Callable[[bool, float | None, int], tuple[str, str]]:
    def weight_file(include_top: bool, alpha: float | None, size: int) -> tuple[str, str]:
        name = f"{stem}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"
        return name, f"{_KERAS_BASE_URL}{folder}/{name}"

    return weight_file


def _mobilenet_file(include_top: bool, alpha: float | None, size: int) -> tuple[str, str]:
    alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[float(alpha or 1.0)]
    name = f"mobilenet_{alpha_text}_{size}_tf{'' if include_top else '_no_top'}.h5"
    return name, f"{_KERAS_BASE_URL}mobilenet/{name}"


def _mobilenet_v2_file(include_top: bool, alpha: float | None, size: int) -> tuple[str, str]:
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha or 1.0)}_{size}{'' if include_top else '_no_top'}.h5"
    return name, f"{_KERAS_BASE_URL}mobilenet_v2/{name}"


def _efficientnet_file(include_top: bool, alpha: float | None, size: int) -> tuple[str, str]:
    name = f"efficientnetb0{'' if include_top else '_notop'}.h5"
    return name, f"https://storage.googleapis.com/keras-applications/{name}"


BACKBONES: dict[str, Backbone] = {
    b.key: b
    for b in (
        Backbone(
            "resnet50", "ResNet50", "ResNet50", "resnet50", 224, "avg_pool", _resnet_ends(), (), None, 23.0,
            _simple_files("resnet50", "resnet"),
            {
                "resnet50_weights_tf_dim_ordering_tf_kernels.h5": "2cb95161c43110f7111970584f804107",
                "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
            },
        ),
        Backbone(
            "mobilenet", "MobileNet (v1)", "MobileNet", "mobilenet", 224, None,
            tuple(f"conv_pw_{i}_relu" for i in range(1, 14)), (0.25, 0.5, 0.75, 1.0), 1.0, 85.0,
            _mobilenet_file,
        ),
        Backbone(
            "mobilenet_v2", "MobileNetV2", "MobileNetV2", "mobilenet_v2", 224, None, _mobilenet_v2_ends(),
            (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), 1.0, 124.0, _mobilenet_v2_file,
        ),
        Backbone(
            "efficientnet_b0", "EfficientNetB0", "EfficientNetB0", "efficientnet", 224, "avg_pool",
            _efficientnet_b0_ends(), (), None, 60.0, _efficientnet_file,
            {"efficientnetb0.h5": "902e53a9f72be733fc0bcb005b3ebbac", "efficientnetb0_notop.h5": "50bc09e76180e00e4465e1a485ddc09d"},
        ),
        Backbone(
            "vgg16", "VGG16", "VGG16", "vgg16", 224, "fc2", tuple(f"block{i}_pool" for i in range(1, 6)), (), None,
            9.0, _simple_files("vgg16", "vgg16"),
            {
                "vgg16_weights_tf_dim_ordering_tf_kernels.h5": "64373286793e3c8b2b4e3219cbf3544b",
                "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5": "6d6bbae143d832006294945121d1f1fc",
            },
            # The last convolution (14x14 at 224 px) rather than the pooled block end (7x7).
            gradcam_layer="block5_conv3",
        ),
        Backbone(
            "inception_v3", "InceptionV3", "InceptionV3", "inception_v3", 299, "avg_pool",
            tuple(f"mixed{i}" for i in range(11)), (), None, 20.0, _simple_files("inception_v3", "inception_v3"),
            {
                "inception_v3_weights_tf_dim_ordering_tf_kernels.h5": "9a0d58056eeedaa3f26cb7ebd46da564",
                "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5": "bcbd6486424b2319ff4ef7d526e38f63",
            },
        ),
    )
}


def known_md5s() -> dict[str, str]:
    """Weight file name -> md5 for every file whose md5 Keras checks: what the weights cache verifies.

    Not called in a notebook: the setup cell's ``session.start`` and notebook 00, section 3's ``prepare.prepare`` check
    the weight files with it.

    >>> known_md5s()["resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"]
    '4d473c1dd8becc155b73f8504c6f6626'
    """
    table = {weights_cache.CLASS_INDEX_FILE: weights_cache.CLASS_INDEX_MD5}
    for backbone in BACKBONES.values():
        table.update(backbone.known_md5)
    return table


def get_backbone(name: str | None = None, settings: Settings | None = None) -> Backbone:
    """Look a backbone up in the table.

    Used by notebook 01, sections 1 and 2, and notebook 02, section 2.

    Args:
        name: Table key; ``settings.backbone`` by default.
        settings: Course settings; loaded when omitted.

    Raises:
        ValueError: The name is not in the table.
    """
    if name is None:
        name = (settings or load_settings()).backbone
    key = name.lower().replace("-", "_")
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)} (KIT_BACKBONE).")
    return BACKBONES[key]


def expected_seconds_per_1000(backbone_key: str, cpus: int | None = None) -> float:
    """Seconds to run 1000 images through a backbone on this CPU (scaled from the 2-core reference).

    Taught in notebook 00 (section 4, the timing probe).

    >>> round(expected_seconds_per_1000("mobilenet", cpus=2), 1)
    11.8
    """
    cores = cpus or os.cpu_count() or 2
    rate = get_backbone(backbone_key).cpu_images_per_second * max(1.0, cores / 2) ** 0.8
    return 1000.0 / rate


def cpu_advice(settings: Settings, cpus: int | None = None) -> list[str]:
    """Advice for a machine without a GPU: the backbone's speed here, and a faster one if it is slow.

    :func:`helpers.session.start` adds it to the device report's advice (notebook 00, section 2).
    """
    seconds = expected_seconds_per_1000(settings.backbone, cpus)
    advice = [f"on this CPU, {settings.backbone} needs about {seconds:.0f} s per 1000 images."]
    if settings.backbone not in {"mobilenet", "mobilenet_v2"}:
        advice.append(
            f"no GPU here: MobileNet needs about {expected_seconds_per_1000('mobilenet', cpus):.0f} s per 1000 "
            "images; KIT_BACKBONE=mobilenet KIT_ALPHA=0.75 keeps every notebook within a few minutes."
        )
    return advice


def input_size(settings: Settings, backbone: Backbone | None = None) -> int:
    """The square image size to feed: ``settings.image_size`` or the backbone's default.

    Used by notebook 00, section 4, notebook 01, section 1 and notebook 02, sections 2 and 4.
    """
    backbone = backbone or get_backbone(settings=settings)
    return settings.image_size or backbone.input_size


def weight_file(settings: Settings, include_top: bool, backbone: Backbone | None = None) -> tuple[str, str]:
    """The ImageNet weight file Keras loads for these settings, and its official URL.

    Not called in a notebook: notebook 00, section 3's ``prepare.prepare`` finds the weight files with it.
    """
    backbone = backbone or get_backbone(settings=settings)
    size = input_size(settings, backbone)
    if backbone.alphas and size not in (96, 128, 160, 192, 224):
        size = 224  # Keras falls back to the 224 px weights for other sizes
    return backbone.weight_file(include_top, backbone.resolve_alpha(settings.alpha), size)


def weight_file_name(settings: Settings, include_top: bool, backbone: Backbone | None = None) -> str:
    """The name of the ImageNet weight file Keras loads for these settings.

    Not called in a notebook: the setup cell's ``session.start`` checks the weight files by this name (notebook 00,
    section 3 lists them).
    """
    return weight_file(settings, include_top, backbone)[0]


def _construct(
    settings: Settings,
    backbone: Backbone,
    *,
    include_top: bool,
    weights: str | None,
    pooling: str | None = None,
) -> "keras.Model":
    import keras

    weights_cache.configure_keras_home(settings)
    size = input_size(settings, backbone)
    if include_top and weights == "imagenet" and size != backbone.input_size and not backbone.alphas:
        raise ValueError(
            f"The ImageNet classifier of {backbone.title} needs {backbone.input_size}px inputs; "
            "leave image_size empty to score with the classifier."
        )
    kwargs: dict[str, Any] = {"include_top": include_top, "weights": weights, "input_shape": (size, size, 3)}
    if not include_top:
        kwargs["pooling"] = pooling
    alpha = backbone.resolve_alpha(settings.alpha)
    if alpha is not None:
        kwargs["alpha"] = alpha
    if weights == "imagenet":
        # The kit fetches the file itself (atomic, verified, clear error offline), so
        # Keras finds it in the cache and never downloads or deletes anything.
        weights_cache.ensure_weights(settings, *weight_file(settings, include_top, backbone), known_md5=known_md5s())
    constructor = getattr(keras.applications, backbone.constructor)
    with device.strategy().scope():  # variables live where the strategy puts them (each GPU's replica)
        return constructor(**kwargs)


def load_classifier(settings: Settings | None = None, *, weights: str | None = "imagenet") -> "keras.Model":
    """Load the backbone with its ImageNet classifier (1000 classes).

    Taught in notebook 01, section 1 (the pretrained network); used again by notebook 03, section 2 and notebook 05,
    section 8.

    Args:
        settings: Course settings (backbone, alpha, cache); loaded when omitted.
        weights: ``"imagenet"``, None (random, for tests), or a weight file path.

    Raises:
        WeightsMissingError: The weight file is missing and cannot be downloaded.
    """
    settings = settings or load_settings()
    if weights == "imagenet":
        weights_cache.ensure_class_index(settings)  # decode_predictions needs it
    return _construct(settings, get_backbone(settings=settings), include_top=True, weights=weights)


def load_base(
    settings: Settings | None = None, *, weights: str | None = "imagenet", pooling: str | None = None
) -> "keras.Model":
    """Load the convolutional base (no classifier), for feature extraction and fine-tuning.

    Taught in notebook 02, section 2 (the base); used again in sections 3 and 9, by notebook 00, section 4 and by
    notebook 03, section 6.

    Args:
        settings: Course settings; loaded when omitted.
        weights: ``"imagenet"``, None (random init) or a weight file path.
        pooling: None (4-D feature maps), ``"avg"`` or ``"max"``.
    """
    settings = settings or load_settings()
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', not {pooling!r}.")
    return _construct(settings, get_backbone(settings=settings), include_top=False, weights=weights, pooling=pooling)


def load_feature_extractor(
    settings: Settings | None = None,
    *,
    layer: str | None = None,
    pooling: str | None = "avg",
    weights: str | None = "imagenet",
) -> "keras.Model":
    """A model from images to the features of one layer (default: the penultimate one).

    Taught in notebook 03, section 2 (the layer picker); used again by notebook 05, section 8.

    Args:
        settings: Course settings; loaded when omitted.
        layer: Layer name; by default the backbone's ``feature_layer`` in the classifier,
            or the pooled output of the last block.
        pooling: For 4-D outputs: ``"avg"``, ``"max"`` or None (keep the map; ``"flatten"``
            flattens it).
        weights: ``"imagenet"`` or None.
    """
    import keras

    settings = settings or load_settings()
    backbone = get_backbone(settings=settings)
    if pooling not in (None, "avg", "max", "flatten"):
        raise ValueError(f"pooling must be None, 'avg', 'max' or 'flatten', not {pooling!r}.")
    if layer is None and backbone.feature_layer is not None:
        model = load_classifier(settings, weights=weights)
        layer = backbone.feature_layer
    elif layer is None:
        model = load_base(settings, weights=weights)
        layer = model.layers[-1].name
    else:
        model = load_classifier(settings, weights=weights) if backbone.feature_layer else load_base(settings, weights=weights)
    try:
        output = model.get_layer(layer).output
    except ValueError:
        raise ValueError(f"{backbone.title} has no layer {layer!r}; list them with helpers.backbones.candidate_layers().") from None
    if len(output.shape) == 4:
        pool = {
            "avg": keras.layers.GlobalAveragePooling2D(name="features_avg"),
            "max": keras.layers.GlobalMaxPooling2D(name="features_max"),
            "flatten": keras.layers.Flatten(name="features_flat"),
        }.get(pooling or "")
        if pool is not None:
            output = pool(output)
    with device.strategy().scope():  # a Keras model trains and predicts under the strategy it was built in
        return keras.Model(model.input, output, name=f"{backbone.key}_{layer}_features")


def candidate_layers(model: "keras.Model") -> list[tuple[str, tuple[int | None, ...]]]:
    """Layers one can extract features from, with output shapes, last first (the layer picker).

    Used by ``features.layer_table``, the layer picker of notebook 03, section 2.
    """
    rows = []
    for layer in reversed(model.layers[1:]):
        shape = getattr(layer, "output", None)
        if shape is not None and hasattr(shape, "shape"):
            rows.append((layer.name, tuple(shape.shape)))
    return rows


def blocks(model: "keras.Model", backbone: Backbone) -> list[list[str]]:
    """Split a backbone's layers into its blocks (stem first, last block last).

    Taught in notebook 02, section 3 (what each phase trains).

    Layers before the first block end form the stem (entry 0); layers after the last
    end (pooling, classifier) are not part of any block.

    Raises:
        ValueError: A block end is not a layer of ``model`` (wrong backbone).
    """
    names = [layer.name for layer in model.layers]
    position = {name: index for index, name in enumerate(names)}
    missing = [end for end in backbone.block_ends if end not in position]
    if missing:
        raise ValueError(f"model {model.name!r} is not a {backbone.title}: layers {missing[:3]} are missing.")
    result, start = [], 0
    for end in backbone.block_ends:
        stop = position[end] + 1
        result.append(names[start:stop])
        start = stop
    stem = [name for name in result[0] if not name.startswith("input")]
    return [stem, *result[1:]]


def block_input_layer(model: "keras.Model", backbone: Backbone, n_blocks: int = 1) -> str:
    """Name of the layer whose output feeds the last ``n_blocks`` blocks (for activation caching).

    Used by ``heads.cached_outputs_model`` and ``heads.base_tail`` (notebook 02, sections 4 and 6).
    """
    if not 1 <= n_blocks < len(backbone.block_ends):
        raise ValueError(f"n_blocks must be between 1 and {len(backbone.block_ends) - 1}, not {n_blocks}.")
    return backbone.block_ends[-n_blocks - 1]


def table_rows(names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The backbone table as rows.

    Shown in notebook 00, section 2 (device and advice): the backbones ``KIT_BACKBONE`` chooses from.
    """
    rows = []
    for backbone in (BACKBONES[n] for n in (names or BACKBONES)):
        rows.append(
            {
                "backbone": backbone.key,
                "title": backbone.title,
                "input": backbone.input_size,
                "blocks": len(backbone.block_ends),
                "last block ends at": backbone.block_ends[-1],
                "Grad-CAM layer": backbone.cam_layer,
                "alphas": ", ".join(map(str, backbone.alphas)) or "-",
                "CPU img/s (2 cores)": backbone.cpu_images_per_second,
            }
        )
    return rows
