"""Exploration helpers on small synthetic data: map, neighbours, topics, explorer widget (figures: test_plots)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import explore


def _clusters(n_per_class: int = 10, n_features: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(0, 4, size=(3, n_features)))
    X = np.concatenate([c + np.abs(rng.normal(0, 0.3, size=(n_per_class, n_features))) for c in centres])
    labels = np.repeat(["a", "b", "c"], n_per_class)
    return X.astype(np.float32), labels


def test_embed_2d_tsne_shape_and_seed():
    X, labels = _clusters()
    first = explore.embed_2d(X, seed=1)
    assert first.shape == (len(X), 2)
    np.testing.assert_allclose(first, explore.embed_2d(X, seed=1), atol=1e-5)
    # Clusters stay apart on the map: each point's nearest map neighbour has its label.
    distances = np.linalg.norm(first[:, None] - first[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(axis=1)] == labels).mean() > 0.9


def test_embed_2d_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 3"):
        explore.embed_2d(np.ones((2, 4)))
    with pytest.raises(ValueError, match="tsne"):
        explore.embed_2d(np.random.rand(10, 4), method="pca")
    with pytest.raises(ValueError, match="NaN"):
        explore.embed_2d(np.full((5, 3), np.nan))
    assert explore.embedding_methods()[0] == "tsne"


@pytest.mark.skipif("umap" in explore.embedding_methods(), reason="umap-learn is installed here")
def test_umap_without_the_package_says_how_to_get_it():
    with pytest.raises(ImportError, match="umap-learn"):
        explore.embed_2d(np.random.rand(10, 4), method="umap")


def test_umap_map_when_installed():
    pytest.importorskip("umap", reason="umap-learn is optional; t-SNE is always there")
    X, labels = _clusters()
    coords = explore.embed_2d(X, "umap", seed=0)
    assert coords.shape == (len(X), 2)
    np.testing.assert_allclose(coords, explore.embed_2d(X, "umap", seed=0))


def test_nearest_neighbours_by_cosine():
    features = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0], [2, 0.1]], dtype=np.float32)
    table = explore.nearest_neighbours(features, 0, k=3)
    assert list(table.columns) == ["rank", "index", "similarity"]
    assert table["index"].tolist() == [4, 1, 2]  # scale does not matter for cosine
    assert 0 not in table["index"].tolist()
    assert table["similarity"].is_monotonic_decreasing
    # A vector from outside the set; k larger than the set is clipped.
    outside = explore.nearest_neighbours(features, np.array([0.0, 1.0]), k=10)
    assert outside["index"].iloc[0] == 2 and len(outside) == len(features)
    with pytest.raises(ValueError, match="outside"):
        explore.nearest_neighbours(features, 9)
    with pytest.raises(ValueError, match="features"):
        explore.nearest_neighbours(features, np.ones(3))


def test_neighbour_label_agreement_separates_clusters_from_noise():
    X, labels = _clusters()
    assert explore.neighbour_label_agreement(X, labels, k=5) > 0.95
    shuffled = np.random.default_rng(0).permutation(labels)
    assert explore.neighbour_label_agreement(X, shuffled, k=5) < 0.7


def test_top_label_matrix_keeps_the_top_k():
    probabilities = np.array([[0.5, 0.2, 0.1, 0.15, 0.05], [0.05, 0.05, 0.8, 0.05, 0.05]])
    matrix = explore.top_label_matrix(probabilities, top=2)
    np.testing.assert_allclose(matrix[0], [0.5, 0.2, 0, 0, 0])
    assert (matrix[1] > 0).sum() == 2 and matrix[1, 2] == pytest.approx(0.8)
    assert (explore.top_label_matrix(probabilities, top=2, min_probability=0.3) > 0).sum() == 2
    with pytest.raises(ValueError, match="top"):
        explore.top_label_matrix(probabilities, top=0)


def test_nmf_topics_recover_planted_groups():
    # Two groups of images using disjoint labels: two topics, each image dominated by its own.
    rng = np.random.default_rng(0)
    terms = ["beach", "coast", "sand", "desk", "book", "lamp"]
    matrix = np.zeros((20, 6))
    matrix[:10, :3] = rng.uniform(0.2, 1, size=(10, 3))
    matrix[10:, 3:] = rng.uniform(0.2, 1, size=(10, 3))
    topics = explore.nmf_topics(matrix, 2, terms=terms, seed=0)
    assert topics.weights.shape == (20, 2) and topics.components.shape == (2, 6)
    dominant = topics.dominant()
    assert len(set(dominant[:10])) == 1 and len(set(dominant[10:])) == 1 and dominant[0] != dominant[10]
    beach_topic = int(dominant[0])
    assert set(topics.top_terms(beach_topic, 3)) == {"beach", "coast", "sand"}
    assert set(topics.top_images(beach_topic, 10)) == set(range(10))
    table = topics.table()
    assert list(table.columns) == ["topic", "top terms", "images"] and table["images"].sum() == 20


def test_nmf_topics_checks_its_input():
    with pytest.raises(ValueError, match="non-negative"):
        explore.nmf_topics(np.array([[1.0, -1.0], [0.5, 0.5]]), 1)
    with pytest.raises(ValueError, match="all zeros"):
        explore.nmf_topics(np.zeros((3, 3)), 1)
    with pytest.raises(ValueError, match="term names"):
        explore.nmf_topics(np.ones((3, 3)), 1, terms=["a"])
    topics = explore.nmf_topics(np.eye(3), 10)  # more topics than the matrix holds: lowered
    assert topics.n_topics == 3
    with pytest.raises(ValueError, match="topic must be"):
        topics.top_images(5)


def _image_frame(tmp_path, n_per_class=4):
    rows = []
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    for label, colour in colours.items():
        for i in range(n_per_class):
            path = tmp_path / f"{label}_pic_{i:04d}.png"
            Image.new("RGB", (40 + i, 30), tuple(min(255, c + 5 * i) for c in colour)).save(path)
            rows.append({"path": str(path), "label": label})
    return pd.DataFrame(rows)


def test_explorer_shows_neighbours_and_topics(tmp_path):
    frame = _image_frame(tmp_path)
    rng = np.random.default_rng(0)
    features = np.abs(np.where(frame["label"].to_numpy()[:, None] == "red", 1.0, -1.0) * np.ones((8, 6)))
    features[:, :3] *= np.where(frame["label"] == "red", 1.0, 0.0)[:, None]
    features += rng.uniform(0, 0.1, size=features.shape)
    topics = explore.nmf_topics(features, 2, seed=0)
    predicted = frame["label"].tolist()
    predicted[0] = "blue"
    explorer = explore.Explorer(frame, features, predicted=predicted, topics=topics, k=3, thumbnail_size=32)
    assert explorer.widget.titles == ("Similar images", "Topics")
    table = explorer.show_image(1)
    assert len(table) == 3 and 1 not in table["index"].tolist()
    assert (table["label"] == "red").all()
    grid = explorer.image_view.children[0]
    assert len(grid.children) == 4  # the query and its 3 neighbours
    assert "predicted: red" in grid.children[0].children[1].value
    explorer.image_picker.value = 5  # choosing in the dropdown redraws
    assert "<b>query</b>: blue<br>predicted: blue ✓" == explorer.image_view.children[0].children[0].children[1].value
    explorer.image_picker.value = 0
    assert "predicted: blue ✗" in explorer.image_view.children[0].children[0].children[1].value
    members = explorer.show_topic(1)
    assert len(members) > 0 and len(explorer.topic_view.children[1].children) == len(members)


def test_explorer_without_topics_and_bad_lengths(tmp_path):
    frame = _image_frame(tmp_path, n_per_class=2)
    features = np.random.default_rng(1).random((4, 5))
    explorer = explore.Explorer(frame, features, k=2, thumbnail_size=24)
    assert explorer.widget.titles == ("Similar images",)
    with pytest.raises(ValueError, match="no topic model"):
        explorer.show_topic(0)
    with pytest.raises(ValueError, match="feature rows"):
        explore.Explorer(frame, features[:3])
    with pytest.raises(ValueError, match="predictions"):
        explore.Explorer(frame, features, predicted=["a"])
