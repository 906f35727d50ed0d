"""Exploring images through their features: a 2-D map, similar images, topics, an explorer widget.

As in the holiday-photos article:

* a **map** of the images in two dimensions (t-SNE, or UMAP when ``umap-learn`` is
  installed) of their backbone features, where similar images land close together;
* **similar images**: the nearest neighbours of a query image by cosine similarity;
* **topics**: non-negative matrix factorisation (NMF) of the top-5 ImageNet label
  matrix (or of the non-negative features), each topic a weighted group of labels,
  each image a mix of topics;
* an **explorer** widget (ipywidgets): pick an image to see its neighbours and
  predicted class, pick a topic to see its images.

The figures of these results are in :mod:`helpers.plots` (:func:`helpers.plots.embedding_map`,
:func:`helpers.plots.similar_images`, :func:`helpers.plots.topic_images`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets

from helpers import backbones, pipeline, weights
from helpers.settings import Settings, load_settings

# --------------------------------------------------------------------------- 2-D map


def _one_thread() -> Any:
    """Run BLAS and OpenMP on one thread: on a busy 2-core laptop their threads fight over the
    cores (NMF of 900 x 768 features measured 10x faster single-threaded, t-SNE no slower)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def embedding_methods() -> list[str]:
    """The 2-D embedding methods available here: ``tsne`` always, ``umap`` when installed.

    Used by notebook 03, section 7 (UMAP only when installed).
    """
    methods = ["tsne"]
    if importlib.util.find_spec("umap") is not None:
        methods.append("umap")
    return methods


def _as_matrix(features: Any, what: str = "features") -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float32)
    if matrix.ndim != 2:
        matrix = matrix.reshape(len(matrix), -1) if matrix.ndim > 2 else matrix
    if matrix.ndim != 2 or len(matrix) == 0:
        raise ValueError(f"{what} must be a non-empty 2-D array (images x features), got shape {np.shape(features)}.")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{what} contain NaN or infinite values; re-extract them.")
    return matrix


