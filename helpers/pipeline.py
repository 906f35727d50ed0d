"""The tf.data input pipeline: files -> decoded, resized, preprocessed batches.

Every file is checked by :mod:`helpers.scan` (cached) before the dataset is built,
so a bad file is reported up front instead of failing mid-epoch. Decoding takes the
fast path -- TensorFlow's own decoders inside the graph -- for ordinary JPEG, PNG,
GIF, BMP and WebP files, and calls Pillow only for the few files TensorFlow would
get wrong (palette or 1-bit BMPs, transparency, animated WebP/PNG, EXIF rotation;
the scan decides per file): Pillow inside tf.data is about 2x slower per image.
Every mode ends as 8-bit RGB; images are resized (bilinear, aspect ratio not kept,
as Keras's ``image_dataset_from_directory`` does) to the backbone's input size,
then batched, optionally augmented, put through the backbone's ``preprocess_input``
and prefetched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from helpers import scan
from helpers.backbones import get_backbone, input_size
from helpers.device import import_tensorflow
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

_PIL = 1  # decoder code in the graph: 0 = TensorFlow, 1 = Pillow


class BadImageError(ValueError):
    """An image file cannot be used; the message says why.

    Raised by :func:`load_image` (notebook 01, section 2).
    """


def class_names(frame_or_labels: pd.DataFrame | Iterable[Any]) -> list[Any]:
    """The sorted class names: integer ids are positions in this list.

    Used by notebook 02, section 1, notebook 03, section 6 and notebook 05, section 3.

    Args:
        frame_or_labels: A dataset frame (its ``label`` column) or the labels themselves.
    """
    labels = frame_or_labels["label"] if isinstance(frame_or_labels, pd.DataFrame) else frame_or_labels
    return sorted(set(pd.Series(list(labels), dtype=object)), key=lambda v: (isinstance(v, str), v))


def encode_labels(labels: Iterable[Any], classes: Sequence[Any]) -> np.ndarray:
    """Class names to integer ids (positions in ``classes``).

    Used by notebook 02, section 7 and notebook 05, section 5.

    Raises:
        ValueError: A label is not in ``classes``.
    """
    index = {name: position for position, name in enumerate(classes)}
    labels = list(labels)
    unknown = sorted({str(label) for label in labels if label not in index})
    if unknown:
        raise ValueError(
            f"label(s) {unknown[:5]} are not among the classes {list(classes)[:10]}; build the class list from the "
            "whole dataset (class_names(frame)) before splitting it."
        )
    return np.asarray([index[label] for label in labels], dtype=np.int32)


def to_rgb(image: Any) -> np.ndarray:
    """A Pillow image of any mode as an 8-bit RGB array.

    Used inside :func:`decode_with_pil`, for every image :func:`load_image` reads (notebook 01, section 2).

    16-bit and 32-bit grayscale are scaled to 0..255, transparency is composited on
    white, CMYK and palette images are converted.
    """
    from PIL import Image

    mode = image.mode
    if mode.startswith("I") or mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) > 255):
            array = array / 257.0
        gray = np.clip(np.rint(array), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def decode_with_pil(path: str | os.PathLike) -> np.ndarray:
    """Decode an image with Pillow: first frame, EXIF rotation applied, 8-bit RGB.

    Used inside :func:`load_image` (notebook 01, section 2).
    """
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.seek(0)
        return to_rgb(ImageOps.exif_transpose(image))


def _pil_decode_for_graph(path: bytes) -> np.ndarray:
    return decode_with_pil(path.decode("utf-8"))


def _decode(tf: Any, path: Any, code: Any, mixed: bool, only_pil: bool) -> Any:
    def with_tf() -> Any:
        data = tf.io.read_file(path)
        return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)

    def with_pil() -> Any:
        return tf.numpy_function(_pil_decode_for_graph, [path], tf.uint8, stateful=False)

    if mixed:
        image = tf.cond(tf.equal(code, _PIL), with_pil, with_tf)
    else:
        image = with_pil() if only_pil else with_tf()
    image.set_shape([None, None, 3])
    return image


def _resize(tf: Any, image: Any, size: int) -> Any:
    """Bilinear resize, rounded to whole pixel values (float32 in [0, 255]).

    Bilinear weights are a convex combination, so no clipping is needed.
    """
    return tf.round(tf.image.resize(image, [size, size], method="bilinear"))


def load_image(path: str | os.PathLike, size: int | None = None, *, settings: Settings | None = None) -> np.ndarray:
    """Load one image as the pipeline does: 8-bit RGB, resized to ``size`` x ``size``.

    Taught in notebook 01, section 2 (preprocessing); used again by notebook 02, section 4 and notebook 04, section 4.

    Args:
        path: Image file.
        size: Side of the square output; None keeps the original size.
        settings: Course settings (scan cache location); loaded when omitted.

    Returns:
        ``np.ndarray`` of dtype uint8 and shape (size, size, 3) (or (H, W, 3)).

    Raises:
        BadImageError: The file is missing, empty, not an image, truncated, corrupt,
            too large or in an unsupported format (the message says which).
    """
    record = scan.inspect_paths([path], settings=settings)[0]
    if record["kind"] is not None:
        raise BadImageError(f"{path}: {record['reason']}")

    tf = import_tensorflow()
    if record["decoder"] == "pil":
        image = tf.constant(decode_with_pil(path))
    else:
        image = _decode(tf, tf.constant(str(path)), 0, mixed=False, only_pil=False)
    if size is None:
        return image.numpy()
    return tf.cast(_resize(tf, image, int(size)), tf.uint8).numpy()


def augmentation_layers(
    *,
    flip: bool = True,
    rotation: float = 0.1,
    zoom: float = 0.1,
    contrast: float = 0.1,
    seed: int | None = None,
) -> "keras.Sequential":
    """Random augmentation as Keras preprocessing layers: flip, rotation, zoom, contrast.

    Taught in notebook 02, section 4.

    The layers work on pixels in [0, 255], *before* the backbone's preprocessing
    (pass them as ``augment=`` to :func:`helpers.pipeline.make_dataset`); they only
    change images when called with ``training=True``.

    Args:
        flip: Flip images left-right half of the time (a character flipped is the
            same character; upside-down would not be).
        rotation: Largest rotation, as a share of a full turn (0.1 = 36 degrees); 0 = none.
        zoom: Largest zoom in or out, as a share of the size; 0 = none.
        contrast: Largest contrast change (0.1 = +-10%); 0 = none.
        seed: Seed of the random draws.

    Raises:
        ValueError: Negative amounts, or every augmentation switched off.
    """
    import keras

    for name, value in (("rotation", rotation), ("zoom", zoom), ("contrast", contrast)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1) (0 = off), not {value!r}.")
    layers: list[Any] = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="random_flip"))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="nearest", seed=seed, name="random_rotation"))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="nearest", seed=seed, name="random_zoom"))
    if contrast:
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed, name="random_contrast"))
    if not layers:
        raise ValueError("every augmentation is switched off; use augment=None instead of an empty augmentation.")
    return keras.Sequential(layers, name="augmentation")


def _augmenter(augment: Any, seed: int) -> Callable[[Any], Any] | None:
    if augment is None or augment is False:
        return None
    if augment is True:  # mild, for photos and drawings alike: flip, small rotation and zoom
        augment = augmentation_layers(rotation=0.05, zoom=0.1, contrast=0.0, seed=seed)
    elif isinstance(augment, (list, tuple)):
        import keras

        augment = keras.Sequential(list(augment), name="augmentation")
    if not callable(augment):
        raise TypeError(f"augment must be None, True, a Keras layer, a list of layers or a function, not {augment!r}.")
    import keras

    if isinstance(augment, keras.layers.Layer):
        return lambda images: augment(images, training=True)
    return augment


def _preprocessor(preprocess: Any, settings: Settings) -> Callable[[Any], Any] | None:
    if preprocess is True:
        return get_backbone(settings=settings).preprocess
    if preprocess is False or preprocess is None:
        return None
    if callable(preprocess):
        return preprocess
    raise TypeError(f"preprocess must be True (the backbone's), False or a function, not {preprocess!r}.")


def _as_paths(paths: Any) -> list[str]:
    if isinstance(paths, pd.DataFrame):
        if "path" not in paths.columns:
            raise ValueError("a DataFrame given as paths needs a 'path' column.")
        paths = paths["path"]
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError("paths must be a list of files (or a frame), not one path; wrap it in a list.")
    return [str(Path(p).expanduser()) for p in paths]


def make_dataset(
    paths: Sequence[str] | pd.Series | pd.DataFrame,
    labels: Sequence[Any] | pd.Series | None = None,
    *,
    settings: Settings | None = None,
    size: int | None = None,
    batch_size: int | None = None,
    preprocess: bool | Callable[[Any], Any] = True,
    shuffle: bool = False,
    augment: Any = None,
    cache: bool | str | os.PathLike = False,
    classes: Sequence[Any] | None = None,
    seed: int | None = None,
) -> Any:
    """A ``tf.data.Dataset`` of image batches (and integer labels) from files.

    Taught in notebook 03, section 3 (extracting features).

    Every file is checked first (cached scan); unusable files stop here with a list,
    never mid-epoch. With ``shuffle=False`` the batches keep the order of ``paths``;
    with ``shuffle=True`` (training) a file that breaks after the check is skipped
    with a logged warning rather than stopping the epoch.

    Args:
        paths: Image files (a list, a Series, or a frame with a ``path`` column).
        labels: Labels, one per path (class names or ints); None for images only.
        settings: Course settings (backbone, batch size, seed); loaded when omitted.
        size: Square side; the backbone's input size by default.
        batch_size: Images per batch; ``settings.batch_size`` by default.
        preprocess: True = the backbone's ``preprocess_input`` (MobileNet: [-1, 1]);
            False = float32 pixels in [0, 255]; or a function of a float32 batch.
        shuffle: Shuffle every epoch (seeded by ``seed`` / ``settings.seed``).
        augment: None; True (flip, rotation, zoom); a Keras layer, a list of layers
            or a function applied to float32 batches in [0, 255] before preprocessing.
        cache: Keep decoded, resized images after the first epoch: True (memory) or
            a file path prefix (disk).
        classes: Class names; a label's id is its position. Default:
            :func:`class_names` of ``labels`` -- pass the whole dataset's list when
            building train/validation/test separately.
        seed: Shuffle and augmentation seed; ``settings.seed`` by default.

    Returns:
        A dataset of float32 ``images`` of shape (batch, size, size, 3), or of
        ``(images, labels)`` with int32 labels.

    Raises:
        ValueError: No paths, labels of the wrong length, unknown labels, or
            unusable files (run :func:`helpers.scan.scan_images` first).
    """
    tf = import_tensorflow()
    settings = settings or load_settings()
    files = _as_paths(paths)
    if not files:
        raise ValueError("no image paths given; check the dataset frame (is it empty after the scan?).")
    size = int(size or input_size(settings))
    batch_size = int(batch_size or settings.batch_size)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    seed = settings.seed if seed is None else int(seed)
    dataset, mixed, only_pil = _file_rows(tf, files, labels, classes, settings)
    if shuffle and not cache:
        # Shuffling file names is cheap: the whole list fits in the buffer.
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    augmenter = _augmenter(augment, seed)
    preprocessor = _preprocessor(preprocess, settings)
    # Without cache or augmentation everything happens in one per-image step (one
    # pass over memory); otherwise decoded images are kept as compact uint8 and the
    # rest runs per batch.
    per_image = not cache and augmenter is None
    finish = _finisher(augmenter, preprocessor)
    dataset = _decoded(tf, dataset, size, mixed, only_pil, finish if per_image else None, skip_broken=shuffle)
    return _cached_and_batched(
        tf, dataset, cache, shuffle, len(files), seed, batch_size, None if per_image else finish
    ).prefetch(tf.data.AUTOTUNE)


def _file_rows(
    tf: Any, files: list[str], labels: Any, classes: Sequence[Any] | None, settings: Settings
) -> tuple[Any, bool, bool]:
    """Reading: a dataset of (path, decoder code[, label id]) rows; whether decoders are mixed, or all PIL."""
    codes = [_PIL if decoder == "pil" else 0 for decoder in scan.decoders_for(files, settings=settings)]
    mixed, only_pil = 0 < sum(codes) < len(codes), sum(codes) == len(codes)
    tensors: tuple[Any, ...] = (tf.constant(files), tf.constant(codes, dtype=tf.int32))
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(files):
            raise ValueError(f"{len(labels)} labels for {len(files)} paths; give one label per image.")
        tensors += (tf.constant(encode_labels(labels, classes if classes is not None else class_names(labels))),)
    return tf.data.Dataset.from_tensor_slices(tensors), mixed, only_pil


def _finisher(augmenter: Callable[[Any], Any] | None, preprocessor: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """Augmenting, then preprocessing: what turns float32 pixels 0-255 into the model's input."""

    def finish(images: Any) -> Any:
        if augmenter is not None:
            images = augmenter(images)
        return preprocessor(images) if preprocessor is not None else images

    return finish


