"""`--distribute`: data-parallel training with `tf.distribute` (both tasks).

`mirrored` builds and trains the model under a `tf.distribute.MirroredStrategy`
over every GPU of the machine (every logical CPU device on a machine without
one: normally one, so one replica): each step splits the batch
(`--batch-size` is the global batch) across the replicas and sums their
gradients. `models.ctc_model.CTCModel` scales its loss by 1 / replicas as
Keras' own losses do, so a step equals one on the whole batch. Keras 3 clips
each replica's part of the gradient before summing the parts (a clipped step
would be clipped more loosely than on one device, up to replicas x the norm);
`clip_after_summing` makes the runs' optimizers clip the sum instead.
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


def _scaled(gradient, factor):
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(gradient.values * factor, gradient.indices, gradient.dense_shape)
    return gradient * factor


def clip_after_summing(optimizer):
    """Make `optimizer` clip the replicas' summed gradient, as one device clips the whole batch's.

    Keras 3's `apply` clips the gradient each replica holds (`clipnorm`,
    `global_clipnorm`, `clipvalue`), then sums the replicas' parts. Under a
    strategy of several replicas this `optimizer` instead sums the parts
    first (one more all-reduce), clips the sum, and hands each replica
    1 / replicas of the clipped sum with its own clipping off, so Keras' sum
    gives back the clipped sum. Elsewhere (one replica, no clipping) it is
    unchanged. The instance is patched, not its class: saved models keep a
    plain Keras optimizer.
    """
    apply, clip = type(optimizer).apply, type(optimizer)._clip_gradients
    clipped = []  # non-empty while `apply` runs on a clipped sum

    def clip_gradients(grads):
        return grads if clipped else clip(optimizer, grads)

    def apply_summed(grads, trainable_variables=None):
        context = tf.distribute.get_replica_context()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        clipping = optimizer.clipnorm or optimizer.global_clipnorm or optimizer.clipvalue
        if context is None or replicas == 1 or not clipping:
            return apply(optimizer, grads, trainable_variables)
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))
        shares = [_scaled(gradient, 1.0 / replicas) for gradient in clip(optimizer, summed)]
        clipped.append(True)
        try:
            return apply(optimizer, shares, trainable_variables)
        finally:
            clipped.clear()

    optimizer._clip_gradients = clip_gradients
    optimizer.apply = apply_summed
    return optimizer


def build_distributed(name, build, *, batch_size):
    """`build()` (a compiled Keras model) under the strategy `--distribute NAME` selects.

    The model's and the optimizer's variables are made in the strategy's
    scope, and the optimizer clips the replicas' summed gradient
    (`clip_after_summing`). Prints the strategy and its replicas unless NAME
    is "none".
    """
    strategy = distribution_strategy(name)
    if name != "none":
        print(f"Distribution: {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s), "
              f"each step's batch of {batch_size} split across them")
    with strategy.scope():
        model = build()
    if name != "none":
        clip_after_summing(model.optimizer)
    return model
