"""``finetune``: recipes as data, run by one loop that checkpoints every epoch and resumes exactly.

A recipe is a list of phases; each phase says which groups train, for how many epochs and at
what learning rate. Phases that train only the head over a frozen backbone train on cached
features when the training data has no augmentation.

Example:
    >>> model = zoo.create_model("efficientnet_b0.imagenet", num_classes=5)
    >>> result = zoo.finetune(model, data="path/to/images", recipe="two_phase", epochs=10,
    ...                       run_dir="runs/flowers")
    >>> result.metrics["test_accuracy"]
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import keras
import numpy as np
import tensorflow as tf

from zoo import distribute
from zoo.errors import InvalidArgumentError, ZooError
from zoo.finetune.bn import recalibrate_batchnorm
from zoo.finetune.features import extract, head_split
from zoo.finetune.groups import freeze, freeze_to, groups, unfreeze
from zoo.finetune.lora import apply_lora
from zoo.finetune.optim import group_multipliers, make_optimizer, schedule
from zoo.runs import BEST, CHECKPOINT, STATE, RunDir

RECIPES = ("linear_probe", "two_phase", "gradual", "full", "lora")


class TrainingDivergedError(ZooError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Phase:
    """What trains for how long: ``train`` is "head", "all", "lora" or "top:N" (N groups + head)."""

    name: str
    epochs: int
    train: str
    lr_scale: float = 1.0
    spread: bool = False  # discriminative rates over the trainable groups


def plan(recipe: str, epochs: int, blocks: int, n_blocks: int) -> list[Phase]:
    """The phases of a recipe for ``epochs`` epochs in all.

    Example:
        >>> [p.name for p in plan("two_phase", 6, blocks=2, n_blocks=4)]
        ['head', 'finetune']
    """
    if recipe not in RECIPES:
        raise InvalidArgumentError(f"unknown recipe '{recipe}': use one of {', '.join(RECIPES)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgumentError(f"epochs must be a positive integer, got {epochs!r}")
    if recipe in ("two_phase", "gradual") and epochs < 2:
        raise InvalidArgumentError(f"recipe '{recipe}' needs at least 2 epochs (head first, then more)")
    if recipe == "two_phase" and not 1 <= blocks <= n_blocks:
        raise InvalidArgumentError(f"blocks={blocks}: the backbone has {n_blocks} blocks; use 1..{n_blocks}")
    if recipe == "linear_probe":
        return [Phase("head", epochs, "head")]
    if recipe == "full":
        return [Phase("full", epochs, "all")]
    if recipe == "lora":
        return [Phase("lora", epochs, "lora")]
    if recipe == "two_phase":
        head = max(1, epochs // 3)
        return [Phase("head", head, "head"), Phase("finetune", epochs - head, f"top:{blocks}", 0.1, True)]
    # gradual (ULMFiT): one more group per epoch, the last phase takes the remaining epochs
    phases = [Phase("head", 1, "head")] + [Phase(f"top{k}", 1, f"top:{k}", 0.5, True)
                                            for k in range(1, n_blocks + 1)]
    phases = phases[:epochs]
    last = phases[-1]
    return phases[:-1] + [Phase(last.name, epochs - len(phases) + 1, last.train, last.lr_scale, last.spread)]


@dataclass
class FinetuneResult:
    """What a fine-tune produced: the trained model, per-epoch history, final metrics, the run folder."""

    model: keras.Model
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    run_dir: str | None = None
    phases: list[Phase] = field(default_factory=list)


def finetune(
    model: keras.Model,
    data,
    *,
    recipe: str = "two_phase",
    epochs: int = 6,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    blocks: int = 2,
    optimizer: str = "adam",
    lr_schedule: str = "cosine",
    warmup: float = 0.1,
    lr_slice: tuple[float, float] | None = None,
    layer_decay: float | None = None,
    lora_rank: int = 4,
    augment: str = "none",
    data_options: dict | None = None,
    shuffle: bool = True,
    cache_features: bool | str = "auto",
    patience: int | None = 3,
    train_bn: bool = False,
    precise_bn: bool = True,
    run_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    seed: int = 0,
    jit_compile: bool | str = "auto",
    strategy: str | tf.distribute.Strategy | None = None,
    lr_scaling: str | None = None,
    mixed_precision: str | None = None,
    verbose: int | str = "auto",
) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` with a recipe; see ``RECIPES`` and ``plan``.

    Args:
        data: anything ``zoo.data.load`` takes (a folder, ``"tfds:NAME"``, ``"digits"``, arrays), or a
            tuple ``(train, val[, test])`` of batched ``tf.data.Dataset``s of ``(image, label)``; pass
            them unshuffled: finetune shuffles each epoch by ``(seed, epoch)``, so runs resume exactly.
        data_options: more arguments for ``zoo.data.load``, e.g. ``{"classes": [5, 6], "per_class": 10}``.
        blocks: the top blocks ``two_phase`` unfreezes after the head.
        lr_slice / layer_decay: discriminative rates across groups (fastai's slice, timm's decay);
            by default phases that train several groups spread 10x from bottom to top.
        shuffle: shuffle the training data every epoch (cached features too).
        cache_features: "auto" caches a frozen backbone's features when ``data`` is a source loaded
            without augmentation; True forces it for phases that train only the head.
        precise_bn: after each phase, recompute trainable BatchNorm statistics from the training
            data (short fine-tunes otherwise leave them near their starting values).
        patience: early stopping on validation loss (best weights kept); None disables it.
        run_dir: checkpoint every epoch there; calling again with the same arguments resumes.
        strategy: a ``zoo.distribute.strategy`` name ("auto", "mirrored", "multi_worker", ...) or a
            strategy; ``batch_size`` is global. A model built outside the strategy's scope is rebuilt
            inside it (``result.model`` is then that copy).
        mixed_precision: "mixed_float16" or "mixed_bfloat16": train a copy of the model in that
            policy (the head stays float32 for a stable loss); ``result.model`` is the copy.
        lr_scaling: "linear" or "sqrt" scales ``learning_rate`` with the global batch over one device's.
    """
    if learning_rate <= 0:
        raise InvalidArgumentError(f"learning rates must be positive, got {learning_rate}")
    strategy = distribute.strategy(strategy) if isinstance(strategy, str) else strategy or tf.distribute.get_strategy()
    batches = distribute.batch_plan(strategy, batch_size=batch_size, learning_rate=learning_rate,
                                    scale_rule=lr_scaling)
    learning_rate = batches.learning_rate
    model = _with_policy(model, mixed_precision, strategy) if mixed_precision else _in_scope(model, strategy)
    gs = groups(model)
    phases = plan(recipe, epochs, blocks, len(gs) - 1)
    train, val, test, num_classes, class_names, source = _data(data, model, batch_size, augment, seed, data_options or {})
    if model.output.shape[-1] != num_classes:
        raise InvalidArgumentError(f"the model's head has {model.output.shape[-1]} outputs but the data has "
                                   f"{num_classes} classes: create the model with num_classes={num_classes}")
    cache = cache_features is True or (cache_features == "auto" and source and augment == "none")
    if run_dir is not None and not distribute.is_chief(strategy):
        run_dir = distribute.backup_dir(run_dir, strategy)  # only the chief writes the run directory
    run = RunDir(run_dir) if run_dir is not None else None
    if verbose and batches.replicas > 1:
        print(batches.describe())
    loop = _Loop(model, train, val, run, seed=seed, shuffle=shuffle, patience=patience, precise_bn=precise_bn,
                 batch_size=batch_size if source else None,
                 jit_compile=jit_compile, verbose=verbose)
    state = run.claim(overwrite) if run else None
    keras.utils.set_random_seed(seed)
    if state is None and run is not None:
        run.write_json("config.json", {"recipe": recipe, "epochs": epochs, "learning_rate": learning_rate,
                                       "batch_size": batch_size, "blocks": blocks, "seed": seed,
                                       "distribution": batches.as_dict(), "class_names": class_names,
                                       "phases": [asdict(p) for p in phases]})
    loop.resume(state)
    for index, phase in enumerate(phases):
        if index < loop.phase_index:
            continue
        setup = _Setup(phase, train_bn, lora_rank, lr_slice, layer_decay)
        with strategy.scope():
            loop.run_phase(index, phase, setup, learning_rate, optimizer, lr_schedule, warmup, cache)
    loop.restore_best()
    with strategy.scope():
        metrics = _evaluate(model, val, test)
    if run is not None:
        run.write_history(loop.history)
        run.write_json("metrics.json", metrics)
        model.save(run.file("model.keras"))
        run.write_json(STATE, {**loop.state(), "finished": True})
    return FinetuneResult(model, loop.history, metrics, str(run.path) if run else None, phases)


