"""Figures the notebooks show: the kit's one place for plots.

* images and datasets: :func:`image_grid`, :func:`sample_grid`, :func:`class_counts`,
  :func:`augmentation_grid`;
* training and evaluation: :func:`learning_curves`, :func:`confusion_matrix`,
  :func:`confusion_matrix_grid`, :func:`misclassified_gallery`;
* scoring with a pretrained classifier: :func:`predictions`;
* exploring features: :func:`embedding_map`, :func:`similar_images`, :func:`topic_images`;
* comparing approaches: :func:`comparison`, :func:`sample_efficiency`;
* where a model looks: :func:`gradcam_grid` (Grad-CAM, :mod:`helpers.gradcam`).

Every function draws with matplotlib and returns the ``Figure`` (assign it in a
notebook -- ``figure = plots.image_grid(...)`` -- so Jupyter shows it once). They
take plain data (paths, labels, tables, arrays), not models, so any notebook can
use them; the computations live in the modules named in each docstring.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import pipeline
from helpers.explore import Topics
from helpers.gradcam import GradCam, overlay
from helpers.scoring import TABLE_COLUMNS
from helpers.callbacks import history_frame, merge_histories, phase_boundaries

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure

__all__ = [
    "augmentation_grid",
    "class_counts",
    "comparison",
    "confusion_matrix",
    "confusion_matrix_grid",
    "embedding_map",
    "gradcam_grid",
    "image_grid",
    "learning_curves",
    "misclassified_gallery",
    "predictions",
    "sample_efficiency",
    "sample_grid",
    "similar_images",
    "topic_images",
]

_THUMBNAIL = 224


def _thumbnail(image: Any, size: int = _THUMBNAIL) -> np.ndarray:
    """An image (path or array) as a uint8 RGB array no larger than ``size`` pixels."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            picture = opened.convert("RGB")
            picture.thumbnail((size, size))
            return np.asarray(picture)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"an image must be a path or an (height, width, 3) array, not shape {array.shape}.")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float64)), 0, 255).astype(np.uint8)
    return array[..., :3]


def _square_thumbnail(path: str, size: int) -> np.ndarray:
    """An image file as a square uint8 thumbnail, decoded like the pipeline does."""
    return pipeline.load_image(str(path), size)


