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


# --------------------------------------------------------------------------- groups


def _grouped(counts: dict[str, int], block: int = 10) -> pd.DataFrame:
    frame = _frame(counts)
    frame["group"] = splits.frame_number_groups(frame, block=block)
    return frame


def test_group_split_never_splits_a_group_and_stays_stratified():
    frame = splits.split_dataset(_grouped({"a": 200, "b": 120}), seed=4)
    assert frame.groupby("group")["split"].nunique().max() == 1, "a group must sit in one split only"
    for label, n in (("a", 200), ("b", 120)):
        shares = frame.loc[frame["label"] == label, "split"].value_counts() / n
        assert abs(shares["train"] - 0.7) <= 0.1 and abs(shares["validation"] - 0.15) <= 0.08
        assert abs(shares["test"] - 0.15) <= 0.08


def test_group_split_without_the_column_is_the_random_split():
    grouped = _grouped({"a": 60, "b": 60})
    plain = splits.split_dataset(grouped, seed=2, groups=None)
    assert _assignment(plain) == _assignment(splits.split_dataset(grouped.drop(columns="group"), seed=2))
    assert plain.groupby("group")["split"].nunique().max() > 1, "a random split of frames mixes the blocks"
    with pytest.raises(ValueError, match="not a column"):
        splits.split_dataset(grouped, seed=2, groups="episode")
    broken = grouped.copy()
    broken.loc[0, "group"] = None
    with pytest.raises(ValueError, match="empty values"):
        splits.split_dataset(broken, seed=2)


def test_group_split_is_stable_when_files_are_added():
    base = _assignment(splits.split_dataset(_grouped({"a": 100, "b": 100}), seed=3))
    grown = _grouped({"a": 100, "b": 100, "c": 30})
    grown_assignment = _assignment(splits.split_dataset(grown, seed=3))
    assert all(grown_assignment[p] == s for p, s in base.items())
    # A new block of frames for "a" moves at most one block's worth of its images.
    more = _assignment(splits.split_dataset(_grouped({"a": 110, "b": 100}), seed=3))
    moved = [p for p, s in base.items() if more[p] != s]
    assert len(moved) <= 20 and all("/a/" in p for p in moved)


def test_small_group_counts_still_give_every_split_a_group():
    frame = splits.split_dataset(_grouped({"a": 30, "b": 30}, block=10), seed=0, min_per_class=1)
    for label in ("a", "b"):
        assert set(frame.loc[frame["label"] == label, "split"]) == {"train", "validation", "test"}


def test_summary_counts_groups_per_split():
    frame = splits.split_dataset(_grouped({"a": 100, "b": 100}), seed=1)
    table = splits.split_summary(frame)
    assert "groups" in table.index
    assert table.loc["groups", "total"] == 20 == table.loc["groups", ["train", "validation", "test"]].sum()


def test_a_datasets_own_test_set_stays_the_test_split():
    frame = _grouped({"a": 50, "b": 50})
    frame["split"] = None
    own = _frame({"a": 12, "b": 8}, root="/testset")
    own["group"], own["split"] = own["path"], "test"
    result = splits.split_dataset(pd.concat([frame, own], ignore_index=True), seed=0)
    assert set(result.loc[result["path"].str.startswith("/testset"), "split"]) == {"test"}
    rest = result.loc[~result["path"].str.startswith("/testset"), "split"].value_counts()
    assert "test" not in rest and abs(rest["validation"] / rest.sum() - 0.15 / 0.85) < 0.08


def test_frame_number_groups_are_blocks_per_class():
    frame = pd.DataFrame({"path": ["x/a/pic_0000.jpg", "x/a/pic_0019.jpg", "x/a/pic_0020.jpg", "x/b/pic_0001.jpg",
                                   "x/b/cover.png"], "label": ["a", "a", "a", "b", "b"]})
    groups = list(splits.frame_number_groups(frame, block=20))
    assert groups[0] == groups[1] != groups[2] and groups[3] != groups[0]
    assert groups[4] == "b/cover.png"
    with pytest.raises(ValueError, match="block"):
        splits.frame_number_groups(frame, block=0)


def test_near_duplicates_are_grouped_and_counted_across_splits():
    import numpy as np

    rng = np.random.default_rng(0)
    originals = rng.normal(size=(30, 16))
    copies = originals[:5] + rng.normal(scale=1e-3, size=(5, 16))  # five near-identical re-encodings
    features = np.concatenate([originals, copies])
    frame = pd.DataFrame({"path": [f"/d/img_{i:03d}.jpg" for i in range(35)], "label": ["a", "b"] * 17 + ["a"]})
    groups = splits.near_duplicate_groups(frame, features)
    assert groups.nunique() == 30
    assert all(groups[30 + i] == groups[i] for i in range(5))
    frame["split"] = ["train"] * 30 + ["test"] * 5
    leaks = splits.cross_split_duplicates(frame, features)
    assert len(leaks) == 5 and set(leaks["split"]) | set(leaks["other split"]) == {"train", "test"}
    frame["group"] = groups
    resplit = splits.split_dataset(frame.drop(columns="split"), seed=0, min_per_class=1)
    assert splits.cross_split_duplicates(resplit, features).empty, "a group split leaves no duplicate across splits"
    with pytest.raises(ValueError, match="feature vectors"):
        splits.near_duplicate_groups(frame, features[:3])
    same_names = pd.DataFrame({"path": ["/d/dog/pic_001.jpg", "/d/cat/pic_001.jpg"]})
    assert splits.near_duplicate_groups(same_names, [[1.0, 0.0], [0.0, 1.0]]).nunique() == 2, (
        "two different images with the same file name in two folders are two groups"
    )
