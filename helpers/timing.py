"""How long each notebook takes: a cost model fitted to measured runs, for planning a class.

Notebook 00 (setup check) uses :func:`predict_notebook_seconds` with its timing probe.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


@dataclasses.dataclass(frozen=True)
class NotebookCost:
    """How long one notebook takes, as a function of its data and the backbone's speed.

    ``seconds = fixed_seconds + passes_per_image * images * seconds_per_image``, where
    ``images`` is the number of images of its datasets in the profile and
    ``seconds_per_image`` the backbone's measured speed (the timing probe of notebook 00).

    Attributes:
        datasets: The course datasets it processes.
        fixed_seconds: Start-up and work that does not grow with the data (kernel,
            TensorFlow import, model loading), on the 2-core reference machine.
        passes_per_image: Everything else per image (decoding, the backbone, training,
            scikit-learn, plots), in backbone passes.
    """

    datasets: tuple[str, ...]
    fixed_seconds: float
    passes_per_image: float


# Fitted to each notebook's measured wall time in the smoke and workshop profiles with
# MobileNet a0.75 on the 2-core reference machine, shared with other work at the time
# (notebook 00's timing probe: ~36 images/s); epochs are folded into the per-image
# work, so this is a rough guide for planning a class, not a promise.
NOTEBOOK_COSTS: dict[str, NotebookCost] = {
    "00_setup_check": NotebookCost((), 18.0, 0.0),
    "01_pretrained_scoring": NotebookCost(("photos", "simpsons"), 21.0, 1.5),
    "02_retrain_simpsons": NotebookCost(("simpsons",), 45.0, 3.0),
    "03_features_classic_ml": NotebookCost(("simpsons",), 41.0, 5.6),
    "04_photo_vs_drawing": NotebookCost(("photo_vs_drawing",), 88.0, 7.2),
    # Notebook 05 sizes its own images by the profile (own_per_class, own_unlabelled); with
    # the course's stand-in images that is about 3.3x notebook 04's, each seen 3-4 times
    # (extraction, block inputs, training, the unlabelled map), folded into 04's count.
    "05_your_own_images": NotebookCost(("photo_vs_drawing",), 60.0, 16.0),
}


def predict_notebook_seconds(
    seconds_per_image: float,
    counts: Mapping[str, int],
    costs: Mapping[str, NotebookCost] | None = None,
) -> dict[str, float]:
    """Predicted wall time of each notebook on this machine, from a measured backbone speed.

    Args:
        seconds_per_image: Measured seconds per image through the backbone (batched).
        counts: Images per course dataset in the profile (``photos``, ``simpsons``,
            ``photo_vs_drawing``); a missing dataset counts as 0.
        costs: The cost model; :data:`NOTEBOOK_COSTS` by default.

    Returns:
        assignment -> seconds.
    """
    if seconds_per_image <= 0:
        raise ValueError("seconds_per_image must be positive; time a batch of images first.")
    costs = NOTEBOOK_COSTS if costs is None else costs
    return {
        name: cost.fixed_seconds
        + cost.passes_per_image * sum(int(counts.get(d, 0)) for d in cost.datasets) * seconds_per_image
        for name, cost in costs.items()
    }
