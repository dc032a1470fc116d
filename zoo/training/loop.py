"""``finetune``: run a recipe's phases with ``model.fit`` and Keras callbacks; checkpoint every epoch, resume exactly.

Each phase sets what trains (``groups``), compiles with a new optimizer whose per-layer rates implement
discriminative learning rates, and fits. Phases that train only the head over a frozen backbone train
on cached features. With a ``run_dir`` every epoch is written atomically (weights, optimizer and loop
state in one ``checkpoint.npz``), and calling ``finetune`` again resumes where it stopped.

A run directory is locked for the whole call (a second process is refused at once), holds the run's
fingerprint (``fingerprint.json``: resuming with other settings is refused, naming them) and self-checking
checkpoints (a damaged one is detected; the one before it is used): see ``zoo.runs``.

Example:
    >>> model = zoo.create_model("efficientnet_b0.imagenet", num_classes=5)
    >>> result = zoo.finetune(model, "path/to/images", recipe="two_phase", epochs=10, run_dir="runs/flowers")
    >>> result.metrics["test_accuracy"]
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from zoo import compat, distribute, memory
from zoo.backbone import clone, entry_of
from zoo.config import FinetuneConfig
from zoo.errors import InvalidArgumentError, ZooError
from zoo.evaluation import Evaluation, evaluate, loss_for, metrics_for
from zoo.runs import BEST, CHECKPOINT, STATE, RunDamagedError, RunDir
from zoo.training.callbacks import EpochEnd, PreciseBatchNorm, ResumableEarlyStopping
from zoo.training.features import extract, head_split
from zoo.training.groups import freeze, freeze_to, groups, unfreeze
from zoo.training.lora import apply_lora
from zoo.training.mixing import mix_batches
from zoo.training.optim import group_multipliers, make_optimizer, schedule
from zoo.training.recipes import Phase, plan

log = logging.getLogger(__name__)

RUN_INFO = "run.json"  # facts of a run that are not options: class names, phases, the batch plan
Extractor = Callable[[keras.Model, tf.data.Dataset], tuple[np.ndarray, np.ndarray]]

# Options left out of a run's fingerprint (every other FinetuneConfig / RunConfig field is in it): tensorboard
# only adds logs; strategy counts by its effect, the number of replicas (which, with batch_size, learning_rate
# and lr_scaling, fixes the batch plan), so "auto" resumes on another machine with as many devices; run_dir is
# where the run is, not what it is; baseline and curve are other runs, in their own directories; model,
# pretrained and data count as what they resolved to (the catalog entry and its weights, the data source, its
# classes and per-split counts), so the same folder given by another relative path is no change.
UNFINGERPRINTED = ("tensorboard", "strategy", "run_dir", "baseline", "curve", "model", "pretrained", "data")


class TrainingDivergedError(ZooError):
    """The loss became NaN or infinite."""


@dataclass
class FinetuneResult:
    """What a fine-tune produced: the trained model, per-epoch history, final metrics, the run folder,
    the phases, and the final evaluations (labels and predictions) per split."""

    model: keras.Model
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    run_dir: str | None = None
    phases: list[Phase] = field(default_factory=list)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    seconds: float = 0.0  # the run's time in finetune, over every call that resumed it
    resumed: bool = False  # this call went on from a checkpoint in run_dir


def finetune(
    model: keras.Model,
    data,
    config: FinetuneConfig | None = None,
    *,
    data_options: dict | None = None,
    run_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    verbose: int | str = "auto",
    extractor: Extractor | None = None,
    finish: bool = True,
    callbacks: list[keras.callbacks.Callback] | None = None,
    initial_epoch: int = 0,
    **options,
) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` as ``config`` (or its fields given as keyword arguments) says.

    Args:
        data: anything ``zoo.data.load`` takes (a folder, ``"tfds:NAME"``, ``"digits"``, arrays), or a
            tuple ``(train, val[, test])`` of batched ``tf.data.Dataset``s of ``(image, label)``; pass
            them unshuffled: finetune shuffles each epoch by ``(seed, epoch)``, so runs resume exactly.
        config: a ``zoo.config.FinetuneConfig``; ``options`` (its field names) override its fields.
            See ``FinetuneConfig`` for every option (recipe, epochs, learning_rate, batch_size, ...).
        data_options: more arguments for ``zoo.data.load``, e.g. ``{"classes": [5, 6], "per_class": 10}``.
        run_dir: checkpoint every epoch there; calling again with the same arguments resumes. It is locked
            for the call: another process on it is refused (``zoo.runs.RunLockedError``); resuming with other
            settings is refused (``zoo.runs.RunMismatchError``), as is a run with no good checkpoint left
            (``zoo.runs.RunDamagedError``).
        overwrite: replace what ``run_dir`` holds when it cannot be resumed: a finished run, a run with other
            settings or a damaged one (an unfinished run with the same settings resumes all the same).
        verbose: Keras's progress output; "auto": a progress bar on a terminal, one line per epoch
            otherwise (a pipe, a log file); 0 is silent (no log lines either).
        extractor: computes a frozen body's features on a split, as ``zoo.training.features.extract``
            (the default) does; tuning passes one that shares them between trials.
        finish: mark the run finished at the end. ``False`` leaves that to the caller (``RunDir.finish()``,
            after its own reports): until then a call with the same arguments re-evaluates the best weights
            and returns, without training.
        callbacks: more Keras callbacks, given to each phase's ``fit`` after the checkpoint callback (a
            phase that trains the head on cached features fits, and shows them, the head model, a whole epoch per
            graph call: their batch hooks run once an epoch there).
        initial_epoch: the model's weights are the recipe's after this many epochs: train the rest of the
            plan for ``epochs`` from there, as ``model.fit``'s ``initial_epoch`` does (the learning-rate
            schedule goes on where it was; the optimizer's moments start afresh). Hyperband's later
            brackets continue their trials so.

    A model built outside the strategy's scope, or with ``mixed_precision``, is trained as a copy
    (``result.model``). Example:
        >>> result = finetune(model, "digits", recipe="full", epochs=3, run_dir="runs/digits")
    """
    base = config if config is not None else FinetuneConfig()
    if not isinstance(base, FinetuneConfig):
        raise InvalidArgumentError(f"config must be a zoo.config.FinetuneConfig, got {type(base).__name__}")
    config = base.replace(**options) if options else base
    if not isinstance(model, keras.Model):
        raise InvalidArgumentError(f"model must be a keras.Model (from zoo.create_model, say), got "
                                   f"{type(model).__name__}")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int) or not 0 <= initial_epoch < config.epochs:
        raise InvalidArgumentError(f"initial_epoch must be an integer in [0, epochs={config.epochs}), got "
                                   f"{initial_epoch!r}")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    with memory.released():
        return _Finetune(model, data, config, data_options or {}, run_dir, overwrite, verbose,
                         extractor or extract, finish, callbacks or [], initial_epoch).run()


