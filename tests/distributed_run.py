"""Run by tests/test_distribute.py in a fresh process: the CPU split into two
logical devices (which must happen before TensorFlow starts), so that
`--distribute mirrored` trains on two replicas. Prints one JSON line."""

import dataclasses
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from models.transcription_evaluation import evaluate_transcription  # noqa: E402
from tests.transcription_fixtures import NUM_FEATURES, make_speech_data  # noqa: E402
from training import transcription  # noqa: E402
from training.distribute import clip_after_summing, distribution_strategy  # noqa: E402

out = sys.argv[1]
VOCABULARY = transcription.Vocabulary(transcription.SPEECH_ALPHABET)
TINY = dict(hidden_size=24, num_layers=1, frame_stack=1, dropout=0.0, batch_size=8, learning_rate=1e-2,
            beam_width=2, num_examples=1)
result = {}

# One SGD step on two replicas against the same step on one device (same initial weights; no
# frequency warp, whose random draws differ between a replica's half-batch and the whole batch).
inputs, labels = next(iter(make_speech_data(train=8, validation=8).train))
batch = tf.data.Dataset.from_tensors((inputs, labels))
for optimizer in ("sgd", "adam_clipped"):
    steps = {}
    for name in ("none", "mirrored"):
        strategy = distribution_strategy(name)
        with strategy.scope():
            keras.utils.set_random_seed(5)
            model = transcription.build_model(transcription.Config(frequency_warp=0.0, **TINY),
                                              num_features=NUM_FEATURES, vocabulary_size=VOCABULARY.size)
            # SGD shows the loss's scale; Adam with a small norm clip that acts on every weight,
            # that the clip sees the replicas' summed gradient (as the runs' optimizers do).
            model.compile(optimizer=keras.optimizers.SGD(0.5) if optimizer == "sgd"
                          else clip_after_summing(keras.optimizers.Adam(0.01, clipnorm=0.05)))
        before = [w.numpy() for w in model.weights]
        loss = model.fit(batch, epochs=1, verbose=0).history["loss"][0]
        steps[name] = (strategy.num_replicas_in_sync, before, [w.numpy() for w in model.weights], loss)
    result[optimizer] = {
        "replicas": [steps[n][0] for n in ("none", "mirrored")],
        "loss": [steps[n][3] for n in ("none", "mirrored")],
        "initial_difference": max(float(np.abs(a - b).max()) for a, b in zip(steps["none"][1], steps["mirrored"][1])),
        "update_size": max(float(np.abs(a - b).max()) for a, b in zip(steps["none"][2], steps["none"][1])),
        "step_difference": max(float(np.abs(a - b).max()) for a, b in zip(steps["none"][2], steps["mirrored"][2])),
    }

# A whole run with --distribute mirrored on the made-up data, then its model read back on one device.
transcription.build_speech_datasets = lambda **kwargs: make_speech_data(train=16, validation=8, test=8)
transcription.Config.feature_config = lambda self: transcription.FeatureConfig(n_mels=NUM_FEATURES)
metrics = transcription.run(transcription.Config(output_dir=out, epochs=2, distribute="mirrored", **TINY))
model = keras.models.load_model(f"{out}/model.keras", compile=False)
data = make_speech_data(train=16, validation=8, test=8)
result["val_cer"] = metrics["val_cer"]
result["val_cer_reloaded"] = evaluate_transcription(model, data.validation, vocabulary=VOCABULARY)["cer"]
served = tf.saved_model.load(metrics["export_dir"]).signatures["from_features"]
features, lengths = next(iter(data.validation))[0].values()
result["export_difference"] = float(np.abs(
    served(features=features, feature_length=lengths)["log_probs"]
    - model({"features": features, "feature_length": lengths})["log_probs"]
).max())

# A run on two replicas killed after its first epoch resumes from its backup at the second, with the
# weights it had (BackupAndRestore under the strategy).
class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]
        raise KeyboardInterrupt("simulated kill")


class Starts(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.weights = [w.copy() for w in self.model.get_weights()]
        raise KeyboardInterrupt("stop after the restore")


resume_config = transcription.Config(output_dir=f"{out}_resume", epochs=2, distribute="mirrored", **TINY)
killed, restarted = Interrupt(), Starts()
for callback in (killed, restarted):
    try:
        transcription.run(resume_config, callbacks=[callback])
    except KeyboardInterrupt:
        pass
result["resumed_at_epoch"] = restarted.epoch
result["resumed_weights_difference"] = max(
    float(np.abs(a - b).max()) for a, b in zip(killed.weights, restarted.weights))
# The same backup restored without the strategy (a run, or an ensemble's member, moved to one device).
on_one_device = Starts()
try:
    transcription.run(dataclasses.replace(resume_config, distribute="none"), callbacks=[on_one_device])
except KeyboardInterrupt:
    pass
result["resumed_on_one_device_at_epoch"] = on_one_device.epoch
result["resumed_on_one_device_weights_difference"] = max(
    float(np.abs(a - b).max()) for a, b in zip(killed.weights, on_one_device.weights))

# A one-trial search on two replicas: its best model's metrics are those of the saved model on one device.
from tuning.config import TuningConfig  # noqa: E402
from tuning.run_search import run_search  # noqa: E402
from tuning.tasks import tuning_task  # noqa: E402

built_on = []  # replicas of the strategy each trial's model is built under


def recording_build(*args, **kwargs):
    built_on.append(tf.distribute.get_strategy().num_replicas_in_sync)
    return tuning_task("transcription").build_model(*args, **kwargs)


search = run_search(
    dataclasses.replace(tuning_task("transcription"), build_model=recording_build),
    transcription.Config(output_dir=f"{out}_search", epochs=1, distribute="mirrored", **TINY),
    TuningConfig(tune=True, tuner="random", max_trials=1, max_epochs=1, min_hidden_size=16, max_hidden_size=16,
                 min_num_layers=1, max_num_layers=1),
)
best_model = keras.models.load_model(f"{out}_search/tuning/best/model.keras", compile=False)
result["search_built_on"] = built_on
result["search_best_val_cer"] = search["best"]["metrics"]["val_cer"]
result["search_best_val_cer_reloaded"] = evaluate_transcription(
    best_model, make_speech_data(train=16, validation=8, test=8).validation, vocabulary=VOCABULARY)["cer"]

# The language model: a run on two replicas, its validation loss against its saved model's on one device.
from models.language_model_evaluation import long_context_loss  # noqa: E402
from models.language_model_io import load_language_model  # noqa: E402
from training import language_model  # noqa: E402

text_path = f"{out}_lm.txt"
with open(text_path, "w", encoding="utf-8") as f:
    f.write("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 30)
lm_config = language_model.Config(
    dataset=text_path, epochs=2, hidden_size=16, embedding_dim=8, num_layers=1, sequence_length=20,
    batch_size=8, output_dir=f"{out}_lm", sample_length=20, verbose=0, distribute="mirrored",
)
lm_metrics = language_model.run(lm_config)
data = language_model.prepare_data(lm_config)
lm, vocabulary = load_language_model(f"{out}_lm/model.keras")
lm.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
result["lm_val_loss"] = lm_metrics["val_loss_nats"]
result["lm_val_loss_reloaded"] = float(lm.evaluate(data.validation, verbose=0))
result["lm_long_context"] = [
    lm_metrics["val_loss_nats_long_context"],
    long_context_loss(lm, vocabulary.encode(data.validation_text), num_chunks=min(16, len(data.validation_text) - 1)),
]
print(json.dumps(result))
