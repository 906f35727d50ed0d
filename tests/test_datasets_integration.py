"""helpers.datasets: the course catalog, finding data (data dir, mirror, caches, download)
and the profile's deterministic selections.

Tests marked ``integration`` load the real datasets from ../shared/data (skipped
with a reason where it is absent); the others run on small fake layouts that the
tests generate.
"""

from __future__ import annotations

import dataclasses
import http.server
import io
import os
import sys
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import datasets, pipeline, sources
from helpers import settings as settings_module
from helpers.settings import load_settings

# ../shared/data beside the project (the conftest's ``shared_data`` fixture skips without it).
REAL_DATASETS = Path(__file__).parents[1].parent / "shared" / "data" / "datasets"


@pytest.fixture
def real_settings(tmp_path, shared_data):
    """Smoke profile, MobileNet a0.75, the read-only real data, a throw-away cache."""
    if not (REAL_DATASETS / "simpsons").is_dir() or not (REAL_DATASETS / "pacs").is_dir():
        pytest.skip(f"the real Simpsons and PACS data are not in {REAL_DATASETS}; integration tests need them")
    return load_settings(
        {"profile": "smoke", "backbone": "mobilenet", "alpha": 0.75, "cache_dir": tmp_path / "cache",
         "data_dir": REAL_DATASETS}
    )


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in sources.IMAGE_EXTENSIONS)


