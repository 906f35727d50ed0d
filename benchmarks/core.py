"""The CPU-first claims, measured side by side in one process: the kit's code paths against plain Keras.

1. Feature extraction: :func:`helpers.features.extract_features` from image files
   (decode, resize, preprocess, predict; no cache) against a bare ``model.predict``
   on arrays decoded and preprocessed beforehand, outside the timer.
2. One head-training epoch: notebook 02's phase 1 (``head.fit`` on the cached feature
   maps, section 5) against a plain Keras ``fit`` of the same head through the frozen base.
3. One last-block epoch: notebook 02's phase 2 (the tail's ``fit`` on the cached block
   inputs, section 6) against a plain Keras ``fit`` with the same block unfrozen, plus
   the equivalence check.
6. Scaling: time against the number of images for extraction and each training path.

The kit's side is notebook 02's visible steps, written here as the notebook writes them
(the kit's reference versions of the students' functions: ``freezing.freeze_all_but_last_blocks``,
``compiling.compile_model``, and the three callbacks of exercise 4), on the arrays of its
one pass over the images (``heads.cached_outputs_model`` and ``features.cached_arrays``:
float16, memory-mapped, fed to ``fit`` by ``features.batches``).

The plain Keras baselines are written here, in the keras-io style, and are given
the best case: images already decoded, resized and preprocessed in memory, so
they pay only for the network. Both sides use the same images, batch size,
optimizer and validation set.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.common import (
    SUPERLINEAR_SLOPE,
    Context,
    Measured,
    Skip,
    alternate,
    loglog_slope,
    now,
    ratio,
    simpsons_images,
    weights_available,
)

EXTRACTION_GOAL = 0.9  # kit images/s over bare predict images/s
# Plain epoch seconds over kit epoch seconds. The kit trains with Keras's fit on cached
# features (its own loop did not save 3x of a whole phase: the training-loop section), so
# the head's saving is what caching buys: no pass through the frozen base each epoch.
HEAD_GOAL = 10.0
BLOCK_GOAL = 3.0
EQUIVALENCE_TOLERANCE = 1e-4


# --------------------------------------------------------------------------- inputs


def _synthetic_images(folder: Path, count: int) -> Any:
    """Generated JPEGs in three classes, for the tiny run where the course data is absent."""
    import pandas as pd
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    rows = []
    for index in range(count):
        label = ("red", "green", "blue")[index % 3]
        pixels = generator.integers(0, 90, size=(120, 160, 3), dtype=np.uint8)
        pixels[..., index % 3] += 120
        path = folder / f"{label}_{index:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        rows.append({"path": str(path), "label": label})
    return pd.DataFrame(rows)


def images(context: Context, settings: Any, count: int) -> tuple[Any, str]:
    """``count`` labelled images and where they come from.

    The Simpsons course images when present; in the tiny run, generated images
    otherwise. The full run skips without the course data.
    """
    try:
        return simpsons_images(context, settings, count), "Simpsons course images"
    except Skip:
        if context.size.name != "tiny":
            raise
    return _synthetic_images(context.scratch / "synthetic", count), "generated images (course data absent)"


def weights_choice(settings: Any) -> tuple[str | None, str]:
    """``"imagenet"`` where the real weights are cached, else random weights (tiny run only)."""
    if weights_available(settings):
        return "imagenet", "ImageNet (MobileNet alpha 0.75)"
    return None, "random (ImageNet weights absent: timings hold, accuracies would not)"


def decoded(frame: Any, settings: Any) -> np.ndarray:
    """Images decoded, resized and preprocessed for the backbone, as one float32 array (outside timers)."""
    from helpers import backbones, pipeline

    size = backbones.input_size(settings)
    pixels = np.stack([pipeline.load_image(path, size, settings=settings) for path in frame["path"]])
    return np.asarray(backbones.get_backbone(settings=settings).preprocess(pixels.astype("float32")), dtype="float32")


# --------------------------------------------------------------------------- 1. extraction


def extraction(context: Context, settings: Any, frame: Any, weights: str | None) -> dict[str, Any]:
    """Section 1: images/s through the kit's pipeline from files against bare predict on arrays."""
    from helpers import backbones, features

    for path in frame["path"]:  # both sides start from the page cache
        Path(path).read_bytes()
    model = backbones.load_feature_extractor(settings, weights=weights)
    arrays = decoded(frame, settings)
    batch_size = settings.batch_size

    def kit() -> np.ndarray:
        return features.extract_features(model, frame, settings, cache=False, progress=False)

    def bare() -> np.ndarray:
        return model.predict(arrays, batch_size=batch_size, verbose=0)

    difference = float(np.max(np.abs(kit() - bare())))
    # Both sides use every core; extra repetitions so that enough of them get every core.
    repeats = 2 * context.size.repeats - 1
    timings = alternate({"kit": kit, "bare": bare}, repeats)
    kept = {name: timing.full_speed() for name, timing in timings.items()}
    count = len(frame)
    kit_rate, bare_rate = count / kept["kit"].median, count / kept["bare"].median
    return {
        "date": now(),
        "images": count,
        "batch_size": batch_size,
        "repeats": repeats,
        "kit": timings["kit"].as_dict() | {"images_per_s": kit_rate, "full_speed": len(kept["kit"].wall), "median_s": kept["kit"].median},
        "bare": timings["bare"].as_dict() | {"images_per_s": bare_rate, "full_speed": len(kept["bare"].wall), "median_s": kept["bare"].median},
        "ratio": ratio(kit_rate, bare_rate),
        "ratio_all": ratio(timings["bare"].median, timings["kit"].median),
        "ratio_cpu": ratio(timings["bare"].median_cpu, timings["kit"].median_cpu),
        "goal": EXTRACTION_GOAL,
        "goal_met": ratio(kit_rate, bare_rate) >= EXTRACTION_GOAL,
        "max_abs_feature_difference": difference,
    }


