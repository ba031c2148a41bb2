"""Tuning: configuration errors, search spaces, the runner, resuming, Hyperband."""

import csv
import dataclasses
import json
import math
import os
import shutil

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tests.tuning_toy_task import TOY_TASK, ToyConfig
from tuning.config import TuningConfig
from tuning.run_search import run_search
from tuning.search_ranges import SearchRanges
from tuning.search_spaces import (
    LANGUAGE_MODEL_RANGES,
    TRANSCRIPTION_RANGES,
    language_model_space,
    transcription_space,
)


def _rows(output_dir):
    with open(os.path.join(output_dir, "tuning", "trials.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _best(output_dir):
    with open(os.path.join(output_dir, "tuning", "best.json")) as f:
        return json.load(f)


# --- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_trials": 0}, "`max_trials` expects a positive integer, got 0"),
        ({"max_epochs": -1}, "`max_epochs` expects a positive integer, got -1"),
        ({"tuner": "grid"}, "`tuner` expects one of hyperband, bayesian, random, got 'grid'"),
        ({"time_budget_minutes": -5.0}, "`time_budget_minutes` expects a number >= 0"),
        ({"hyperband_factor": 1}, "`hyperband_factor` expects an integer of at least 2, got 1"),
        ({"tuning_seed": -1}, "`tuning_seed` expects an integer in 0..4294967295 (2**32 - 1), got -1."),
        ({"tuning_seed": 2**32}, "`tuning_seed` expects an integer in 0..4294967295 (2**32 - 1), got 4294967296."),
        (
            {"min_hidden_size": 512, "max_hidden_size": 64},
            "Empty search range for `hidden_size`: TuningConfig field `min_hidden_size` (512) "
            "is greater than `max_hidden_size` (64)",
        ),
        ({"min_dropout": 0.3, "max_dropout": 0.1}, "Empty search range for `dropout`"),
        ({"max_learning_rate": 2.0}, "`max_learning_rate` expects a float in (0, 1) or None, got 2.0"),
        ({"min_num_layers": 0}, "`min_num_layers` expects a positive integer or None, got 0"),
    ],
)
def test_tuning_config_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError) as error:
        TuningConfig(**kwargs)
    assert message in str(error.value)


def test_tuning_config_defaults_and_overrides():
    config = TuningConfig()
    assert (config.tune, config.tuner, config.max_trials, config.max_epochs) == (
        False,
        "hyperband",
        8,
        3,
    )
    assert config.range_overrides() == {}
    config = TuningConfig(min_hidden_size=128, max_dropout=0.2)
    assert config.range_overrides() == {"min_hidden_size": 128, "max_dropout": 0.2}


def test_search_ranges_override_that_empties_a_range_is_an_error():
    # 1024 is above the task's default maximum (512): the range would be empty.
    with pytest.raises(ValueError, match="Empty search range for `hidden_size`: min 1024 > max 512"):
        TRANSCRIPTION_RANGES.with_overrides(min_hidden_size=1024)
    with pytest.raises(ValueError, match="Unknown search range bound"):
        TRANSCRIPTION_RANGES.with_overrides(hidden=3)
    assert LANGUAGE_MODEL_RANGES.with_overrides(max_num_layers=3).max_num_layers == 3


@pytest.mark.parametrize(
    "bounds, message",
    [
        (
            {"min_hidden_size": 100},
            "Search range for `hidden_size` 100..512 would never try 512: hidden sizes go in factors of 2 "
            "from the minimum (100, 200, 400). Expected the maximum to be the minimum times a power of 2; "
            "set --max-hidden-size 400 or 800.",
        ),
        (
            {"max_dropout": 0.12},
            "Search range for `dropout` 0..0.12 would never try 0.12: dropout goes in steps of 0.05 from "
            "the minimum (0, 0.05, 0.1). Expected the maximum to be the minimum plus a multiple of 0.05; "
            "set --max-dropout 0.1 or 0.15.",
        ),
        (
            {"min_dropout": 0.1, "max_dropout": 0.97},
            "Search range for `dropout` 0.1..0.97 would never try 0.97: dropout goes in steps of 0.05 from "
            "the minimum (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, "
            "0.85, 0.9, 0.95). Expected the maximum to be the minimum plus a multiple of 0.05; set "
            "--max-dropout 0.95.",
        ),
    ],
)
def test_search_range_whose_maximum_is_off_its_grid_is_an_error(bounds, message):
    with pytest.raises(ValueError) as error:
        TRANSCRIPTION_RANGES.with_overrides(**bounds)
    assert str(error.value) == message


