"""repeat_epochs: one iterator for a whole `fit`, epochs of the dataset's length."""

import keras
import numpy as np
import tensorflow as tf

from pipelines.epochs import repeat_epochs
from tests.transcription_fixtures import make_speech_data


def _take(dataset, count):
    return [int(x) for x in dataset.take(count)]


def test_epochs_are_whole_passes_reshuffled():
    dataset = tf.data.Dataset.range(7).shuffle(7, seed=1, reshuffle_each_iteration=True)
    repeated, steps = repeat_epochs(dataset)
    assert steps == 7
    values = _take(repeated, 21)
    epochs = [values[i:i + 7] for i in range(0, 21, 7)]
    assert all(sorted(epoch) == list(range(7)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1  # a new order each epoch


def test_the_repeated_dataset_runs_without_autotuning():
    """Freeing the iterator of an autotuned pipeline waited for tf.data's
    autotuning thread after long runs; the repeated dataset turns it off."""
    repeated, _ = repeat_epochs(tf.data.Dataset.range(7).map(lambda x: x + 1, num_parallel_calls=tf.data.AUTOTUNE))
    assert repeated.options().autotune.enabled is False
    assert _take(repeated, 8) == [1, 2, 3, 4, 5, 6, 7, 1]


def test_the_pipelines_datasets_run_without_autotuning():
    # Every dataset the pipelines hand out, and those made from them: an autotuned iterator freed
    # by the garbage collector waited up to two minutes for its tuning thread (py-spy, test suite).
    from pipelines.text_dataset import text_window_dataset
    from training.transcription import pad_time_to_multiple

    windows = text_window_dataset(np.arange(50, dtype=np.int32), sequence_length=5, batch_size=2, shuffle=True,
                                  seed=1)
    assert windows.options().autotune.enabled is False
    speech = make_speech_data(train=4, validation=2)
    padded = pad_time_to_multiple(speech.train, 3)
    assert padded.options().autotune.enabled is False
    assert next(iter(padded))[0]["features"].shape[1] % 3 == 0


def test_unknown_or_infinite_length_is_left_to_keras():
    unknown = tf.data.Dataset.range(10).filter(lambda x: x % 2 == 0)
    assert repeat_epochs(unknown) == (unknown, None)
    infinite = tf.data.Dataset.range(3).repeat()
    assert repeat_epochs(infinite) == (infinite, None)


def test_fit_runs_each_epoch_over_every_batch_once():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    dataset = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).shuffle(10, seed=0).batch(4)  # 3 batches
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(0)

        def on_train_batch_end(self, batch, logs=None):
            seen[-1] += 1

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    repeated, steps = repeat_epochs(dataset)
    history = model.fit(repeated, steps_per_epoch=steps, epochs=3, verbose=0, shuffle=False, callbacks=[Record()])
    assert steps == 3 and seen == [3, 3, 3] and len(history.history["loss"]) == 3