# --------------------------------------------------------------------------- shared state


def prepare(context: Context) -> dict[str, Any]:
    """Settings, images and weights shared by the in-process sections (loaded once per run).

    The images are split once: the first rows are the training pool (every training
    set is a prefix of it), the last ``size.validation`` rows the validation set.
    """
    from helpers import pipeline

    settings = context.settings("full")
    size = context.size
    frame, source = images(context, settings, max(size.images, max(size.scaling)) + size.validation)
    weights, weights_text = weights_choice(settings)
    classes = pipeline.class_names(frame)
    return {
        "settings": settings,
        "pool": frame.head(len(frame) - size.validation).reset_index(drop=True),
        "validation": frame.tail(size.validation).reset_index(drop=True),
        "classes": classes,
        "weights": weights,
        "arrays": {},
        "describe": {
            "backbone": f"{settings.backbone} alpha {settings.alpha}",
            "weights": weights_text,
            "images": f"{source} ({len(frame)} used, {len(classes)} classes)",
        },
    }


def _labels(state: dict[str, Any], frame: Any) -> np.ndarray:
    from helpers import pipeline

    return pipeline.encode_labels(frame["label"], state["classes"])


def _arrays(state: dict[str, Any], frame: Any, key: str) -> np.ndarray:
    """Decoded, preprocessed images of ``frame``, kept for the run (the plain baselines' input)."""
    if key not in state["arrays"]:
        state["arrays"][key] = decoded(frame, state["settings"])
    return state["arrays"][key]


# --------------------------------------------------------------------------- plain Keras baselines


