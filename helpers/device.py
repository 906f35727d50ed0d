"""Device setup: quiet TensorFlow import, GPU choice and memory mode, mixed precision,
the ``tf.distribute`` strategy, CPU threads, and a human summary with advice.

Everything that must happen before TensorFlow initialises its devices happens in
:func:`setup`, which the notebooks call (through :func:`helpers.session.start`)
before any model is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Callable, Iterator, Mapping, TypeVar

from helpers.clean_outputs import quiet_tensorflow_retracing
from helpers.settings import Settings, load_settings

# Lines TensorFlow's C++ runtime prints at import that say nothing to a student.
_IMPORT_NOISE = re.compile(
    r"oneDNN custom operations|cpu_feature_guard|All log messages before absl::InitializeLog|"
    r"To enable the following instructions|rebuild TensorFlow with the appropriate compiler flags|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|cuda_blas|cuda_dnn|cuda_fft|computation_placer|"
    r"TF-TRT Warning|Could not find cuda drivers|failed call to cuInit|"
    r"This TensorFlow binary is optimized"
)

_STRATEGY: Any = None
_CONFIGURED: "DeviceReport | None" = None


def quiet_environment() -> None:
    """Set environment variables that quiet TensorFlow without slowing it down.

    ``TF_ENABLE_ONEDNN_OPTS=0`` would also silence the oneDNN notice but halves CPU
    speed, so it is deliberately *not* set; the notice is filtered instead.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Capture file descriptor 2 (C++ logs) and replay it without the known noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().decode("utf-8", "replace").splitlines()
                if line.strip() and not _IMPORT_NOISE.search(line)
            ]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def import_tensorflow() -> Any:
    """Import TensorFlow with its start-up noise filtered out (errors are still shown)."""
    quiet_tensorflow_retracing()  # the kit builds model after model in one kernel: retracing is expected
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    quiet_environment()
    with _filtered_stderr():
        import keras  # noqa: F401  - keras prints its own notices on first import
        import tensorflow as tf  # noqa: PLC0415 - imported on demand, never at import time
    return tf


@dataclasses.dataclass
class DeviceReport:
    """What :func:`setup` found and did.

    Attributes:
        tensorflow: TensorFlow version.
        keras: Keras version.
        cpus: Logical CPU cores.
        gpus: Names of the GPUs TensorFlow uses.
        all_gpus: Names of every GPU found.
        memory_mode: ``all``, ``growth`` or ``limit=<MB>``.
        mixed_precision: Whether the mixed_float16 policy is on.
        strategy: Class name of the distribution strategy.
        notes: Sentences about what was changed or could not be.
        advice: Advice for this machine.
    """

    tensorflow: str
    keras: str
    cpus: int
    gpus: list[str]
    all_gpus: list[str]
    memory_mode: str
    mixed_precision: bool
    strategy: str
    notes: list[str]
    advice: list[str]

    def summary(self) -> str:
        """A short human summary, printed by the notebooks' setup cell."""
        where = f"{len(self.gpus)} GPU(s): {', '.join(self.gpus)}" if self.gpus else f"CPU only, {self.cpus} cores"
        lines = [
            f"TensorFlow {self.tensorflow} / Keras {self.keras}",
            f"Device: {where}",
        ]
        if self.gpus:
            lines.append(f"GPU memory: {self.memory_mode}; mixed precision: {'on' if self.mixed_precision else 'off'}")
        lines.append(f"Strategy: {self.strategy}")
        lines += [f"Note: {note}" for note in self.notes]
        lines += [f"Advice: {tip}" for tip in self.advice]
        return "\n".join(lines)


def _parse_gpu_selection(text: str, count: int) -> list[int]:
    text = text.strip().lower()
    if text in {"all", ""}:
        return list(range(count))
    if text == "none":
        return []
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"gpus={text!r}: use all, none, or indices such as 0,2.") from None
    bad = [index for index in wanted if not 0 <= index < count]
    if bad:
        raise ValueError(f"gpus={text!r}: this machine has {count} GPU(s) (indices 0..{count - 1}); {bad} do not exist.")
    return wanted