def embed_2d(
    features: Any,
    method: str = "tsne",
    *,
    seed: int = 0,
    perplexity: float | None = None,
    pca_components: int = 50,
    max_iter: int = 500,
) -> np.ndarray:
    """Project features to two dimensions for a map.

    Taught in notebook 03, section 7 (a map of the images); used again by notebook 05, section 8.

    Features are standardised and reduced with PCA first (to ``pca_components``),
    the usual recipe that makes t-SNE faster and less noisy.

    Args:
        features: Array ``(n_images, n_features)`` (higher-rank rows are flattened).
        method: ``"tsne"`` or ``"umap"`` (needs ``umap-learn``; see :func:`embedding_methods`).
        seed: Random state, so the map is the same on every run.
        perplexity: t-SNE perplexity; by default 30, lowered for small sets.
        pca_components: Dimensions kept by PCA before the embedding.
        max_iter: t-SNE iterations; 500 gives the same clusters as the default 1000
            on a thousand images, in about half the time on a laptop.

    Returns:
        Array ``(n_images, 2)``.

    Raises:
        ValueError: Unknown method, fewer than 3 images, or bad features.
        ImportError: ``umap`` asked for but not installed.
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    matrix = _as_matrix(features)
    n = len(matrix)
    if n < 3:
        raise ValueError(f"a map needs at least 3 images, got {n}.")
    if method not in ("tsne", "umap"):
        raise ValueError(f"method must be 'tsne' or 'umap', not {method!r}.")
    scaled = StandardScaler().fit_transform(matrix)
    components = max(2, min(pca_components, n - 1, matrix.shape[1]))
    reduced = scaled
    if matrix.shape[1] > components:
        reduced = PCA(n_components=components, random_state=seed).fit_transform(scaled)
    if method == "umap":
        if "umap" not in embedding_methods():
            raise ImportError("UMAP needs the umap-learn package (pip install umap-learn); t-SNE works without it.")
        import umap

        # A seed makes UMAP single-threaded anyway; saying so avoids its warning.
        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, n - 1), n_jobs=1)
        return np.asarray(reducer.fit_transform(reduced), dtype=np.float32)
    from sklearn.manifold import TSNE

    # Perplexity must stay below the number of images; ~n/4 keeps small sets readable.
    perplexity = perplexity if perplexity is not None else float(min(30.0, max(2.0, (n - 1) / 4)))
    if not 0 < perplexity < n:
        raise ValueError(f"perplexity must be between 0 and the number of images ({n}), not {perplexity}.")
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto", max_iter=max_iter
    )
    with _one_thread():
        return np.asarray(tsne.fit_transform(reduced), dtype=np.float32)


# --------------------------------------------------------------------------- similar images


def cosine_similarity_matrix(features: Any, queries: Any | None = None) -> np.ndarray:
    """Cosine similarity between ``queries`` (default: every image) and every image.

    Used inside :func:`nearest_neighbours` (notebook 03, section 8).
    """
    matrix = _as_matrix(features)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms == 0, 1.0, norms)
    if queries is None:
        query_unit = unit
    else:
        query = _as_matrix(np.atleast_2d(np.asarray(queries, dtype=np.float32)), "queries")
        if query.shape[1] != matrix.shape[1]:
            raise ValueError(f"queries have {query.shape[1]} features but the images have {matrix.shape[1]}.")
        query_norms = np.linalg.norm(query, axis=1, keepdims=True)
        query_unit = query / np.where(query_norms == 0, 1.0, query_norms)
    return query_unit @ unit.T


def nearest_neighbours(features: Any, query: int | Any, k: int = 8) -> pd.DataFrame:
    """The ``k`` images most similar to a query, by cosine similarity of their features.

    Taught in notebook 03, section 8 (similar images).

    Args:
        features: Array ``(n_images, n_features)``.
        query: Row index of the query image (it is left out of its own results), or a
            feature vector of an image from outside the set.
        k: Number of neighbours.

    Returns:
        DataFrame with ``rank`` (1 = most similar), ``index`` (row in ``features``) and
        ``similarity`` (1.0 = same direction), most similar first.
    """
    matrix = _as_matrix(features)
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}.")
    if isinstance(query, (int, np.integer)):
        if not 0 <= int(query) < len(matrix):
            raise ValueError(f"query index {query} is outside 0..{len(matrix) - 1}.")
        similarities = cosine_similarity_matrix(matrix, matrix[int(query)])[0]
        similarities[int(query)] = -np.inf  # an image is not its own neighbour
        available = len(matrix) - 1
    else:
        similarities = cosine_similarity_matrix(matrix, query)[0]
        available = len(matrix)
    k = min(k, available)
    # Stable sort on (-similarity, index): ties resolve to the lower index, reproducibly.
    order = np.lexsort((np.arange(len(similarities)), -similarities))[:k]
    return pd.DataFrame({"rank": np.arange(1, k + 1), "index": order, "similarity": similarities[order].astype(float)})


def neighbour_label_agreement(features: Any, labels: Sequence[Any], k: int = 8) -> float:
    """Share of each image's ``k`` nearest neighbours that have its label (averaged).

    Used by notebook 03, section 8.

    A quick, label-aware summary of how well the feature space groups the classes.
    """
    matrix = _as_matrix(features)
    labels = np.asarray(labels)
    if len(labels) != len(matrix):
        raise ValueError(f"{len(labels)} labels for {len(matrix)} images.")
    if len(matrix) < 2:
        raise ValueError("need at least two images.")
    similarities = cosine_similarity_matrix(matrix)
    np.fill_diagonal(similarities, -np.inf)
    k = min(k, len(matrix) - 1)
    nearest = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    return float((labels[nearest] == labels[:, None]).mean())


# --------------------------------------------------------------------------- topics


def imagenet_class_names(settings: Settings | None = None) -> list[str]:
    """The 1000 ImageNet class names, in the classifier's output order.

    Used by notebook 01, section 1 (as ``scoring.imagenet_class_names``), notebook 03, section 9 and notebook 05,
    section 8.

    Read through the backbone's own ``decode_predictions`` (the class index file in the
    kit's Keras cache), so the names are exactly the ones the classifier reports.
    """
    settings = settings or load_settings()
    weights.configure_keras_home(settings)
    decode = backbones.get_backbone(settings=settings).decode_predictions
    rows = decode(np.eye(1000, dtype=np.float32), top=1)
    return [row[0][1] for row in rows]


def top_label_matrix(probabilities: Any, top: int = 5, min_probability: float = 0.0) -> np.ndarray:
    """The top-``top`` label matrix: each image keeps its ``top`` most probable labels.

    Taught in notebook 03, section 9 (topics); used again by notebook 05, section 8.

    Args:
        probabilities: Classifier outputs, ``(n_images, n_classes)``.
        top: Labels kept per image (5, as in the holiday-photos article).
        min_probability: Labels below this probability are dropped too.

    Returns:
        Array of the same shape: the kept probabilities, zero elsewhere.
    """
    matrix = _as_matrix(probabilities, "probabilities")
    if np.any(matrix < 0):
        raise ValueError("probabilities must be non-negative (pass the classifier's softmax outputs).")
    if not 1 <= top <= matrix.shape[1]:
        raise ValueError(f"top must be between 1 and {matrix.shape[1]}, not {top}.")
    keep = np.argsort(-matrix, axis=1, kind="stable")[:, :top]
    result = np.zeros_like(matrix)
    rows = np.arange(len(matrix))[:, None]
    result[rows, keep] = matrix[rows, keep]
    result[result < min_probability] = 0.0
    return result


@dataclasses.dataclass
class Topics:
    """An NMF topic model: ``matrix ≈ weights @ components``.

    Returned by :func:`nmf_topics` in notebook 03, section 9 and notebook 05, section 8.

    Attributes:
        weights: ``(n_images, n_topics)``: how much of each topic is in each image.
        components: ``(n_topics, n_terms)``: how much each term (label or feature) weighs in each topic.
        terms: Name of each column of the factorised matrix.
        reconstruction_error: Frobenius norm of what NMF could not explain.
    """

    weights: np.ndarray
    components: np.ndarray
    terms: list[str]
    reconstruction_error: float

    @property
    def n_topics(self) -> int:
        """Number of topics."""
        return int(self.components.shape[0])

    def dominant(self) -> np.ndarray:
        """Each image's strongest topic (``-1`` for an image with no topic at all)."""
        best = np.argmax(self.weights, axis=1)
        return np.where(self.weights.max(axis=1) > 0, best, -1)

    def top_terms(self, topic: int, n: int = 5) -> list[str]:
        """The ``n`` terms that weigh most in one topic."""
        self._check_topic(topic)
        order = np.argsort(-self.components[topic], kind="stable")[:n]
        return [self.terms[i] for i in order if self.components[topic, i] > 0]

    def top_images(self, topic: int, n: int = 8) -> np.ndarray:
        """Row indices of the ``n`` images with the most of one topic (images without it are left out)."""
        self._check_topic(topic)
        column = self.weights[:, topic]
        order = np.argsort(-column, kind="stable")[:n]
        return order[column[order] > 0]

    def table(self, n_terms: int = 5) -> pd.DataFrame:
        """One row per topic: its top terms and how many images it dominates."""
        dominant = self.dominant()
        return pd.DataFrame(
            {
                "topic": range(self.n_topics),
                "top terms": [", ".join(self.top_terms(t, n_terms)) for t in range(self.n_topics)],
                "images": [int((dominant == t).sum()) for t in range(self.n_topics)],
            }
        )

    def _check_topic(self, topic: int) -> None:
        if not 0 <= int(topic) < self.n_topics:
            raise ValueError(f"topic must be between 0 and {self.n_topics - 1}, not {topic}.")


