"""A resumed run's time budget and time-paced decay go on where the killed run stopped."""

import json
import math

import keras
import numpy as np
import pytest

from training.cosine_annealing_callback import CosineAnnealingCallback
from training.time_budget_callback import TimeBudgetCallback
from training.training_clock import CLOCK_FILE, ClockedBackupAndRestore, TrainingClock

SECONDS_PER_BATCH = 10.0
BATCHES_PER_EPOCH = 4
BUDGET = 130.0  # 3.25 epochs of 40 s
EPOCHS = 10
LR = 0.1


class _FakeTime:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class _Tick(keras.callbacks.Callback):
    """Each batch takes SECONDS_PER_BATCH of fake time; records the rate it was given."""

    def __init__(self, time):
        super().__init__()
        self.time = time
        self.rates = []
        self.epochs = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    def on_train_batch_end(self, batch, logs=None):
        self.time.now += SECONDS_PER_BATCH

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


class _Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == 2:
            raise KeyboardInterrupt("simulated kill")


def _fit(model, backup_dir, time, extra=()):
    clock = TrainingClock(time_fn=time)
    tick = _Tick(time)
    callbacks = [
        CosineAnnealingCallback(LR, EPOCHS * BATCHES_PER_EPOCH, max_seconds=BUDGET, final_fraction=0.0, clock=clock),
        tick,
        ClockedBackupAndRestore(str(backup_dir), clock, double_checkpoint=True),
        TimeBudgetCallback(BUDGET, clock),
        *extra,
    ]
    x = np.ones((BATCHES_PER_EPOCH * 2, 2), "float32")
    model.fit(x, x[:, :1], batch_size=2, epochs=EPOCHS, verbose=0, callbacks=callbacks)
    return clock, tick


def _model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(LR), "mse")
    return model


def _cosine(progress):
    return LR * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def test_a_resumed_run_counts_the_killed_runs_training_time(tmp_path, capsys):
    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), backup, _FakeTime(0.0), extra=[_Kill()])
    record = json.loads((backup / CLOCK_FILE).read_text())
    assert record == {"seconds_by_epoch": {"1": 40.0, "2": 80.0}}

    # Another process: its monotonic time has nothing to do with the first one's.
    clock, tick = _fit(_model(), backup, _FakeTime(5000.0))
    assert "Resumed after epoch 2 (1.3 min of training so far)." in capsys.readouterr().out
    assert clock.earlier_epochs == 2 and clock.earlier_seconds == 80.0
    # The decay goes on from 80 s of 130 (step 8 of 40 is less far): not from the top.
    assert tick.rates[0] == pytest.approx(_cosine(80.0 / BUDGET), rel=1e-6)
    # The budget: epoch 3 ends at 120 s, and another 40 s epoch would overrun 130 s.
    assert tick.epochs == [2]
    assert clock.seconds() == pytest.approx(120.0)
    assert not backup.exists()  # Keras removes the backup (the clock's record with it) at the end


def test_a_fresh_run_and_a_backup_without_a_clock_record_start_at_zero(tmp_path):
    backup = tmp_path / "backup"
    clock, tick = _fit(_model(), backup, _FakeTime(300.0))
    assert clock.earlier_seconds == 0.0 and clock.earlier_epochs == 0
    assert tick.rates[0] == pytest.approx(LR)
    assert tick.epochs == [0, 1, 2]  # 120 s, then another epoch would overrun
    # A backup written before the clock was kept (no record): the budget starts afresh.
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), backup, _FakeTime(0.0), extra=[_Kill()])
    (backup / CLOCK_FILE).unlink()
    clock, tick = _fit(_model(), backup, _FakeTime(0.0))
    assert clock.earlier_seconds == 0.0 and clock.earlier_epochs == 0
    assert tick.epochs == [2, 3, 4]


def test_a_kill_right_after_kerass_backup_keeps_the_clock(tmp_path, monkeypatch):
    """The clock's record is written before Keras' backup of the same epoch.

    Killed after the backup of epoch 2 is written and before anything else
    happens: the resumed run counts 80 s, not zero (with the record written
    after the backup, this kill left a backup without its seconds).
    """
    backup = tmp_path / "backup"
    keras_backup = keras.callbacks.BackupAndRestore.on_epoch_end

    def backup_then_kill(self, epoch, logs=None):
        keras_backup(self, epoch, logs)
        if epoch + 1 == 2:
            raise KeyboardInterrupt("killed right after the backup")

    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", backup_then_kill)
    with pytest.raises(KeyboardInterrupt):
        _fit(_model(), backup, _FakeTime(0.0))
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", keras_backup)

    clock, tick = _fit(_model(), backup, _FakeTime(7000.0))
    assert clock.earlier_epochs == 2 and clock.earlier_seconds == 80.0
    assert tick.epochs == [2]
    assert tick.rates[0] == pytest.approx(_cosine(80.0 / BUDGET), rel=1e-6)