@dataclass
class _Splits:
    """The data as the loop uses it: batched splits, and how the training split is cut into steps."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    test: tf.data.Dataset | None
    num_classes: int
    class_names: list[str] | None
    batch_size: int
    steps: int
    from_source: bool
    fingerprint: dict  # what the data is, for the run's fingerprint


@dataclass
class _State:
    """Where a run is: saved with every checkpoint, read back on resume."""

    phase_index: int = 0
    phase_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: float = math.inf  # the run's best monitored loss, across phases
    phase_best: float | None = None  # early stopping's, within the phase
    wait: int = 0
    best_epoch: int | None = None  # the epoch (counted over the run) whose weights are in best.npz
    seconds: float = 0.0  # time spent in finetune on this run, over every call that resumed it


class _Finetune:
    def __init__(self, model, data, config: FinetuneConfig, data_options, run_dir, overwrite, verbose, extractor,
                 finish=True, callbacks=(), initial_epoch=0):
        self.config, self.verbose, self.extract, self.finish = config, verbose, extractor, finish
        self.initial_epoch = initial_epoch
        self.callbacks = list(callbacks)
        strategy = config.strategy
        self.strategy = distribute.strategy(strategy) if isinstance(strategy, str) else strategy
        self.batches = distribute.batch_plan(self.strategy, batch_size=config.batch_size,
                                             learning_rate=config.learning_rate, scale_rule=config.lr_scaling)
        self.model = (_with_policy(model, config.mixed_precision, self.strategy) if config.mixed_precision
                      else _in_scope(model, self.strategy))
        self.phases = plan(config.recipe, config.epochs, config.blocks, len(groups(self.model)) - 1)
        self.splits = _data(data, self.model, config, data_options)
        if self.model.output.shape[-1] != self.splits.num_classes:
            raise InvalidArgumentError(
                f"the model's head has {self.model.output.shape[-1]} outputs but the data has "
                f"{self.splits.num_classes} classes: create the model with num_classes={self.splits.num_classes}")
        self.cache = config.cache_features is True or (
            config.cache_features == "auto" and self.splits.from_source and config.augment == "none"
            and config.mix == "none")
        if run_dir is not None and not distribute.is_chief(self.strategy):
            run_dir = distribute.backup_dir(run_dir, self.strategy)  # only the chief writes the run directory
        self.run_dir = RunDir(run_dir) if run_dir is not None else None
        self.overwrite = overwrite
        self.state, self.checkpoint, self.best_weights = _State(), None, None
        self.cached = None  # ((features, head), {split: cached dataset}) while the head trains on cached features
        self.started, self.seconds_before = time.monotonic(), 0.0
        # whether checkpoint.npz / best.npz hold what the state refers to: only such a file is kept as the
        # previous good one when a new one replaces it (a damaged or stale one is not)
        self.good = {CHECKPOINT: False, BEST: False}

    def run(self) -> FinetuneResult:
        with self.run_dir.lock() if self.run_dir is not None else contextlib.nullcontext():
            return self._run()

    def _run(self) -> FinetuneResult:
        config, run = self.config, self.run_dir
        self.started = time.monotonic()
        if self.verbose and self.batches.replicas > 1:
            log.info(self.batches.describe())
        found = run.open(self.fingerprint(), self.overwrite, check=self._best_problem) if run else None
        keras.utils.set_random_seed(config.seed)
        if run is not None and found is None:
            run.write_text("config.yaml", config.to_yaml())
            run.write_json(RUN_INFO, {"class_names": self.splits.class_names, "distribution": self.batches.as_dict(),
                                      "phases": [dataclasses.asdict(p) for p in self.phases]})
        self._resume(found)
        if found is None and self.initial_epoch:
            self.state.phase_index, self.state.phase_epoch = _position(self.phases, self.initial_epoch)
        for index, phase in enumerate(self.phases):
            if index >= self.state.phase_index:
                with self.strategy.scope():
                    self._run_phase(index, phase)
        self._restore_best()
        with self.strategy.scope():
            splits = {"val": self.splits.val, "test": self.splits.test}
            evaluations = {name: self._evaluate(name, split) for name, split in splits.items() if split is not None}
        metrics = {k: v for name, scores in evaluations.items() for k, v in scores.as_dict(f"{name}_").items()}
        self.state.seconds = self._seconds()
        if run is not None:
            run.write_history(self.state.history)
            run.write_json("metrics.json", metrics)
            run.save_model(self.model, "model.keras")
            run.write_json(STATE, {**dataclasses.asdict(self.state), "finished": self.finish})
        return FinetuneResult(self.model, self.state.history, metrics, str(run.path) if run else None, self.phases,
                              evaluations, round(self.state.seconds, 3), found is not None)

    def fingerprint(self) -> dict:
        """What this run is: the data, every option that changes the result (all but ``UNFINGERPRINTED``), the
        model and the number of replicas. A run directory keeps it; resuming with another is refused."""
        model, entry = self.model, entry_of(self.model)
        shapes = json.dumps([list(w.shape) for w in model.weights])
        inputs = model.input_shape
        return {  # in the order a difference is reported
            "data": self.splits.fingerprint,
            "options": {k: v for k, v in self.config.as_dict().items() if k not in UNFINGERPRINTED},
            "model": {"name": entry.name if entry else None, "weights": entry.weights if entry else None,
                      "input_shape": [list(s[1:]) for s in inputs] if isinstance(inputs, list) else list(inputs[1:]),
                      "outputs": int(model.output.shape[-1]), "parameters": int(model.count_params()),
                      "weight_shapes": hashlib.sha256(shapes.encode()).hexdigest()[:16]},
            "distribution": {"replicas": self.batches.replicas},  # with the options, the whole batch plan
            **({"initial_epoch": self.initial_epoch} if self.initial_epoch else {}),
        }

    def _seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def _best(self, epoch: int):
        """The best weights saved at ``epoch`` (best.npz, else best.prev.npz), or None."""
        arrays, name, _ = self.run_dir.load_good(
            BEST, check=lambda a: None if int(a["epoch"][0]) == epoch else f"holds epoch {int(a['epoch'][0])}")
        self.good[BEST] = name == BEST
        return arrays

    def _best_problem(self, checkpoint: dict) -> str | None:
        """Why a checkpoint cannot be resumed: the best weights it goes with are missing or damaged. (A
        checkpoint of the best epoch itself holds them: best.npz is written after it.)"""
        state = json.loads(str(checkpoint["state"][0]))
        epoch = state.get("best_epoch")
        if epoch is None or epoch == len(state["history"]) or self._best(epoch) is not None:
            return None
        return f"the best weights it goes with ({BEST}, epoch {epoch}) are missing or damaged"

    def _resume(self, found) -> None:
        if found is None:
            return
        self.checkpoint, name, problems = found
        self.state = _State(**json.loads(str(self.checkpoint["state"][0])))
        self.good[CHECKPOINT] = name == CHECKPOINT
        if self.state.best_epoch is not None and self._best(self.state.best_epoch) is None:
            self._save_best(self.checkpoint["model"])  # killed (or a full disk) between the checkpoint and best.npz
        self.seconds_before = self.state.seconds
        self.run_dir.write_json(STATE, dataclasses.asdict(self.state))  # state.json as the checkpoint says
        if self.verbose:
            for problem in problems:
                log.warning("%s: resuming from %s", problem, name)
            done = self.state.phase_index >= len(self.phases)
            log.info("resuming %s: %s", self.run_dir.path, "training done, evaluating" if done else
                     f"phase {self.state.phase_index + 1}, {self.state.phase_epoch} epochs done")

    def _run_phase(self, index: int, phase: Phase) -> None:
        model, resumed, state, config = self.model, self.checkpoint, self.state, self.config
        if resumed is not None and state.phase_epoch == 0:
            model.set_weights(resumed["model"])  # a phase boundary: the weights before this phase's setup
        multipliers = self._setup(phase)
        split = head_split(model) if self.cache and phase.trains == "head" else None
        if resumed is not None and state.phase_epoch > 0:
            model.set_weights(resumed["model"])
        self.checkpoint = None
        self.cached = None
        batch, steps = self.splits.batch_size, self.splits.steps  # the same batches, cached or not
        if split is not None:
            target, examples = split[1], tf.data.Dataset.from_tensor_slices(self.extract(split[0], self.splits.train))
            val = self._cached(split[0], self.splits.val)
            self.cached = split, {"val": val}
        else:
            target, val, examples = model, self.splits.val, self.splits.train.unbatch()
        seed = config.seed * 101 + index if config.shuffle else None
        optimizer = make_optimizer(config.optimizer, self.learning_rate(phase, steps), multipliers=multipliers,
                                   gradient_accumulation_steps=config.grad_accum if config.grad_accum > 1 else None,
                                   use_ema=config.ema is not None, ema_momentum=config.ema or 0.99)
        soft = config.mix != "none" and split is None  # mixed batches carry soft labels
        # a head on cached features is a few matrix products a step: a whole epoch per graph call, not one
        # Python round trip per step (the same updates in the same order)
        target.compile(optimizer=optimizer, loss=loss_for(model, label_smoothing=config.label_smoothing,
                                                         soft_labels=soft), metrics=metrics_for(soft),
                       jit_compile=config.jit_compile,
                       steps_per_execution=steps if split is not None else 1)
        # Built before fit: otherwise the first train step creates the metrics and the optimizer's slots while
        # tracing, and TensorFlow traces the whole step again without them.
        target.optimizer.build(target.trainable_variables)
        compat.build_for_fit(target, examples.batch(batch).element_spec)
        if resumed is not None and state.phase_epoch > 0 and resumed.get("optimizer"):
            for variable, value in zip(target.optimizer.variables, resumed["optimizer"]):
                variable.assign(value)
            if config.ema is not None:  # saved at an epoch's end, with the average in the model: swap back
                compat.swap_ema(target.optimizer, target.trainable_variables)
        elif state.phase_epoch > 0:  # initial_epoch: the schedule goes on from there
            compat.set_batches_seen(target.optimizer, state.phase_epoch * steps)
        state.phase_index = index
        if self.verbose:
            log.info("phase %d '%s': trains %s, %d epochs, lr %g%s", index + 1, phase.name, phase.describe(),
                     phase.epochs, self.batches.learning_rate * phase.lr_scale, " (cached features)" if split else "")
        early = None
        if config.patience is not None:
            early = ResumableEarlyStopping(monitor="val_loss" if val is not None else "loss", patience=config.patience,
                                           wait=state.wait, best=state.phase_best, verbose=1 if self.verbose else 0)
        end = EpochEnd(lambda logs: self._end_epoch(phase, target, early, logs))
        callbacks = [keras.callbacks.TerminateOnNaN(), *([early] if early else []), end, *self.callbacks]
        if config.precise_bn:
            callbacks.insert(0, PreciseBatchNorm(examples.batch(batch)))
        if config.ema is not None:  # first: validation, the epoch's end and the kept weights see the average
            callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        if config.tensorboard and self.run_dir is not None:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(self.run_dir.file("logs"))))
        if state.phase_epoch < phase.epochs:
            stream = epochs_stream(examples, batch, steps, state.phase_epoch, phase.epochs, seed)
            if soft:
                stream = mix_batches(stream, config.mix, int(model.output.shape[-1]), config.seed + index)
            target.fit(stream, validation_data=val, initial_epoch=state.phase_epoch, epochs=phase.epochs,
                       steps_per_epoch=steps, shuffle=False, callbacks=callbacks, verbose=self.verbose)
        if end.diverged:
            where = f" in {self.run_dir.file(CHECKPOINT)}" if self.run_dir else ""
            bad = _non_finite(examples)
            cause = (f"{bad} training example(s) hold NaN or infinite values: clean the data" if bad
                     else "lower the learning rate")
            raise TrainingDivergedError(f"the loss became NaN in phase '{phase.name}', epoch {state.phase_epoch + 1}: "
                                        f"{cause}; the last good checkpoint is kept{where}")
        self._restore_best()
        self.state = _State(phase_index=index + 1, history=state.history, best=state.best,
                            best_epoch=state.best_epoch, seconds=state.seconds)
        self._save(optimizer_variables=[])

    def learning_rate(self, phase: Phase, steps: int):
        """The phase's learning rate or schedule. Warm-up: the config's fraction of the phase's steps, and
        after a linear or sqrt scaling of the rate at least the batch plan's epochs (Goyal et al. 2017). Counted
        in updates: with gradient accumulation, one per ``grad_accum`` batches."""
        per_epoch = steps / self.config.grad_accum
        total = max(1, int(per_epoch * phase.epochs))
        warmup = max(int(self.config.warmup * total), int(self.batches.warmup_epochs * per_epoch))
        return schedule(self.config.lr_schedule, self.batches.learning_rate * phase.lr_scale, total, warmup)

    def _setup(self, phase: Phase) -> dict[str, float]:
        """Set what trains in this phase; return the learning-rate multipliers."""
        model, config = self.model, self.config
        if phase.trains == "head":
            freeze(model, train_bn=config.train_bn)
        elif phase.trains == "all":
            freeze_to(model, 0, train_bn=config.train_bn)
        elif phase.trains == "lora":
            if not any(getattr(layer, "lora_enabled", False) for layer in compat.flatten_layers(model)):
                apply_lora(model, rank=config.lora_rank)
        else:
            freeze(model, train_bn=config.train_bn)
            unfreeze(model, blocks=phase.blocks, train_bn=config.train_bn)
        trainable = [g for g in groups(model) if any(leaf.trainable_weights for leaf in g.layers)]
        if config.lr_slice is not None or config.layer_decay is not None:
            return group_multipliers(trainable, lr_slice=config.lr_slice, layer_decay=config.layer_decay)
        if phase.spread and len(trainable) > 1:
            return group_multipliers(trainable, lr_slice=(0.1, 1.0))
        return {}

    def _evaluate(self, name: str, dataset) -> Evaluation:
        """The final evaluation of a split: on cached features when the last phase trained the head on them
        (the same numbers: the head's layers are the model's, and the backbone then runs once per image),
        else through the model."""
        if self.cached is None:
            return evaluate(self.model, dataset)
        (features, head), cached = self.cached
        if cached.get(name) is None:
            cached[name] = self._cached(features, dataset)
        return evaluate(head, cached[name])

    def _cached(self, features: keras.Model, dataset):
        if dataset is None:
            return None
        return tf.data.Dataset.from_tensor_slices(self.extract(features, dataset)).batch(self.splits.batch_size)

    def _end_epoch(self, phase: Phase, target: keras.Model, early, logs: dict) -> None:
        state = self.state
        state.phase_epoch += 1
        state.history.append({"phase": phase.name, "epoch": self.initial_epoch + len(state.history) + 1,
                              **{k: float(v) for k, v in logs.items()}})
        monitor = float(logs.get("val_loss", logs["loss"]))
        improved = monitor < state.best  # the best weights of the whole run are the ones kept
        if improved:
            state.best, state.best_epoch = monitor, len(state.history)
            if self.run_dir is None:
                self.best_weights = self.model.get_weights()
        if early is not None:
            state.wait, state.phase_best = early.wait, early.best
        self._save([v.numpy() for v in target.optimizer.variables], best=improved)

    def _save(self, optimizer_variables, best: bool = False) -> None:
        """The checkpoint (the one it replaces is kept as checkpoint.prev.npz); with ``best``, its weights as
        best.npz (the one before kept as best.prev.npz); then state.json, a readable copy of the checkpoint's
        state. A write that fails (a full disk) leaves the last good files as they were: best.npz is never
        newer than the checkpoint, and a checkpoint of the best epoch holds the best weights itself."""
        if self.run_dir is None:
            return
        self.state.seconds = self._seconds()
        state = dataclasses.asdict(self.state)
        weights = self.model.get_weights()
        self.run_dir.save_arrays(CHECKPOINT, {"model": weights, "optimizer": optimizer_variables,
                                              "state": [np.array(json.dumps(state))]},
                                  keep_previous=self.good[CHECKPOINT])
        self.good[CHECKPOINT] = True
        if best:
            self._save_best(weights)
        self.run_dir.write_json(STATE, state)

    def _save_best(self, weights) -> None:
        self.run_dir.save_arrays(BEST, {"model": weights, "epoch": [np.array(self.state.best_epoch)]},
                                 keep_previous=self.good[BEST])
        self.good[BEST] = True

    def _restore_best(self) -> None:
        if self.run_dir is not None and self.state.best_epoch is not None:
            best = self._best(self.state.best_epoch)
            if best is None:
                raise RunDamagedError(f"the best weights in {self.run_dir.file(BEST)} (epoch {self.state.best_epoch}) "
                                      f"are missing or damaged: delete the run directory, or pass overwrite=True "
                                      f"(--overwrite) to start it over")
            self.model.set_weights(best["model"])
        elif self.best_weights is not None:
            self.model.set_weights(self.best_weights)


SHUFFLE_BUFFER = 10_000


def _position(phases: list[Phase], epoch: int) -> tuple[int, int]:
    """(phase index, epochs done in it) after ``epoch`` epochs of ``phases``."""
    for index, phase in enumerate(phases):
        if epoch < phase.epochs:
            return index, epoch
        epoch -= phase.epochs
    return len(phases), 0


def epochs_stream(examples: tf.data.Dataset, batch: int, steps: int, first: int, last: int,
                  seed: int | None) -> tf.data.Dataset:
    """Epochs ``first..last-1`` of ``steps`` batches each, back to back, built lazily (any number of epochs).

    Epoch ``e`` is shuffled from ``(seed, e)`` alone, with stateless random ops: each block of
    ``SHUFFLE_BUFFER`` examples in a random order (the whole set, up to that size). So a run resumed at
    epoch ``first`` sees the order an uninterrupted run saw, and so does a run under a distribution
    strategy, which iterates the dataset once more before training (``Dataset.shuffle``'s order depends on
    how often the dataset object was iterated). ``seed=None``: no shuffle.
    """
    def shuffle(e: tf.Tensor, i: tf.Tensor, items):
        size = tf.shape(tf.nest.flatten(items)[0])[0]
        order = tf.random.experimental.stateless_shuffle(tf.range(size), seed=tf.stack([seed, e * 1_000_003 + i]))
        return tf.nest.map_structure(lambda t: tf.gather(t, order), items)

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        if seed is None:
            return examples.batch(batch).take(steps)
        blocks = examples.batch(SHUFFLE_BUFFER).enumerate().map(lambda i, items: shuffle(e, i, items))
        return blocks.unbatch().batch(batch).take(steps)

    stream = tf.data.Dataset.range(first, last).flat_map(epoch)  # flat_map cannot know the count: say it
    return stream.apply(tf.data.experimental.assert_cardinality((last - first) * steps)).prefetch(tf.data.AUTOTUNE)


def _non_finite(examples: tf.data.Dataset) -> int:
    """How many ``(inputs, label)`` examples hold a NaN or infinite input value (one pass, after a divergence);
    0 for texts."""
    if examples.element_spec[0].dtype == tf.string:
        return 0
    flags = examples.map(lambda x, y: tf.cast(tf.reduce_any(~tf.math.is_finite(tf.cast(x, "float32"))), "int64"))
    return int(flags.reduce(tf.constant(0, "int64"), lambda total, flag: total + flag))


def _data(data, model: keras.Model, config: FinetuneConfig, options: dict) -> _Splits:
    loaded = isinstance(data, tuple) and len(data) == 4 and hasattr(data[3], "num_classes")  # zoo.data.load's
    if not loaded and isinstance(data, tuple) and data and isinstance(data[0], tf.data.Dataset):
        train, val, test = (*data, None, None)[:3]
        steps = int(train.cardinality())
        steps = steps if steps > 0 else sum(1 for _ in train)
        batch = int(next(iter(train))[0].shape[0])
        described = {"source": "datasets", "train_batches": steps, "batch_size": batch,
                     "element_spec": str(train.element_spec),
                     **{f"{name}_batches": None if split is None else int(split.cardinality())
                        for name, split in (("validation", val), ("test", test))}}
        return _Splits(train, val, test, int(model.output.shape[-1]), None, batch, steps, from_source=False,
                       fingerprint=described)
    if not loaded:
        from zoo import data as loader

        # unshuffled: finetune shuffles each epoch by (seed, epoch), which a resumed run can repeat
        data = loader.load(data, model=model, batch_size=config.batch_size, augment=config.augment,
                           shuffle=False, seed=config.seed, **options)
    train, val, test, info = data  # as zoo.data.load returns it: re-batched at the config's batch size
    steps = math.ceil(info.num_examples["train"] / config.batch_size)
    source = info.source
    if isinstance(source, str) and os.path.isdir(source):
        source = os.path.abspath(source)  # a folder, however it was named
    described = {"source": source, "class_names": list(info.class_names), "num_examples": dict(info.num_examples),
                 "image_size": info.image_size and list(info.image_size), "channels": info.channels,
                 "options": {k: v for k, v in options.items() if k != "data_dir"}}
    val, test = (split if info.num_examples[name] else None  # too few examples to hold any out
                 for name, split in (("validation", val), ("test", test)))
    return _Splits(train, val, test, info.num_classes, list(info.class_names), config.batch_size, steps,
                   from_source=True, fingerprint=described)


def _in_scope(model: keras.Model, strategy: tf.distribute.Strategy) -> keras.Model:
    """The model itself if its variables belong to ``strategy``, else a copy built in its scope."""
    if all(strategy.extended.variable_created_in_scope(v.value) for v in model.weights):  # the tf.Variable
        return model
    with strategy.scope():
        copy = clone(model)
        copy.set_weights(model.get_weights())
    return copy


def _with_policy(model: keras.Model, policy: str, strategy: tf.distribute.Strategy) -> keras.Model:
    """A copy of ``model`` whose layers compute in ``policy``, built in the strategy's scope (the last
    layer stays float32, for a stable loss)."""

    def with_policy(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer is model.layers[-1] else policy
        return layer.__class__.from_config(config)

    with strategy.scope():
        copy = clone(model, clone_function=with_policy, recursive=True)
        copy.set_weights(model.get_weights())
    return copy
