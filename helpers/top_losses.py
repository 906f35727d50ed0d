"""The worst mistakes and their labels: the highest-loss images, and a widget to correct their labels.

fast.ai's *top losses* and *image cleaner*, in the kit's terms. A test image's loss is
the cross-entropy of its label, ``-log p(label)``: high when the model is confident of
another class. The top of that list mixes the model's real mistakes with images whose
*label* is wrong (or that show nothing usable) -- the model can be right where the
data is not.

* :func:`top_losses` -- the table: path, label, prediction, probabilities, loss;
* :func:`show_top_losses` -- a grid of those images with label, prediction and loss;
* :func:`apply_marks` / :func:`save_marks` -- a dataset's labels table with the marks
  applied: a label corrected, or an image marked unusable. The table has the columns
  ``path,target`` that :func:`helpers.sources.from_table` and the ``retrain`` command
  read; an unusable image keeps its row with an empty ``target``, so the reader drops
  it and lists it (:func:`helpers.sources.dropped`), and a ``mark`` column says what
  was changed. Written atomically (:mod:`helpers.files`);
* :class:`LabelMarker` -- the ipywidgets form: one row per image (thumbnail, label,
  prediction, a menu: keep / relabel as ... / unusable), a Save button.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import files, pipeline

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets
    from matplotlib.figure import Figure

__all__ = ["KEEP", "LabelMarker", "MARK_COLUMNS", "UNUSABLE", "apply_marks", "save_marks", "show_top_losses", "top_losses"]

#: A mark that changes nothing, and the mark that drops an image.
KEEP, UNUSABLE = "keep", "unusable"
#: Columns of a saved labels table.
MARK_COLUMNS = ["path", "target", "mark"]
TOP_COLUMNS = ["path", "label", "prediction", "probability", "label_probability", "loss"]


def top_losses(
    probabilities: Any,
    labels: Sequence[Any],
    class_names: Sequence[Any],
    paths: Sequence[str] | None = None,
    *,
    k: int | None = 16,
) -> pd.DataFrame:
    """The ``k`` examples with the highest loss (cross-entropy of their label), highest first.

    Taught in notebook 02, section 7 (the worst mistakes); used again by notebook 05, section 5.

    Args:
        probabilities: ``(n, classes)`` model outputs (``retrainer.predict("test")``).
        labels: The ``n`` labels (class names, as in the dataset frame).
        class_names: Class names in output order.
        paths: The ``n`` image files (kept in the table for showing and marking).
        k: Rows to keep; None keeps every example.

    Returns:
        Columns ``path``, ``label``, ``prediction``, ``probability`` (of the prediction),
        ``label_probability`` and ``loss``; the index is each example's position.

    >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> top_losses(p, ["cat", "cat", "dog"], ["cat", "dog"], ["a.jpg", "b.jpg", "c.jpg"], k=2)[["path", "loss"]].round(3)
        path   loss
    1  b.jpg  1.609
    2  c.jpg  0.916
    """
    values = np.asarray(probabilities, dtype=np.float64)
    names = list(class_names)
    if values.ndim != 2 or values.shape[1] != len(names):
        raise ValueError(f"probabilities must be (examples, {len(names)} classes), not shape {values.shape}.")
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} rows of probabilities; give one label per example.")
    if paths is not None and len(paths) != len(values):
        raise ValueError(f"{len(paths)} paths for {len(values)} examples; give one path per example.")
    if k is not None and (int(k) != k or k < 1):
        raise ValueError(f"k must be a positive whole number (or None for all), not {k!r}.")
    ids = pipeline.encode_labels(list(labels), names)
    # A file the model could not read has no probabilities (NaN, from scoring.predict_files): ranked last.
    unscored = np.isnan(values).any(axis=1)
    label_probability = np.where(unscored, np.nan, values[np.arange(len(values)), ids])
    with np.errstate(invalid="ignore"):
        loss = -np.log(np.clip(label_probability, 1e-12, 1.0))
    predicted = np.where(unscored, -1, np.nan_to_num(values, nan=-1.0).argmax(axis=1))
    table = pd.DataFrame(
        {
            "path": list(map(str, paths)) if paths is not None else [""] * len(values),
            "label": [names[i] for i in ids],
            "prediction": [names[i] if i >= 0 else "" for i in predicted],
            "probability": np.where(unscored, np.nan, np.nan_to_num(values, nan=-1.0).max(axis=1)),
            "label_probability": label_probability,
            "loss": loss,
        },
        columns=TOP_COLUMNS,
    )
    table = table.sort_values("loss", ascending=False, kind="stable", na_position="last")
    return table if k is None else table.head(int(k))


def show_top_losses(table: pd.DataFrame, *, columns: int = 4, size: int = 160) -> "Figure":
    """A grid of the images of a :func:`top_losses` table, each titled label / prediction / loss.

    Taught in notebook 02, section 7; used again by notebook 05, section 5.
    """
    import matplotlib.pyplot as plt

    if not len(table):
        raise ValueError("the table is empty: nothing to show.")
    if int(columns) != columns or columns < 1:
        raise ValueError(f"columns must be a positive whole number, not {columns!r}.")
    rows = -(-len(table) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), table.iterrows()):
        try:
            ax.imshow(pipeline.load_image(row["path"], size))
        except Exception as error:  # an unreadable file still gets its caption
            ax.text(0.5, 0.5, f"cannot show:\n{type(error).__name__}", ha="center", va="center", fontsize=8)
        ax.set_title(
            f"label: {row['label']}\npredicted: {row['prediction']} ({row['probability']:.0%})\nloss {row['loss']:.2f}",
            fontsize=8, color="C3" if row["label"] != row["prediction"] else "black",
        )
    figure.tight_layout()
    return figure


def apply_marks(frame: pd.DataFrame, marks: Mapping[str, Any], class_names: Sequence[Any] | None = None) -> pd.DataFrame:
    """A dataset's labels table with the marks applied: ``path``, ``target``, ``mark``.

    Used by :class:`LabelMarker` (notebook 02, section 7 and notebook 05, section 5).

    Args:
        frame: The dataset (``path`` and ``label`` columns), every image of it.
        marks: ``{path: mark}``, a mark being :data:`KEEP`, :data:`UNUSABLE` or a class name (the right label).
        class_names: The classes a label may be corrected to; the frame's labels by default.

    Returns:
        One row per image of ``frame``: ``target`` the (corrected) label, empty for an
        unusable image; ``mark`` ``""``, ``"relabelled from <old>"`` or ``"unusable"``.

    Raises:
        ValueError: A marked path not in the frame, or an unknown class.

    >>> frame = pd.DataFrame({"path": ["/d/a.jpg", "/d/b.jpg", "/d/c.jpg"], "label": ["cat", "dog", "cat"]})
    >>> apply_marks(frame, {"/d/a.jpg": "dog", "/d/c.jpg": "unusable"}).to_dict("list")["mark"]
    ['relabelled from cat', '', 'unusable']
    """
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"the dataset has no column(s) {missing}; give the frame with path and label columns.")
    classes = [str(c) for c in (class_names if class_names is not None else pd.unique(frame["label"]))]
    paths = frame["path"].astype(str).tolist()
    unknown = sorted(set(map(str, marks)) - set(paths))
    if unknown:
        raise ValueError(f"{len(unknown)} marked image(s) are not in the dataset, e.g. {unknown[0]}; mark images of it.")
    targets, notes = [], []
    for path, label in zip(paths, frame["label"]):
        mark = marks.get(path, KEEP)
        mark = KEEP if mark is None else str(mark)
        if mark == KEEP or mark == str(label):
            targets.append(label)
            notes.append("")
        elif mark == UNUSABLE:
            targets.append("")
            notes.append(UNUSABLE)
        elif mark in classes:
            targets.append(mark)
            notes.append(f"relabelled from {label}")
        else:
            raise ValueError(f"unknown mark {mark!r} for {path}: use {KEEP!r}, {UNUSABLE!r} or one of {classes}.")
    return pd.DataFrame({"path": paths, "target": targets, "mark": notes}, columns=MARK_COLUMNS)


def save_marks(
    frame: pd.DataFrame,
    marks: Mapping[str, Any],
    path: str | os.PathLike,
    class_names: Sequence[Any] | None = None,
) -> Path:
    """Write the labels table with the marks applied (:func:`apply_marks`) as CSV, atomically.

    Taught in notebook 02, section 7; used again by notebook 05, section 5. Read it back with
    ``sources.from_table(path)`` or retrain on it with ``python -m helpers retrain --labels path``.

    Raises:
        ValueError: See :func:`apply_marks`; a file name not ending in ``.csv``.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() != ".csv":
        raise ValueError(f"save the labels table as a .csv file, not {path.name!r}.")
    table = apply_marks(frame, marks, class_names)  # validated before anything is written
    with files.atomic_path(path, suffix=".part.csv") as temporary:
        table.to_csv(temporary, index=False)
    return path


