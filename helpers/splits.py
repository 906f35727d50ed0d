"""Deterministic, stratified train / validation / test splits that do not leak.

Each class is split on its own (stratified). Inside a class, files are ordered by a
hash of (seed, label, file name) and cut by the fractions. The order of a file
depends only on its own name, so adding files to *another* class changes nothing,
and adding one file to a class moves at most a file or two across a boundary; the
split is the same on every machine, wherever the dataset folder is.

**Groups.** Images that are nearly the same -- frames of one scene, a burst of
photos -- must land on the same side: a model that saw one frame of a scene in
training recognises its neighbour in the test set, and the test score then measures
memory, not what happens on new episodes. A frame with a ``group`` column is split
group by group: every group goes whole to train, validation or test, groups ordered
by a hash of their name (still stable when files are added) and cut by image counts
per class. Two ways to make groups:

* :func:`frame_number_groups` -- contiguous blocks of frame numbers (the Simpsons'
  ``pic_NNNN.jpg``), a stand-in for episodes;
* :func:`near_duplicate_groups` -- images whose backbone features are closer than a
  threshold, for any folder of photos.

**A dataset's own test set.** Rows whose ``split`` is already ``test`` (the Kaggle
Simpsons test folder, hymenoptera's ``val/``: see :mod:`helpers.datasets`) stay the
test split; the others are split into train and validation only.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import warnings
from typing import Any, Sequence

import numpy as np
import pandas as pd

from helpers.settings import load_settings

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
DEFAULT_MIN_PER_CLASS = 10
GROUP_COLUMN = "group"
# Frames numbered within this many of each other count as one episode (see frame_number_groups).
DEFAULT_FRAME_BLOCK = 20
# Cosine distance between L2-normalised features below which two images are near-duplicates.
DEFAULT_DUPLICATE_DISTANCE = 0.05
_FRAME_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class SmallClassWarning(UserWarning):
    """A class has too few images for a meaningful split.

    Not called in a notebook: :func:`split_dataset` warns with it, for example on your own images (notebook 05, section
    3).
    """


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if len(values) == 2:
        values = (*values, 0.0)
    if len(values) != 3 or any(f < 0 for f in values) or values[0] <= 0:
        raise ValueError(
            f"fractions must be (train, validation, test), each >= 0 with train > 0, not {tuple(fractions)}."
        )
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must add up to 1, not {sum(values):g} ({tuple(fractions)}).")
    return values  # type: ignore[return-value]


def _order_key(seed: int, label: object, path: str) -> str:
    # The file *name* (not the full path) keeps splits identical across machines.
    name = os.path.basename(path)
    return hashlib.sha1(f"{seed}\x00{label}\x00{name}".encode()).hexdigest() + "\x00" + path


def _counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Images per split for a class of ``n``: rounded, train keeps at least one."""
    n_validation = int(math.floor(n * fractions[1] + 0.5))
    n_test = int(math.floor(n * fractions[2] + 0.5))
    # Small classes: give validation and test one image each when asked for, if
    # that still leaves one to train on.
    if fractions[1] > 0 and n_validation == 0 and n >= 3:
        n_validation = 1
    if fractions[2] > 0 and n_test == 0 and n - n_validation >= 2:
        n_test = 1
    while n_validation + n_test > n - 1 and (n_validation or n_test):
        if n_test >= n_validation and n_test:
            n_test -= 1
        else:
            n_validation -= 1
    return n - n_validation - n_test, n_validation, n_test


def _group_counts(sizes: Sequence[int], fractions: tuple[float, float, float]) -> list[str]:
    """Assign whole groups (in their hash order) to splits, cutting by image counts.

    A group goes to the split its middle image falls in, so each split gets about
    its share of images; when there are at least three groups, validation and test
    (if asked for) get at least one group each, and train always keeps one.
    """
    total = sum(sizes)
    bounds = (total * fractions[0], total * (fractions[0] + fractions[1]))
    assigned, position = [], 0
    for size in sizes:
        middle = position + size / 2
        assigned.append("train" if middle < bounds[0] else "validation" if middle < bounds[1] else "test")
        position += size
    # Groups are cut from the end (test, then validation), so a starved split takes the
    # group nearest to it from its neighbour, if that neighbour can spare one.
    for name, wanted in (("test", fractions[2]), ("validation", fractions[1])):
        if wanted > 0 and name not in assigned and len(sizes) >= 3:
            donors = [i for i in range(len(assigned) - 1, -1, -1) if assigned.count(assigned[i]) > 1]
            if donors:
                assigned[donors[0]] = name
    if "train" not in assigned:
        assigned[0] = "train"
    return assigned


