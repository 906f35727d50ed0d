"""Image sources: turn a folder, a labels table or file names into a dataset frame.

A dataset is a pandas DataFrame with one row per image: ``path`` (absolute, str)
and ``label`` (str, or int when the labels are whole numbers). Three ways in:

* :func:`from_folders` -- one folder per class (``root/<class>/<image>``);
* :func:`from_table` -- a CSV or DataFrame with a path column and a label column
  (the Dataiku lab's ``path,target``), relative paths resolved against an image folder;
* :func:`from_filenames` -- labels parsed from file names by a rule (the parent
  folder, the Kaggle test set's ``homer_simpson_12.jpg``, or "split on ``_pic_``");
* :func:`from_split_folders` -- a dataset that brings its own test set
  (``train/<class>/`` + ``val/<class>/``, as hymenoptera's ants and bees).

Rows that cannot be used -- a missing or empty label, a file that does not exist,
a file that is not an image by its name -- are dropped and *reported*: a warning
says how many and why, and :func:`dropped` returns them as a table. Nothing is
kept silently.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

# File name endings worth handing to the scan. TIFF is listed so that the scan can
# report it as an unsupported format instead of it vanishing without a word.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Folders that archive tools leave behind and that are never classes.
_IGNORED_DIRS = {"__MACOSX", "__pycache__", ".ipynb_checkpoints"}

DROPPED_COLUMNS = ["path", "label", "reason"]


class DatasetError(ValueError):
    """A dataset cannot be used as it is (no images, one class, an empty class folder).

    Not called in a notebook: raised for a dataset that cannot be used, for example by ``recipes.labelled_images``
    (notebook 05, section 1).
    """


class DroppedRowsWarning(UserWarning):
    """Some rows were dropped from a dataset; ``sources.dropped(frame)`` lists them.

    Used by notebook 05, section 1 (the dropped rows are shown instead).
    """


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _finish(rows: list[dict[str, Any]], dropped_rows: list[dict[str, Any]], origin: str) -> pd.DataFrame:
    """Build the frame (sorted by label then path) and report what was dropped."""
    frame = pd.DataFrame(rows, columns=["path", "label"]) if rows else pd.DataFrame(columns=["path", "label"])
    if len(frame):
        frame["label"] = normalise_labels(frame["label"])
        frame = frame.sort_values(["label", "path"], kind="stable").reset_index(drop=True)
    frame.attrs["dropped"] = [
        {"path": str(row.get("path", "")), "label": row.get("label"), "reason": row["reason"]} for row in dropped_rows
    ]
    if dropped_rows:
        reasons = pd.Series([row["reason"] for row in dropped_rows]).value_counts()
        summary = "; ".join(f"{count} x {reason}" for reason, count in reasons.items())
        warnings.warn(
            f"{origin}: dropped {len(dropped_rows)} row(s) ({summary}). "
            "See helpers.sources.dropped(frame) for the list.",
            DroppedRowsWarning,
            stacklevel=3,
        )
    return frame


def dropped(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a source function dropped, with the reason for each.

    Used by notebook 05, section 1.

    Args:
        frame: A frame returned by :func:`from_folders`, :func:`from_table` or
            :func:`from_filenames` (or one derived from it that kept its ``attrs``).

    Returns:
        A DataFrame with columns ``path``, ``label`` and ``reason`` (empty if none).
    """
    return pd.DataFrame(list(frame.attrs.get("dropped", [])), columns=DROPPED_COLUMNS)


