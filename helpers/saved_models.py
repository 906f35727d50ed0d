"""A retrained classifier saved where later notebooks find it, and reloaded only for the data it fits.

:func:`save_model` writes ``<cache_dir>/models/<name>.keras`` and a ``.json`` beside it
(backbone, input size, class names, a fingerprint of the test split's files, results);
:func:`load_model` reloads it, and raises :class:`SavedModelMismatch` when it was trained
for other classes, another backbone or another test split (another profile or seed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd

from helpers import backbones, device, features
from helpers.files import atomic_path, atomic_write
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras


MODELS_SUBDIR = "models"
RETRAINED_SIMPSONS = "simpsons_retrained"


class SavedModelMismatch(ValueError):
    """A saved model was trained for other classes, another backbone or another test split.

    Taught in notebook 03, section 6.
    """


def saved_model_path(settings: Settings | None = None, name: str = RETRAINED_SIMPSONS) -> Path:
    """Where :func:`save_model` keeps model ``name``: ``<cache_dir>/models/<name>.keras``.

    Taught in notebook 02, section 8.

    A known place, so that a later notebook finds an earlier one's model (notebook 03
    compares its classic models with notebook 02's fine-tuned network).
    """
    settings = settings or load_settings()
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"name must be a plain file name without folders, not {name!r}.")
    return Path(settings.cache_dir) / MODELS_SUBDIR / f"{name}.keras"


def _model_identity(settings: Settings, frame: pd.DataFrame, class_names: Sequence[str]) -> dict[str, Any]:
    """What a saved model must share with the data it is used on: backbone, input size, classes, test split."""
    test = frame.loc[frame["split"] == "test", "path"] if "split" in frame.columns else frame["path"]
    return {
        "backbone": backbones.get_backbone(settings=settings).key,
        "alpha": settings.alpha,
        "image_size": backbones.input_size(settings),
        "class_names": [str(name) for name in class_names],
        "test_files": features.files_fingerprint(sorted(map(str, test))),
    }


def save_model(
    model: "keras.Model",
    settings: Settings | None,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    *,
    name: str = RETRAINED_SIMPSONS,
    results: Mapping[str, float] | None = None,
) -> Path:
    """Save a trained classifier where later notebooks find it, with what it was trained for.

    Taught in notebook 02, section 8.

    Writes ``<name>.keras`` and ``<name>.json`` (backbone, input size, class names, a
    fingerprint of the test split's files, ``results`` such as the test accuracy)
    under ``<cache_dir>/models``. Both are written to temporary files first and renamed,
    so an interrupted save never leaves a half-written model behind.

    Args:
        model: The model (images in, class probabilities out).
        settings: Course settings (cache folder, backbone).
        frame: The split dataset the model was trained and tested on.
        class_names: Class names in output order.
        name: File name without extension.
        results: Numbers to keep with the model (``{"test accuracy": 0.9}``).

    Returns:
        The path of the ``.keras`` file.
    """
    import json

    settings = settings or load_settings()
    if model.output_shape[-1] != len(class_names):
        raise ValueError(
            f"the model has {model.output_shape[-1]} outputs but {len(class_names)} class names were given."
        )
    path = saved_model_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = _model_identity(settings, frame, class_names)
    info["results"] = {str(k): float(v) for k, v in (results or {}).items()}
    info["saved"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with atomic_path(path, suffix=".keras") as staging:  # Keras insists on the .keras suffix
        model.save(staging)
        # The .json vouches for the .keras: drop the old one first, so that an interruption
        # before the metadata is written leaves a model without metadata (refused), never a mismatch.
        path.with_suffix(".json").unlink(missing_ok=True)
    atomic_write(path.with_suffix(".json"), json.dumps(info, indent=1) + "\n")
    return path


@device.under_strategy
def load_model(
    settings: Settings | None,
    frame: pd.DataFrame,
    class_names: Sequence[str],
    *,
    name: str = RETRAINED_SIMPSONS,
) -> tuple["keras.Model", dict[str, Any]]:
    """Reload a model saved by :func:`save_model`, checking it fits this data.

    Taught in notebook 03, section 6.

    Args:
        settings: Course settings (cache folder, backbone).
        frame: The split dataset it will be used on.
        class_names: Class names expected, in output order.
        name: File name without extension.

    Returns:
        The model and what was saved with it (``results``, ``saved`` time...).

    Raises:
        FileNotFoundError: No such model: run the notebook that saves it first.
        SavedModelMismatch: It was trained with another backbone, input size, classes
            or test split (another profile or seed): run that notebook again.
    """
    import json

    import keras

    settings = settings or load_settings()
    path = saved_model_path(settings, name)
    info_path = path.with_suffix(".json")
    if not path.is_file() or not info_path.is_file():
        raise FileNotFoundError(f"no saved model {name!r} in {path.parent}: run the notebook that trains it first.")
    info = json.loads(info_path.read_text())
    expected = _model_identity(settings, frame, class_names)
    different = [key for key, value in expected.items() if info.get(key) != value]
    if different:
        raise SavedModelMismatch(
            f"the saved model {name!r} does not match this data ({', '.join(different)} differ): "
            "it was trained with other settings; run the notebook that trains it again with these."
        )
    return keras.models.load_model(path), info
