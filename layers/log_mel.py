"""`LogMel`: the in-graph (tf.signal) twin of `pipelines.audio_features`."""

import keras
import numpy as np
import tensorflow as tf

from pipelines.audio_features import FeatureConfig


@keras.saving.register_keras_serializable(package="rnn_pipeline")
class LogMel(keras.layers.Layer):
    """Speech features inside the graph, equal to `compute_features`.

    Follows the eight steps of `FeatureConfig`'s definition with TensorFlow
    ops, on a padded batch: frames without centring (`tf.signal.frame`), the
    config's Hann window, power spectrum (`tf.signal.rfft`), librosa's Slaney
    mel filter bank embedded as a constant (`FeatureConfig.mel_matrix()`),
    leading and trailing frames dropped with `trim_db`, `log(mel +
    log_offset)` (floored `top_db` below the loudest bin when set),
    optionally the orthonormal DCT-II for MFCCs
    (`tf.signal.dct`), then per-utterance mean/variance normalisation over
    each utterance's own frames only. Frames past an utterance's length are
    zero, so padding never changes the features of the frames that count.
    TensorFlow ops only: it runs in a SavedModel without the project's code,
    on CPU or GPU.

    Args:
        config: A `pipelines.audio_features.FeatureConfig` (or its `to_dict()`).

    Call arguments:
        inputs: `[waveform, waveform_length]`: float32 `(batch, samples)`
            mono audio at `config.sample_rate`, padded at the end, and the
            true lengths, int `(batch,)`.

    Returns:
        `[features, feature_length]`: float32 `(batch, frames,
        config.n_features)` and int32 `(batch,)`, where an utterance of `n`
        samples has `1 + (n - n_fft) // hop_length` frames (0 when
        `n < n_fft`; `compute_features` rejects those), fewer with `trim_db`.

    Example:

    ```python
    import numpy as np
    layer = LogMel(FeatureConfig(n_mels=40))
    waveform = np.random.uniform(-0.5, 0.5, (2, 16000)).astype("float32")
    features, lengths = layer([waveform, np.array([16000, 8000], "int32")])
    # features.shape == (2, 98, 40); lengths == [98, 48]
    ```
    """

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = FeatureConfig.from_dict(config)
        if not isinstance(config, FeatureConfig):
            raise TypeError(
                "Received an invalid value for argument `config`, expected a "
                f"FeatureConfig or its dict, got {type(config).__name__}."
            )
        super().__init__(**kwargs)
        self.config = config
        self.supports_masking = False

    def build(self, input_shape):
        # Constants, not weights: nothing here is trained and the values come
        # from the config alone.
        self._window = tf.constant(self.config.window())
        self._mel_matrix = tf.constant(self.config.mel_matrix())
        self.built = True

    def num_frames(self, waveform_length):
        """Frames `(batch,)` int32 of waveforms of `waveform_length` samples."""
        config = self.config
        length = tf.cast(waveform_length, tf.int32)
        frames = 1 + (length - config.n_fft) // config.hop_length
        return tf.where(length >= config.n_fft, frames, 0)

    def call(self, inputs):
        waveform, waveform_length = inputs
        config = self.config
        waveform = tf.cast(waveform, tf.float32)
        feature_length = self.num_frames(waveform_length)
        frames = tf.signal.frame(waveform, config.n_fft, config.hop_length, pad_end=False)
        spectrum = tf.signal.rfft(frames * self._window, fft_length=[config.n_fft])
        power = tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))
        mel = tf.tensordot(power, self._mel_matrix, axes=1)
        if config.trim_db is not None:
            mel, feature_length = self._trim(mel, feature_length)
        features = tf.math.log(mel + config.log_offset)
        mask = tf.sequence_mask(feature_length, tf.shape(features)[1], dtype=tf.float32)[:, :, None]
        if config.top_db is not None:
            # The utterance's loudest bin, over its own frames only.
            valid = tf.where(mask > 0, features, tf.fill(tf.shape(features), -np.inf))
            loudest = tf.reduce_max(valid, axis=[1, 2], keepdims=True)
            features = tf.maximum(features, loudest - config.top_db * np.log(10.0) / 10.0)
        if config.kind == "mfcc":
            features = tf.signal.dct(features, type=2, norm="ortho")[..., : config.n_mfcc]
        features = features * mask
        if config.normalisation != "none":
            # Over the valid frames: per feature, or over every value of the utterance.
            per_feature = config.normalisation == "utterance"
            axis = [1] if per_feature else [1, 2]
            count = tf.maximum(tf.cast(feature_length, tf.float32), 1.0)[:, None, None]
            if not per_feature:
                count = count * config.n_features
            mean = tf.reduce_sum(features, axis=axis, keepdims=True) / count
            centred = (features - mean) * mask
            var = tf.reduce_sum(tf.math.square(centred), axis=axis, keepdims=True) / count
            features = centred / tf.sqrt(var + config.norm_epsilon)
        return [features, feature_length]

    def _trim(self, mel, feature_length):
        """Each utterance's frames from its first to its last loud one, moved to the front."""
        steps = tf.shape(mel)[1]
        valid = tf.sequence_mask(feature_length, steps)
        energy = tf.where(valid, tf.reduce_sum(mel, axis=2), 0.0)
        threshold = tf.reduce_max(energy, axis=1, keepdims=True) * np.float32(10.0 ** (-self.config.trim_db / 10.0))
        loud = valid & (energy >= threshold)
        index = tf.range(steps)[None, :]
        first = tf.reduce_min(tf.where(loud, index, steps), axis=1)
        last = tf.reduce_max(tf.where(loud, index, -1), axis=1)
        length = tf.maximum(last - first + 1, 0)
        mel = tf.gather(mel, tf.minimum(first[:, None] + index, steps - 1), batch_dims=1)
        return mel[:, : tf.maximum(tf.reduce_max(length), 0)], length

    def compute_output_shape(self, input_shape):
        waveform_shape = input_shape[0]
        return [
            (waveform_shape[0], None, self.config.n_features),
            (waveform_shape[0],),
        ]

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict()}
