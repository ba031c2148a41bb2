"""`--distribute`: data-parallel training with `tf.distribute`.

`mirrored` builds and trains the model under a `tf.distribute.MirroredStrategy`
over every GPU of the machine (every logical CPU device on a machine without
one: normally one, so one replica): each step splits the batch
(`--batch-size` is the global batch) across the replicas and sums their
gradients. `models.ctc_model.CTCModel` scales its loss by 1 / replicas as
Keras' own losses do, so a step equals one on the whole batch.
"""

import tensorflow as tf

DISTRIBUTE = ("none", "mirrored")


def distribution_strategy(name):
    """The `tf.distribute.Strategy` that `--distribute NAME` selects."""
    if name not in DISTRIBUTE:
        raise ValueError(f"Received an invalid value for `distribute`, expected one of {DISTRIBUTE}, got {name!r}.")
    if name == "none":
        return tf.distribute.get_strategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([device.name for device in devices])

