"""``search``: a keras-tuner search over zoo models, resumable, optionally spread over workers.

Example:
    >>> result = search("digits", {"backbone": ["resnet_tiny", "mlp_small"],
    ...                            "learning_rate": (1e-4, 1e-2, "log"), "dropout": (0.0, 0.5)},
    ...                 tuner="hyperband", max_trials=20, directory="tuning_runs/digits")
    >>> result.best_config["model"], print(result.table())
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt

from tuning import results
from tuning.hypermodel import TrialData, ZooHyperModel
from tuning.space import Space
from zoo.config import OBJECTIVES, TUNERS, RunConfig
from zoo.errors import InvalidArgumentError, ZooError
from zoo.files import atomic_write
from zoo.memory import released
from zoo.registry import resolve
from zoo.training import plan

ORACLES = dict(zip(TUNERS, (kt.oracles.RandomSearchOracle, kt.oracles.BayesianOptimizationOracle,
                            kt.oracles.HyperbandOracle, kt.oracles.GridSearchOracle)))
PROJECT = "search"  # keras-tuner's project folder inside the search directory
SETTINGS = "search.json"
WEIGHTS = "model.weights.h5"  # in a Hyperband trial's folder: its trained weights, for a later round to go on from

log = logging.getLogger(__name__)


class SearchError(ZooError):
    """A search that cannot start or cannot go on."""


class ZooTuner(kt.Tuner):
    """Runs each trial with ``ZooHyperModel``, frees its memory when it ends, and keeps the trials it ran."""

    def __init__(self, *args, callback: Callable[[dict], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.callback, self.ran = callback, []

    def _populate_initial_space(self) -> None:
        # One declaration registers every option, conditional ones included; keras-tuner's default
        # builds models over and over to discover them.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def run_trial(self, trial: kt.engine.trial.Trial, *args, **kwargs) -> dict[str, float]:
        start = time.perf_counter()
        hp = trial.hyperparameters
        hyperband = "tuner/epochs" in hp.values
        with released():  # the custom gradients TF would keep, with the trial's model, for good
            try:
                metrics = self.hypermodel.fit(hp, self.hypermodel.build(hp), resume_from=self._earlier_weights(hp),
                                              save_to=self._weights(trial.trial_id) if hyperband else None)
            finally:
                keras.backend.clear_session(free_memory=False)  # the trial's layers and names; released() collects
        return {**metrics, "seconds": time.perf_counter() - start}

    def _weights(self, trial_id: str) -> Path:
        return Path(self.get_trial_dir(trial_id)) / WEIGHTS

    def _earlier_weights(self, hp: kt.HyperParameters) -> Path | None:
        """The weights a Hyperband trial goes on from: its earlier round's; None for a first round (or where
        that round's weights are gone: the trial then trains from the start)."""
        earlier = hp.values.get("tuner/trial_id")
        if earlier is None:
            return None
        path = self._weights(earlier)
        if not path.is_file():
            log.warning("no %s from trial %s, which this trial continues: training it from the start", path, earlier)
            return None
        return path

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        self.ran.append(trial)
        if self.callback is not None:
            self.callback(results.row(trial))