def plain_model(settings: Any, weights: str | None, classes: int, n_blocks: int, dropout: float) -> Any:
    """The model a plain Keras user trains: the base (frozen, or its last blocks unfrozen) plus a head.

    BatchNormalization layers stay frozen and the base runs with ``training=False``,
    as in keras-io's fine-tuning guide.

    Args:
        settings: Kit settings (backbone, learning rate).
        weights: ``"imagenet"`` or None.
        classes: Number of classes.
        n_blocks: 0 = head only; otherwise the last ``n_blocks`` blocks train too,
            with a tenth of the learning rate.
        dropout: Dropout rate before the classifier (the kit's head's).
    """
    import keras

    from helpers import backbones

    backbone = backbones.get_backbone(settings=settings)
    base = backbones.load_base(settings, weights=weights)
    if n_blocks == 0:
        base.trainable = False
        learning_rate = settings.learning_rate
    else:
        names = [layer.name for layer in base.layers]
        cut = names.index(backbones.block_input_layer(base, backbone, n_blocks))
        for index, layer in enumerate(base.layers):
            layer.trainable = index > cut and not isinstance(layer, keras.layers.BatchNormalization)
        learning_rate = settings.learning_rate / 10
    inputs = keras.Input(shape=base.input_shape[1:])
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name=f"plain_{'head' if n_blocks == 0 else 'last_block'}")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class _EpochClock:
    """Wall and CPU seconds of every epoch of a ``fit`` (a Keras callback, built on first use)."""

    def __init__(self) -> None:
        import keras

        clock = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                clock._began = (time.perf_counter(), time.process_time())

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                wall, cpu = clock._began
                clock.wall.append(time.perf_counter() - wall)
                clock.cpu.append(time.process_time() - cpu)

        self.callback = Callback()
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._began = (0.0, 0.0)

    def warm(self) -> Measured:
        """The median epoch after the first (the first traces the training step)."""
        wall, cpu = (self.wall[1:], self.cpu[1:]) if len(self.wall) > 1 else (self.wall, self.cpu)
        if not wall:
            raise RuntimeError("no epoch was timed: did fit run?")
        return Measured(statistics.median(wall), statistics.median(cpu))


def notebook_run(context: Context, state: dict[str, Any], count: int) -> dict[str, Any]:
    """Notebook 02's model and one pass over ``count`` training images and the validation set (its sections 2 and 4).

    A base, a new head, and the cached block inputs (of the last block) and feature maps of
    every image, computed once (``seconds``: the one-off cost both phases share).
    """
    import pandas as pd

    from helpers import backbones, features, heads, pipeline

    settings = state["settings"]
    frame = pd.concat(
        [state["pool"].head(count).assign(split="train"), state["validation"].assign(split="validation")],
        ignore_index=True,
    )
    backbone = backbones.get_backbone(settings=settings)
    base = backbones.load_base(settings, weights=state["weights"])
    head = heads.build_head(base.output_shape[1:], len(state["classes"]), seed=settings.seed)
    began = time.perf_counter()
    block_inputs, feature_maps = features.cached_arrays(
        heads.cached_outputs_model(base, backbone, 1), frame, settings, name=f"{count} images", progress=False
    )
    splits = frame["split"].to_numpy()
    return {
        "settings": settings, "frame": frame, "backbone": backbone, "base": base, "head": head,
        "arrays": {1: feature_maps, 2: block_inputs}, "labels": pipeline.encode_labels(frame["label"], state["classes"]),
        "rows": {name: np.flatnonzero(splits == name) for name in ("train", "validation")},
        "seconds": time.perf_counter() - began,
        "run_dir": context.scratch / "runs" / f"{count}-{time.monotonic_ns()}",
        "models": {1: head},
    }


def phase_model(run: dict[str, Any], phase: int) -> Any:
    """What a phase fits: the head (phase 1), or the tail from the last block's input (phase 2), built once."""
    from helpers import heads

    if phase not in run["models"]:
        run["models"][phase] = heads.tail_model(run["base"], run["head"], run["backbone"], 1)
    return run["models"][phase]


def lab_callbacks(run_dir: Path, patience: int) -> list[Any]:
    """Notebook 02's exercise 4: early stopping restoring the best epoch, the best checkpoint, TensorBoard logs."""
    import keras

    from helpers import callbacks

    chosen = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor="val_loss", save_best_only=True),
    ]
    return chosen + ([keras.callbacks.TensorBoard(str(run_dir / "logs"))] if callbacks.tensorboard_available() else [])