def _missing_label(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        if pd.isna(value):
            return True
    except (TypeError, ValueError):
        pass
    return isinstance(value, str) and not value.strip()


def _is_whole(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):  # int and numpy integers
        return True
    return isinstance(value, float) and value.is_integer()  # numpy floats are floats too


def normalise_labels(labels: Iterable[Any]) -> pd.Series:
    """Labels as whole numbers (int64) when they all are, else as stripped strings.

    Used inside every reader of this module, for example for notebook 05, section 1.

    A CSV column of integer labels with a gap becomes floats (``1.0``) in pandas;
    this turns them back into ints, so ``1`` and ``1.0`` are one class.

    >>> normalise_labels([1.0, 2, 1]).tolist()
    [1, 2, 1]
    >>> normalise_labels([" bart", "lisa "]).tolist()
    ['bart', 'lisa']
    """
    series = pd.Series(list(labels), dtype=object)
    if len(series) and all(_is_whole(value) for value in series):
        return series.astype("int64")
    return series.map(lambda v: str(v).strip()).astype(object)


def from_folders(root: str | os.PathLike, *, min_classes: int = 2) -> pd.DataFrame:
    """A dataset from one folder per class: ``root/<class>/<image>`` (subfolders included).

    Used by ``recipes.labelled_images`` for class folders (notebook 05, section 1).

    Hidden files and archive leftovers (``__MACOSX``) are ignored; files whose names
    are not images (``notes.txt``) and files outside any class folder are dropped and
    reported.

    Args:
        root: The folder holding one sub-folder per class.
        min_classes: Fewest classes accepted (2 for a classifier; 0 or 1 to allow fewer).

    Returns:
        A frame with ``path`` and ``label`` (the class folder's name), sorted.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DatasetError: No class folders, fewer than ``min_classes``, or a class folder
            without any image file (the message names the folder).
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; check the path (expected {root}/<class>/<image>).")
    rows: list[dict[str, Any]] = []
    dropped_rows: list[dict[str, Any]] = []
    classes = []
    for entry in sorted(root.iterdir()):
        if _is_hidden(entry.name) or entry.name in _IGNORED_DIRS:
            continue
        if entry.is_file():
            dropped_rows.append({"path": str(entry), "label": None, "reason": "file outside any class folder"})
            continue
        if not entry.is_dir():
            continue
        classes.append(entry)
        found = 0
        for dirpath, dirnames, filenames in os.walk(entry):
            dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d) and d not in _IGNORED_DIRS)
            for name in sorted(filenames):
                if _is_hidden(name):
                    continue
                path = Path(dirpath) / name
                if path.suffix.lower() in IMAGE_EXTENSIONS:
                    rows.append({"path": str(path), "label": entry.name})
                    found += 1
                else:
                    dropped_rows.append({"path": str(path), "label": entry.name, "reason": "not an image file name"})
        if not found:
            raise DatasetError(
                f"class folder {entry} has no image files; add images to it or remove the folder."
            )
    if not classes:
        raise DatasetError(
            f"{root} has no class folders; expected one folder per class: {root}/<class>/<image>."
        )
    if len(classes) < min_classes:
        raise DatasetError(
            f"{root} has {len(classes)} class folder(s) ({', '.join(c.name for c in classes)}); a classifier needs "
            f"at least {min_classes}. Add a folder per class under {root}."
        )
    return _finish(rows, dropped_rows, f"from_folders({root})")


def _resolve(raw: str, base: Path | None) -> Path | None:
    candidate = Path(raw).expanduser()
    if candidate.is_absolute() and (base is None or candidate.exists()):
        return candidate
    if base is None:
        return None
    # Dataiku managed folders write paths as "/name.jpg": relative to the folder.
    return base / raw.lstrip("/\\")


def from_table(
    table: str | os.PathLike | pd.DataFrame,
    image_dir: str | os.PathLike | None = None,
    path_column: str = "path",
    label_column: str = "target",
    **read_csv: Any,
) -> pd.DataFrame:
    """A dataset from a labels table (CSV file or DataFrame).

    Used by ``recipes.labelled_images`` for a labels table (notebook 05, section 1).

    Relative paths are resolved against ``image_dir``; for a CSV file without
    ``image_dir``, against the CSV's own folder. Rows with a missing label (empty,
    NaN) or a file that does not exist are dropped and reported.

    Args:
        table: CSV file path, or a DataFrame.
        image_dir: Folder the relative paths are relative to.
        path_column: Column holding the image paths (the Dataiku lab: ``path``).
        label_column: Column holding the labels (the Dataiku lab: ``target``);
            strings or integers.
        **read_csv: Passed to :func:`pandas.read_csv` (for example ``sep=";"``).

    Returns:
        A frame with ``path`` (absolute) and ``label``, sorted.

    Raises:
        FileNotFoundError: The CSV file or ``image_dir`` does not exist.
        ValueError: A column is missing, or relative paths with no folder to resolve them.
    """
    if isinstance(table, pd.DataFrame):
        frame, origin, base = table, "from_table(DataFrame)", None
    else:
        csv_path = Path(table).expanduser()
        if not csv_path.is_file():
            raise FileNotFoundError(f"labels table {csv_path} does not exist.")
        frame, origin, base = pd.read_csv(csv_path, **read_csv), f"from_table({csv_path})", csv_path.resolve().parent
    if image_dir is not None:
        base = Path(image_dir).expanduser().resolve()
        if not base.is_dir():
            raise FileNotFoundError(f"image folder {base} does not exist; fix image_dir.")
    missing = [c for c in (path_column, label_column) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"labels table has no column(s) {missing}; its columns are {list(frame.columns)}. "
            "Pass path_column= and label_column= to name the right ones."
        )
    rows: list[dict[str, Any]] = []
    dropped_rows: list[dict[str, Any]] = []
    for raw_path, label in zip(frame[path_column], frame[label_column]):
        if _missing_label(raw_path):
            dropped_rows.append({"path": "", "label": label, "reason": "missing path"})
            continue
        path = _resolve(str(raw_path).strip(), base)
        if path is None:
            raise ValueError(
                f"path {raw_path!r} in the labels table is relative; pass image_dir= (the folder it is relative to)."
            )
        if _missing_label(label):
            dropped_rows.append({"path": str(path), "label": None, "reason": "missing label"})
        elif not path.is_file():
            dropped_rows.append({"path": str(path), "label": label, "reason": "file does not exist"})
        else:
            rows.append({"path": str(path.resolve()), "label": label})
    return _finish(rows, dropped_rows, origin)


_TRAILING_NUMBER = re.compile(r"^(?P<label>.+?)[_\-\s]*\d+$")

RULES: Mapping[str, str] = {
    "folder": "the parent folder's name (simpsons_dataset/homer_simpson/pic_0001.jpg -> homer_simpson)",
    "before_number": "the file name without its trailing number (homer_simpson_12.jpg -> homer_simpson)",
    "<separator>": "any other text: the part before it (rule='_pic_': lisa_simpson_pic_0094.jpg -> lisa_simpson)",
    "<regex>": "a regular expression with a (?P<label>...) group",
}


def label_rule(rule: str | Callable[[Path], Any]) -> Callable[[Path], Any]:
    """Turn a rule (see :data:`RULES`) into a function ``Path -> label or None``.

    Used inside :func:`from_filenames` (notebook 03, section 4).

    >>> path = Path("photos/bart_simpson_0042.jpg")
    >>> label_rule("folder")(path), label_rule("before_number")(path), label_rule("_0")(path)
    ('photos', 'bart_simpson', 'bart_simpson')
    >>> label_rule(r"^(?P<label>[a-z]+)_")(path)
    'bart'
    """
    if callable(rule):
        return rule
    if not isinstance(rule, str) or not rule:
        raise TypeError(f"rule must be a non-empty string or a function, not {rule!r}; see helpers.sources.RULES.")
    if rule == "folder":
        return lambda path: path.parent.name or None
    if rule == "before_number":
        return lambda path: (m.group("label") if (m := _TRAILING_NUMBER.match(path.stem)) else None)
    if "(?P<label>" in rule:
        pattern = re.compile(rule)
        return lambda path: (m.group("label") if (m := pattern.search(path.name)) else None)

    def split(path: Path) -> str | None:
        head, found, _ = path.stem.partition(rule)
        return head if found and head else None

    return split


def _list_images(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d) and d not in _IGNORED_DIRS)
        found += [Path(dirpath) / n for n in sorted(filenames) if not _is_hidden(n) and Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return found


def from_filenames(
    paths_or_dir: str | os.PathLike | Iterable[str | os.PathLike],
    rule: str | Callable[[Path], Any] = "folder",
) -> pd.DataFrame:
    """A dataset whose labels are parsed from the file names.

    Taught in notebook 03, section 4 (the target parsed from the file names).

    Args:
        paths_or_dir: A folder (every image file under it) or a list of files.
        rule: ``"folder"`` (parent folder name), ``"before_number"`` (Kaggle's
            ``homer_simpson_12.jpg``), a separator such as ``"_pic_"`` (the part of
            the name before it), a regex with a ``(?P<label>...)`` group, or a
            function ``Path -> label`` (None = no label).

    Returns:
        A frame with ``path`` and ``label``, sorted. Files the rule finds no label
        in, and files that do not exist, are dropped and reported.

    Raises:
        FileNotFoundError: The folder does not exist.
    """
    parse = label_rule(rule)
    if isinstance(paths_or_dir, (str, os.PathLike)):
        folder = Path(paths_or_dir).expanduser().resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist.")
        paths, origin = _list_images(folder), f"from_filenames({folder})"
    else:
        paths, origin = [Path(p).expanduser() for p in paths_or_dir], "from_filenames(list)"
    rows: list[dict[str, Any]] = []
    dropped_rows: list[dict[str, Any]] = []
    rule_name = rule if isinstance(rule, str) else getattr(rule, "__name__", "function")
    for path in paths:
        label = parse(path)
        if not path.is_file():
            dropped_rows.append({"path": str(path), "label": label, "reason": "file does not exist"})
        elif _missing_label(label):
            dropped_rows.append({"path": str(path), "label": None, "reason": f"no label in the file name (rule {rule_name!r})"})
        else:
            rows.append({"path": str(path.resolve()), "label": label})
    return _finish(rows, dropped_rows, origin)


# Folder names of a dataset's own splits: train/ + val/ (hymenoptera) or train/ + test/.
TRAIN_FOLDERS = ("train", "training")
TEST_FOLDERS = ("test", "testing", "val", "valid", "validation")


def has_split_folders(root: str | os.PathLike) -> bool:
    """Whether ``root`` is laid out as already split: a training folder and a held-out folder, nothing else.

    Used by ``recipes.labelled_images`` (notebook 05, section 1), so that a folder such as
    ``hymenoptera_data/train|val/<class>/`` is read with :func:`from_split_folders` (its
    classes are the ants and the bees, not "train" and "val").

    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("train", "val"): (root / name).mkdir()
    >>> has_split_folders(root), has_split_folders(root / "train")
    (True, False)
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return False
    names = {entry.name.lower() for entry in root.iterdir() if entry.is_dir() and not _is_hidden(entry.name)}
    names -= {name.lower() for name in _IGNORED_DIRS}
    return bool(names & set(TRAIN_FOLDERS)) and bool(names & set(TEST_FOLDERS)) and names <= set(TRAIN_FOLDERS) | set(TEST_FOLDERS)