def _decoded(
    tf: Any, dataset: Any, size: int, mixed: bool, only_pil: bool, finish: Callable[[Any], Any] | None, *,
    skip_broken: bool,
) -> Any:
    """Decoding: each row's image resized, then finished (``finish``) or kept as compact uint8 (None)."""

    def load(path: Any, code: Any, *label: Any) -> Any:
        image = _resize(tf, _decode(tf, path, code, mixed, only_pil), size)
        image = finish(image) if finish is not None else tf.cast(image, tf.uint8)
        return (image, *label) if label else image

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_broken:
        # Last line of defence for training: a file that changed or broke after the
        # scan is skipped with a logged warning instead of ending the epoch. Ordered
        # datasets (prediction) raise instead, as skipping would misalign results.
        dataset = dataset.ignore_errors(log_warning=True)
    return dataset


def _cached_and_batched(
    tf: Any, dataset: Any, cache: bool | str | os.PathLike, shuffle: bool, n_files: int, seed: int, batch_size: int,
    finish: Callable[[Any], Any] | None,
) -> Any:
    """Caching and batching: decoded images kept after the first epoch, shuffled, batched, finished per batch."""
    if cache:
        dataset = dataset.cache("" if cache is True else str(cache))
        if shuffle:
            dataset = dataset.shuffle(min(n_files, 2048), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if finish is not None:

        def finish_batch(images: Any, *label: Any) -> Any:
            images = finish(tf.cast(images, tf.float32))
            return (images, *label) if label else images

        dataset = dataset.map(finish_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset


def split_datasets(
    frame: pd.DataFrame,
    *,
    settings: Settings | None = None,
    augment: Any = None,
    cache: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """One dataset per split of a split frame, sharing one class list.

    Used by ``approaches`` to train the from-scratch models (notebook 04, section 3).

    The training set is shuffled (and augmented when ``augment`` is given); the
    validation and test sets keep the frame's order.

    Args:
        frame: A frame with ``path``, ``label`` and ``split`` (see :func:`helpers.splits.split_dataset`).
        settings: Course settings.
        augment: Augmentation for the training set only.
        cache: Cache decoded images of every split.
        **options: More :func:`make_dataset` arguments (size, batch_size, preprocess, seed).

    Returns:
        ``{"train": ..., "validation": ..., "test": ...}`` (splits without rows are left out).
    """
    if "split" not in frame.columns:
        raise ValueError("the frame has no 'split' column; call helpers.splits.split_dataset(frame) first.")
    classes = class_names(frame)
    result = {}
    for name in ("train", "validation", "test"):
        part = frame.loc[frame["split"] == name]
        if len(part):
            result[name] = make_dataset(
                part["path"], part["label"], settings=settings, classes=classes, shuffle=name == "train",
                augment=augment if name == "train" else None, cache=cache, **options,
            )
    return result


def load_images(
    images: pd.DataFrame | Sequence[str], size: int, settings: Settings | None = None
) -> np.ndarray:
    """Decode images into one uint8 array, resized to ``size`` x ``size``, order kept.

    Decoding and resizing are :func:`make_dataset`'s (no preprocessing), so these pixels
    are exactly what a Keras model fed by the pipeline sees; an array in memory lets a
    small model be retrained many times without decoding the files again. Taught in
    notebook 04, section 7 (the small CNN's images for the sample-efficiency curves).

    Args:
        images: A dataset frame (its ``path`` column) or a sequence of image paths.
        size: Side of the square output, in pixels.
        settings: Course settings (scan cache, batch size); loaded when omitted.

    Returns:
        Array of shape ``(n, size, size, 3)``, dtype uint8.

    Raises:
        TypeError: ``images`` is a single path.
        ValueError: ``size`` is not a positive integer, the frame has no ``path``
            column, or a file is unusable.
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive number of pixels, not {size!r}.")
    paths = _as_paths(images)
    out = np.empty((len(paths), int(size), int(size), 3), dtype=np.uint8)
    if not paths:
        return out
    dataset = make_dataset(paths, settings=settings, size=int(size), preprocess=False, shuffle=False)
    done = 0
    for batch in dataset:
        values = np.asarray(batch)
        out[done : done + len(values)] = values.astype(np.uint8)  # whole numbers 0-255 already
        done += len(values)
    if done != len(paths):
        raise RuntimeError(f"the image pipeline yielded {done} images for {len(paths)} paths; check the image files.")
    return out


def predict_images(
    model: "keras.Model", frame: pd.DataFrame | Sequence[str], settings: Settings | None = None
) -> np.ndarray:
    """A model's outputs for image files, through the kit's pipeline (in order).

    Taught in notebook 02, section 8, and notebook 03, section 6.

    Args:
        model: A model taking preprocessed images (e.g. :func:`helpers.heads.assemble_model`'s).
        frame: A frame with a ``path`` column, or a list of paths.
        settings: Course settings (backbone preprocessing, image size, batch size).
    """
    settings = settings or load_settings()
    dataset = make_dataset(frame, settings=settings, shuffle=False)
    return model.predict(dataset, verbose=0)