def nmf_topics(matrix: Any, n_topics: int = 8, *, terms: Sequence[str] | None = None, seed: int = 0) -> Topics:
    """Factorise a non-negative image x term matrix into topics with NMF.

    Taught in notebook 03, section 9 (topics); used again by notebook 05, section 8.

    Use it on :func:`top_label_matrix` of the ImageNet predictions (terms = class
    names: topics read like "comic_book, book_jacket, envelope") or on features taken
    after a ReLU (terms = feature numbers).

    Args:
        matrix: Non-negative array ``(n_images, n_terms)``.
        n_topics: Number of topics (lowered to what the matrix can hold).
        terms: Names of the columns; ``"f0", "f1", ...`` by default.
        seed: Random state.

    Raises:
        ValueError: Negative values, an all-zero matrix, or ``terms`` of the wrong length.
    """
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    data = _as_matrix(matrix, "matrix")
    if np.any(data < 0):
        raise ValueError(
            "NMF needs non-negative values; use the top-5 label matrix or features taken after a ReLU "
            "(the default penultimate layer is)."
        )
    if not np.any(data > 0):
        raise ValueError("the matrix is all zeros: there is nothing to factorise.")
    if n_topics < 1:
        raise ValueError(f"n_topics must be at least 1, not {n_topics}.")
    names = [f"f{i}" for i in range(data.shape[1])] if terms is None else [str(t) for t in terms]
    if len(names) != data.shape[1]:
        raise ValueError(f"{len(names)} term names for {data.shape[1]} columns.")
    # Drop all-zero columns (labels no image has): same topics, far less work for 1000 labels.
    used = np.flatnonzero(data.any(axis=0))
    n_topics = int(min(n_topics, len(data), len(used)))
    model = NMF(n_components=n_topics, init="nndsvda", max_iter=500, random_state=seed)
    with warnings.catch_warnings(), _one_thread():
        # Past a few hundred iterations the topics no longer change visibly; not converging
        # to 1e-4 is not worth a warning in class.
        warnings.simplefilter("ignore", ConvergenceWarning)
        weights = model.fit_transform(data[:, used])
    components = np.zeros((n_topics, data.shape[1]), dtype=np.float32)
    components[:, used] = model.components_
    return Topics(
        weights=weights.astype(np.float32),
        components=components,
        terms=names,
        reconstruction_error=float(model.reconstruction_err_),
    )