def _in_scope(model: keras.Model, strategy: tf.distribute.Strategy) -> keras.Model:
    """The model itself if its variables belong to ``strategy``, else a copy built in its scope."""
    if all(strategy.extended.variable_created_in_scope(v.value) for v in model.weights):  # the tf.Variable
        return model
    with strategy.scope():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    return copy


def _with_policy(model: keras.Model, policy: str, strategy: tf.distribute.Strategy) -> keras.Model:
    """A copy of ``model`` whose layers compute in ``policy``, built in the strategy's scope."""
    if policy not in ("mixed_float16", "mixed_bfloat16"):
        raise InvalidArgumentError(f"mixed_precision must be mixed_float16 or mixed_bfloat16, got {policy!r}")

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32" if layer is model.layers[-1] else policy
        return layer.__class__.from_config(config)

    with strategy.scope():
        copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
        copy.set_weights(model.get_weights())
    return copy


def _data(data, model, batch_size, augment, seed, options):
    """(train, val, test, num_classes, loaded from a source?)"""
    if isinstance(data, tuple) and len(data) == 4 and hasattr(data[3], "num_classes"):
        return (*data[:3], data[3].num_classes, list(data[3].class_names), True)  # from zoo.data.load
    if isinstance(data, tuple) and data and isinstance(data[0], tf.data.Dataset):
        train, val, test = (*data, None, None)[:3]
        return train, val, test, int(model.output.shape[-1]), None, False
    from zoo import data as loader

    # unshuffled: finetune shuffles each epoch by (seed, epoch), which a resumed run can repeat
    train, val, test, info = loader.load(data, model=model, batch_size=batch_size, augment=augment,
                                         shuffle=False, seed=seed, **options)
    return train, val, test, info.num_classes, list(info.class_names), True