def _batch_check(frame: pd.DataFrame, settings) -> None:
    """One pipeline batch has the backbone's shape and MobileNet's [-1, 1] range."""
    part = frame.groupby("label").head(4)
    dataset = pipeline.make_dataset(part["path"], part["label"], settings=settings, batch_size=len(part),
                                    classes=pipeline.class_names(frame))
    images, ids = next(iter(dataset))
    images = images.numpy()
    assert images.shape == (len(part), 224, 224, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < 0 < images.max()
    # MobileNet's preprocessing is x / 127.5 - 1 on whole pixel values.
    pixels = (images + 1.0) * 127.5
    assert np.abs(pixels - np.round(pixels)).max() < 1e-3
    assert sorted(set(ids.numpy())) == list(range(frame["label"].nunique()))


@pytest.mark.integration
def test_simpsons_smoke_profile_from_shared_data(real_settings):
    root = REAL_DATASETS / "simpsons" / "simpsons_dataset"
    counts = {folder.name: _count_images(folder) for folder in root.iterdir() if folder.is_dir()}
    expected = sorted(counts, key=lambda name: (-counts[name], name))[: real_settings.scale.simpsons_characters]
    before = sorted(os.listdir(REAL_DATASETS))
    frame = datasets.load_dataset("simpsons", real_settings, download_ok=False)
    assert sorted(frame["label"].unique()) == sorted(expected)
    per_class = frame["label"].value_counts()
    assert all(per_class[name] == min(real_settings.scale.simpsons_per_class, counts[name]) for name in expected)
    assert all(Path(p).parent.name == label and Path(p).is_relative_to(root) for p, label in zip(frame["path"], frame["label"]))
    assert frame.equals(datasets.load_dataset("simpsons", real_settings, download_ok=False)), "selection is deterministic"
    assert frame.attrs["root"] == str(root)
    assert sorted(os.listdir(REAL_DATASETS)) == before, "the read-only data dir must not be written to"
    _batch_check(frame, real_settings)


@pytest.mark.integration
def test_photo_vs_drawing_smoke_profile_from_shared_data(real_settings):
    frame = datasets.load_dataset("photo_vs_drawing", real_settings, download_ok=False)
    per_label = real_settings.scale.pacs_per_class
    assert frame["label"].value_counts().to_dict() == {"photo": per_label, "drawing": per_label}
    assert set(frame.loc[frame["label"] == "photo", "domain"]) == {"photo"}
    drawing = frame.loc[frame["label"] == "drawing"]
    domain_counts = drawing["domain"].value_counts()
    assert set(domain_counts.index) == set(datasets.PACS_DRAWING_DOMAINS)
    assert domain_counts.max() - domain_counts.min() <= 1, "drawings spread evenly over the three domains"
    classes = {p.name for p in (REAL_DATASETS / "pacs" / "photo").iterdir()}
    assert set(drawing["object"]) == classes and set(frame.loc[frame["label"] == "photo", "object"]) == classes
    assert all(Path(p).parts[-3] == d and Path(p).parts[-2] == o for p, d, o in zip(frame["path"], frame["domain"], frame["object"]))
    _batch_check(frame, real_settings)


@pytest.mark.integration
def test_workshop_profile_sizes_from_shared_data(real_settings):
    settings = real_settings.replace(profile="workshop")
    frame = datasets.load_dataset("simpsons", settings, download_ok=False)
    root = REAL_DATASETS / "simpsons" / "simpsons_dataset"
    for label, count in frame["label"].value_counts().items():
        assert count == min(settings.scale.simpsons_per_class, _count_images(root / label))
    pacs = datasets.load_dataset("photo_vs_drawing", settings, download_ok=False)
    photos = _count_images(REAL_DATASETS / "pacs" / "photo")
    drawings = sum(_count_images(REAL_DATASETS / "pacs" / d) for d in datasets.PACS_DRAWING_DOMAINS)
    expected = min(settings.scale.pacs_per_class or photos, photos, drawings)
    assert pacs["label"].value_counts().to_dict() == {"photo": expected, "drawing": expected}


def test_photos_are_written_once_into_the_cache(tmp_path):
    settings = load_settings({"profile": "smoke", "cache_dir": tmp_path / "cache", "data_dir": tmp_path / "data"})
    frame = datasets.load_dataset("photos", settings)
    names = [name for name, *_ in datasets.PHOTOS[: settings.scale.photos]]
    assert list(frame["label"]) == names
    assert all(Path(p).parent == tmp_path / "cache" / "photos" for p in frame["path"])
    first = {p: os.stat(p).st_mtime_ns for p in frame["path"]}
    again = datasets.load_dataset("photos", settings.replace(profile="full"))
    assert len(again) == len(datasets.PHOTOS)
    assert all(os.stat(p).st_mtime_ns == stamp for p, stamp in first.items()), "existing photos are not rewritten"
    image = pipeline.load_image(frame["path"][0], 64, settings=settings)
    assert image.shape == (64, 64, 3) and image.std() > 10
    assert not [p for p in (tmp_path / "cache" / "photos").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- fake layouts


def _jpeg(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 8), (shade % 256, 80, 160)).save(path)


def _fake_simpsons(base: Path, counts: dict[str, int]) -> Path:
    root = base / "simpsons_dataset"
    for name, count in counts.items():
        for number in range(count):
            _jpeg(root / name / f"pic_{number:04d}.jpg", number * 9)
    return root


def _fake_pacs(base: Path, per_cell: dict[str, int], classes=("dog", "house", "person")) -> Path:
    for domain, count in per_cell.items():
        for cls in classes:
            for number in range(count):
                _jpeg(base / domain / cls / f"{number}.jpg", number * 5)
    return base


@pytest.fixture
def small_profile(monkeypatch):
    """A smoke profile with 2 characters x 3 images and 6 PACS images per label."""
    profile = dataclasses.replace(settings_module.PROFILES["smoke"], simpsons_characters=2, simpsons_per_class=3, pacs_per_class=6)
    monkeypatch.setitem(settings_module.PROFILES, "smoke", profile)
    return profile


def _settings(tmp_path: Path, **overrides):
    values = {"profile": "smoke", "cache_dir": tmp_path / "cache", "data_dir": tmp_path / "data"} | overrides
    return load_settings(values)


def test_simpsons_selection_most_populous_and_hash_ordered(tmp_path, small_profile):
    _fake_simpsons(tmp_path / "data" / "simpsons", {"abe": 4, "bart": 6, "carl": 6, "dana": 2})
    frame = datasets.load_dataset("simpsons", _settings(tmp_path), download_ok=False)
    assert sorted(frame["label"].unique()) == ["bart", "carl"], "most populous first, ties by name"
    assert frame["label"].value_counts().to_dict() == {"bart": 3, "carl": 3}
    chosen = sorted(Path(p).name for p in frame.loc[frame["label"] == "bart", "path"])
    everything = sorted(os.listdir(tmp_path / "data/simpsons/simpsons_dataset/bart"), key=datasets._order)
    assert chosen == sorted(everything[:3]), "the first files by hash of their name"


def test_unusable_files_are_replaced_by_the_next_ones(tmp_path, small_profile):
    root = _fake_simpsons(tmp_path / "data" / "simpsons", {"bart": 5, "lisa": 5})
    ordered = sorted(os.listdir(root / "bart"), key=datasets._order)
    (root / "bart" / ordered[0]).write_bytes(b"")  # the first pick is broken
    with pytest.warns(sources.DroppedRowsWarning, match="skipped 1"):
        frame = datasets.load_dataset("simpsons", _settings(tmp_path), download_ok=False)
    assert frame["label"].value_counts().to_dict() == {"bart": 3, "lisa": 3}
    assert str(root / "bart" / ordered[0]) not in set(frame["path"])
    assert sources.dropped(frame)["reason"].str.contains("empty").all()


def test_photo_vs_drawing_is_balanced_and_spread(tmp_path, small_profile):
    _fake_pacs(tmp_path / "data" / "pacs", {"photo": 4, "art_painting": 2, "cartoon": 2, "sketch": 2})
    frame = datasets.load_dataset("photo_vs_drawing", _settings(tmp_path), download_ok=False)
    assert frame["label"].value_counts().to_dict() == {"photo": 6, "drawing": 6}
    drawing = frame.loc[frame["label"] == "drawing"]
    assert drawing["domain"].value_counts().to_dict() == {"art_painting": 2, "cartoon": 2, "sketch": 2}
    assert frame.loc[frame["label"] == "photo", "object"].value_counts().to_dict() == {"dog": 2, "house": 2, "person": 2}
    full = datasets.load_dataset("photo_vs_drawing", _settings(tmp_path, profile="full"), download_ok=False)
    assert full["label"].value_counts().to_dict() == {"photo": 12, "drawing": 12}, "0 = all the smaller side has"


def test_unpacked_mirror_is_used_in_place(tmp_path, small_profile):
    mirror = tmp_path / "mirror"
    _fake_pacs(mirror / "pacs", {"photo": 2, "sketch": 2})
    root = datasets.locate("photo_vs_drawing", _settings(tmp_path, data_mirror=mirror), download_ok=False)
    assert root == mirror / "pacs"
    assert not (tmp_path / "data").exists(), "nothing is copied from an unpacked mirror"


def test_mirror_archive_is_unpacked_into_the_data_dir(tmp_path, small_profile):
    source = _fake_simpsons(tmp_path / "src", {"bart": 3, "lisa": 3})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "simpsons.zip", "w") as bundle:
        for path in source.rglob("*.jpg"):
            bundle.write(path, path.relative_to(source.parent))
    settings = _settings(tmp_path, data_mirror=mirror)
    root = datasets.locate("simpsons", settings, download_ok=False)
    assert root == tmp_path / "data" / "simpsons" / "simpsons_dataset"
    assert len(list(root.rglob("*.jpg"))) == 6
    assert datasets.locate("simpsons", settings, download_ok=False) == root, "found in the data dir next time"


