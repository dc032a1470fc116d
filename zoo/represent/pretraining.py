"""Self-supervised pretraining: ``pretrain`` (SimCLR, Chen et al. 2020; or supervised, as the bundled checkpoint).

SimCLR makes two random views of every image (``simclr_augmentation``: crop-and-resize, shift, rotation,
brightness and contrast), passes both through the encoder (a zoo model without a head: its pooled
embedding) and a projection head (Dense-BatchNorm-ReLU-Dense), and pulls each view's projection towards its
pair's and away from the other 2N-2 views' in the batch (``nt_xent``). Training is one ``model.fit`` of a
``SimCLR`` model; the encoder is trained in place, so its backbone saves with ``zoo.save_backbone_weights``
and loads with ``zoo.create_model(arch, pretrained=FILE)``.

With a ``run_dir`` every epoch is checkpointed as fine-tuning does (``zoo.runs.RunDir``: locked, tied to a
fingerprint, a checksummed ``checkpoint.npz`` with the previous one kept); calling ``pretrain`` again with
the same arguments resumes and ends with the weights an uninterrupted run ends with.

Example:
    >>> encoder = zoo.create_model("resnet_tiny", pretrained=False, input_shape=(16, 16))
    >>> result = zoo.pretrain(encoder, "digits", epochs=20, data_options={"classes": [0, 1, 2, 3, 4]})
    >>> zoo.save_backbone_weights(encoder, "ssl.weights.h5")
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

from zoo import memory
from zoo.backbone import entry_of
from zoo.data import load
from zoo.errors import InvalidArgumentError
from zoo.runs import CHECKPOINT, STATE, RunDir
from zoo.training.bn import recalibrate_batchnorm
from zoo.training.callbacks import EpochEnd
from zoo.training.loop import TrainingDivergedError, epochs_stream, finetune
from zoo.training.optim import schedule

log = logging.getLogger(__name__)

METHODS = ("simclr", "supervised")


def nt_xent(z1, z2, temperature: float = 0.5):
    """NT-Xent, SimCLR's loss, of a batch of N pairs of projections ``z1[i]``, ``z2[i]`` (each (N, D)).

    Over the 2N views, each view's positive is its pair and the other 2N-2 views are its negatives: the mean
    over the 2N views of the cross-entropy of the softmax of cosine similarities / ``temperature``.

    Example:
        >>> float(nt_xent(np.ones((4, 8)), np.ones((4, 8)), 0.5))  # all alike: log(2N - 1)
        1.9459...
    """
    z = ops.normalize(ops.cast(ops.concatenate([z1, z2], axis=0), "float32"), axis=-1)
    logits = ops.matmul(z, ops.transpose(z)) / temperature
    views = ops.shape(z)[0]
    logits = logits - 1e9 * ops.eye(views)  # a view is not its own negative
    half = views // 2
    positives = ops.concatenate([ops.arange(half) + half, ops.arange(half)])
    return ops.mean(keras.losses.sparse_categorical_crossentropy(positives, logits, from_logits=True))


def simclr_augmentation(seed: int = 0) -> list[keras.layers.Layer]:
    """SimCLR's random views for small images: crop-and-resize (zoom in, each axis on its own), shift,
    rotation, brightness and contrast, on 0-255 images. No flips: a mirrored digit is another symbol.

    Example:
        >>> pretrain(model, "digits", augmentation=simclr_augmentation(seed=1) + [keras.layers.RandomFlip()])
    """
    fill = {"fill_mode": "constant"}
    return [
        keras.layers.RandomZoom((-0.3, 0.1), (-0.3, 0.1), seed=seed, **fill),
        keras.layers.RandomTranslation(0.15, 0.15, seed=seed + 1, **fill),
        keras.layers.RandomRotation(0.05, seed=seed + 2, **fill),
        keras.layers.RandomBrightness(0.3, value_range=(0, 255), seed=seed + 3),
        keras.layers.RandomContrast(0.5, value_range=(0, 255), seed=seed + 4),
    ]


class SimCLR(keras.Model):
    """An encoder, a projection head and an augmentation, trained with ``fit`` on batches of images alone.

    ``call`` in training makes two views of each image and returns the projections of all 2N views (first
    views, then second views); ``compute_loss`` is ``nt_xent`` of the two halves. Outside training it
    projects the images as they are.

    Example:
        >>> simclr = SimCLR(encoder, augmentation=simclr_augmentation(seed=0))
        >>> simclr.compile(optimizer="adam")
        >>> simclr.fit(images_dataset, epochs=10)
    """

    def __init__(self, encoder: keras.Model, *, augmentation: list[keras.layers.Layer], projection_dim: int = 64,
                 hidden_dim: int | None = None, temperature: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.augmentation, self.temperature = encoder, list(augmentation), temperature
        width = int(encoder.output.shape[-1])
        self.projector = keras.Sequential([
            keras.Input((width,)),
            keras.layers.Dense(hidden_dim or width, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dense(projection_dim),
        ], name="projector")
        self.build(encoder.input_shape)

    def build(self, input_shape):
        for layer in self.augmentation:  # built now, or fit calls the model once more just to build them
            layer.build(input_shape)
        self.built = True

    def view(self, images):
        """One random view of each image."""
        for layer in self.augmentation:
            images = layer(images, training=True)
        return images

    def call(self, images, training=False):
        if training:
            images = ops.concatenate([self.view(images), self.view(images)], axis=0)
        return self.projector(self.encoder(images, training=training), training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        z1, z2 = ops.split(y_pred, 2, axis=0)
        return nt_xent(z1, z2, self.temperature) + sum(self.losses)  # losses: the layers' regularisation


@dataclass
class PretrainResult:
    """What ``pretrain`` produced: the encoder (trained in place), per-epoch history (dicts with "epoch" and
    "loss"), the run folder, and the run's time in seconds over every call that resumed it."""

    model: keras.Model
    history: list[dict] = field(default_factory=list)
    run_dir: str | None = None
    seconds: float = 0.0
    resumed: bool = False


