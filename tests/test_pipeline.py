"""helpers.pipeline: decoding every mode to RGB, batches, labels, order, shuffle, cache,
augmentation, and bad files refused before an epoch starts (not during it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import pipeline, scan, splits
from helpers.device import import_tensorflow
from helpers.settings import load_settings

SIZE = 32  # small images keep the tests fast; the code path is the same at 224


@pytest.fixture
def pipe_settings(tmp_path):
    """MobileNet preprocessing ([-1, 1]) at 32 px, with a throw-away cache."""
    return load_settings(
        {"profile": "smoke", "backbone": "mobilenet", "alpha": 0.75, "image_size": SIZE, "batch_size": 4,
         "cache_dir": tmp_path / "cache", "data_dir": tmp_path / "data"}
    )


def _pattern(width=24, height=16, seed=0) -> np.ndarray:
    """Smooth gradients (JPEG-friendly) that differ per seed and are not symmetric."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [(x * (7 + seed) + y * 3) % 256, (y * (11 + seed) + 40) % 256, (x * y + 17 * seed) % 256]
    return np.stack(channels, axis=-1).astype(np.uint8)


def _solid(path: Path, level: int, size=(12, 10)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (level, level, level)).save(path)
    return str(path)


def _white_composite(image: Image.Image) -> np.ndarray:
    rgba = image.convert("RGBA")
    return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB"))


