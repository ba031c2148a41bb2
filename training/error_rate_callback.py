"""`ErrorRateCallback`: validation CER/WER after each epoch, into the logs."""

import keras

from models.transcription_evaluation import evaluate_transcription


class ErrorRateCallback(keras.callbacks.Callback):
    """Decode a validation set greedily after each epoch; log CER and WER.

    Puts `{prefix}cer` and `{prefix}wer` into the epoch logs, so callbacks
    after it in the list (EarlyStopping, ModelCheckpoint, TensorBoard,
    keras-tuner's objective, History) can monitor them: place it first. It
    also prints the rates and a few reference/hypothesis pairs.

    Args:
        dataset: Labelled batches, as for `evaluate_transcription`.
        vocabulary: The `Vocabulary` of the labels and the model.
        num_examples: Reference/hypothesis pairs printed per epoch.
        prefix: Prefix of the log keys ("val_" gives `val_cer`, `val_wer`).
        max_batches: Score only the first batches (None: all).
        verbose: Whether to print.
    """

    def __init__(
        self,
        dataset,
        *,
        vocabulary,
        num_examples=3,
        prefix="val_",
        max_batches=None,
        verbose=True,
    ):
        super().__init__()
        self.dataset = dataset
        self.vocabulary = vocabulary
        self.num_examples = num_examples
        self.prefix = prefix
        self.max_batches = max_batches
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        result = evaluate_transcription(
            self.model,
            self.dataset,
            vocabulary=self.vocabulary,
            max_batches=self.max_batches,
        )
        if logs is not None:
            logs[f"{self.prefix}cer"] = result["cer"]
            logs[f"{self.prefix}wer"] = result["wer"]
        if not self.verbose:
            return
        print(
            f"Epoch {epoch + 1}: {self.prefix}cer {result['cer']:.2%}, "
            f"{self.prefix}wer {result['wer']:.2%} "
            f"on {result['utterances']} utterances (greedy decoding)"
        )
        for reference, hypothesis in list(
            zip(result["references"], result["hypotheses"])
        )[: self.num_examples]:
            print(f"  ref: {reference}\n  hyp: {hypothesis}")