@dataclass
class _Setup:
    phase: Phase
    train_bn: bool
    lora_rank: int
    lr_slice: tuple | None
    layer_decay: float | None

    def apply(self, model: keras.Model) -> dict[str, float]:
        """Set what trains in this phase; return the learning-rate multipliers."""
        train = self.phase.train
        if train == "head":
            freeze(model, train_bn=self.train_bn)
        elif train == "all":
            freeze_to(model, 0, train_bn=self.train_bn)
        elif train == "lora":
            if not any(getattr(layer, "lora_enabled", False) for layer in model._flatten_layers()):
                apply_lora(model, rank=self.lora_rank)
        else:
            freeze(model, train_bn=self.train_bn)
            unfreeze(model, blocks=int(train.split(":")[1]), train_bn=self.train_bn)
        gs = groups(model)
        trainable = [g for g in gs if any(leaf.trainable_weights for leaf in g.layers)]
        if self.lr_slice is not None or self.layer_decay is not None:
            return group_multipliers(trainable, lr_slice=self.lr_slice, layer_decay=self.layer_decay)
        if self.phase.spread and len(trainable) > 1:
            return group_multipliers(trainable, lr_slice=(0.1, 1.0))
        return {}


SHUFFLE_BUFFER = 10_000


def epochs_stream(examples: tf.data.Dataset, batch: int, first: int, last: int, seed: int | None) -> tf.data.Dataset:
    """Epochs ``first..last-1`` back to back. Epoch ``e`` is shuffled by ``(seed, e)`` alone, so a run
    resumed at any epoch sees the order an uninterrupted one saw (tf.data's reshuffling depends on how
    often a dataset object was iterated, which a new process cannot repeat). ``seed=None``: no shuffle.
    """

    def epoch(e: int) -> tf.data.Dataset:
        if seed is None:
            return examples.batch(batch)
        return examples.shuffle(SHUFFLE_BUFFER, seed=seed * 1_000_003 + e, reshuffle_each_iteration=False).batch(batch)

    stream = epoch(first)
    for e in range(first + 1, last):
        stream = stream.concatenate(epoch(e))
    return stream.prefetch(tf.data.AUTOTUNE)