def _grid(count: int, columns: int, cell: float = 2.2) -> tuple["matplotlib.figure.Figure", np.ndarray]:
    import matplotlib.pyplot as plt

    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be a whole number >= 1, not {columns!r}.")
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(cell * columns, (cell + 0.35) * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    return figure, axes


def image_grid(
    images: Sequence[Any] | pd.Series,
    titles: Sequence[str] | None = None,
    *,
    columns: int = 6,
    title: str | None = None,
    colors: Sequence[str] | None = None,
) -> "matplotlib.figure.Figure":
    """Images in a grid, each with its title (label) above it.

    Used by notebook 04, section 1 and notebook 05, sections 3 and 8.

    Args:
        images: File paths or uint8 arrays (height, width, 3).
        titles: One caption per image (e.g. its label); none by default.
        columns: Images per row.
        title: Title of the whole figure.
        colors: One title colour per image (e.g. green right, red wrong).

    Raises:
        ValueError: No images, or titles/colours not one per image.
    """
    images = list(images)
    if not images:
        raise ValueError("no images to show; pass at least one path or array.")
    for name, values in (("titles", titles), ("colors", colors)):
        if values is not None and len(values) != len(images):
            raise ValueError(f"{len(values)} {name} for {len(images)} images; give one per image.")
    figure, axes = _grid(len(images), columns)
    for index, (ax, image) in enumerate(zip(axes.ravel(), images)):
        ax.imshow(_thumbnail(image))
        if titles is not None:
            ax.set_title(str(titles[index]), fontsize=8, color=colors[index] if colors is not None else "black")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def sample_grid(
    frame: pd.DataFrame, *, per_class: int = 3, columns: int = 6, seed: int = 0, title: str | None = None
) -> "matplotlib.figure.Figure":
    """A few images of each class of a dataset frame (``path``, ``label``), labelled.

    Used by notebook 02, section 1 and notebook 05, section 2.

    Args:
        frame: Dataset frame.
        per_class: Images shown per class (fewer when a class has fewer).
        columns: Images per row.
        seed: Which images are drawn.
        title: Figure title.
    """
    if not {"path", "label"} <= set(frame.columns):
        raise ValueError("sample_grid needs a frame with 'path' and 'label' columns.")
    shuffled = frame.sample(frac=1.0, random_state=seed)
    picked = shuffled.groupby("label", sort=True).head(per_class).sort_values("label", kind="stable")
    return image_grid(picked["path"], [str(label) for label in picked["label"]], columns=columns, title=title)


def class_counts(frame: pd.DataFrame, *, by: str | None = "split", title: str = "Images per class") -> "matplotlib.figure.Figure":
    """A bar chart of images per class (stacked by split when the frame has one).

    Used by notebook 02, section 1.

    Args:
        frame: A frame with a ``label`` column (and ``split``).
        by: Column to stack the bars by; None for one bar per class.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    if "label" not in frame.columns:
        raise ValueError("class_counts needs a frame with a 'label' column.")
    if by is not None and by in frame.columns:
        table = pd.crosstab(frame["label"], frame[by])
        order = [s for s in ("train", "validation", "test") if s in table.columns]
        table = table[order + [c for c in table.columns if c not in order]]
    else:
        table = frame["label"].value_counts().sort_index().rename("images").to_frame()
    figure, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(table) + 2), 3.6))
    table.plot.bar(stacked=True, ax=ax, rot=30, width=0.75)
    ax.set_xlabel("")
    ax.set_ylabel("images")
    ax.set_title(title)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    if table.shape[1] == 1 and ax.get_legend() is not None:
        ax.get_legend().remove()
    figure.tight_layout()
    return figure


def _history_table(history: Any) -> pd.DataFrame:
    if isinstance(history, pd.DataFrame):
        return history

    values = getattr(history, "history", history)
    if isinstance(values, Mapping) and values and all(isinstance(v, Mapping) or hasattr(v, "history") for v in values.values()):
        return merge_histories(values)
    return history_frame(values, phase="training")


def learning_curves(
    history: Any,
    *,
    metrics: Sequence[str] = ("loss", "accuracy"),
    title: str | None = None,
) -> "matplotlib.figure.Figure":
    """Training and validation curves per epoch, with a dashed line where each new phase starts.

    Used by notebook 02, sections 5 and 6, notebook 04, sections 2 and 3, and notebook 05, section 4.

    Args:
        history: A table from :func:`helpers.callbacks.merge_histories` (or
            ``fit_two_phases(...).history``), a Keras ``History``, its ``.history`` dict, or a
            dict ``{phase: history}``.
        metrics: Metrics to plot, one panel each (with their ``val_`` twin).
        title: Figure title.

    Raises:
        ValueError: None of the metrics is in the history.
    """
    import matplotlib.pyplot as plt

    table = _history_table(history)
    shown = [m for m in metrics if m in table.columns or f"val_{m}" in table.columns]
    if not shown:
        raise ValueError(f"none of the metrics {list(metrics)} is in the history (columns: {list(table.columns)}).")
    epochs = table["epoch"].to_numpy() if "epoch" in table.columns else np.arange(1, len(table) + 1)
    boundaries = phase_boundaries(table) if "epoch" in table.columns else []
    figure, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        for column, style, label in ((metric, "-o", "training"), (f"val_{metric}", "-s", "validation")):
            if column in table.columns:
                ax.plot(epochs, table[column].to_numpy(dtype=float), style, markersize=3, label=label)
        for x, phase in boundaries:
            ax.axvline(x, color="gray", linestyle="--", linewidth=1)
            ax.annotate(phase, xy=(x, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="gray")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if "phase" in table.columns and table["phase"].nunique() > 1:
        first = str(table["phase"].iloc[0])
        axes[0][0].annotate(first, xy=(0.01, 1.0), xycoords="axes fraction", xytext=(3, -12),
                            textcoords="offset points", fontsize=8, color="gray")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(
    table: pd.DataFrame,
    *,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> "matplotlib.figure.Figure":
    """A confusion matrix as a heat map with the counts written in (rows true, columns predicted).

    Used by notebook 02, section 7 and notebook 05, section 5.

    Args:
        table: A count table from :func:`helpers.evaluation.confusion_table`.
        normalize: Colour and label by each row's share instead of counts.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    counts = table.to_numpy(dtype=float)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion table must be square, not {counts.shape}.")
    values = counts
    if normalize:
        totals = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(counts)
    figure, ax = plt.subplots(figsize=(1.0 + 0.75 * n + 1.5, 1.0 + 0.75 * n))
    image = ax.imshow(values, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), [str(c) for c in table.columns], rotation=40, ha="right")
    ax.set_yticks(range(n), [str(c) for c in table.index])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = values.max() if values.size else 0
    for i in range(n):
        for j in range(n):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if top and values[i, j] > 0.6 * top else "black")
    ax.set_title(title)
    figure.tight_layout()
    return figure