def kit_epochs(run: dict[str, Any], phase: int, epochs: int, *, callbacks: bool = True) -> Callable[[], Measured]:
    """A function running notebook 02's phase for ``epochs`` epochs; it returns the median warm epoch.

    Freeze, compile, ``fit`` on the cached arrays with ``validation_data`` (sections 5 and 6);
    with ``callbacks=False`` the same ``fit`` without the lab's callbacks (the clock alone).
    """
    from helpers import compiling, features, freezing, retraining

    settings = run["settings"]

    def go() -> Measured:
        clock = _EpochClock()
        model = phase_model(run, phase)
        freezing.freeze_all_but_last_blocks(run["base"], run["backbone"], 0 if phase == 1 else 1)
        rate = settings.learning_rate * (1 if phase == 1 else retraining.FINETUNE_LEARNING_RATE_FACTOR)
        compiling.compile_model(model, rate)
        folder = run["run_dir"] / f"phase {phase}"
        folder.mkdir(parents=True, exist_ok=True)
        chosen = lab_callbacks(folder, settings.scale.early_stopping_patience) if callbacks else []
        arrays, labels, rows = run["arrays"][phase], run["labels"], run["rows"]
        model.fit(
            features.batches(arrays, labels, rows=rows["train"], batch_size=settings.batch_size, shuffle=True,
                             seed=settings.seed),
            validation_data=features.batches(arrays, labels, rows=rows["validation"], batch_size=settings.batch_size),
            epochs=epochs, callbacks=[*chosen, clock.callback], verbose=0,
        )
        return clock.warm()

    return go


def plain_epochs(model: Any, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, batch_size: int) -> Callable[[], Measured]:
    """A function running one epoch of plain ``model.fit`` (with validation); it returns that epoch's time."""

    def run() -> Measured:
        clock = _EpochClock()
        model.fit(x, y, batch_size=batch_size, epochs=1, validation_data=(x_val, y_val), callbacks=[clock.callback], verbose=0)
        return Measured(clock.wall[0], clock.cpu[0])

    return run


# --------------------------------------------------------------------------- sections


def extraction_section(context: Context, state: dict[str, Any]) -> dict[str, Any]:
    """Section 1 on the run's training images."""
    frame = state["pool"].head(context.size.images)
    return extraction(context, state["settings"], frame, state["weights"])


def _run(context: Context, state: dict[str, Any]) -> dict[str, Any]:
    """Notebook 02's run of the head and block comparisons (one, so the images are extracted once)."""
    if "run" not in state:
        state["run"] = notebook_run(context, state, context.size.images)
    return state["run"]