def _split_files(
    free: pd.DataFrame, split: pd.Series, seed: int, values: tuple[float, float, float], min_per_class: int
) -> list[str]:
    """Split each class file by file (in hash order) into ``split``; the classes too small to split well."""
    small = []
    for label, group in free.groupby("label", sort=True):
        ordered = sorted(group.index, key=lambda i: _order_key(seed, label, str(free.at[i, "path"])))
        n_train, n_validation, n_test = _counts(len(ordered), values)
        split.loc[ordered[:n_train]] = "train"
        split.loc[ordered[n_train : n_train + n_validation]] = "validation"
        split.loc[ordered[n_train + n_validation :]] = "test"
        short = (values[1] > 0 and n_validation == 0) or (values[2] > 0 and n_test == 0)
        if len(ordered) < min_per_class or short:
            small.append(f"{label!r} ({len(ordered)}: {n_train}/{n_validation}/{n_test})")
    return small


def _split_groups(
    free: pd.DataFrame,
    groups: str,
    split: pd.Series,
    seed: int,
    values: tuple[float, float, float],
    min_per_class: int,
) -> list[str]:
    """Split each class group by group (in hash order) into ``split``; the classes too small to split well."""
    names = free[groups].astype(str)
    # A group belongs to the class most of its images have (ties: the first by name).
    owner = free.groupby(names)["label"].agg(lambda labels: sorted(labels.value_counts().items(), key=lambda kv: (-kv[1], str(kv[0])))[0][0])
    sizes = names.value_counts()
    small = []
    for label, owned in owner.groupby(owner, sort=True):
        ordered = sorted(owned.index, key=lambda g: _order_key(seed, label, g))
        assigned = _group_counts([int(sizes[g]) for g in ordered], values)
        for group_name, name in zip(ordered, assigned):
            split.loc[names.index[names == group_name]] = name
        counts = {name: int(sum(sizes[g] for g, a in zip(ordered, assigned) if a == name)) for name in SPLITS}
        short = (values[1] > 0 and counts["validation"] == 0) or (values[2] > 0 and counts["test"] == 0)
        if sum(counts.values()) < min_per_class or short:
            small.append(
                f"{label!r} ({sum(counts.values())} in {len(ordered)} groups: "
                f"{counts['train']}/{counts['validation']}/{counts['test']})"
            )
    return small


def split_dataset(
    frame: pd.DataFrame,
    seed: int | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    groups: str | None = GROUP_COLUMN,
) -> pd.DataFrame:
    """Add a ``split`` column: ``train``, ``validation`` or ``test``, stratified by label.

    With a ``group`` column (see :func:`frame_number_groups`, :func:`near_duplicate_groups`)
    every group lands whole in one split: no scene on both sides. Rows already marked
    ``test`` in a ``split`` column (a dataset's own test set) stay the test split and the
    rest is split into train and validation in the proportions of ``fractions``.

    Args:
        frame: A dataset frame with ``path`` and ``label``.
        seed: Changes which files land where; ``settings.seed`` by default.
        fractions: (train, validation, test) shares, adding up to 1; a pair means no test set.
        min_per_class: Warn (:class:`SmallClassWarning`) about classes with fewer
            images, or that end up with none in a split that was asked for.
        groups: Column of group names, used when the frame has it (the default
            ``"group"``); ``None`` ignores groups: a plain random split by file, which
            puts near-identical frames on both sides (notebook 02 shows what that costs).

    Returns:
        A copy of ``frame`` (same row order) with a ``split`` column.

    Raises:
        ValueError: Bad fractions, missing columns, an empty frame, or a ``groups``
            column that is missing or has empty values.

    >>> frame = pd.DataFrame({"path": [f"/d/{c}/pic_{i:04d}.jpg" for c in "ab" for i in range(40)],
    ...                       "label": [c for c in "ab" for _ in range(40)]})
    >>> frame["group"] = frame_number_groups(frame, block=10)
    >>> result = split_dataset(frame, seed=0)
    >>> int(result.groupby("group")["split"].nunique().max())  # no group on two sides
    1
    """
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"split_dataset needs columns 'path' and 'label'; missing {missing}.")
    if not len(frame):
        raise ValueError("cannot split an empty dataset; check that the images were found.")
    values = _check_fractions(fractions)
    if groups is not None and groups not in frame.columns:
        if groups != GROUP_COLUMN:
            raise ValueError(f"groups={groups!r} is not a column of the frame (columns: {list(frame.columns)}).")
        groups = None
    if groups is not None and frame[groups].isna().any():
        raise ValueError(f"the {groups!r} column has empty values; give every image a group (its own name will do).")
    if seed is None:
        seed = load_settings().seed
    result = frame.copy()
    fixed = pd.Series(False, index=result.index)
    if "split" in result.columns:
        fixed = result["split"].astype(object).eq("test")
    split = pd.Series("", index=result.index, dtype=object)
    split.loc[fixed] = "test"
    if fixed.any():  # the dataset brings its own test set: the rest is train and validation
        values = (values[0] / (values[0] + values[1]), values[1] / (values[0] + values[1]), 0.0)
    free = result.loc[~fixed]
    if groups is None:
        small = _split_files(free, split, seed, values, min_per_class)
    else:
        small = _split_groups(free, groups, split, seed, values, min_per_class)
    if small:
        warnings.warn(
            f"class(es) with fewer than {min_per_class} images or an empty split: {', '.join(small)} "
            "(train/validation/test). Their scores will be noisy; add images or use a larger profile.",
            SmallClassWarning,
            stacklevel=2,
        )
    result["split"] = split
    return result


