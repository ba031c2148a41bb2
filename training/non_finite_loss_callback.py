"""`NonFiniteLossCallback`: stop a run whose training loss becomes NaN or infinite."""

import math

import keras


class NonFiniteLossCallback(keras.callbacks.Callback):
    """Raise a ValueError when a training batch's loss is not finite.

    `keras.callbacks.TerminateOnNaN` only stops `fit`, after which a run
    would go on to evaluate, save and export a model of NaN weights over
    the last good one. Raising instead keeps what the run wrote before
    (its best checkpoint, its backup) and says what to check.

    Args:
        hint: The end of the message: what to check, e.g. the flags and
            files behind the run's data.
    """

    def __init__(self, hint):
        super().__init__()
        self.hint = hint
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise ValueError(
                f"The training loss became {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1}; "
                f"the run stops without saving this model (its best checkpoint and backup are kept). "
                f"{self.hint}"
            )
