"""Feature extraction with a disk cache: images -> one layer's outputs, computed once.

This is the kit's one place for turning images into backbone features (notebook 02
trains its head on them, notebook 03 feeds them to scikit-learn, notebook 04 compares
with them). Extraction runs the images through :func:`helpers.pipeline.make_dataset`
with the backbone's own preprocessing, batch by batch with a progress bar, and keeps
the rows in the order of the input frame.

The result is cached under ``<cache_dir>/features`` in one ``.npz`` file holding the
array and its metadata: backbone, alpha, layer, pooling, output shape, image size,
dtype, fingerprints of the model's structure (which layer it was cut at) and weights
(a fine-tuned model is another model), and a fingerprint of the input files (paths,
sizes, modification times). A cached file is reused only when all of them match;
otherwise the features are recomputed and the file replaced. Files are written to a
temporary name and renamed, so an interrupted run never leaves a half-written cache.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import mmap
import os
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from helpers import backbones, device, pipeline
from helpers.files import atomic_path
from helpers import progress as progress_bars
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

CACHE_SUBDIR = "features"
# Bump when the file layout or the meaning of a metadata field changes: old files then miss.
CACHE_FORMAT = 2
_POOLING_LAYERS = {"features_avg": "avg", "features_max": "max", "features_flat": "flatten"}
_DTYPES = ("float32", "float16")


# --------------------------------------------------------------------------- fingerprints


def files_fingerprint(paths: Iterable[str | os.PathLike[str]]) -> str:
    """A hash of the input files as the cache sees them: order, paths, sizes, modification times.

    Used by :func:`extract_features`'s cache (notebook 03, section 3: change an image and it computes again).

    Any added, removed, reordered, resized or touched file changes it.

    Args:
        paths: Image file paths, in extraction order.

    Raises:
        FileNotFoundError: A file does not exist (names the first few missing ones).
    """
    digest = hashlib.sha256()
    missing = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            missing.append(str(path))
            continue
        digest.update(f"{os.fspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image file(s) do not exist, for example {missing[:3]}; "
            "rebuild the dataset frame (or run helpers.scan.scan_images) before extracting features."
        )
    return digest.hexdigest()


def weights_fingerprint(model: "keras.Model") -> str:
    """A hash of a model's weights (shapes and values, in order): fine-tuned and random weights differ.

    Used by :func:`extract_features`'s cache (notebook 03, section 3: change the weights and it computes again).

    Variable names are left out: Keras numbers unnamed layers per session (``dense_3``),
    and the same weights must give the same fingerprint in every session.
    """
    digest = hashlib.blake2b(digest_size=16)
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable.numpy()))
        digest.update(f"{value.shape}:{value.dtype};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _output_shape(layer: Any) -> str:
    try:
        return str(tuple(layer.output.shape))
    except (AttributeError, ValueError):  # a layer used several times has no single output
        return "?"


def architecture_fingerprint(model: "keras.Model") -> str:
    """A hash of a model's structure: each layer's type and output shape, in order (names left out).

    Used by :func:`describe_extractor` (notebook 03, section 2).

    Two models cut from one backbone at different layers differ; the same model built
    twice (whatever names Keras gave its unnamed layers) does not.
    """
    rows = [f"{type(layer).__name__}{_output_shape(layer)}" for layer in model.layers]
    return hashlib.sha256("|".join(rows).encode()).hexdigest()[:32]


def _source_layer(model: "keras.Model", pooling_layer: Any) -> str:
    """Name of the layer whose output feeds ``pooling_layer``."""
    try:
        wanted = pooling_layer.input
    except (AttributeError, ValueError):
        wanted = None
    for layer in model.layers:
        if layer is not pooling_layer and wanted is not None:
            try:
                if layer.output is wanted:
                    return layer.name
            except (AttributeError, ValueError):
                continue
    return model.layers[-2].name


def describe_extractor(model: "keras.Model") -> dict[str, Any]:
    """What a feature model computes: its source layer, pooling, shapes and structure.

    Used by notebook 03, section 2.

    Models built by :func:`helpers.backbones.load_feature_extractor` end with a pooling
    layer named ``features_avg``/``features_max``/``features_flat``; the layer feeding it
    is the extracted layer. For any other model the output layer is the extracted layer.
    """
    last = model.layers[-1]
    pooling = _POOLING_LAYERS.get(last.name, "none")
    return {
        "model": model.name,
        "layer": _source_layer(model, last) if pooling != "none" else last.name,
        "pooling": pooling,
        "input_shape": [d for d in model.input_shape[1:]],
        "output_shape": [d for d in model.output_shape[1:]],
        "architecture": architecture_fingerprint(model),
    }


# --------------------------------------------------------------------------- layers


def default_layer(settings: Settings | None = None) -> str:
    """The layer the kit extracts by default: the penultimate one (the Dataiku plugin's layer -2).

    Used by :func:`layer_table` for its ``default`` row (notebook 03, section 2).

    That is the backbone's ``feature_layer`` in its classifier, or the output of its last
    block (pooled) when the classifier has no separate feature layer, exactly as
    :func:`helpers.backbones.load_feature_extractor` picks it.
    """
    backbone = backbones.get_backbone(settings=settings or load_settings())
    return backbone.feature_layer or backbone.block_ends[-1]


def _pooled_size(shape: Sequence[int | None]) -> int | None:
    """Features per image after global pooling (4-D maps) or as is (vectors)."""
    dims = list(shape[1:])
    if not dims or any(d is None for d in dims[-1:]):
        return None
    return int(dims[-1]) if len(dims) == 3 else int(np.prod([d for d in dims if d is not None]))


def layer_table(model: "keras.Model", settings: Settings | None = None) -> pd.DataFrame:
    """The layer picker: candidate layers, last first, with output shapes and feature counts.

    Taught in notebook 03, section 2 (the layer picker).

    Args:
        model: The backbone (classifier or base), e.g. from
            :func:`helpers.backbones.load_classifier`.
        settings: Course settings, to mark the default layer; loaded when omitted.

    Returns:
        A DataFrame with ``position`` (-1 is the output layer, -2 the penultimate...),
        ``layer``, ``type``, ``output shape``, ``features`` (values per image after
        global pooling of a 4-D map) and ``default`` (True on the layer extracted when
        no layer is chosen).
    """
    default = default_layer(settings)
    types = {layer.name: type(layer).__name__ for layer in model.layers}
    rows = []
    for index, (name, shape) in enumerate(backbones.candidate_layers(model), start=1):
        rows.append(
            {
                "position": -index,
                "layer": name,
                "type": types.get(name, ""),
                "output shape": tuple(shape[1:]),
                "features": _pooled_size(shape),
                "default": name == default,
            }
        )
    return pd.DataFrame(rows, columns=["position", "layer", "type", "output shape", "features", "default"])


# --------------------------------------------------------------------------- cache


def cache_dir(settings: Settings) -> Path:
    """The folder holding cached features: ``<cache_dir>/features``.

    Used by :func:`cache_table` (notebook 03, section 3).
    """
    return Path(settings.cache_dir) / CACHE_SUBDIR


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


# Recorded for people, not compared: Keras names unnamed models and layers per session.
_NOT_COMPARED = ("seconds", "model", "layer")


def _cache_path(settings: Settings, meta: dict[str, Any], paths: Sequence[str]) -> Path:
    """File name: readable parts plus a hash of what identifies *which* features these are.

    Weights and the files' sizes and mtimes are not in the name: when they change, the
    same file is recomputed and replaced instead of leaving stale files behind.
    """
    identity = json.dumps(
        [meta[k] for k in ("backbone", "alpha", "architecture", "pooling", "image_size", "dtype")] + [list(paths)]
    )
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    alpha = f"-a{meta['alpha']}" if meta["alpha"] is not None else ""
    # No layer name in the file name: an unnamed layer's name changes from session to session.
    name = f"{_slug(meta['backbone'])}{alpha}-{meta['pooling']}-{meta['image_size']}px-{len(paths)}img-{key}.npz"
    return cache_dir(settings) / name


def _read_cache(path: Path) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Load a cache file; None when it is absent or unreadable (it is then recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return data["features"], meta
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as error:
        warnings.warn(f"feature cache {path.name} is unreadable ({error}); recomputing it.", stacklevel=3)
        return None


def _write_cache(path: Path, features: np.ndarray, meta: dict[str, Any]) -> None:
    """Write array + metadata to a temporary file beside ``path``, then rename it into place."""
    with atomic_path(path) as temporary, temporary.open("wb") as stream:
        np.savez(stream, features=features, meta=np.array(json.dumps(meta, sort_keys=True)))
        stream.flush()
        os.fsync(stream.fileno())


def cache_table(settings: Settings) -> pd.DataFrame:
    """What the feature cache holds: one row per file with its main metadata and size.

    Used by notebook 03, section 3.
    """
    rows = []
    for path in sorted(cache_dir(settings).glob("*.npz")):
        loaded = _read_cache(path)
        if loaded is None:
            continue
        array, meta = loaded
        rows.append(
            {
                "file": path.name,
                "backbone": meta.get("backbone"),
                "alpha": meta.get("alpha"),
                "layer": meta.get("layer"),
                "pooling": meta.get("pooling"),
                "images": meta.get("rows"),
                "shape": tuple(array.shape[1:]),
                "dtype": str(array.dtype),
                "MB": round(path.stat().st_size / 1e6, 2),
                "seconds to compute": meta.get("seconds"),
            }
        )
    columns = ["file", "backbone", "alpha", "layer", "pooling", "images", "shape", "dtype", "MB", "seconds to compute"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- extraction


def _check_frame(frame: Any) -> list[str]:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"frame must be a pandas DataFrame with a 'path' column, not {type(frame).__name__}; "
            "build one with helpers.datasets.load_dataset or helpers.sources."
        )
    if "path" not in frame.columns:
        raise ValueError(
            f"frame has no 'path' column (columns: {list(frame.columns)}); name the image path column 'path'."
        )
    paths = [str(p) for p in frame["path"]]
    if any(not p or p == "nan" for p in paths):
        raise ValueError("frame has empty paths; drop those rows before extracting features.")
    return paths


def _metadata(model: "keras.Model", settings: Settings, size: int, dtype: str) -> dict[str, Any]:
    backbone = backbones.get_backbone(settings=settings)
    described = describe_extractor(model)
    return {
        "format": CACHE_FORMAT,
        "backbone": backbone.key,
        "alpha": backbone.resolve_alpha(settings.alpha),
        "preprocessing": backbone.module,
        "image_size": size,
        "dtype": dtype,
        **described,
        "weights": weights_fingerprint(model),
    }


def _model_input_size(model: "keras.Model", settings: Settings) -> int:
    """The square input size: the model's own when fixed, else the settings'."""
    shape = model.input_shape
    if isinstance(shape, list):
        raise ValueError("extract_features needs a model with one image input.")
    height, width = shape[1], shape[2]
    if height is not None and width is not None:
        if height != width:
            raise ValueError(f"the model takes {height}x{width} images; the kit feeds square images.")
        return int(height)
    return backbones.input_size(settings)


def _compute(
    model: "keras.Model",
    paths: list[str],
    settings: Settings,
    size: int,
    batch_size: int,
    dtype: str,
    progress: bool,
) -> np.ndarray:
    dataset = pipeline.make_dataset(
        paths, settings=settings, size=size, batch_size=batch_size, preprocess=True, shuffle=False
    )
    output_shape = tuple(model.output_shape[1:])
    result = np.empty((len(paths), *output_shape), dtype=dtype)
    done = 0
    description = f"features {describe_extractor(model)['layer']}"
    with progress_bars.bar(total=len(paths), unit="img", desc=description, disable=not progress) as bar:
        for images in dataset:  # no labels given: the dataset yields image batches only
            # Keras's own compiled predict step (inference mode, traced once per model).
            values = np.asarray(device.predict_batch(model, images))
            result[done : done + len(values)] = values
            done += len(values)
            bar.update(len(values))
    if done != len(paths):
        raise RuntimeError(f"the image pipeline yielded {done} images for {len(paths)} paths; check the image files.")
    return result


def extract_features(
    model: "keras.Model",
    frame: pd.DataFrame,
    settings: Settings | None = None,
    *,
    batch_size: int | None = None,
    cache: bool = True,
    progress: bool = True,
    dtype: str = "float32",
) -> np.ndarray:
    """Run every image of ``frame`` through ``model``; rows come back in frame order.

    Taught in notebook 03, section 3 (exercise 1 has students write its loop); used again in section 9 and by
    notebook 05, section 8.

    Images are decoded and resized by :func:`helpers.pipeline.make_dataset` with the
    backbone's preprocessing (the backbone named by ``settings``); the model is called
    with ``training=False``. With ``cache=True`` the result is stored under
    ``<cache_dir>/features`` and reused next time only if the backbone, alpha, the
    model's structure (the layer it was cut at) and weights, pooling, output shape,
    image size, dtype and the input files (paths, sizes, modification times) all match.

    Args:
        model: A Keras model from images to features, typically
            :func:`helpers.backbones.load_feature_extractor`.
        frame: DataFrame with a ``path`` column (other columns are ignored).
        settings: Course settings (backbone, cache folder, batch size); loaded when omitted.
        batch_size: Images per batch; ``settings.batch_size`` by default.
        cache: Read and write the disk cache.
        progress: Show a progress bar (and say when the cache was used).
        dtype: ``"float32"`` or ``"float16"`` (half the disk and memory, for large maps).

    Returns:
        Array of shape ``(len(frame), *model.output_shape[1:])`` with ``dtype``.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: No ``path`` column, empty paths, a bad ``dtype`` or ``batch_size``.
        FileNotFoundError: An image file does not exist.
    """
    settings = settings or load_settings()
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, not {dtype!r}.")
    batch_size = settings.batch_size if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
    paths = _check_frame(frame)
    output_shape = tuple(model.output_shape[1:])
    if not paths:
        return np.empty((0, *output_shape), dtype=dtype)
    size = _model_input_size(model, settings)
    meta = _metadata(model, settings, size, dtype)
    meta["files"] = files_fingerprint(paths)
    meta["rows"] = len(paths)
    target = _cache_path(settings, meta, paths)

    if cache:
        loaded = _read_cache(target)
        if loaded is not None:
            array, stored = loaded
            same = all(stored.get(k) == v for k, v in meta.items() if k not in _NOT_COMPARED)
            if same and array.shape == (len(paths), *output_shape):
                if progress:
                    print(f"Features loaded from the cache ({target.name}).")
                return array
            if progress:
                changed = sorted(k for k in meta if k not in _NOT_COMPARED and stored.get(k) != meta[k])
                print(f"Cached features are out of date ({', '.join(changed)} changed); recomputing.")

    began = time.perf_counter()
    array = _compute(model, paths, settings, size, batch_size, dtype, progress)
    seconds = round(time.perf_counter() - began, 2)
    if cache:
        _write_cache(target, array, meta | {"seconds": seconds})
    if progress:
        rate = len(paths) / seconds if seconds else float("inf")
        print(f"Extracted {array.shape} features from {len(paths)} images in {seconds:.1f} s ({rate:.0f} img/s).")
    return array


# --------------------------------------------------------------------------- tables


def features_frame(frame: pd.DataFrame, features: np.ndarray) -> pd.DataFrame:
    """The Dataiku lab's "images, target, features" table: one row per image.

    Taught in notebook 03, section 4 (the table: images, target, features).

    Args:
        frame: The frame the features were extracted from (``path``, and ``label`` and
            ``split`` when present).
        features: Array with one row per frame row, in the same order.

    Returns:
        DataFrame with ``path``, ``label`` (when ``frame`` has one), ``split`` (when
        present) and ``features`` (one 1-D float array per row).

    Raises:
        ValueError: The row counts differ.
    """
    _check_frame(frame)
    features = np.asarray(features)
    if features.ndim < 1 or len(features) != len(frame):
        raise ValueError(
            f"{len(features)} feature rows for {len(frame)} images; pass the features extracted from this frame."
        )
    columns = [c for c in ("path", "label", "split") if c in frame.columns]
    table = frame[columns].reset_index(drop=True).copy()
    table["features"] = list(features.reshape(len(features), -1))
    return table


def feature_matrix(table: pd.DataFrame) -> np.ndarray:
    """Stack the ``features`` column of a :func:`features_frame` back into a 2-D array.

    Used by notebook 03, section 5.
    """
    if "features" not in table.columns:
        raise ValueError("the table has no 'features' column; build it with features_frame().")
    if len(table) == 0:
        return np.empty((0, 0), dtype=np.float32)
    return np.stack(table["features"].to_numpy())



# --------------------------------------------------------------------------- memory-mapped arrays for training

# Cached training arrays are half precision on disk and read through a memory map: a kernel
# then holds no second copy of them, only the pages a batch touches (notebook 02's peak memory).
ARRAY_DTYPE = "float16"
ARRAY_FORMAT = 1
ARRAY_BATCH_SIZE = 16


def _array_identity(model: "keras.Model", settings: Settings, size: int, paths: Sequence[str]) -> dict[str, Any]:
    """What identifies cached arrays: the backbone, the model's structure and weights, the input files."""
    backbone = backbones.get_backbone(settings=settings)
    return {
        "format": ARRAY_FORMAT,
        "backbone": backbone.key,
        "alpha": backbone.resolve_alpha(settings.alpha),
        "preprocessing": backbone.module,
        "image_size": size,
        "dtype": ARRAY_DTYPE,
        "architecture": architecture_fingerprint(model),
        "weights": weights_fingerprint(model),
        "files": files_fingerprint(paths),
        "rows": len(paths),
    }


def _output_shapes(model: "keras.Model") -> list[tuple[int, ...]]:
    shapes = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
    if any(d is None for shape in shapes for d in shape[1:]):
        raise ValueError("cached_arrays needs outputs of a fixed shape; give the model a fixed input size.")
    return [tuple(int(d) for d in shape[1:]) for shape in shapes]


def _as_list(values: Any) -> list[Any]:
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _write_header(stream: Any, shape: tuple[int, ...]) -> None:
    np.lib.format.write_array_header_1_0(
        stream, {"descr": np.lib.format.dtype_to_descr(np.dtype(ARRAY_DTYPE)), "fortran_order": False, "shape": shape}
    )


def _read_cached(
    sidecar: Path, identity: dict[str, Any], targets: list[Path], shapes: list[tuple[int, ...]]
) -> list[np.ndarray] | None:
    """The cached arrays, memory-mapped, when their description matches ``identity`` and their shapes; else None."""
    try:
        stored = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        stored = None
    if stored != identity:
        return None
    try:
        arrays = [np.load(target, mmap_mode="r") for target in targets]
    except (OSError, ValueError):
        arrays = []
    return arrays if [a.shape for a in arrays] == shapes else None


def _write_arrays(
    model: "keras.Model",
    dataset: Any,
    targets: list[Path],
    shapes: list[tuple[int, ...]],
    rows: int,
    *,
    flips: bool,
    name: str,
    progress: bool,
) -> None:
    """One pass of ``dataset`` through ``model``, each output streamed batch by batch into its ``.npy`` file."""
    with contextlib.ExitStack() as stack:
        streams = []
        for target, shape in zip(targets, shapes):
            temporary = stack.enter_context(atomic_path(target))
            stream = stack.enter_context(temporary.open("wb"))
            _write_header(stream, (rows, *shape))
            streams.append(stream)
        done = 0
        with progress_bars.bar(total=rows, unit="img", desc=name, disable=not progress) as bar:
            for images in dataset:
                values = _as_list(device.predict_batch(model, images))
                if flips:  # one view after the other: half the memory of both in one graph
                    values += _as_list(device.predict_batch(model, images[:, :, ::-1, :]))
                for stream, value in zip(streams, values):
                    stream.write(np.ascontiguousarray(np.asarray(value), dtype=ARRAY_DTYPE).tobytes())
                done += len(values[0])
                bar.update(len(values[0]))
        if done != rows:
            raise RuntimeError(f"the image pipeline yielded {done} images for {rows} paths; check the image files.")
        for stream in streams:
            stream.flush()
            os.fsync(stream.fileno())


def cached_arrays(
    model: "keras.Model",
    frame: pd.DataFrame,
    settings: Settings | None = None,
    *,
    name: str = "images",
    flips: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[np.ndarray]:
    """Run every image of ``frame`` through ``model`` once; keep each output in float16 on disk, memory-mapped.

    Taught in notebook 02, section 4 (what the frozen layers compute, computed once); used again in sections 5 to 7.

    One pass over the images fills one ``.npy`` file per output of ``model``, batch
    by batch (never the whole array in memory), under ``<cache_dir>/features``. The
    files are reused when the backbone, the model's structure and weights, the image
    size and the input files (paths, sizes, modification times) all match; otherwise
    they are computed again. They are written under temporary names and renamed, so an
    interrupted run leaves no half-written array.

    Args:
        model: A Keras model from images to one or several outputs of fixed shape.
        frame: DataFrame with a ``path`` column; rows come back in its order.
        settings: Course settings (backbone, cache folder, batch size); loaded when omitted.
        name: What the pass computes, for its progress bar (``"frames and their flips"``).
        flips: Also run each batch flipped left to right (a fixed augmentation): the
            outputs for the flipped images follow the others, in the same order.
        batch_size: Images per batch; ``settings.batch_size`` up to 16 by default.
        progress: Show a progress bar (and say when the cache was used).

    Returns:
        One read-only float16 memory map per output of ``model`` (then one per output for the
        flipped images with ``flips``), each of shape ``(len(frame), *output_shape)``. Feed
        them to Keras with :func:`batches`.

    Raises:
        TypeError: ``frame`` is not a DataFrame.
        ValueError: No ``path`` column, no rows, empty paths, or a ``batch_size`` under 1.
        FileNotFoundError: An image file does not exist.
    """
    settings = settings or load_settings()
    # A batch's activations at full image size are the kernel's memory peak: 16 images cost half of 32, as fast on a CPU.
    batch_size = min(settings.batch_size, ARRAY_BATCH_SIZE) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}.")
    paths = _check_frame(frame)
    if not paths:
        raise ValueError("frame has no rows: there are no images to run through the model.")
    shapes = _output_shapes(model) * (2 if flips else 1)
    size = _model_input_size(model, settings)
    identity = _array_identity(model, settings, size, paths) | {"flips": bool(flips)}
    # Weights and the files' sizes and times are checked (in the description), not named: when they
    # change, the same files are computed again and replaced instead of leaving stale ones behind.
    named = {k: v for k, v in identity.items() if k not in ("weights", "files")}
    key = hashlib.sha256(json.dumps([named, paths, shapes]).encode()).hexdigest()[:16]
    stem = f"{_slug(identity['backbone'])}-{len(paths)}img-{len(shapes)}out-{key}"
    targets = [cache_dir(settings) / f"{stem}-{index}.npy" for index in range(len(shapes))]
    sidecar = cache_dir(settings) / f"{stem}.json"
    arrays = _read_cached(sidecar, identity, targets, [(len(paths), *s) for s in shapes])
    if arrays is not None:
        if progress:
            print(f"{name}: read from the cache ({stem}).")
        return arrays

    sidecar.unlink(missing_ok=True)  # the arrays are about to change: the old description no longer holds
    began = time.perf_counter()
    dataset = pipeline.make_dataset(paths, settings=settings, size=size, batch_size=batch_size, preprocess=True)
    _write_arrays(model, dataset, targets, shapes, len(paths), flips=flips, name=name, progress=progress)
    with atomic_path(sidecar) as temporary:
        temporary.write_text(json.dumps(identity, sort_keys=True))
    if progress:
        seconds = time.perf_counter() - began
        megabytes = sum(target.stat().st_size for target in targets) / 1e6
        print(f"{name}: {len(paths)} images in {seconds:.1f} s, {megabytes:.0f} MB on disk (float16).")
    return [np.load(target, mmap_mode="r") for target in targets]


def _release_pages(array: Any) -> None:
    """Unmap the pages of a memory-mapped array that were read (they stay in the OS's file cache).

    Read pages of a file mapping count in the process's resident memory until they are
    unmapped: without this, an epoch over a cached array would count it all, once.
    """
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


@functools.cache
def _batches_class() -> type:
    import keras

    class ArrayBatches(keras.utils.PyDataset):
        """Batches of float32 rows read from (memory-mapped) arrays, reshuffled every epoch."""

        def __init__(self, views, labels, rows, batch_size, shuffle, seed):
            super().__init__()
            self.views, self.labels, self.rows = views, labels, rows
            self.batch_size, self.shuffle = batch_size, shuffle
            self.rng = np.random.default_rng(seed)
            self.order = np.arange(len(rows) * len(views))
            self.on_epoch_end()

        def __len__(self) -> int:
            return int(np.ceil(len(self.order) / self.batch_size))

        def __getitem__(self, index: int) -> Any:
            items = self.order[index * self.batch_size : (index + 1) * self.batch_size]
            x = np.empty((len(items), *self.views[0].shape[1:]), dtype=np.float32)
            rows = self.rows[items % len(self.rows)]
            for view_index, view in enumerate(self.views):
                mine = items // len(self.rows) == view_index
                if mine.any():
                    wanted = rows[mine]
                    ahead = np.argsort(wanted, kind="stable")  # a memory map reads sorted rows front to back
                    part = np.empty((len(wanted), *view.shape[1:]), dtype=np.float32)
                    part[ahead] = view[wanted[ahead]]
                    x[mine] = part
                _release_pages(view)
            return x if self.labels is None else (x, self.labels[rows])

        def on_epoch_end(self) -> None:
            if self.shuffle:
                self.rng.shuffle(self.order)

    return ArrayBatches


def batches(
    arrays: np.ndarray | Sequence[np.ndarray],
    labels: Any = None,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int | None = None,
) -> Any:
    """Feed cached arrays to Keras's ``fit``, ``evaluate`` or ``predict`` in float32 batches, without copying them.

    Taught in notebook 02, sections 5 and 6 (``model.fit(batches(...), validation_data=batches(...))``).

    Args:
        arrays: One array (a memory map from :func:`cached_arrays`), or several with
            the same rows, each another view of the same images (the images and their
            flipped copies): every epoch then sees each chosen row once in every view.
        labels: One label per row of the arrays (class ids or one-hot rows); None for ``predict``.
        rows: The rows to use (a split's positions); all by default.
        batch_size: Rows per batch.
        shuffle: Draw the rows in a new random order every epoch (training).
        seed: Seed of that order.

    Returns:
        A ``keras.utils.PyDataset`` yielding ``(x, y)`` batches (``x`` alone without labels),
        with the views of a row in the same order as ``rows``, view after view, when not shuffled.

    Raises:
        ValueError: Arrays of different lengths, labels of another length, rows out of range, or a bad batch size.
    """
    views = list(arrays) if isinstance(arrays, (list, tuple)) else [arrays]
    if not views or any(not hasattr(view, "shape") or len(view.shape) < 2 for view in views):
        raise ValueError("arrays must be one array (rows first) or a list of arrays with the same rows.")
    count = len(views[0])
    if any(view.shape != views[0].shape for view in views):
        raise ValueError(f"every view must have the same rows and shape: shapes {[v.shape for v in views]}.")
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != count:
            raise ValueError(f"{len(labels)} labels for {count} rows: give one label per row of the arrays.")
    rows = np.arange(count) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) == 0 or rows.min() < 0 or rows.max() >= count:
        raise ValueError(f"rows must be positions between 0 and {count - 1}, and at least one.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, not {batch_size!r}.")
    return _batches_class()(views, labels, rows, int(batch_size), bool(shuffle), seed)
