"""Exports of a tiny classifier: SavedModel (class names in its signature), TFLite, ONNX; each checked; score reads it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import export, recipe_commands, recipes, saved_models
from helpers.settings import load_settings

SIZE = 32
CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _settings(tmp_path):
    return load_settings({"profile": "smoke", "backbone": "mobilenet", "alpha": 0.25, "image_size": SIZE,
                          "cache_dir": tmp_path / "cache"},
                         environ={})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small conv net (conv, depthwise conv, batch norm, pooling, softmax) trained on colour images saved as PNG."""
    import keras

    folder = tmp_path_factory.mktemp("export-images")
    rng = np.random.default_rng(0)
    rows, pixels = [], []
    for name, rgb in COLOURS.items():
        for i in range(8):
            image = np.clip(np.array(rgb) + rng.normal(0, 30, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            path = folder / name / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(path)
            rows.append({"path": str(path), "label": name})
            pixels.append(image)
    frame = pd.DataFrame(rows)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    x_train = np.stack(pixels).astype("float32") / 127.5 - 1  # MobileNet's preprocessing
    model.fit(x_train, np.repeat(np.arange(3), 8), epochs=25, batch_size=24, verbose=0)
    return model, frame


def test_every_export_is_reloaded_and_agrees_with_the_keras_model(trained, tmp_path, capfd):
    import tensorflow as tf

    model, frame = trained
    settings = _settings(tmp_path)
    capfd.readouterr()
    report = export.export_model(model, tmp_path / "shipped", CLASSES, settings, test_paths=frame["path"],
                                 test_labels=frame["label"], batch_size=10)
    stderr = capfd.readouterr().err
    assert "Created TensorFlow Lite" not in stderr and "INFO:tensorflow" not in stderr, "noise in a notebook's output"
    assert report.ok and report.images == len(frame) and report.on_test_split, str(report)
    table = report.table.set_index("format")
    expected = ["keras", "savedmodel", "tflite float16", *(["onnx"] if export.onnx_available() else [])]
    assert list(table.index) == expected
    assert (table["size_mb"] > 0).all() and (table["agreement"] == 1.0).all()
    assert table.loc["keras", "test_accuracy"] == 1.0 and (table["test_accuracy"] == 1.0).all()
    assert table.loc["savedmodel", "max_difference"] <= export.TOLERANCES["savedmodel"]
    folder = report.folder
    assert {p.name for p in folder.iterdir()} >= {"saved_model", "model.tflite", "labels.txt", "export.csv", "export.json"}
    assert (folder / "labels.txt").read_text().split() == CLASSES
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no staging folder left behind"

    # the serving signature carries the preprocessing and the class names
    served = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    red = np.full((1, SIZE, SIZE, 3), COLOURS["red"], dtype=np.float32)
    answer = served(pixels=tf.constant(red))
    assert answer["label"].numpy().tolist() == [b"red"]
    assert [n.decode() for n in answer["class_names"].numpy()[0]] == CLASSES
    np.testing.assert_allclose(answer["probabilities"].numpy(), model.predict(red / 127.5 - 1, verbose=0), atol=1e-5)

    # `score --model` reads the export folder: the same answers as the Keras model folder
    keras_folder = saved_models.save_model(model, tmp_path / "model", settings, CLASSES)
    from_keras = recipes.score_images(frame["path"], settings, model=keras_folder)
    from_export = recipes.score_images(frame["path"], settings, model=folder)
    assert from_export["prediction"].map(lambda p: next(iter(json.loads(p)))).tolist() == frame["label"].tolist()
    for a, b in zip(from_keras["prediction"], from_export["prediction"]):
        left, right = json.loads(a), json.loads(b)
        assert list(left) == list(right) and np.allclose(list(left.values()), list(right.values()), atol=1e-3)


def test_export_command_on_a_model_folder_with_dynamic_range_quantisation(trained, tmp_path, capsys):
    """`export-model` reads a retrain-style folder (its split.csv gives the test split) and exits 0 when all agree."""
    model, frame = trained
    settings = _settings(tmp_path)
    split = frame.assign(group=range(len(frame)), split=["train", "train", "test", "test"] * (len(frame) // 4))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a PNG")  # an unreadable test image is left out of the check, and said so
    split.loc[len(split)] = [str(broken), "red", 99, "test"]
    folder = saved_models.save_model(model, tmp_path / "retrained", settings, CLASSES, extra={"split.csv": split})
    code = recipe_commands.export_model_main([str(folder), "--quantisation", "dynamic", "--formats", "savedmodel,tflite",
                                              "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    written = folder / "export"
    assert (written / "model.tflite").is_file() and not (written / "model.onnx").exists()
    info = json.loads((written / "export.json").read_text())
    assert info["images_checked"] == int((split["split"] == "test").sum()) - 1 and info["quantisation"] == "dynamic"
    assert "1 test image(s) could not be read" in out
    assert "tflite dynamic" in out and "test_accuracy" in out
    # the export folder is replaced by a new export, never a folder that is something else
    assert recipe_commands.export_model_main([str(folder), "--formats", "savedmodel", "-q"]) == 0
    assert not (written / "model.tflite").exists()
    assert recipe_commands.export_model_main([str(folder), "--output", str(frame["path"][0]).rsplit("/", 1)[0], "-q"]) == 2
    assert "not an export folder" in capsys.readouterr().err


def test_bad_requests_are_refused_before_anything_is_written(trained, tmp_path):
    model, _ = trained
    settings = _settings(tmp_path)
    target = tmp_path / "out"
    with pytest.raises(ValueError, match="quantisation"):
        export.export_model(model, target, CLASSES, settings, quantisation="int4")
    with pytest.raises(ValueError, match="formats"):
        export.export_model(model, target, CLASSES, settings, formats=["pickle"])
    with pytest.raises(ValueError, match="3 outputs but 2 class names"):
        export.export_model(model, target, CLASSES[:2], settings)
    with pytest.raises(ValueError, match="test_labels only with test_paths"):
        export.export_model(model, target, CLASSES, settings, test_labels=["red"])
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an export folder"):
        export.export_model(model, tmp_path / "notes", CLASSES, settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"] and (tmp_path / "notes" / "keep.txt").is_file()
    with pytest.raises(FileNotFoundError, match="no SavedModel"):
        export.load_saved_model(tmp_path / "notes")
