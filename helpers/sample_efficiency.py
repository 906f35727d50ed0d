"""The sample-efficiency experiment: test accuracy against the number of labelled images per class.

For every approach whose inputs are computed once (deep features, raw pixels, images in
memory), :func:`sample_efficiency` draws ``n`` training images per class with several
seeds, refits only the last model on them and scores the fixed test split;
:func:`summarize_sample_efficiency` gives the means and error bars that
:func:`helpers.plots.sample_efficiency` draws. :func:`sample_efficiency_learners` makes
the learners of notebook 04 (section 7) from the shared split of :mod:`helpers.approaches`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers import classic, compiling, evaluation
from helpers.approaches import RAW_PIXEL_MODELS, SharedSplit
from helpers import progress as progress_bars
from helpers.scratch_models import small_cnn as kit_small_cnn
from helpers.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    import keras


def subsample_per_class(labels: Sequence[int], per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` random examples of every class (sorted), reproducible by seed.

    Taught in notebook 04, section 7 (how many labelled images each approach needs).

    Raises:
        ValueError: ``per_class`` is below 1 or a class has fewer examples.
    """
    labels = np.asarray(labels)
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, not {per_class}.")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"class {label!r} has {len(members)} training examples, fewer than {per_class}; "
                "use smaller sample sizes or a bigger profile."
            )
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclasses.dataclass
class Learner:
    """One approach in the sample-efficiency experiment.

    Taught in notebook 04, section 7 (how many labelled images each approach needs).

    Attributes:
        train_inputs: Inputs of the whole training pool (features, pixels or images), one row per example.
        test_inputs: Inputs of the test images.
        fit_predict: ``(x_train, y_train, x_test, seed) -> predicted class ids of x_test``;
            trains a fresh model every call.
    """

    train_inputs: np.ndarray
    test_inputs: np.ndarray
    fit_predict: Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def sklearn_learner(make_estimator: Callable[[], Any]) -> Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]:
    """A ``fit_predict`` for :class:`Learner` that fits a fresh scikit-learn estimator each call.

    Taught in notebook 04, section 7 (how many labelled images each approach needs).

    Args:
        make_estimator: Returns an unfitted estimator (for example a Pipeline with scaling).
    """

    def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
        estimator = make_estimator()
        if "random_state" in estimator.get_params():
            estimator.set_params(random_state=seed)
        return np.asarray(estimator.fit(x_train, y_train).predict(x_test))

    return fit_predict


def keras_learner(
    build: Callable[[], "keras.Model"],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
) -> Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]:
    """A ``fit_predict`` for :class:`Learner` that trains the model from fresh random weights each call.

    Taught in notebook 04, section 7 (how many labelled images each approach needs).

    Each call draws the seed's own initial weights (``build()`` after seeding) and trains
    them from a reset optimizer. The first call's compiled model is kept and its weights
    and optimizer state are overwritten in later calls: Keras then reuses its traced
    training function instead of tracing a new model for every point of the curve
    (seconds each on a CPU). There is no validation set to stop on in this experiment
    (its point is how little labelled data there is), so training runs exactly ``epochs``.
    """
    state: dict[str, Any] = {}

    def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int) -> np.ndarray:
        import keras

        keras.utils.set_random_seed(seed)
        fresh = build()
        if "model" not in state:
            model = compiling.compile_model(fresh, learning_rate)
            model.optimizer.build(model.trainable_variables)
            state["model"] = model
            state["optimizer"] = [np.array(v.numpy(), copy=True) for v in model.optimizer.variables]
        else:
            model = state["model"]
            # Every variable, dropout seed states included, then the optimizer as it was before any step.
            for target, source in zip(model.variables, fresh.variables):
                target.assign(source)
            for variable, value in zip(model.optimizer.variables, state["optimizer"]):
                variable.assign(value)
        model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
        return np.argmax(model.predict(x_test, batch_size=batch_size, verbose=0), axis=1)

    return fit_predict


