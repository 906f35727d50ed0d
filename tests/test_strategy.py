"""Every model of the kit is built and trained under the device strategy: checked on this CPU split in two.

TensorFlow can present one CPU as two logical devices; ``MirroredStrategy`` over them
splits every batch between two replicas and adds up their gradients, exactly as over
two GPUs. The three training paths (the head on cached feature maps and the last block
on cached block inputs, as :func:`helpers.retraining.fit_two_phases` runs notebook 02's
steps; end-to-end fine-tuning on the images, in plain Keras) run once on one
device and once under that strategy, from the same weights (MobileNet alpha 0.75 with
its ImageNet weights: a randomly initialised network maps every image to nearly the
same features, which would make any two runs agree), and must give the same
predictions. Devices can only be split before TensorFlow starts, so this runs in a
fresh Python process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import SHARED_MODELS

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # probabilities: the two runs differ only in the order floats are added

SCRIPT = textwrap.dedent(
    r'''
    import json, sys
    from pathlib import Path

    import numpy as np
    import pandas as pd
    from PIL import Image

    from helpers import backbones, device, features, heads, pipeline, retraining, weights
    from helpers.compiling import compile_model
    from helpers.freezing import freeze_all_but_last_blocks
    from helpers.settings import load_settings

    tf = device.import_tensorflow()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    work, mirror = Path(sys.argv[1]), sys.argv[2]
    rng = np.random.default_rng(0)
    rows = []
    for label, colour in (("red", (200, 40, 40)), ("green", (40, 190, 60)), ("blue", (50, 60, 210))):
        for number in range(10):
            image = rng.normal(0, 25, size=(48, 48, 3)) + np.array(colour)
            path = work / "images" / label / f"{label}_{number:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(image, 0, 255).astype("uint8")).save(path)
            split = "train" if number < 6 else "validation" if number < 8 else "test"
            rows.append({"path": str(path), "label": label, "split": split})
    frame = pd.DataFrame(rows)

    def settings(name):
        return load_settings(
            # One batch per epoch (18 training images): the order a shuffled tf.data pipeline yields
            # images in may differ between the runs, and it changes nothing within one batch.
            {"profile": "smoke", "backbone": "mobilenet", "alpha": 0.75, "batch_size": 32,
             "cache_dir": str(work / name), "weights_mirror": mirror, "seed": 3},
            environ={},
        )

    # One set of starting weights for both runs.
    weights.seed_cache(settings("start"), known_md5=backbones.known_md5s())
    base = backbones.load_base(settings("start"))
    head = heads.build_head(base.output_shape[1:], 3, dropout=0.0, seed=5)
    start = {"base": base.get_weights(), "head": head.get_weights()}

    def train(name, path):
        kit = settings(name)
        weights.configure_keras_home(kit)
        weights.seed_cache(kit, known_md5=backbones.known_md5s())
        base = backbones.load_base(kit)
        backbone = backbones.get_backbone(settings=kit)
        head = heads.build_head(base.output_shape[1:], 3, dropout=0.0, seed=5)
        base.set_weights(start["base"])
        head.set_weights(start["head"])
        test_rows = frame[frame["split"] == "test"]
        if path == "cached":  # notebook 02's two phases on cached arrays, as the retrain command runs them
            arrays = features.cached_arrays(heads.cached_outputs_model(base, backbone, 1), frame, kit, progress=False)
            result = retraining.fit_two_phases(
                kit, frame, base, head, arrays, n_blocks=1, label_smoothing=0.0, class_weights=False,
                phase2_learning_rate=1e-3, keep_better=False, run_dir=work / name / "run",
            )
            model, after_head, after_blocks = result.model, result.head_test_probabilities, result.test_probabilities
        else:  # end-to-end fine-tuning on the images: the kit's model and freezing, plain Keras fit
            model = heads.assemble_model(base, head)
            freeze_all_but_last_blocks(base, backbone, 0)
            compile_model(model, kit.learning_rate)
            data = {part: pipeline.make_dataset(frame[frame["split"] == part]["path"], frame[frame["split"] == part]["label"],
                                                settings=kit, classes=["blue", "green", "red"])
                    for part in ("train", "validation")}
            model.fit(data["train"], validation_data=data["validation"], epochs=2, verbose=0)
            after_head = pipeline.predict_images(model, test_rows, kit)
            freeze_all_but_last_blocks(base, backbone, 1)
            compile_model(model, kit.learning_rate / 10)  # recompile after changing trainable
            model.fit(data["train"], validation_data=data["validation"], epochs=2, verbose=0)
            after_blocks = pipeline.predict_images(model, test_rows, kit)
        return {
            "head": np.asarray(after_head).tolist(),
            "blocks": np.asarray(after_blocks).tolist(),
            "model": pipeline.predict_images(model, test_rows, kit).tolist(),
            "strategy": type(model.distribute_strategy).__name__,
            "replicas": int(model.distribute_strategy.num_replicas_in_sync),
            "base_strategy": type(base.distribute_strategy).__name__,
        }

    results = {"one": {}, "two": {}}
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one for both paths: a second one in this process aborted its collectives (shape mismatch)
    for path in ("cached", "images"):
        results["one"][path] = train(f"one-{path}", path)
        with mirrored.scope():
            results["two"][path] = train(f"two-{path}", path)
    print("RESULTS " + json.dumps(results))
    '''
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shared_data):
    """Both runs of every path: one device, then MirroredStrategy over two logical CPUs."""
    work = tmp_path_factory.mktemp("strategy")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIT_")} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(work), str(SHARED_MODELS)], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):])


def _difference(a, b) -> float:
    import numpy as np

    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.slow
@pytest.mark.integration
def test_models_are_built_under_the_mirrored_strategy(runs):
    for path in ("cached", "images"):
        assert runs["two"][path]["strategy"] == "MirroredStrategy" and runs["two"][path]["replicas"] == 2
        assert runs["two"][path]["base_strategy"] == "MirroredStrategy", "the base must be built under the strategy too"
        assert runs["one"][path]["replicas"] == 1


@pytest.mark.slow
@pytest.mark.integration
def test_head_path_gives_the_same_predictions_on_two_devices(runs):
    assert _difference(runs["one"]["cached"]["head"], runs["two"]["cached"]["head"]) < TOLERANCE


@pytest.mark.slow
@pytest.mark.integration
def test_last_block_path_gives_the_same_predictions_on_two_devices(runs):
    one, two = runs["one"]["cached"], runs["two"]["cached"]
    assert _difference(one["blocks"], two["blocks"]) < TOLERANCE
    assert _difference(one["head"], one["blocks"]) > TOLERANCE, "phase 2 must have changed the model (else this proves nothing)"
    assert _difference(one["model"], two["model"]) < TOLERANCE, "the assembled model must agree too"


@pytest.mark.slow
@pytest.mark.integration
def test_end_to_end_fine_tuning_gives_the_same_predictions_on_two_devices(runs):
    one, two = runs["one"]["images"], runs["two"]["images"]
    assert _difference(one["head"], two["head"]) < TOLERANCE
    assert _difference(one["model"], two["model"]) < TOLERANCE
    assert _difference(one["head"], one["blocks"]) > TOLERANCE, "phase 2 must have changed the model (else this proves nothing)"