def search(
    data: Any,
    space: Space | Mapping[str, Any],
    *,
    tuner: str = "random",
    objective: str = "val_accuracy",
    max_trials: int = 10,
    epochs: int = 6,
    image_size: tuple[int, int] | None = None,
    directory: str | os.PathLike = "tuning_runs",
    overwrite: bool = False,
    seed: int = 0,
    patience: int | None = 3,
    max_failures: int = 3,
    distributed: str | None = None,
    oracle_address: str = "127.0.0.1:8000",
    worker_id: str | None = None,
    callback: Callable[[dict], None] | None = None,
    verbose: int = 1,
) -> results.SearchResult:
    """Search ``space`` on ``data``; write trials.csv, objective.png and best.yaml under ``directory``.

    Args:
        data: anything ``zoo.data.load`` takes ("digits", "tfds:NAME", a folder, arrays).
        space: a ``Space``, or the mapping it is made from (see ``tuning.space``).
        tuner: "random", "bayesian", "hyperband" (``epochs`` is its max_epochs) or "grid".
        objective: one of ``OBJECTIVES``; val_* ones are measured on the validation split.
        max_trials: trials in all, counting those of an earlier run in ``directory``.
        image_size: (height, width) for every backbone; None: each backbone's own (its weights' input
            size where they name one, else its architecture's).
        overwrite: start over; by default a search in ``directory`` resumes where it stopped and re-runs
            no completed trial.
        patience: early stopping within a trial (zoo.finetune's); None trains every epoch.
        max_failures: stop after this many failed trials in a row (a failed trial is recorded with its
            error and the search goes on).
        distributed: "chief" serves trials at ``oracle_address`` (host:port) and writes the results;
            "worker" runs trials it gets from there (``worker_id`` must differ between workers; by default
            host and process id). None: keras-tuner's KERASTUNER_* environment variables, if set, decide.
        callback: called after each trial with its table row.
        verbose: 0 silent, 1 keras-tuner's per-trial report, 2 also zoo.finetune's epochs.

    Example:
        >>> result = search("digits", {"backbone": "resnet_tiny", "dropout": (0.0, 0.5)}, max_trials=5,
        ...                 image_size=(16, 16), directory="runs/tune")
        >>> result.best_config["dropout"]
    """
    space = space if isinstance(space, Space) else Space(space)
    _check(space, tuner, objective, max_trials, epochs, image_size, max_failures, distributed)
    directory = Path(directory)
    hypermodel = ZooHyperModel(space, TrialData(data, seed), epochs=epochs, image_size=image_size, seed=seed,
                               patience=patience, verbose=0 if verbose < 2 else 1)
    _check_data(hypermodel, space, objective)
    with _distributed(distributed, oracle_address, worker_id) as role:
        if role != "worker":
            _claim(directory, overwrite, {"data": _name(data), "space": space.describe(), "tuner": tuner,
                                          "objective": objective, "epochs": epochs, "seed": seed,
                                          "image_size": list(image_size) if image_size else None})
        oracle = _oracle(tuner, objective, max_trials, epochs, seed, max_failures)
        zoo_tuner = ZooTuner(oracle, hypermodel, directory=str(directory), project_name=PROJECT,
                             overwrite=overwrite and role != "worker", callback=callback)
        failure = None
        try:
            zoo_tuner.search(verbose=verbose)
        except RuntimeError as e:  # keras-tuner's "Number of consecutive failures exceeded the limit"
            failure = _failures(zoo_tuner, max_failures, e)
    if role == "worker":
        return results.SearchResult([results.row(t) for t in zoo_tuner.ran], None, objective)
    result = results.write(zoo_tuner.oracle.trials.values(), _best(zoo_tuner, hypermodel, data), objective,
                           OBJECTIVES[objective], directory)
    if failure is not None:
        raise failure
    return result


