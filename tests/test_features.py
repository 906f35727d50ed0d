"""Feature extraction and its disk cache: shape, dtype, order, cache hits and invalidation, atomic writes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import features
from helpers.settings import load_settings

SIZE = 32
# Seven solid colours: one image each, so every row's expected features are known.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (128, 128, 128)]


@pytest.fixture()
def tiny_settings(tmp_path):
    """Smoke settings (MobileNet preprocessing: x / 127.5 - 1) with a private cache."""
    return load_settings(
        {
            "profile": "smoke", "backbone": "mobilenet", "alpha": 0.75,
            "cache_dir": str(tmp_path / "cache"), "batch_size": 3,
        },
        environ={},
    )


@pytest.fixture()
def colour_frame(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for index, colour in enumerate(COLOURS):
        path = folder / f"img_{index}.png"
        Image.new("RGB", (40 + 3 * index, 36), colour).save(path)
        rows.append({"path": str(path), "label": "warm" if index % 2 else "cold"})
    return pd.DataFrame(rows)


def _mean_colour_model(name: str = "mean_colour"):
    """Images -> mean preprocessed colour: the expected features of a solid image are known."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.GlobalAveragePooling2D(name=name)(inputs)
    return keras.Model(inputs, outputs, name=f"{name}_model")


def _dense_model(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="features_avg")(x)
    return keras.Model(inputs, x, name="tiny_features")


def _expected(colours) -> np.ndarray:
    return np.asarray(colours, dtype=np.float32) / 127.5 - 1.0


def test_shape_dtype_and_order_are_kept(colour_frame, tiny_settings):
    # A shuffled frame and a batch size that leaves a partial last batch.
    frame = colour_frame.sample(frac=1.0, random_state=3).reset_index(drop=True)
    result = features.extract_features(_mean_colour_model(), frame, tiny_settings, progress=False)
    assert result.shape == (len(frame), 3)
    assert result.dtype == np.float32
    order = [int(Path(p).stem.split("_")[1]) for p in frame["path"]]
    np.testing.assert_allclose(result, _expected([COLOURS[i] for i in order]), atol=1e-5)


