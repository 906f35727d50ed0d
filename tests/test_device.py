"""Device setup: what TensorFlow reports after the kit configures it, quietly, before its devices start.

On this machine's CPU the checks read TensorFlow itself, in a fresh process (threads,
visible devices, the mixed-precision policy, the strategy, and the refusal once its devices
are initialised). GPUs do not exist here: for them a stand-in for ``tf.config`` keeps the
per-device state the way TensorFlow does (visible devices, memory growth, logical device
limits, no change after initialisation) and the tests read that state back through
TensorFlow's own getters, with the report and summary a student sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import backbones, device
from helpers.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def _run_python(code: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"}}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env | extra_env, cwd=ROOT, timeout=180
    )


# --------------------------------------------------------------------------- real TensorFlow, on the CPU

_REAL_SETUP = """
import json
from helpers import device
from helpers.settings import load_settings

tf = device.import_tensorflow()
import keras

report = device.setup(load_settings({"gpus": "all", "cpu_threads": 2, "mixed_precision": True}, environ={}))
seen = {
    "threads": tf.config.threading.get_intra_op_parallelism_threads(),
    "visible_gpus": [d.name for d in tf.config.get_visible_devices("GPU")],
    "policy": keras.mixed_precision.global_policy().name,
    "default_strategy": device.strategy() is tf.distribute.get_strategy(),
    "report_gpus": report.gpus, "mixed": report.mixed_precision, "notes": report.notes,
    "summary": report.summary(),
}
tf.reduce_sum(tf.ones([4]))  # the first operation initialises TensorFlow's devices
late = device.setup(load_settings({"gpus": "all", "cpu_threads": 1}, environ={}))
seen["late_notes"] = late.notes
seen["threads_after"] = tf.config.threading.get_intra_op_parallelism_threads()
print(json.dumps(seen))
"""


def test_setup_configures_tensorflow_on_the_cpu_and_says_when_it_is_too_late():
    result = _run_python(_REAL_SETUP, CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["threads"] == 2, "cpu_threads reaches TensorFlow's intra-op thread pool"
    assert seen["visible_gpus"] == [] and seen["report_gpus"] == []
    assert "CPU only" in seen["summary"] and "GPU memory" not in seen["summary"]
    assert seen["policy"] == "float32" and not seen["mixed"], "mixed precision stays off without a GPU"
    assert any("mixed precision" in note for note in seen["notes"]), "and the student is told why"
    assert seen["default_strategy"], "one device: TensorFlow's default strategy"
    assert seen["threads_after"] == 2, "once TensorFlow runs, its settings cannot change"
    assert any("restart the kernel" in note for note in seen["late_notes"]), (
        "a setup after TensorFlow started says so and how to fix it"
    )
    assert "Traceback" not in result.stderr, result.stderr


# --------------------------------------------------------------------------- GPUs, through a stand-in


class FakeGPU:
    def __init__(self, index: int):
        self.name = f"/physical_device:GPU:{index}"
        self.device_type = "GPU"

    def __repr__(self):
        return self.name


class FakeDeviceConfig:
    """``tf.config``'s per-device state on a machine with ``count`` GPUs, with TensorFlow's rules:
    nothing changes once devices are initialised (RuntimeError), memory growth and a logical
    device limit exclude each other on one card, unknown devices are refused (ValueError)."""

    def __init__(self, count: int):
        self.gpus = [FakeGPU(i) for i in range(count)]
        self.visible = list(self.gpus)
        self.growth: dict[str, bool] = {}
        self.logical: dict[str, list] = {}
        self.threads = 0
        self.initialized = False

    def _changeable(self, gpu: FakeGPU | None = None) -> None:
        if self.initialized:
            raise RuntimeError("Physical devices cannot be modified after being initialized")
        if gpu is not None and gpu not in self.gpus:
            raise ValueError(f"Unrecognized device: {gpu}")

    def list_physical_devices(self, kind=None):
        return list(self.gpus) if kind == "GPU" else []

    def set_visible_devices(self, devices, kind=None):
        if self.initialized:
            raise RuntimeError("Visible devices cannot be modified after being initialized")
        self.visible = list(devices)

    def get_visible_devices(self, kind=None):
        return list(self.visible)

    def set_memory_growth(self, gpu, flag):
        self._changeable(gpu)
        if gpu.name in self.logical:
            raise ValueError("Cannot set memory growth on device when virtual devices configured")
        self.growth[gpu.name] = bool(flag)

    def get_memory_growth(self, gpu):
        return self.growth.get(gpu.name, False)

    def set_logical_device_configuration(self, gpu, configs):
        self._changeable(gpu)
        if self.growth.get(gpu.name):
            raise ValueError("Cannot set virtual devices on a device with memory growth")
        self.logical[gpu.name] = list(configs)

    def get_logical_device_configuration(self, gpu):
        return self.logical.get(gpu.name)

    def set_intra_op_parallelism_threads(self, n):
        self._changeable()
        self.threads = n

    def get_intra_op_parallelism_threads(self):
        return self.threads


class FakeMirroredStrategy:
    """What a MirroredStrategy would be built over: the GPUs visible when it is created."""

    def __init__(self, fake: FakeDeviceConfig):
        self.devices = [gpu.name for gpu in fake.visible]


@pytest.fixture
def gpus(monkeypatch):
    """A machine with two GPUs as far as ``tf.config`` can tell; the real Keras policy and strategy checks."""
    tf = device.import_tensorflow()
    import keras

    fake = FakeDeviceConfig(2)
    for name in ("list_physical_devices", "set_visible_devices", "get_visible_devices",
                 "set_logical_device_configuration", "get_logical_device_configuration"):
        monkeypatch.setattr(tf.config, name, getattr(fake, name))
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", fake.set_memory_growth)
    monkeypatch.setattr(tf.config.experimental, "get_memory_growth", fake.get_memory_growth)
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads", fake.set_intra_op_parallelism_threads)
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", fake.get_intra_op_parallelism_threads)
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", lambda: FakeMirroredStrategy(fake))
    yield fake
    keras.mixed_precision.set_global_policy("float32")
    monkeypatch.undo()
    device.setup(load_settings({"gpus": "none"}, environ={}))  # leave a sane default strategy behind


def _setup(**overrides):
    return device.setup(load_settings(overrides, environ={}))


def test_memory_growth_on_every_gpu_and_a_strategy_over_both(gpus):
    tf = device.import_tensorflow()
    report = _setup(gpus="all", gpu_memory="growth")
    assert tf.config.get_visible_devices("GPU") == gpus.gpus
    assert [tf.config.experimental.get_memory_growth(g) for g in gpus.gpus] == [True, True]
    assert [tf.config.get_logical_device_configuration(g) for g in gpus.gpus] == [None, None]
    strategy = device.strategy()
    assert isinstance(strategy, FakeMirroredStrategy) and strategy.devices == [g.name for g in gpus.gpus]
    assert report.strategy == "MirroredStrategy over 2 GPUs"
    assert "2 GPU(s): /physical_device:GPU:0, /physical_device:GPU:1" in report.summary()
    assert "GPU memory: growth" in report.summary()


def test_one_chosen_gpu_with_a_limit_in_megabytes(gpus):
    tf = device.import_tensorflow()
    report = _setup(gpus="1", gpu_memory="2048")
    assert tf.config.get_visible_devices("GPU") == [gpus.gpus[1]], "only the chosen card is visible"
    limits = tf.config.get_logical_device_configuration(gpus.gpus[1])
    assert [c.memory_limit for c in limits] == [2048]
    assert not any(tf.config.experimental.get_memory_growth(g) for g in gpus.gpus)
    assert not isinstance(device.strategy(), FakeMirroredStrategy), "one GPU: the default strategy"
    assert report.gpus == [gpus.gpus[1].name] and report.all_gpus == [g.name for g in gpus.gpus]
    assert "GPU memory: limit=2048 MB" in report.summary() and report.strategy == "default (one device)"


def test_a_fraction_of_the_card_reads_its_size_from_nvidia_smi(gpus, tmp_path, monkeypatch):
    tf = device.import_tensorflow()
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho 81559\n")  # what nvidia-smi prints for an 80 GB card, in MiB
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    report = _setup(gpus="0", gpu_memory="0.25")
    assert [c.memory_limit for c in tf.config.get_logical_device_configuration(gpus.gpus[0])] == [20389]
    assert report.memory_mode == "limit=20389 MB"


def test_a_fraction_reads_the_size_of_the_chosen_card_itself(gpus, tmp_path, monkeypatch):
    """GPU 1 alone, behind CUDA_VISIBLE_DEVICES=2,3: the size asked of nvidia-smi is card 3's, not card 0's."""
    tf = device.import_tensorflow()
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir()
    # A machine whose cards differ: id 3 has 40 GB, any other 80 GB (sizes in MiB, as nvidia-smi prints them).
    tool.write_text('#!/bin/sh\ncase "$*" in *--id=3*) echo 40960 ;; *) echo 81920 ;; esac\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    report = _setup(gpus="1", gpu_memory="0.5")
    assert [c.memory_limit for c in tf.config.get_logical_device_configuration(gpus.gpus[1])] == [20480]
    assert report.memory_mode == "limit=20480 MB"


def test_a_fraction_without_nvidia_smi_says_to_give_megabytes(gpus, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    with pytest.raises(ValueError, match="KIT_GPU_MEMORY=4096"):
        _setup(gpus="0", gpu_memory="0.5")


def test_mixed_precision_only_with_a_gpu(gpus):
    import keras

    report = _setup(gpus="0", mixed_precision=True)
    assert report.mixed_precision and keras.mixed_precision.global_policy().name == "mixed_float16"
    assert "mixed precision: on" in report.summary()
    report = _setup(gpus="none", mixed_precision=True)
    assert not report.mixed_precision and keras.mixed_precision.global_policy().name == "float32"
    assert any("mixed precision" in note for note in report.notes)


def test_bad_gpu_index_is_a_clear_error(gpus):
    with pytest.raises(ValueError, match="2 GPU"):
        _setup(gpus="5")
    with pytest.raises(ValueError, match="indices"):
        _setup(gpus="first")


def test_too_late_configuration_changes_nothing_and_says_so(gpus):
    tf = device.import_tensorflow()
    _setup(gpus="0", gpu_memory="growth")
    gpus.initialized = True  # a model was built before the setup cell ran again
    report = _setup(gpus="1", gpu_memory="1024")
    assert tf.config.get_visible_devices("GPU") == [gpus.gpus[0]], "the first setup's choice still holds"
    assert tf.config.get_logical_device_configuration(gpus.gpus[1]) is None
    assert any("restart the kernel" in note for note in report.notes), report.notes


# --------------------------------------------------------------------------- the summary and a quiet import


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
