"""helpers.sources: folders per class, labels tables, labels from file names."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from helpers import sources


def _image(path: Path, color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path)
    return path


@pytest.fixture
def class_tree(tmp_path):
    root = tmp_path / "simpsons_dataset"
    for name in ("homer_simpson", "bart_simpson"):
        for number in (2, 1):
            _image(root / name / f"pic_000{number}.jpg")
    return root


def test_from_folders_labels_every_image_by_its_folder(class_tree):
    frame = sources.from_folders(class_tree)
    assert list(frame.columns) == ["path", "label"]
    assert list(frame["label"]) == ["bart_simpson"] * 2 + ["homer_simpson"] * 2
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["path"])
    assert list(frame["path"]) == sorted(frame["path"]), "rows are sorted by label then path"
    assert sources.dropped(frame).empty


def test_from_folders_reports_non_images_and_ignores_hidden_files(class_tree):
    (class_tree / "homer_simpson" / "notes.txt").write_text("not a picture")
    (class_tree / "homer_simpson" / ".DS_Store").write_bytes(b"\0")
    (class_tree / "homer_simpson" / "._pic_0001.jpg").write_bytes(b"\0")  # macOS resource fork
    (class_tree / "__MACOSX").mkdir()
    (class_tree / "annotation.txt").write_text("loose file")
    _image(class_tree / "homer_simpson" / "season2" / "pic_0100.png")
    with pytest.warns(sources.DroppedRowsWarning, match="dropped 2 row"):
        frame = sources.from_folders(class_tree)
    assert (frame["label"] == "homer_simpson").sum() == 3, "images in sub-folders belong to the class"
    report = sources.dropped(frame)
    assert sorted(report["reason"]) == ["file outside any class folder", "not an image file name"]
    assert set(frame["label"]) == {"bart_simpson", "homer_simpson"}


def test_from_folders_errors_name_the_folder(tmp_path, class_tree):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.from_folders(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(sources.DatasetError, match=f"{empty}.*no class folders"):
        sources.from_folders(empty)
    (class_tree / "lisa_simpson").mkdir()
    with pytest.raises(sources.DatasetError, match="lisa_simpson has no image files"):
        sources.from_folders(class_tree)


def test_from_folders_needs_two_classes_unless_told(tmp_path):
    _image(tmp_path / "root" / "only" / "a.jpg")
    with pytest.raises(sources.DatasetError, match="at least 2"):
        sources.from_folders(tmp_path / "root")
    assert len(sources.from_folders(tmp_path / "root", min_classes=1)) == 1


def test_from_table_resolves_relative_paths_like_the_dataiku_lab(tmp_path):
    images = tmp_path / "images"
    for name in ("lisa_simpson_pic_0094.jpg", "krusty_the_clown_pic_0058.jpg"):
        _image(images / name)
    table = pd.DataFrame(
        {
            "path": ["/lisa_simpson_pic_0094.jpg", "krusty_the_clown_pic_0058.jpg"],  # DSS writes a leading /
            "target": ["lisa_simpson", "krusty_the_clown"],
        }
    )
    frame = sources.from_table(table, image_dir=images)
    assert dict(zip(map(lambda p: Path(p).name, frame["path"]), frame["label"])) == {
        "lisa_simpson_pic_0094.jpg": "lisa_simpson",
        "krusty_the_clown_pic_0058.jpg": "krusty_the_clown",
    }
    assert all(Path(p).is_absolute() for p in frame["path"])


def test_from_table_drops_and_reports_missing_labels_and_files(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _image(tmp_path / "img" / name)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,kind\nimg/a.jpg,cat\nimg/b.jpg,\nimg/c.jpg,dog\nimg/gone.jpg,dog\n")
    with pytest.warns(sources.DroppedRowsWarning, match="dropped 2 row"):
        frame = sources.from_table(csv, path_column="file", label_column="kind")
    assert list(frame["label"]) == ["cat", "dog"], "relative paths resolve against the CSV's folder"
    report = sources.dropped(frame).set_index("reason")
    assert Path(report.loc["missing label", "path"]).name == "b.jpg"
    assert Path(report.loc["file does not exist", "path"]).name == "gone.jpg"


def test_from_table_keeps_integer_labels_as_integers(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _image(tmp_path / name)
    table = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "target": [1, None, 0]})  # None makes floats
    with pytest.warns(sources.DroppedRowsWarning):
        frame = sources.from_table(table, image_dir=tmp_path)
    assert frame["label"].dtype == "int64"
    assert sorted(frame["label"]) == [0, 1]


def test_from_table_validates_its_input(tmp_path):
    table = pd.DataFrame({"path": ["a.jpg"], "target": ["x"]})
    with pytest.raises(ValueError, match="column"):
        sources.from_table(table, label_column="label")
    with pytest.raises(ValueError, match="image_dir"):
        sources.from_table(table)
    with pytest.raises(FileNotFoundError):
        sources.from_table(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError, match="image_dir"):
        sources.from_table(table, image_dir=tmp_path / "nope")


@pytest.mark.parametrize(
    "rule, name, expected",
    [
        ("folder", "simpsons_dataset/homer_simpson/pic_0001.jpg", "homer_simpson"),
        ("before_number", "kaggle_simpson_testset/homer_simpson_12.jpg", "homer_simpson"),
        ("_pic_", "images/lisa_simpson_pic_0094.jpg", "lisa_simpson"),
        (r"^(?P<label>[a-z]+)-", "x/cat-001.png", "cat"),
        (lambda p: p.stem.upper(), "x/dog.jpg", "DOG"),
    ],
    ids=["folder", "kaggle-test-set", "dataiku-split-on-_pic_", "regex", "function"],
)
def test_from_filenames_rules(tmp_path, rule, name, expected):
    path = _image(tmp_path / name)
    frame = sources.from_filenames([path], rule=rule)
    assert list(frame["label"]) == [expected]


def test_from_filenames_reports_files_without_label_or_missing(tmp_path):
    folder = tmp_path / "test"
    _image(folder / "homer_simpson_12.jpg")
    _image(folder / "bart_simpson_3.jpg")
    _image(folder / "nonumber.jpg")
    with pytest.warns(sources.DroppedRowsWarning, match="dropped 1 row"):
        frame = sources.from_filenames(folder, rule="before_number")
    assert sorted(frame["label"]) == ["bart_simpson", "homer_simpson"]
    assert "no label" in sources.dropped(frame)["reason"].iloc[0]
    with pytest.warns(sources.DroppedRowsWarning, match="file does not exist"):
        frame = sources.from_filenames([folder / "homer_simpson_12.jpg", folder / "ghost_1.jpg"], rule="before_number")
    assert len(frame) == 1
    with pytest.raises(FileNotFoundError):
        sources.from_filenames(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="rule"):
        sources.from_filenames(folder, rule="")


def test_normalise_labels():
    assert list(sources.normalise_labels([1.0, 2, 3.0])) == [1, 2, 3]
    assert list(sources.normalise_labels([" cat", "dog "])) == ["cat", "dog"]
    assert list(sources.normalise_labels([1.5, 2])) == ["1.5", "2"]
    assert not any(isinstance(v, float) and math.isnan(v) for v in sources.normalise_labels(["a"]))


def test_from_split_folders_uses_the_held_out_folder_as_the_test_set(tmp_path):
    root = tmp_path / "hymenoptera_data"
    for split, count in (("train", 6), ("val", 3)):
        for name in ("ants", "bees"):
            for number in range(count):
                _image(root / split / name / f"{number}.jpg")
    frame = sources.from_split_folders(root)
    assert len(frame) == 18 and frame.attrs["test_set"] == str(root / "val")
    assert (frame["split"] == "test").sum() == 6
    assert all(("/val/" in p) == (s == "test") for p, s in zip(frame["path"], frame["split"]))
    from helpers import splits

    split = splits.split_dataset(frame, seed=0, min_per_class=1)
    assert split.loc[split["path"].str.contains("/train/"), "split"].isin(["train", "validation"]).all()
    with pytest.raises(sources.DatasetError, match="held-out folder"):
        sources.from_split_folders(root / "train")
    _image(root / "val" / "wasps" / "0.jpg")
    with pytest.raises(sources.DatasetError, match="wasps"):
        sources.from_split_folders(root)
