"""An ensemble of transcription runs: `python train.py --task transcription --ensemble N`.

On a speaker it never heard, a single run's error depends on its seed more
than on any flag (README, FSDD); a few runs packed into one export take most
of that spread away. `--ensemble N` does in one command what the README's
loop over seeds and `serving.export_run RUN RUN ...` do by hand:

- N runs of the same flags with seeds SEED, SEED+1, ..., SEED+N-1 are trained
  one after the other into `OUTPUT_DIR/members/seed_S` (`training.transcription.run`,
  `--max-train-minutes` each). Each is a complete run directory:
  transcribe.py, `--init-from` and `serving.export_run` take it.
- The members are scored together on the validation split (and the test split
  when the dataset has one) as their export decodes
  (`serving.transcription_export.ensemble_outputs`: the members' greedy
  hypothesis with the lowest summed CTC loss) and exported packed as one
  SavedModel in `OUTPUT_DIR/export/transcriber/V`. No beam-search figure:
  beam search of the members' mean probability reads their CTC spikes,
  which fall on different frames, smeared (FSDD, four members: 26.4% WER on
  the new speaker against 12.6% for the served choice); `evaluate_export
  --lm` decodes the mean well, summing over alignments with a language model.
- With `--candidates FILE`, closed-vocabulary decoding of the members' mean
  probability is scored too (`val_wer_closed`, ...), and the export serves
  it as its `text`.
- `OUTPUT_DIR` holds the ensemble's `config.json` and `metrics.json` (its own
  `val_cer`/`val_wer`, the members' figures under `members`: their closed-
  vocabulary figures those of this command's `--candidates`, scored again for
  a reused member made with others), and the `vocabulary.json` and
  `feature_config.json` the members share.

A killed ensemble run resumes when the same command runs again: finished
members are reused, the member in progress resumes from its own backup
(`keras.callbacks.BackupAndRestore`). A member directory written with other
flags stops the run before anything is trained, naming the file and the
fields that differ, and so does one holding a finished member's metrics but
not its model; its files are never overwritten. The same command on a
finished ensemble is refused (it would export the same members unchanged);
other `--candidates`, `--candidate-warps`, `--export` or N go on.
"""

import dataclasses
import json
import os

import keras
import tensorflow as tf

from models.transcription_evaluation import (
    closed_vocabulary_texts,
    evaluate_closed_vocabulary,
    outputs_function,
    score_decodings,
)
from training import transcription
from training.cli import (
    NON_LEARNING_FIELDS,
    check_run_directory,
    config_differences,
    config_to_dict,
    finished_summary,
    write_json,
)

MEMBERS_DIR = "members"


def member_dir(output_dir, seed):
    """Where the ensemble run in `output_dir` trains its member with `seed`."""
    return os.path.join(output_dir, MEMBERS_DIR, f"seed_{seed}")


def member_configs(config):
    """The `Config` of each member of the ensemble `config` describes.

    Member `k` (from 0) is the same run with seed `config.seed + k`, in
    `OUTPUT_DIR/members/seed_S`, without an export of its own (the ensemble's
    export packs it).
    """
    return [
        dataclasses.replace(
            config,
            ensemble=1,
            seed=config.seed + k,
            export=False,
            output_dir=member_dir(config.output_dir, config.seed + k),
        )
        for k in range(config.ensemble)
    ]


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _check_member(member, model_builder=None):
    """A ValueError when `member.output_dir` holds a run made with other settings,
    or by another model builder than `model_builder` (`transcription.check_same_builder`),
    or a finished run's metrics without its model; else the saved config (a dict) or None.

    `training.cli.check_run_directory`: fields that do not change what a run
    learns (decoding, scoring, where it runs and where its files are) are not
    compared, so `--candidates` may be added to a finished ensemble's
    command; a field the saved config lacks (written before the field
    existed) counts as its default.
    """
    earlier = check_run_directory(member.output_dir, member, what="ensemble member",
                                  config_file=transcription.CONFIG_FILE,
                                  ignore=NON_LEARNING_FIELDS | {transcription.MODEL_BUILDER_KEY})
    # A finished member is reused: it must be this builder's model.
    transcription.check_same_builder(member.output_dir, earlier, model_builder, what="ensemble member")
    has = {name: os.path.isfile(os.path.join(member.output_dir, name))
           for name in (transcription.METRICS_FILE, transcription.MODEL_FILE)}
    if (earlier is not None and has[transcription.METRICS_FILE] and not has[transcription.MODEL_FILE]
            and not os.path.exists(os.path.join(member.output_dir, transcription.BACKUP_DIR))):
        # Not reusable, and its run would refuse to train it again (check_not_finished).
        raise ValueError(
            f"{member.output_dir} holds {transcription.METRICS_FILE} but no {transcription.MODEL_FILE}: this "
            f"finished ensemble member cannot be reused, and training it again would replace its files. "
            f"Nothing was trained: remove {member.output_dir} to train this member again (--overwrite does "
            f"not combine with --ensemble)."
        )
    return earlier