def misclassified_gallery(
    table: pd.DataFrame, *, limit: int = 12, columns: int = 6, title: str | None = "Misclassified images"
) -> "matplotlib.figure.Figure":
    """The model's mistakes: each image with its true label, predicted label and probability.

    Used by notebook 02, section 7, notebook 04, section 6 and notebook 05, section 5.

    Args:
        table: From :func:`helpers.evaluation.misclassified` (``path``, ``true``,
            ``predicted``, ``probability``), most confident mistakes first.
        limit: Most images shown.
        columns: Images per row.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    missing = {"path", "true", "predicted", "probability"} - set(table.columns)
    if missing:
        raise ValueError(f"not a misclassified table: missing column(s) {sorted(missing)}.")
    rows = table.head(limit)
    if rows.empty:
        figure, ax = plt.subplots(figsize=(4, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No misclassified images.", ha="center", va="center")
        return figure
    titles = [f"true: {r.true}\npred: {r.predicted} ({r.probability:.2f})" for r in rows.itertuples()]
    return image_grid(rows["path"], titles, columns=columns, title=title, colors=["darkred"] * len(rows))


def augmentation_grid(
    images: Sequence[Any] | np.ndarray,
    augmentation: Any,
    *,
    variants: int = 4,
    titles: Sequence[str] | None = None,
    seed: int | None = None,
) -> "matplotlib.figure.Figure":
    """Each image before (first column) and after ``variants`` random augmentations.

    Used by notebook 02, section 4 (data augmentation).

    Args:
        images: uint8 arrays (height, width, 3) of one size, or file paths (resized
            to the first image's size); pixels 0..255 as the augmentation expects.
        augmentation: A callable on a float32 batch, e.g. Keras layers from
            :func:`helpers.pipeline.augmentation_layers` (called with ``training=True``).
        variants: Augmented versions per image.
        titles: A label per image (shown on its original).
        seed: Seed for the random draws (Keras's global seed).
    """
    if isinstance(variants, bool) or not isinstance(variants, (int, np.integer)) or variants < 1:
        raise ValueError(f"variants must be a whole number >= 1, not {variants!r}.")
    arrays = [_thumbnail(image, 10_000) for image in images]
    if not arrays:
        raise ValueError("no images to augment; pass at least one.")
    height, width = arrays[0].shape[:2]
    if any(a.shape[:2] != (height, width) for a in arrays):
        from PIL import Image

        arrays = [np.asarray(Image.fromarray(a).resize((width, height))) for a in arrays]
    batch = np.stack(arrays).astype(np.float32)
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)
    outputs = []
    for _ in range(variants):
        try:
            result = augmentation(batch, training=True)
        except TypeError:  # a plain function without a training argument
            result = augmentation(batch)
        outputs.append(np.asarray(result))
    cells, captions = [], []
    for row in range(len(arrays)):
        cells.append(arrays[row])
        captions.append(f"{titles[row]}\n(original)" if titles is not None else "original")
        for variant in range(variants):
            cells.append(outputs[variant][row])
            captions.append(f"augmented {variant + 1}")
    return image_grid(cells, captions, columns=variants + 1, title="Before and after augmentation")


def confusion_matrix_grid(
    tables: Mapping[str, pd.DataFrame],
    *,
    columns: int = 4,
    normalize: bool = False,
    title: str | None = None,
) -> "matplotlib.figure.Figure":
    """Several confusion matrices side by side (one per model), counts written in, rows true.

    Used by notebook 04, section 6.

    For comparing models on the same test images: every matrix uses the same colour
    scale, so a darker off-diagonal cell is more mistakes in any panel.

    Args:
        tables: Panel title (e.g. the model's name) -> count table from
            :func:`helpers.evaluation.confusion_table` (same classes in each).
        columns: Panels per row.
        normalize: Colour and label by each row's share instead of counts.
        title: Figure title.

    Raises:
        ValueError: No tables, or a table that is not square.
    """
    import textwrap

    import matplotlib.pyplot as plt

    if not tables:
        raise ValueError("no confusion tables to draw; pass {name: evaluation.confusion_table(...)}.")
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be a whole number >= 1, not {columns!r}.")
    panels = []
    for name, table in tables.items():
        counts = table.to_numpy(dtype=float)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"{name}: a confusion table must be square, not {counts.shape}.")
        if normalize:
            totals = counts.sum(axis=1, keepdims=True)
            counts = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        panels.append((str(name), table, counts))
    top = max(float(values.max()) if values.size else 0.0 for _, _, values in panels) or 1.0
    n = panels[0][2].shape[0]
    columns = min(int(columns), len(panels))
    rows = math.ceil(len(panels) / columns)
    side = max(2.6, 1.2 + 0.55 * n)
    figure, axes = plt.subplots(rows, columns, figsize=(side * columns + 0.4, (side + 0.4) * rows), squeeze=False)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    for ax, (name, table, values) in zip(axes.ravel(), panels):
        ax.imshow(values, cmap="Blues", vmin=0, vmax=top)
        ax.set_xticks(range(len(table.columns)), [str(c) for c in table.columns], rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(table.index)), [str(c) for c in table.index], fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(round(values[i, j]))}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > 0.6 * top else "black")
        ax.set_title(textwrap.fill(name, 24), fontsize=9)  # long model names on two lines, not overlapping
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- scoring (notebooks 01 and 02)


def predictions(
    table: pd.DataFrame, *, limit: int = 12, columns: int = 4, size: int = 160
) -> "matplotlib.figure.Figure":
    """An image grid with each image's labels and probabilities under it (errors in red).

    Used by notebook 01, section 5, notebook 02, section 8 and notebook 05, section 7.

    Args:
        table: A results table (:meth:`helpers.scoring.Scores.table`).
        limit: Most images shown (the first rows).
        columns: Images per row.
        size: Thumbnail size in pixels.
    """
    import matplotlib.pyplot as plt

    missing = set(TABLE_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"not a results table: missing column(s) {sorted(missing)}.")
    rows = table.head(limit)
    count = max(len(rows), 1)
    lines = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(3.2 * columns, 3.6 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), rows.iterrows()):
        title = os.path.basename(str(row["image"]))
        if row["error"] is not None:
            ax.text(0.5, 0.5, f"{title}\n\n{row['error'][:80]}", ha="center", va="center", wrap=True,
                    color="darkred", fontsize=8, transform=ax.transAxes)
            continue
        ax.imshow(_thumbnail(row["image"], size))
        labels = "\n".join(f"{label} {p:.2f}" for label, p in row["predictions"].items()) or "(no label above threshold)"
        ax.set_title(title, fontsize=8)
        ax.text(0.5, -0.02, labels, ha="center", va="top", fontsize=8, transform=ax.transAxes)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- exploring features (notebook 03)


def _spread_points(coords: np.ndarray, count: int, seed: int = 0) -> list[int]:
    """Up to ``count`` point indices spread over a 2-D map (greedy, minimum spacing), so thumbnails don't pile up."""
    if count <= 0 or len(coords) == 0:
        return []
    span = float(np.ptp(coords, axis=0).max()) or 1.0
    spacing = span / (np.sqrt(count) * 1.6)
    chosen: list[int] = []
    for index in np.random.default_rng(seed).permutation(len(coords)):
        if all(np.linalg.norm(coords[index] - coords[other]) >= spacing for other in chosen):
            chosen.append(int(index))
            if len(chosen) == count:
                break
    return chosen


def embedding_map(
    coords: Any,
    labels: Any,
    paths: Any = None,
    *,
    thumbnails: int = 40,
    thumbnail_size: int = 40,
    title: str | None = None,
    ax: Any = None,
    seed: int = 0,
) -> "matplotlib.figure.Figure":
    """A 2-D map of images (t-SNE/UMAP coordinates) coloured by class, with some thumbnails on it.

    Used by notebook 03, section 7 and notebook 05, section 8.

    Args:
        coords: ``(n, 2)`` coordinates (:func:`helpers.explore.embed_2d`).
        labels: Class of each image (colours and legend).
        paths: Image files; when given, up to ``thumbnails`` of them are drawn, spread over the map
            and framed in their class colour.
        thumbnails: Most thumbnails drawn (0: points only).
        thumbnail_size: Thumbnail side in pixels.
        title: Figure title.
        ax: Matplotlib axes to draw on (a new figure by default).
        seed: Which thumbnails are chosen.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    coords = np.asarray(coords, dtype=float)
    labels = np.asarray(list(labels), dtype=object)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"coords must have shape (n, 2), got {coords.shape}.")
    if len(labels) != len(coords) or (paths is not None and len(paths) != len(coords)):
        raise ValueError("coords, labels and paths must have one entry per image.")
    if ax is None:
        figure, ax = plt.subplots(figsize=(11, 8))
    else:
        figure = ax.figure
    classes = sorted(set(labels.tolist()), key=str)
    palette = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    colours = {name: palette(i % palette.N) for i, name in enumerate(classes)}
    for name in classes:
        mask = labels == name
        ax.scatter(coords[mask, 0], coords[mask, 1], s=14, color=colours[name], label=f"{name} ({mask.sum()})", alpha=0.8)
    if paths is not None:
        paths = list(paths)
        for index in _spread_points(coords, thumbnails, seed):
            box = OffsetImage(_square_thumbnail(paths[index], thumbnail_size), zoom=1.0)
            ax.add_artist(
                AnnotationBbox(box, coords[index], frameon=True, pad=0.15,
                               bboxprops={"edgecolor": colours[labels[index]], "linewidth": 2})
            )
    ax.legend(loc="best", fontsize=8, markerscale=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "Images placed by their features: close on the map = similar features")
    figure.tight_layout()
    return figure


def similar_images(
    paths: Any,
    query: int,
    neighbours: pd.DataFrame,
    labels: Any = None,
    *,
    size: int = 128,
    columns: int = 5,
) -> "matplotlib.figure.Figure":
    """The query image, then its most similar images with rank, class and similarity.

    Used by notebook 03, section 8.

    A neighbour's title is green when it has the query's class, red otherwise.

    Args:
        paths: Every image file (rows of the feature matrix).
        query: Row of the query image.
        neighbours: Table from :func:`helpers.explore.nearest_neighbours` (``rank``, ``index``, ``similarity``).
        labels: Class of every image (optional).
        size: Thumbnail side in pixels.
        columns: Images per row.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    paths = list(paths)
    labels = None if labels is None else list(labels)
    rows = [(int(query), "query" + (f"\n{labels[int(query)]}" if labels else ""), "black")]
    for row in neighbours.itertuples():
        same = labels is not None and labels[int(row.index)] == labels[int(query)]
        text = f"#{row.rank}  sim {row.similarity:.2f}" + (f"\n{labels[int(row.index)]}" if labels else "")
        rows.append((int(row.index), text, "green" if same else ("darkred" if labels else "black")))
    lines = -(-len(rows) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(2.6 * columns, 2.9 * lines), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (index, text, colour) in zip(axes.ravel(), rows):
        ax.imshow(_square_thumbnail(paths[index], size))
        ax.set_title(text, fontsize=9, color=colour)
    figure.tight_layout()
    return figure


def topic_images(
    topics: "Topics",
    paths: Any,
    labels: Any = None,
    *,
    per_topic: int = 6,
    n_terms: int = 4,
    size: int = 96,
) -> "matplotlib.figure.Figure":
    """One strip per topic: its top terms, then the images with the most of it.

    Used by notebook 03, section 9 and notebook 05, section 8.

    Each strip is one image (thumbnails side by side), so that even many topics draw quickly.

    Args:
        topics: A :class:`helpers.explore.Topics` model (:func:`helpers.explore.nmf_topics`).
        paths: Image files (rows of the topic weights).
        labels: Class of every image, written under each thumbnail (optional).
        per_topic: Images shown per topic.
        n_terms: Terms named per topic.
        size: Thumbnail side in pixels.

    Returns:
        The matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    paths = list(paths)
    labels = None if labels is None else list(labels)
    gap = max(2, size // 16)
    width = per_topic * (size + gap)
    figure, axes = plt.subplots(
        topics.n_topics, 1, figsize=(width / 60, topics.n_topics * (size + 30) / 60), squeeze=False
    )
    for topic, ax in zip(range(topics.n_topics), axes[:, 0]):
        strip = np.full((size, width, 3), 255, dtype=np.uint8)
        members = topics.top_images(topic, per_topic)
        for slot, index in enumerate(members):
            left = slot * (size + gap)
            strip[:, left : left + size] = _square_thumbnail(paths[int(index)], size)
            if labels is not None:
                ax.text(left + size / 2, size + 2, str(labels[int(index)]), ha="center", va="top", fontsize=7)
        ax.imshow(strip)
        ax.set_xlim(0, width)
        ax.set_ylim(size + 18, 0)
        ax.axis("off")
        terms = ", ".join(topics.top_terms(topic, n_terms)) or "(empty)"
        ax.set_title(f"topic {topic}: {terms}", fontsize=9, loc="left")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- comparing approaches (notebook 04)


def comparison(
    table: pd.DataFrame, *, chance: float | None = None, title: str | None = None
) -> "matplotlib.figure.Figure":
    """Bar chart of accuracy and balanced accuracy per approach, best on top, training time in brackets.

    Used by notebook 04, section 6.

    Args:
        table: A comparison table (columns ``approach``, ``accuracy``, ``balanced_accuracy``,
            ``train_seconds``), best first, as :func:`helpers.approaches.comparison_table` returns.
        chance: Draw a dashed line here (for example the majority-class accuracy).
        title: Figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    missing = {"approach", "accuracy", "balanced_accuracy", "train_seconds"} - set(table.columns)
    if missing:
        raise ValueError(f"the table lacks columns {sorted(missing)}; pass approaches.comparison_table(results).")
    figure, ax = plt.subplots(figsize=(8, 0.55 * len(table) + 1.5))
    rows = table.iloc[::-1]  # barh draws bottom-up; keep the best on top
    positions = np.arange(len(rows))
    ax.barh(positions + 0.2, rows["accuracy"], height=0.4, label="accuracy")
    ax.barh(positions - 0.2, rows["balanced_accuracy"], height=0.4, label="balanced accuracy")
    for y, (score, seconds) in enumerate(zip(rows["accuracy"], rows["train_seconds"])):
        ax.text(min(score, 1.0) + 0.01, y + 0.2, f"{score:.0%}  ({seconds:.0f} s)", va="center", fontsize=8)
    if chance is not None:
        ax.axvline(chance, color="grey", linestyle="--", linewidth=1, label="majority class")
    ax.set_yticks(positions, rows["approach"])
    ax.set_xlim(0, 1.2)
    ax.set_xlabel("test score (training time in brackets)")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return figure


def sample_efficiency(
    summary: pd.DataFrame, *, error: str = "std", chance: float | None = None, title: str | None = None
) -> "matplotlib.figure.Figure":
    """Test accuracy against training images per class, one line per approach, with error bars.

    Used by notebook 04, section 7.

    Args:
        summary: The output of :func:`helpers.sample_efficiency.summarize_sample_efficiency`.
        error: ``"std"`` (spread over seeds) or ``"sem"`` (standard error of the mean).
        chance: Draw a dashed line here (for example the majority-class accuracy).
        title: Figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if error not in ("std", "sem"):
        raise ValueError(f"error must be 'std' or 'sem', not {error!r}.")
    figure, ax = plt.subplots(figsize=(10, 4.5))
    for name, rows in summary.groupby("approach", sort=False):
        ax.errorbar(rows["per_class"], rows["mean"], yerr=rows[error], marker="o", capsize=3, label=name)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="majority class")
    sizes = sorted(summary["per_class"].unique())
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    runs = int(summary["runs"].max()) if len(summary) else 0
    ax.set_xlabel("training images per class (log scale)")
    ax.set_ylabel(f"test accuracy (mean ± {'1 s.d.' if error == 'std' else 's.e.m.'}, {runs} seeds)")
    ax.set_ylim(min(0.4, float((summary["mean"] - summary[error]).min()) - 0.05) if len(summary) else 0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, never over them
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------- where a model looks (Grad-CAM)


def gradcam_grid(
    result: "GradCam",
    titles: Sequence[str] | None = None,
    *,
    columns: int = 3,
    alpha: float = 0.45,
    colors: Sequence[str] | None = None,
    title: str | None = None,
) -> "matplotlib.figure.Figure":
    """Each image beside its Grad-CAM overlay (red = where the evidence for the class lies).

    Used by notebook 02, section 7, notebook 04, section 6 and notebook 05, section 6.

    Args:
        result: From :func:`helpers.gradcam.compute`.
        titles: One caption per image (for example "true: bart / pred: homer 0.91").
        columns: Image pairs per row.
        alpha: Weight of the heatmap in the overlay.
        colors: One caption colour per image (e.g. green right, red wrong).
        title: Figure title.

    Raises:
        ValueError: Titles or colours not one per image.
    """
    count = len(result.images)
    for name, values in (("titles", titles), ("colors", colors)):
        if values is not None and len(values) != count:
            raise ValueError(f"{len(values)} {name} for {count} images; give one per image.")
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns must be a whole number >= 1, not {columns!r}.")
    figure, axes = _grid(2 * count, 2 * min(columns, count))
    for index, (image, heatmap) in enumerate(zip(result.images, result.heatmaps)):
        left, right = axes.ravel()[2 * index], axes.ravel()[2 * index + 1]
        left.imshow(image)
        right.imshow(overlay(image, heatmap, alpha=alpha))
        if titles is not None:
            left.set_title(str(titles[index]), fontsize=8, color=colors[index] if colors is not None else "black")
        right.set_title(f"Grad-CAM ({result.layer})", fontsize=7, color="dimgray")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure
