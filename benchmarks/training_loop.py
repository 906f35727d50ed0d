"""Section 9: the training loop on cached arrays, like for like: a hand-written loop against Keras's ``fit``.

Until this benchmark, both of notebook 02's cached paths trained with a loop of the
kit's own (``helpers.training.fit_in_memory``: one compiled graph per epoch over arrays
held as tensors). It was justified by comparing one of its epochs with ``fit(epochs=1)``
called once per epoch, which pays ``fit``'s start-up (data adapter, step tracing) every
epoch. Here each side trains a whole phase in **one** call, as the notebook does:

* ``custom loop``: that hand-written loop (kept here, verbatim, as the reference);
* ``fit``: ``model.fit`` over all the phase's epochs, one step per call;
* ``fit, steps_per_execution``: the same with all of an epoch's steps in one call.

Both phases of notebook 02 (the head on cached pooled features; the last block + head
on cached block inputs), the workshop profile's Simpsons frames, flipped copies and
epochs (40 and 14; no early stopping, so every side runs every epoch), MobileNet
alpha 0.75. The arrays are extracted once, outside the timers, and that one-off cost
is reported: it is part of the phase as the notebook runs it. Every run starts from the
same weights; sides alternate within each repetition.

The decision rule (issue: "keep the custom loop only if it saves at least 3x the whole
phase's time in the workshop profile"): a phase keeps the loop only when
``fit`` seconds >= 3 x loop seconds for the phase as the notebook runs it.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Sequence

import numpy as np

from benchmarks.common import Context, Skip, alternate, now, ratio

KEEP_LOOP_RATIO = 3.0  # the loop must save this factor of the whole phase to stay
VARIANTS = ("custom loop", "fit", "fit, steps_per_execution")


def custom_loop(
    model: Any, x: Any, y: Any, validation_data: tuple[Any, Any], *, epochs: int, batch_size: int, seed: int = 0
) -> dict[str, list[float]]:
    """The kit's former ``training.fit_in_memory`` (its training part, callbacks left out as on the other sides).

    One compiled graph per epoch over the arrays held as tensors, Keras's loss and
    ``optimizer.apply_gradients``, validation after every epoch; no compiled metrics,
    no sample weights, no per-batch hooks, no distribution strategy.
    """
    from helpers import device

    tf = device.import_tensorflow()
    x_val, y_val = validation_data
    count, batch_size = len(x), int(batch_size)
    steps = math.ceil(count / batch_size)
    inputs, labels = tf.constant(x), tf.constant(np.asarray(y, dtype=np.int64))
    val_inputs, val_labels = tf.constant(x_val), tf.constant(np.asarray(y_val, dtype=np.int64))
    weights = model.trainable_weights
    optimizer = model.optimizer
    optimizer.build(weights)

    def batch_result(batch_x: Any, batch_y: Any, training: bool) -> tuple[Any, Any, Any]:
        predictions = model(tf.cast(batch_x, "float32"), training=training)
        loss = model.compute_loss(x=batch_x, y=batch_y, y_pred=predictions, training=training)
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(predictions, axis=-1), batch_y), "float32"))
        return loss, hits, tf.cast(tf.shape(batch_y)[0], "float32")

    @tf.function
    def train_epoch(order: Any) -> tuple[Any, Any]:
        loss_sum, hits_sum = tf.constant(0.0), tf.constant(0.0)
        for step in tf.range(steps):
            rows = order[step * batch_size:(step + 1) * batch_size]
            batch_x, batch_y = tf.gather(inputs, rows), tf.gather(labels, rows)
            with tf.GradientTape() as tape:
                loss, hits, size = batch_result(batch_x, batch_y, True)
                scaled = optimizer.scale_loss(loss)
            optimizer.apply_gradients(zip(tape.gradient(scaled, weights), weights))
            loss_sum += tf.cast(loss, "float32") * size
            hits_sum += hits
        return loss_sum / count, hits_sum / count

    @tf.function
    def evaluate() -> tuple[Any, Any]:
        total = tf.shape(val_labels)[0]
        loss_sum, hits_sum = tf.constant(0.0), tf.constant(0.0)
        for start in tf.range(0, total, batch_size):
            loss, hits, size = batch_result(
                val_inputs[start:start + batch_size], val_labels[start:start + batch_size], False
            )
            loss_sum += tf.cast(loss, "float32") * size
            hits_sum += hits
        return loss_sum / tf.cast(total, "float32"), hits_sum / tf.cast(total, "float32")

    rng = np.random.default_rng(seed)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    for _ in range(int(epochs)):
        loss, hits = train_epoch(tf.constant(rng.permutation(count)))
        val_loss, val_hits = evaluate()
        for key, value in (("loss", loss), ("accuracy", hits), ("val_loss", val_loss), ("val_accuracy", val_hits)):
            history[key].append(float(value))
    return history


def _phase_runner(
    variant: str, make_model: Any, initial: Sequence[Any], arrays: tuple[Any, ...], epochs: int, batch_size: int,
    learning_rate: float,
) -> Any:
    """A function training one whole phase from the same starting weights with one of the variants."""
    from helpers import compiling

    model = make_model()
    x, y, x_val, y_val = arrays
    steps = math.ceil(len(x) / batch_size)

    def run() -> dict[str, list[float]]:
        import keras

        model.set_weights(initial)
        model.compile(  # compiling.compile_model's loss and metric, a fresh optimizer every run
            optimizer=compiling.make_optimizer("adam", learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            steps_per_execution=steps if variant == "fit, steps_per_execution" else 1,
        )
        if variant == "custom loop":
            return custom_loop(model, x, y, (x_val, y_val), epochs=epochs, batch_size=batch_size)
        history = model.fit(
            x, y, batch_size=batch_size, epochs=epochs, validation_data=(x_val, y_val), shuffle=True, verbose=0
        )
        return history.history

    return run


def run(context: Context) -> dict[str, Any]:
    """Time both phases of notebook 02 with each training loop; return the section's results."""
    import pandas as pd

    from helpers import backbones, datasets, features, freezing, heads, pipeline, retraining, splits
    from helpers.settings import PROFILES

    profile = "workshop" if context.size.name == "full" else "smoke"
    settings = context.settings(profile)
    run_profile = PROFILES[profile]
    epochs = {"head": run_profile.head_epochs, "blocks": run_profile.finetune_epochs}
    if context.size.name != "full":
        epochs = {"head": 2, "blocks": 2}
    try:
        frame = datasets.load_dataset("simpsons", settings, download_ok=False)
    except (datasets.DatasetMissingError, FileNotFoundError) as error:
        raise Skip(f"the Simpsons images are not available ({error}); put the course data in ../shared/data") from None
    frame = splits.split_dataset(frame, seed=settings.seed)
    weights_file = backbones.weight_file_name(settings, include_top=False)
    weights = "imagenet" if (settings.keras_home / "models" / weights_file).is_file() else None
    base = backbones.load_base(settings, weights=weights)
    backbone = backbones.get_backbone(settings=settings)
    head = heads.build_head(base.output_shape[1:], frame["label"].nunique(), seed=settings.seed)
    n_blocks = 1
    began = time.perf_counter()
    # Notebook 02's one pass over the images: the last block's input and the base's feature maps,
    # as they are and flipped (float16 on disk, memory-mapped), what fit_two_phases trains on.
    block_inputs, maps, flipped_block_inputs, flipped_maps = features.cached_arrays(
        heads.cached_outputs_model(base, backbone, n_blocks), frame, settings, name="frames and their flips",
        flips=True, progress=False,
    )
    one_off = {"total": round(time.perf_counter() - began, 2)}
    computed = features.cache_table(settings)["seconds to compute"].dropna()
    if one_off["total"] < 0.5 * float(computed.sum()):
        # The arrays came from a kit cache reused from an earlier run (KIT_BENCHMARK_CACHE):
        # the one-off cost is what computing them took then, as the cache recorded it.
        one_off = {"total": round(float(computed.sum()), 2), "from_cache_metadata": True}
    labels = pipeline.encode_labels(frame["label"], pipeline.class_names(frame))
    split = frame["split"].to_numpy()
    train, validation = np.flatnonzero(split == "train"), np.flatnonzero(split == "validation")
    batch_size = settings.batch_size

    def pooled(values: Any, rows: np.ndarray) -> np.ndarray:
        """The head's average pooling of some rows' feature maps, in float32 (the head after pooling trains on it)."""
        return np.concatenate([np.asarray(values[rows[i : i + 256]], dtype=np.float32).mean(axis=(1, 2))
                               for i in range(0, len(rows), 256)])

    phases: dict[str, Any] = {}
    for phase, extra in (("head", "features"), ("blocks", "activations")):
        # The training rows, then their flipped copies; each side gets the same float32 arrays.
        if phase == "head":
            freezing.freeze_all_but_last_blocks(base, backbone, 0)
            x = np.concatenate([pooled(maps, train), pooled(flipped_maps, train)])
            x_val = pooled(maps, validation)

            def make_model() -> Any:
                return heads.head_after_pooling(head)

            learning_rate = settings.learning_rate
        else:
            freezing.freeze_all_but_last_blocks(base, backbone, n_blocks)
            x = np.concatenate([np.asarray(block_inputs[train], dtype=np.float32),
                                np.asarray(flipped_block_inputs[train], dtype=np.float32)])
            x_val = np.asarray(block_inputs[validation], dtype=np.float32)

            def make_model() -> Any:
                return heads.tail_model(base, head, backbone, n_blocks)

            learning_rate = settings.learning_rate * retraining.FINETUNE_LEARNING_RATE_FACTOR
        y = np.concatenate([labels[train]] * 2)
        arrays = (x, y, x_val, labels[validation])
        cached = x_val  # its shape and dtype name the cached arrays in the report
        initial = make_model().get_weights()
        runs = {
            variant: _phase_runner(variant, make_model, initial, arrays, epochs[phase], batch_size, learning_rate)
            for variant in VARIANTS
        }
        repeats = int(os.environ.get("KIT_BENCHMARK_REPEATS", context.size.slow_repeats))
        timings = alternate(runs, repeats, warmup=False)
        seconds = {variant: timings[variant].median for variant in VARIANTS}
        # Phase 1 as notebook 02 runs it extracts the arrays first; phase 2 reuses them.
        extraction = one_off["total"] if phase == "head" else 0.0
        whole = {variant: extraction + value for variant, value in seconds.items()}
        best_fit = min(whole["fit"], whole["fit, steps_per_execution"])
        phases[phase] = {
            "what": f"cached {extra} {tuple(cached.shape[1:])} ({cached.dtype})",
            "training_rows": int(len(x)),
            "validation_rows": int(len(validation)),
            "epochs": epochs[phase],
            "steps_per_epoch": math.ceil(len(x) / batch_size),
            "seconds": {v: round(s, 2) for v, s in seconds.items()},
            "cpu_seconds": {v: round(timings[v].median_cpu, 2) for v in VARIANTS},
            "repetitions": {v: [round(w, 2) for w in timings[v].wall] for v in VARIANTS},
            "one_off_s": extraction,
            "whole_phase_s": {v: round(s, 2) for v, s in whole.items()},
            "training_ratio": ratio(seconds["fit"], seconds["custom loop"]),
            "whole_phase_ratio": ratio(best_fit, whole["custom loop"]),
            "keep_loop": ratio(best_fit, whole["custom loop"]) >= KEEP_LOOP_RATIO,
        }
    keep = any(p["keep_loop"] for p in phases.values())
    per_execution = all(p["seconds"]["fit, steps_per_execution"] < p["seconds"]["fit"] for p in phases.values())
    return {
        "date": now(),
        "profile": profile,
        "images": int(len(frame)),
        "batch_size": batch_size,
        "weights": weights or "random (ImageNet weights not in the cache)",
        "one_off": one_off,
        "phases": phases,
        "rule": f"keep the custom loop only where it makes the whole phase at least {KEEP_LOOP_RATIO:g}x faster",
        "decision": decision(keep, per_execution),
        "split": pd.Series(frame["split"]).value_counts().to_dict(),
    }


