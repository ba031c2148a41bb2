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

A batch need not split evenly: `tf.distribute` gives the replicas 2 and 1 of
a batch of 3, and 1 and none of a batch of 1 (each length bucket's last
batch, a validation set's last). `weigh_by_examples` makes such a step the
one-device step too, and such a batch neither the first of a `fit` nor a
replica's empty share stop the run.
"""

import keras
import tensorflow as tf

from training.options import DISTRIBUTE


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
    first (one more all-reduce), clips the sum, and hands it to the first
    replica and zeros to the others, with its own clipping off, so Keras'
    sum gives back the clipped sum. Elsewhere (one replica, no clipping) it is
    unchanged. The instance is patched, not its class: saved models keep a
    plain Keras optimizer. A `LossScaleOptimizer` (mixed_float16) has the
    optimizer it wraps patched.
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # mixed_float16: the wrapper unscales the gradients and hands them to the
        # optimizer it wraps, which clips them (the wrapper has no clipping of its own).
        clip_after_summing(optimizer.inner_optimizer)
        return optimizer
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
        # The first replica's share is the clipped sum, the others' zeros. Not 1 / replicas
        # each: Keras' sum of an embedding's sparse parts keeps every part's rows, and Adam
        # squares rows before adding them up, so halved copies of the rows would change its
        # second moment (the language model's step).
        first = tf.equal(context.replica_id_in_sync_group, 0)
        shares = [_scaled(gradient, tf.cast(first, gradient.dtype)) for gradient in clip(optimizer, summed)]
        clipped.append(True)
        try:
            return apply(optimizer, shares, trainable_variables)
        finally:
            clipped.clear()

    optimizer._clip_gradients = clip_gradients
    optimizer.apply = apply_summed
    return optimizer


def _first_replica(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def weigh_by_examples(model):
    """Make `model`'s steps on several replicas equal one-device steps when a batch does not split evenly.

    Each replica's loss is a mean over its share of the batch, scaled by
    1 / replicas (Keras' losses, `models.ctc_model.CTCModel`): right when the
    shares are equal, but a batch of 3 on two replicas weighs the replica
    with 1 example as much as the one with 2, and one with none has no mean
    (the CTC loss stops the run: "batch_size must not be 0"). Under a
    strategy of several replicas this `model` instead weighs each replica's
    loss by its share of the batch's examples (a replica with none adds
    nothing), so the summed gradient is that of the whole batch's mean; the
    loss Keras reports (weighted by each replica's examples) is unchanged.
    Keras builds the model before `fit` and `evaluate` from their first
    batch averaged across the replicas, which fails when its shares differ
    in size: this `model` takes the first replica's share instead. The
    instance is patched; elsewhere (one replica) it is unchanged.
    """
    strategy = model.distribute_strategy
    if strategy.num_replicas_in_sync == 1:
        return model
    compute_loss = model._compute_loss

    def weighted_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        context = tf.distribute.get_replica_context()
        if context is None or tf.distribute.get_strategy().num_replicas_in_sync == 1:
            return compute_loss(x, y, y_pred, sample_weight, training)
        examples = tf.shape(next(value for value in tf.nest.flatten(x) if value is not None))[0]
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(examples, tf.float32))
        loss = tf.cond(examples > 0, lambda: tf.cast(compute_loss(x, y, y_pred, sample_weight, training),
                                                     tf.float32),
                       lambda: tf.zeros((), tf.float32))
        weighted = loss * (tf.cast(examples, tf.float32) * strategy.num_replicas_in_sync / total)
        # The value of `loss` (Keras' loss tracker weighs each replica's by its examples),
        # the gradient of `weighted`.
        return weighted + tf.stop_gradient(loss - weighted)

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(lambda value: _first_replica(strategy, value), next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._compute_loss = weighted_loss
    model._maybe_symbolic_build = symbolic_build
    return model


def build_distributed(name, build, *, batch_size):
    """`build()` (a compiled Keras model) under the strategy `--distribute NAME` selects.

    The model's and the optimizer's variables are made in the strategy's
    scope, the optimizer clips the replicas' summed gradient
    (`clip_after_summing`), and batches that do not split evenly across the
    replicas are weighed by their examples (`weigh_by_examples`). Prints the
    strategy and its replicas unless NAME is "none".
    """
    strategy = distribution_strategy(name)
    if name != "none":
        replicas = strategy.num_replicas_in_sync
        print(f"Distribution: {type(strategy).__name__}, {replicas} replica(s), "
              + (f"each step's batch of {batch_size} split across them" if replicas > 1
                 else "one device: each step is the whole batch"))
    with strategy.scope():
        model = build()
    if name != "none":
        clip_after_summing(model.optimizer)
        weigh_by_examples(model)
    return model
