"""`TrainingClock` and `ClockedBackupAndRestore`: a time budget that survives a restart.

A run paced by `--max-train-minutes` (its `TimeBudgetCallback` and the time
share of its `CosineAnnealingCallback`) must not start its budget afresh when
`keras.callbacks.BackupAndRestore` resumes a killed run: the learning rate
would jump back to its initial value and the run would train its whole budget
again. The clock counts the seconds and epochs of training so far; the backup
keeps them beside its weights and gives them back on restore.
"""

import json
import os
import time

import keras

from training.cli import write_json
from training.data_seed import reseed_random_layers

CLOCK_FILE = "training_clock.json"  # in the backup directory, beside Keras' own files


class TrainingClock:
    """Seconds and epochs of training so far, a killed run's included.

    `seconds()` is `earlier_seconds` plus the time since `start()` (or since
    the clock was made); `earlier_seconds` and `earlier_epochs` are what a
    restored backup had trained, 0 for a fresh run.

    Args:
        time_fn: The time source, in seconds (`time.monotonic`; tests pass a fake).
    """

    def __init__(self, time_fn=time.monotonic):
        self._time = time_fn
        self._start = time_fn()
        self.earlier_seconds = 0.0
        self.earlier_epochs = 0

    def start(self):
        """Count this process's training from now on."""
        self._start = self._time()

    def seconds(self):
        return self.earlier_seconds + (self._time() - self._start)


class ClockedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that also backs up a `TrainingClock`.

    Each epoch's backup records the clock's seconds at that epoch's end (the
    last two, as Keras keeps two backups with `double_checkpoint`); a restored
    backup of epoch N sets the clock to N epochs and the seconds recorded for
    N, then starts it. The record is written before the backup, so a kill
    between the two finds the previous backup's seconds. A backup made
    without the record (before this class existed) resumes with the clock at
    zero, as plain `BackupAndRestore` did.

    Args:
        backup_dir: As for `BackupAndRestore`.
        clock: The `TrainingClock` the run's time budget and schedule read.
        **kwargs: Passed to `BackupAndRestore`.
    """

    def __init__(self, backup_dir, clock, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.clock = clock
        self._clock_path = os.path.join(backup_dir, CLOCK_FILE)

    def _records(self):
        try:
            with open(self._clock_path, encoding="utf-8") as f:
                records = json.load(f)["seconds_by_epoch"]
            return {int(epoch): float(seconds) for epoch, seconds in records.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # restores the weights and the epoch
        restored = getattr(self.model, "_initial_epoch", 0) or 0
        # Dropout's and the augmentation layers' draws go on from another seed, not from epoch 1's.
        reseed_random_layers(self.model, restored)
        seconds = self._records().get(restored) if restored else None
        self.clock.earlier_epochs = restored if seconds is not None else 0
        self.clock.earlier_seconds = seconds if seconds is not None else 0.0
        if restored and seconds is not None:
            print(f"Resumed after epoch {restored} ({seconds / 60:.1f} min of training so far).")
        self.clock.start()

    def on_epoch_end(self, epoch, logs=None):
        # The record first, then Keras' backup of epoch + 1: a run killed
        # between the two resumes from the backup of `epoch`, whose seconds
        # the record still holds (it keeps the last two epochs). The other
        # order lost the record of a backup written just before a kill.
        if self.save_freq == "epoch":
            records = self._records()
            records[epoch + 1] = round(self.clock.seconds(), 3)
            latest = sorted(records)[-2:]
            write_json(self._clock_path, {"seconds_by_epoch": {str(e): records[e] for e in latest}})
        super().on_epoch_end(epoch, logs)  # writes the backup of epoch + 1
