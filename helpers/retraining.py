"""Retraining a pretrained backbone in two phases: a new head (phase 1), then the last block(s) too (phase 2).

Notebook 02 teaches these steps one by one, in Keras: the student's head, freezing function,
compile function and callbacks, ``fit`` on cached feature maps, then on cached block inputs.
:func:`fit_two_phases` is the same steps in one call (notebook 02's default recipe,
:data:`DEFAULT_RECIPE`), for the ``retrain`` command, notebook 04's approaches
(:func:`helpers.approaches.run_transfer`) and the slides' learning-curve figure.
:class:`Retrainer`, below, is the older all-in-one class, kept only for the benchmarks
(sections 2, 3 and 6 time its epochs, section 8 compares its options) and their unit tests; nothing a student or the
command line runs uses it.

The Dataiku lab's retraining recipe, in Keras (:class:`Retrainer`):

* the backbone without its ImageNet classifier (``include_top=False``) plus a new
  **head**: pooling (``avg``, ``max`` or ``flatten``), dropout, a softmax layer over
  the new classes with optional L1/L2 regularisation (:func:`helpers.heads.build_head`);
* **phase 1**, last layer only: the base frozen and called with ``training=False``,
  Adam at ``settings.learning_rate`` (1e-3), batch size and epochs from the settings;
* **phase 2**, last block: the last block(s) of the base unfrozen (BatchNormalization
  layers stay frozen, in inference mode), recompiled at a tenth of the learning rate.

Both phases are fast on a CPU because nothing is computed twice:

* Phase 1 trains the head on the base's features, computed **once** per image by
  :func:`helpers.features.extract_features` (cached on disk). The head is trained from
  its pooled output, so only one vector per image is kept in memory (768 numbers for
  MobileNet 0.75 instead of its 7x7x768 map); ``flatten`` keeps the whole map, flat.
* Phase 2 caches the **input of the last block(s)** instead (the output of the layer
  just before them, :func:`helpers.backbones.block_input_layer`) and trains the *tail*
  -- a sub-model from that tensor through the unfrozen block(s) and the head -- on it.
  The frozen layers before the block would give the same output every epoch, so they
  run once. Phase 1's features then come from these activations through the (still
  frozen) last block, which is much cheaper than a second pass over the images.
  When the activations do not fit :data:`DEFAULT_MEMORY_BUDGET_MB` (``float16``
  halves them) or when augmentation is on (every epoch sees different pixels), phase
  2 falls back to ordinary end-to-end training on the images.
* Random augmentation cannot be computed once, but a fixed one can: with
  ``flip_copies=True`` a left-right flipped copy of every training image goes through the
  same extraction, doubling the training data of both phases for one more pass over
  the training images.

Every path trains with Keras's own ``fit`` (compiled metrics, callbacks, the
distribution strategy), on cached arrays with all of an epoch's steps in one call
(``steps_per_execution``): measured like for like over whole phases, a training loop
of the kit's own did not save the 3x of a phase's time that would justify keeping it
(``benchmarks/REPORT.md``, training-loop section). Every model is built and trained
under :func:`helpers.device.strategy` (``MirroredStrategy`` over several GPUs).

The trained layers are the layers of one ordinary Keras model
(:func:`helpers.heads.assemble_model`: image -> base -> head), so the result saves to
``.keras`` and reloads like any other.
The tests check that each fast path gives that model's predictions.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from helpers import backbones, device, features, pipeline
from helpers.callbacks import PHASE_BLOCKS, PHASE_HEAD, history_frame, make_callbacks, merge_histories
from helpers.compiling import SCHEDULES, compile_model, cosine_schedule, make_optimizer, one_hot_labels
from helpers.freezing import count_trainable_parameters, freeze_for_phase
from helpers.heads import (
    assemble_model, base_tail, block_input_model, flip_averaged, flipped, head_after_pooling, head_pooling,
    pooling_layer, tail_model,
)
from helpers.settings import Settings, load_settings

if TYPE_CHECKING:  # pragma: no cover
    import keras


DEFAULT_MEMORY_BUDGET_MB = 1024.0
FINETUNE_LEARNING_RATE_FACTOR = 0.1

# Notebook 02's recipe (Retrainer and fit_last_blocks options), chosen on the validation
# split of the Simpsons group split (benchmarks section 8 measures it against the
# alternatives), within the workshop's 5 minutes for notebook 02 on 2 CPU cores (section 4).
WORKSHOP_RECIPE: dict[str, Any] = {
    "flip_copies": True, "n_blocks": 3, "schedule": "cosine", "learning_rate": 3e-4, "balance_classes": True,
    "flip_test": True, "label_smoothing": 0.1,
}
RUNS_SUBDIR = "runs"

# extract_features recognises these names as pooling after the extracted layer.
_EXTRACTOR_POOLING_NAMES = {"avg": "features_avg", "max": "features_max", "flatten": "features_flat"}


def activation_megabytes(shape: Sequence[int | None], rows: int, dtype: str = "float32") -> float:
    """Memory in MB (1e6 bytes) of ``rows`` activations of ``shape`` (one image's shape).

    Used by :meth:`Retrainer.plan` (notebook 02, section 4).
    """
    values = math.prod(int(d) for d in shape if d is not None)
    return rows * values * np.dtype(dtype).itemsize / 1e6


def choose_activation_dtype(
    shape: Sequence[int | None], rows: int, budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
) -> str | None:
    """``float32`` if the activations fit ``budget_mb``, else ``float16`` if that fits, else None.

    Used by :meth:`Retrainer.plan` (notebook 02, section 4).
    """
    for dtype in ("float32", "float16"):
        if activation_megabytes(shape, rows, dtype) <= budget_mb:
            return dtype
    return None


def _fit(
    model: "keras.Model",
    x: Any,
    y: Any,
    validation: tuple[Any, ...] | Any,
    *,
    epochs: int,
    batch_size: int | None,
    callbacks: list[Any],
    checkpoint: Path,
    verbose: int,
    seed: int,
) -> dict[str, list[float]]:
    """Train with the phase's callbacks, then restore the best checkpoint (lowest val_loss).

    Arrays (``y`` given: cached features or activations, shuffled every epoch) and
    datasets of images both go through Keras's ``fit``, under the strategy the model
    was built in (:func:`helpers.device.under_strategy`).
    """
    import keras

    checkpoint.unlink(missing_ok=True)  # a stale checkpoint must never be restored
    keras.utils.set_random_seed(seed)
    if y is not None:
        # All of an epoch's steps in one call: about twice as fast as a call per step on
        # cached arrays (benchmarks/REPORT.md, training-loop section); callbacks still run per epoch.
        model.steps_per_execution = max(1, math.ceil(len(x) / int(batch_size)))
        model.train_function = model.test_function = model.predict_function = None
        history = model.fit(
            x, y, batch_size=int(batch_size), validation_data=validation, epochs=int(epochs), shuffle=True,
            callbacks=callbacks, verbose=verbose,
        )
    else:
        history = model.fit(  # the dataset shuffles itself every epoch (Keras warns when told to)
            x, validation_data=validation, epochs=int(epochs), callbacks=callbacks, verbose=verbose, shuffle=False
        )
    if checkpoint.is_file():
        model.load_weights(str(checkpoint))
    return {key: [float(v) for v in values] for key, values in history.history.items()}


@dataclasses.dataclass
class PhaseReport:
    """What one phase did.

    What :meth:`Retrainer.report` lists (notebook 04's approaches).

    Attributes:
        phase: Phase name.
        path: ``cached features``, ``cached activations`` or ``images`` (end to end).
        epochs: Epochs run (early stopping may stop before the profile's number).
        best_epoch: Epoch (within the phase) with the lowest ``val_loss``, restored at the end.
        seconds: Training time.
        trainable: Parameters trained.
        learning_rate: Learning rate used.
        val_accuracy: Validation accuracy of the restored (best) epoch.
        kept: Whether the model keeps this phase's weights (phase 2 is dropped when it
            does not beat phase 1 on validation: :meth:`Retrainer.fit_last_blocks`).
    """

    phase: str
    path: str
    epochs: int
    best_epoch: int
    seconds: float
    trainable: int
    learning_rate: float
    val_accuracy: float = math.nan
    kept: bool = True


class Retrainer:
    """The lab's two-phase retraining of a base + head on a split dataset, fast on a CPU.

    Used only by the benchmarks (``benchmarks/``) and their unit tests. Notebook 02 shows the same
    steps one by one in Keras; the ``retrain`` command, notebook 04's approaches and the slides run
    them through :func:`fit_two_phases`.

    Typical use (notebook 02)::

        base = backbones.load_base(settings)
        head = heads.build_head(base.output_shape[1:], len(names))
        retrainer = retraining.Retrainer(settings, frame, base, head)
        retrainer.fit_head()            # phase 1
        retrainer.fit_last_blocks()     # phase 2
        retrainer.model.save("simpsons.keras")

    Args:
        settings: Course settings (backbone, batch size, learning rate, epochs, cache).
        frame: Dataset with ``path``, ``label`` and ``split`` (train, validation, test).
        base: The pretrained base (``backbones.load_base(settings)``).
        head: Its new head (:func:`build_head`).
        n_blocks: Blocks retrained in phase 2 (1 = the last block, 2 = the last two).
        augment: None, or augmentation layers (:func:`augmentation_layers`) applied to the
            training images in phase 2, which then trains end to end on the images.
        flip_copies: Also train on a left-right flipped copy of every training image, extracted once
            like the originals (both phases; phase 2 only on cached activations). The
            copies are made for every image, so that they do not depend on the split
            and :meth:`predict` can average over both views (``flip_test``).
        flip_test: Average each image's prediction with its flipped image's (test-time
            augmentation; needs ``flip_copies``). :meth:`predict`, :meth:`accuracy` and
            :meth:`export_model` then use both views.
        balance_classes: Repeat the training images of the smaller classes until each
            class has as many as the largest (like class weights, for the cached paths).
        label_smoothing: Soften the training targets of both phases by this share
            (0 = off; see :func:`compile_model`).
        memory_budget_mb: Most memory for phase 2's cached activations; beyond it
            (even in ``float16``) phase 2 trains end to end on the images.
        optimizer: ``adam`` (the lab's), ``sgd`` or ``rmsprop``.
        tensorboard: Write TensorBoard logs (in ``log_dir``, one folder per phase).
        log_dir: Folder of the TensorBoard logs; ``<run_dir>/logs`` by default. Notebooks
            pass a folder beside themselves (``tensorboard_proxy.log_dir("simpsons")``),
            inside the JupyterLab root, where the Launcher's TensorBoard reads them.
        run_dir: Folder for checkpoints and logs; ``<cache_dir>/runs/<backbone>-<time>``
            by default.
        progress: Print what happens (feature extraction progress bars, choices).
        verbose: Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).

    Attributes:
        model: The whole classifier (:func:`assemble_model`), trained by both phases.
        class_names: Class names; class id ``i`` is ``class_names[i]``.
        labels: Class id of every row of ``frame``.
        reports: One :class:`PhaseReport` per phase run.
        timings: Seconds spent extracting features / activations and training each phase.
    """

    def __init__(
        self,
        settings: Settings | None,
        frame: pd.DataFrame,
        base: "keras.Model",
        head: "keras.Model",
        *,
        n_blocks: int = 1,
        augment: Any = None,
        flip_copies: bool = False,
        flip_test: bool = False,
        balance_classes: bool = False,
        label_smoothing: float = 0.0,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        optimizer: str = "adam",
        tensorboard: bool = True,
        run_dir: str | Path | None = None,
        log_dir: str | Path | None = None,
        progress: bool = True,
        verbose: int = 0,
    ) -> None:
        self.settings = settings or load_settings()
        self.backbone = backbones.get_backbone(settings=self.settings)
        if not isinstance(frame, pd.DataFrame) or not {"path", "label", "split"} <= set(frame.columns):
            raise ValueError(
                "frame must be a DataFrame with 'path', 'label' and 'split' columns; "
                "split it first with helpers.splits.split_dataset(frame)."
            )
        present = set(frame["split"])
        if not {"train", "validation"} <= present:
            raise ValueError(
                f"the frame needs 'train' and 'validation' rows (it has {sorted(present)}): validation data drives "
                "early stopping and the best checkpoint."
            )
        max_blocks = len(self.backbone.block_ends) - 1
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or not 1 <= n_blocks <= max_blocks:
            raise ValueError(f"n_blocks must be a whole number between 1 and {max_blocks}, not {n_blocks!r}.")
        make_optimizer(optimizer)  # validate the name now, not after minutes of extraction
        if (
            not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool)
            or not 0.0 <= label_smoothing < 1.0
        ):
            raise ValueError(f"label_smoothing must be a share in [0, 1) (0 = off, 0.1 is usual), not {label_smoothing!r}.")
        self.frame = frame.reset_index(drop=True)
        self.class_names = pipeline.class_names(self.frame)
        if head.output_shape[-1] != len(self.class_names):
            raise ValueError(
                f"the head has {head.output_shape[-1]} outputs but the data has {len(self.class_names)} classes; "
                "build it with n_classes=len(class_names)."
            )
        self.labels = pipeline.encode_labels(self.frame["label"], self.class_names)
        self.base, self.head = base, head
        freeze_for_phase(base, self.backbone, 1)  # start frozen: parameter_table(model) then shows phase 1
        self.model = assemble_model(base, head)
        self.n_blocks = int(n_blocks)
        self.augment = augment
        self.flip_copies = bool(flip_copies)
        if flip_test and not self.flip_copies:
            raise ValueError("flip_test averages over flipped copies: pass flip_copies=True too.")
        self.flip_test = bool(flip_test)
        self.balance_classes = bool(balance_classes)
        self.label_smoothing = float(label_smoothing)
        self.phase1_weights: list[np.ndarray] | None = None
        self.memory_budget_mb = float(memory_budget_mb)
        self.optimizer = optimizer
        self.tensorboard = tensorboard
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = Path(run_dir) if run_dir else self.settings.cache_dir / RUNS_SUBDIR / f"{self.backbone.key}-{stamp}"
        self.log_dir = Path(log_dir) if log_dir else self.run_dir / "logs"
        self.progress = progress
        self.verbose = verbose
        self.histories: dict[str, dict[str, list[float]]] = {}
        self.reports: list[PhaseReport] = []
        self.timings: dict[str, float] = {}
        self._features: np.ndarray | None = None
        self._activations: np.ndarray | None = None
        self._flipped_features: np.ndarray | None = None
        self._flipped_activations: np.ndarray | None = None
        self._features_current = False  # False once phase 2 changed the base
        self._submodels: dict[str, Any] = {}  # built once: every new model would trace its functions again
        self.activation_shape = tuple(block_input_model(base, self.backbone, self.n_blocks).output_shape[1:])
        self.activation_dtype = choose_activation_dtype(self.activation_shape, self._cached_rows(), self.memory_budget_mb)

    # ------------------------------------------------------------------ planning

    @property
    def phase2_path(self) -> str:
        """How phase 2 will train: ``cached activations`` or ``images`` (and why)."""
        if self.augment is not None:
            return "images"
        return "cached activations" if self.activation_dtype else "images"

    def _cached_rows(self) -> int:
        """Rows of cached arrays: every image, plus a flipped copy of each with ``flip_copies``."""
        return len(self.frame) * (2 if self.flip_copies else 1)

    def plan(self) -> str:
        """A few sentences saying how each phase will train and how much memory it needs."""
        rows = self._cached_rows()
        shape = "x".join(str(d) for d in self.activation_shape)
        need32 = activation_megabytes(self.activation_shape, rows, "float32")
        copies = f" (with a flipped copy of each of the {len(self.frame)} images)" if self.flip_copies else ""
        lines = [
            f"Phase 1 (head): trained on the base's pooled features, computed once for {rows} images{copies}.",
            f"Phase 2 (last {self.n_blocks} block{'s' if self.n_blocks > 1 else ''}): block input {shape} per image, "
            f"{need32:.0f} MB in float32 for {rows} images (budget {self.memory_budget_mb:.0f} MB).",
        ]
        if self.augment is not None:
            lines.append("  -> trains end to end on the images: augmentation changes the pixels every epoch.")
        elif self.activation_dtype is None:
            lines.append("  -> too large even in float16: trains end to end on the images (slower).")
        else:
            lines.append(
                f"  -> trains the last block(s) + head on cached activations ({self.activation_dtype}); "
                "phase 1's features come from them through the frozen last block."
            )
        return "\n".join(lines)

    def rows(self, split: str) -> np.ndarray:
        """Positions (in ``frame``) of the rows of one split."""
        return np.flatnonzero(self.frame["split"].to_numpy() == split)

    # ------------------------------------------------------------------ cached arrays

    def _extract(self, model: "keras.Model", *, rows: np.ndarray | None = None, dtype: str = "float32") -> np.ndarray:
        """The one call site of feature extraction (disk-cached, progress bar): features.extract_features."""
        frame = self.frame if rows is None else self.frame.iloc[rows]
        return features.extract_features(model, frame, self.settings, cache=True, progress=self.progress, dtype=dtype)

    @device.under_strategy
    def _pooled_extractor(self) -> "keras.Model":
        import keras

        pooling = head_pooling(self.head)
        pooled = pooling_layer(pooling, _EXTRACTOR_POOLING_NAMES[pooling])(self.base.output)
        # Named like backbones.load_feature_extractor's model of the same layer: notebook 03's
        # cached features of the pretrained base are then the ones phase 1 needs.
        name = f"{self.backbone.key}_{self.base.layers[-1].name}_features"
        return keras.Model(self.base.input, pooled, name=name)

    def activations(self) -> np.ndarray:
        """Phase 2's cached block-input activations for every row (computed on first use).

        Raises:
            RuntimeError: Phase 2 trains on images (augmentation, or over the memory budget).
        """
        if self.phase2_path != "cached activations":
            raise RuntimeError(f"phase 2 trains on the images here, not on cached activations:\n{self.plan()}")
        if self._activations is None:
            began = time.perf_counter()
            model = block_input_model(self.base, self.backbone, self.n_blocks)
            self._activations = self._extract(model, dtype=self.activation_dtype or "float16")
            if self.flip_copies:
                self._flipped_activations = self._extract(flipped(model), dtype=self.activation_dtype or "float16")
            self.timings["activations"] = time.perf_counter() - began
        return self._activations

    def features(self) -> np.ndarray:
        """Phase 1's pooled features of the frozen base for every row (computed on first use)."""
        if self._features is not None and self._features_current:
            return self._features
        if self.phase2_path == "cached activations":
            # The layers before the last block(s) never train, so the activations stay valid.
            activations = self.activations()
            began = time.perf_counter()
            self._features = self._through_last_blocks(activations)
            if self.flip_copies:
                self._flipped_features = self._through_last_blocks(self._flipped_activations)
        else:
            began = time.perf_counter()
            extractor = self._pooled_extractor()
            self._features = self._extract(extractor)
            if self.flip_copies:
                self._flipped_features = self._extract(flipped(extractor))
        self.timings["features"] = time.perf_counter() - began
        self._features_current = True
        return self._features

    def _training_rows(self) -> np.ndarray:
        """Positions of the training rows; with ``balance_classes``, the smaller classes' rows repeated."""
        train = self.rows("train")
        if not self.balance_classes:
            return train
        per_class = [train[self.labels[train] == k] for k in np.unique(self.labels[train])]
        largest = max(len(rows) for rows in per_class)
        return np.sort(np.concatenate([np.resize(rows, largest) for rows in per_class]))

    def _training_arrays(self, values: np.ndarray, flipped_values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The training rows of ``values`` and their labels, followed by the flipped copies with ``flip_copies``."""
        train = self._training_rows()
        if not self.flip_copies:
            return values[train], self.labels[train]
        return np.concatenate([values[train], flipped_values[train]]), np.concatenate([self.labels[train]] * 2)

    def _targets(self, labels: np.ndarray) -> np.ndarray:
        """What the compiled loss takes: class ids, or one-hot rows with label smoothing (:func:`compile_model`)."""
        return one_hot_labels(labels, len(self.class_names)) if self.label_smoothing else labels

    @device.under_strategy
    def _submodel(self, name: str) -> "keras.Model":
        """The sub-models sharing the model's layers: ``top`` (head after pooling), ``tail``, ``pooled tail``."""
        import keras

        if name not in self._submodels:
            if name == "top":
                model = head_after_pooling(self.head)
            elif name == "tail":
                model = tail_model(self.base, self.head, self.backbone, self.n_blocks)
            elif name == "pooled tail":  # block input -> last block(s) -> the head's pooling
                part = base_tail(self.base, self.backbone, self.n_blocks)
                inputs = keras.Input(shape=part.input_shape[1:])
                pooled = pooling_layer(head_pooling(self.head), "pool")(part(inputs, training=False))
                model = keras.Model(inputs, pooled, name="pooled_tail")
            else:  # pragma: no cover - internal names only
                raise KeyError(name)
            self._submodels[name] = model
        return self._submodels[name]

    def _through_last_blocks(self, activations: np.ndarray) -> np.ndarray:
        """Pooled features from block inputs: the last block(s) and the head's pooling, batch by batch."""
        return self._submodel("pooled tail").predict(activations, batch_size=self.settings.batch_size * 2, verbose=0)

    # ------------------------------------------------------------------ training

    def _say(self, text: str) -> None:
        if self.progress:
            print(text)

    def fit_head(
        self, *, epochs: int | None = None, learning_rate: float | None = None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Phase 1: train the head on the frozen base's cached features.

        Args:
            epochs: Most epochs; ``settings.run.head_epochs`` by default.
            learning_rate: ``settings.learning_rate`` (1e-3) by default.
            batch_size: ``settings.batch_size`` by default.

        Returns:
            The phase's history (:func:`history_frame`).
        """
        epochs = int(epochs or self.settings.run.head_epochs)
        learning_rate = float(learning_rate or self.settings.learning_rate)
        freeze_for_phase(self.base, self.backbone, 1)
        features = self.features()
        validation = self.rows("validation")
        x_train, y_train = self._training_arrays(features, self._flipped_features)
        top = compile_model(
            self._submodel("top"), learning_rate, optimizer=self.optimizer, label_smoothing=self.label_smoothing
        )
        callbacks, checkpoint = make_callbacks(
            self.run_dir, PHASE_HEAD, patience=self.settings.run.early_stopping_patience, tensorboard=self.tensorboard,
            log_dir=self.log_dir,
        )
        self._say(f"{PHASE_HEAD}: {len(x_train)} training images, features {features.shape[1:]}, up to {epochs} epochs.")
        began = time.perf_counter()
        history = _fit(
            top, x_train, self._targets(y_train), (features[validation], self._targets(self.labels[validation])),
            epochs=epochs, batch_size=batch_size or self.settings.batch_size, callbacks=callbacks,
            checkpoint=checkpoint, verbose=self.verbose, seed=self.settings.seed,
        )
        seconds = time.perf_counter() - began
        self.phase1_weights = None
        table = self._record(PHASE_HEAD, "cached features", history, seconds, count_trainable_parameters(top), learning_rate)
        self.phase1_weights = [np.array(w) for w in self.model.get_weights()]  # phase 2 falls back to these
        return table

    def fit_last_blocks(
        self,
        *,
        epochs: int | None = None,
        learning_rate: float | None = None,
        batch_size: int | None = None,
        schedule: str = "constant",
        keep_better: bool = True,
    ) -> pd.DataFrame:
        """Phase 2: unfreeze the last ``n_blocks`` blocks (BatchNorm stays frozen) and continue.

        Trains on cached block-input activations when they fit, else end to end on
        the images (with augmentation when given). Phase 2 can make a model worse
        (too little data, too high a learning rate): its result is kept only if it
        beats phase 1 on the validation split (higher accuracy, or the same accuracy
        and a lower loss); otherwise the model goes back to phase 1's weights, and
        :meth:`report` says so (column ``kept``).

        Args:
            epochs: Most epochs; ``settings.run.finetune_epochs`` by default.
            learning_rate: A tenth of ``settings.learning_rate`` by default.
            batch_size: ``settings.batch_size`` by default.
            schedule: ``"constant"`` (the lab's) or ``"cosine"``: the learning rate
                decays to 0 along the cosine over the phase's epochs.
            keep_better: Fall back to phase 1's weights when phase 2 does not beat it on
                validation (needs phase 1 run first; False keeps phase 2 whatever happens).

        Returns:
            The phase's history (:func:`history_frame`).
        """
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}.")
        epochs = int(epochs or self.settings.run.finetune_epochs)
        learning_rate = float(learning_rate or self.settings.learning_rate * FINETUNE_LEARNING_RATE_FACTOR)
        batch_size = int(batch_size or self.settings.batch_size)
        path = self.phase2_path
        validation = self.rows("validation")
        before = self._validation_score() if keep_better and self.phase1_weights is not None else None
        if path == "cached activations":
            activations = self.activations()  # extracted (or read from the disk cache) before timing training
            x_train, y_train = self._training_arrays(activations, self._flipped_activations)
        freeze_for_phase(self.base, self.backbone, 2, self.n_blocks)
        callbacks, checkpoint = make_callbacks(
            self.run_dir, PHASE_BLOCKS, patience=self.settings.run.early_stopping_patience, tensorboard=self.tensorboard,
            log_dir=self.log_dir,
        )
        self._say(f"{PHASE_BLOCKS}: last {self.n_blocks} block(s) + head on {path}, up to {epochs} epochs, "
                  f"learning rate {learning_rate:g}.")
        if path == "images" and self.flip_copies and self.augment is None:
            self._say("  (no flipped copies on this path: pass augmentation layers to flip images at random.)")
        steps = math.ceil((len(x_train) if path == "cached activations" else len(self.rows("train"))) / batch_size)
        rate = learning_rate if schedule == "constant" else cosine_schedule(learning_rate, epochs * steps)
        if path == "cached activations":
            trained = compile_model(
                self._submodel("tail"), rate, optimizer=self.optimizer, label_smoothing=self.label_smoothing
            )
            began = time.perf_counter()
            history = _fit(
                trained, x_train, self._targets(y_train),
                (activations[validation], self._targets(self.labels[validation])), epochs=epochs, batch_size=batch_size,
                callbacks=callbacks, checkpoint=checkpoint, verbose=self.verbose, seed=self.settings.seed,
            )
        else:
            trained = compile_model(self.model, rate, optimizer=self.optimizer, label_smoothing=self.label_smoothing)
            train_data, validation_data = self._image_datasets(batch_size)
            began = time.perf_counter()
            history = _fit(
                trained, train_data, None, validation_data, epochs=epochs, batch_size=None, callbacks=callbacks,
                checkpoint=checkpoint, verbose=self.verbose, seed=self.settings.seed,
            )
        seconds = time.perf_counter() - began
        self._features_current = False  # the base changed: phase 1's features are out of date
        table = self._record(PHASE_BLOCKS, path, history, seconds, count_trainable_parameters(trained), learning_rate)
        if before is not None:
            after = self._validation_score()
            # Better: higher accuracy, or the same and a lower loss (a NaN never is).
            beats = after[0] > before[0] or (after[0] == before[0] and after[1] < before[1])
            if not beats:  # phase 2 did not beat phase 1: go back to phase 1's model
                self.model.set_weights(self.phase1_weights)
                self._features_current = self._features is not None
                self.reports[-1].kept = False
                self._say(
                    f"  phase 2 did not beat phase 1 on validation (accuracy {after[0]:.1%} vs {before[0]:.1%}): "
                    "the model keeps phase 1's weights."
                )
        return table

    def _validation_score(self) -> tuple[float, float]:
        """(validation accuracy, validation loss) of the model as it is; a model that outputs NaN scores 0 and inf."""
        probabilities = self.predict("validation")
        truth = self.labels[self.rows("validation")]
        if not np.all(np.isfinite(probabilities)):
            return 0.0, math.inf
        loss = -float(np.mean(np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-7, 1.0))))
        return float(np.mean(np.argmax(probabilities, axis=1) == truth)), loss

    def _image_datasets(self, batch_size: int) -> tuple[Any, Any]:
        """tf.data datasets of the training (shuffled, augmented) and validation images."""
        tf = device.import_tensorflow()
        part = {name: self.frame.iloc[self.rows(name)] for name in ("train", "validation")}
        train = pipeline.make_dataset(
            part["train"]["path"], part["train"]["label"], settings=self.settings, batch_size=batch_size,
            shuffle=True, augment=self.augment, cache=True, classes=self.class_names,
        )
        # ignore_errors hides the length; telling Keras avoids its "ran out of data" warning.
        train = train.apply(tf.data.experimental.assert_cardinality(math.ceil(len(part["train"]) / batch_size)))
        validation = pipeline.make_dataset(
            part["validation"]["path"], part["validation"]["label"], settings=self.settings, batch_size=batch_size,
            cache=True, classes=self.class_names,
        )
        if self.label_smoothing:  # the categorical loss takes one-hot labels (compile_model)
            n_classes = len(self.class_names)
            train, validation = (
                data.map(lambda images, labels: (images, tf.one_hot(labels, n_classes))) for data in (train, validation)
            )
        return train, validation

    def _record(
        self, phase: str, path: str, history: dict[str, list[float]], seconds: float, trainable: int, learning_rate: float
    ) -> pd.DataFrame:
        self.histories[phase] = history
        losses = history.get("val_loss") or [math.nan]
        best = int(np.nanargmin(losses)) + 1 if not all(math.isnan(v) for v in losses) else len(losses)
        self.reports = [r for r in self.reports if r.phase != phase]
        accuracies = history.get("val_accuracy") or []
        best_accuracy = float(accuracies[best - 1]) if len(accuracies) >= best else math.nan
        self.reports.append(PhaseReport(phase, path, len(losses), best, seconds, trainable, learning_rate, best_accuracy))
        self.timings[phase] = seconds
        self._say(f"  {len(losses)} epochs in {seconds:.1f} s; best val_loss at epoch {best} (restored).")
        return history_frame(history, phase)

    # ------------------------------------------------------------------ results

    def history(self) -> pd.DataFrame:
        """Both phases' histories as one table (:func:`merge_histories`), in training order."""
        return merge_histories(self.histories)

    def report(self) -> pd.DataFrame:
        """One row per phase: path, epochs, best epoch, seconds, parameters trained, learning rate."""
        return pd.DataFrame([dataclasses.asdict(r) for r in self.reports]).set_index("phase") if self.reports else (
            pd.DataFrame(columns=[f.name for f in dataclasses.fields(PhaseReport)]).set_index("phase")
        )

    def predict(self, split: str = "test") -> np.ndarray:
        """Class probabilities of one split, computed the fastest exact way available.

        Cached activations go through the tail (after either phase); cached features
        through the head (before phase 2 only); otherwise the images through the whole model.
        """
        rows = self.rows(split)
        if not len(rows):
            raise ValueError(f"the frame has no {split!r} rows.")
        batch = self.settings.batch_size * 2
        if self._activations is not None:
            tail = self._submodel("tail")
            predicted = tail.predict(self._activations[rows], batch_size=batch, verbose=0)
            if self.flip_test:
                predicted = (predicted + tail.predict(self._flipped_activations[rows], batch_size=batch, verbose=0)) / 2
            return predicted
        if self._features is not None and self._features_current:
            top = self._submodel("top")
            predicted = top.predict(self._features[rows], batch_size=256, verbose=0)
            if self.flip_test:
                predicted = (predicted + top.predict(self._flipped_features[rows], batch_size=256, verbose=0)) / 2
            return predicted
        return pipeline.predict_images(self.export_model(), self.frame.iloc[rows], self.settings)

    def export_model(self) -> "keras.Model":
        """The model to save and use: :attr:`model`, wrapped to average over a flipped view with ``flip_test``."""
        return flip_averaged(self.model) if self.flip_test else self.model

    def accuracy(self, split: str = "test") -> float:
        """Accuracy on one split (via :meth:`predict`)."""
        rows = self.rows(split)
        return float(np.mean(np.argmax(self.predict(split), axis=1) == self.labels[rows]))


# ---------------------------------------------------------------------------- notebook 02's steps, as one call

# Notebook 02's default recipe (section 2 writes each value as a visible constant; tests/test_training.py
# checks that they agree). Chosen on the validation frames of the Simpsons group split (benchmarks section 8).
DEFAULT_RECIPE: dict[str, Any] = {
    "n_blocks": 3, "phase2_learning_rate": 3e-4, "label_smoothing": 0.1, "flips": True, "class_weights": True,
}


@dataclasses.dataclass
class TwoPhaseResult:
    """What :func:`fit_two_phases` trained.

    Not called in a notebook: what the ``retrain`` command (notebook 05's summary names it) gets back.

    Attributes:
        model: Images in, probabilities out: the base and the head, averaged with the flipped
            image when the recipe trains on flips (:func:`helpers.heads.flip_averaged`).
        class_names: Class ``i`` is ``class_names[i]``.
        history: Both phases' epochs (:func:`helpers.callbacks.merge_histories`).
        phases: One row per phase: epochs, seconds, trained parameters, validation accuracy, kept.
        validation_accuracy: The kept model's validation accuracy.
        test_probabilities: Probabilities of the test rows (fast path), or None without test rows.
        head_test_probabilities: The same after phase 1 alone (the head on the frozen base), or None.
    """

    model: Any
    class_names: list[Any]
    history: pd.DataFrame
    phases: pd.DataFrame
    validation_accuracy: float
    test_probabilities: np.ndarray | None
    head_test_probabilities: np.ndarray | None = None


class _EpochLines:
    """Keras callback printing one plain line per epoch (for logs: no bar, no escape codes)."""

    def __new__(cls, phase: str, epochs: int, stream: Any) -> Any:
        import keras

        class EpochLine(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                values = " ".join(f"{key} {value:.4f}" for key, value in (logs or {}).items() if "learning" not in key)
                print(f"{phase}: epoch {epoch + 1}/{epochs}: {values}", file=stream, flush=True)

        return EpochLine()


def _both_views(model: "keras.Model", views: Sequence[np.ndarray], rows: np.ndarray, batch_size: int) -> np.ndarray:
    """Mean probabilities over the views (the images, and their flips) of some rows."""
    return np.mean(
        [model.predict(features.batches(view, rows=rows, batch_size=batch_size), verbose=0) for view in views], axis=0
    )


def fit_two_phases(
    settings: Settings,
    frame: pd.DataFrame,
    base: "keras.Model",
    head: "keras.Model",
    arrays: Sequence[np.ndarray],
    *,
    n_blocks: int = DEFAULT_RECIPE["n_blocks"],
    phase2_learning_rate: float = DEFAULT_RECIPE["phase2_learning_rate"],
    label_smoothing: float = DEFAULT_RECIPE["label_smoothing"],
    class_weights: bool = DEFAULT_RECIPE["class_weights"],
    phase2_schedule: str = "cosine",
    keep_better: bool = True,
    run_dir: str | Path,
    epoch_lines: Any = None,
) -> TwoPhaseResult:
    """Notebook 02's two phases on cached arrays, in one call: the steps sections 5 to 7 show one by one.

    Not called in a notebook: the ``retrain`` command runs it (notebook 05's summary names it).

    Phase 1 freezes the base and fits the head on the cached feature maps; phase 2
    unfreezes the last ``n_blocks`` blocks (BatchNormalization stays frozen), recompiles
    with a cosine decay from ``phase2_learning_rate`` and fits the tail (the blocks' input
    to the output) on the cached block inputs, from the epoch where phase 1 stopped.
    Both use early stopping that restores the best epoch; phase 2 is kept only when it
    beats phase 1 on validation.

    Args:
        settings: Course settings (batch size, learning rate, epochs, seed).
        frame: ``path``, ``label`` and ``split`` (train and validation rows needed), in the arrays' row order.
        base: The pretrained base.
        head: A new head for the base (:func:`helpers.heads.build_head`).
        arrays: From :func:`helpers.features.cached_arrays` of
            :func:`helpers.heads.cached_outputs_model` with the same ``n_blocks``: block
            inputs and feature maps, then the same for the flipped images (4 arrays) or not (2).
        n_blocks: Blocks retrained in phase 2.
        phase2_learning_rate: Phase 2's starting learning rate (cosine decay to 0).
        phase2_schedule: ``cosine`` (notebook 02's default) or ``constant`` (notebook 04's plain
            recipe: the same rate every step).
        keep_better: Keep phase 2 only when it beats phase 1 on validation (the lesson's rule);
            False keeps it whatever (tests that must see phase 2's weights).
        label_smoothing: Label smoothing of the categorical loss.
        class_weights: Weigh each class by the inverse of its share of the training images.
        run_dir: Folder for the phases' best checkpoints.
        epoch_lines: A stream for one plain line per epoch (None: silent).

    Raises:
        ValueError: Arrays that do not match the frame, a frame without train or validation rows,
            an unknown schedule.
    """
    import keras

    if phase2_schedule not in ("cosine", "constant"):
        raise ValueError(f"phase2_schedule must be 'cosine' or 'constant', not {phase2_schedule!r}.")

    backbone = backbones.get_backbone(settings=settings)
    if len(arrays) not in (2, 4) or any(len(a) != len(frame) for a in arrays):
        raise ValueError("arrays must be the 2 or 4 outputs of heads.cached_outputs_model for these rows of frame.")
    splits_present = set(frame["split"])
    if not {"train", "validation"} <= splits_present:
        raise ValueError(f"the frame needs train and validation rows (it has {sorted(splits_present)}).")
    block_views, map_views = list(arrays[0::2]), list(arrays[1::2])
    names = pipeline.class_names(frame)
    ids = pipeline.encode_labels(frame["label"], names)
    # compile_model takes one-hot targets with label smoothing (the categorical loss), class ids without.
    targets = one_hot_labels(ids, len(names)) if label_smoothing else ids
    rows = {name: np.flatnonzero(frame["split"].to_numpy() == name) for name in ("train", "validation", "test")}
    weights = None
    if class_weights:
        counts = np.bincount(ids[rows["train"]], minlength=len(names))
        weights = {k: len(rows["train"]) / (len(names) * max(int(n), 1)) for k, n in enumerate(counts)}
    batch, patience, seed = settings.batch_size, settings.run.early_stopping_patience, settings.seed
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    def callbacks(phase: str, epochs: int) -> list[Any]:
        chosen = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
            keras.callbacks.ModelCheckpoint(str(run_dir / f"{phase}.keras"), monitor="val_loss", save_best_only=True),
        ]
        return chosen + ([_EpochLines(phase, epochs, epoch_lines)] if epoch_lines is not None else [])

    def validation_accuracy(model: "keras.Model", views: list[np.ndarray]) -> float:
        predicted = _both_views(model, views, rows["validation"], 2 * batch)
        return float(np.mean(predicted.argmax(axis=1) == ids[rows["validation"]]))

    # Phase 1: the head on the frozen base's feature maps.
    freeze_for_phase(base, backbone, 1)
    compile_model(head, settings.learning_rate, label_smoothing=label_smoothing)
    keras.utils.set_random_seed(seed)
    began = time.perf_counter()
    history1 = head.fit(
        features.batches(map_views, targets, rows=rows["train"], batch_size=batch, shuffle=True, seed=seed),
        validation_data=features.batches(map_views[0], targets, rows=rows["validation"], batch_size=batch),
        epochs=settings.run.head_epochs, class_weight=weights, verbose=0,
        callbacks=callbacks("phase 1", settings.run.head_epochs),
    )
    seconds1 = time.perf_counter() - began
    accuracy1 = validation_accuracy(head, map_views)
    test1 = _both_views(head, map_views, rows["test"], 2 * batch) if len(rows["test"]) else None

    # Phase 2: the last blocks and the head, on the cached block inputs.
    tail = tail_model(base, head, backbone, n_blocks)
    phase1_weights = tail.get_weights()
    freeze_for_phase(base, backbone, 2, n_blocks)
    train = features.batches(block_views, targets, rows=rows["train"], batch_size=batch, shuffle=True, seed=seed)
    epochs2 = settings.run.finetune_epochs
    rate = cosine_schedule(phase2_learning_rate, epochs2 * len(train)) if phase2_schedule == "cosine" else phase2_learning_rate
    compile_model(tail, rate, label_smoothing=label_smoothing)
    began = time.perf_counter()
    history2 = tail.fit(
        train, validation_data=features.batches(block_views[0], targets, rows=rows["validation"], batch_size=batch),
        initial_epoch=len(history1.epoch), epochs=len(history1.epoch) + epochs2, class_weight=weights, verbose=0,
        callbacks=callbacks("phase 2", len(history1.epoch) + epochs2),
    )
    seconds2 = time.perf_counter() - began
    accuracy2 = validation_accuracy(tail, block_views)
    kept = accuracy2 > accuracy1 or not keep_better  # phase 2 must beat phase 1 on validation, not tie
    if not kept:
        tail.set_weights(phase1_weights)
    test = None
    if len(rows["test"]):
        test = _both_views(tail, block_views, rows["test"], 2 * batch) if kept else test1
    phases = pd.DataFrame(
        {
            "epochs": [len(history1.epoch), len(history2.epoch)],
            "seconds": [round(seconds1, 1), round(seconds2, 1)],
            "trained parameters": [count_trainable_parameters(head), count_trainable_parameters(tail)],
            "validation accuracy": [accuracy1, accuracy2],
            "kept": [not kept, kept],
        },
        index=pd.Index(["phase 1: the head", f"phase 2: the last {n_blocks} block(s) and the head"], name="phase"),
    )
    model = assemble_model(base, head)
    return TwoPhaseResult(
        model=flip_averaged(model) if len(arrays) == 4 else model,
        class_names=list(names),
        history=merge_histories({PHASE_HEAD: history1.history, PHASE_BLOCKS: history2.history}),
        phases=phases,
        validation_accuracy=accuracy2 if kept else accuracy1,
        test_probabilities=test,
        head_test_probabilities=test1,
    )