def from_split_folders(root: str | os.PathLike, *, min_classes: int = 2) -> pd.DataFrame:
    """A dataset that comes already split: ``root/train/<class>/`` and ``root/val/<class>/`` (or ``test/``).

    Used by ``recipes.labelled_images`` (notebook 05, section 1) when :func:`has_split_folders`
    recognises the layout.

    The hymenoptera (ants and bees) layout of the PyTorch transfer-learning tutorial.
    The held-out folder (``val``, ``valid``, ``validation``, ``test`` or ``testing``)
    is the dataset's own **test set**: its rows get ``split == "test"``, and
    :func:`helpers.splits.split_dataset` keeps them as the test split and divides the
    training folder into train and validation (choosing epochs on the test folder
    would make its score optimistic).

    Args:
        root: The folder holding the ``train`` folder and the held-out folder.
        min_classes: Fewest classes accepted in each folder.

    Returns:
        A frame with ``path``, ``label`` and ``split`` (``test`` for the held-out
        folder's rows, empty for the training folder's), sorted.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DatasetError: No training folder or no held-out folder (the message lists what
            is there), or either of them is not one folder per class.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; check the path (expected {root}/train/<class>/...).")
    present = {entry.name.lower(): entry for entry in sorted(root.iterdir()) if entry.is_dir() and not _is_hidden(entry.name)}
    train = next((present[name] for name in TRAIN_FOLDERS if name in present), None)
    held_out = next((present[name] for name in TEST_FOLDERS if name in present), None)
    if train is None or held_out is None:
        raise DatasetError(
            f"{root} needs a training folder ({' or '.join(TRAIN_FOLDERS)}) and a held-out folder "
            f"({', '.join(TEST_FOLDERS)}), each with one folder per class; it has {sorted(present) or 'no folders'}. "
            "For a single folder of classes use from_folders."
        )
    parts = []
    for folder, split in ((train, None), (held_out, "test")):
        part = from_folders(folder, min_classes=min_classes)
        part["split"] = split
        parts.append(part)
    dropped_rows = [row for part in parts for row in part.attrs.get("dropped", [])]
    labels = [set(part["label"]) for part in parts]
    if labels[1] - labels[0]:
        raise DatasetError(
            f"{held_out} has classes that {train} does not: {sorted(labels[1] - labels[0])}; a model cannot learn them."
        )
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs["dropped"] = dropped_rows
    frame.attrs["test_set"] = str(held_out)
    return frame


def common_folder(paths: Iterable[str]) -> str:
    """The deepest folder containing every path (for messages that name a folder).

    Used by ``recipes.duplicate_groups`` (notebook 05, section 3).

    >>> common_folder(["data/simpsons/bart/1.jpg", "data/simpsons/lisa/2.jpg"])
    'data/simpsons'
    """
    folders = [os.path.dirname(str(p)) for p in paths]
    if not folders:
        return ""
    try:
        return os.path.commonpath(folders)
    except ValueError:  # mixed drives on Windows
        return folders[0]
