"""Top losses on generated images whose labels the test corrupts on purpose; the marker's table read back by sources."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import sources, top_losses

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
SIZE = 16


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory):
    """60 noisy one-colour PNGs (20 per class), a model trained on them, and 5 test labels corrupted on purpose."""
    import keras

    folder = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    rows, pixels = [], []
    for name, rgb in COLOURS.items():
        for i in range(20):
            image = np.clip(np.array(rgb) + rng.normal(0, 25, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
            path = folder / name / f"{name}_{i:02d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(path)
            rows.append({"path": str(path), "label": name})
            pixels.append(image)
    frame = pd.DataFrame(rows)
    x = np.stack(pixels).astype("float32") / 127.5 - 1
    classes = list(COLOURS)
    y = np.array([classes.index(label) for label in frame["label"]])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=40, batch_size=60, verbose=0)
    probabilities = model.predict(x, verbose=0)
    corrupted = [3, 17, 25, 44, 58]  # wrong labels on purpose: the next colour's name
    labels = frame["label"].tolist()
    for row in corrupted:
        labels[row] = classes[(classes.index(labels[row]) + 1) % 3]
    return frame.assign(label=labels), probabilities, classes, corrupted, folder


def test_corrupted_labels_rank_highest(colour_dataset):
    frame, probabilities, classes, corrupted, _ = colour_dataset
    table = top_losses.top_losses(probabilities, frame["label"], classes, frame["path"], k=len(corrupted))
    assert sorted(table.index) == corrupted, "the five corrupted labels must be the five highest losses"
    assert table["loss"].is_monotonic_decreasing and (table["label"] != table["prediction"]).all()
    np.testing.assert_allclose(table["loss"], -np.log(table["label_probability"]))
    whole = top_losses.top_losses(probabilities, frame["label"], classes, frame["path"], k=None)
    assert len(whole) == len(frame) and whole["loss"].iloc[len(corrupted)] < table["loss"].min()
    unreadable = probabilities.copy()
    unreadable[0] = np.nan  # a file scoring.predict_files could not read
    ranked = top_losses.top_losses(unreadable, frame["label"], classes, frame["path"], k=None)
    assert ranked.index[-1] == 0 and ranked["prediction"].iloc[-1] == "" and np.isnan(ranked["loss"].iloc[-1])
    assert sorted(ranked.index[: len(corrupted)]) == corrupted
    figure = top_losses.show_top_losses(table, columns=3)
    assert len(figure.axes) == 6 and "label:" in figure.axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close(figure)


def test_marker_saves_a_labels_table_that_sources_read_back(colour_dataset, tmp_path):
    frame, probabilities, classes, corrupted, _ = colour_dataset
    table = top_losses.top_losses(probabilities, frame["label"], classes, frame["path"], k=len(corrupted))
    output = tmp_path / "corrected.csv"
    marker = top_losses.LabelMarker(table, frame, classes, output)
    assert set(marker.menus) == set(table["path"])
    fix, drop = table.iloc[0], table.iloc[1]
    marker.menus[fix["path"]].value = fix["prediction"]  # the label was wrong: the model's answer is right
    marker.menus[drop["path"]].value = top_losses.UNUSABLE
    marker.save_button.click()
    assert output.is_file() and "1 relabelled, 1 marked unusable" in marker.message.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrected.csv"], "no temporary file left behind"

    saved = pd.read_csv(output, keep_default_na=False)
    assert list(saved.columns) == ["path", "target", "mark"] and len(saved) == len(frame)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = sources.from_table(output)
    assert any(issubclass(w.category, sources.DroppedRowsWarning) for w in caught)
    assert len(read) == len(frame) - 1
    assert read.set_index("path").loc[fix["path"], "label"] == fix["prediction"]
    dropped = sources.dropped(read)
    assert dropped["path"].tolist() == [drop["path"]] and dropped["reason"].tolist() == ["missing label"]
    assert saved.set_index("path").loc[drop["path"], "mark"] == "unusable"


def test_bad_marks_and_inputs_are_refused_and_nothing_is_written(colour_dataset, tmp_path):
    frame, probabilities, classes, _, _ = colour_dataset
    output = tmp_path / "marks.csv"
    with pytest.raises(ValueError, match="unknown mark"):
        top_losses.save_marks(frame, {frame["path"][0]: "purple"}, output, classes)
    with pytest.raises(ValueError, match="not in the dataset"):
        top_losses.save_marks(frame, {"/elsewhere/x.png": "red"}, output, classes)
    with pytest.raises(ValueError, match=r"\.csv"):
        top_losses.save_marks(frame, {}, tmp_path / "marks.txt", classes)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="one label per example"):
        top_losses.top_losses(probabilities, frame["label"][:3], classes)
    with pytest.raises(ValueError, match="classes"):
        top_losses.top_losses(probabilities[:, :2], frame["label"], classes)
    table = top_losses.top_losses(probabilities, frame["label"], classes, frame["path"], k=2)
    with pytest.raises(ValueError, match="whole dataset"):
        top_losses.LabelMarker(table, frame.drop(index=table.index), classes, output)
    # a failed save from the form is reported in the form, not raised into the notebook
    blocked = tmp_path / "taken.csv"
    blocked.mkdir()
    marker = top_losses.LabelMarker(table, frame, classes, blocked)
    marker.menus[table["path"].iloc[0]].value = top_losses.UNUSABLE
    marker.save_button.click()
    assert "not saved" in marker.message.value and blocked.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["taken.csv"] and not list(blocked.iterdir())