def test_every_maximum_on_the_grid_is_searched():
    # keras-tuner's floor division of (0.3 - 0.0) / 0.05 gives 5 steps, not 6.
    hp = keras_tuner.HyperParameters()
    transcription_space(hp, ranges=TRANSCRIPTION_RANGES, num_features=4, vocabulary_size=6)
    spaces = {p.name: [round(v, 10) for v in p.values] for p in hp.space if p.name in ("hidden_size", "dropout")}
    assert spaces == {"hidden_size": [64, 128, 256, 512], "dropout": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]}
    hp = keras_tuner.HyperParameters()
    ranges = TRANSCRIPTION_RANGES.with_overrides(min_dropout=0.1, max_dropout=0.15)
    transcription_space(hp, ranges=ranges, num_features=4, vocabulary_size=6)
    (dropout,) = [p for p in hp.space if p.name == "dropout"]
    assert [round(v, 10) for v in dropout.values] == [0.1, 0.15]


# --- search spaces ------------------------------------------------------------------


def test_language_model_space_declares_four_hyperparameters_and_builds_them():
    hp = keras_tuner.HyperParameters()
    compiled = {}
    model = language_model_space(
        hp,
        ranges=LANGUAGE_MODEL_RANGES,
        compile_model=lambda model, learning_rate: compiled.update(lr=learning_rate),
        vocabulary_size=20,
        embedding_dim=8,
    )
    space = {p.name: p.get_config() for p in hp.space}
    assert sorted(space) == ["dropout", "hidden_size", "learning_rate", "num_layers"]
    assert (space["hidden_size"]["min_value"], space["hidden_size"]["max_value"]) == (128, 512)
    assert space["hidden_size"]["sampling"] == "log"
    assert space["learning_rate"]["sampling"] == "log"
    # With no values chosen, keras-tuner gives every hyperparameter its minimum.
    assert hp.values == {
        "hidden_size": 128,
        "num_layers": 1,
        "learning_rate": 1e-3,
        "dropout": 0.0,
    }
    assert compiled == {"lr": 1e-3}
    assert model.get_layer("rnn_1").cell.units == 128
    with pytest.raises(ValueError):
        model.get_layer("rnn_2")


def test_transcription_space_passes_sampled_values_to_the_builder():
    hp = keras_tuner.HyperParameters()
    hp.values = {"hidden_size": 64, "num_layers": 2, "learning_rate": 2e-3, "dropout": 0.25}
    ranges = TRANSCRIPTION_RANGES.with_overrides(min_hidden_size=16, max_hidden_size=64)
    model = transcription_space(hp, ranges=ranges, num_features=8, vocabulary_size=10)
    assert model.get_layer("rnn_1").forward_layer.cell.units == 64
    assert model.get_layer("dropout_1").rate == 0.25
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3)
    # 16, 32, 64: hidden sizes go in factors of two.
    (hidden,) = [p for p in hp.space if p.name == "hidden_size"]
    assert list(hidden.values) == [16, 32, 64]


def test_single_value_range_is_allowed():
    hp = keras_tuner.HyperParameters()
    ranges = SearchRanges(
        min_hidden_size=16,
        max_hidden_size=16,
        min_num_layers=1,
        max_num_layers=1,
        min_learning_rate=1e-3,
        max_learning_rate=1e-3,
        min_dropout=0.1,
        max_dropout=0.1,
    )
    model = transcription_space(hp, ranges=ranges, num_features=4, vocabulary_size=6)
    assert hp.values == {"hidden_size": 16, "num_layers": 1, "learning_rate": 1e-3, "dropout": 0.1}
    assert model.get_layer("rnn_0").forward_layer.cell.units == 16


