"""``finetune``: run a recipe's phases with ``model.fit`` and Keras callbacks; checkpoint every epoch, resume exactly.

Each phase sets what trains (``groups``), compiles with a new optimizer whose per-layer rates implement
discriminative learning rates, and fits. Phases that train only the head over a frozen backbone train
on cached features. With a ``run_dir`` every epoch is written atomically (weights, optimizer and loop
state in one ``checkpoint.npz``), and calling ``finetune`` again resumes where it stopped.

Example:
    >>> model = zoo.create_model("efficientnet_b0.imagenet", num_classes=5)
    >>> result = zoo.finetune(model, "path/to/images", recipe="two_phase", epochs=10, run_dir="runs/flowers")
    >>> result.metrics["test_accuracy"]
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from zoo import compat, distribute, memory
from zoo.backbone import clone
from zoo.config import FinetuneConfig
from zoo.errors import InvalidArgumentError, ZooError
from zoo.evaluation import Evaluation, evaluate, loss_for
from zoo.runs import BEST, CHECKPOINT, STATE, RunDir
from zoo.training.callbacks import EpochEnd, PreciseBatchNorm, ResumableEarlyStopping
from zoo.training.features import extract, head_split
from zoo.training.groups import freeze, freeze_to, groups, unfreeze
from zoo.training.lora import apply_lora
from zoo.training.optim import group_multipliers, make_optimizer, schedule
from zoo.training.recipes import Phase, plan

log = logging.getLogger(__name__)

RUN_INFO = "run.json"  # facts of a run that are not options: class names, phases, the batch plan
Extractor = Callable[[keras.Model, tf.data.Dataset], tuple[np.ndarray, np.ndarray, int]]


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
        run_dir: checkpoint every epoch there; calling again with the same arguments resumes.
        overwrite: replace a finished run in ``run_dir``.
        verbose: Keras's progress output; "auto": a progress bar on a terminal, one line per epoch
            otherwise (a pipe, a log file); 0 is silent (no log lines either).
        extractor: computes a frozen body's features on a split, as ``zoo.training.features.extract``
            (the default) does; tuning passes one that shares them between trials.

    A model built outside the strategy's scope, or with ``mixed_precision``, is trained as a copy
    (``result.model``). Example:
        >>> result = finetune(model, "digits", recipe="full", epochs=3, run_dir="runs/digits")
    """
    base = config if config is not None else FinetuneConfig()
    if not isinstance(base, FinetuneConfig):
        raise InvalidArgumentError(f"config must be a zoo.config.FinetuneConfig, got {type(base).__name__}")
    config = base.replace(**options) if options else base
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    with memory.released():
        return _Finetune(model, data, config, data_options or {}, run_dir, overwrite, verbose,
                         extractor or extract).run()


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


@dataclass
class _State:
    """Where a run is: saved with every checkpoint, read back on resume."""

    phase_index: int = 0
    phase_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: float = math.inf  # the run's best monitored loss, across phases
    phase_best: float | None = None  # early stopping's, within the phase
    wait: int = 0