def usable_sample_sizes(labels: Sequence[int], sizes: Sequence[int]) -> list[int]:
    """The sizes (images per class) that every class of the training pool can supply.

    Taught in notebook 04, section 7 (how many labelled images each approach needs).
    """
    labels = np.asarray(labels)
    if not len(labels):
        return []
    smallest = int(np.min(np.unique(labels, return_counts=True)[1]))
    return sorted({int(s) for s in sizes if 1 <= int(s) <= smallest})


def sample_efficiency(
    learners: Mapping[str, Learner],
    y_train: Sequence[int],
    y_test: Sequence[int],
    sizes: Sequence[int],
    seeds: int | Sequence[int],
    *,
    base_seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Test accuracy against training images per class, for every learner and seed.

    Taught in notebook 04, section 7 (how many labelled images each approach needs).

    For each size ``n`` and seed, the same ``n`` training images per class (drawn from
    the training pool with that seed) are given to every learner, which trains a fresh
    model and predicts the fixed test set. Sizes larger than the smallest class are
    skipped (see :func:`usable_sample_sizes`).

    Args:
        learners: Approach name -> :class:`Learner`.
        y_train: Class ids of the training pool (rows of every learner's ``train_inputs``).
        y_test: Class ids of the test images.
        sizes: Training images per class to try.
        seeds: Number of seeds (``base_seed``, ``base_seed + 1``, ...) or explicit seeds.
        base_seed: First seed when ``seeds`` is a number.
        progress: Show a tqdm progress bar.

    Returns:
        Long DataFrame: ``approach, per_class, seed, accuracy, balanced_accuracy, train_seconds``.

    Raises:
        ValueError: No learners, no seeds, no usable size, or inputs whose rows do not match the labels.
    """
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    if not learners:
        raise ValueError("no learners given; pass a dict of approach name -> Learner.")
    seed_list = list(range(base_seed, base_seed + int(seeds))) if np.isscalar(seeds) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must be at least 1 (or a non-empty list of seeds).")
    for name, learner in learners.items():
        if len(learner.train_inputs) != len(y_train) or len(learner.test_inputs) != len(y_test):
            raise ValueError(
                f"learner {name!r} has {len(learner.train_inputs)} training and {len(learner.test_inputs)} test rows, "
                f"but there are {len(y_train)} training and {len(y_test)} test labels."
            )
    usable = usable_sample_sizes(y_train, sizes)
    if not usable:
        raise ValueError(
            f"none of the sizes {list(sizes)} fits the training pool (smallest class: "
            f"{int(np.min(np.unique(y_train, return_counts=True)[1])) if len(y_train) else 0} images)."
        )
    runs = [(size, seed, name) for size in usable for seed in seed_list for name in learners]
    if progress:
        runs = progress_bars.bar(runs, desc="sample efficiency", unit="fit")
    rows = []
    for size, seed, name in runs:
        learner = learners[name]
        chosen = subsample_per_class(y_train, size, seed)
        began = time.perf_counter()
        predicted = np.asarray(
            learner.fit_predict(learner.train_inputs[chosen], y_train[chosen], learner.test_inputs, seed)
        ).ravel()
        seconds = time.perf_counter() - began
        rows.append(
            {
                "approach": name,
                "per_class": size,
                "seed": seed,
                "accuracy": float(np.mean(predicted == y_test)),
                "balanced_accuracy": evaluation.balanced_accuracy(y_test, predicted),
                "train_seconds": seconds,
            }
        )
    return pd.DataFrame(rows, columns=["approach", "per_class", "seed", "accuracy", "balanced_accuracy", "train_seconds"])


def summarize_sample_efficiency(runs: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Mean and spread over seeds of each approach at each size: the points and error bars.

    Taught in notebook 04, section 7 (how many labelled images each approach needs).

    Args:
        runs: The output of :func:`sample_efficiency`.
        metric: Column to summarise (``accuracy`` or ``balanced_accuracy``).

    Returns:
        DataFrame ``approach, per_class, mean, std, sem, runs``: ``std`` is the sample
        standard deviation over seeds (ddof=1; 0 with a single seed), ``sem`` the
        standard error of the mean (``std / sqrt(runs)``).
    """
    missing = {"approach", "per_class", metric} - set(runs.columns)
    if missing:
        raise ValueError(f"runs lacks columns {sorted(missing)}; pass the output of sample_efficiency().")
    grouped = runs.groupby(["approach", "per_class"], sort=False)[metric]
    summary = grouped.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, runs="count")
    summary = summary.reset_index()
    summary["sem"] = summary["std"] / np.sqrt(summary["runs"])
    order = {name: i for i, name in enumerate(dict.fromkeys(runs["approach"]))}
    summary = summary.sort_values(["approach", "per_class"], key=lambda c: c.map(order) if c.name == "approach" else c)
    return summary[["approach", "per_class", "mean", "std", "sem", "runs"]].reset_index(drop=True)


def sample_efficiency_learners(
    split: SharedSplit,
    settings: Settings,
    *,
    features: np.ndarray | None = None,
    pixels: np.ndarray | None = None,
    images: np.ndarray | None = None,
    small_cnn: Callable[[int, int], "keras.Model"] | None = None,
) -> dict[str, Learner]:
    """The learners of the sample-efficiency experiment, from arrays computed once for ``split.frame``.

    Taught in notebook 04, section 7 (how many labelled images each approach needs).

    Every learner refits from scratch on each subsample, so only approaches whose
    inputs are cached are included: the deep features (logistic regression), the raw
    pixels (logistic regression and the second model of :data:`RAW_PIXEL_MODELS`) and
    the small CNN on in-memory images. The randomly initialised backbone and the
    fine-tuning phase are left out: each point would retrain millions of weights.

    Args:
        split: The shared split; the training split is the pool subsamples are drawn from.
        settings: Course settings (epochs, batch size, learning rate).
        features: Deep features of every image of ``split.frame`` (skipped when None).
        pixels: Raw-pixel features of every image (skipped when None).
        images: uint8 images of every image, ``(n, s, s, 3)``, for the small CNN (skipped when None).
        small_cnn: ``(image_size, num_classes) -> model`` (notebook 04 passes the student's
            ``build_small_cnn``); the kit's :func:`helpers.scratch_models.small_cnn` by default.

    Returns:
        Approach name -> :class:`Learner`, named as in the comparison table.
    """
    train, test = split.rows("train"), split.rows("test")
    learners: dict[str, Learner] = {}

    def sklearn(name: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]:
        return sklearn_learner(lambda: classic.make_pipeline(name, seed=settings.seed))

    def title(name: str) -> str:
        return classic.MODEL_TITLES.get(name, name).lower()

    for label, array in (("features", features), ("pixels", pixels), ("images", images)):
        if array is not None and len(array) != len(split.frame):
            raise ValueError(f"{label} has {len(array)} rows for {len(split.frame)} images; compute it on split.frame.")
    if features is not None:
        flat = np.asarray(features).reshape(len(features), -1)
        learners["deep features + logistic regression"] = Learner(flat[train], flat[test], sklearn("logistic_regression"))
    if pixels is not None:
        for name in RAW_PIXEL_MODELS:
            learners[f"raw pixels + {title(name)}"] = Learner(pixels[train], pixels[test], sklearn(name))
    if images is not None:
        size, classes = int(images.shape[1]), len(split.class_names)
        build = small_cnn or (lambda side, count: kit_small_cnn(settings, count, image_size=side))
        learners["small CNN from scratch"] = Learner(
            images[train], images[test],
            keras_learner(
                lambda: build(size, classes), epochs=settings.scale.scratch_epochs,
                batch_size=settings.batch_size, learning_rate=settings.learning_rate,
            ),
        )
    if not learners:
        raise ValueError("give at least one of features, pixels or images.")
    return learners