# --- the runner -----------------------------------------------------------------------


def _resume_with_one_more_trial(config, capsys, rows):
    """Run the search in `config.output_dir` (trials.csv: `rows`) again with one more
    trial allowed: exactly that one runs, the earlier rows stay as they were. The rows after."""
    done = len(rows)
    run_search(TOY_TASK, config, TuningConfig(tuner="random", max_trials=done + 1, max_epochs=1))
    out = capsys.readouterr().out
    assert f"resuming: {done} trial(s) already completed" in out
    assert out.count(" starts: ") == 1 and f"trial {done + 1} of {done + 1} (trial_{done}) starts" in out
    resumed = _rows(config.output_dir)
    assert [r["trial_id"] for r in resumed] == [str(i) for i in range(done + 1)]
    assert resumed[:done] == rows
    return resumed


@pytest.mark.long
def test_search_writes_outputs_and_resumes_without_repeating_trials(tmp_path, capsys):
    output_dir = str(tmp_path / "run")
    config = ToyConfig(output_dir=output_dir)
    first = run_search(TOY_TASK, config, TuningConfig(tuner="random", max_trials=1, max_epochs=1))
    rows = _rows(output_dir)
    assert [r["trial_id"] for r in rows] == ["0"]
    assert rows[0]["status"] == "COMPLETED"
    assert int(rows[0]["epochs"]) == 1 and float(rows[0]["seconds"]) > 0
    assert sorted(json.loads(rows[0]["hyperparameters"])) == [
        "dropout",
        "hidden_size",
        "learning_rate",
        "num_layers",
    ]
    out = capsys.readouterr().out
    # Trials are named by their folder (keras-tuner's id, from 0), as in trials.csv and best.json.
    assert "trial 1 of 1 (trial_0) starts" in out and "trial 1 of 1 (trial_0) completed: val_loss=" in out
    assert "best so far val_loss=" in out and "(trial_0: {" in out
    assert os.path.isdir(os.path.join(output_dir, "tuning", "search", "trial_0"))
    assert "[tuning] best: trial_0, val_loss=" in out

    # The same command with a larger budget runs exactly one new trial.
    resumed = _resume_with_one_more_trial(config, capsys, rows)  # the finished trial untouched, not re-run
    assert {r["status"] for r in resumed} == {"COMPLETED"}

    best = _best(output_dir)
    scores = [float(r["objective"]) for r in resumed]
    index = scores.index(min(scores))
    assert best["objective"] == {"name": "val_loss", "direction": "min", "value": min(scores)}
    assert best["trial_id"] == resumed[index]["trial_id"]
    assert best["hyperparameters"] == json.loads(resumed[index]["hyperparameters"])
    # The restored best-epoch checkpoint evaluates to the trial's own score.
    assert best["model"]["source"].startswith("restored")
    assert best["metrics"]["val_loss"] == pytest.approx(min(scores), abs=1e-5)
    assert os.path.exists(best["model"]["path"])
    assert best["trials"]["completed"] == 2
    assert first["best"]["trials"]["completed"] == 1

    # A finished search run again trains nothing new.
    run_search(TOY_TASK, config, TuningConfig(tuner="random", max_trials=2, max_epochs=1))
    assert capsys.readouterr().out.count(" starts: ") == 0
    assert _rows(output_dir) == resumed

    # Without the best trial's checkpoint (a worker on another machine kept
    # it), the best model is retrained from its hyperparameters instead.
    os.remove(os.path.join(output_dir, "tuning", "search", f"trial_{best['trial_id']}", "checkpoint.weights.h5"))
    run_search(TOY_TASK, config, TuningConfig(tuner="random", max_trials=2, max_epochs=1))
    assert "retraining it" in capsys.readouterr().out
    retrained = _best(output_dir)
    assert retrained["model"]["source"] == "retrained with the trial's hyperparameters"
    assert retrained["trial_id"] == best["trial_id"]
    assert 0 < retrained["metrics"]["val_loss"] < 10

    # Resuming with other settings would mix incomparable trials.
    with pytest.raises(ValueError, match=r"different settings \(task_config.batch_size \(was 16, now 8\) differ"):
        run_search(TOY_TASK, ToyConfig(output_dir=output_dir, batch_size=8), TuningConfig(tuner="random", max_trials=2, max_epochs=1))
    # A project moved to another directory, whose search.json predates a field
    # (counted as its default), resumes: where the files are does not change a trial.
    moved = str(tmp_path / "moved")
    shutil.copytree(output_dir, moved)
    identity_path = os.path.join(moved, "tuning", "search.json")
    with open(identity_path, encoding="utf-8") as f:
        identity = json.load(f)
    assert identity["task_config"].pop("embedding_dim") == 8
    # A project from before trials followed --lr-schedule: its trials trained at a constant rate.
    assert identity.pop("trial_lr_schedule") == "constant"
    with open(identity_path, "w", encoding="utf-8") as f:
        json.dump(identity, f)
    run_search(TOY_TASK, ToyConfig(output_dir=moved), TuningConfig(tuner="random", max_trials=2, max_epochs=1))
    assert capsys.readouterr().out.count(" starts: ") == 0
    with pytest.raises(ValueError, match=r"trial_lr_schedule \(was 'constant', now 'cosine'\) differ.*Its trials "
                                         r"trained with --lr-schedule constant: give it to resume\."):
        run_search(TOY_TASK, _ScheduledToyConfig(output_dir=moved), TuningConfig(tuner="random", max_trials=2, max_epochs=1))
    with pytest.raises(ValueError, match=r"task_config.embedding_dim \(was 8, now 4\)"):
        run_search(TOY_TASK, ToyConfig(output_dir=moved, embedding_dim=4), TuningConfig(tuner="random", max_trials=2, max_epochs=1))
    with pytest.raises(ValueError, match=r"different settings \(tuner \(was 'random', now 'bayesian'\) differ"):
        run_search(TOY_TASK, config, TuningConfig(tuner="bayesian", max_trials=2, max_epochs=1))
    # A narrowed range: the bound that changed, not both whole range dicts.
    with pytest.raises(ValueError, match=r"different settings \(ranges.max_hidden_size \(was 32, now 16\) differ"):
        run_search(TOY_TASK, config, TuningConfig(tuner="random", max_trials=2, max_epochs=1, max_hidden_size=16))