# --------------------------------------------------------------------------- explorer widget


def thumbnail_png(path: str, size: int = 96) -> bytes:
    """A square PNG thumbnail of an image file (for widgets).

    Used inside :class:`Explorer` (notebook 03, section 10).
    """
    from PIL import Image

    buffer = io.BytesIO()
    # Decoded and squared like the pipeline does (and like the thumbnails of the plots).
    Image.fromarray(pipeline.load_image(str(path), size)).save(buffer, format="PNG")
    return buffer.getvalue()


class Explorer:
    """An ipywidgets explorer: pick an image -> its neighbours and predicted class; pick a topic -> its images.

    Used by notebook 03, section 10 (the explorer) and notebook 05, section 8.

    Display it with ``explorer.widget`` (the last expression of a cell). Its methods
    can also be called directly, which is how the tests drive it.

    Args:
        frame: Images (``path``, and ``label`` when known), one row per feature row.
        features: Feature array, rows in frame order.
        predicted: Predicted class per image (for example from the chosen classic model).
        topics: A :class:`Topics` model over the same images (optional: no topic tab without it).
        k: Neighbours shown.
        thumbnail_size: Thumbnail side in pixels.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        features: Any,
        *,
        predicted: Sequence[Any] | None = None,
        topics: Topics | None = None,
        k: int = 8,
        thumbnail_size: int = 96,
    ) -> None:
        import ipywidgets

        if "path" not in frame.columns:
            raise ValueError("frame needs a 'path' column.")
        self.frame = frame.reset_index(drop=True)
        self.features = _as_matrix(features)
        if len(self.features) != len(self.frame):
            raise ValueError(f"{len(self.features)} feature rows for {len(self.frame)} images.")
        if predicted is not None and len(predicted) != len(self.frame):
            raise ValueError(f"{len(predicted)} predictions for {len(self.frame)} images.")
        if topics is not None and len(topics.weights) != len(self.frame):
            raise ValueError(f"the topic model covers {len(topics.weights)} images, not {len(self.frame)}.")
        self.predicted = None if predicted is None else list(predicted)
        self.topics = topics
        self.k = k
        self.size = thumbnail_size
        self._thumbnails: dict[int, bytes] = {}

        names = [f"{i}: {self._caption(i)} ({_file_name(p)})" for i, p in enumerate(self.frame["path"])]
        self.image_picker = ipywidgets.Dropdown(options=list(zip(names, range(len(names)))), description="Image")
        self.image_view = ipywidgets.VBox()
        self.image_picker.observe(lambda change: self.show_image(change["new"]), names="value")
        tabs = [ipywidgets.VBox([self.image_picker, self.image_view])]
        titles = ["Similar images"]
        if topics is not None:
            options = [(f"topic {t}: {', '.join(topics.top_terms(t, 3))}", t) for t in range(topics.n_topics)]
            self.topic_picker = ipywidgets.Dropdown(options=options, description="Topic")
            self.topic_view = ipywidgets.VBox()
            self.topic_picker.observe(lambda change: self.show_topic(change["new"]), names="value")
            tabs.append(ipywidgets.VBox([self.topic_picker, self.topic_view]))
            titles.append("Topics")
        self.widget = ipywidgets.Tab(children=tabs, titles=titles)
        self.show_image(0)
        if topics is not None:
            self.show_topic(0)

    def _caption(self, index: int) -> str:
        label = self.frame["label"].iloc[index] if "label" in self.frame.columns else "?"
        return str(label)

    def _card(self, index: int, lines: list[str]) -> "ipywidgets.Widget":
        import ipywidgets

        if index not in self._thumbnails:
            self._thumbnails[index] = thumbnail_png(str(self.frame["path"].iloc[index]), self.size)
        image = ipywidgets.Image(value=self._thumbnails[index], format="png", width=self.size, height=self.size)
        text = ipywidgets.HTML("<br>".join(lines), layout=ipywidgets.Layout(width=f"{self.size + 40}px"))
        return ipywidgets.VBox([image, text])

    def _grid(self, cards: list["ipywidgets.Widget"]) -> "ipywidgets.Widget":
        import ipywidgets

        return ipywidgets.GridBox(
            cards, layout=ipywidgets.Layout(grid_template_columns=f"repeat(5, {self.size + 48}px)")
        )

    def neighbours(self, index: int) -> pd.DataFrame:
        """The neighbours table of one image: rank, index, similarity, label, predicted."""
        table = nearest_neighbours(self.features, int(index), self.k)
        table["label"] = [self._caption(i) for i in table["index"]]
        if self.predicted is not None:
            table["predicted"] = [self.predicted[i] for i in table["index"]]
        return table

    def show_image(self, index: int) -> pd.DataFrame:
        """Show one image with its predicted class, then its ``k`` most similar images."""
        index = int(index)
        table = self.neighbours(index)
        lines = [f"<b>query</b>: {self._caption(index)}"]
        if self.predicted is not None:
            verdict = "✓" if str(self.predicted[index]) == self._caption(index) else "✗"
            lines.append(f"predicted: {self.predicted[index]} {verdict}")
        cards = [self._card(index, lines)]
        for row in table.itertuples():
            cards.append(self._card(int(row.index), [f"#{row.rank} {row.label}", f"similarity {row.similarity:.2f}"]))
        self.image_view.children = [self._grid(cards)]
        return table

    def show_topic(self, topic: int, n: int | None = None) -> np.ndarray:
        """Show the images with the most of one topic; returns their row indices."""
        if self.topics is None:
            raise ValueError("this explorer has no topic model; pass topics=nmf_topics(...).")
        import ipywidgets

        members = self.topics.top_images(int(topic), n or self.k + 2)
        header = ipywidgets.HTML(f"<b>topic {topic}</b>: {', '.join(self.topics.top_terms(int(topic), 6))}")
        cards = [
            self._card(int(i), [self._caption(int(i)), f"weight {self.topics.weights[int(i), int(topic)]:.2f}"])
            for i in members
        ]
        self.topic_view.children = [header, self._grid(cards)]
        return members


def _file_name(path: str) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]