def decision(keep: bool, per_execution: bool) -> str:
    """What the numbers decide for the kit's training on cached arrays (``helpers.retraining``)."""
    if keep:
        return "keep the custom loop"
    how = " with all of an epoch's steps per call (steps_per_execution)" if per_execution else ""
    return f"use Keras's fit{how} on cached arrays; the custom loop was removed from helpers.training"


def markdown(section: dict[str, Any]) -> list[str]:
    """The report's section: whole-phase seconds of each loop, the ratios and the decision."""
    lines = [
        f"Notebook 02's two phases on the {section['profile']} profile's Simpsons frames ({section['images']} images, "
        f"flipped copies of the training frames), MobileNet alpha 0.75 ({section['weights']}), batch "
        f"{section['batch_size']}; each side trains the whole phase in one call, every epoch (no early stopping), "
        "from the same weights; median of the repetitions. One-off extraction of the cached arrays (one pass: block "
        f"inputs and feature maps, as they are and flipped): **{section['one_off']['total']:.1f} s**, paid by phase 1 as the notebook runs it.",
        "",
        "| phase | cached arrays | rows × epochs | custom loop s | `fit` s | `fit`, steps_per_execution s "
        "| `fit` ÷ loop (training) | best `fit` ÷ loop (whole phase) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, phase in section["phases"].items():
        s = phase["seconds"]
        lines.append(
            f"| {'1: head' if name == 'head' else '2: last block'} | {phase['what']} | {phase['training_rows']} × "
            f"{phase['epochs']} | {s['custom loop']:.2f} | {s['fit']:.2f} | {s['fit, steps_per_execution']:.2f} "
            f"| ×{phase['training_ratio']:.1f} | ×{phase['whole_phase_ratio']:.2f} |"
        )
    lines += ["", f"Rule: {section['rule']}. **Decision: {section['decision']}.**", ""]
    if section["one_off"].get("from_cache_metadata"):
        lines += ["The arrays were read from a kit cache of an earlier run; the one-off is the extraction time it recorded.", ""]
    if section.get("note"):
        lines += [f"Note: {section['note']}", ""]
    return lines