# The fields of a member's config that its closed-vocabulary figures depend on.
CLOSED_DECODING_FIELDS = ("candidates", "candidate_warps")


def _closed_figures_reusable(saved, config):
    """Whether a reused member's closed-vocabulary figures (its config dict `saved`) are those
    the ensemble `config` would score: the same --candidates and --candidate-warps."""
    return saved is not None and all(saved.get(name) == getattr(config, name) for name in CLOSED_DECODING_FIELDS)


def _finished(member):
    """Whether `member.output_dir` holds a finished run (the model and its metrics)."""
    return all(
        os.path.isfile(os.path.join(member.output_dir, name))
        for name in (transcription.MODEL_FILE, transcription.METRICS_FILE)
    )


# The fields that do not change what a finished ensemble's rerun writes (its members are reused):
# those that do not change what a run learns, but for the closed-vocabulary decoding and the export.
_RERUN_IGNORED = NON_LEARNING_FIELDS - {"export", *CLOSED_DECODING_FIELDS}


def _exported_candidates(out):
    """The closed-vocabulary texts of the finished ensemble's export in `out`, or None."""
    from serving.export import read_metadata

    try:
        with open(os.path.join(out, transcription.METRICS_FILE), encoding="utf-8") as f:
            return read_metadata(json.load(f)["export_dir"]).get("candidates")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_not_finished(out, earlier, config, members, candidates):
    """Refuse the same command again on a finished ensemble (its metrics.json written, every member
    finished): it would score the same members and export them again unchanged, as a new version.
    Other --candidates (or the same file edited since), --candidate-warps, --export or another N go
    on (they change what it writes)."""
    if (earlier is None or config_differences(earlier, config, ignore=_RERUN_IGNORED)
            or not os.path.isfile(os.path.join(out, transcription.METRICS_FILE))
            or not all(_finished(member) for member in members)):
        return
    if config.export and candidates is not None and _exported_candidates(out) != list(candidates):
        return  # the --candidates file was edited since: scored and exported with its texts now
    raise ValueError(
        f"{out} holds a finished ensemble of this command ({finished_summary(out, transcription.METRICS_FILE)}); "
        f"running it again would score its {len(members)} members and export them again unchanged. Nothing was "
        f"written: give other --candidates or --candidate-warps to score and export them with those, "
        f"`python -m serving.export_run {out}` to export them again, or remove {out} to train it again "
        f"(--overwrite does not combine with --ensemble)."
    )


def evaluate_ensemble(models, dataset, *, vocabulary, candidates=None, warps=None):
    """CER and WER of `models` decoding `dataset` together, as their export does.

    Args:
        models: Transcription models (`{"features", "feature_length"}` ->
            `{"log_probs", "frame_length"}`) trained on the same features and
            vocabulary with the same frame stacking.
        dataset: Batches of `(inputs, labels)` as `evaluate_transcription` takes.
        vocabulary: The members' `Vocabulary`.
        candidates: Optional texts: also score closed-vocabulary decoding
            of the members' mean probability (`ctc_choose_text`), as the
            export does with `candidates`.
        warps: Optional mel-axis factors for the closed-vocabulary choice
            (the mean likelihood over the warped features, each scored by the
            members' mean probability), as the export's `candidate_warps`.

    Returns:
        `{"cer", "wer", "references", "hypotheses", "utterances"}`, and
        `"cer_closed"`, `"wer_closed"` with `candidates`.
    """
    from serving.transcription_export import ensemble_outputs

    @tf.function(reduce_retracing=True)
    def decode(features, feature_length):
        return ensemble_outputs(models, features, feature_length, vocabulary)

    def decode_batch(inputs):
        outputs = decode(inputs["features"], inputs["feature_length"])
        texts = {"text": [" ".join(vocabulary.decode(row[row >= 0]).split()) for row in outputs["ids"].numpy()]}
        if candidates is not None:
            texts["closed"] = closed_vocabulary_texts(
                lambda warped: outputs if warps is None else decode(warped["features"], warped["feature_length"]),
                inputs, candidates, vocabulary=vocabulary, warps=warps,
            )
        return texts

    scored = score_decodings(decode_batch, dataset, vocabulary=vocabulary)
    result = scored["text"]
    if candidates is not None:
        result["cer_closed"], result["wer_closed"] = scored["closed"]["cer"], scored["closed"]["wer"]
    return result