@pytest.mark.long
def test_a_project_left_by_a_distributed_search_resumes_without_repeating_trials(tmp_path, capsys):
    output_dir = str(tmp_path / "run")
    config = ToyConfig(output_dir=output_dir)
    run_search(TOY_TASK, config, TuningConfig(tuner="random", max_trials=1, max_epochs=1))
    rows = _rows(output_dir)
    project = os.path.join(output_dir, "tuning", "search")
    # A distributed search leaves chief.json (and tuner1.json, ...), a local
    # one tuner0.json: resumed either way, the oracle must be reloaded.
    os.rename(os.path.join(project, "tuner0.json"), os.path.join(project, "chief.json"))
    capsys.readouterr()
    resumed = _resume_with_one_more_trial(config, capsys, rows)  # kept, not run again over its files

    # A chief's oracle.json still lists the trial that ended last as ongoing
    # (keras-tuner saves before it forgets it): it is not run again either.
    with open(os.path.join(project, "oracle.json"), encoding="utf-8") as f:
        state = json.load(f)
    state["ongoing_trials"] = {"tuner1": "1"}
    with open(os.path.join(project, "oracle.json"), "w", encoding="utf-8") as f:
        json.dump(state, f)
    _resume_with_one_more_trial(config, capsys, resumed)


