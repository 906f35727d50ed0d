"""The kit's one saved-model format (helpers.saved_models): a folder with model.keras and model.json.

Notebook 02 saves its model in the cache (save_in_cache) for notebook 03 (load_from_cache);
notebook 05 and the retrain command save a folder anywhere (save_model); the commands read
both with load_model. Tiny Keras models on generated images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import backbones, saved_models


def _tiny_classifier(size: int, classes: int):
    import keras

    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x), name="tiny_classifier")


def _split_frame(folder: Path, names: list[str]) -> pd.DataFrame:
    from PIL import Image

    rows = []
    for index, split in enumerate(["train", "train", "validation", "test", "test"]):
        label = names[index % len(names)]
        path = folder / f"{label}_{index}.png"
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(path)
        rows.append({"path": str(path), "label": label, "split": split})
    return pd.DataFrame(rows)


def test_save_in_cache_then_load_from_cache_checks_it_fits_the_data(kit_settings, tmp_path):
    settings = kit_settings.replace(cache_dir=tmp_path / "cache")
    size = backbones.input_size(settings)
    names = ["bart", "homer"]
    frame = _split_frame(tmp_path, names)
    model = _tiny_classifier(size, 2)
    folder = saved_models.save_in_cache(model, settings, frame, names, name="tiny", results={"test accuracy": 0.75})
    assert folder == saved_models.cached_model_folder(settings, "tiny")
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny"], "no partial folder left behind"
    assert sorted(p.name for p in folder.iterdir()) == sorted([saved_models.MODEL_FILE, saved_models.INFO_FILE])
    reloaded, info = saved_models.load_from_cache(settings, frame, names, name="tiny")
    images = np.random.default_rng(0).uniform(-1, 1, size=(3, size, size, 3)).astype("float32")
    assert np.allclose(np.asarray(reloaded(images)), np.asarray(model(images)), atol=1e-6)
    assert info["results"] == {"test accuracy": 0.75} and info["class_names"] == names
    assert "test_files" in info, "a model kept for later notebooks records its test split"

    with pytest.raises(saved_models.SavedModelMismatch, match="class_names"):
        saved_models.load_from_cache(settings, frame, ["homer", "bart"], name="tiny")
    other_test = frame.assign(split=["train", "test", "validation", "test", "train"])
    with pytest.raises(saved_models.SavedModelMismatch, match="test_files"):
        saved_models.load_from_cache(settings, other_test, names, name="tiny")
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        saved_models.load_from_cache(settings, frame, names, name="missing")
    with pytest.raises(ValueError, match="3 class names"):
        saved_models.save_in_cache(model, settings, frame, names + ["lisa"], name="tiny")
    with pytest.raises(ValueError, match="plain folder name"):
        saved_models.cached_model_folder(settings, "../elsewhere")

    # Saving again replaces the folder; a folder without its metadata is refused rather than trusted.
    saved_models.save_in_cache(model, settings, frame, names, name="tiny", results={"test accuracy": 0.8})
    assert saved_models.load_from_cache(settings, frame, names, name="tiny")[1]["results"] == {"test accuracy": 0.8}
    (folder / saved_models.INFO_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        saved_models.load_from_cache(settings, frame, names, name="tiny")


def test_one_format_for_the_notebooks_and_the_commands(kit_settings, tmp_path):
    """A model notebook 02 keeps in the cache is a model folder the score/demo commands read, and the reverse."""
    settings = kit_settings.replace(cache_dir=tmp_path / "cache")
    size = backbones.input_size(settings)
    names = ["bart", "homer"]
    model = _tiny_classifier(size, 2)
    cached = saved_models.save_in_cache(model, settings, _split_frame(tmp_path, names), names, name="tiny")
    anywhere = saved_models.save_model(model, tmp_path / "mine", settings, names, extra={"README.md": "hello"})
    infos = [saved_models.load_model(folder)[1] for folder in (cached, anywhere)]
    shared = {"backbone", "alpha", "image_size", "class_names", "results", "saved"}
    assert all(shared <= set(info) for info in infos), infos
    assert {k: infos[0][k] for k in shared - {"saved", "results"}} == {k: infos[1][k] for k in shared - {"saved", "results"}}
    assert (anywhere / "README.md").read_text() == "hello"
    assert saved_models.model_settings(infos[1], settings).image_size == size


def test_bad_saves_and_loads_say_what_to_do(kit_settings, tmp_path):
    settings = kit_settings.replace(cache_dir=tmp_path / "cache")
    model = _tiny_classifier(backbones.input_size(settings), 2)
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "cat.jpg").write_bytes(b"not a model")
    with pytest.raises(FileExistsError, match="not a saved model"):
        saved_models.save_model(model, precious, settings, ["a", "b"])
    assert (precious / "cat.jpg").read_bytes() == b"not a model", "an existing folder that is no model is untouched"
    with pytest.raises(ValueError, match="plain names"):
        saved_models.save_model(model, tmp_path / "m", settings, ["a", "b"], extra={"../x.txt": "no"})
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.*")), "nothing half-written"
    with pytest.raises(FileNotFoundError, match="retrain"):
        saved_models.load_model(tmp_path / "nowhere")
    folder = saved_models.save_model(model, tmp_path / "m", settings, ["a", "b"])
    (folder / saved_models.INFO_FILE).write_text(json.dumps({"class_names": ["a", "b", "c"], "backbone": "x"}))
    with pytest.raises(ValueError):
        saved_models.load_model(folder)
