"""A model you can ship: SavedModel, LiteRT/TFLite and ONNX exports, each reloaded and checked.

:func:`export_model` writes an *export folder* for a trained classifier:

* ``saved_model/`` -- a TensorFlow SavedModel written with Keras 3's export machinery
  (:class:`keras.export.ExportArchive`, what ``model.export`` uses), with three endpoints:
  ``serve`` (the default serving signature: RGB pixels 0-255 in, ``probabilities``,
  the predicted ``label`` and the ``class_names`` out -- the preprocessing and the
  class names travel inside the model), ``probabilities`` (pixels in, probabilities
  out) and ``serve_preprocessed`` (the Keras model's own input). Its
  ``assets.extra/model.json`` holds backbone, input size and class names, so that
  ``python -m helpers score --model FOLDER`` reads the export folder too;
* ``model.tflite`` -- LiteRT (TensorFlow Lite) for phones, float16 or dynamic-range
  quantised, pixels in, probabilities out; ``labels.txt`` beside it;
* ``model.onnx`` -- when ``tf2onnx`` and ``onnxruntime`` are installed (``pip install
  -e .[export]``), pixels in, probabilities out;
* ``export.csv`` -- the check: every export reloaded and run on the test images (or,
  without them, on generated images) beside the Keras model: size, test accuracy,
  top-1 agreement and largest probability difference, against :data:`TOLERANCES`.

The folder is built beside its final place and swapped in when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import pandas as pd

from helpers import backbones, files, pipeline, scan
from helpers.device import import_tensorflow
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "ExportReport",
    "FORMATS",
    "SavedModelClassifier",
    "TOLERANCES",
    "export_model",
    "is_saved_model",
    "load_saved_model",
    "onnx_available",
    "read_model_info",
]

SAVED_MODEL_DIR = "saved_model"
INFO_FILE = "model.json"  # inside saved_model/assets.extra/
EXPORT_INFO = "export.json"
REPORT_FILE = "export.csv"
TFLITE_FILE = "model.tflite"
ONNX_FILE = "model.onnx"
LABELS_FILE = "labels.txt"
FORMATS = ("savedmodel", "tflite", "onnx")
QUANTISATIONS = ("float16", "dynamic")
#: Largest difference of any class probability from the Keras model's that an export may show.
#: Float32 formats compute the same graph (only the order of sums differs); float16 weights
#: round to 3 significant digits; dynamic-range quantisation stores weights as 8-bit integers.
TOLERANCES = {"savedmodel": 1e-4, "onnx": 1e-4, "tflite float16": 0.02, "tflite dynamic": 0.05}
REPORT_COLUMNS = ["format", "file", "size_mb", "test_accuracy", "agreement", "max_difference", "tolerance", "agrees"]


def onnx_available() -> bool:
    """Whether the ONNX converter and runtime (``tf2onnx``, ``onnxruntime``) are installed.

    Used by :func:`export_model` (notebook 05, section 7: ship the model).
    """
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("tf2onnx", "onnxruntime"))


@dataclasses.dataclass
class ExportReport:
    """What :func:`export_model` wrote and how each export compares with the Keras model.

    Returned by :func:`export_model` (notebook 05, section 7).

    Attributes:
        folder: The export folder.
        table: One row per format (``keras`` first): file, size in MB, test accuracy,
            top-1 agreement with Keras, largest probability difference, tolerance, agrees.
        images: How many images the check ran on.
        on_test_split: True when they were the test images (else generated ones).
        notes: Formats left out, and why.
    """

    folder: Path
    table: pd.DataFrame
    images: int
    on_test_split: bool
    notes: list[str]

    @property
    def ok(self) -> bool:
        """Every export agrees with the Keras model within its tolerance."""
        return bool(self.table["agrees"].iloc[1:].all())

    def __str__(self) -> str:
        where = "the test split" if self.on_test_split else "generated images (no test split given)"
        lines = [f"exported to {self.folder}; checked on {self.images} images of {where}", self.table.to_string(index=False)]
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


@contextlib.contextmanager
def _quiet_tensorflow_logs() -> Iterator[None]:
    """TensorFlow's Python log (``INFO:tensorflow:Assets written to...``) held at errors while saving and converting."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _signature(tf: Any, size: int, name: str) -> list[Any]:
    return [tf.TensorSpec([None, size, size, 3], tf.float32, name=name)]