def test_read_only_data_dir_is_never_written(tmp_path, small_profile):
    source = _fake_pacs(tmp_path / "src" / "kfold", {"photo": 1, "cartoon": 1})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "PACS.zip", "w") as bundle:
        for path in source.rglob("*.jpg"):
            bundle.write(path, path.relative_to(source.parent))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    try:
        root = datasets.locate("photo_vs_drawing", _settings(tmp_path, data_mirror=mirror), download_ok=False)
        assert os.listdir(data_dir) == []
        assert root == tmp_path / "cache" / "datasets" / "pacs" / "kfold"
    finally:
        data_dir.chmod(0o755)
    assert not datasets.is_writable(Path("/proc/nowhere/x"))


def test_missing_dataset_offline_says_how_to_fix(tmp_path):
    with pytest.raises(datasets.DatasetMissingError) as caught:
        datasets.locate("simpsons", _settings(tmp_path, data_mirror=tmp_path / "mirror"), download_ok=False)
    message = str(caught.value)
    assert "KIT_DATA_MIRROR" in message and "simpsons_dataset/<character>" in message and "prepare" in message
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load_dataset("mnist", _settings(tmp_path))


def test_simpsons_download_without_kagglehub_is_explained(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # import fails as if not installed
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    with pytest.raises(datasets.DatasetMissingError, match="pip install kagglehub"):
        datasets.locate("simpsons", _settings(tmp_path), download_ok=True)


def test_simpsons_found_in_kagglehub_cache_and_via_kagglehub(tmp_path, monkeypatch, small_profile):
    cache = tmp_path / "kagglehub"
    version = cache / "datasets" / "alexattia" / "the-simpsons-characters-dataset" / "versions" / "4"
    nested = _fake_simpsons(version / "simpsons_dataset", {"bart": 2, "lisa": 2})  # upstream nests it twice
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    assert datasets.locate("simpsons", _settings(tmp_path), download_ok=False) == nested
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "empty-cache"))
    fake = type(sys)("kagglehub")
    fake.dataset_download = lambda handle: str(version)
    monkeypatch.setitem(sys.modules, "kagglehub", fake)
    assert datasets.locate("simpsons", _settings(tmp_path), download_ok=True) == nested

    def refuse(handle):
        raise PermissionError("401 Unauthorized")

    fake.dataset_download = refuse
    with pytest.raises(datasets.DatasetMissingError, match="credentials"):
        datasets.locate("simpsons", _settings(tmp_path), download_ok=True)