def test_cache_hit_returns_stored_features_without_computing(colour_frame, tiny_settings, monkeypatch):
    model = _dense_model()
    first = features.extract_features(model, colour_frame, tiny_settings, progress=False)
    files = list(features.cache_dir(tiny_settings).glob("*.npz"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("features were recomputed although the cache matched")

    monkeypatch.setattr(features, "_compute", fail)
    second = features.extract_features(model, colour_frame, tiny_settings, progress=False)
    np.testing.assert_array_equal(first, second)
    table = features.cache_table(tiny_settings)
    assert table.loc[0, "layer"] == "conv" and table.loc[0, "pooling"] == "avg" and table.loc[0, "images"] == 7


def test_metadata_records_what_the_features_are(colour_frame, tiny_settings):
    features.extract_features(_dense_model(), colour_frame, tiny_settings, progress=False)
    (path,) = features.cache_dir(tiny_settings).glob("*.npz")
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
    assert meta["backbone"] == "mobilenet" and meta["alpha"] == 0.75
    assert meta["layer"] == "conv" and meta["pooling"] == "avg"
    assert meta["output_shape"] == [4] and meta["image_size"] == SIZE
    assert meta["files"] == features.files_fingerprint(colour_frame["path"])
    assert meta["rows"] == 7 and meta["dtype"] == "float32"


def test_a_changed_file_invalidates_the_cache(colour_frame, tiny_settings):
    model = _mean_colour_model()
    before = features.extract_features(model, colour_frame, tiny_settings, progress=False)
    changed = colour_frame.loc[2, "path"]
    Image.new("RGB", (40, 36), (10, 20, 30)).save(changed)
    later = time.time() + 5
    os.utime(changed, (later, later))
    after = features.extract_features(model, colour_frame, tiny_settings, progress=False)
    np.testing.assert_allclose(after[2], _expected([(10, 20, 30)])[0], atol=1e-5)
    np.testing.assert_array_equal(np.delete(after, 2, axis=0), np.delete(before, 2, axis=0))
    # Same images and model: the stale file was replaced, not kept beside the new one.
    assert len(list(features.cache_dir(tiny_settings).glob("*.npz"))) == 1


def _cut_model(depth: int, seed: int = 0, named: bool = True):
    """A small conv net cut after ``depth`` convolutions (like choosing an earlier layer)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for index in range(depth):
        x = keras.layers.Conv2D(4, 3, activation="relu", name=f"conv{index}" if named else None)(x)
    x = keras.layers.GlobalAveragePooling2D(name="features_avg")(x)
    return keras.Model(inputs, x, name="cut" if named else None)


def test_another_layer_or_other_weights_miss_the_cache(colour_frame, tiny_settings, monkeypatch):
    calls = []
    real_compute = features._compute

    def counting(*args, **kwargs):
        calls.append(features.describe_extractor(args[0])["layer"])
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(features, "_compute", counting)
    features.extract_features(_cut_model(1), colour_frame, tiny_settings, progress=False)
    features.extract_features(_cut_model(2), colour_frame, tiny_settings, progress=False)
    assert calls == ["conv0", "conv1"]  # an earlier or later layer is another computation
    features.extract_features(_cut_model(2, seed=1), colour_frame, tiny_settings, progress=False)
    assert len(calls) == 3  # fine-tuned (here: re-initialised) weights are not served stale features
    features.extract_features(_cut_model(2, seed=1), colour_frame, tiny_settings, progress=False)
    assert len(calls) == 3
    assert len(list(features.cache_dir(tiny_settings).glob("*.npz"))) == 2  # new weights replaced the old file


def test_the_same_model_built_again_hits_the_cache(colour_frame, tiny_settings, monkeypatch):
    """Keras numbers unnamed layers per session (conv2d_7...): the cache must not depend on those names."""
    first = features.extract_features(_cut_model(2, named=False), colour_frame, tiny_settings, progress=False)
    monkeypatch.setattr(features, "_compute", lambda *a, **k: pytest.fail("recomputed an identical model"))
    again = _cut_model(2, named=False)
    assert again.layers[1].name != features.describe_extractor(_cut_model(2, named=False))["layer"]
    np.testing.assert_array_equal(features.extract_features(again, colour_frame, tiny_settings, progress=False), first)
    assert features.weights_fingerprint(again) == features.weights_fingerprint(_cut_model(2, named=False))
    assert features.architecture_fingerprint(again) != features.architecture_fingerprint(_cut_model(1))


def test_a_subset_or_reordered_frame_is_its_own_cache_entry(colour_frame, tiny_settings):
    model = _mean_colour_model()
    whole = features.extract_features(model, colour_frame, tiny_settings, progress=False)
    reversed_frame = colour_frame.iloc[::-1].reset_index(drop=True)
    np.testing.assert_array_equal(
        features.extract_features(model, reversed_frame, tiny_settings, progress=False), whole[::-1]
    )
    np.testing.assert_array_equal(
        features.extract_features(model, colour_frame.head(2), tiny_settings, progress=False), whole[:2]
    )


def test_cache_writes_are_atomic(colour_frame, tiny_settings, monkeypatch):
    model = _mean_colour_model()
    good = features.extract_features(model, colour_frame, tiny_settings, progress=False)
    (path,) = features.cache_dir(tiny_settings).glob("*.npz")
    original = path.read_bytes()
    Image.new("RGB", (40, 36), (1, 2, 3)).save(colour_frame.loc[0, "path"])
    os.utime(colour_frame.loc[0, "path"], (time.time() + 9, time.time() + 9))

    def broken_savez(stream, **arrays):
        stream.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        features.extract_features(model, colour_frame, tiny_settings, progress=False)
    # The old complete file is untouched and no temporary file is left behind.
    assert path.read_bytes() == original
    assert [p.name for p in features.cache_dir(tiny_settings).iterdir()] == [path.name]
    assert good.shape == (7, 3)


def test_an_unreadable_cache_file_is_recomputed(colour_frame, tiny_settings):
    model = _mean_colour_model()
    expected = features.extract_features(model, colour_frame, tiny_settings, progress=False)
    (path,) = features.cache_dir(tiny_settings).glob("*.npz")
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable"):
        again = features.extract_features(model, colour_frame, tiny_settings, progress=False)
    np.testing.assert_array_equal(again, expected)


def test_float16_storage_and_no_cache(colour_frame, tiny_settings):
    model = _mean_colour_model()
    half = features.extract_features(model, colour_frame, tiny_settings, dtype="float16", progress=False)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, _expected(COLOURS), atol=2e-3)
    plain = features.extract_features(model, colour_frame, tiny_settings, cache=False, batch_size=7, progress=False)
    assert plain.dtype == np.float32
    assert len(list(features.cache_dir(tiny_settings).glob("*.npz"))) == 1  # only the float16 one


def test_progress_messages(colour_frame, tiny_settings, capsys):
    model = _mean_colour_model()
    features.extract_features(model, colour_frame, tiny_settings)
    assert "Extracted (7, 3) features from 7 images" in capsys.readouterr().out
    features.extract_features(model, colour_frame, tiny_settings)
    assert "loaded from the cache" in capsys.readouterr().out


def test_bad_inputs_say_what_to_fix(colour_frame, tiny_settings):
    model = _mean_colour_model()
    with pytest.raises(TypeError, match="DataFrame"):
        features.extract_features(model, list(colour_frame["path"]), tiny_settings)
    with pytest.raises(ValueError, match="'path' column"):
        features.extract_features(model, colour_frame.rename(columns={"path": "file"}), tiny_settings)
    with pytest.raises(FileNotFoundError, match="do not exist"):
        features.extract_features(model, pd.DataFrame({"path": ["/no/such/image.jpg"]}), tiny_settings)
    with pytest.raises(ValueError, match="dtype"):
        features.extract_features(model, colour_frame, tiny_settings, dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        features.extract_features(model, colour_frame, tiny_settings, batch_size=0)
    empty = features.extract_features(model, colour_frame.head(0), tiny_settings)
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_features_frame_and_matrix(colour_frame):
    values = np.arange(21, dtype=np.float32).reshape(7, 3)
    table = features.features_frame(colour_frame.assign(split="train"), values)
    assert list(table.columns) == ["path", "label", "split", "features"]
    np.testing.assert_array_equal(table.loc[4, "features"], values[4])
    np.testing.assert_array_equal(features.feature_matrix(table), values)
    maps = features.features_frame(colour_frame, np.zeros((7, 2, 2, 3)))  # maps are flattened per row
    assert maps.loc[0, "features"].shape == (12,)
    with pytest.raises(ValueError, match="feature rows"):
        features.features_frame(colour_frame, values[:3])
    with pytest.raises(ValueError, match="features"):
        features.feature_matrix(colour_frame)


def test_layer_table_and_default_layer(tiny_settings):
    from helpers import backbones

    settings = tiny_settings.replace(image_size=96)
    classifier = backbones.load_classifier(settings, weights=None)
    table = features.layer_table(classifier, settings)
    assert list(table.columns) == ["position", "layer", "type", "output shape", "features", "default"]
    assert table.loc[0, "layer"] == "predictions" and table.loc[0, "position"] == -1
    default = table.loc[table["default"]]
    assert default["layer"].tolist() == [features.default_layer(settings)] == ["conv_pw_13_relu"]
    assert default["features"].item() == 768  # 1024 * alpha 0.75 channels, after global pooling
    extractor = backbones.load_feature_extractor(settings, weights=None)
    described = features.describe_extractor(extractor)
    assert described["layer"] == "conv_pw_13_relu" and described["pooling"] == "avg"
    assert described["output_shape"] == [768]


@pytest.mark.integration
@pytest.mark.slow
def test_real_mobilenet_features_on_simpsons_images(real_weights, shared_data):
    """The default extractor on real weights and images: penultimate features, cached, order kept."""
    from helpers import backbones, pipeline

    root = shared_data / "datasets" / "simpsons" / "simpsons_dataset"
    paths = [str(root / name / f"pic_{i:04d}.jpg") for name in ("homer_simpson", "lisa_simpson") for i in (0, 1)]
    frame = pd.DataFrame({"path": paths, "label": ["homer"] * 2 + ["lisa"] * 2})
    extractor = backbones.load_feature_extractor(real_weights)
    result = features.extract_features(extractor, frame, real_weights, batch_size=3, progress=False)
    assert result.shape == (4, 768) and result.dtype == np.float32
    assert (result >= 0).all() and result.std() > 0  # after ReLU, and not constant
    # Row 3 is the features of image 3 computed on its own.
    image = pipeline.load_image(paths[3], backbones.input_size(real_weights))[None].astype(np.float32)
    alone = np.asarray(extractor(backbones.get_backbone(settings=real_weights).preprocess(image), training=False))
    np.testing.assert_allclose(result[3], alone[0], atol=1e-4)
    assert features.cache_table(real_weights)["layer"].eq("conv_pw_13_relu").any()


# --------------------------------------------------------------------------- memory-mapped arrays for training


def _two_output_model():
    """Images -> (mean colour, mean colour of the flipped image x 2): two outputs with known values."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    mean = keras.layers.GlobalAveragePooling2D(name="mean")(inputs)
    doubled = keras.layers.Rescaling(2.0, name="doubled")(mean)
    return keras.Model(inputs, [mean, keras.layers.Reshape((1, 3), name="as_map")(doubled)], name="two_outputs")


def test_cached_arrays_are_float16_memory_maps_in_frame_order_and_reused(colour_frame, tiny_settings, monkeypatch):
    model = _two_output_model()
    means, doubled = features.cached_arrays(model, colour_frame, tiny_settings, progress=False)
    assert isinstance(means, np.memmap) and means.dtype == np.float16 and not means.flags.writeable
    assert means.shape == (7, 3) and doubled.shape == (7, 1, 3)
    np.testing.assert_allclose(means, _expected(COLOURS), atol=2e-3)
    np.testing.assert_allclose(doubled[:, 0], 2 * _expected(COLOURS), atol=4e-3)
    files = sorted(p.name for p in features.cache_dir(tiny_settings).iterdir())
    assert len(files) == 3 and not [name for name in files if name.startswith(".")], "two arrays and their description"

    def no_work(*args, **kwargs):
        raise AssertionError("the cached arrays must be read, not computed again")

    monkeypatch.setattr(features.pipeline, "make_dataset", no_work)
    again = features.cached_arrays(model, colour_frame, tiny_settings, progress=False)
    np.testing.assert_array_equal(again[0], means)


def test_cached_arrays_are_computed_again_when_a_file_changes(colour_frame, tiny_settings, capsys):
    model = _two_output_model()
    features.cached_arrays(model, colour_frame, tiny_settings, name="colours", progress=True)
    assert "colours: 7 images in" in capsys.readouterr().out
    Image.new("RGB", (40, 36), (0, 0, 0)).save(colour_frame.loc[0, "path"])
    os.utime(colour_frame.loc[0, "path"], (time.time() + 9, time.time() + 9))
    means, _ = features.cached_arrays(model, colour_frame, tiny_settings, name="colours", progress=True)
    assert "read from the cache" not in capsys.readouterr().out
    np.testing.assert_allclose(means[0], [-1, -1, -1], atol=2e-3)
    assert len(list(features.cache_dir(tiny_settings).iterdir())) == 3, "the stale arrays are replaced, not kept"


def test_an_interrupted_extraction_leaves_no_array(colour_frame, tiny_settings, monkeypatch):
    model = _two_output_model()

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(features.device, "predict_batch", failing)
    with pytest.raises(OSError, match="disk full"):
        features.cached_arrays(model, colour_frame, tiny_settings, progress=False)
    assert not list(features.cache_dir(tiny_settings).glob("*")), "no array, no description, no temporary file"


def test_batches_feed_rows_and_views_as_float32_without_copying_the_arrays():
    values = np.arange(10, dtype=np.float16).reshape(5, 2)
    flipped = -values
    labels = np.array([0, 1, 2, 0, 1])
    ordered = features.batches([values, flipped], labels, rows=[4, 1, 3], batch_size=4)
    assert len(ordered) == 2
    (x1, y1), (x2, y2) = ordered[0], ordered[1]
    assert x1.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([x1, x2]), np.concatenate([values[[4, 1, 3]], flipped[[4, 1, 3]]]))
    np.testing.assert_array_equal(np.concatenate([y1, y2]), labels[[4, 1, 3, 4, 1, 3]])
    shuffled = features.batches([values, flipped], labels, rows=[4, 1, 3], batch_size=2, shuffle=True, seed=0)
    seen = np.concatenate([shuffled[i][0] for i in range(len(shuffled))])
    assert sorted(seen[:, 0].tolist()) == sorted([2.0, 6.0, 8.0, -2.0, -6.0, -8.0]), "every row once in every view"
    for index in range(len(shuffled)):
        x, y = shuffled[index]
        np.testing.assert_array_equal(y, labels[(np.abs(x[:, 0]) / 2).astype(int)])  # each label follows its row
    first_epoch = [shuffled[i][0].tolist() for i in range(len(shuffled))]
    shuffled.on_epoch_end()
    assert [shuffled[i][0].tolist() for i in range(len(shuffled))] != first_epoch, "a new order every epoch"
    only_x = features.batches(values, batch_size=8)[0]
    assert isinstance(only_x, np.ndarray) and only_x.shape == (5, 2), "without labels a batch is the inputs alone"


def test_batches_train_a_keras_model_from_a_memory_map(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float16)
    y = (x[:, 0] > 0).astype(int)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mapped = np.load(path, mmap_mode="r")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(features.batches(mapped, y, rows=np.arange(48), batch_size=16, shuffle=True, seed=1),
                        validation_data=features.batches(mapped, y, rows=np.arange(48, 64)), epochs=5, verbose=0)
    assert history.history["val_accuracy"][-1] > 0.8
    assert model.predict(features.batches(mapped, rows=np.arange(48, 64)), verbose=0).shape == (16, 2)


def test_batches_refuse_bad_input_with_what_to_fix():
    values = np.zeros((4, 2), dtype=np.float16)
    with pytest.raises(ValueError, match="same rows and shape"):
        features.batches([values, values[:3]])
    with pytest.raises(ValueError, match="one label per row"):
        features.batches(values, [0, 1])
    with pytest.raises(ValueError, match="positions between 0 and 3"):
        features.batches(values, rows=[4])
    with pytest.raises(ValueError, match="batch_size"):
        features.batches(values, batch_size=0)
    with pytest.raises(ValueError, match="rows first"):
        features.batches(np.zeros(3))


def test_cached_arrays_with_flips_add_the_flipped_images_outputs(tmp_path, tiny_settings):
    """flips=True: each output again for the image flipped left to right, in the same pass."""
    import keras

    path = tmp_path / "half.png"
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:, : SIZE // 2] = (255, 0, 0)  # red on the left, black on the right
    Image.fromarray(pixels).save(path)
    inputs = keras.Input((SIZE, SIZE, 3))
    left_column = keras.layers.Cropping2D(((0, 0), (0, SIZE - 1)))(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(left_column))
    plain, flipped = features.cached_arrays(model, pd.DataFrame({"path": [str(path)]}), tiny_settings, flips=True,
                                            progress=False)
    np.testing.assert_allclose(plain[0], [1, -1, -1], atol=1e-2)  # red, preprocessed to [-1, 1]
    np.testing.assert_allclose(flipped[0], [-1, -1, -1], atol=1e-2)  # the flipped image's left column is black
    (only,) = features.cached_arrays(model, pd.DataFrame({"path": [str(path)]}), tiny_settings, progress=False)
    np.testing.assert_allclose(only[0], [1, -1, -1], atol=1e-2)
