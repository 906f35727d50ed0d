"""Scoring with a pretrained classifier: top-k above a threshold, the results table, unreadable files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import scoring

ROOT = Path(__file__).resolve().parents[1]

NAMES = ["cat", "dog", "fox", "owl"]


# --------------------------------------------------------------------------- top labels of a batch, above a threshold


def _one(probabilities, names=NAMES, **kwargs):
    """The top labels of one image, through the batch-level function."""
    return scoring.top_labels([probabilities], names, **kwargs)[0]


def test_top_labels_keeps_the_most_probable_first_as_floats():
    result = _one(np.array([0.1, 0.6, 0.05, 0.25]), k=2, min_probability=0.0)
    assert list(result) == ["dog", "owl"]
    assert all(type(p) is float for p in result.values())
    assert result["dog"] == pytest.approx(0.6) and result["owl"] == pytest.approx(0.25)


def test_top_labels_threshold_is_inclusive_and_may_leave_nothing():
    assert list(_one(np.array([0.5, 0.1, 0.09, 0.31]))) == ["cat", "owl", "dog"]
    assert _one(np.full(4, 0.25), min_probability=0.3) == {}


def test_top_labels_defaults_are_the_labs():
    assert (scoring.DEFAULT_K, scoring.DEFAULT_MIN_PROBABILITY) == (5, 0.1)
    probabilities = np.array([0.3, 0.2, 0.15, 0.12, 0.11, 0.1, 0.02])
    assert len(_one(probabilities, list("abcdefg"))) == scoring.DEFAULT_K


def test_top_labels_larger_than_classes_ties_and_lists():
    assert list(_one([0.2, 0.5, 0.3], ["a", "b", "c"], k=10, min_probability=0)) == ["b", "c", "a"]
    assert list(_one([0.4, 0.2, 0.4], ["a", "b", "c"], k=2, min_probability=0)) == ["a", "c"]


def test_top_labels_agrees_with_a_plain_sort_row_by_row():
    rng = np.random.default_rng(3)
    names = [f"class_{i}" for i in range(50)]
    batch = rng.dirichlet(np.ones(50), size=4)
    for k in (1, 5, 50):
        expected = [[names[i] for i in sorted(range(50), key=lambda i: -p[i])[:k] if p[i] >= 0.02] for p in batch]
        assert [list(row) for row in scoring.top_labels(batch, names, k=k, min_probability=0.02)] == expected


@pytest.mark.parametrize(
    ("probabilities", "names", "k", "threshold", "message"),
    [
        (np.ones(4) / 4, NAMES, 5, 0.1, "one row per image"),
        (np.ones((2, 3)) / 3, NAMES, 5, 0.1, "must match"),
        (np.ones((1, 4)) / 4, NAMES, 0, 0.1, "at least 1"),
        (np.ones((1, 4)) / 4, NAMES, True, 0.1, "whole number"),
        (np.ones((1, 4)) / 4, NAMES, 2.5, 0.1, "whole number"),
        (np.ones((1, 4)) / 4, NAMES, 5, 1.5, "between 0 and 1"),
    ],
)
def test_top_labels_rejects_bad_input_with_a_clear_message(probabilities, names, k, threshold, message):
    with pytest.raises(ValueError, match=message):
        scoring.top_labels(probabilities, names, k=k, min_probability=threshold)


# --------------------------------------------------------------------------- the results table


def test_results_table_one_row_per_file_with_errors_reported():
    probabilities = np.array([[0.1, 0.6, 0.05, 0.25], [np.nan] * 4, [0.7, 0.1, 0.1, 0.1]])
    errors = [None, "corrupt: JPEG header cannot be read", None]
    table = scoring.Scores(["a.jpg", "bad.jpg", "c.jpg"], probabilities, errors, NAMES).table(k=2)
    assert list(table.columns) == ["image", "predictions", "error"]
    assert list(table["image"]) == ["a.jpg", "bad.jpg", "c.jpg"]
    assert table["predictions"].tolist() == [{"dog": 0.6, "owl": 0.25}, {}, {"cat": 0.7, "dog": 0.1}]
    assert table["error"].iloc[0] is None and table["error"].iloc[2] is None, "scored files: None, not NaN"
    assert table["error"].iloc[1] == errors[1]


def test_results_table_empty_and_mismatched_inputs():
    empty = scoring.Scores([], np.zeros((0, 4)), [], NAMES).table()
    assert list(empty.columns) == ["image", "predictions", "error"] and empty.empty
    with pytest.raises(ValueError, match="one row of probabilities"):
        scoring.Scores(["a.jpg"], np.zeros((2, 4)), [None], NAMES).table()


def _scores() -> scoring.Scores:
    probabilities = np.array([[0.1, 0.6, 0.05, 0.25], [np.nan] * 4, [0.7, 0.2, 0.05, 0.05]], dtype=np.float32)
    return scoring.Scores(["a.jpg", "bad.jpg", "c.jpg"], probabilities, [None, "empty: empty file", None], NAMES)


def test_scores_rebuild_tables_and_top_labels_without_the_model():
    scores = _scores()
    assert scores.top_labels() == ["dog", None, "cat"]
    strict = scores.table(k=5, min_probability=0.5)
    assert strict["predictions"].tolist() == [{"dog": pytest.approx(0.6)}, {}, {"cat": pytest.approx(0.7)}]
    assert [len(p) for p in scores.table(k=3, min_probability=0.0)["predictions"]] == [3, 0, 3]


def test_scores_take_and_concat_keep_rows_together():
    scores = _scores()
    picked = scores.take([2, 0])
    assert picked.paths == ["c.jpg", "a.jpg"] and picked.top_labels() == ["cat", "dog"]
    both = scoring.Scores.concat([scores, picked])
    assert both.paths == scores.paths + picked.paths and both.probabilities.shape == (5, 4)
    assert both.errors == scores.errors + picked.errors
    other = scoring.Scores(["x.jpg"], np.ones((1, 2)) / 2, [None], ["a", "b"])
    with pytest.raises(ValueError, match="different class names"):
        scoring.Scores.concat([scores, other])
    with pytest.raises(ValueError, match="at least one"):
        scoring.Scores.concat([])


def test_cartoon_or_paper_share_counts_scored_images_only():
    labels = ["comic_book", "tabby", None, "jigsaw_puzzle", "espresso"]
    assert scoring.cartoon_or_paper_share(labels) == pytest.approx(2 / 4)
    assert scoring.cartoon_or_paper_share(["tabby"], labels={"tabby"}) == 1.0
    assert math.isnan(scoring.cartoon_or_paper_share([None, None]))


# --------------------------------------------------------------------------- scoring files (a stand-in model)


class MeanColourModel:
    """Stands in for a classifier: 'probabilities' from each image's mean red, green and blue."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def predict_on_batch(self, batch):
        batch = np.asarray(batch)
        self.batches.append(batch)
        means = batch.mean(axis=(1, 2))  # (n, 3) in the backbone's preprocessed range
        logits = np.concatenate([means, np.zeros((len(batch), 1))], axis=1) * 5
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture
def folder(tmp_path):
    """Five coloured images, an empty file, a text file named .jpg and a truncated JPEG."""
    colours = {"red": (250, 0, 0), "green": (0, 250, 0), "blue": (0, 0, 250), "black": (0, 0, 0), "white": (255,) * 3}
    for name, colour in colours.items():
        Image.new("RGB", (50, 40), colour).save(tmp_path / f"{name}.jpg", quality=95)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "red.jpg").read_bytes()[:300])
    return tmp_path


