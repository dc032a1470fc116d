import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras_tuner as kt
import numpy as np
import pytest
import yaml

import tuning
from tuning.space import DEFAULTS
from zoo.config import FinetuneConfig, RunConfig
from zoo.errors import InvalidArgumentError, ZooError

# The quickest trials: a small MLP on 8x8 digits, one epoch.
FAST = {"image_size": (8, 8), "epochs": 1, "verbose": 0}


def _rows(directory: Path) -> list[dict]:
    with open(directory / "trials.csv") as f:
        return list(csv.DictReader(f))


def _trial_files(directory: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((directory / "search").glob("trial_*/trial.json"))}


# Space -------------------------------------------------------------------------------------


def test_space_syntax_choice_range_log_fixed():
    space = tuning.Space({"backbone": ["resnet_tiny", "mlp_small"], "learning_rate": (1e-4, 1e-2, "log"),
                          "dropout": (0, 0.5), "batch_size": [16, 64], "head_width": {"choice": [16, 64]},
                          "recipe": "linear_probe", "pretrained": [False, True]})
    p = space.params
    assert (p["backbone"].kind, p["backbone"].values) == ("choice", ("resnet_tiny", "mlp_small"))
    assert (p["learning_rate"].kind, p["learning_rate"].values, p["learning_rate"].log) == ("range", (1e-4, 1e-2), True)
    assert p["dropout"].values == (0.0, 0.5) and isinstance(p["dropout"].values[0], float)
    assert (p["batch_size"].kind, p["batch_size"].values) == ("range", (16, 64))  # two ints: an int range
    assert (p["head_width"].kind, p["head_width"].values) == ("choice", (16, 64))
    assert (p["recipe"].kind, p["recipe"].values) == ("fixed", ("linear_probe",))

    hp = kt.HyperParameters()
    space.declare(hp)
    kinds = {h.name: type(h).__name__ for h in hp.space}
    assert kinds == {"backbone": "Choice", "pretrained": "Boolean", "recipe": "Fixed", "learning_rate": "Float",
                     "batch_size": "Int", "dropout": "Float", "head_width": "Choice"}
    assert hp.space[[h.name for h in hp.space].index("learning_rate")].sampling == "log"
    config = space.config(hp)
    assert config["pretrained"] is False  # a boolean, not keras-tuner's 0/1
    assert config["head_hidden"] == [16]  # head_width alone: one hidden layer
    assert "blocks" not in config  # linear_probe has no blocks


def test_space_defaults_follow_zoo_finetune():
    config = tuning.Space({"backbone": "resnet_tiny"}).config(kt.HyperParameters())
    assert config == {"model": "resnet_tiny", "recipe": "two_phase", "blocks": 2, "learning_rate": 1e-3,
                      "batch_size": 32, "augment": "none", "dropout": 0.0, "pretrained": True}
    assert DEFAULTS["recipe"] == "two_phase"
    assert {k: getattr(FinetuneConfig(), k) for k in DEFAULTS if hasattr(FinetuneConfig, k)} == \
        {k: v for k, v in DEFAULTS.items() if hasattr(FinetuneConfig, k)}
    # pretrained where the entry has weights (resnet_tiny.digits is bundled), random weights otherwise
    assert tuning.Space({"backbone": "mlp_base"}).config(kt.HyperParameters())["pretrained"] is False


def test_conditional_options_are_active_only_where_they_apply():
    space = tuning.Space({"backbone": "resnet_tiny", "recipe": ["linear_probe", "two_phase"], "blocks": (1, 3),
                          "head_depth": [0, 2], "head_width": [16, 32]})
    hp = kt.HyperParameters()
    space.declare(hp)
    assert {h.name for h in hp.space} >= {"blocks", "head_width"}  # registered though inactive
    assert hp.values["recipe"] == "linear_probe" and "blocks" not in hp.values
    assert hp.values["head_depth"] == 0 and "head_width" not in hp.values
    assert space.config(hp)["head_hidden"] == []

    hp.values.update(recipe="two_phase", blocks=3, head_depth=2, head_width=32)
    config = space.config(hp)
    assert config["blocks"] == 3 and config["head_hidden"] == [32, 32]


