"""`Bidirectional`: `keras.layers.Bidirectional` whose two fused directions
share the cores."""

import keras


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class Bidirectional(keras.layers.Bidirectional):
    """`keras.layers.Bidirectional` for `ElmanRNN`, one loop per direction.

    The same arguments, weights, outputs and saved configuration as
    `keras.layers.Bidirectional`; only how the fused loops split the batch
    differs. TensorFlow's executor runs the two directions at once, and on
    CPU each fused `ElmanRNN` splits its batch into one loop per core
    (`layers.fused_elman.batch_shards`): inside `keras.layers.Bidirectional`
    that makes four loops on two cores. Here the directions are traced
    inside `layers.fused_elman.side_by_side(2)`, so on two cores each
    direction runs one loop (on four or more, two each). The numbers are
    the same; the bidirectional speech benchmark's training step took 4-5%
    less time and its inference call 8% less on a 2-core Zen 4 (see
    `side_by_side`). Any other wrapped layer runs as in
    `keras.layers.Bidirectional`.

    The class keeps Keras' name on purpose: Keras names a layer's group in
    a weights file (`.weights.h5`, and the weights inside `.keras`) after
    its class, so weights saved from a model built with this class load
    into the same model built with `keras.layers.Bidirectional` and back
    (with `ElmanRNN` or with `keras.layers.RNN(ElmanCell)` inside).

    Example:

    ```python
    import numpy as np
    from layers import Bidirectional, ElmanCell, ElmanRNN
    x = np.random.random((4, 20, 8)).astype("float32")
    birnn = Bidirectional(ElmanRNN(ElmanCell(16), return_sequences=True))
    y = birnn(x)  # (4, 20, 32)
    ```
    """

    # The signature of keras.layers.Bidirectional.call: Keras matches its
    # argument names (`build(sequences_shape, ...)`, masks, `training`).
    def call(self, sequences, initial_state=None, mask=None, training=None):
        kwargs = dict(initial_state=initial_state, mask=mask, training=training)
        if keras.backend.backend() != "tensorflow":
            return super().call(sequences, **kwargs)
        from layers.fused_elman import side_by_side

        with side_by_side(2):
            return super().call(sequences, **kwargs)