def _mode_files(folder: Path) -> dict[str, tuple[Path, np.ndarray, float]]:
    """name -> (file, expected RGB array, tolerated mean absolute difference)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = Image.fromarray(_pattern())
    files: dict[str, tuple[Path, np.ndarray, float]] = {}

    def add(name, image, expected, tolerance=0.0, **save):
        path = folder / name
        image.save(path, **save)
        if expected is None:  # lossy: compare with what Pillow decodes from the file
            with Image.open(path) as saved:
                expected = np.asarray(saved.convert("RGB"))
        files[name] = (path, expected, tolerance)

    # JPEG decoders differ by a level or two (IDCT, upsampling); the rest must match exactly.
    add("rgb.jpg", base, None, 2.0, quality=95)
    add("gray.jpg", base.convert("L"), None, 2.0, quality=95)
    add("cmyk.jpg", base.convert("CMYK"), None, 2.0, quality=95)
    add("rgb.png", base, np.asarray(base))
    palette = base.convert("P")
    add("palette.png", palette, np.asarray(palette.convert("RGB")))
    rgba = base.convert("RGBA")
    alpha = np.zeros((16, 24), dtype=np.uint8)
    alpha[:, 12:] = 255  # left half transparent: must come out white
    rgba.putalpha(Image.fromarray(alpha))
    add("rgba.png", rgba, _white_composite(rgba))
    gray_alpha = base.convert("LA")
    gray_alpha.putalpha(Image.fromarray(alpha))
    add("la.png", gray_alpha, _white_composite(gray_alpha))
    deep = (np.arange(16 * 24, dtype=np.uint16).reshape(16, 24) * 170).astype(np.uint16)
    add("gray16.png", Image.fromarray(deep), np.repeat(np.rint(deep / 257.0).astype(np.uint8)[..., None], 3, axis=2), 1.0)
    add("palette.bmp", palette, np.asarray(palette.convert("RGB")))
    bilevel = base.convert("1")
    add("bilevel.bmp", bilevel, np.asarray(bilevel.convert("RGB")))
    add("rgb.bmp", base, np.asarray(base))
    frames = [Image.new("RGB", (24, 16), color) for color in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    add("animated.gif", frames[0], np.asarray(frames[0]), 2.0, save_all=True, append_images=frames[1:])
    add("animated.webp", frames[0], np.asarray(frames[0]), 0.0, save_all=True, append_images=frames[1:], lossless=True)
    add("animated.png", frames[0], np.asarray(frames[0]), 0.0, save_all=True, append_images=frames[1:])
    add("rgb.webp", base, np.asarray(base), 0.0, lossless=True)
    return files


def test_every_mode_decodes_to_rgb_like_pillow(tmp_path, pipe_settings):
    for name, (path, expected, tolerance) in _mode_files(tmp_path).items():
        image = pipeline.load_image(path, settings=pipe_settings)
        assert image.dtype == np.uint8 and image.shape == expected.shape, name
        difference = np.abs(image.astype(float) - expected.astype(float)).mean()
        assert difference <= tolerance, f"{name}: mean difference {difference:.2f} > {tolerance}"
    rgba = pipeline.load_image(tmp_path / "rgba.png", settings=pipe_settings)
    assert (rgba[:, :12] == 255).all(), "transparent pixels are composited on white"


def test_pipeline_and_load_image_agree_across_decoders(tmp_path, pipe_settings):
    files = _mode_files(tmp_path)
    paths = [str(path) for path, _, _ in files.values()]
    decoders = scan.decoders_for(paths, settings=pipe_settings)
    assert {"tf", "pil"} <= set(decoders), "the test needs both decoders in one dataset"
    dataset = pipeline.make_dataset(paths, settings=pipe_settings, size=16, preprocess=False, batch_size=5)
    batches = np.concatenate([batch.numpy() for batch in dataset])
    assert batches.shape == (len(paths), 16, 16, 3) and batches.dtype == np.float32
    for path, got in zip(paths, batches):
        expected = pipeline.load_image(path, 16, settings=pipe_settings)
        assert np.array_equal(got, expected.astype(np.float32)), Path(path).name


def test_load_images_gives_uint8_pixels_in_order_like_load_image(tmp_path, pipe_settings):
    files = _mode_files(tmp_path)
    paths = [str(path) for path, _, _ in files.values()][:5]
    images = pipeline.load_images(paths, 16, pipe_settings)
    assert images.shape == (len(paths), 16, 16, 3) and images.dtype == np.uint8
    for path, got in zip(paths, images):
        np.testing.assert_array_equal(got, pipeline.load_image(path, 16, settings=pipe_settings))
    reversed_ = pipeline.load_images(pd.DataFrame({"path": paths[::-1]}), 16, pipe_settings)
    np.testing.assert_array_equal(reversed_, images[::-1])
    assert pipeline.load_images([], 16, pipe_settings).shape == (0, 16, 16, 3)
    with pytest.raises(ValueError, match="positive"):
        pipeline.load_images(paths, 0, pipe_settings)
    with pytest.raises(TypeError, match="not one path"):
        pipeline.load_images(paths[0], 16, pipe_settings)


def test_exif_rotation_is_applied(tmp_path, pipe_settings):
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    path = tmp_path / "phone.jpg"
    Image.fromarray(_pattern(40, 20)).save(path, exif=exif)
    assert pipeline.load_image(path, settings=pipe_settings).shape == (40, 20, 3)


def test_batches_have_the_backbone_range_and_keep_order(tmp_path, pipe_settings):
    levels = [0, 30, 60, 90, 120, 150, 180, 210, 255]
    paths = [_solid(tmp_path / f"{i}.png", level) for i, level in enumerate(levels)]
    labels = ["dark" if level < 128 else "light" for level in levels]
    dataset = pipeline.make_dataset(paths, labels, settings=pipe_settings)
    images, ids = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    assert [len(batch) for batch in images] == [4, 4, 1]
    images, ids = np.concatenate(images), np.concatenate(ids)
    assert images.shape == (9, SIZE, SIZE, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), np.array(levels) / 127.5 - 1.0, atol=1e-5)
    assert list(ids) == [pipeline.class_names(labels).index(label) for label in labels]
    only_images = pipeline.make_dataset(paths, settings=pipe_settings, batch_size=32)
    assert next(iter(only_images)).shape == (9, SIZE, SIZE, 3)


def test_labels_and_classes(tmp_path, pipe_settings):
    paths = [_solid(tmp_path / f"{i}.jpg", 10 * i) for i in range(3)]
    assert pipeline.class_names(["b", "a", "b"]) == ["a", "b"]
    assert pipeline.class_names(pd.DataFrame({"label": [2, 0, 1]})) == [0, 1, 2]
    dataset = pipeline.make_dataset(paths, ["b", "c", "b"], settings=pipe_settings, classes=["a", "b", "c"])
    assert list(np.concatenate([y.numpy() for _, y in dataset])) == [1, 2, 1]
    with pytest.raises(ValueError, match="not among the classes"):
        pipeline.make_dataset(paths, ["a", "b", "z"], settings=pipe_settings, classes=["a", "b"])
    with pytest.raises(ValueError, match="one label per image"):
        pipeline.make_dataset(paths, ["a"], settings=pipe_settings)
    with pytest.raises(ValueError, match="no image paths"):
        pipeline.make_dataset([], settings=pipe_settings)
    with pytest.raises(TypeError, match="list"):
        pipeline.make_dataset(paths[0], settings=pipe_settings)


def test_shuffle_is_seeded_and_reshuffles_each_epoch(tmp_path, pipe_settings):
    paths = [_solid(tmp_path / f"{i}.png", 20 * i) for i in range(12)]

    def epoch(dataset):
        return [round(float(v), 4) for batch in dataset for v in batch.numpy().mean(axis=(1, 2, 3))]

    dataset = pipeline.make_dataset(paths, settings=pipe_settings, shuffle=True, seed=1)
    first, second = epoch(dataset), epoch(dataset)
    ordered = epoch(pipeline.make_dataset(paths, settings=pipe_settings))
    assert sorted(first) == sorted(ordered) == sorted(second)
    assert first != ordered and first != second
    assert epoch(pipeline.make_dataset(paths, settings=pipe_settings, shuffle=True, seed=1)) == first
    cached = pipeline.make_dataset(paths, settings=pipe_settings, shuffle=True, cache=True, seed=1)
    assert sorted(epoch(cached)) == sorted(epoch(cached)) == sorted(ordered)


def test_augmentation_keeps_shape_and_range(tmp_path, pipe_settings):
    paths = [str(tmp_path / f"{i}.png") for i in range(4)]
    for i, path in enumerate(paths):
        Image.fromarray(_pattern(seed=i)).save(path)
    plain = np.concatenate([b.numpy() for b in pipeline.make_dataset(paths, settings=pipe_settings)])
    for augment in (True, [__import__("keras").layers.RandomFlip("horizontal", seed=0)]):
        dataset = pipeline.make_dataset(paths, [0, 1, 0, 1], settings=pipe_settings, augment=augment)
        images = np.concatenate([x.numpy() for x, _ in dataset])
        assert images.shape == plain.shape
        assert np.isfinite(images).all() and images.min() >= -1.0001 and images.max() <= 1.0001
    with pytest.raises(TypeError, match="augment"):
        pipeline.make_dataset(paths, settings=pipe_settings, augment="flip")
    with pytest.raises(TypeError, match="preprocess"):
        pipeline.make_dataset(paths, settings=pipe_settings, preprocess="mobilenet")


def test_bad_files_are_refused_before_the_epoch_and_skipped_after_a_scan(tmp_path, pipe_settings):
    good = [_solid(tmp_path / "cats" / f"{i}.jpg", 40 * i) for i in range(3)] + [
        _solid(tmp_path / "dogs" / f"{i}.jpg", 200) for i in range(2)
    ]
    empty = tmp_path / "dogs" / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "cats" / "text.jpg"
    text.write_text("not a picture")
    cut = tmp_path / "dogs" / "cut.jpg"
    cut.write_bytes(Path(good[0]).read_bytes()[:200])
    frame = pd.DataFrame(
        {"path": good + [str(empty), str(text), str(cut)], "label": ["cat"] * 3 + ["dog"] * 2 + ["dog", "cat", "dog"]}
    )
    with pytest.raises(ValueError, match="3 of 8 file"):
        pipeline.make_dataset(frame["path"], frame["label"], settings=pipe_settings)
    with pytest.raises(pipeline.BadImageError, match="not an image"):
        pipeline.load_image(text, 16, settings=pipe_settings)
    result = scan.scan_images(frame, settings=pipe_settings)
    assert len(result.problems) == 3
    dataset = pipeline.make_dataset(result.good, result.good["label"], settings=pipe_settings)
    assert sum(int(x.shape[0]) for x, _ in dataset) == 5, "a full epoch over the usable files"


def test_split_datasets_share_one_class_list(tmp_path, pipe_settings):
    rows = [{"path": _solid(tmp_path / label / f"{i}.png", 10 * i), "label": label}
            for label in ("a", "b") for i in range(10)]
    frame = splits.split_dataset(pd.DataFrame(rows), seed=0, min_per_class=1)
    sets = pipeline.split_datasets(frame, settings=pipe_settings, cache=True)
    assert set(sets) == {"train", "validation", "test"}
    for name, dataset in sets.items():
        part = frame.loc[frame["split"] == name]
        ids = np.concatenate([y.numpy() for _, y in dataset])
        assert sorted(ids) == sorted(pipeline.encode_labels(part["label"], ["a", "b"]))
    with pytest.raises(ValueError, match="split_dataset"):
        pipeline.split_datasets(pd.DataFrame(rows), settings=pipe_settings)


def test_a_file_broken_after_the_scan_is_skipped_in_training(tmp_path, pipe_settings, monkeypatch):
    paths = [_solid(tmp_path / f"{i}.jpg", 30 * i) for i in range(4)]
    scan.decoders_for(paths, settings=pipe_settings)
    # Pretend the scan passed a file that TensorFlow then cannot decode.
    monkeypatch.setattr(scan, "decoders_for", lambda files, **kwargs: ["tf"] * len(files))
    Path(paths[1]).write_text("broken after the scan")
    training = pipeline.make_dataset(paths, ["a", "b", "a", "b"], settings=pipe_settings, shuffle=True)
    assert sum(int(x.shape[0]) for x, _ in training) == 3, "the epoch goes on without the broken file"
    ordered = pipeline.make_dataset(paths, settings=pipe_settings)
    with pytest.raises(import_tensorflow().errors.InvalidArgumentError):
        list(ordered)
