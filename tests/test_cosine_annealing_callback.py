"""Tests for `training.cosine_annealing_callback`."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.cosine_annealing_callback import CosineAnnealingCallback


def test_rate_follows_the_cosine_by_steps_or_time():
    schedule = CosineAnnealingCallback(1e-2, 100, max_seconds=60.0, final_fraction=0.1)
    assert schedule.learning_rate(0, 0.0) == pytest.approx(1e-2)
    assert schedule.learning_rate(50, 0.0) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))
    assert schedule.learning_rate(100, 0.0) == pytest.approx(1e-3)
    # Time ahead of steps wins: 45 of 60 s is 75% of the run.
    expected = 1e-2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.75)))
    assert schedule.learning_rate(10, 45.0) == pytest.approx(expected)
    assert schedule.learning_rate(500, 500.0) == pytest.approx(1e-3)  # floor, never below
    # Unknown epoch length: time alone.
    by_time = CosineAnnealingCallback(1e-2, None, max_seconds=60.0, final_fraction=0.1)
    assert by_time.learning_rate(10**9, 0.0) == pytest.approx(1e-2)
    assert by_time.learning_rate(0, 45.0) == pytest.approx(expected)


def test_fit_sets_the_rate_before_each_batch():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    schedule = CosineAnnealingCallback(0.5, 4, final_fraction=0.0)
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        )
    )
    x = np.ones((8, 2), "float32")
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0, callbacks=[schedule, probe])
    expected = [0.5 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_a_resumed_run_continues_the_decay_from_the_optimizer_step():
    # BackupAndRestore restores the optimizer (its iteration count included);
    # the schedule picks up from there instead of restarting at the top.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x = np.ones((8, 2), "float32")
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0)  # 4 steps done
    schedule = CosineAnnealingCallback(0.5, 8, final_fraction=0.0)
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        )
    )
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0, callbacks=[schedule, probe])
    expected = [0.5 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(4, 8)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    # resume_from_optimizer=False (a tuning trial's fit): the decay starts anew at step 0
    # although the optimizer has now taken 8 steps.
    seen.clear()
    fresh = CosineAnnealingCallback(0.5, 8, final_fraction=0.0, resume_from_optimizer=False)
    model.fit(x, x[:, :1], batch_size=2, epochs=1, verbose=0, callbacks=[fresh, probe])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 12
    np.testing.assert_allclose(seen, [0.5 * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(4)], rtol=1e-6)


def _rates_seen(model, x, epochs, schedule, initial_epoch=0):
    seen = []
    probe = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        )
    )

    def batches():  # a generator: Keras does not know the epoch length
        for start in range(0, len(x), 2):
            yield x[start : start + 2], x[start : start + 2, :1]

    dataset = tf.data.Dataset.from_generator(
        batches,
        output_signature=(tf.TensorSpec((None, 2), "float32"), tf.TensorSpec((None, 1), "float32")),
    )
    model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=[schedule, probe])
    return seen


def test_unknown_epoch_length_is_learned_from_the_first_epoch():
    # 4 steps an epoch, 3 epochs planned: the first epoch at the top rate (its
    # length not known yet), then the decay over 12 steps, at its floor after.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    schedule = CosineAnnealingCallback(0.5, None, epochs=3, final_fraction=0.0)
    seen = _rates_seen(model, np.ones((8, 2), "float32"), 4, schedule)
    assert schedule.total_steps == 12
    expected = [0.5] * 4 + [0.5 * 0.5 * (1 + math.cos(math.pi * min(s, 12) / 12)) for s in range(4, 16)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6, atol=1e-9)


def test_a_resumed_run_takes_the_epoch_length_from_the_epochs_done():
    # As BackupAndRestore resumes: the optimizer has taken 2 epochs of 4 steps
    # and fit starts at epoch 2 of 4, so the decay continues over 16 steps.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    x = np.ones((8, 2), "float32")
    model.fit(x, x[:, :1], batch_size=2, epochs=2, verbose=0)  # 8 steps done
    schedule = CosineAnnealingCallback(0.5, None, epochs=4, final_fraction=0.0)
    seen = _rates_seen(model, x, 4, schedule, initial_epoch=2)
    assert schedule.total_steps == 16
    expected = [0.5 * 0.5 * (1 + math.cos(math.pi * s / 16)) for s in range(8, 16)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)



def test_an_epoch_that_trained_no_step_leaves_the_epoch_length_unknown():
    # With an unknown length, Keras begins one batch that finds the data
    # exhausted; an epoch of only that batch must not plan a 0- or 1-step
    # decay (the rate would drop to its floor at once): the next epoch's
    # 4 steps give the length instead.
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    schedule = CosineAnnealingCallback(0.5, None, epochs=3, final_fraction=0.0)
    schedule.set_model(model)
    schedule.on_train_begin()
    schedule.on_epoch_begin(0)
    schedule.on_train_batch_begin(0)  # the batch that finds no data
    schedule.on_epoch_end(0, {})
    assert schedule.total_steps is None
    schedule.on_epoch_begin(1)
    for batch in range(4):
        schedule.on_train_batch_begin(batch)
        schedule.on_train_batch_end(batch)
    schedule.on_epoch_end(1, {})
    assert schedule.total_steps == 12
    schedule.on_epoch_begin(2)
    schedule.on_train_batch_begin(0)  # step 4 of 12
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert rate == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 4 / 12)))

@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"initial_learning_rate": 0, "total_steps": 1}, "`initial_learning_rate`, expected a positive float, got 0"),
        ({"initial_learning_rate": 1.0, "total_steps": 0}, "`total_steps`, expected a positive integer or None, got 0"),
        ({"initial_learning_rate": 1.0, "total_steps": None}, "`total_steps=None`, `epochs=None` and `max_seconds=None`"),
        ({"initial_learning_rate": 1.0, "total_steps": None, "epochs": 0}, "`epochs`, expected a positive integer or None, got 0"),
        ({"initial_learning_rate": 1.0, "total_steps": 4, "epochs": 2}, "pass `epochs` only when the number of steps is unknown"),
        ({"initial_learning_rate": 1.0, "total_steps": 1, "max_seconds": -1}, "`max_seconds`, expected a positive number or None, got -1"),
        ({"initial_learning_rate": 1.0, "total_steps": 1, "final_fraction": 2}, "`final_fraction`, expected a float in [0, 1], got 2"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        CosineAnnealingCallback(**kwargs)
    assert message in str(error.value)
