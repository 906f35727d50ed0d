"""The one call every notebook's setup cell makes: settings, weights cache, devices."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from helpers import backbones, device
from helpers import weights as weights_cache
from helpers.settings import Settings, load_settings


@dataclasses.dataclass
class Session:
    """What a notebook needs after setup.

    The ``kit`` of every notebook's setup cell; notebook 00, section 2 prints its parts.

    Attributes:
        settings: The resolved course settings.
        device: The device report (GPUs, strategy, advice).
        weights: Status of the backbone's weight files in the kit's cache.
        seeded: What seeding from the weights mirror did.
        seconds: How long setup took.
    """

    settings: Settings
    device: Any
    weights: list[weights_cache.SeedResult]
    seeded: list[weights_cache.SeedResult]
    seconds: float

    @property
    def scale(self):
        """How big this run is: the profile's images, epochs and time limits (``Settings.scale``)."""
        return self.settings.scale

    def summary(self) -> str:
        """Human summary: settings that matter, device, weights cache."""
        s = self.settings
        alpha = f" (alpha {s.alpha})" if s.alpha else ""
        lines = [
            f"Profile: {s.profile}   backbone: {s.backbone}{alpha}   batch: {s.batch_size}   seed: {s.seed}",
            self.device.summary(),
            f"Weights cache: {weights_cache.models_dir(s)}",
        ]
        copied = [r.name for r in self.seeded if r.status == "copied"]
        if copied:
            lines.append(f"  seeded from the mirror: {', '.join(copied)}")
        for result in self.seeded:
            if result.status == "bad-checksum":
                lines.append(f"  WARNING {result.detail}")
        for result in self.weights:
            mark = "ok" if result.status == "present" else result.status.upper()
            lines.append(f"  [{mark}] {result.name}" + ("" if result.status == "present" else f": {result.detail}"))
        lines.append(f"Setup took {self.seconds:.1f} s.")
        return "\n".join(lines)


def start(verbose: bool = True, **overrides: Any) -> Session:
    """Set the kit up for a notebook: settings, the writable Keras cache, devices.

    Used by the setup cell of every notebook, notebook 00 first.

    Order matters: ``KERAS_HOME`` is set before Keras is imported, and GPU memory
    settings are applied before TensorFlow initialises the GPUs.

    Args:
        verbose: Print the summary.
        **overrides: Settings that win over config file and environment (for example
            ``profile="smoke"``).

    Returns:
        The :class:`Session`.
    """
    began = time.perf_counter()
    settings = load_settings(overrides)
    weights_cache.configure_keras_home(settings)
    seeded = weights_cache.seed_cache(settings, known_md5=backbones.known_md5s())
    report = device.setup(settings)
    if not report.gpus:
        report.advice[:0] = backbones.cpu_advice(settings, report.cpus)
    backbone = backbones.get_backbone(settings=settings)
    files = [backbones.weight_file_name(settings, include_top, backbone) for include_top in (True, False)]
    files.append(weights_cache.CLASS_INDEX_FILE)
    status = [weights_cache.check_weights(settings, name, known_md5=backbones.known_md5s()) for name in files]
    session = Session(settings, report, status, seeded, time.perf_counter() - began)
    if verbose:
        print(session.summary())
    return session