def _epoch_comparison(context: Context, state: dict[str, Any], phase: int) -> dict[str, Any]:
    import keras

    from helpers import compiling, freezing, heads, retraining

    settings = state["settings"]
    run = _run(context, state)
    train = state["pool"].head(context.size.images)
    x, y = _arrays(state, train, "train"), _labels(state, train)
    x_val, y_val = _arrays(state, state["validation"], "validation"), _labels(state, state["validation"])
    plain = plain_model(settings, state["weights"], len(state["classes"]), 0 if phase == 1 else 1, heads.DEFAULT_DROPOUT)
    epochs = context.size.repeats + 1
    # The floor: the very model notebook 02 trains, on the same cached rows copied into memory (float32), in a
    # bare fit without callbacks: what Keras itself costs per epoch at this batch size. A model of its own
    # (sharing the layers), compiled once, so that the kit's recompiling never makes it trace again.
    freezing.freeze_all_but_last_blocks(run["base"], run["backbone"], 0 if phase == 1 else 1)
    trained = phase_model(run, phase)
    inputs = keras.Input(shape=trained.input_shape[1:])
    bare_model = keras.Model(inputs, trained(inputs), name=f"floor_phase_{phase}")
    compiling.compile_model(
        bare_model, settings.learning_rate * (1 if phase == 1 else retraining.FINETUNE_LEARNING_RATE_FACTOR)
    )
    cached, rows = run["arrays"][phase], run["rows"]
    in_memory = {name: np.asarray(cached[rows[name]], dtype="float32") for name in ("train", "validation")}
    timings = alternate(
        {
            "kit": kit_epochs(run, phase, epochs),
            "kit_bare": kit_epochs(run, phase, epochs, callbacks=False),
            "floor": plain_epochs(
                bare_model, in_memory["train"], run["labels"][rows["train"]], in_memory["validation"],
                run["labels"][rows["validation"]], settings.batch_size,
            ),
            "plain": plain_epochs(plain, x, y, x_val, y_val, settings.batch_size),
        },
        context.size.slow_repeats,
    )
    del in_memory
    # Like for like: the plain fit has no callbacks, so neither has the kit's side of the
    # ratio; the kit's epoch with the lab's callbacks is reported beside it.
    kit_s, plain_s = timings["kit_bare"].median, timings["plain"].median
    goal = HEAD_GOAL if phase == 1 else BLOCK_GOAL
    from helpers.settings import PROFILES

    workshop_epochs = PROFILES["workshop"].head_epochs if phase == 1 else PROFILES["workshop"].finetune_epochs
    one_off_s = run["seconds"]  # one pass gives both phases' arrays
    kit_total = one_off_s + workshop_epochs * timings["kit"].median  # as the notebook runs it: with callbacks
    plain_total = workshop_epochs * plain_s
    what = "`head.fit` on the cached feature maps" if phase == 1 else "`tail.fit` on the cached block inputs"
    return {
        "date": now(),
        "images": len(train),
        "validation": len(state["validation"]),
        "batch_size": settings.batch_size,
        "kit": timings["kit"].as_dict() | {
            "label": f"the kit: notebook 02's phase {phase}, {what} (float16, memory-mapped, `features.batches`; "
            f"median warm epoch of {epochs}), with the lab's callbacks: early stopping, best checkpoint, TensorBoard",
        },
        "kit_bare": timings["kit_bare"].as_dict() | {
            "label": "the kit's training alone: the same `fit` with the callbacks removed",
        },
        "floor": timings["floor"].as_dict() | {
            "label": "Keras `fit` of the same model on the same cached rows copied into memory (float32), no callbacks",
        },
        "plain": timings["plain"].as_dict() | {
            "label": "plain Keras `fit` through the " + ("frozen base" if phase == 1 else "base, last block unfrozen") + ", no callbacks",
        },
        "ratio": ratio(plain_s, kit_s),
        "ratio_cpu": ratio(timings["plain"].median_cpu, timings["kit_bare"].median_cpu),
        "ratio_with_callbacks": ratio(plain_s, timings["kit"].median),
        "goal": goal,
        "goal_met": ratio(plain_s, kit_s) >= goal,
        "phase2_path": "cached block inputs (float16, memory-mapped)",
        "kit_path": "as notebook 02 does: on the float16 memory-mapped arrays, read a batch at a time (`features.batches`)",
        "one_off": {
            "seconds": one_off_s,
            "epochs": workshop_epochs,
            "kit_total_s": kit_total,
            "plain_total_s": plain_total,
            "ratio": ratio(plain_total, kit_total),
        },
        "notes": [],
    }


def _equivalence(run: dict[str, Any], phase: int, description: str) -> tuple[dict[str, Any], str]:
    """The trained phase's model on its cached input against the assembled model on the image files.

    Measured on the input computed in float32 from the files (the fast path itself, tolerance
    :data:`EQUIVALENCE_TOLERANCE`); the float16 arrays notebook 02 trains on add their rounding,
    returned as a note.
    """
    from helpers import features, heads, pipeline

    settings, rows = run["settings"], run["rows"]["validation"]
    frame = run["frame"].iloc[rows]
    reference = np.asarray(pipeline.predict_images(heads.assemble_model(run["base"], run["head"]), frame, settings), "float64")
    source = run["base"] if phase == 1 else heads.block_input_model(run["base"], run["backbone"], 1)
    exact = features.extract_features(source, frame, settings, cache=False, progress=False)
    model = phase_model(run, phase)
    difference = float(np.max(np.abs(np.asarray(model.predict(exact, verbose=0), "float64") - reference)))
    rounded = model.predict(features.batches(run["arrays"][phase], rows=rows, batch_size=2 * settings.batch_size), verbose=0)
    rounding = float(np.max(np.abs(np.asarray(rounded, "float64") - reference)))
    return {
        "description": description,
        "images": len(frame),
        "max_abs_difference": difference,
        "tolerance": EQUIVALENCE_TOLERANCE,
        "met": difference <= EQUIVALENCE_TOLERANCE,
    }, (
        f"On the float16 cached arrays notebook 02 trains on, the largest difference is {rounding:.1e} "
        "(their rounding; notebook 02's section 7 shows it too)."
    )