class LabelMarker:
    """A form to mark the highest-loss images: keep, relabel as another class, or unusable; Save writes the table.

    Taught in notebook 02, section 7; used again by notebook 05, section 5.

    Args:
        table: The images to review (:func:`top_losses`).
        frame: The whole dataset (``path``, ``label``): the saved table covers all of it.
        class_names: The classes a label may be corrected to.
        output: The CSV file Save writes (:func:`save_marks`).
        thumbnail: Thumbnail size in pixels.

    Attributes:
        menus: ``{path: Dropdown}``, one per reviewed image.
        save_button: The Save button.
        message: What the last save did (or why it failed).
        widget: The whole form, to display.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        frame: pd.DataFrame,
        class_names: Sequence[Any],
        output: str | os.PathLike,
        *,
        thumbnail: int = 112,
    ) -> None:
        import io

        import ipywidgets as widgets
        from PIL import Image

        if "path" not in table.columns or not len(table):
            raise ValueError("give the top_losses table (with paths) of at least one image to review.")
        outside = sorted(set(table["path"].astype(str)) - set(frame["path"].astype(str)))
        if outside:
            raise ValueError(f"{len(outside)} reviewed image(s) are not in frame, e.g. {outside[0]}; give the whole dataset.")
        self.frame, self.class_names, self.output = frame, [str(c) for c in class_names], Path(output)
        options = [("keep the label", KEEP), *[(f"relabel as {c}", c) for c in self.class_names], ("unusable: drop it", UNUSABLE)]
        self.menus: dict[str, ipywidgets.Dropdown] = {}
        rows = []
        for _, row in table.iterrows():
            path = str(row["path"])
            buffer = io.BytesIO()
            try:
                Image.fromarray(pipeline.load_image(path, thumbnail)).save(buffer, format="PNG")
                picture: Any = widgets.Image(value=buffer.getvalue(), format="png", width=thumbnail, height=thumbnail)
            except Exception as error:  # the menu still lets the student drop an unreadable file
                picture = widgets.HTML(f"<i>cannot show: {type(error).__name__}</i>")
            menu = widgets.Dropdown(options=options, value=KEEP, layout=widgets.Layout(width="220px"))
            self.menus[path] = menu
            caption = widgets.HTML(
                f"<b>{Path(path).name}</b><br>label: {row.get('label', '')}<br>"
                f"predicted: {row.get('prediction', '')} ({float(row.get('probability', float('nan'))):.0%})<br>"
                f"loss {float(row.get('loss', float('nan'))):.2f}"
            )
            rows.append(widgets.HBox([picture, widgets.VBox([caption, menu])]))
        self.save_button = widgets.Button(description="Save labels", icon="save", button_style="primary")
        self.message = widgets.HTML("")
        self.save_button.on_click(lambda _: self.save())
        self.widget = widgets.VBox([*rows, widgets.HBox([self.save_button, self.message])])

    @property
    def marks(self) -> dict[str, str]:
        """``{path: mark}`` of the images whose menu is not on "keep"."""
        return {path: menu.value for path, menu in self.menus.items() if menu.value != KEEP}

    def save(self) -> Path | None:
        """Write the labels table; the form's message says where, how many changed, or what went wrong."""
        try:
            path = save_marks(self.frame, self.marks, self.output, self.class_names)
        except (ValueError, OSError) as error:
            self.message.value = f"<span style='color:#b00'>not saved: {error}</span>"
            return None
        marks = list(self.marks.values())
        dropped = marks.count(UNUSABLE)
        self.message.value = f"saved {path}: {len(marks) - dropped} relabelled, {dropped} marked unusable"
        return path

    def _ipython_display_(self) -> None:  # pragma: no cover - notebooks only
        from IPython.display import display

        display(self.widget)