def pretrain(model: keras.Model, data, *, method: str = "simclr", epochs: int = 30, batch_size: int = 64,
             learning_rate: float = 1e-3, temperature: float = 0.1, projection_dim: int = 64,
             augmentation: list[keras.layers.Layer] | None = None, run_dir: str | os.PathLike | None = None,
             overwrite: bool = False, seed: int = 0, data_options: dict | None = None, verbose: int | str = "auto",
             callbacks: list[keras.callbacks.Callback] | None = None) -> PretrainResult:
    """Pretrain ``model``'s features on ``data`` without labels (SimCLR) or with them (supervised).

    Args:
        model: the encoder: a zoo model without a head (``create_model(arch, num_classes=None)``, its pooled
            embedding), trained in place; a model with a ``head`` layer is trained up to that layer's input.
        data: anything ``zoo.data.load`` takes; SimCLR ignores the labels and, unless ``data_options`` says
            otherwise, trains on every image of the source's training part (no validation or test split is
            held out). ``data_options``: more arguments for ``zoo.data.load``, e.g. ``{"classes": [0, 1]}``.
        method: "simclr" (two views, a projection head, NT-Xent), or "supervised": a linear head trained on
            the labels with ``zoo.finetune(recipe="full")``, then dropped.
        temperature, projection_dim, augmentation: SimCLR's; ``augmentation`` defaults to
            ``simclr_augmentation(seed)``. The defaults are the best of a few tried on digits (16x16, 900
            images): temperature 0.1 (0.05-0.5 tried), batch 64 (32-128), learning rate 1e-3 (5e-4-5e-3).
        learning_rate: Adam's, warmed up over the first epoch then decayed to 0 along a cosine.
        run_dir, overwrite: checkpoint every epoch there and resume, as ``zoo.finetune`` does; a finished
            run is refused unless ``overwrite``.
        verbose: "auto": a progress bar on a terminal, one line per epoch otherwise; 0 is silent.
        callbacks: more Keras callbacks for ``fit`` (SimCLR), called after the checkpoint is written.

    Returns a ``PretrainResult`` whose ``model`` is the encoder. The trainable BatchNorm statistics of the
    encoder are recomputed at the end on the unaugmented images (what the features are used on).

    Example:
        >>> encoder = zoo.create_model("resnet_tiny", pretrained=False, input_shape=(16, 16))
        >>> pretrain(encoder, "digits", epochs=20, run_dir="runs/ssl").history[-1]["loss"]
    """
    _check(model, method, epochs, batch_size, learning_rate, temperature, projection_dim)
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    encoder = _encoder(model)
    with memory.released():
        if method == "supervised":
            return _supervised(encoder, data, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                               run_dir=run_dir, overwrite=overwrite, seed=seed, data_options=data_options or {},
                               verbose=verbose)
        run = _SimCLRRun(encoder, data, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         temperature=temperature, projection_dim=projection_dim,
                         augmentation=augmentation if augmentation is not None else simclr_augmentation(seed),
                         run_dir=run_dir, seed=seed, data_options=data_options or {}, verbose=verbose,
                         callbacks=callbacks or [])
        return run.run(overwrite)


