"""`CTCModel`: a functional Keras model trained with CTC on its own lengths."""

import keras
import tensorflow as tf
from keras import ops

from keras.src.losses.loss import scale_loss_for_distribution

from models.ctc_loss import ctc_loss


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class CTCModel(keras.Model):
    """Functional model `(features, feature_length) -> (log_probs, frame_length)`.

    Construct it exactly like a functional `keras.Model` whose outputs are a
    dict with `"log_probs"` `(batch, frames, classes)` and `"frame_length"`
    `(batch,)`. The only difference is the loss: `compute_loss` reads the
    model's own frame lengths and the labels' true lengths and returns the
    mean CTC loss (`models.ctc_loss.ctc_loss`), so `compile` needs only an
    optimizer and `fit(dataset)` takes batches of
    `({"features", "feature_length"}, labels)` with labels padded by
    `vocabulary.pad_id`. Inference, saving and export see an ordinary
    functional model.

    Example:

    ```python
    model = build_transcription_model(num_features=80, vocabulary_size=30)
    model.fit(train_dataset, validation_data=validation_dataset)
    outputs = model.predict(batch_inputs)  # {"log_probs", "frame_length"}
    ```
    """

    weight_noise = 0.0
    weight_noise_seed = 0

    def weight_noises(self, step):
        """The noise `train_step` adds to each trainable variable at `step`."""
        step = tf.cast(step, tf.int64)
        return [
            tf.random.stateless_normal(
                variable.shape,
                seed=tf.stack([tf.constant(self.weight_noise_seed + index, tf.int64), step]),
                stddev=self.weight_noise,
                dtype=variable.dtype,
            )
            for index, variable in enumerate(self.trainable_variables)
        ]

    def train_step(self, data):
        if not self.weight_noise:
            return super().train_step(data)
        # Automatic control dependencies keep the order: noise on, the step
        # (forward, gradients, update), noise off.
        noises = self.weight_noises(self.optimizer.iterations)
        for variable, noise in zip(self.trainable_variables, noises):
            variable.assign_add(noise)
        logs = super().train_step(data)
        for variable, noise in zip(self.trainable_variables, noises):
            variable.assign_sub(noise)
        return logs

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if not isinstance(y_pred, dict) or not {"log_probs", "frame_length"} <= set(y_pred):
            raise ValueError(
                "CTCModel expects its outputs to be a dict with keys "
                "'log_probs' and 'frame_length', got "
                f"{type(y_pred).__name__} {list(y_pred) if isinstance(y_pred, dict) else ''}."
            )
        per_utterance = ctc_loss(y, y_pred["log_probs"], y_pred["frame_length"])
        if sample_weight is not None:
            per_utterance = per_utterance * ops.cast(sample_weight, per_utterance.dtype)
        loss = ops.mean(per_utterance)
        if self.losses:
            loss = loss + ops.sum(ops.stack(self.losses))
        # Under a tf.distribute strategy each replica's loss is a mean over its
        # share of the batch and the replicas' gradients are summed: scaled by
        # 1 / replicas, as Keras' own losses are, the step equals one on the
        # whole batch (Keras unscales the reported loss).
        return scale_loss_for_distribution(loss)
