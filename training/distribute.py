"""`--distribute`: data-parallel training with `tf.distribute` (both tasks).

`mirrored` builds and trains the model under a `tf.distribute.MirroredStrategy`
over every GPU of the machine (every logical CPU device on a machine without
one: normally one, so one replica): each step splits the batch
(`--batch-size` is the global batch) across the replicas and sums their
gradients. `models.ctc_model.CTCModel` scales its loss by 1 / replicas as
Keras' own losses do, so a step equals one on the whole batch, as long as
the gradient-norm clip (`--clipnorm` of the language model, 5 for the
transcriber) does not act: Keras 3 clips each replica's part of the gradient
before summing the parts, so a clipped step is clipped more loosely than on
one device (up to replicas x the norm).
"""

import tensorflow as tf

DISTRIBUTE = ("none", "mirrored")


def distribution_strategy(name):
    """The `tf.distribute.Strategy` that `--distribute NAME` selects."""
    if name not in DISTRIBUTE:
        raise ValueError(f"Received an invalid value for `distribute`, expected one of {DISTRIBUTE}, got {name!r}.")
    if name == "none":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:  # NCCL all-reduce (TensorFlow's choice for GPUs)
        return tf.distribute.MirroredStrategy([device.name for device in gpus])
    # Between CPU devices TensorFlow picks collective all-reduce, which fails on
    # the sparse gradients of an embedding (each replica's holds other rows:
    # "Shape mismatch in the collective"); sum them on one device instead.
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(
        [device.name for device in cpus], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )

