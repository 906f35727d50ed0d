"""helpers.plots: every figure draws from plain data, with the expected panels, titles and marks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import callbacks, evaluation, plots  # noqa: E402


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
    history = callbacks.merge_histories(
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


def test_confusion_matrix_grid_shares_one_colour_scale():
    names = ["drawing", "photo"]
    tables = {
        "good": evaluation.confusion_table([0, 0, 1, 1], [0, 0, 1, 1], names),
        "bad": evaluation.confusion_table([0, 0, 1, 1, 1, 1], [1, 0, 0, 0, 1, 1], names),
        "third": evaluation.confusion_table([0, 1], [0, 1], names),
    }
    figure = plots.confusion_matrix_grid(tables, columns=2, title="three models")
    drawn = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in drawn] == list(tables)
    assert {ax.images[0].get_clim() for ax in drawn} == {(0.0, 2.0)}  # the largest count anywhere
    texts = [t.get_text() for t in drawn[1].texts]
    assert texts == ["1", "1", "2", "2"]  # the counts, row by row
    with pytest.raises(ValueError, match="no confusion tables"):
        plots.confusion_matrix_grid({})
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix_grid({"x": pd.DataFrame(np.zeros((2, 3)))})


# --------------------------------------------------------------------------- scoring (notebooks 01 and 02)


def test_predictions_draws_images_and_errors(tmp_path):
    image = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    table = pd.DataFrame(
        {
            "image": [str(image), str(tmp_path / "bad.jpg")],
            "predictions": [{"tabby": 0.8}, {}],
            "error": pd.Series([None, "corrupt: cannot read"], dtype=object),
        }
    )
    figure = plots.predictions(table, columns=3)
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    assert any("tabby 0.80" in t for t in texts) and any("corrupt" in t for t in texts)
    assert len(figure.axes) == 3
    assert _titles(figure) == ["red.png"]  # the unreadable file gets its error, not a title
    with pytest.raises(ValueError, match="not a results table"):
        plots.predictions(pd.DataFrame({"image": []}))


# --------------------------------------------------------------------------- exploring features (notebook 03)


def test_embedding_map_draws_points_legend_and_spread_thumbnails(image_frame):
    from matplotlib.offsetbox import AnnotationBbox

    coords = np.random.default_rng(0).normal(size=(len(image_frame), 2))
    figure = plots.embedding_map(coords, image_frame["label"], image_frame["path"], thumbnails=3, thumbnail_size=16)
    ax = figure.axes[0]
    boxes = [a for a in ax.artists if isinstance(a, AnnotationBbox)]
    assert len(boxes) == 3
    assert all(box.offsetbox.get_data().shape == (16, 16, 3) for box in boxes)  # square thumbnails
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["bart (4)", "lisa (4)"]
    points_only = plots.embedding_map(coords, image_frame["label"], thumbnails=0)
    assert not points_only.axes[0].artists
    with pytest.raises(ValueError, match="shape"):
        plots.embedding_map(coords[:, :1], image_frame["label"])
    with pytest.raises(ValueError, match="one entry per image"):
        plots.embedding_map(coords, image_frame["label"][:3])


def test_similar_images_and_topic_strips(image_frame):
    from helpers import explore

    features = np.abs(np.random.default_rng(2).normal(size=(len(image_frame), 5)))
    neighbours = explore.nearest_neighbours(features, 0, k=4)
    figure = plots.similar_images(image_frame["path"], 0, neighbours, image_frame["label"], size=16, columns=3)
    titles = _titles(figure)
    assert len(titles) == 5 and titles[0].startswith("query")
    colours = {ax.get_title(): ax.title.get_color() for ax in figure.axes if ax.get_title()}
    for row in neighbours.itertuples():
        same = image_frame["label"][row.index] == image_frame["label"][0]
        title = next(t for t in titles if t.startswith(f"#{row.rank} "))
        assert colours[title] == ("green" if same else "darkred")
    topics = explore.nmf_topics(features, 2, seed=0)
    strips = plots.topic_images(topics, image_frame["path"], image_frame["label"], per_topic=3, size=16)
    assert len(strips.axes) == 2
    assert strips.axes[0].get_title(loc="left").startswith("topic 0: ")


# --------------------------------------------------------------------------- comparing approaches (notebook 04)


def test_comparison_puts_the_best_on_top():
    from helpers import approaches

    y = np.array([0, 0, 1, 1])
    results = [
        approaches.ApproachResult(name, "raw pixels", y, np.asarray(predicted), ["a", "b"], 1.0, 10)
        for name, predicted in (("x", y), ("y", [0, 0, 0, 0]))
    ]
    table = approaches.comparison_table(results)
    figure = plots.comparison(table, chance=0.5)
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["y", "x"]  # barh bottom-up: the best on top
    with pytest.raises(ValueError, match="lacks columns"):
        plots.comparison(table.drop(columns="train_seconds"))


def test_sample_efficiency_draws_the_spread_over_seeds():
    from helpers import sample_efficiency

    runs = pd.DataFrame(
        {"approach": ["a"] * 4 + ["b"] * 4, "per_class": [1, 1, 2, 2] * 2, "seed": [0, 1] * 4, "accuracy": np.linspace(0.5, 1, 8)}
    )
    summary = sample_efficiency.summarize_sample_efficiency(runs)
    figure = plots.sample_efficiency(summary, chance=0.5)
    containers = figure.axes[0].containers
    assert len(containers) == 2  # one errorbar container per approach
    # The drawn error bars are the standard deviations of the summary.
    segments = containers[0].lines[2][0].get_segments()
    heights = [(top - bottom) / 2 for (_, bottom), (_, top) in segments]
    np.testing.assert_allclose(heights, summary.loc[summary["approach"] == "a", "std"])
    with pytest.raises(ValueError, match="error"):
        plots.sample_efficiency(summary, error="var")