def _write_saved_model(tf: Any, model: "keras.Model", target: Path, size: int, preprocess: Any, names: list[str]) -> None:
    import keras

    class_names = tf.constant(names)
    archive = keras.export.ExportArchive()
    archive.track(model)

    @tf.function(input_signature=_signature(tf, size, "pixels"))
    def serve(pixels: Any) -> dict[str, Any]:
        probabilities = model(preprocess(pixels), training=False)
        rows = tf.shape(probabilities)[0]
        return {
            "probabilities": probabilities,
            "label": tf.gather(class_names, tf.argmax(probabilities, axis=-1)),
            # one row per image, so that both TF Serving request formats (rows or columns) work
            "class_names": tf.broadcast_to(class_names[None], [rows, len(names)]),
        }

    @tf.function(input_signature=_signature(tf, size, "pixels"))
    def probabilities(pixels: Any) -> dict[str, Any]:
        return {"probabilities": model(preprocess(pixels), training=False)}

    @tf.function(input_signature=_signature(tf, size, "images"))
    def serve_preprocessed(images: Any) -> dict[str, Any]:
        return {"probabilities": model(images, training=False)}

    archive.add_endpoint("serve", serve)
    archive.add_endpoint("probabilities", probabilities)
    archive.add_endpoint("serve_preprocessed", serve_preprocessed)
    with _quiet_tensorflow_logs():
        archive.write_out(str(target), verbose=False)


def _tflite(tf: Any, saved_model: Path, quantisation: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["probabilities"])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantisation == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with _quiet_tensorflow_logs():
        return converter.convert()