def frame_number(path: str) -> int | None:
    """The last number in a file's name (``pic_0042.jpg`` -> 42), or None.

    Used inside :func:`frame_number_groups` (notebook 02, section 1: ``pic_0042.jpg``).

    >>> frame_number("simpsons_dataset/bart_simpson/pic_0042.jpg"), frame_number("cover.jpg")
    (42, None)
    """
    found = _FRAME_NUMBER.search(os.path.splitext(os.path.basename(str(path)))[0])
    return int(found.group(1)) if found else None


def frame_number_groups(frame: pd.DataFrame, block: int = DEFAULT_FRAME_BLOCK) -> pd.Series:
    """Groups of frames from blocks of consecutive frame numbers, per class: a stand-in for episodes.

    The Simpsons frames (``simpsons_dataset/<character>/pic_NNNN.jpg``) are numbered in
    the order they were collected, episode after episode, so frames with close numbers
    mostly come from the same episode and often the same scene. The episodes
    themselves are not recorded; blocks of ``block`` consecutive numbers stand in for
    them. A split by these blocks keeps the frames of a scene together, and its test
    score estimates the score on episodes the model never saw (a random split overstates
    it by a few points; notebook 02 measures it). Files without a number form a group each.

    Args:
        frame: A frame with ``path`` and ``label``.
        block: Frame numbers per group (numbers ``0..block-1`` form the first group).

    Returns:
        A Series of group names (``<label>/<first>-<last>``), aligned with ``frame``.

    >>> frame = pd.DataFrame({"path": ["a/pic_0003.jpg", "a/pic_0019.jpg", "a/pic_0020.jpg", "b/pic_0003.jpg"],
    ...                       "label": ["a", "a", "a", "b"]})
    >>> list(frame_number_groups(frame, block=20))
    ['a/0-19', 'a/0-19', 'a/20-39', 'b/0-19']
    """
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be a whole number of frames >= 1, not {block!r}.")
    names = []
    for path, label in zip(frame["path"], frame["label"]):
        number = frame_number(path)
        if number is None:
            names.append(f"{label}/{os.path.basename(str(path))}")
        else:
            first = number // block * block
            names.append(f"{label}/{first}-{first + block - 1}")
    return pd.Series(names, index=frame.index, name=GROUP_COLUMN, dtype=object)


def _normalised(features: Any) -> np.ndarray:
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2:
        values = values.reshape(len(values), -1)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(norms > 0, norms, 1.0)


def _close_pairs(features: Any, threshold: float, chunk: int = 1024) -> list[tuple[int, int, float]]:
    """Pairs (i < j) whose cosine distance is below ``threshold``, chunk by chunk (no n x n matrix)."""
    values = _normalised(features)
    pairs = []
    for start in range(0, len(values), chunk):
        distances = 1.0 - values[start : start + chunk] @ values.T
        rows, columns = np.nonzero(distances < threshold)
        for i, j in zip(rows + start, columns):
            if i < j:
                pairs.append((int(i), int(j), float(distances[i - start, j])))
    return pairs