def _check(model, method, epochs, batch_size, learning_rate, temperature, projection_dim) -> None:
    def integer(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    def number(value) -> bool:
        return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)

    if method not in METHODS:
        raise InvalidArgumentError(f"unknown pretraining method {method!r}: use one of {', '.join(METHODS)}")
    if not isinstance(model, keras.Model):
        raise InvalidArgumentError(f"model must be a keras.Model (from zoo.create_model, say), got "
                                   f"{type(model).__name__}")
    for name, value, least in (("epochs", epochs, 1), ("batch_size", batch_size, 2),
                               ("projection_dim", projection_dim, 1)):
        if not integer(value) or value < least:
            raise InvalidArgumentError(f"{name} must be an integer of at least {least}, got {value!r}")
    for name, value in (("learning_rate", learning_rate), ("temperature", temperature)):
        if not number(value) or value <= 0:
            raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}")


def _encoder(model: keras.Model) -> keras.Model:
    """The model up to its pooled embedding: itself, or, for a model with a classifier head, the head's input."""
    from zoo.factory import HEAD

    if HEAD in [layer.name for layer in model.layers]:
        model = keras.Model(model.inputs, model.get_layer(HEAD).input, name=f"{model.name}_encoder")
    if len(model.output.shape) != 2:
        raise InvalidArgumentError(f"{model.name} outputs {tuple(model.output.shape)}, not one embedding per image: "
                                   f"create it with num_classes=None and a pooling (avg, max or token)")
    return model


def _data_fingerprint(info, options: dict) -> dict:
    source = info.source
    if isinstance(source, str) and os.path.isdir(source):
        source = os.path.abspath(source)  # a folder, however it was named
    return {"source": source, "num_examples": dict(info.num_examples), "image_size": list(info.image_size),
            "channels": info.channels, "options": {k: v for k, v in options.items() if k != "data_dir"}}


def _model_fingerprint(model: keras.Model) -> dict:
    entry = entry_of(model)
    shapes = json.dumps([list(w.shape) for w in model.weights])
    return {"name": entry.name if entry else model.name, "weights": entry.weights if entry else None,
            "input_shape": list(model.input_shape[1:]), "parameters": int(model.count_params()),
            "weight_shapes": hashlib.sha256(shapes.encode()).hexdigest()[:16]}


@dataclass
class _State:
    """Where a SimCLR run is: saved with every checkpoint, read back on resume."""

    epoch: int = 0  # epochs done
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


