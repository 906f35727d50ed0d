"""Deterministic, stratified train / validation / test splits.

Each class is split on its own (stratified). Inside a class, files are ordered by a
hash of (seed, label, file name) and cut by the fractions. The order of a file
depends only on its own name, so adding files to *another* class changes nothing,
and adding one file to a class moves at most a file or two across a boundary; the
split is the same on every machine, wherever the dataset folder is.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from typing import Sequence

import pandas as pd

from helpers.settings import load_settings

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
DEFAULT_MIN_PER_CLASS = 10


class SmallClassWarning(UserWarning):
    """A class has too few images for a meaningful split."""


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


def split_dataset(
    frame: pd.DataFrame,
    seed: int | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
) -> pd.DataFrame:
    """Add a ``split`` column: ``train``, ``validation`` or ``test``, stratified by label.

    Args:
        frame: A dataset frame with ``path`` and ``label``.
        seed: Changes which files land where; ``settings.seed`` by default.
        fractions: (train, validation, test) shares, adding up to 1; a pair means no test set.
        min_per_class: Warn (:class:`SmallClassWarning`) about classes with fewer
            images, or that end up with none in a split that was asked for.

    Returns:
        A copy of ``frame`` (same row order) with a ``split`` column.

    Raises:
        ValueError: Bad fractions, missing columns, or an empty frame.
    """
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"split_dataset needs columns 'path' and 'label'; missing {missing}.")
    if not len(frame):
        raise ValueError("cannot split an empty dataset; check that the images were found.")
    values = _check_fractions(fractions)
    if seed is None:
        seed = load_settings().seed
    result = frame.copy()
    split = pd.Series("", index=result.index, dtype=object)
    small = []
    for label, group in result.groupby("label", sort=True):
        ordered = sorted(group.index, key=lambda i: _order_key(seed, label, str(result.at[i, "path"])))
        n_train, n_validation, n_test = _counts(len(ordered), values)
        split.loc[ordered[:n_train]] = "train"
        split.loc[ordered[n_train : n_train + n_validation]] = "validation"
        split.loc[ordered[n_train + n_validation :]] = "test"
        short = (values[1] > 0 and n_validation == 0) or (values[2] > 0 and n_test == 0)
        if len(ordered) < min_per_class or short:
            small.append(f"{label!r} ({len(ordered)}: {n_train}/{n_validation}/{n_test})")
    if small:
        warnings.warn(
            f"class(es) with fewer than {min_per_class} images or an empty split: {', '.join(small)} "
            "(train/validation/test). Their scores will be noisy; add images or use a larger profile.",
            SmallClassWarning,
            stacklevel=2,
        )
    result["split"] = split
    return result


def split_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split, with totals (the table the notebooks show).

    Args:
        frame: A frame with ``label`` and ``split`` columns.

    Returns:
        A DataFrame indexed by class (plus a ``total`` row) with one column per
        split and a ``total`` column.
    """
    if "split" not in frame.columns or "label" not in frame.columns:
        raise ValueError("split_summary needs 'label' and 'split' columns; call split_dataset(frame) first.")
    table = pd.crosstab(frame["label"], frame["split"])
    table = table.reindex(columns=list(SPLITS), fill_value=0)
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    table.index.name = "label"
    table.columns.name = None
    return table.astype(int)


def subset(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split, index reset (``subset(frame, "train")``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}.")
    if "split" not in frame.columns:
        raise ValueError("the frame has no 'split' column; call split_dataset(frame) first.")
    return frame.loc[frame["split"] == split].reset_index(drop=True)