def test_a_search_into_a_training_runs_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"hidden_size": 16}')  # as train.py leaves a run
    with pytest.raises(ValueError) as refused:
        run_search(TOY_TASK, ToyConfig(output_dir=str(run_dir)), TuningConfig(tuner="random", max_trials=1, max_epochs=1))
    assert str(refused.value) == (
        f"--output-dir {run_dir} holds a training run ({run_dir / 'config.json'}); a search there would export its "
        f"best model beside the run's in {run_dir / 'export'}, and a server of that directory would serve the "
        "newer. Nothing was written: give another --output-dir."
    )
    assert [p.name for p in run_dir.iterdir()] == ["config.json"]


@pytest.mark.long
def test_a_search_resumed_on_other_data_is_refused(tmp_path, monkeypatch, capsys):
    import tests.tuning_toy_task as toy

    output_dir = str(tmp_path / "run")
    run_search(TOY_TASK, ToyConfig(output_dir=output_dir), TuningConfig(tuner="random", max_trials=1, max_epochs=1))
    identity_path = os.path.join(output_dir, "tuning", "search.json")
    with open(identity_path, encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["data"] == {"vocabulary": "".join(sorted(set(toy.TEXT))), "characters": len(toy.TEXT)}
    # The text edited in place: one more character in the vocabulary, so every
    # earlier trial's model has another output size.
    monkeypatch.setattr(toy, "TEXT", toy.TEXT + " Zounds!")
    with pytest.raises(ValueError) as error:
        run_search(TOY_TASK, ToyConfig(output_dir=output_dir), TuningConfig(tuner="random", max_trials=2, max_epochs=1))
    message = str(error.value)
    assert f"The tuning project in {os.path.join(output_dir, 'tuning')} was searched on other data" in message
    assert f"characters (was {len(toy.TEXT) - 8}, now {len(toy.TEXT)})" in message
    assert "vocabulary (was " in message and "see `data` in" in message
    assert len(_rows(output_dir)) == 1  # no trial ran
    # A project whose search.json has no `data` (made before it was kept) takes the current one.
    monkeypatch.setattr(toy, "TEXT", toy.TEXT[:-8])
    del saved["data"]
    with open(identity_path, "w", encoding="utf-8") as f:
        json.dump(saved, f)
    capsys.readouterr()
    run_search(TOY_TASK, ToyConfig(output_dir=output_dir), TuningConfig(tuner="random", max_trials=1, max_epochs=1))
    assert "data" in json.load(open(identity_path, encoding="utf-8"))
    # One made before a field of `data` was kept (here `characters`) takes that field and resumes.
    saved = json.load(open(identity_path, encoding="utf-8"))
    del saved["data"]["characters"]
    with open(identity_path, "w", encoding="utf-8") as f:
        json.dump(saved, f)
    run_search(TOY_TASK, ToyConfig(output_dir=output_dir), TuningConfig(tuner="random", max_trials=1, max_epochs=1))
    assert json.load(open(identity_path, encoding="utf-8"))["data"]["characters"] == len(toy.TEXT)


@pytest.mark.long
def test_hyperband_continues_the_best_trial_of_a_bracket(tmp_path, capsys):
    import warnings

    output_dir = str(tmp_path / "run")
    tuning = TuningConfig(tuner="hyperband", max_trials=3, max_epochs=2, hyperband_factor=2)
    with warnings.catch_warnings():
        # The continued trial starts from the other's weights with a fresh optimizer, as
        # keras-tuner does, without Keras' warning about the checkpoint's optimizer variables.
        warnings.filterwarnings("error", message="Skipping variable loading")
        run_search(TOY_TASK, ToyConfig(output_dir=output_dir), tuning)
    rows = _rows(output_dir)
    assert [r["trial_id"] for r in rows] == ["0", "1", "2"]
    bookkeeping = [json.loads(r["tuner"]) for r in rows]
    # Bracket 1 of max_epochs=2, factor=2: two models for 1 epoch, then the
    # better one trained on from epoch 1 to 2.
    assert [(b["initial_epoch"], b["epochs"]) for b in bookkeeping] == [(0, 1), (0, 1), (1, 2)]
    better = min(rows[:2], key=lambda r: float(r["objective"]))["trial_id"]
    assert bookkeeping[2]["trial_id"] == better
    [started] = [line for line in capsys.readouterr().out.splitlines() if "(trial_2) starts: " in line]
    assert started.endswith(f" (epochs 1..2, from trial_{better})")  # named by its folder, as in trials.csv
    assert rows[2]["hyperparameters"] == [r for r in rows if r["trial_id"] == better][0]["hyperparameters"]
    assert [int(r["epochs"]) for r in rows] == [1, 1, 1]
    assert _best(output_dir)["trials"] == {
        "completed": 3,
        "table": os.path.join(output_dir, "tuning", "trials.csv"),
        "total": 3,
    }


def test_time_budget_stops_new_trials(tmp_path, capsys, monkeypatch):
    import types

    import tuning.build_tuner as build_tuner

    output_dir = str(tmp_path / "run")
    # The oracle's clock says the budget is spent before it hands out its
    # first trial: nothing completes, which is a clear error; the project
    # stays resumable (the oracle does not save its "stopped" answer).
    monkeypatch.setattr(build_tuner, "time", types.SimpleNamespace(time=lambda: float("inf")))
    tuning = TuningConfig(tuner="random", max_trials=3, max_epochs=1, time_budget_minutes=10)
    with pytest.raises(RuntimeError, match="No trial of the search .* completed"):
        run_search(TOY_TASK, ToyConfig(output_dir=output_dir), tuning)
    assert "time budget spent: no new trials" in capsys.readouterr().out
    assert _rows(output_dir) == []
    assert not [
        name for name in os.listdir(os.path.join(output_dir, "tuning", "search")) if name.startswith("trial_")
    ]


def test_trials_that_keep_failing_end_the_search_with_a_one_line_error(tmp_path):
    import dataclasses

    from tests.tuning_toy_task import build_model

    builds = []

    def failing(hp, ranges, config, context):
        builds.append(1)
        if len(builds) > 1:  # the first build only declares the space
            raise ValueError(f"simulated out of memory in build {len(builds)}")
        return build_model(hp, ranges, config, context)

    output_dir = str(tmp_path / "run")
    project = os.path.join(output_dir, "tuning", "search")
    table = os.path.join(output_dir, "tuning", "trials.csv")
    # A ValueError too: train.py reports it in one line, not as a traceback.
    with pytest.raises(ValueError) as error:
        run_search(dataclasses.replace(TOY_TASK, build_model=failing), ToyConfig(output_dir=output_dir),
                   TuningConfig(tuner="random", max_trials=5, max_epochs=1))
    assert isinstance(error.value, RuntimeError)
    assert str(error.value) == (
        f"The search in {project} stopped: Number of consecutive failures exceeded the limit of 3. The last "
        f"failed trial's error: ValueError: simulated out of memory in build 4. See {table} and the `message` "
        "in each trial.json; check the task options (a model too large for memory fails: lower "
        "--max-hidden-size or --max-num-layers); running the same command again retries the last failed trial."
    )
    # keras-tuner raises before it saves the third as failed: it is retried on resuming.
    assert [(r["trial_id"], r["status"]) for r in _rows(output_dir)] == [
        ("0", "FAILED"), ("1", "FAILED"), ("2", "RUNNING")
    ]


def test_a_trial_cut_by_the_budget_says_so_on_the_console_and_in_the_table(tmp_path, capsys, monkeypatch):
    import time
    import types

    import tuning.task_hypermodel

    # The fit's clock says the budget is spent (the oracle's does not): the
    # one trial starts and stops after its first batch.
    clock = types.SimpleNamespace(time=lambda: float("inf"), perf_counter=time.perf_counter)
    monkeypatch.setattr(tuning.task_hypermodel, "time", clock)
    output_dir = str(tmp_path / "run")
    run_search(TOY_TASK, ToyConfig(output_dir=output_dir),
               TuningConfig(tuner="random", max_trials=1, max_epochs=2, time_budget_minutes=10))
    assert [r["status"] for r in _rows(output_dir)] == ["COMPLETED_CUT_BY_BUDGET"]
    out = capsys.readouterr().out
    assert "trial 1 of 1 (trial_0) completed (cut short by the time budget, mid-epoch): val_loss=" in out


@pytest.mark.long
def test_a_trial_of_several_executions_sums_their_seconds_and_is_cut_if_one_was(tmp_path, capsys, monkeypatch):
    import itertools
    import types

    import tuning.task_hypermodel

    # The budget is spent during the second execution only (the toy's epoch
    # is 3 batches): keras-tuner averages the executions' metrics.
    # Each fit reads the perf_counter twice, 10 s apart: 10 s per execution.
    checks, ticks = [], itertools.count(0.0, 10.0)
    clock = types.SimpleNamespace(
        time=lambda: checks.append(1) or (0.0 if len(checks) <= 3 else float("inf")),
        perf_counter=lambda: next(ticks),
    )
    monkeypatch.setattr(tuning.task_hypermodel, "time", clock)
    output_dir = str(tmp_path / "run")
    run_search(TOY_TASK, ToyConfig(output_dir=output_dir),
               TuningConfig(tuner="random", max_trials=1, max_epochs=1, executions_per_trial=2,
                            time_budget_minutes=10))
    (row,) = _rows(output_dir)
    assert row["status"] == "COMPLETED_CUT_BY_BUDGET"
    assert row["seconds"] == "20.00"  # the trial's, not the mean of its executions'
    trial = keras_tuner.engine.trial.Trial.load(
        os.path.join(output_dir, "tuning", "search", "trial_0", "trial.json"))
    assert trial.metrics.get_last_value("trial_cut_by_budget") == 1.0
    assert "trial 1 of 1 (trial_0) completed (cut short by the time budget, mid-epoch)" in capsys.readouterr().out


# --- train.py flags -----------------------------------------------------------------------


def test_train_py_parses_the_tuning_flags_as_a_second_group():
    import train

    module, config, tuning = train.parse_command(
        ["--task", "language_model", "--embedding-dim", "24", "--tune", "--tuner", "random",
         "--max-trials", "3", "--max-epochs", "2", "--max-hidden-size", "256"]
    )
    assert module.__name__ == "training.language_model" and config.embedding_dim == 24
    assert tuning == TuningConfig(
        tune=True, tuner="random", max_trials=3, max_epochs=2, max_hidden_size=256
    )
    _, _, tuning = train.parse_command(["--task", "transcription"])
    assert tuning == TuningConfig()  # no --tune: an ordinary training run


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tune", "--max-trials", "0"], "`max_trials` expects a positive integer, got 0"),
        (["--tune", "--tuner", "grid"], "invalid choice: 'grid'"),
        (["--tune", "--min-hidden-size", "600"], "Empty search range for `hidden_size`: min 600 > max 512"),
        (["--tune", "--max-dropout", "0.12"], "Search range for `dropout` 0..0.12 would never try 0.12"),
        (["--tune", "--min-hidden-size", "100"], "set --max-hidden-size 400 or 800."),
        (["--max-trials", "3"], "--max-trials take effect only with --tune"),
        # What the search sets would be ignored: refused, naming the flags that bound it instead.
        (["--tune", "--hidden-size", "64", "--max-train-minutes", "3"],
         "with --tune, --hidden-size is set by the search: give --min-hidden-size/--max-hidden-size; "
         "--max-train-minutes is set by the search: give --time-budget-minutes (the whole search's) instead"),
        (["--tune", "--dropout", "0.2"], "--dropout is set by the search: give --min-dropout/--max-dropout"),
        (["--tune", "--overwrite"], "--overwrite trains a finished run again; --tune resumes the search in "
                                    "--output-dir (its finished trials are kept): give another --output-dir"),
    ],
)
def test_train_py_rejects_bad_tuning_flags(argv, message, capsys):
    import train

    with pytest.raises(SystemExit) as exit_info:
        train.parse_command(["--task", "transcription", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class _ScheduledToyConfig(ToyConfig):
    lr_schedule: str = "cosine"  # as the real tasks' configs have it


class _RecordRates(keras.callbacks.Callback):
    """The optimizer's learning rate at each batch (after the schedule set it)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def _cosine(rate, step, total, floor=0.02):
    return rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / total)))


def _rates_of_a_fit(lr_schedule, *, hp_rate=0.02, epochs=3, initial_epoch=0, steps_per_epoch=4):
    from tuning.task_hypermodel import TaskHyperModel

    def build(hp):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.5), "mse")  # not the trial's rate: hp's is
        return model

    hp = keras_tuner.HyperParameters()
    hp.Fixed("learning_rate", hp_rate)
    x = np.ones((8, 2), "float32")
    data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2)
    if steps_per_epoch:
        data, kwargs = data.repeat(), {"steps_per_epoch": steps_per_epoch}
    else:
        kwargs = {}  # an epoch of unknown length: the first one gives it
    record = _RecordRates()
    hypermodel = TaskHyperModel(build_model=build, objective="val_loss", lr_schedule=lr_schedule)
    hypermodel.fit(hp, build(hp), data, epochs=epochs, initial_epoch=initial_epoch, validation_data=(x, x[:, :1]),
                   callbacks=[record], verbose=0, shuffle=False, **kwargs)
    return record.rates


def test_trials_decay_the_learning_rate_as_the_run_does():
    # 3 epochs of 4 steps: from the trial's sampled rate (not the compiled one) to 2 percent of it.
    assert _rates_of_a_fit("cosine") == pytest.approx([_cosine(0.02, k, 12) for k in range(12)], rel=1e-6)
    # A Hyperband round from epoch 1 to 3 decays over its own two epochs, from the full rate.
    assert _rates_of_a_fit("cosine", initial_epoch=1) == pytest.approx([_cosine(0.02, k, 8) for k in range(8)],
                                                                       rel=1e-6)
    # Epochs of unknown length: the first at the full rate, then the decay over 3 x its 4 steps.
    assert _rates_of_a_fit("cosine", steps_per_epoch=None) == pytest.approx(
        [0.02] * 4 + [_cosine(0.02, k, 12) for k in range(4, 12)], rel=1e-6
    )
    assert _rates_of_a_fit("constant") == pytest.approx([0.5] * 12)  # the compiled rate, untouched


def test_trial_schedules_and_their_errors():
    from tuning.task_hypermodel import TaskHyperModel

    plateau = TaskHyperModel(build_model=None, objective="val_loss", lr_schedule="plateau")
    (callback,) = plateau.schedule_callbacks(None, None, epochs=3)
    assert isinstance(callback, keras.callbacks.ReduceLROnPlateau)
    assert (callback.monitor, callback.factor, callback.patience, callback.min_lr) == ("val_loss", 0.5, 1, 1e-5)
    with pytest.raises(ValueError, match=r"`lr_schedule`, expected one of \('cosine', 'plateau', 'constant'\), "
                                         r"got 'linear'"):
        TaskHyperModel(build_model=None, objective="val_loss", lr_schedule="linear")


def test_a_fit_stopped_by_the_deadline_is_marked_cut_short():
    import time

    import keras
    import numpy as np

    from tuning.task_hypermodel import TaskHyperModel

    def build(hp):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        return model

    x = np.ones((8, 2), "float32")
    for deadline, cut, epochs in ((time.time() - 1.0, 1.0, 1.0), (None, 0.0, 3.0)):
        hypermodel = TaskHyperModel(build_model=build, objective="val_loss", deadline=deadline)
        metrics = hypermodel.fit(None, build(None), x, x[:, :1], batch_size=2, epochs=3,
                                 validation_data=(x, x[:, :1]), verbose=0)
        assert metrics["trial_cut_by_budget"] == cut
        assert metrics["trial_epochs"] == epochs