def run_ensemble(config, *, callbacks=(), model_builder=None):
    """Train the members of `config.ensemble`, score them together and export them packed.

    Args:
        config: A `training.transcription.Config` with `ensemble > 1`.
        callbacks, model_builder: Passed to every member's
            `training.transcription.run`.

    Returns:
        The metrics dict also written to `OUTPUT_DIR/metrics.json`: the data
        entries of a single run, `val_cer`/`val_wer` (and `test_*`) of the
        ensemble (greedy; `*_closed` too with `--candidates`), `epochs` and
        `train_seconds` summed over the members, `members` (each one's seed,
        directory, epochs, training seconds and error rates, closed-vocabulary
        ones of `config.candidates` and `config.candidate_warps`) and `export_dir`.
    """
    candidates = transcription.read_candidates(config)  # a bad file stops the run before it starts
    out = config.output_dir
    # Another ensemble of these settings (of any size: raising N adds members) or nothing.
    earlier = check_run_directory(out, config, what="ensemble run", config_file=transcription.CONFIG_FILE,
                                  ignore=NON_LEARNING_FIELDS | {"ensemble"})
    if earlier is not None and earlier.get("ensemble", 1) < 2:
        raise ValueError(
            f"{os.path.join(out, transcription.CONFIG_FILE)}: {out} holds a single run (train.py without "
            f"--ensemble), not an ensemble. Its files are left as they are: give another --output-dir, or "
            f"remove {out}."
        )
    members = member_configs(config)
    saved_configs = [_check_member(member, model_builder) for member in members]  # before anything is trained
    _check_not_finished(out, earlier, config, members, candidates)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, transcription.CONFIG_FILE), config_to_dict(config))

    member_metrics = []
    rescored = []  # reused members whose closed-vocabulary figures are another command's
    for index, (member, saved) in enumerate(zip(members, saved_configs), 1):
        label = f"Ensemble member {index}/{len(members)} (seed {member.seed}) in {member.output_dir}"
        if _finished(member):
            print(f"{label}: already trained, reused")
            reused = _read_json(os.path.join(member.output_dir, transcription.METRICS_FILE))
            if not _closed_figures_reusable(saved, config):
                # Scored with other --candidates or --candidate-warps: left out, scored again below.
                reused = {key: value for key, value in reused.items() if not key.endswith("_closed")}
                rescored.append(index - 1)
            member_metrics.append(reused)
            continue
        print(f"{label}: training")
        keras.backend.clear_session()  # the same layer names in every member
        member_metrics.append(transcription.run(member, callbacks=callbacks, model_builder=model_builder))

    keras.backend.clear_session()
    prepared = transcription.prepare_data(config)
    vocabulary, feature_config, data = prepared.vocabulary, prepared.feature_config, prepared.data
    models = [transcription.load_transcriber(member.output_dir)[0] for member in members]
    rate_keys = [f"{split}_{rate}{kind}" for split in ("val", "test") for kind in ("", "_closed")
                 for rate in ("cer", "wer")]
    warps = transcription.candidate_warp_factors(config)
    metrics = {
        **transcription.data_metrics(config, prepared),
        "ensemble": len(members),
        "epochs": sum(m["epochs"] for m in member_metrics),
        "train_seconds": round(sum(m["train_seconds"] for m in member_metrics), 1),
    }
    for prefix, dataset in {"val": data.validation, "test": getattr(data, "test", None)}.items():
        if dataset is None:
            continue
        if candidates is not None:
            for index in rescored:  # each member's closed-vocabulary figures of this command's texts
                closed = evaluate_closed_vocabulary(outputs_function(models[index]), dataset, candidates,
                                                    vocabulary=vocabulary, warps=warps)
                member_metrics[index][f"{prefix}_cer_closed"] = closed["cer"]
                member_metrics[index][f"{prefix}_wer_closed"] = closed["wer"]
        rates = evaluate_ensemble(
            models, dataset, vocabulary=vocabulary, candidates=candidates, warps=warps,
        )
        metrics[f"{prefix}_cer"] = rates["cer"]
        metrics[f"{prefix}_wer"] = rates["wer"]
        metrics[f"{prefix}_utterances"] = rates["utterances"]
        if candidates is not None:
            metrics[f"{prefix}_cer_closed"] = rates["cer_closed"]
            metrics[f"{prefix}_wer_closed"] = rates["wer_closed"]
        singles = ", ".join(f"{m[f'{prefix}_cer']:.2%}" for m in member_metrics if f"{prefix}_cer" in m)
        print(
            f"{prefix}: CER {rates['cer']:.2%}, WER {rates['wer']:.2%} (ensemble of {len(models)}, "
            f"{rates['utterances']} utterances; the members alone: CER {singles})"
            + (
                f"; closed vocabulary ({len(candidates)} texts): CER {rates['cer_closed']:.2%}, "
                f"WER {rates['wer_closed']:.2%}"
                if candidates is not None
                else ""
            )
        )

    metrics["members"] = [
        {
            "seed": member.seed,
            "run_dir": member.output_dir,
            "epochs": m["epochs"],
            "train_seconds": m["train_seconds"],
            **{key: m[key] for key in rate_keys if key in m},
        }
        for member, m in zip(members, member_metrics)
    ]
    vocabulary.save(os.path.join(out, transcription.VOCABULARY_FILE))
    write_json(os.path.join(out, transcription.FEATURE_CONFIG_FILE), feature_config.to_dict())
    metrics["export_dir"] = transcription.export_for_serving(
        config, models, vocabulary, feature_config, data,
        {k: v for k, v in metrics.items() if k != "skipped_files"}, candidates,
    )
    write_json(os.path.join(out, transcription.METRICS_FILE), metrics)
    print(f"Saved the ensemble's metrics in {out} and its export in {metrics['export_dir']}")
    return metrics
