"""The kit's weights cache: seeding from a read-only mirror, md5 checks, clear missing-file errors."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from helpers import backbones, weights
from helpers.settings import load_settings

RESNET_NOTOP = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _settings(tmp_path: Path, mirror: Path | None = None, **extra):
    overrides = {"cache_dir": str(tmp_path / "cache"), **extra}
    if mirror is not None:
        overrides["weights_mirror"] = str(mirror)
    return load_settings(overrides, environ={})


def _read_only_mirror(tmp_path: Path, files: dict[str, bytes]) -> Path:
    mirror = tmp_path / "mirror" / "models"
    mirror.mkdir(parents=True)
    for name, data in files.items():
        path = mirror / name
        path.write_bytes(data)
        path.chmod(0o444)
    mirror.chmod(0o555)
    return mirror


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int, float]]:
    return {p.name: (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime) for p in folder.iterdir()}


def test_seed_copies_and_leaves_the_read_only_mirror_untouched(tmp_path):
    mirror = _read_only_mirror(tmp_path, {"mobilenet_7_5_224_tf.h5": b"weights-a", "other.h5": b"b"})
    before = _snapshot(mirror)
    settings = _settings(tmp_path, mirror.parent)  # a Keras home with models/ works too
    results = weights.seed_cache(settings, known_md5=backbones.known_md5s())
    assert {r.name: r.status for r in results} == {"mobilenet_7_5_224_tf.h5": "copied", "other.h5": "copied"}
    cached = weights.models_dir(settings) / "mobilenet_7_5_224_tf.h5"
    assert cached.read_bytes() == b"weights-a"
    assert os.access(cached, os.W_OK), "copies must be writable so Keras can replace them"
    assert not any(p.name.endswith(".part") for p in cached.parent.iterdir()), "no temporary file left behind"
    # Seeding again finds everything present and copies nothing.
    assert {r.status for r in weights.seed_cache(settings, known_md5=backbones.known_md5s())} == {"present"}
    assert _snapshot(mirror) == before


def test_md5_mismatch_is_reported_and_not_copied(tmp_path):
    mirror = _read_only_mirror(tmp_path, {RESNET_NOTOP: b"not the real resnet"})
    settings = _settings(tmp_path, mirror)
    (result,) = weights.seed_cache(settings, known_md5=backbones.known_md5s())
    assert result.status == "bad-checksum"
    assert "4d473c1dd8becc155b73f8504c6f6626" in result.detail and "Replace" in result.detail
    assert not (weights.models_dir(settings) / RESNET_NOTOP).exists()
    assert (mirror / RESNET_NOTOP).read_bytes() == b"not the real resnet"


def test_correct_md5_is_accepted(tmp_path, monkeypatch):
    data = b"pretend resnet weights"
    monkeypatch.setitem(
        backbones.BACKBONES["resnet50"].known_md5, RESNET_NOTOP, hashlib.md5(data).hexdigest()
    )
    settings = _settings(tmp_path, _read_only_mirror(tmp_path, {RESNET_NOTOP: data}))
    assert [r.status for r in weights.seed_cache(settings, known_md5=backbones.known_md5s())] == ["copied"]
    assert weights.check_weights(settings, RESNET_NOTOP, known_md5=backbones.known_md5s()).status == "present"


def test_missing_mirror_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="KIT_WEIGHTS_MIRROR"):
        weights.seed_cache(_settings(tmp_path, tmp_path / "nowhere"), known_md5={})


def test_no_mirror_means_nothing_to_seed(tmp_path):
    assert weights.seed_cache(_settings(tmp_path), known_md5={}) == []


def test_check_weights_reports_missing_and_corrupt_files(tmp_path):
    settings = _settings(tmp_path)
    weights.configure_keras_home(settings)
    missing = weights.check_weights(settings, RESNET_NOTOP, known_md5=backbones.known_md5s())
    assert missing.status == "missing" and str(weights.models_dir(settings)) in missing.detail
    (weights.models_dir(settings) / RESNET_NOTOP).write_bytes(b"truncated")
    assert weights.check_weights(settings, RESNET_NOTOP, known_md5=backbones.known_md5s()).status == "bad-checksum"


@pytest.fixture
def weights_server(tmp_path, monkeypatch):
    """A throw-away HTTP server on 127.0.0.1 standing in for Keras's weight storage."""
    import functools
    import http.server
    import threading

    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(backbones, "_KERAS_BASE_URL", f"http://127.0.0.1:{server.server_port}/")
    yield root
    server.shutdown()
    server.server_close()


def test_missing_weights_offline_names_file_folder_and_command(tmp_path, weights_server):
    settings = _settings(tmp_path, backbone="resnet50")  # nothing served: the server answers 404
    with pytest.raises(weights.WeightsMissingError) as error:
        backbones.load_base(settings)
    message = str(error.value)
    assert RESNET_NOTOP in message
    assert str(weights.models_dir(settings)) in message
    assert "python -m helpers prepare" in message
    assert not list(weights.models_dir(settings).iterdir()), "nothing half-written in the cache"


@pytest.mark.integration
def test_missing_weights_are_downloaded_into_the_kit_cache(tmp_path, weights_server, shared_data):
    name = "mobilenet_7_5_224_tf_no_top.h5"
    (weights_server / "mobilenet").mkdir()
    shutil.copyfile(shared_data / "keras_home" / "models" / name, weights_server / "mobilenet" / name)
    settings = _settings(tmp_path, backbone="mobilenet", alpha=0.75)
    model = backbones.load_base(settings)
    cached = weights.models_dir(settings) / name
    assert cached.read_bytes() == (weights_server / "mobilenet" / name).read_bytes()
    assert model.count_params() > 1_000_000
    assert sorted(p.name for p in cached.parent.iterdir()) == [name], "no staging file left behind"


def test_downloaded_file_with_wrong_md5_is_not_kept(tmp_path, weights_server, monkeypatch):
    (weights_server / "resnet").mkdir()
    (weights_server / "resnet" / RESNET_NOTOP).write_bytes(b"corrupted on the way")
    settings = _settings(tmp_path, backbone="resnet50")
    with pytest.raises(weights.WeightsMissingError, match="md5"):
        backbones.load_base(settings)
    assert not list(weights.models_dir(settings).iterdir())


def test_configure_keras_home_redirects_an_already_imported_keras(tmp_path):
    import keras  # noqa: F401 - imported on purpose before configuring
    from keras.src.backend import config

    settings = _settings(tmp_path)
    home = weights.configure_keras_home(settings)
    assert os.environ["KERAS_HOME"] == str(home)
    assert config.keras_home() == str(home)
    assert (home / "models").is_dir()


def test_read_only_cache_is_refused(tmp_path, monkeypatch):
    # Root can write anywhere, so simulate the read-only folder through the access check itself.
    monkeypatch.setattr(weights.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="KIT_CACHE_DIR"):
        weights.configure_keras_home(_settings(tmp_path))


@pytest.mark.integration
def test_keras_loads_real_weights_without_touching_the_shared_folder(real_weights, shared_data):
    shared_models = shared_data / "keras_home" / "models"
    before = _snapshot(shared_models)
    model = backbones.load_base(real_weights)
    assert model.count_params() > 1_000_000
    assert _snapshot(shared_models) == before
    assert weights.check_weights(real_weights, weights.CLASS_INDEX_FILE, known_md5=backbones.known_md5s()).status == "present"
