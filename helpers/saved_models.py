"""The kit's one saved-model format: a folder with the Keras model and what it needs to be used again.

A saved model is a folder::

    model.keras    the classifier: preprocessed images in, class probabilities out
    model.json     backbone, alpha, input size (the preprocessing), class names in output order,
                   results (test accuracy...), when it was saved, and for a model that later
                   notebooks reuse, a fingerprint of its test split's files
    ...            any extra files (the retrain command's split.csv, a README)

Everyone writes and reads that one format: notebook 02 (:func:`save_in_cache`, where
notebook 03 finds it with :func:`load_from_cache`), notebook 05 and the ``retrain``
command (:func:`save_model`), the ``score``, ``demo`` and ``export-model`` commands
(:func:`load_model`, which also reads the export folders of :mod:`helpers.export`).

Saving writes the folder beside its final place and swaps it in at the end, so an
interrupted save leaves the previous model (or nothing), never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import backbones, device, export, features
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras

MODEL_FILE = "model.keras"
INFO_FILE = "model.json"
#: Where :func:`save_in_cache` keeps models under the kit's cache folder.
MODELS_SUBDIR = "models"
RETRAINED_SIMPSONS = "simpsons_retrained"


class SavedModelMismatch(ValueError):
    """A saved model was trained for other classes, another backbone or another test split.

    Taught in notebook 03, section 6.
    """


def _class_name(value: Any) -> int | str:
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else str(value)


def model_info(
    settings: Settings, class_names: Sequence[Any], test_paths: Sequence[str] | None = None
) -> dict[str, Any]:
    """What ``model.json`` records about a model trained with ``settings``: the backbone, its preprocessing, the classes.

    Used by :func:`save_model` and :func:`load_from_cache` (notebooks 02, 03 and 05, the retrain command).

    Args:
        settings: The settings it was trained with.
        class_names: Class names in output order.
        test_paths: The files of its test split, fingerprinted (``test_files``) so that a later
            notebook can tell the model was tested on the same images.
    """
    backbone = backbones.get_backbone(settings=settings)
    info: dict[str, Any] = {
        "backbone": backbone.key,
        "alpha": backbone.resolve_alpha(settings.alpha),
        "image_size": backbones.input_size(settings, backbone),
        "class_names": [_class_name(c) for c in class_names],
    }
    if test_paths is not None:
        info["test_files"] = features.files_fingerprint(sorted(map(str, test_paths)))
    return info


def save_model(
    model: "keras.Model",
    folder: str | os.PathLike,
    settings: Settings,
    class_names: Sequence[Any],
    *,
    results: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    test_paths: Sequence[str] | None = None,
) -> Path:
    """Save a retrained classifier as a model folder: ``model.keras``, ``model.json`` and extra files.

    Taught in notebook 05, section 7 (save the model and label new images); the retrain command uses it.

    Args:
        model: Images (preprocessed for the backbone) in, class probabilities out.
        folder: The model folder (created; replaced if it holds a saved model).
        settings: The settings it was trained with.
        class_names: Class names in output order.
        results: Numbers and notes kept in ``model.json`` (test accuracy...).
        extra: Extra files to write in the folder: name -> text, or a DataFrame (CSV).
        test_paths: The test split's files, fingerprinted in ``model.json`` (see :func:`model_info`).

    Returns:
        The folder.

    Raises:
        ValueError: The model's outputs and the class names differ in number, or an extra
            file's name is not a plain name.
        FileExistsError: ``folder`` exists and is not a saved model (never replaced).
    """
    folder = Path(folder).expanduser().resolve()
    if model.output_shape[-1] != len(class_names):
        raise ValueError(f"the model has {model.output_shape[-1]} outputs but {len(class_names)} class names were given.")
    for name in extra or {}:
        if Path(name).name != name or name.startswith(".") or name in (MODEL_FILE, INFO_FILE):
            raise ValueError(f"extra file names must be plain names other than {MODEL_FILE} and {INFO_FILE}, not {name!r}.")
    info = model_info(settings, class_names, test_paths)
    info["results"] = dict(results or {})
    info["saved"] = time.strftime("%Y-%m-%d %H:%M:%S")
    if folder.exists() and not (folder / INFO_FILE).is_file() and (not folder.is_dir() or any(folder.iterdir())):
        # Never replace something that is not a saved model (a typo could name the images folder).
        raise FileExistsError(f"{folder} exists and is not a saved model; choose a new folder for the model.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".saving", dir=folder.parent))
    try:
        model.save(staging / MODEL_FILE)
        (staging / INFO_FILE).write_text(json.dumps(info, indent=1, default=str) + "\n")
        for name, content in (extra or {}).items():
            if isinstance(content, pd.DataFrame):
                content.to_csv(staging / name, index=False)
            else:
                (staging / name).write_text(str(content))
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@device.under_strategy  # a model predicts under the strategy it was loaded in (every GPU)
def load_model(location: str | os.PathLike) -> tuple["keras.Model", dict[str, Any]]:
    """Reload a model folder written by :func:`save_model`, or an export folder of :func:`helpers.export.export_model`.

    Taught in notebook 05, section 7; the score, demo and export-model commands use it.

    Returns:
        The model and its ``model.json`` (``backbone``, ``alpha``, ``image_size``, ``class_names``...).

    Raises:
        FileNotFoundError: No model there, or no ``model.json`` beside it.
        ValueError: The metadata is unreadable or does not match the model.
    """
    import keras

    if export.is_saved_model(location):  # an exported SavedModel: scored through its serve_preprocessed endpoint
        return export.load_saved_model(location)
    folder = Path(location).expanduser()
    model_path, info_path = folder / MODEL_FILE, folder / INFO_FILE
    if not model_path.is_file():
        raise FileNotFoundError(
            f"no model at {model_path}; give the folder written by `retrain` or saved_models.save_model "
            f"(it holds {MODEL_FILE} and {INFO_FILE})."
        )
    if not info_path.is_file():
        raise FileNotFoundError(
            f"{model_path} has no {INFO_FILE} beside it: without it the class names and the preprocessing are "
            "unknown. Save models with helpers.saved_models.save_model (or the retrain command)."
        )
    info = export.read_model_info(info_path, "save the model again with helpers.saved_models.save_model")
    model = keras.models.load_model(model_path)
    if model.output_shape[-1] != len(info["class_names"]):
        raise ValueError(
            f"{model_path} has {model.output_shape[-1]} outputs but {INFO_FILE} names {len(info['class_names'])} "
            "classes; they do not belong together."
        )
    return model, info


def model_settings(info: Mapping[str, Any], settings: Settings | None = None) -> Settings:
    """Settings whose backbone, alpha and input size are a saved model's (so images are preprocessed as in training).

    Used by the ``score`` command and :func:`helpers.recipes.score_images` (notebook 05, section 7 shows it).
    """
    settings = settings or load_settings()
    return settings.replace(backbone=info["backbone"], alpha=info.get("alpha"), image_size=info["image_size"])


def cached_model_folder(settings: Settings | None = None, name: str = RETRAINED_SIMPSONS) -> Path:
    """Where :func:`save_in_cache` keeps model ``name``: ``<cache_dir>/models/<name>/``.

    Taught in notebook 02, section 8.

    A known place, so that a later notebook finds an earlier one's model (notebook 03
    compares its classic models with notebook 02's fine-tuned network).
    """
    settings = settings or load_settings()
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name must be a plain folder name without slashes, not {name!r}.")
    return Path(settings.cache_dir) / MODELS_SUBDIR / name


def _test_paths(frame: pd.DataFrame) -> list[str]:
    return list(frame.loc[frame["split"] == "test", "path"] if "split" in frame.columns else frame["path"])


def save_in_cache(
    model: "keras.Model",
    settings: Settings | None,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    *,
    name: str = RETRAINED_SIMPSONS,
    results: Mapping[str, float] | None = None,
) -> Path:
    """Save a trained classifier where later notebooks find it, with the test split it was scored on.

    Taught in notebook 02, section 8: :func:`save_model` into :func:`cached_model_folder`.

    Args:
        model: The model (images in, class probabilities out).
        settings: Course settings (cache folder, backbone); None = the current ones.
        frame: The split dataset the model was trained and tested on.
        class_names: Class names in output order.
        name: The model's folder name in the cache.
        results: Numbers to keep with the model (``{"test accuracy": 0.9}``).

    Returns:
        The model folder.
    """
    settings = settings or load_settings()
    return save_model(
        model, cached_model_folder(settings, name), settings, class_names,
        results={str(k): float(v) for k, v in (results or {}).items()}, test_paths=_test_paths(frame),
    )


def load_from_cache(
    settings: Settings | None,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    *,
    name: str = RETRAINED_SIMPSONS,
) -> tuple["keras.Model", dict[str, Any]]:
    """Reload a model saved by :func:`save_in_cache`, checking it fits this data.

    Taught in notebook 03, section 6.

    Args:
        settings: Course settings (cache folder, backbone); None = the current ones.
        frame: The split dataset it will be used on.
        class_names: Class names expected, in output order.
        name: The model's folder name in the cache.

    Returns:
        The model and its ``model.json`` (``results``, ``saved`` time...).

    Raises:
        FileNotFoundError: No such model: run the notebook that saves it first.
        SavedModelMismatch: It was trained with another backbone, input size, classes
            or test split (another profile or seed): run that notebook again.
    """
    settings = settings or load_settings()
    folder = cached_model_folder(settings, name)
    if not (folder / MODEL_FILE).is_file() or not (folder / INFO_FILE).is_file():
        raise FileNotFoundError(f"no saved model {name!r} in {folder.parent}: run the notebook that trains it first.")
    info = json.loads((folder / INFO_FILE).read_text())
    expected = model_info(settings, class_names, _test_paths(frame))
    different = [key for key, value in expected.items() if info.get(key) != value]
    if different:
        raise SavedModelMismatch(
            f"the saved model {name!r} does not match this data ({', '.join(different)} differ): "
            "it was trained with other settings; run the notebook that trains it again with these."
        )
    return load_model(folder)