def _check(space, tuner, objective, max_trials, epochs, image_size, max_failures, distributed) -> None:
    if tuner not in ORACLES:
        raise InvalidArgumentError(f"unknown tuner '{tuner}': use one of {', '.join(ORACLES)}")
    if objective not in OBJECTIVES:
        raise InvalidArgumentError(f"objective '{objective}' is not a metric the trials report: use one of "
                                   f"{', '.join(OBJECTIVES)}")
    for name, value in (("max_trials", max_trials), ("epochs", epochs), ("max_failures", max_failures)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    if distributed not in (None, "chief", "worker"):
        raise InvalidArgumentError(f"distributed={distributed!r}: use 'chief', 'worker' or None")
    if tuner != "hyperband":  # Hyperband gives every trial at least what its recipe needs
        for recipe in space.possible("recipe"):
            plan(recipe, epochs, blocks=1, n_blocks=1)  # raises if the recipe needs more epochs
    if image_size is not None:
        if len(image_size) != 2:
            raise InvalidArgumentError(f"image_size must be (height, width), got {image_size!r}")
        for backbone in space.params["backbone"].values:
            least = resolve(backbone)[0].min_input_size
            if min(image_size) < least:
                raise InvalidArgumentError(f"image_size={tuple(image_size)} is below {backbone}'s least input "
                                           f"size {least}x{least}: use a larger image_size or drop {backbone}")


def _check_data(hypermodel: ZooHyperModel, space: Space, objective: str) -> None:
    """Load the data once (at the first backbone's size) so that a bad source fails before any trial."""
    info = hypermodel.data.load(hypermodel.input_size(space.params["backbone"].values[0]))[2]
    if objective.startswith("val_") and not info.num_examples["validation"]:
        raise InvalidArgumentError(f"objective '{objective}' needs validation data, and {info.source} has none: "
                                   f"use objective='{objective[4:]}'")


def _name(data: Any) -> str | None:
    """The data source as best.yaml and the settings record it: a name or a path; None for arrays."""
    return str(data) if isinstance(data, (str, os.PathLike)) else None


def _claim(directory: Path, overwrite: bool, settings: dict) -> None:
    """Record the search's settings in ``directory``, or check that a search resumed there had the same."""
    path = directory / SETTINGS
    settings = json.loads(json.dumps(settings))  # tuples as lists, as they read back
    if path.exists() and not overwrite:
        before = json.loads(path.read_text())
        changed = [k for k in settings if before.get(k) != settings[k]]
        if changed:
            raise SearchError(f"{directory} holds a search with another {', '.join(changed)}: resume it with the "
                              f"same settings, pass overwrite=True to start over, or use another directory")
        return
    atomic_write(path, json.dumps(settings, indent=1))


def _oracle(tuner: str, objective: str, max_trials: int, epochs: int, seed: int, max_failures: int) -> kt.Oracle:
    common = {"objective": kt.Objective(objective, OBJECTIVES[objective]), "seed": seed,
              "max_consecutive_failed_trials": max_failures}
    if tuner == "hyperband":
        oracle = kt.oracles.HyperbandOracle(max_epochs=epochs, **common)
        oracle.max_trials = max_trials  # Hyperband sizes itself by epochs; cap its trials as the others do
        return oracle
    return ORACLES[tuner](max_trials=max_trials, **common)


@contextlib.contextmanager
def _distributed(role: str | None, address: str, worker_id: str | None):
    """Set keras-tuner's KERASTUNER_* variables for a chief or a worker; yield the role
    ("chief", "worker", or None for a search on its own)."""
    if role is None:
        env = os.environ
        if "KERASTUNER_ORACLE_IP" in env:
            role = "chief" if "chief" in env.get("KERASTUNER_TUNER_ID", "") else "worker"
        yield role
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidArgumentError(f"oracle_address must be host:port, got {address!r}")
    tuner_id = "chief" if role == "chief" else worker_id or f"worker-{socket.gethostname()}-{os.getpid()}"
    wanted = {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": port}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield role
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def _failures(tuner: ZooTuner, limit: int, error: RuntimeError) -> SearchError:
    """The SearchError for a search stopped by failed trials; re-raise any other RuntimeError."""
    oracle = tuner.oracle
    last = [oracle.trials[i] for i in oracle.end_order[-limit:]]
    if len(last) < limit or any(t.status != kt.engine.trial.TrialStatus.FAILED for t in last):
        raise error
    return SearchError(f"the last {limit} trials failed, so the search stopped; the last error: "
                       f"{results.row(last[-1])['error']} (every error is in trials.csv)")


def _best(tuner: ZooTuner, hypermodel: ZooHyperModel, data: Any) -> dict | None:
    best = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    if not best:
        return None
    config = hypermodel.config(best[0].hyperparameters.copy())
    if _name(data) is not None:
        config["data"] = _name(data)
    return RunConfig.from_dict(config, where="best trial").as_dict()  # every option: what best.yaml holds