class _Finetune:
    def __init__(self, model, data, config: FinetuneConfig, data_options, run_dir, overwrite, verbose, extractor):
        self.config, self.verbose, self.extract = config, verbose, extractor
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
            config.cache_features == "auto" and self.splits.from_source and config.augment == "none")
        if run_dir is not None and not distribute.is_chief(self.strategy):
            run_dir = distribute.backup_dir(run_dir, self.strategy)  # only the chief writes the run directory
        self.run_dir = RunDir(run_dir) if run_dir is not None else None
        self.overwrite = overwrite
        self.state, self.checkpoint, self.best_weights = _State(), None, None

    def run(self) -> FinetuneResult:
        config, run = self.config, self.run_dir
        if self.verbose and self.batches.replicas > 1:
            log.info(self.batches.describe())
        saved = run.claim(self.overwrite) if run else None
        keras.utils.set_random_seed(config.seed)
        if run is not None and saved is None:
            run.write_text("config.yaml", config.to_yaml())
            run.write_json(RUN_INFO, {"class_names": self.splits.class_names, "distribution": self.batches.as_dict(),
                                      "phases": [dataclasses.asdict(p) for p in self.phases]})
        self._resume(saved)
        for index, phase in enumerate(self.phases):
            if index >= self.state.phase_index:
                with self.strategy.scope():
                    self._run_phase(index, phase)
        self._restore_best()
        with self.strategy.scope():
            splits = {"val": self.splits.val, "test": self.splits.test}
            evaluations = {name: evaluate(self.model, split) for name, split in splits.items() if split is not None}
        metrics = {k: v for name, scores in evaluations.items() for k, v in scores.as_dict(f"{name}_").items()}
        if run is not None:
            run.write_history(self.state.history)
            run.write_json("metrics.json", metrics)
            run.save_model(self.model, "model.keras")
            run.write_json(STATE, {**dataclasses.asdict(self.state), "finished": True})
        return FinetuneResult(self.model, self.state.history, metrics, str(run.path) if run else None, self.phases,
                              evaluations)

    def _resume(self, saved: dict | None) -> None:
        if saved is None or not self.run_dir.exists(CHECKPOINT):
            return
        self.checkpoint = self.run_dir.load_arrays(CHECKPOINT)
        self.state = _State(**json.loads(str(self.checkpoint["state"][0])))
        if self.verbose:
            log.info("resuming %s: phase %d, %d epochs done", self.run_dir.path, self.state.phase_index + 1,
                     self.state.phase_epoch)

    def _run_phase(self, index: int, phase: Phase) -> None:
        model, resumed, state, config = self.model, self.checkpoint, self.state, self.config
        if resumed is not None and state.phase_epoch == 0:
            model.set_weights(resumed["model"])  # a phase boundary: the weights before this phase's setup
        multipliers = self._setup(phase)
        split = head_split(model) if self.cache and phase.trains == "head" else None
        if resumed is not None and state.phase_epoch > 0:
            model.set_weights(resumed["model"])
        self.checkpoint = None
        if split is not None:
            target, (x, y, batch) = split[1], self.extract(split[0], self.splits.train)
            val = self._cached(split[0], self.splits.val)
            examples, steps = tf.data.Dataset.from_tensor_slices((x, y)), math.ceil(len(x) / batch)
        else:
            target, val = model, self.splits.val
            examples, batch, steps = self.splits.train.unbatch(), self.splits.batch_size, self.splits.steps
        seed = config.seed * 101 + index if config.shuffle else None
        optimizer = make_optimizer(config.optimizer, self.learning_rate(phase, steps), multipliers=multipliers)
        target.compile(optimizer=optimizer, loss=loss_for(model), metrics=["accuracy"], jit_compile=config.jit_compile)
        if resumed is not None and state.phase_epoch > 0 and resumed.get("optimizer"):
            target.optimizer.build(target.trainable_variables)
            for variable, value in zip(target.optimizer.variables, resumed["optimizer"]):
                variable.assign(value)
        state.phase_index = index
        if self.verbose:
            log.info("phase %d '%s': trains %s, %d epochs, lr %g%s", index + 1, phase.name, phase.describe(),
                     phase.epochs, self.batches.learning_rate * phase.lr_scale, " (cached features)" if split else "")
        early = None
        if config.patience is not None:
            early = ResumableEarlyStopping(monitor="val_loss" if val is not None else "loss", patience=config.patience,
                                           wait=state.wait, best=state.phase_best, verbose=1 if self.verbose else 0)
        end = EpochEnd(lambda logs: self._end_epoch(phase, target, early, logs))
        callbacks = [keras.callbacks.TerminateOnNaN(), *([early] if early else []), end]
        if config.precise_bn:
            callbacks.insert(0, PreciseBatchNorm(examples.batch(batch), val))
        if config.tensorboard and self.run_dir is not None:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(self.run_dir.file("logs"))))
        if state.phase_epoch < phase.epochs:
            stream = epochs_stream(examples, batch, steps, state.phase_epoch, phase.epochs, seed)
            target.fit(stream, validation_data=val, initial_epoch=state.phase_epoch, epochs=phase.epochs,
                       steps_per_epoch=steps, shuffle=False, callbacks=callbacks, verbose=self.verbose)
        if end.diverged:
            where = f" in {self.run_dir.file(CHECKPOINT)}" if self.run_dir else ""
            raise TrainingDivergedError(
                f"the loss became NaN in phase '{phase.name}', epoch {state.phase_epoch + 1}: lower the learning "
                f"rate, or check the data for NaN or infinite values; the last good checkpoint is kept{where}")
        self._restore_best()
        self.state = _State(phase_index=index + 1, history=state.history, best=state.best)
        self._save(optimizer_variables=[])

    def learning_rate(self, phase: Phase, steps: int):
        """The phase's learning rate or schedule. Warm-up: the config's fraction of the phase's steps, and
        after a linear or sqrt scaling of the rate at least the batch plan's epochs (Goyal et al. 2017)."""
        total = steps * phase.epochs
        warmup = max(int(self.config.warmup * total), self.batches.warmup_epochs * steps)
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

    def _cached(self, features: keras.Model, dataset):
        if dataset is None:
            return None
        x, y, batch = self.extract(features, dataset)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)

    def _end_epoch(self, phase: Phase, target: keras.Model, early, logs: dict) -> None:
        state = self.state
        state.phase_epoch += 1
        state.history.append({"phase": phase.name, "epoch": len(state.history) + 1,
                              **{k: float(v) for k, v in logs.items()}})
        monitor = float(logs.get("val_loss", logs["loss"]))
        if monitor < state.best:  # the best weights of the whole run are the ones kept
            state.best = monitor
            if self.run_dir is not None:
                self.run_dir.save_arrays(BEST, {"model": self.model.get_weights()})
            else:
                self.best_weights = self.model.get_weights()
        if early is not None:
            state.wait, state.phase_best = early.wait, early.best
        self._save([v.numpy() for v in target.optimizer.variables])

    def _save(self, optimizer_variables) -> None:
        if self.run_dir is None:
            return
        state = dataclasses.asdict(self.state)
        self.run_dir.save_arrays(CHECKPOINT, {"model": self.model.get_weights(), "optimizer": optimizer_variables,
                                              "state": [np.array(json.dumps(state))]})
        self.run_dir.write_json(STATE, state)

    def _restore_best(self) -> None:
        if self.run_dir is not None and self.run_dir.exists(BEST):
            self.model.set_weights(self.run_dir.load_arrays(BEST)["model"])
        elif self.best_weights is not None:
            self.model.set_weights(self.best_weights)