def _nvidia_smi_id(index: int, environ: Mapping[str, str] | None = None) -> str:
    """The card nvidia-smi calls TensorFlow's GPU ``index``: its entry of ``CUDA_VISIBLE_DEVICES``, if set.

    TensorFlow numbers the GPUs it sees from 0; with ``CUDA_VISIBLE_DEVICES=2,3`` its GPU 1
    is the machine's card 3, which nvidia-smi knows by that index (or the UUID given there).

    >>> _nvidia_smi_id(1, {"CUDA_VISIBLE_DEVICES": "2,3"}), _nvidia_smi_id(1, {})
    ('3', '1')
    """
    environ = os.environ if environ is None else environ
    visible = [entry.strip() for entry in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return visible[index] if index < len(visible) else str(index)


def _total_gpu_memory_mb(index: int) -> float:
    """Total memory of TensorFlow's GPU ``index`` in MB, from nvidia-smi (TensorFlow cannot tell before init)."""
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", f"--id={_nvidia_smi_id(index)}"],
            check=True, capture_output=True, text=True, timeout=20,
        ).stdout
        return float(output.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as error:
        raise ValueError(
            "gpu_memory as a fraction needs nvidia-smi to read the card's size; give a limit in MB instead "
            f"(for example KIT_GPU_MEMORY=4096). ({error})"
        ) from None


def _memory_limit_mb(mode: str, index: int) -> int | None:
    if mode in {"all", "growth"}:
        return None
    value = float(mode)
    if value <= 1.0:
        return int(_total_gpu_memory_mb(index) * value)
    return int(value)


def setup(settings: Settings | None = None) -> DeviceReport:
    """Configure TensorFlow's devices from the settings; call once, before building models.

    Chooses the visible GPUs, applies the memory mode (growth, or a hard limit) to each
    *before* TensorFlow initialises them, turns on mixed precision if asked and a GPU
    is present, sets CPU threads, and picks the distribution strategy
    (``MirroredStrategy`` for several GPUs, the default strategy otherwise).

    Args:
        settings: Course settings (``gpus``, ``gpu_memory``, ``mixed_precision``,
            ``cpu_threads``, ``backbone``); loaded when omitted.

    Returns:
        A :class:`DeviceReport`; ``print(report.summary())`` for humans.

    Raises:
        ValueError: A GPU index that does not exist, or an unreadable memory setting.
    """
    global _STRATEGY, _CONFIGURED
    settings = settings or load_settings()
    tf = import_tensorflow()
    import keras

    notes: list[str] = []
    all_gpus = tf.config.list_physical_devices("GPU")
    selected = _parse_gpu_selection(settings.gpus, len(all_gpus))
    chosen = [all_gpus[i] for i in selected]
    memory_mode = settings.gpu_memory
    try:
        if all_gpus:
            tf.config.set_visible_devices(chosen, "GPU")
        for index, gpu in zip(selected, chosen):  # the card's own index, not its place among the chosen
            limit = _memory_limit_mb(settings.gpu_memory, index)
            if settings.gpu_memory == "growth":
                tf.config.experimental.set_memory_growth(gpu, True)
            elif limit is not None:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)]
                )
                memory_mode = f"limit={limit} MB"
        if settings.cpu_threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.cpu_threads)
    except RuntimeError as error:
        # TensorFlow refuses once its devices are initialised (a model was built first).
        notes.append(
            f"device settings not applied ({error}); restart the kernel and run the setup cell first."
        )

    mixed = bool(settings.mixed_precision and chosen)
    if settings.mixed_precision and not chosen:
        notes.append("mixed precision asked for but no GPU is used: it would only slow a CPU down; left off.")
    policy = "mixed_float16" if mixed else "float32"
    if keras.mixed_precision.global_policy().name != policy:
        keras.mixed_precision.set_global_policy(policy)

    _STRATEGY = tf.distribute.MirroredStrategy() if len(chosen) > 1 else tf.distribute.get_strategy()

    advice = []  # the backbone's speed on this CPU is added by helpers.session (backbones.cpu_advice)
    cpus = os.cpu_count() or 1
    if not chosen and settings.profile == "full":
        advice.append("the full profile is sized for a GPU; use KIT_PROFILE=workshop on a laptop.")

    report = DeviceReport(
        tensorflow=tf.__version__,
        keras=keras.__version__,
        cpus=cpus,
        gpus=[gpu.name for gpu in chosen],
        all_gpus=[gpu.name for gpu in all_gpus],
        memory_mode=memory_mode if chosen else "n/a",
        mixed_precision=mixed,
        strategy=(
            f"MirroredStrategy over {len(chosen)} GPUs" if len(chosen) > 1 else "default (one device)"
        ),
        notes=notes,
        advice=advice,
    )
    _CONFIGURED = report
    return report


def strategy() -> Any:
    """The distribution strategy every model of the kit is built and trained under.

    Inside a strategy's ``scope()`` that strategy (so a caller's explicit choice wins:
    the tests use ``MirroredStrategy`` over two CPU devices); otherwise the one chosen
    by :func:`setup` (``MirroredStrategy`` over several GPUs, else the default
    strategy), set up with the default settings on first use.
    """
    tf = import_tensorflow()
    if tf.distribute.has_strategy():
        return tf.distribute.get_strategy()
    if _STRATEGY is None:
        setup()
    return _STRATEGY


Built = TypeVar("Built")


def under_strategy(build: Callable[..., Built]) -> Callable[..., Built]:
    """Decorator: run a model-building function inside :func:`strategy`'s scope.

    A Keras model remembers the strategy it was built under: its variables are
    created on every device of the strategy (one replica per GPU), and ``fit``,
    ``evaluate`` and ``predict`` then split each batch between them. Every helper that
    builds or compiles a model is decorated, so nothing of the kit trains on one GPU
    of several. With one device it costs nothing.
    """

    @functools.wraps(build)
    def built_under_strategy(*args: Any, **kwargs: Any) -> Built:
        with strategy().scope():
            return build(*args, **kwargs)

    return built_under_strategy


def predict_batch(model: Any, batch: Any) -> Any:
    """One batch through ``model``'s compiled predict step, split between the strategy's replicas.

    ``predict_on_batch`` is the fast call for one batch, but under ``MirroredStrategy``
    it hands every replica the whole batch (the outputs come back once per replica);
    ``predict`` splits the batch, so it is used there.
    """
    strategy = getattr(model, "distribute_strategy", None)  # any object with predict_on_batch will do
    if getattr(strategy, "num_replicas_in_sync", 1) > 1:
        return model.predict(batch, batch_size=len(batch), verbose=0)
    return model.predict_on_batch(batch)
