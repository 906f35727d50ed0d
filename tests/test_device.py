"""Device setup calls TensorFlow's configuration for real (intercepted here), quietly, before GPUs init."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import backbones, device
from helpers.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


class FakeGPU:
    def __init__(self, index: int):
        self.name = f"/physical_device:GPU:{index}"
        self.device_type = "GPU"

    def __repr__(self):
        return self.name


@pytest.fixture
def tf_calls(monkeypatch):
    """Intercept every tf.config call device.setup makes; pretend the machine has two GPUs."""
    tf = device.import_tensorflow()
    import keras

    calls: list[tuple] = []
    gpus = [FakeGPU(0), FakeGPU(1)]
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind=None: calls.append(("visible", list(devices), kind)))
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", lambda gpu, flag: calls.append(("growth", gpu, flag)))
    monkeypatch.setattr(
        tf.config, "set_logical_device_configuration",
        lambda gpu, configs: calls.append(("limit", gpu, [c.memory_limit for c in configs])),
    )
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads", lambda n: calls.append(("threads", n)))

    class FakeMirrored:
        def __init__(self):
            calls.append(("mirrored",))

    monkeypatch.setattr(tf.distribute, "MirroredStrategy", FakeMirrored)
    yield calls, gpus
    keras.mixed_precision.set_global_policy("float32")
    monkeypatch.undo()
    device.setup(load_settings({"gpus": "none"}, environ={}))  # leave a sane default strategy behind


def _setup(**overrides):
    return device.setup(load_settings(overrides, environ={}))


def test_memory_growth_is_applied_to_every_chosen_gpu(tf_calls):
    calls, gpus = tf_calls
    report = _setup(gpus="all", gpu_memory="growth")
    assert ("visible", gpus, "GPU") in calls
    assert [c for c in calls if c[0] == "growth"] == [("growth", gpus[0], True), ("growth", gpus[1], True)]
    assert ("mirrored",) in calls and report.strategy == "MirroredStrategy over 2 GPUs"
    assert report.gpus == [g.name for g in gpus]


def test_gpu_selection_and_a_limit_in_megabytes(tf_calls):
    calls, gpus = tf_calls
    report = _setup(gpus="1", gpu_memory="2048")
    assert ("visible", [gpus[1]], "GPU") in calls
    assert ("limit", gpus[1], [2048]) in calls
    assert not [c for c in calls if c[0] == "growth"]
    assert ("mirrored",) not in calls and report.strategy == "default (one device)"
    assert report.memory_mode == "limit=2048 MB"


def test_fraction_of_the_card_uses_its_total_memory(tf_calls, monkeypatch):
    calls, gpus = tf_calls
    monkeypatch.setattr(device, "_total_gpu_memory_mb", lambda index: 80_000.0)
    _setup(gpus="0", gpu_memory="0.25")
    assert ("limit", gpus[0], [20_000]) in calls


def test_mixed_precision_only_with_a_gpu(tf_calls):
    import keras

    report = _setup(gpus="0", mixed_precision=True)
    assert report.mixed_precision and keras.mixed_precision.global_policy().name == "mixed_float16"
    report = _setup(gpus="none", mixed_precision=True)
    assert not report.mixed_precision and keras.mixed_precision.global_policy().name == "float32"
    assert any("mixed precision" in note for note in report.notes)


def test_bad_gpu_index_is_a_clear_error(tf_calls):
    with pytest.raises(ValueError, match="2 GPU"):
        _setup(gpus="5")
    with pytest.raises(ValueError, match="indices"):
        _setup(gpus="first")


def test_cpu_threads_and_too_late_configuration(tf_calls, monkeypatch):
    calls, _ = tf_calls
    _setup(gpus="none", cpu_threads=2)
    assert ("threads", 2) in calls
    tf = device.import_tensorflow()

    def too_late(*args, **kwargs):
        raise RuntimeError("Visible devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "set_visible_devices", too_late)
    report = _setup(gpus="all")
    assert any("restart the kernel" in note for note in report.notes)


def test_cpu_summary_gives_advice_with_expected_times(tmp_path):
    from helpers import session

    kit = session.start(verbose=False, gpus="none", backbone="resnet50", cache_dir=str(tmp_path))
    text = kit.device.summary()
    assert "CPU only" in text and "per 1000 images" in text
    assert "KIT_BACKBONE=mobilenet" in text
    assert backbones.expected_seconds_per_1000("resnet50", 2) > 3 * backbones.expected_seconds_per_1000("mobilenet", 2)
    assert not any("per 1000 images" in tip for tip in device.setup(load_settings({"gpus": "none"}, environ={})).advice), (
        "the device module knows no backbone: speed advice comes from helpers.backbones via the session"
    )


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k not in {"TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"}}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def test_tensorflow_import_is_quiet_without_disabling_onednn():
    result = _run_python(
        "import os; from helpers import device; device.import_tensorflow(); "
        "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "unset", "TF_ENABLE_ONEDNN_OPTS=0 halves CPU speed: never set it"
    assert "oneDNN" not in result.stderr and "cpu_feature_guard" not in result.stderr, result.stderr


def test_importing_helpers_does_no_work():
    code = (
        "import sys, importlib, pkgutil, helpers\n"
        "names = [m.name for m in pkgutil.iter_modules(helpers.__path__) if m.name != '__main__']\n"
        "for name in names: importlib.import_module('helpers.' + name)\n"
        "print(len(names), sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.strip().split(" ", 1)
    assert int(count) >= 10
    assert loaded == "[]", "importing any helpers module must not import TensorFlow or Keras"