@pytest.mark.parametrize("spec, message", [
    ({"backbone": "resnet_tiyn"}, "did you mean resnet_tiny"),
    ({"backbone": ["resnet_tiny", "nope_net"]}, "unknown model 'nope_net'"),
    ({"learning_rate": (1e-3, 1e-2)}, "needs a backbone"),
    ({"backbone": "resnet_tiny", "lr": 0.1}, "unknown option 'lr'"),
    ({"backbone": []}, "the choice is empty"),
    ({"backbone": "resnet_tiny", "augment": []}, "the choice is empty"),
    ({"backbone": "resnet_tiny", "dropout": (0.5, 0.1)}, "low end above its high end"),
    ({"backbone": "resnet_tiny", "learning_rate": (1e-2, 1e-3)}, r"\{'choice'"),
    ({"backbone": "resnet_tiny", "learning_rate": (0, 1e-2, "log")}, "log range needs positive ends"),
    ({"backbone": "resnet_tiny", "dropout": (-0.1, 0.5, "log")}, "log range needs positive ends"),
    ({"backbone": "resnet_tiny", "learning_rate": (1e-4, 1e-2, "exp")}, "got 'exp' as its third"),
    ({"backbone": "resnet_tiny", "dropout": (0.0, 1.0)}, r"dropout takes a number in \[0, 1\)"),
    ({"backbone": "resnet_tiny", "batch_size": (16.0, 64)}, "integer ends"),
    ({"backbone": "resnet_tiny", "recipe": ["linear_probe", "magic"]}, "recipe: 'magic' is not valid"),
    ({"backbone": "resnet_tiny", "augment": (1, 2)}, "reads as a range, but augment takes one of"),
    ({"backbone": "resnet_tiny", "recipe": "linear_probe", "blocks": [1, 2, 3]}, "blocks applies only when recipe"),
    ({"backbone": "resnet_tiny", "head_depth": 0, "head_width": [8, 16, 32]}, "head_width applies only when"),
    ({"backbone": "mlp_base", "pretrained": True}, "mlp_base has no pretrained weights"),
    ({"backbone": "resnet_tiny", "dropout": {"range": [0, 1]}}, "must be {'choice'"),
])
def test_bad_space_is_refused(spec, message):
    with pytest.raises(tuning.SpaceError, match=message):
        tuning.Space(spec)


def test_space_errors_are_zoo_argument_errors():
    with pytest.raises(InvalidArgumentError):
        tuning.Space({"backbone": "resnet_tiny", "dropout": (0.5, 0.1)})


