"""What every benchmark shares: sizes, timing, the log-log slope, hardware facts, atomic writes, data.

Timing on a noisy machine: the two sides of a comparison run in the same process,
one after the other inside each repetition (A B, A B, ...), after one untimed
warm-up each (graph tracing, first-touch allocations), and each side is summarised
by the median of its repetitions. A burst of load from another process then slows
both sides of one repetition rather than one whole side.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from helpers import files

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
BACKBONE = "mobilenet"
ALPHA = 0.75
# A fitted log-log slope above this counts as worse than linear (1.0 is linear; the
# margin absorbs timing noise on a shared machine).
SUPERLINEAR_SLOPE = 1.15


@dataclasses.dataclass(frozen=True)
class Size:
    """How big a benchmark run is.

    Attributes:
        name: ``tiny`` (the test suite: seconds) or ``full`` (the committed report).
        images: Training images of the side-by-side comparisons (extraction, epochs).
        validation: Validation images used by both sides of each training epoch.
        repeats: Timed repetitions of the extraction comparison; the kit's training paths
            run ``repeats + 1`` epochs per call and count the median epoch after the first.
        slow_repeats: Timed repetitions of slow paths (anything through the whole backbone).
        scaling: Numbers of images for the scaling curves.
        scaling_repeats: Repetitions per point of the scaling curves.
        submissions: Size of the simulated class autograded (its kinds shared out in proportion).
        profiles: Profiles in which every notebook is timed.
        toy_notebooks: Time two generated toy notebooks and grade a toy assignment
            instead of the course's (keeps the tiny run within seconds).
        grading_jobs: Submissions graded at the same time; None: as the ``autograde``
            command does (``instructor_tools.grading.grader.DEFAULT_JOBS``). The tiny run grades one at a
            time: starting a process pool costs more than its two submissions.
    """

    name: str
    images: int
    validation: int
    repeats: int
    slow_repeats: int
    scaling: tuple[int, ...]
    scaling_repeats: int
    submissions: int
    profiles: tuple[str, ...]
    toy_notebooks: bool
    grading_jobs: int | None = None


SIZES: dict[str, Size] = {
    "tiny": Size("tiny", 16, 8, 1, 1, (8, 16), 1, 2, ("smoke",), True, grading_jobs=1),
    "full": Size("full", 320, 64, 5, 3, (100, 200, 400, 800), 3, 30, ("smoke", "workshop"), False),
}


# --------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Timing:
    """Seconds of wall time and of process CPU time, one entry per repetition."""

    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        """Median wall seconds."""
        return statistics.median(self.wall)

    def full_speed(self, *, parallelism: float = 1.25, least: int = 2) -> "Timing":
        """The repetitions that kept more than one core busy (CPU ÷ wall ≥ ``parallelism``).

        On a shared 2-core VM a repetition now and then runs with one core only (its CPU
        time equals its wall time), at random and for either side alike; with a handful of
        repetitions that alone can move a median by half. The others, when there are at
        least ``least`` of them, measure the work itself; otherwise every repetition is kept.
        """
        kept = [(w, c) for w, c in zip(self.wall, self.cpu) if w > 0 and c / w >= parallelism]
        if len(kept) < least:
            return self
        return Timing([w for w, _ in kept], [c for _, c in kept])

    @property
    def median_cpu(self) -> float:
        """Median CPU seconds (all threads of this process)."""
        return statistics.median(self.cpu)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median,
            "median_cpu_s": self.median_cpu,
            "wall_s": [round(w, 6) for w in self.wall],
            "cpu_s": [round(c, 6) for c in self.cpu],
        }


@dataclasses.dataclass(frozen=True)
class Measured:
    """What a timed function returns when it measures a part of its own work (one warm epoch)."""

    wall: float
    cpu: float


def time_once(run: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds of one call, or what the call measured itself (a :class:`Measured`)."""
    began, began_cpu = time.perf_counter(), time.process_time()
    result = run()
    if isinstance(result, Measured):
        return result.wall, result.cpu
    return time.perf_counter() - began, time.process_time() - began_cpu


def alternate(runs: Mapping[str, Callable[[], Any]], repeats: int, *, warmup: bool = True) -> dict[str, Timing]:
    """Time several ways of doing the same work, alternating them within each repetition.

    Args:
        runs: name -> function doing the work once.
        repeats: Timed repetitions of each.
        warmup: Call each once, untimed, first.

    Returns:
        name -> :class:`Timing`.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1.")
    if warmup:
        for run in runs.values():
            run()
    timings = {name: Timing() for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, cpu = time_once(run)
            timings[name].wall.append(wall)
            timings[name].cpu.append(cpu)
    return timings


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when the denominator is not positive (reported, never hidden)."""
    return numerator / denominator if denominator > 0 else float("nan")


