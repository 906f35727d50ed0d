"""helpers.scan: every kind of unusable file is reported, usable ones get a decoder."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import scan
from helpers.settings import load_settings
from helpers.sources import DatasetError


@pytest.fixture
def scan_settings(tmp_path):
    """Settings whose scan cache lives in a throw-away folder."""
    return load_settings({"profile": "smoke", "cache_dir": tmp_path / "cache", "data_dir": tmp_path / "data"})


def _photo(path: Path, size=(40, 30), mode="RGB", fmt=None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    image.save(path, format=fmt, **save)
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height but holds almost no data (a bomb's shape)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def _bad_files(folder: Path) -> dict[str, Path]:
    """One generated file per kind of problem."""
    files = {}
    files["missing"] = folder / "gone.jpg"
    files["empty"] = folder / "empty.jpg"
    files["empty"].parent.mkdir(parents=True, exist_ok=True)
    files["empty"].write_bytes(b"")
    files["not-an-image"] = folder / "notes.jpg"
    files["not-an-image"].write_text("this is a text file with an image's name\n")
    files["unsupported-format"] = _photo(folder / "scan.tif", fmt="TIFF")
    files["too-large"] = _png_header(folder / "bomb.png", 100_000, 100_000)
    whole = _photo(folder / "whole.jpg", size=(64, 48)).read_bytes()
    files["truncated"] = folder / "cut.jpg"
    files["truncated"].write_bytes(whole[: len(whole) // 2])
    corrupt = bytearray(whole)
    for index in range(400, len(corrupt) - 200, 7):
        corrupt[index] = 0
    files["corrupt"] = folder / "broken.jpg"
    files["corrupt"].write_bytes(bytes(corrupt))
    (folder / "whole.jpg").unlink()
    return files


def test_every_kind_of_bad_file_is_reported_with_a_reason(tmp_path, scan_settings):
    bad = _bad_files(tmp_path / "bad")
    good = [_photo(tmp_path / "good" / f"ok{i}.jpg") for i in range(2)]
    frame = pd.DataFrame({"path": [str(p) for p in [*bad.values(), *good]]})
    result = scan.scan_images(frame, settings=scan_settings)
    assert list(result.good["path"]) == [str(p) for p in good]
    kinds = dict(zip(result.problems["path"], result.problems["kind"]))
    assert kinds == {str(path): kind for kind, path in bad.items()}
    assert set(kinds.values()) == set(scan.KINDS), "every kind of problem must be covered"
    assert all(result.problems["reason"].str.len() > 5)
    assert list(result.problems.columns) == ["path", "label", "kind", "reason"]
    assert "7 problem(s)" in result.summary()
    assert "not an image (a text file)" in str(result)


def test_both_truncated_and_corrupt_png_are_caught(tmp_path, scan_settings):
    whole = _photo(tmp_path / "whole.png", size=(64, 48)).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole[: len(whole) // 2])
    record = scan.inspect_file(cut)
    assert record["kind"] in {"truncated", "corrupt"}


def test_pixel_limit_is_checked_from_the_header_without_decoding(tmp_path):
    # 48 megapixels claimed, almost no data: decoding would fail, so "too-large"
    # proves that the header alone decided.
    path = _png_header(tmp_path / "big.png", 8000, 6000)
    assert scan.inspect_file(path)["kind"] == "too-large"
    assert scan.inspect_file(path, max_pixels=50_000_000)["kind"] in {"truncated", "corrupt"}
    small = _photo(tmp_path / "small.jpg", size=(100, 100))
    assert scan.inspect_file(small, max_pixels=5_000)["kind"] == "too-large"
    assert "MP limit" in scan.inspect_file(small, max_pixels=5_000)["reason"]


@pytest.mark.parametrize(
    "name, mode, save, decoder",
    [
        ("rgb.jpg", "RGB", {}, "tf"),
        ("gray.jpg", "L", {}, "tf"),
        ("cmyk.jpg", "CMYK", {}, "tf"),
        ("rgb.png", "RGB", {}, "tf"),
        ("palette.png", "P", {}, "tf"),
        ("gray16.png", "I;16", {}, "tf"),
        ("rgba.png", "RGBA", {}, "pil"),
        ("la.png", "LA", {}, "pil"),
        ("rgb.bmp", "RGB", {}, "tf"),
        ("palette.bmp", "P", {}, "pil"),
        ("bilevel.bmp", "1", {}, "pil"),
        ("palette.gif", "P", {}, "tf"),
        ("rgb.webp", "RGB", {}, "tf"),
    ],
)
def test_supported_modes_are_usable_and_get_a_decoder(tmp_path, name, mode, save, decoder):
    path = tmp_path / name
    if mode == "I;16":
        Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).save(path)
    else:
        _photo(path, mode=mode, **save)
    record = scan.inspect_file(path)
    assert record["kind"] is None, record["reason"]
    assert record["decoder"] == decoder
    assert (record["width"], record["height"]) == (40, 30)


@pytest.mark.parametrize("name", ["animated.webp", "animated.png", "animated.gif"])
def test_animations_are_usable(tmp_path, name):
    frames = [Image.new("RGB", (20, 10), color) for color in ("red", "green")]
    path = tmp_path / name
    frames[0].save(path, save_all=True, append_images=frames[1:])
    record = scan.inspect_file(path)
    assert record["kind"] is None
    # TensorFlow reads the first frame of a GIF but fails on animated WebP: Pillow does those.
    assert record["decoder"] == ("tf" if name.endswith(".gif") else "pil")


def test_exif_rotated_photo_goes_to_pillow(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (40, 20), (10, 200, 10)).save(path, exif=exif)
    assert scan.inspect_file(path)["decoder"] == "pil"


def test_a_class_without_usable_images_stops_with_its_folder(tmp_path, scan_settings):
    good = [_photo(tmp_path / "cats" / f"{i}.jpg") for i in range(2)]
    broken = tmp_path / "dogs" / "0.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"")
    frame = pd.DataFrame({"path": [str(p) for p in [*good, broken]], "label": ["cat", "cat", "dog"]})
    with pytest.raises(DatasetError, match=f"'dog' in {tmp_path / 'dogs'}"):
        scan.scan_images(frame, settings=scan_settings)


def test_single_class_and_empty_datasets_stop(tmp_path, scan_settings):
    good = [_photo(tmp_path / "cats" / f"{i}.jpg") for i in range(2)]
    frame = pd.DataFrame({"path": [str(p) for p in good], "label": ["cat", "cat"]})
    with pytest.raises(DatasetError, match=f"only 1 class.*{tmp_path / 'cats'}"):
        scan.scan_images(frame, settings=scan_settings)
    assert len(scan.scan_images(frame, settings=scan_settings, min_classes=None).good) == 2
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match=f"no usable image in {tmp_path}"):
        scan.scan_images([str(empty)], settings=scan_settings)
    with pytest.raises(DatasetError, match="no usable image"):
        scan.scan_images(pd.DataFrame({"path": []}), settings=scan_settings)
    with pytest.raises(ValueError, match="'path' column"):
        scan.scan_images(pd.DataFrame({"file": ["x"]}), settings=scan_settings)


def test_labels_are_kept_in_good_and_problems(tmp_path, scan_settings):
    paths = [_photo(tmp_path / f"{i}.jpg") for i in range(4)]
    paths[3].write_bytes(b"")
    frame = pd.DataFrame({"path": [str(p) for p in paths], "label": ["a", "b", "a", "b"], "extra": [1, 2, 3, 4]})
    result = scan.scan_images(frame, settings=scan_settings)
    assert list(result.good["label"]) == ["a", "b", "a"]
    assert list(result.good["extra"]) == [1, 2, 3]
    assert {"width", "height", "format", "mode", "decoder"} <= set(result.good.columns)
    assert list(result.problems["label"]) == ["b"]


def test_rescans_use_the_cache_until_a_file_changes(tmp_path, scan_settings, monkeypatch):
    paths = [str(_photo(tmp_path / f"{i}.jpg")) for i in range(3)]
    calls = []
    real = scan.inspect_file
    monkeypatch.setattr(scan, "inspect_file", lambda path, max_pixels=scan.DEFAULT_MAX_PIXELS: calls.append(path) or real(path, max_pixels))
    scan.inspect_paths(paths, settings=scan_settings)
    assert len(calls) == 3
    scan.inspect_paths(paths, settings=scan_settings)
    assert len(calls) == 3, "unchanged files must come from the cache"
    Path(paths[0]).write_text("now a text file")
    records = scan.inspect_paths(paths, settings=scan_settings)
    assert calls[-1] == paths[0] and len(calls) == 4
    assert records[0]["kind"] == "not-an-image"
    # A new process (empty memory) reads the cache file instead of decoding again.
    cache_file = Path(scan_settings.cache_dir) / "scan" / "scan-cache.json"
    assert cache_file.is_file()
    scan._clear_cache()
    scan.inspect_paths(paths, settings=scan_settings)
    assert len(calls) == 4
    # A lower pixel limit applies to cached results too.
    assert scan.inspect_paths(paths[1:], settings=scan_settings, max_pixels=10)[0]["kind"] == "too-large"
    assert len(calls) == 4


def test_decoders_for_refuses_bad_files_with_the_list(tmp_path, scan_settings):
    good = _photo(tmp_path / "ok.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    assert scan.decoders_for([str(good)], settings=scan_settings) == ["tf"]
    with pytest.raises(ValueError, match=f"(?s){bad}: empty file.*scan_images"):
        scan.decoders_for([str(good), str(bad)], settings=scan_settings)


def test_scan_without_cache_and_with_unreadable_cache_folder(tmp_path):
    path = _photo(tmp_path / "ok.jpg")
    assert scan.inspect_paths([path], cache=False)[0]["kind"] is None
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    settings = load_settings({"cache_dir": blocked})
    scan._clear_cache()
    assert scan.inspect_paths([path], settings=settings)[0]["kind"] is None, "a broken cache must not stop a scan"
    with pytest.raises(ValueError, match="max_pixels"):
        scan.inspect_paths([path], settings=settings, max_pixels=0)
    assert os.path.isfile(blocked)
