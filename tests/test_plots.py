"""helpers.plots: every figure draws from plain data, with the expected panels, titles and marks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import evaluation, plots, training  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def image_frame(tmp_path):
    """Six small JPEGs of two classes in three splits, written with PIL."""
    rows = []
    rng = np.random.default_rng(0)
    for label, colour in (("bart", (250, 200, 0)), ("lisa", (240, 120, 20))):
        for index, split in enumerate(("train", "train", "validation", "test")):
            pixels = np.clip(rng.normal(colour, 20, size=(40, 30, 3)), 0, 255).astype(np.uint8)
            path = tmp_path / f"{label}_{index}.jpg"
            Image.fromarray(pixels).save(path)
            rows.append({"path": str(path), "label": label, "split": split})
    return pd.DataFrame(rows)


def _titles(figure) -> list[str]:
    return [ax.get_title() for ax in figure.axes if ax.get_title()]


def test_image_grid_titles_colours_and_layout(image_frame):
    figure = plots.image_grid(image_frame["path"], list(image_frame["label"]), columns=3, title="Samples",
                              colors=["green"] * len(image_frame))
    assert len(figure.axes) == 9  # 8 images on a 3-wide grid
    assert _titles(figure) == list(image_frame["label"])
    assert sum(1 for ax in figure.axes if ax.images) == len(image_frame)
    assert figure._suptitle.get_text() == "Samples"
    arrays = [np.zeros((10, 12, 3), np.uint8), np.full((10, 12), 200.0)]
    assert len(plots.image_grid(arrays).axes) == 2


def test_image_grid_rejects_bad_input(image_frame):
    with pytest.raises(ValueError, match="no images"):
        plots.image_grid([])
    with pytest.raises(ValueError, match="one per image"):
        plots.image_grid(image_frame["path"], ["only one"])
    with pytest.raises(ValueError, match="columns"):
        plots.image_grid(image_frame["path"], columns=0)


def test_sample_grid_shows_a_few_images_per_class(image_frame):
    figure = plots.sample_grid(image_frame, per_class=2, columns=4)
    titles = _titles(figure)
    assert sorted(titles) == ["bart", "bart", "lisa", "lisa"]


def test_class_counts_stacks_splits(image_frame):
    figure = plots.class_counts(image_frame)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["bart", "lisa"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation", "test"]
    heights = [patch.get_height() for patch in ax.patches]
    assert sum(heights) == len(image_frame)
    flat = plots.class_counts(image_frame.drop(columns="split"))
    assert sum(p.get_height() for p in flat.axes[0].patches) == len(image_frame)


def test_learning_curves_mark_the_phase_boundary():
    history = training.merge_histories(
        {
            "phase 1: head": {"loss": [1.0, 0.8, 0.7], "accuracy": [0.5, 0.6, 0.7],
                              "val_loss": [0.9, 0.85, 0.8], "val_accuracy": [0.55, 0.6, 0.65]},
            "phase 2: last block": {"loss": [0.6, 0.5], "accuracy": [0.75, 0.8],
                                    "val_loss": [0.7, 0.65], "val_accuracy": [0.7, 0.72]},
        }
    )
    figure = plots.learning_curves(history, title="Both phases")
    assert len(figure.axes) == 2
    for ax in figure.axes:
        lines = ax.get_lines()
        curves = [line for line in lines if len(line.get_xdata()) == 5]
        assert len(curves) == 2  # training and validation over the 5 epochs
        boundaries = [line for line in lines if line.get_linestyle() == "--"]
        assert len(boundaries) == 1 and list(boundaries[0].get_xdata()) == [3.5, 3.5]
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert "phase 2: last block" in texts and "phase 1: head" in texts


def test_learning_curves_accepts_a_keras_style_history_dict():
    figure = plots.learning_curves({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, metrics=("loss", "accuracy"))
    assert len(figure.axes) == 1  # accuracy is not in the history
    assert not [line for line in figure.axes[0].get_lines() if line.get_linestyle() == "--"]
    with pytest.raises(ValueError, match="none of the metrics"):
        plots.learning_curves({"loss": [1.0]}, metrics=("auc",))


def test_confusion_matrix_writes_counts_and_shares():
    table = evaluation.confusion_table([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], ["a", "b", "c"])
    figure = plots.confusion_matrix(table)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.texts] == [str(v) for v in table.to_numpy().ravel()]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    shares = plots.confusion_matrix(table, normalize=True)
    assert shares.axes[0].texts[0].get_text() == "0.50"
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix(pd.DataFrame(np.zeros((2, 3))))


def test_misclassified_gallery_captions(image_frame):
    table = pd.DataFrame(
        {"path": image_frame["path"][:2], "true": ["bart", "lisa"], "predicted": ["lisa", "bart"],
         "probability": [0.91, 0.55]}
    )
    figure = plots.misclassified_gallery(table)
    assert _titles(figure) == ["true: bart\npred: lisa (0.91)", "true: lisa\npred: bart (0.55)"]
    empty = plots.misclassified_gallery(table.iloc[:0])
    assert "No misclassified" in empty.axes[0].texts[0].get_text()
    with pytest.raises(ValueError, match="missing column"):
        plots.misclassified_gallery(table.drop(columns="probability"))


def test_augmentation_grid_originals_then_variants(image_frame):
    calls = []

    def brighten(batch):
        calls.append(batch.shape)
        return np.clip(batch + 40.0, 0, 255)

    figure = plots.augmentation_grid(image_frame["path"][:2], brighten, variants=3, titles=["bart", "lisa"])
    assert len(calls) == 3 and calls[0] == (2, 40, 30, 3)
    titles = _titles(figure)
    assert titles[0] == "bart\n(original)" and titles[1:4] == ["augmented 1", "augmented 2", "augmented 3"]
    shown = [ax.images[0].get_array() for ax in figure.axes if ax.images]
    assert len(shown) == 8
    assert np.all(np.asarray(shown[1], dtype=int) >= np.asarray(shown[0], dtype=int))
    with pytest.raises(ValueError, match="variants"):
        plots.augmentation_grid(image_frame["path"][:1], brighten, variants=0)