class _Loop:
    """Runs phases with ``model.fit``, checkpointing (atomically) at every epoch end."""

    def __init__(self, model, train, val, run, *, seed, shuffle, patience, precise_bn, batch_size, jit_compile,
                 verbose):
        self.model, self.train, self.val, self.run = model, train, val, run
        self.batch_size = batch_size or _batch_size(train)
        self.precise_bn = precise_bn
        self.seed, self.shuffle, self.patience = seed, shuffle, patience
        self.jit_compile, self.verbose = jit_compile, verbose
        self.phase_index, self.phase_epoch = 0, 0
        self.history: list[dict] = []
        self.best, self.phase_best, self.wait = math.inf, math.inf, 0
        self.checkpoint: dict | None = None
        self.best_weights: list | None = None

    def state(self) -> dict:
        return {"phase_index": self.phase_index, "phase_epoch": self.phase_epoch, "history": self.history,
                "best": self.best, "phase_best": self.phase_best, "wait": self.wait}

    def resume(self, state: dict | None) -> None:
        if state is None or not self.run.exists(CHECKPOINT):
            return
        self.checkpoint = self.run.load_arrays(CHECKPOINT)
        saved = json.loads(str(self.checkpoint["state"][0]))
        self.phase_index, self.phase_epoch, self.history = saved["phase_index"], saved["phase_epoch"], saved["history"]
        self.best, self.phase_best, self.wait = saved["best"], saved["phase_best"], saved["wait"]
        print(f"resuming {self.run.path}: phase {self.phase_index + 1}, {self.phase_epoch} epochs done")

    def run_phase(self, index, phase, setup, learning_rate, optimizer, lr_schedule, warmup, cache) -> None:
        model, resumed = self.model, self.checkpoint
        if resumed is not None and self.phase_epoch == 0:
            model.set_weights(resumed["model"])  # a phase boundary: weights before this phase's setup
        multipliers = setup.apply(model)
        split = head_split(model) if cache and phase.train == "head" else None
        if resumed is not None and self.phase_epoch > 0:
            model.set_weights(resumed["model"])
        self.checkpoint = None
        if split is not None:
            target, (x, y, batch), val = split[1], extract(split[0], self.train), self._val(split[0])
            examples, steps = tf.data.Dataset.from_tensor_slices((x, y)), math.ceil(len(x) / batch)
        else:
            target, val = model, self.val
            examples, batch, steps = self.train.unbatch(), self.batch_size, _steps(self.train)
        seed = self.seed * 101 + index if self.shuffle else None
        train = epochs_stream(examples, batch, self.phase_epoch, phase.epochs, seed)
        total = steps * phase.epochs
        rate = schedule(lr_schedule, learning_rate * phase.lr_scale, total, int(warmup * total))
        target.compile(optimizer=make_optimizer(optimizer, rate, multipliers=multipliers),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=_logits(model)),
                       metrics=["accuracy"], jit_compile=self.jit_compile)
        if resumed is not None and self.phase_epoch > 0 and resumed.get("optimizer"):
            target.optimizer.build(target.trainable_variables)
            for variable, value in zip(target.optimizer.variables, resumed["optimizer"]):
                variable.assign(value)
        self.phase_index = index
        if self.verbose:
            print(f"phase {index + 1} '{phase.name}': trains {phase.train}, {phase.epochs} epochs, "
                  f"lr {learning_rate * phase.lr_scale:g}" + (" (cached features)" if split else ""))
        self.bn_data, self.val_data = epochs_stream(examples, batch, 0, 1, None), val
        if self.phase_epoch < phase.epochs:
            target.fit(train, validation_data=val, initial_epoch=self.phase_epoch, epochs=phase.epochs,
                       steps_per_epoch=steps, shuffle=False, callbacks=[_Epochs(self, phase, target)],
                       verbose=self.verbose)
        if getattr(target, "_zoo_nan", False):
            raise TrainingDivergedError(
                f"the loss became NaN in phase '{phase.name}', epoch {self.phase_epoch + 1}: lower the learning "
                f"rate; the last good checkpoint is kept" + (f" in {self.run.file(CHECKPOINT)}" if self.run else ""))
        self.restore_best()
        self.phase_index, self.phase_epoch, self.phase_best, self.wait = index + 1, 0, math.inf, 0
        self.save(optimizer_variables=[])

    def _val(self, features: keras.Model):
        if self.val is None:
            return None
        x, y, batch = extract(features, self.val)
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)

    def save(self, optimizer_variables) -> None:
        if self.run is None:
            return
        self.run.save_arrays(CHECKPOINT, {"model": self.model.get_weights(), "optimizer": optimizer_variables,
                                          "state": [np.array(json.dumps(self.state()))]})
        self.run.write_json(STATE, self.state())

    def restore_best(self) -> None:
        if self.run is not None and self.run.exists(BEST):
            self.model.set_weights(self.run.load_arrays(BEST)["model"])
        elif self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def end_epoch(self, phase, target, logs: dict) -> None:
        self.phase_epoch += 1
        self.history.append({"phase": phase.name, "epoch": len(self.history) + 1,
                             **{k: float(v) for k, v in logs.items()}})
        monitor = float(logs.get("val_loss", logs.get("loss")))
        if monitor < self.best:  # the best weights of the whole run are the ones kept
            self.best = monitor
            if self.run is not None:
                self.run.save_arrays(BEST, {"model": self.model.get_weights()})
            else:
                self.best_weights = self.model.get_weights()
        # patience counts within the phase: unfreezing more layers first costs some loss
        if monitor < self.phase_best:
            self.phase_best, self.wait = monitor, 0
        else:
            self.wait += 1
            if self.patience is not None and self.wait >= self.patience:
                target.stop_training = True
        self.save([v.numpy() for v in target.optimizer.variables])