def test_load_space_reads_yaml_numbers(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("backbone: [resnet_tiny, mlp_small]\nlearning_rate: [1e-4, 1e-2, log]\ndropout: [0, 0.5]\n"
                    "batch_size: {choice: [16, 32]}\n")
    space = tuning.load_space(path)
    assert space.params["learning_rate"].values == (1e-4, 1e-2) and space.params["learning_rate"].log
    assert space.params["batch_size"].kind == "choice"
    with pytest.raises(tuning.SpaceError, match="no search space file"):
        tuning.load_space(tmp_path / "missing.yaml")
    path.write_text("- resnet_tiny\n")
    with pytest.raises(tuning.SpaceError, match="mapping"):
        tuning.load_space(path)


@pytest.mark.parametrize("kwargs, message", [
    ({"objective": "val_auc"}, "objective 'val_auc' is not a metric"),
    ({"tuner": "annealing"}, "unknown tuner 'annealing'"),
    ({"max_trials": 0}, "max_trials must be a positive integer"),
    ({"image_size": (4, 4)}, "below resnet_tiny's least input size 8x8"),
    ({"space": {"backbone": "resnet_tiny", "recipe": "two_phase"}, "epochs": 1}, "needs at least 2 epochs"),
    ({"distributed": "boss"}, "use 'chief', 'worker'"),
    ({"distributed": "chief", "oracle_address": "localhost"}, "host:port"),
])
def test_bad_search_arguments_fail_before_any_trial(tmp_path, kwargs, message):
    arguments = {"space": {"backbone": "resnet_tiny", "recipe": "linear_probe"}, "directory": tmp_path / "run",
                 "verbose": 0, **kwargs}
    with pytest.raises(ZooError, match=message):
        tuning.search("digits", **arguments)
    assert not (tmp_path / "run" / "search").exists()


# Searches ----------------------------------------------------------------------------------


def test_random_search_writes_table_plot_and_best_config(tmp_path):
    seen = []
    space = {"backbone": ["resnet_tiny", "vit_pico_p4"], "recipe": "linear_probe", "pretrained": False,
             "learning_rate": (1e-3, 1e-1, "log"), "head_depth": [0, 1], "head_width": [16, 32]}
    result = tuning.search("digits", space, max_trials=3, directory=tmp_path, callback=seen.append, **FAST)

    rows = _rows(tmp_path)
    assert len(rows) == 3 == len(result.trials) == len(seen)
    assert {r["status"] for r in rows} == {"COMPLETED"}
    assert all(0 <= float(r["val_accuracy"]) <= 1 and float(r["score"]) == float(r["val_accuracy"]) for r in rows)
    assert (tmp_path / "objective.png").read_bytes()[:4] == b"\x89PNG"

    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert list(best) == list(RunConfig.defaults())  # every option, in config.yaml's order
    winner = max(result.trials, key=lambda r: r["score"])
    assert best == result.best_config
    assert (best["model"], best["learning_rate"]) == (winner["backbone"], winner["learning_rate"])
    assert best["head_hidden"] == ([winner["head_width"]] if winner["head_depth"] else [])
    assert (best["data"], best["epochs"], best["image_size"], best["pretrained"]) == ("digits", 1, [8, 8], False)

    # Same settings again: nothing left to run. Other settings: refused.
    again = tuning.search("digits", space, max_trials=3, directory=tmp_path, callback=seen.append, **FAST)
    assert len(seen) == 3 and again.best_config == best
    with pytest.raises(tuning.SearchError, match="another objective"):
        tuning.search("digits", space, objective="val_loss", max_trials=3, directory=tmp_path, **FAST)


@pytest.mark.slow
def test_shared_features_are_extracted_once_and_score_as_uncached():
    space = tuning.Space({"backbone": "resnet_tiny", "recipe": "linear_probe", "dropout": [0.0, 0.3],
                          "head_depth": [0, 1], "head_width": 16, "learning_rate": 1e-2})
    data = tuning.TrialData("digits", seed=0)
    shared = tuning.ZooHyperModel(space, data, epochs=2, image_size=(8, 8), patience=None)
    plain = tuning.ZooHyperModel(space, data, epochs=2, image_size=(8, 8), patience=None, share_features=False)

    def trial(hypermodel, **values):
        hp = kt.HyperParameters()
        hypermodel.declare_hyperparameters(hp)
        hp.values.update(values)
        hp.ensure_active_values()
        return hypermodel.fit(hp, hypermodel.build(hp))

    first = trial(shared)
    second = trial(shared, dropout=0.3, head_depth=1)
    assert shared.features.extractions == 2  # train and validation, once for both trials
    assert first != second
    for values, metrics in (({}, first), ({"dropout": 0.3, "head_depth": 1}, second)):
        assert trial(plain, **values) == pytest.approx(metrics, rel=1e-4, abs=1e-5)


def test_linear_probe_search_on_a_backbone_without_pooling(tmp_path):
    # mlp_small's head sits right on its backbone (no pooling layer between them)
    space = {"backbone": "mlp_small", "recipe": "linear_probe", "learning_rate": (1e-3, 1e-1, "log")}
    result = tuning.search("digits", space, max_trials=2, directory=tmp_path, **FAST)
    assert [r["status"] for r in result.trials] == ["COMPLETED", "COMPLETED"], result.trials[0]["error"]


def test_failed_trial_is_recorded_and_the_search_goes_on(tmp_path):
    # mlp_small has 2 blocks: blocks=9 makes zoo.finetune raise in that trial only.
    space = {"backbone": "mlp_small", "recipe": "two_phase", "blocks": {"choice": [9, 1]}}
    result = tuning.search("digits", space, tuner="grid", max_trials=4, directory=tmp_path,
                           **{**FAST, "epochs": 2})
    rows = {r["blocks"]: r for r in _rows(tmp_path)}
    assert rows["9"]["status"] == "FAILED" and "blocks=9" in rows["9"]["error"] and rows["9"]["score"] == ""
    assert rows["1"]["status"] == "COMPLETED" and rows["1"]["error"] == ""
    assert result.best_config["blocks"] == 1


def test_search_stops_after_consecutive_failures(tmp_path):
    space = {"backbone": "mlp_small", "recipe": "two_phase", "blocks": 9, "learning_rate": (1e-3, 1e-2)}
    with pytest.raises(tuning.SearchError, match="last 2 trials failed.*blocks=9"):
        tuning.search("digits", space, max_trials=5, max_failures=2, directory=tmp_path, **{**FAST, "epochs": 2})
    assert [r["status"] for r in _rows(tmp_path)] == ["FAILED", "FAILED"]
    assert not (tmp_path / "best.yaml").exists()


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband", "grid"])
def test_every_tuner_runs(tmp_path, tuner):
    space = {"backbone": "mlp_small", "recipe": "full", "learning_rate": [1e-3, 1e-2, 1e-1]}
    epochs = 3 if tuner == "hyperband" else 1  # Hyperband's brackets need room: 1 epoch, then 3
    result = tuning.search("digits", space, tuner=tuner, max_trials=2, directory=tmp_path, **{**FAST, "epochs": epochs})
    assert [r["status"] for r in result.trials] == ["COMPLETED", "COMPLETED"]
    assert len({r["learning_rate"] for r in result.trials}) == 2
    if tuner == "hyperband":
        assert all(r["epochs"] in (1, 3) for r in result.trials)


@pytest.mark.slow
def test_hyperband_goes_on_from_the_earlier_rounds_weights(tmp_path):
    space = {"backbone": "mlp_small", "recipe": "full", "learning_rate": (1e-3, 1e-1, "log")}
    result = tuning.search("digits", space, tuner="hyperband", max_trials=4, directory=tmp_path,
                           **{**FAST, "epochs": 3})  # a bracket of three 1-epoch trials, then the best for 3
    first, later = result.trials[:3], result.trials[3]
    assert [(r["epochs"], r["continues"], r["trained_epochs"]) for r in first] == [(1, None, 1)] * 3
    best = max(first, key=lambda r: r["score"])
    assert (later["epochs"], later["continues"], later["trained_epochs"]) == (3, best["trial"], 2)
    assert later["learning_rate"] == best["learning_rate"]
    assert all((tmp_path / "search" / f"trial_{r['trial']}" / "model.weights.h5").is_file() for r in result.trials)


def test_a_continued_trial_starts_from_the_weights_it_is_given(tmp_path):
    space = tuning.Space({"backbone": "mlp_small", "recipe": "full", "learning_rate": 1e-30})  # weights stay put
    hypermodel = tuning.ZooHyperModel(space, tuning.TrialData("digits"), epochs=3, image_size=(8, 8), patience=None)
    hp = kt.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update({"tuner/epochs": 3, "tuner/initial_epoch": 1, "tuner/trial_id": "0"})
    earlier = hypermodel.build(hp)
    earlier.set_weights([w + 1.0 for w in earlier.get_weights()])
    earlier.save_weights(tmp_path / "earlier.weights.h5")

    metrics = hypermodel.fit(hp, hypermodel.build(hp), resume_from=tmp_path / "earlier.weights.h5",
                             save_to=tmp_path / "after.weights.h5")
    assert metrics["trained_epochs"] == 2  # epochs 2 and 3 of the budget
    after = hypermodel.build(hp)
    after.load_weights(tmp_path / "after.weights.h5")
    for got, want in zip(after.trainable_weights, earlier.trainable_weights):  # (precise BN sets the statistics)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_a_lora_trial_continues_from_its_merged_weights(tmp_path):
    space = tuning.Space({"backbone": "mlp_small", "recipe": "lora"})
    hypermodel = tuning.ZooHyperModel(space, tuning.TrialData("digits"), image_size=(8, 8), patience=None)

    def trial(**values):
        hp = kt.HyperParameters()
        hypermodel.declare_hyperparameters(hp)
        hp.values.update(values)
        return hp

    first = trial(**{"tuner/epochs": 1, "tuner/initial_epoch": 0})
    hypermodel.fit(first, hypermodel.build(first), save_to=tmp_path / "first.weights.h5")
    later = trial(**{"tuner/epochs": 2, "tuner/initial_epoch": 1, "tuner/trial_id": "0"})
    model = hypermodel.build(later)
    metrics = hypermodel.fit(later, model, resume_from=tmp_path / "first.weights.h5")
    assert metrics["trained_epochs"] == 1
    assert any(getattr(layer, "lora_enabled", False) for layer in model.get_layer("backbone").layers)


# Subprocesses: kill and resume, chief and workers ------------------------------------------

SCRIPT = """
import sys, tuning
space = {"backbone": "mlp_small", "recipe": "full", "learning_rate": (1e-3, 1e-1, "log"),
         "dropout": (0.0, 0.5)}
result = tuning.search("digits", space, max_trials=%d, epochs=%d, image_size=(8, 8), directory=sys.argv[1],
                       verbose=0, **eval(sys.argv[2]))
print("ran:", ",".join(r["trial"] for r in result.trials))
"""


def _start(tmp_path: Path, directory: Path, trials: int, epochs: int, **kwargs) -> subprocess.Popen:
    script = tmp_path / "search.py"
    script.write_text(SCRIPT % (trials, epochs))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    log = tmp_path / f"process{len(list(tmp_path.glob('*.log')))}.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, str(script), str(directory), repr(kwargs)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def _output(process: subprocess.Popen) -> str:
    return process.log.read_text()


def _finish(*processes: subprocess.Popen, timeout: float = 300) -> list[str]:
    """Wait for the processes; if one fails or time runs out, kill them all and fail with the logs."""
    end = time.monotonic() + timeout
    while any(p.poll() is None for p in processes):
        if any(p.poll() not in (None, 0) for p in processes) or time.monotonic() > end:
            break
        time.sleep(0.2)
    if any(p.poll() != 0 for p in processes):
        for p in processes:
            p.kill()
            p.wait()
        pytest.fail("\n---\n".join(f"exit {p.returncode}:\n{_output(p)[-3000:]}" for p in processes))
    return [_output(p) for p in processes]


def _statuses(directory: Path) -> dict[str, str]:
    """Each trial's status; "" for a trial.json being written right now."""
    statuses = {}
    for path in (directory / "search").glob("trial_*/trial.json"):
        try:
            statuses[path.parent.name] = json.loads(path.read_text())["status"]
        except json.JSONDecodeError:
            statuses[path.parent.name] = ""
    return statuses


@pytest.mark.slow
def test_resume_after_sigkill_runs_only_the_remaining_trials(tmp_path):
    directory = tmp_path / "run"
    process = _start(tmp_path, directory, trials=3, epochs=1)

    def mid_trial_after_one() -> bool:
        statuses = list(_statuses(directory).values())
        return statuses.count("COMPLETED") >= 1 and "RUNNING" in statuses

    end = time.monotonic() + 240
    while not mid_trial_after_one():
        assert process.poll() is None and time.monotonic() < end, _output(process)[-3000:]
        time.sleep(0.1)
    time.sleep(0.5)  # into the running trial's training
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {k: t for k, t in _trial_files(directory).items() if t["status"] == "COMPLETED"}
    assert 1 <= len(before) < 3

    _finish(_start(tmp_path, directory, trials=3, epochs=1))
    after = _trial_files(directory)
    assert len(after) == 3 and {t["status"] for t in after.values()} == {"COMPLETED"}
    # Completed trials were not run again: their records, down to each trial's run time, are unchanged.
    assert {k: after[k] for k in before} == before
    assert len(_rows(directory)) == 3


@pytest.mark.slow
def test_distributed_search_shares_trials_between_workers(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    directory = tmp_path / "run"
    chief = _start(tmp_path, directory, trials=6, epochs=3, distributed="chief", oracle_address=address)
    workers = [_start(tmp_path, directory, trials=6, epochs=3, distributed="worker", oracle_address=address,
                      worker_id=f"worker{i}") for i in range(2)]
    *outputs, _ = _finish(*workers, chief)
    ran = [output.split("ran: ")[-1].strip().split(",") for output in outputs]

    assert all(r != [""] for r in ran), ran  # both workers ran trials
    assert sorted(ran[0] + ran[1]) == [str(i) for i in range(6)]  # each trial once, by one worker
    assert sorted(_trial_files(directory)) == [f"trial_{i}" for i in range(6)]
    rows = _rows(directory)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"COMPLETED"}
