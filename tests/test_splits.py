"""helpers.splits: deterministic, stratified, stable splits and their summary."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from helpers import splits


def _frame(counts: dict[str, int], root: str = "/data") -> pd.DataFrame:
    rows = [{"path": f"{root}/{label}/pic_{i:04d}.jpg", "label": label} for label, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows)


def _assignment(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame["path"], frame["split"]))


def test_split_is_stratified_with_rounded_counts():
    frame = splits.split_dataset(_frame({"a": 20, "b": 40}), seed=1)
    table = splits.split_summary(frame)
    expected = {
        label: (n - 2 * int(n * 0.15 + 0.5), int(n * 0.15 + 0.5), int(n * 0.15 + 0.5)) for label, n in (("a", 20), ("b", 40))
    }
    for label, (train, validation, test) in expected.items():
        assert tuple(table.loc[label, ["train", "validation", "test"]]) == (train, validation, test)
    assert table.loc["total", "total"] == 60
    assert list(table.columns) == ["train", "validation", "test", "total"]


def test_split_is_deterministic_and_depends_on_the_seed():
    frame = _frame({"a": 30, "b": 30})
    first = splits.split_dataset(frame, seed=7)
    again = splits.split_dataset(frame.sample(frac=1, random_state=3), seed=7)
    assert _assignment(first) == _assignment(again), "row order must not matter"
    other = splits.split_dataset(frame, seed=8)
    assert _assignment(first) != _assignment(other)


def test_split_keeps_rows_and_does_not_modify_the_input():
    frame = _frame({"a": 10, "b": 10}).sample(frac=1, random_state=0)
    result = splits.split_dataset(frame, seed=0)
    assert list(result.index) == list(frame.index)
    assert list(result["path"]) == list(frame["path"])
    assert "split" not in frame.columns


def test_adding_unrelated_files_changes_nothing():
    base = splits.split_dataset(_frame({"a": 25, "b": 25}), seed=3)
    more = _frame({"a": 25, "b": 25, "c": 17})
    grown = splits.split_dataset(more, seed=3)
    grown_assignment = _assignment(grown)
    assert all(grown_assignment[path] == split for path, split in _assignment(base).items())


def test_adding_a_file_to_a_class_moves_at_most_a_few():
    base = _assignment(splits.split_dataset(_frame({"a": 40, "b": 40}), seed=3))
    grown = _frame({"a": 41, "b": 40})
    changed = [p for p, s in _assignment(splits.split_dataset(grown, seed=3)).items() if p in base and base[p] != s]
    assert len(changed) <= 2
    assert all("/a/" in path for path in changed), "the other class must not move at all"


def test_split_does_not_depend_on_where_the_dataset_lives():
    here = splits.split_dataset(_frame({"a": 20, "b": 20}, root="/data"), seed=5)
    there = splits.split_dataset(_frame({"a": 20, "b": 20}, root="/mnt/mirror/set"), seed=5)
    assert list(here["split"]) == list(there["split"])


def test_small_classes_warn_and_still_train():
    with pytest.warns(splits.SmallClassWarning, match="'tiny'"):
        frame = splits.split_dataset(_frame({"big": 30, "tiny": 2}), seed=0, min_per_class=5)
    tiny = frame.loc[frame["label"] == "tiny", "split"]
    assert (tiny == "train").sum() >= 1
    for n in (1, 2, 3, 4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", splits.SmallClassWarning)
            result = splits.split_dataset(_frame({"a": n, "b": 20}), seed=0)
        counts = result.loc[result["label"] == "a", "split"].value_counts()
        assert counts.get("train", 0) >= 1
        assert counts.sum() == n
    with warnings.catch_warnings():
        warnings.simplefilter("error", splits.SmallClassWarning)
        splits.split_dataset(_frame({"a": 20, "b": 20}), seed=0)


def test_two_fractions_mean_no_test_set():
    frame = splits.split_dataset(_frame({"a": 20, "b": 20}), seed=0, fractions=(0.8, 0.2))
    assert set(frame["split"]) == {"train", "validation"}
    assert splits.split_summary(frame)["test"].sum() == 0
    assert len(splits.subset(frame, "validation")) == 8


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (0, 0.5, 0.5), (0.7, -0.1, 0.4), (1.0,)])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ValueError, match="fractions"):
        splits.split_dataset(_frame({"a": 5, "b": 5}), seed=0, fractions=fractions)


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="label"):
        splits.split_dataset(pd.DataFrame({"path": ["x"]}), seed=0)
    with pytest.raises(ValueError, match="empty"):
        splits.split_dataset(pd.DataFrame({"path": [], "label": []}), seed=0)
    with pytest.raises(ValueError, match="split_dataset"):
        splits.split_summary(_frame({"a": 2}))
    with pytest.raises(ValueError, match="split must be"):
        splits.subset(splits.split_dataset(_frame({"a": 5, "b": 5}), seed=0, min_per_class=1), "training")


def test_default_seed_comes_from_settings(monkeypatch):
    monkeypatch.setenv("KIT_SEED", "11")
    frame = _frame({"a": 20, "b": 20})
    assert _assignment(splits.split_dataset(frame)) == _assignment(splits.split_dataset(frame, seed=11))


def test_integer_labels_split_and_summarise():
    frame = _frame({"a": 10, "b": 10})
    frame["label"] = (frame["label"] == "b").astype(int)
    table = splits.split_summary(splits.split_dataset(frame, seed=0))
    assert table.loc[0, "total"] == 10 and table.loc[1, "total"] == 10