def test_pacs_download_is_fetched_and_unpacked(tmp_path, monkeypatch, small_profile):
    source = _fake_pacs(tmp_path / "src" / "kfold", {"photo": 1, "art_painting": 1})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in source.rglob("*.jpg"):
            bundle.write(path, path.relative_to(source.parent))
    body = buffer.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 5

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            page = b"<html>quota exceeded</html>" if "page" in self.path else body
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        spec = dataclasses.replace(datasets.CATALOG["photo_vs_drawing"], download=f"{base}/pacs.zip")
        monkeypatch.setitem(datasets.CATALOG, "photo_vs_drawing", spec)
        settings = _settings(tmp_path)
        root = datasets.locate("photo_vs_drawing", settings, download_ok=True, progress=False)
        assert root == tmp_path / "data" / "pacs" / "kfold"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert len(datasets.load_dataset("photo_vs_drawing", settings, download_ok=False)) == 6
        spec = dataclasses.replace(spec, download=f"{base}/page", archives=("other.zip",))
        monkeypatch.setitem(datasets.CATALOG, "photo_vs_drawing", spec)
        with pytest.raises(datasets.DatasetMissingError, match="web page"):
            datasets.locate("photo_vs_drawing", _settings(tmp_path, data_dir=tmp_path / "data2"), progress=False)
        assert not (tmp_path / "data2" / "downloads" / "other.zip").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_catalog_records_source_licence_and_layout():
    assert set(datasets.CATALOG) == {"simpsons", "photo_vs_drawing", "photos"}
    for row in datasets.catalog_rows():
        assert row["upstream"] and row["licence"] and row["layout"]
    assert datasets.CATALOG["simpsons"].download == "kagglehub:alexattia/the-simpsons-characters-dataset"
    assert datasets.CATALOG["photo_vs_drawing"].download.startswith("https://")


def test_simpsons_have_episode_groups_and_without_a_test_folder_no_preset_split(tmp_path, small_profile):
    _fake_simpsons(tmp_path / "data" / "simpsons", {"bart": 45, "lisa": 45})
    frame = datasets.load_dataset("simpsons", _settings(tmp_path), download_ok=False)
    assert "split" not in frame.columns and frame.attrs["test_set"] is None
    numbers = {p: int(Path(p).stem.split("_")[1]) for p in frame["path"]}
    for group, part in frame.groupby("group"):
        blocks = {numbers[p] // datasets.SIMPSONS_FRAME_BLOCK for p in part["path"]}
        assert len(blocks) == 1 and part["label"].nunique() == 1, f"group {group} mixes blocks or characters"
    assert "frame numbers" in datasets.CATALOG["simpsons"].grouping
    assert all(row["grouping"] and row["test set"] for row in datasets.catalog_rows())


def test_the_kaggle_simpsons_test_folder_is_the_test_split(tmp_path, small_profile):
    _fake_simpsons(tmp_path / "data" / "simpsons", {"bart": 40, "lisa": 40, "abe": 2})
    test_folder = tmp_path / "data" / "simpsons" / "kaggle_simpson_testset" / "kaggle_simpson_testset"
    for name, count in (("bart", 4), ("lisa", 3), ("abe", 5), ("nelson_muntz", 2)):
        for number in range(count):
            _jpeg(test_folder / f"{name}_{number + 1}.jpg", 40 + number)
    (test_folder / "lisa_7.jpg").write_bytes(b"")  # a broken file is reported, not used
    with pytest.warns(sources.DroppedRowsWarning):
        frame = datasets.load_dataset("simpsons", _settings(tmp_path), download_ok=False)
    test = frame.loc[frame["split"] == "test"]
    assert test["label"].value_counts().to_dict() == {"bart": 4, "lisa": 3}, "the chosen characters' test images only"
    assert all(Path(p).parent == test_folder for p in test["path"])
    assert frame.attrs["test_set"] == str(test_folder)
    from helpers import splits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", splits.SmallClassWarning)  # 3 frames per character in this profile
        split = splits.split_dataset(frame, seed=0, min_per_class=1)
    assert set(split.loc[split["path"].isin(test["path"]), "split"]) == {"test"}
    assert set(split.loc[~split["path"].isin(test["path"]), "split"]) == {"train", "validation"}