class _SlowingTick(keras.callbacks.Callback):
    """Batches of 10 s in the first epoch and 20 s after it; each epoch's end
    (its validation, say) takes 15 s before the budget sees it."""

    def __init__(self, time):
        super().__init__()
        self.time = time
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.time.now += 10.0 if len(self.batches) < BATCHES_PER_EPOCH else 20.0
        self.batches.append(self.time.now)

    def on_epoch_end(self, epoch, logs=None):
        self.time.now += 15.0


def test_the_budget_cuts_a_slow_epoch_leaving_room_for_its_validation(capsys):
    time = _FakeTime(0.0)
    clock = TrainingClock(time_fn=time)
    tick = _SlowingTick(time)
    budget = TimeBudgetCallback(120.0, clock)
    x = np.ones((BATCHES_PER_EPOCH * 2, 2), "float32")
    history = _model().fit(
        x, x[:, :1], batch_size=2, epochs=EPOCHS, verbose=0, callbacks=[tick, budget]
    )
    # Epoch 1 ends at 55 s (4 x 10 s + 15 s), and another 55 s fits in 120 s.
    # Epoch 2: after its second batch (95 s), a third (20 s) and the epoch's
    # end (15 s) would reach 130 s: it stops there, and ends at 110 s.
    assert tick.batches == [10.0, 20.0, 30.0, 40.0, 75.0, 95.0]
    assert len(history.epoch) == 2
    assert clock.seconds() == pytest.approx(110.0) and budget.stopped_early
    assert (
        "Stopping: another batch (~20.0 s) and this epoch's validation (~15 s) "
        "would overrun the time budget of 120 s." in capsys.readouterr().out
    )


class _Masks(keras.callbacks.Callback):
    """The dropout mask of each epoch's first batch (what the model's random layer drew)."""

    def __init__(self):
        super().__init__()
        self.masks = {}

    def on_epoch_begin(self, epoch, logs=None):
        dropout = self.model.get_layer("dropout")
        self.masks[epoch] = keras.ops.convert_to_numpy(dropout(np.ones((1, 16), "float32"), training=True))


def _dropout_model():
    inputs = keras.Input((2,))
    hidden = keras.layers.Dropout(0.5, seed=3, name="dropout")(keras.layers.Dense(16)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(keras.optimizers.SGD(LR), "mse")
    return model


def test_a_resumed_run_does_not_replay_its_random_layers_first_draws(tmp_path):
    # Keras' save_weights keeps no seed generator state: restored, dropout would draw epoch 1's
    # masks again. The resumed run's generators start from a seed made of theirs and the epoch.
    backup = tmp_path / "backup"
    first = _Masks()
    with pytest.raises(KeyboardInterrupt):
        _fit(_dropout_model(), backup, _FakeTime(0.0), extra=[_Kill(), first])
    resumed = _Masks()
    _fit(_dropout_model(), backup, _FakeTime(0.0), extra=[resumed])
    assert sorted(first.masks) == [0, 1] and sorted(resumed.masks) == [2]
    assert not np.array_equal(first.masks[0], first.masks[1])
    assert not np.array_equal(resumed.masks[2], first.masks[0])
    # A run from the start keeps the layer's own seed (its draws are those of every fresh run).
    fresh = _Masks()
    _fit(_dropout_model(), tmp_path / "fresh", _FakeTime(0.0), extra=[fresh])
    np.testing.assert_array_equal(fresh.masks[0], first.masks[0])


def test_reseed_random_layers_only_when_resumed():
    from training.data_seed import data_seed, reseed_random_layers

    model = _dropout_model()
    state = model.get_layer("dropout").seed_generator.state
    assert reseed_random_layers(model, 0) == 0
    assert keras.ops.convert_to_numpy(state.value).tolist() == [3, 0]
    assert reseed_random_layers(model, 2) == 1
    assert keras.ops.convert_to_numpy(state.value).tolist() == [data_seed(3, 2), 0]
