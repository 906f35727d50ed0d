"""The learning-rate finder on problems whose good rates are known, and on a phase-2 style model with frozen layers."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import lr_finder


def _linear_problem(rows: int = 512, features: int = 8, seed: int = 0):
    """Least squares on standardised inputs: the Hessian of the MSE is 2 X'X / n, about 2 I.

    Plain gradient descent is stable for rates below 2 / (largest eigenvalue), about 1 here,
    and fastest near 0.5: good rates lie between about 1e-3 and 1, rates above ~1 diverge.
    """
    import keras

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features)).astype("float32")
    y = (x @ rng.standard_normal(features) + 0.1 * rng.standard_normal(rows)).astype("float32")[:, None]
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse")
    largest = float(np.linalg.eigvalsh(2 * x.T @ x / rows).max())
    return model, x, y, 2.0 / largest


def test_suggestion_lands_among_the_rates_that_train_and_the_sweep_stops_at_divergence():
    model, x, y, unstable_above = _linear_problem()
    before = [w.copy() for w in model.get_weights()]
    result = lr_finder.find_learning_rate(model, x, y, start=1e-5, stop=100.0, steps=80, batch_size=64)
    assert 0.5 < unstable_above < 2.0  # the problem is what the docstring says
    assert 1e-3 <= result.suggestion < unstable_above, (result.suggestion, unstable_above)
    assert 1e-3 <= result.minimum_over_10 < unstable_above
    assert result.stopped == "diverged" and result.learning_rates[-1] > unstable_above / 2
    assert len(result.losses) == len(result.learning_rates) == len(result.smoothed) < 80
    assert np.all(np.diff(result.learning_rates) > 0)
    # the original model is untouched: same weights, and it still has its own optimizer and rate
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert np.isclose(float(model.optimizer.learning_rate), 0.01)
    # a rate picked by the finder trains the model; one past divergence does not
    import keras

    def final_loss(rate):
        trial = keras.models.clone_model(model)
        trial.set_weights(before)
        trial.compile(optimizer=keras.optimizers.SGD(learning_rate=rate), loss="mse")
        return trial.fit(x, y, batch_size=64, epochs=3, verbose=0).history["loss"][-1]

    start_loss = float(model.evaluate(x, y, verbose=0))
    assert final_loss(result.suggestion) < 0.2 * start_loss
    assert not final_loss(10 * unstable_above) < start_loss


def test_logistic_head_with_adam_and_a_frozen_layer_as_in_phase_2():
    """A softmax head on 'cached inputs' behind a frozen layer: the frozen weights never move, the suggestion is sane."""
    import keras

    rng = np.random.default_rng(1)
    centres = rng.standard_normal((3, 16)) * 3
    labels = rng.integers(0, 3, 300)
    x = (centres[labels] + rng.standard_normal((300, 16))).astype("float32")
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16,))
    frozen = keras.layers.Dense(16, activation="relu", name="last_block")
    frozen.trainable = False
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(frozen(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    train_rows = np.arange(0, 300, 2)  # the sweep sees these rows only: the others are poisoned
    x[1::2] = 6e4
    cached = x.astype("float16")  # notebook 02 caches its arrays in float16
    result = lr_finder.find_learning_rate(model, cached, labels, steps=60, batch_size=32, rows=train_rows)
    assert 1e-4 <= result.suggestion <= 1.0
    assert result.losses[0] > min(result.smoothed)  # the loss fell somewhere in the sweep
    assert result.losses[:20].max() < 20, "a poisoned row (not in rows) was trained on"
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert [w.name for w in model.trainable_weights] == ["kernel", "bias"] and not frozen.trainable
    figure = result.plot()
    assert figure.axes[0].get_xscale() == "log" and len(figure.axes[0].lines) == 4
    import matplotlib.pyplot as plt

    plt.close(figure)
    assert list(result.table().columns) == ["learning_rate", "loss", "smoothed"]


def test_bad_arguments_are_refused_with_advice():
    import keras

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    x, y = np.zeros((8, 2), "float32"), np.zeros((8, 1), "float32")
    with pytest.raises(ValueError, match="not compiled"):
        lr_finder.find_learning_rate(model, x, y)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="start < stop"):
        lr_finder.find_learning_rate(model, x, y, start=1.0, stop=0.1)
    with pytest.raises(ValueError, match="at least 10"):
        lr_finder.find_learning_rate(model, x, y, steps=3)
    with pytest.raises(ValueError, match="one target per example"):
        lr_finder.find_learning_rate(model, x, y[:5])
    # a model compiled with a schedule (notebook 02's phase 2: CosineDecay): the sweep sets plain rates on its copy
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=100)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    sweep = lr_finder.find_learning_rate(model, np.ones((8, 2), "float32"), np.ones((8, 1), "float32"), steps=10)
    assert len(sweep.losses) >= 6 and np.isfinite(sweep.suggestion)
    assert isinstance(model.optimizer.get_config()["learning_rate"], dict), "the model keeps its own schedule"
    with pytest.raises(ValueError, match="rows must be"):
        lr_finder.find_learning_rate(model, x, y, rows=[0, 8])
    with pytest.raises(ValueError, match="beta"):
        lr_finder.smooth([1.0], beta=1.0)


def test_suggestion_ignores_the_noise_of_the_flat_start():
    """Batch noise at tiny rates can drop the loss faster from one point to the next than the real descent does."""
    rates = np.logspace(-7, 0, 90)
    logs = np.log10(rates)
    loss = np.where(logs < -3, 2.0, 2.0 - 0.5 * (logs + 3))  # flat, then falls 0.5 per decade from 1e-3...
    loss = np.where(logs > -1.3, 1.15 + 3 * (logs + 1.3), loss)  # ...to a minimum near 5e-2, then explodes
    loss[1], loss[2] = 1.85, 2.0  # one noisy batch at the start: a drop of 0.15 in 0.08 decade
    steepest, tenth = lr_finder.suggest(rates, loss)
    assert 1e-3 <= steepest <= 5e-2 and 1e-3 <= tenth <= 1e-2