def head_section(context: Context, state: dict[str, Any]) -> dict[str, Any]:
    """Section 2: one head epoch on cached feature maps against plain Keras through the frozen base."""
    result = _epoch_comparison(context, state, phase=1)
    result["equivalence"], note = _equivalence(
        _run(context, state), 1,
        "the head trained on cached feature maps, applied to the feature maps, against the assembled model "
        "(image → base → head) on the image files.",
    )
    result["notes"].append(note)
    return result


def block_section(context: Context, state: dict[str, Any]) -> dict[str, Any]:
    """Section 3: one last-block epoch on cached block inputs against plain Keras, and the equivalence check."""
    result = _epoch_comparison(context, state, phase=2)
    result["equivalence"], note = _equivalence(
        _run(context, state), 2,
        "after notebook 02's phase 2, the tail (block input → last block → head) against the assembled "
        "model (image → base → head) on the image files.",
    )
    result["notes"].append(note)
    return result


# --------------------------------------------------------------------------- 6. scaling


def _scaling_path(title: str, counts: list[int], make: Callable[[int], Callable[[], Any]], repeats: int) -> dict[str, Any]:
    """Time ``make(n)()`` for every n (alternating sizes within each repetition) and fit the slope.

    One untimed call at the smallest size warms up what all sizes share; the training
    paths leave out each call's first epoch themselves.
    """
    try:
        runs = {str(n): make(n) for n in counts}
    except Skip as skip:
        return {"title": title, "skipped": str(skip)}
    runs[str(counts[0])]()
    timings = alternate(runs, repeats, warmup=False)
    points = [{"images": n, **timings[str(n)].as_dict()} for n in counts]
    slope = loglog_slope(counts, [p["median_s"] for p in points])
    return {"title": title, "points": points, "slope": slope, "superlinear": slope > SUPERLINEAR_SLOPE}


def scaling_section(context: Context, state: dict[str, Any]) -> dict[str, Any]:
    """Section 6: time against the number of images for extraction and each of the kit's training paths."""
    from helpers import backbones, features

    settings, weights = state["settings"], state["weights"]
    counts = list(context.size.scaling)
    repeats = context.size.scaling_repeats
    extractor = backbones.load_feature_extractor(settings, weights=weights)
    for path in state["pool"]["path"].head(max(counts)):  # every size starts from the page cache
        Path(path).read_bytes()

    def extract(n: int) -> Callable[[], Any]:
        frame = state["pool"].head(n)
        return lambda: features.extract_features(extractor, frame, settings, cache=False, progress=False)

    paths = {"extraction": _scaling_path("extraction (kit, from files)", counts, extract, repeats)}
    runs: dict[int, Any] = {}

    if "run" in state:  # the comparisons' run already holds these images' cached arrays
        runs[context.size.images] = state["run"]

    def run(n: int) -> Any:
        if n not in runs:
            runs[n] = notebook_run(context, state, n)  # one-off: the one pass, outside the timer
        return runs[n]

    epochs = min(3, context.size.repeats + 1)
    paths["head"] = _scaling_path(
        "head epoch (notebook 02, cached feature maps)", counts, lambda n: kit_epochs(run(n), 1, epochs), repeats
    )
    paths["block"] = _scaling_path(
        "last-block epoch (notebook 02, cached block inputs)", counts, lambda n: kit_epochs(run(n), 2, epochs), repeats
    )
    return {"date": now(), "repeats": repeats, "counts": counts, "paths": paths}


SECTIONS = {
    "extraction": extraction_section,
    "head": head_section,
    "block": block_section,
    "scaling": scaling_section,
}