def near_duplicate_groups(
    frame: pd.DataFrame, features: Any, threshold: float = DEFAULT_DUPLICATE_DISTANCE
) -> pd.Series:
    """Groups of near-duplicate images: closer than ``threshold`` in the backbone's features.

    Used by ``recipes.duplicate_groups`` (notebook 05, sections 3 and 8).

    Bursts of photos, resized copies and re-encoded files give almost the same
    features; left apart they would put the same picture on both sides of the split.
    Images closer than ``threshold`` (cosine distance of the feature vectors) are one
    group, and so is a chain of them (single linkage).

    Args:
        frame: The dataset, one row per image (``path``).
        features: One feature vector per row, in the frame's order
            (:func:`helpers.features.extract_features`).
        threshold: Cosine distance under which two images count as the same
            (0 = identical direction; 0.05 by default).

    Returns:
        A Series of group names (the path of each group's first image), aligned with ``frame``.

    >>> frame = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"]})
    >>> list(near_duplicate_groups(frame, [[1.0, 0.0], [0.99, 0.01], [0.0, 1.0]]))
    ['a.jpg', 'a.jpg', 'c.jpg']
    """
    values = np.asarray(features)
    if len(values) != len(frame):
        raise ValueError(f"{len(values)} feature vectors for {len(frame)} images; give one per row, in order.")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 <= threshold < 2:
        raise ValueError(f"threshold must be a cosine distance in [0, 2), not {threshold!r}.")
    parent = list(range(len(values)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in _close_pairs(values, float(threshold)):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    paths = [str(p) for p in frame["path"]]  # whole paths: dog/pic_001.jpg and cat/pic_001.jpg are two images
    return pd.Series([paths[root(i)] for i in range(len(values))], index=frame.index, name=GROUP_COLUMN, dtype=object)


def cross_split_duplicates(
    frame: pd.DataFrame, features: Any, threshold: float = DEFAULT_DUPLICATE_DISTANCE
) -> pd.DataFrame:
    """Pairs of near-duplicate images that sit in different splits (the leaks of a split).

    Used by notebook 04, section 2 (near-duplicates across the splits).

    Args:
        frame: A split frame (``path``, ``split``).
        features: One feature vector per row, in the frame's order.
        threshold: Cosine distance under which two images count as the same.

    Returns:
        Columns ``path``, ``split``, ``other path``, ``other split``, ``distance``, closest first.
    """
    if "split" not in frame.columns:
        raise ValueError("the frame has no 'split' column; call split_dataset(frame) first.")
    if len(np.asarray(features)) != len(frame):
        raise ValueError(f"{len(np.asarray(features))} feature vectors for {len(frame)} images; give one per row.")
    paths, names = list(map(str, frame["path"])), list(frame["split"])
    rows = [
        {"path": paths[i], "split": names[i], "other path": paths[j], "other split": names[j], "distance": d}
        for i, j, d in _close_pairs(features, float(threshold))
        if names[i] != names[j]
    ]
    table = pd.DataFrame(rows, columns=["path", "split", "other path", "other split", "distance"])
    return table.sort_values("distance", kind="stable").reset_index(drop=True)


def split_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split, with totals (the table the notebooks show).

    Used by notebook 02, section 1, notebook 03, section 1, notebook 04, section 1 and notebook 05, section 3.

    With a ``group`` column, a last row ``groups`` counts the groups in each split
    (each group sits in one split only, so the columns add up to the total).

    Args:
        frame: A frame with ``label`` and ``split`` columns.

    Returns:
        A DataFrame indexed by class (plus a ``total`` row, and ``groups`` when the
        frame has groups) with one column per split and a ``total`` column.
    """
    if "split" not in frame.columns or "label" not in frame.columns:
        raise ValueError("split_summary needs 'label' and 'split' columns; call split_dataset(frame) first.")
    table = pd.crosstab(frame["label"], frame["split"])
    table = table.reindex(columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    if GROUP_COLUMN in frame.columns:
        per_split = frame.groupby("split")[GROUP_COLUMN].nunique().reindex(list(SPLITS), fill_value=0)
        table.loc["groups"] = [*per_split.tolist(), int(frame[GROUP_COLUMN].nunique())]
    table.index.name = "label"
    table.columns.name = None
    return table.astype(int)


def subset(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split, index reset.

    Used by notebook 02, sections 1, 4 and 7 and notebook 05, section 5.

    >>> frame = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "split": ["train", "test", "train"]})
    >>> subset(frame, "train")["path"].tolist()
    ['a.jpg', 'c.jpg']
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}.")
    if "split" not in frame.columns:
        raise ValueError("the frame has no 'split' column; call split_dataset(frame) first.")
    return frame.loc[frame["split"] == split].reset_index(drop=True)
