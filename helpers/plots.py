"""Figures the notebooks show: image grids, class counts, learning curves, confusion matrices.

Every function draws with matplotlib and returns the ``Figure`` (assign it in a
notebook -- ``figure = plots.image_grid(...)`` -- so Jupyter shows it once). They
take plain data (paths, labels, tables, arrays), not models, so any notebook can
use them.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import matplotlib.figure

__all__ = [
    "augmentation_grid",
    "class_counts",
    "confusion_matrix",
    "confusion_matrix_grid",
    "image_grid",
    "learning_curves",
    "misclassified_gallery",
    "sample_grid",
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
    from helpers.training import history_frame, merge_histories

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

    Args:
        history: A table from :func:`helpers.training.merge_histories` (or
            ``Retrainer.history()``), a Keras ``History``, its ``.history`` dict, or a
            dict ``{phase: history}``.
        metrics: Metrics to plot, one panel each (with their ``val_`` twin).
        title: Figure title.

    Raises:
        ValueError: None of the metrics is in the history.
    """
    import matplotlib.pyplot as plt

    from helpers.training import phase_boundaries

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

    Args:
        images: uint8 arrays (height, width, 3) of one size, or file paths (resized
            to the first image's size); pixels 0..255 as the augmentation expects.
        augmentation: A callable on a float32 batch, e.g. Keras layers from
            :func:`helpers.training.augmentation_layers` (called with ``training=True``).
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