def test_predict_files_scores_readable_files_in_order_and_reports_the_others(folder, kit_settings):
    paths = sorted(str(p) for p in folder.iterdir())
    model = MeanColourModel()
    scores = scoring.predict_files(paths, model, kit_settings, class_names=["red", "green", "blue", "none"], batch_size=2)
    names = [p.rsplit("/", 1)[1] for p in paths]
    bad = {"empty.jpg", "notes.jpg", "truncated.jpg"}
    assert scores.paths == paths
    for name, error, row in zip(names, scores.errors, scores.probabilities):
        if name in bad:
            assert error and np.isnan(row).all(), f"{name} must be reported, not scored"
        else:
            assert error is None and np.isclose(row.sum(), 1.0)
    kinds = [e.split(":")[0] for n, e in zip(names, scores.errors) if n in bad]
    assert kinds[:2] == ["empty", "not-an-image"] and kinds[2] in {"truncated", "corrupt"}, kinds
    assert dict(zip(names, scores.top_labels())) == {
        "black.jpg": "none", "blue.jpg": "blue", "empty.jpg": None, "green.jpg": "green",
        "notes.jpg": None, "red.jpg": "red", "truncated.jpg": None, "white.jpg": "red",
    }
    assert [len(b) for b in model.batches] == [2, 2, 1], "batches of batch_size, only readable files"
    everything = np.concatenate(model.batches)
    assert everything.shape[1:] == (224, 224, 3) and everything.min() >= -1.0 and everything.max() <= 1.0, (
        "the model sees the backbone's preprocessed images (MobileNet: [-1, 1])"
    )
    table = scoring.score_files(paths, MeanColourModel(), kit_settings, class_names=["red", "green", "blue", "none"], k=1)
    assert table["predictions"].iloc[names.index("red.jpg")] == {"red": pytest.approx(scores.probabilities[names.index("red.jpg"), 0])}
    assert table["error"].iloc[names.index("notes.jpg")].startswith("not-an-image")


def test_predict_files_with_only_bad_files_never_calls_the_model(tmp_path, kit_settings):
    (tmp_path / "empty.jpg").write_bytes(b"")
    model = MeanColourModel()
    scores = scoring.predict_files([tmp_path / "empty.jpg", tmp_path / "missing.jpg"], model, kit_settings, class_names=NAMES)
    assert model.batches == [] and all(scores.errors) and scores.errors[1].startswith("missing")


def test_predict_files_refuses_a_model_that_is_not_the_classifier(folder, kit_settings):
    with pytest.raises(ValueError, match="class names"):
        scoring.predict_files([folder / "red.jpg"], MeanColourModel(), kit_settings, class_names=NAMES + ["extra"])


# --------------------------------------------------------------------------- the real network


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_mobilenet_labels_the_kit_photos_and_imagenet_has_the_cartoon_labels(real_weights, tmp_path):
    from helpers import backbones, datasets

    names = scoring.imagenet_class_names(real_weights)
    assert len(names) == 1000 and scoring.CARTOON_OR_PAPER_LABELS <= set(names)
    photos = datasets.load_dataset("photos", real_weights)
    cat = photos.loc[photos["label"] == "cat", "path"].iloc[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(open(cat, "rb").read()[:1000])
    model = backbones.load_classifier(real_weights)
    table = scoring.score_files([cat, broken], model, real_weights)
    labels = table["predictions"].iloc[0]
    assert next(iter(labels)) in {"Egyptian_cat", "tabby", "tiger_cat"}, f"Chelsea the cat was labelled {labels}"
    assert all(p >= scoring.DEFAULT_MIN_PROBABILITY for p in labels.values()) and len(labels) <= scoring.DEFAULT_K
    assert table["predictions"].iloc[1] == {} and table["error"].iloc[1].startswith(("truncated", "corrupt"))


def test_slider_table_names_what_each_image_shows_and_keeps_labels_readable():
    scores = scoring.Scores(
        ["a/pic_0045.jpg", "b/pic_0045.jpg", "broken.jpg"],
        np.array([[0.79, 0.2, 0.01], [0.4, 0.35, 0.25], [np.nan] * 3]),
        [None, None, "truncated: the file ends early"],
        ["comic_book", "jigsaw_puzzle", "toilet_seat"],
    )
    table = scoring.slider_table(scores, ["Simpsons: bart", "Simpsons: lisa", "a truncated file"], 2, 0.3)
    assert list(table.columns) == scoring.SLIDER_COLUMNS
    assert list(table["shows"]) == ["Simpsons: bart", "Simpsons: lisa", "a truncated file"]
    assert list(table["labels kept"]) == [1, 2, 0]
    assert list(table["labels (probability)"]) == [
        "comic_book 0.79", "comic_book 0.40 · jigsaw_puzzle 0.35", "not scored: truncated: the file ends early",
    ]
    with pytest.raises(ValueError, match="one description per image"):
        scoring.slider_table(scores, ["only one"])


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("profile", ["smoke", "workshop"])
def test_notebook_01_slider_text_holds_at_the_sliders_values(real_weights, tmp_path, profile):
    """Notebook 01's "Move the threshold" text, checked on its own rows (the photographs, a truncated copy,
    one frame per character) at the values its sliders can take."""
    import nbformat

    from helpers import backbones, datasets

    source = nbformat.read(ROOT / "solutions" / "01_pretrained_scoring" / "01_pretrained_scoring.ipynb", as_version=4)
    slider_cell = next(c.source for c in source.cells if c.get("id") == "slider")
    assert "scoring.THRESHOLD_SLIDER" in slider_cell and "scoring.K_SLIDER" in slider_cell, (
        "the notebook's sliders must use scoring.K_SLIDER and scoring.THRESHOLD_SLIDER, the values tested here"
    )
    settings = real_weights.replace(profile=profile)
    model = backbones.load_classifier(settings)
    photos = datasets.load_dataset("photos", settings)
    frames = datasets.load_dataset("simpsons", settings).groupby("label").head(1)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(open(photos["path"].iloc[0], "rb").read()[:2000])
    scores = scoring.predict_files([*photos["path"], str(truncated), *frames["path"]], model, settings)
    n_photos, n_frames = len(photos), len(frames)
    is_frame = np.arange(len(scores.paths)) >= n_photos + 1
    shows = [*photos["label"], "a truncated file", *frames["label"]]

    k_low, k_high, _ = scoring.K_SLIDER
    p_low, p_high, p_step = scoring.THRESHOLD_SLIDER
    # "with min_probability at 0, every scored image gets exactly k labels; the truncated file never gets any"
    for k in range(k_low, k_high + 1):
        kept = scoring.slider_table(scores, shows, k, p_low)["labels kept"].to_numpy()
        assert kept[n_photos] == 0 and set(np.delete(kept, n_photos)) == {k}, f"k={k}, min_probability=0: {kept}"
    # "raising min_probability removes the unsure labels first, and a removed label never comes back"
    for k in (k_low, scoring.DEFAULT_K, k_high):
        previous = None
        for threshold in np.arange(p_low, p_high + p_step / 2, p_step):
            table = scores.table(k, float(threshold))
            labels = [set(p) for p in table["predictions"]]
            assert all(p >= threshold - 1e-12 for row in table["predictions"] for p in row.values())
            if previous is not None:
                assert all(now <= before for now, before in zip(labels, previous)), f"k={k}: a label came back at {threshold}"
            previous = labels
    # "at the top most frames keep no label; a frame that keeps one keeps a cartoon or paper object;
    #  a photograph of something ImageNet knows well (the espresso) keeps its label"
    top = scores.table(k_high, p_high)
    frame_labels = [set(p) for p, frame in zip(top["predictions"], is_frame) if frame]
    assert sum(not labels for labels in frame_labels) > n_frames / 2, f"{profile}: frames keeping labels at {p_high}: {frame_labels}"
    assert set().union(*frame_labels) <= scoring.CARTOON_OR_PAPER_LABELS, f"{profile}: {frame_labels}"
    espresso = top["predictions"].iloc[list(photos["label"]).index("coffee")]
    assert list(espresso) == ["espresso"], f"{profile}: the coffee photograph keeps {espresso} at {p_high}"