SHUFFLE_BUFFER = 10_000


def epochs_stream(examples: tf.data.Dataset, batch: int, steps: int, first: int, last: int,
                  seed: int | None) -> tf.data.Dataset:
    """Epochs ``first..last-1`` of ``steps`` batches each, back to back, built lazily (any number of epochs).

    Each epoch is reshuffled from ``seed``; a run resumed at epoch ``first`` skips the earlier epochs'
    batches, so it sees the order an uninterrupted run saw (tf.data's reshuffling depends on how often a
    dataset object was iterated, which a new process cannot know otherwise). ``seed=None``: no shuffle.
    """
    if seed is not None:
        examples = examples.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    stream = examples.batch(batch).repeat().skip(first * steps).take((last - first) * steps)
    return stream.prefetch(tf.data.AUTOTUNE)


def _data(data, model: keras.Model, config: FinetuneConfig, options: dict) -> _Splits:
    loaded = isinstance(data, tuple) and len(data) == 4 and hasattr(data[3], "num_classes")  # zoo.data.load's
    if not loaded and isinstance(data, tuple) and data and isinstance(data[0], tf.data.Dataset):
        train, val, test = (*data, None, None)[:3]
        steps = int(train.cardinality())
        steps = steps if steps > 0 else sum(1 for _ in train)
        batch = int(next(iter(train))[0].shape[0])
        return _Splits(train, val, test, int(model.output.shape[-1]), None, batch, steps, from_source=False)
    if not loaded:
        from zoo import data as loader

        # unshuffled: finetune shuffles each epoch by (seed, epoch), which a resumed run can repeat
        data = loader.load(data, model=model, batch_size=config.batch_size, augment=config.augment,
                           shuffle=False, seed=config.seed, **options)
    train, val, test, info = data  # as zoo.data.load returns it: re-batched at the config's batch size
    steps = math.ceil(info.num_examples["train"] / config.batch_size)
    return _Splits(train, val, test, info.num_classes, list(info.class_names), config.batch_size, steps,
                   from_source=True)


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