class _SimCLRRun:
    def __init__(self, encoder, data, *, epochs, batch_size, learning_rate, temperature, projection_dim,
                 augmentation, run_dir, seed, data_options, verbose, callbacks):
        self.encoder, self.epochs, self.batch_size, self.seed = encoder, epochs, batch_size, seed
        self.verbose, self.callbacks = verbose, callbacks
        self.options = {"method": "simclr", "epochs": epochs, "batch_size": batch_size,
                        "learning_rate": learning_rate, "temperature": temperature,
                        "projection_dim": projection_dim, "seed": seed,
                        "augmentation": [[type(layer).__name__, {k: v for k, v in layer.get_config().items()
                                                                 if k != "name"}] for layer in augmentation]}
        # unlabelled images: everything is for training unless asked otherwise; unshuffled, since the epochs
        # are shuffled by (seed, epoch) below, which a resumed run can repeat
        options = {"val_fraction": 0.0, "test_fraction": 0.0, **data_options}
        self.train, _, _, info = load(data, model=encoder, batch_size=batch_size, shuffle=False, seed=seed,
                                      **options)
        self.examples = info.num_examples["train"]
        if self.examples < 2:
            raise InvalidArgumentError(f"SimCLR needs at least 2 training images (each view's negatives are the "
                                       f"others), got {self.examples}: give more data")
        self.steps = math.ceil(self.examples / batch_size)
        self.data_fingerprint = _data_fingerprint(info, data_options)
        self.run_dir = RunDir(run_dir) if run_dir is not None else None
        keras.utils.set_random_seed(seed)
        self.simclr = SimCLR(encoder, augmentation=augmentation, projection_dim=projection_dim,
                             temperature=temperature, name="simclr")
        self.learning_rate = schedule("cosine", learning_rate, self.steps * epochs, warmup_steps=self.steps)
        self.state, self.started, self.seconds_before, self.kept = _State(), time.monotonic(), 0.0, False

    def fingerprint(self) -> dict:
        return {"data": self.data_fingerprint, "options": self.options, "model": _model_fingerprint(self.encoder)}

    def run(self, overwrite: bool) -> PretrainResult:
        if self.run_dir is None:
            return self._run(None)
        with self.run_dir.lock():
            return self._run(self.run_dir.open(self.fingerprint(), overwrite))

    def _run(self, found) -> PretrainResult:
        self.started = time.monotonic()
        simclr = self.simclr
        simclr.compile(optimizer=keras.optimizers.Adam(self.learning_rate), jit_compile=False)
        simclr.optimizer.build(simclr.trainable_variables)  # now, or fit traces its step twice to make them
        if found is not None:
            self._resume(*found)
        if self.verbose:
            log.info("SimCLR: %d images, %d steps of %d per epoch, epochs %d to %d", self.examples, self.steps,
                     self.batch_size, self.state.epoch + 1, self.epochs)
        end = EpochEnd(self._end_epoch)
        if self.state.epoch < self.epochs:
            images = self.train.unbatch().map(lambda image, label: image)
            stream = epochs_stream(images, self.batch_size, self.steps, self.state.epoch, self.epochs, self.seed)
            simclr.fit(stream, initial_epoch=self.state.epoch, epochs=self.epochs, steps_per_epoch=self.steps,
                       shuffle=False, callbacks=[keras.callbacks.TerminateOnNaN(), end, *self.callbacks],
                       verbose=self.verbose)
        if end.diverged:
            raise TrainingDivergedError(f"the SimCLR loss became NaN in epoch {self.state.epoch + 1}: lower the "
                                        f"learning rate (now {self.options['learning_rate']})")
        # the moving statistics of the images the features will be computed on, not of the augmented views
        recalibrate_batchnorm(self.encoder, self.train)
        self.state.seconds = self.seconds_before + time.monotonic() - self.started
        run = self.run_dir
        if run is not None:
            run.write_history(self.state.history)
            run.save_model(self.encoder, "model.keras")
            run.write_json(STATE, {**dataclasses.asdict(self.state), "finished": True})
        if self.verbose:
            log.info("SimCLR done: loss %.4f after %d epochs, %.1f s", self.state.history[-1]["loss"], self.epochs,
                     self.state.seconds)
        return PretrainResult(self.encoder, self.state.history, str(run.path) if run else None,
                              round(self.state.seconds, 3), found is not None)

    def _resume(self, arrays: dict, name: str, problems: list[str]) -> None:
        simclr = self.simclr
        for variable, value in zip(simclr.variables, arrays["model"]):  # weights and the augmentation's seeds
            variable.assign(value)
        for variable, value in zip(simclr.optimizer.variables, arrays["optimizer"]):
            variable.assign(value)
        self.state = _State(**json.loads(str(arrays["state"][0])))
        self.seconds_before, self.kept = self.state.seconds, name == CHECKPOINT
        if self.verbose:
            for problem in problems:
                log.warning("%s: resuming from %s", problem, name)
            log.info("resuming %s: %d of %d epochs done", self.run_dir.path, self.state.epoch, self.epochs)

    def _end_epoch(self, logs: dict) -> None:
        state = self.state
        state.epoch += 1
        state.history.append({"epoch": state.epoch, **{k: float(v) for k, v in logs.items()}})
        if self.run_dir is None:
            return
        state.seconds = self.seconds_before + time.monotonic() - self.started
        simclr = self.simclr
        self.run_dir.save_arrays(CHECKPOINT, {"model": [v.numpy() for v in simclr.variables],
                                              "optimizer": [v.numpy() for v in simclr.optimizer.variables],
                                              "state": [np.array(json.dumps(dataclasses.asdict(state)))]},
                                 keep_previous=self.kept)
        self.kept = True
        self.run_dir.write_json(STATE, dataclasses.asdict(state))


def _supervised(encoder, data, *, epochs, batch_size, learning_rate, run_dir, overwrite, seed, data_options,
                verbose) -> PretrainResult:
    """A linear head on the labels, the whole network trained (``zoo.finetune``, recipe "full"); the encoder."""
    loaded = load(data, model=encoder, batch_size=batch_size, shuffle=False, seed=seed, **data_options)
    keras.utils.set_random_seed(seed)
    head = keras.layers.Dense(loaded[3].num_classes, name="head")(encoder.output)
    classifier = keras.Model(encoder.inputs, head, name=f"{encoder.name}_supervised")
    result = finetune(classifier, loaded, recipe="full", epochs=epochs, batch_size=batch_size,
                      learning_rate=learning_rate, seed=seed, patience=None, run_dir=run_dir, overwrite=overwrite,
                      verbose=verbose)
    return PretrainResult(encoder, result.history, result.run_dir, result.seconds, result.resumed)