def loglog_slope(counts: Sequence[float], seconds: Sequence[float]) -> float:
    """Slope of log(seconds) against log(count), by least squares: 1 is linear, 2 quadratic.

    Raises:
        ValueError: Fewer than two points, or a count or time that is not positive.
    """
    if len(counts) != len(seconds) or len(counts) < 2:
        raise ValueError("need at least two (count, seconds) points of equal length.")
    if min(counts) <= 0 or min(seconds) <= 0:
        raise ValueError("counts and seconds must be positive for a log-log fit.")
    xs = [math.log(c) for c in counts]
    ys = [math.log(s) for s in seconds]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        raise ValueError("the counts must not all be equal.")
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread


# --------------------------------------------------------------------------- machine


def load_average() -> float | None:
    """The 1-minute load average (None where the OS does not tell)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def hardware() -> dict[str, Any]:
    """The machine and software the numbers come from."""
    import importlib.metadata

    def version(name: str) -> str | None:
        for distribution in (name, f"{name}-cpu"):
            try:
                return importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                continue
        return None

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "keras": version("keras"),
        "nbgrader": version("nbgrader"),
        "load_average_at_start": load_average(),
    }


def machine(hardware: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies the machine in :func:`hardware`'s facts: CPU, cores, RAM."""
    return {key: hardware.get(key) for key in ("cpu", "cores", "ram_gb")}


def now() -> str:
    """The current local time, ISO 8601, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- files


atomic_write = files.atomic_write  # the kit's one atomic-write helper, re-exported for the benchmark modules


# --------------------------------------------------------------------------- the kit's settings and data


class Skip(Exception):
    """A benchmark cannot run here; the message says why (it goes into the report)."""


@dataclasses.dataclass(frozen=True)
class Context:
    """Where a benchmark run reads its inputs and writes scratch files.

    Attributes:
        size: The run's :class:`Size`.
        shared: Folder with ``keras_home/models`` and ``datasets`` (the course data), or None.
        scratch: A throw-away folder for caches, copies and executed notebooks.
    """

    size: Size
    shared: Path | None
    scratch: Path

    @property
    def models(self) -> Path | None:
        folder = self.shared / "keras_home" / "models" if self.shared else None
        return folder if folder and folder.is_dir() else None

    @property
    def datasets(self) -> Path | None:
        folder = self.shared / "datasets" if self.shared else None
        return folder if folder and folder.is_dir() else None

    def kernel_environment(self, profile: str, cache_dir: Path) -> dict[str, str | None]:
        """The environment a notebook kernel gets: MobileNet a0.75, the course data, a fresh cache."""
        env: dict[str, str | None] = {
            "KIT_PROFILE": profile,
            "KIT_BACKBONE": BACKBONE,
            "KIT_ALPHA": str(ALPHA),
            "KIT_CACHE_DIR": str(cache_dir),
            "KERAS_HOME": None,  # the kit points Keras at its own cache
        }
        if self.models:
            env["KIT_WEIGHTS_MIRROR"] = str(self.models)
        if self.datasets:
            env["KIT_DATA_DIR"] = str(self.datasets)
        return env

    def settings(self, profile: str = "full", **overrides: Any) -> Any:
        """Kit settings for in-process benchmarks: MobileNet a0.75, a scratch cache, the course data.

        The environment's ``KIT_*`` variables are ignored so that a developer's own
        settings never change what is measured.
        """
        from helpers import backbones, weights
        from helpers.settings import load_settings

        values: dict[str, Any] = {
            "profile": profile,
            "backbone": BACKBONE,
            "alpha": ALPHA,
            "cache_dir": str(self.scratch / "cache"),
        }
        if self.models:
            values["weights_mirror"] = str(self.models)
        if self.datasets:
            values["data_dir"] = str(self.datasets)
        settings = load_settings(values | overrides, environ={})
        weights.configure_keras_home(settings)
        weights.seed_cache(settings, known_md5=backbones.known_md5s())
        return settings


def weights_available(settings: Any) -> bool:
    """Whether the backbone's ImageNet weights (without top) are in the kit's cache."""
    from helpers import backbones, weights

    name = backbones.weight_file_name(settings, include_top=False)
    return weights.check_weights(settings, name, known_md5=backbones.known_md5s()).status == "present"


def simpsons_images(context: Context, settings: Any, count: int, seed: int = 0) -> Any:
    """``count`` Simpsons images (path, label), stratified by character, in a fixed random order.

    Raises:
        Skip: The Simpsons images are not available, or there are fewer than ``count``.
    """
    from helpers import datasets

    try:
        frame = datasets.load_dataset("simpsons", settings, download_ok=False)
    except (datasets.DatasetMissingError, FileNotFoundError) as error:
        raise Skip(f"the Simpsons images are not available ({error}); put the course data in ../shared/data") from None
    if len(frame) < count:
        raise Skip(f"{count} images needed, only {len(frame)} Simpsons images found in {frame.attrs.get('root')}.")
    # Round-robin over characters so every prefix of the order is close to stratified.
    shuffled = frame.sample(frac=1.0, random_state=seed)
    shuffled["_rank"] = shuffled.groupby("label").cumcount()
    ordered = shuffled.sort_values(["_rank", "label"], kind="stable").drop(columns="_rank")
    return ordered.head(count).reset_index(drop=True)