def _tflite_runner(path: Path) -> Any:
    try:  # LiteRT, TensorFlow Lite's successor (ai-edge-litert); tf.lite's interpreter is deprecated
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        tf = import_tensorflow()
        Interpreter, OpResolverType = tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite's deprecation notice; the check still runs
        # The reference kernels: the XNNPACK delegate announces itself on stderr (noise in a notebook).
        interpreter = Interpreter(
            model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    runner = interpreter.get_signature_runner("probabilities")
    return lambda pixels: runner(pixels=pixels)["probabilities"]


def _onnx(tf: Any, model: "keras.Model", target: Path, size: int, preprocess: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf2onnx's import-time deprecation warnings
        import tf2onnx

    @tf.function(input_signature=_signature(tf, size, "pixels"))
    def probabilities(pixels: Any) -> Any:
        return model(preprocess(pixels), training=False)

    with _quiet_tensorflow_logs():
        tf2onnx.convert.from_function(
            probabilities, input_signature=_signature(tf, size, "pixels"), opset=17, output_path=str(target)
        )


def _onnx_runner(path: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes on the notebook's stderr
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda pixels: session.run(None, {name: pixels})[0]


def _keras_size(model: "keras.Model") -> int:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.stat().st_size


def _folder_size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _batches(paths: Sequence[str] | None, settings: Settings, size: int, batch_size: int, generated: int) -> Any:
    """Batches of float32 pixels 0-255: the test images, or seeded random ones without them."""
    if paths:
        dataset = pipeline.make_dataset(list(paths), settings=settings, size=size, batch_size=batch_size, preprocess=False)
        for batch in dataset:
            yield np.asarray(batch, dtype=np.float32)
        return
    rng = np.random.default_rng(0)
    for start in range(0, generated, batch_size):
        yield rng.uniform(0, 255, (min(batch_size, generated - start), size, size, 3)).astype(np.float32)


def _formats_to_write(
    model: "keras.Model", names: list[str], formats: Sequence[str] | None, quantisation: str
) -> tuple[list[str], list[str]]:
    """The formats to write (ONNX left out, with a note, when not asked for and not installed) and the notes."""
    if model.output_shape[-1] != len(names):
        raise ValueError(f"the model has {model.output_shape[-1]} outputs but {len(names)} class names were given.")
    if quantisation not in QUANTISATIONS:
        raise ValueError(f"quantisation must be one of {QUANTISATIONS}, not {quantisation!r}.")
    wanted = list(FORMATS if formats is None else formats)
    unknown = sorted(set(wanted) - set(FORMATS))
    if unknown or not wanted:
        raise ValueError(f"formats must be some of {FORMATS}, not {wanted}.")
    notes = []
    if "onnx" in wanted and not onnx_available():
        if formats is not None:
            raise ValueError("ONNX needs tf2onnx and onnxruntime: pip install -e .[export] (or leave onnx out).")
        wanted.remove("onnx")
        notes.append("ONNX left out: tf2onnx and onnxruntime are not installed (pip install -e .[export]).")
    return wanted, notes


def _images_to_check(
    test_paths: Sequence[str] | None,
    test_labels: Sequence[Any] | None,
    batch_size: int,
    settings: Settings,
    notes: list[str],
) -> tuple[list[str] | None, list[Any] | None]:
    """The readable test images and their labels (the others left out, noted in ``notes``); the batch size checked."""
    test_paths = None if test_paths is None else [str(p) for p in test_paths]
    test_labels = None if test_labels is None else list(test_labels)
    if test_labels is not None and (test_paths is None or len(test_labels) != len(test_paths)):
        raise ValueError("give test_labels only with test_paths, one label per image.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, not {batch_size!r}.")
    if test_paths:
        usable, errors = scan.usable_rows(test_paths, settings=settings)
        if len(usable) < len(test_paths):
            first = next(error for error in errors if error)
            notes.append(f"{len(test_paths) - len(usable)} test image(s) could not be read and were left out of the "
                         f"check (e.g. {first}).")
            test_paths = [test_paths[row] for row in usable]
            test_labels = None if test_labels is None else [test_labels[row] for row in usable]
        if not test_paths:
            raise ValueError("no test image could be read; give readable test images (or none, to check on "
                             "generated ones).")
    return test_paths, test_labels


def _model_info(backbone: Any, settings: Settings, size: int, names: list[str]) -> dict[str, Any]:
    """What ``model.json`` says of the model: backbone, alpha, input size and format, class names."""
    return {
        "backbone": backbone.key,
        "alpha": backbone.resolve_alpha(settings.alpha),
        "image_size": size,
        "class_names": names,
        "input": "serve: float32 RGB pixels 0-255, (batch, size, size, 3); serve_preprocessed: the backbone's "
        "preprocess_input applied",
    }


def _export_saved_model(
    tf: Any, model: "keras.Model", staging: Path, size: int, preprocess: Any, info: dict[str, Any]
) -> Any:
    """Write ``saved_model/`` with its ``model.json``; a runner of the reloaded SavedModel (pixels to probabilities)."""
    saved = staging / SAVED_MODEL_DIR
    _write_saved_model(tf, model, saved, size, preprocess, info["class_names"])
    (saved / "assets.extra").mkdir(exist_ok=True)
    (saved / "assets.extra" / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    loaded = tf.saved_model.load(str(saved))
    return lambda pixels: loaded.probabilities(tf.constant(pixels))["probabilities"]


def _export_tflite(tf: Any, staging: Path, quantisation: str) -> Any:
    """Write ``model.tflite`` from the SavedModel; a runner of the reloaded file."""
    (staging / TFLITE_FILE).write_bytes(_tflite(tf, staging / SAVED_MODEL_DIR, quantisation))
    return _tflite_runner(staging / TFLITE_FILE)


def _export_onnx(tf: Any, model: "keras.Model", staging: Path, size: int, preprocess: Any) -> Any:
    """Write ``model.onnx``; a runner of the reloaded file."""
    _onnx(tf, model, staging / ONNX_FILE, size, preprocess)
    return _onnx_runner(staging / ONNX_FILE)


def _compare_with_keras(
    model: "keras.Model", preprocess: Any, runners: dict[str, tuple[str, Any]], batches: Iterator[np.ndarray],
    truth: np.ndarray | None,
) -> tuple[int, dict[str, int], dict[str, int], dict[str, float]]:
    """Every export beside the Keras model, batch by batch: images seen, and per format correct, agreeing, largest gap."""
    agree = dict.fromkeys(runners, 0)
    correct = dict.fromkeys(["keras", *runners], 0)
    largest = dict.fromkeys(runners, 0.0)
    seen = 0
    for pixels in batches:
        reference = np.asarray(model(preprocess(pixels.copy()), training=False), dtype=np.float64)
        top = reference.argmax(axis=1)
        labels = None if truth is None else truth[seen : seen + len(pixels)]
        if labels is not None:
            correct["keras"] += int((top == labels).sum())
        for key, (_, run) in runners.items():
            output = np.asarray(run(pixels), dtype=np.float64)
            largest[key] = max(largest[key], float(np.abs(output - reference).max()))
            agree[key] += int((output.argmax(axis=1) == top).sum())
            if labels is not None:
                correct[key] += int((output.argmax(axis=1) == labels).sum())
        seen += len(pixels)
    if not seen:
        raise ValueError("no test image could be read; give readable test images (or none, to check on generated ones).")
    return seen, correct, agree, largest


def _check_table(
    model: "keras.Model",
    staging: Path,
    runners: dict[str, tuple[str, Any]],
    seen: int,
    correct: dict[str, int],
    agree: dict[str, int],
    largest: dict[str, float],
    *,
    has_truth: bool,
) -> pd.DataFrame:
    """The check's table (``export.csv``): one row per format, the Keras model first, against :data:`TOLERANCES`."""

    def accuracy(key: str) -> float:
        return correct[key] / seen if has_truth else float("nan")

    rows = [{"format": "keras", "file": "(model.keras)", "size_mb": _keras_size(model) / 1e6,
             "test_accuracy": accuracy("keras"), "agreement": 1.0, "max_difference": 0.0, "tolerance": 0.0,
             "agrees": True}]
    for key, (name, _) in runners.items():
        tolerance = TOLERANCES[key]
        rows.append({"format": key, "file": name, "size_mb": _folder_size(staging / name) / 1e6,
                     "test_accuracy": accuracy(key), "agreement": agree[key] / seen, "max_difference": largest[key],
                     "tolerance": tolerance, "agrees": largest[key] <= tolerance})
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def export_model(
    model: "keras.Model",
    folder: str | os.PathLike,
    class_names: Sequence[Any],
    settings: Settings | None = None,
    *,
    test_paths: Sequence[str] | None = None,
    test_labels: Sequence[Any] | None = None,
    formats: Sequence[str] | None = None,
    quantisation: str = "float16",
    batch_size: int = 32,
) -> ExportReport:
    """Export a trained classifier as SavedModel, TFLite and ONNX; reload each and check it on the test images.

    Taught in notebook 05, section 7 (ship the model); the ``python -m helpers export-model`` command
    (and ``retrain --export``) runs it on a saved model folder.

    Args:
        model: Images preprocessed for the settings' backbone in, class probabilities out
            (``retrainer.export_model()``, or a model folder's model).
        folder: The export folder (created; replaced only if it holds an earlier export).
        class_names: Class names in output order.
        settings: The settings the model was trained with (backbone: preprocessing; input size).
        test_paths: The test images; None = check on 64 generated images (no accuracy).
        test_labels: Their labels (class names), for the test accuracy of each format.
        formats: Some of :data:`FORMATS`; default all, ONNX only when its packages are installed.
        quantisation: ``"float16"`` (half the size, nearly no change) or ``"dynamic"``
            (8-bit weights, a quarter of the size) for the TFLite file.
        batch_size: Images per batch in the check.

    Returns:
        :class:`ExportReport` (``.table``, ``.ok``; printed, a short summary).

    Raises:
        ValueError: Unknown format or quantisation, class names that do not match the
            outputs, labels without paths, ONNX asked for without its packages.
        FileExistsError: ``folder`` exists and is not an export folder.
    """
    settings = settings or load_settings()
    names = [str(c) for c in class_names]
    wanted, notes = _formats_to_write(model, names, formats, quantisation)
    test_paths, test_labels = _images_to_check(test_paths, test_labels, batch_size, settings, notes)
    folder = Path(folder).expanduser().resolve()
    if folder.exists() and not (folder / EXPORT_INFO).is_file() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder} exists and is not an export folder; choose a new folder for the export.")

    tf = import_tensorflow()
    backbone = backbones.get_backbone(settings=settings)
    size = int(model.input_shape[1] or backbones.input_size(settings, backbone))
    preprocess = backbone.preprocess
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".exporting", dir=folder.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's folder is private; an export is meant to be copied and shared
        info = _model_info(backbone, settings, size, names)
        runners = {"savedmodel": (SAVED_MODEL_DIR, _export_saved_model(tf, model, staging, size, preprocess, info))}
        if "tflite" in wanted:
            runners[f"tflite {quantisation}"] = (TFLITE_FILE, _export_tflite(tf, staging, quantisation))
        if "onnx" in wanted:
            runners["onnx"] = (ONNX_FILE, _export_onnx(tf, model, staging, size, preprocess))
        (staging / LABELS_FILE).write_text("\n".join(names) + "\n")

        truth = None if test_labels is None else pipeline.encode_labels(list(test_labels), names)
        pixels = _batches(test_paths, settings, size, int(batch_size), generated=64)
        seen, correct, agree, largest = _compare_with_keras(model, preprocess, runners, pixels, truth)
        table = _check_table(model, staging, runners, seen, correct, agree, largest, has_truth=truth is not None)
        table.to_csv(staging / REPORT_FILE, index=False)
        (staging / EXPORT_INFO).write_text(json.dumps(
            {**info, "formats": list(runners), "quantisation": quantisation, "images_checked": seen,
             "on_test_split": bool(test_paths), "notes": notes,
             "exported": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
        files.swap_folder(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return ExportReport(folder, table, seen, bool(test_paths), notes)


def _saved_model_dir(location: str | os.PathLike) -> Path | None:
    path = Path(location).expanduser()
    for candidate in (path, path / SAVED_MODEL_DIR):
        if (candidate / "saved_model.pb").is_file():
            return candidate
    return None


def is_saved_model(location: str | os.PathLike) -> bool:
    """Whether ``location`` is an export folder of :func:`export_model` or its ``saved_model`` folder.

    Used by ``saved_models.load_model``, so that ``python -m helpers score --model`` (notebook 05, section 7) reads exports.
    """
    return _saved_model_dir(location) is not None


class SavedModelClassifier:
    """An exported SavedModel used where the kit expects a Keras classifier (``predict_on_batch``, shapes).

    Returned by :func:`load_saved_model` (notebook 05, section 7: score with the exported model). It takes
    images preprocessed for the backbone, as the kit's pipeline gives them (the ``serve_preprocessed`` endpoint).
    """

    def __init__(self, path: str | os.PathLike, image_size: int, n_classes: int) -> None:
        tf = import_tensorflow()
        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))
        if not hasattr(self._loaded, "serve_preprocessed"):
            raise ValueError(f"{path} is not a SavedModel written by helpers.export (no serve_preprocessed endpoint).")
        self.input_shape = (None, image_size, image_size, 3)
        self.output_shape = (None, n_classes)

    def __call__(self, images: Any, training: bool = False) -> Any:
        return self._loaded.serve_preprocessed(self._tf.constant(np.asarray(images, dtype=np.float32)))["probabilities"]

    def predict_on_batch(self, images: Any) -> np.ndarray:
        """Class probabilities of one batch."""
        return np.asarray(self(images))

    def predict(self, images: Any, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        """Class probabilities, in batches."""
        images = np.asarray(images, dtype=np.float32)
        return np.concatenate([self.predict_on_batch(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def read_model_info(info_path: Path, remedy: str) -> dict[str, Any]:
    """A saved or exported model's metadata (``model.json``), checked for what scoring needs.

    Used by :func:`load_saved_model` and ``saved_models.load_model`` (notebook 05, section 7; the score command).

    Args:
        info_path: The metadata file (it must exist).
        remedy: What the user should do when it is damaged ("save the model again ...").

    Raises:
        ValueError: Not valid JSON, or no ``backbone``, ``image_size`` or ``class_names``.
    """
    try:
        info = json.loads(info_path.read_text())
    except ValueError as error:
        raise ValueError(f"{info_path} is not valid JSON ({error}); {remedy}.") from None
    missing = [key for key in ("backbone", "image_size", "class_names") if key not in info]
    if missing:
        raise ValueError(f"{info_path} lacks {missing}; {remedy}.")
    return info


def load_saved_model(location: str | os.PathLike) -> tuple[SavedModelClassifier, dict[str, Any]]:
    """Reload an export folder (or its ``saved_model`` folder) as a classifier, with its metadata.

    Used by ``saved_models.load_model`` for ``python -m helpers score --model`` (notebook 05, section 7).

    Raises:
        FileNotFoundError: No SavedModel there, or no ``assets.extra/model.json`` in it.
        ValueError: The metadata is not valid or lacks what scoring needs.
    """
    path = _saved_model_dir(location)
    if path is None:
        raise FileNotFoundError(f"no SavedModel at {location}; give the folder written by export_model.")
    info_path = path / "assets.extra" / INFO_FILE
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{path} has no assets.extra/{INFO_FILE}: without it the class names and the preprocessing are unknown; "
            "export the model with helpers.export.export_model."
        )
    info = read_model_info(info_path, "export the model again with helpers.export.export_model")
    return SavedModelClassifier(path, int(info["image_size"]), len(info["class_names"])), info