def _batch_size(dataset: tf.data.Dataset) -> int:
    images, _ = next(iter(dataset))
    return int(images.shape[0])


def _steps(dataset: tf.data.Dataset) -> int:
    steps = int(dataset.cardinality())
    return steps if steps > 0 else sum(1 for _ in dataset)


class _Epochs(keras.callbacks.Callback):
    def __init__(self, loop: _Loop, phase: Phase, target: keras.Model):
        super().__init__()
        self.loop, self.phase, self.target = loop, phase, target

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.target._zoo_nan = True
            self.target.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.target, "_zoo_nan", False):
            return
        logs = dict(logs or {})
        loop = self.loop
        if loop.precise_bn and recalibrate_batchnorm(self.target, loop.bn_data) and loop.val_data is not None:
            # the epoch's validation ran on stale moving statistics: validate again
            scores = self.target.evaluate(loop.val_data, verbose=0, return_dict=True)
            logs.update({f"val_{k}": v for k, v in scores.items()})
        loop.end_epoch(self.phase, self.target, logs)


def _logits(model: keras.Model) -> bool:
    return getattr(model.layers[-1], "activation", None) is not keras.activations.softmax


def _evaluate(model: keras.Model, val, test) -> dict:
    """Loss and accuracy on the validation and test splits, without recompiling the model (a
    compile would replace the optimizer state the saved model carries)."""
    metrics = {}
    for name, dataset in (("val", val), ("test", test)):
        if dataset is None:
            continue
        labels = np.concatenate([np.asarray(y) for _, y in dataset])
        outputs = model.predict(dataset, verbose=0)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=_logits(model))(labels, outputs)
        metrics[f"{name}_loss"] = float(loss)
        metrics[f"{name}_accuracy"] = float(np.mean(np.argmax(outputs, axis=-1) == labels))
    return metrics
