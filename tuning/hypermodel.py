"""A keras-tuner HyperModel over zoo models: ``build`` is ``zoo.create_model``, ``fit`` is ``zoo.finetune``.

Trials that train only the head over a frozen backbone on unaugmented data (``linear_probe``, and the
head phase of ``two_phase`` and ``gradual``) share that backbone's features: they are computed once
per (backbone, input size, pretrained) and kept in memory for the whole search. Every trial builds
its backbone from the same seed, so a random backbone is the same one in every trial too. A trial of
Hyperband's later rounds goes on from the weights its earlier round left (``resume_from``), training
only the epochs its budget adds.

Example:
    >>> data = TrialData("digits", seed=0)
    >>> hypermodel = ZooHyperModel(Space({"backbone": "resnet_tiny", "dropout": (0.0, 0.5)}), data, epochs=2)
    >>> hp = keras_tuner.HyperParameters()
    >>> metrics = hypermodel.fit(hp, hypermodel.build(hp))
    >>> sorted(metrics)
    ['accuracy', 'loss', 'val_accuracy', 'val_loss']
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

import zoo
from tuning.space import Space
from zoo.config import MIN_EPOCHS
from zoo.data import DataInfo, load
from zoo.files import atomic_save
from zoo.registry import resolve
from zoo.training.features import extract

Splits = tuple[tf.data.Dataset, tf.data.Dataset]  # (train, validation)


class TrialData:
    """The search's data: loaded once per (image size, augmentation), re-batched for each trial."""

    def __init__(self, source: Any, seed: int = 0):
        self.source, self.seed = source, seed
        self._loaded: dict[tuple, tuple] = {}

    def load(self, image_size: tuple[int, int] | None, augment: str = "none") -> tuple[tf.data.Dataset,
                                                                                        tf.data.Dataset, DataInfo]:
        """(train, validation, info) at this size (None: texts), unshuffled: zoo.finetune shuffles by (seed, epoch)."""
        key = (tuple(image_size) if image_size else None, augment)
        if key not in self._loaded:
            sized = {"image_size": key[0]} if key[0] else {}
            train, val, _, info = load(self.source, **sized, augment=augment, shuffle=False, seed=self.seed)
            self._loaded[key] = (train, val, info)
        return self._loaded[key]

    def splits(self, image_size: tuple[int, int] | None, augment: str, batch_size: int) -> Splits:
        """(train in batches of ``batch_size``, validation)."""
        train, val, info = self.load(image_size, augment)
        steps = math.ceil(info.num_examples["train"] / batch_size)
        # a known length spares zoo.finetune a pass over the data to count the steps
        train = train.unbatch().batch(batch_size).apply(tf.data.experimental.assert_cardinality(steps))
        return train, val


class FeatureCache:
    """Frozen-backbone features shared by trials, in memory: one entry per (backbone key, split)."""

    def __init__(self):
        self.arrays: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.extractions = 0  # how many times a backbone ran over a split

    def extractor(self, key: tuple, splits: dict[str, tf.data.Dataset]) -> Callable:
        """An ``extractor`` for ``zoo.finetune`` (features and labels, as ``zoo.training.features.extract``)
        that computes each split's features once."""

        def shared(features: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
            split = next(name for name, ds in splits.items() if ds is dataset)
            if (key, split) not in self.arrays:
                self.arrays[key, split] = extract(features, dataset)
                self.extractions += 1
            return self.arrays[key, split]

        return shared


class ZooHyperModel(keras_tuner.HyperModel):
    """Builds a trial's model with ``zoo.create_model`` and trains it with ``zoo.finetune``.

    Args:
        space: the search space.
        data: the search's data.
        epochs: epochs per trial (Hyperband sets its own per trial, at least what its recipe needs).
        image_size: (height, width) for every backbone; None: each backbone's own (see ``input_size``).
        share_features: share frozen-backbone features across trials; False trains through the backbone.
        patience: zoo.finetune's early stopping on validation loss; None trains every epoch.
        verbose: zoo.finetune's.
    """

    def __init__(self, space: Space, data: TrialData, *, epochs: int = 6, image_size: tuple[int, int] | None = None,
                 seed: int = 0, share_features: bool = True, patience: int | None = 3, verbose: int = 0):
        super().__init__(name="zoo")
        self.space, self.data, self.epochs, self.seed = space, data, epochs, seed
        self.image_size = tuple(image_size) if image_size else None
        self.features = FeatureCache() if share_features else None
        self.patience, self.verbose = patience, verbose

    def input_size(self, model: str) -> tuple[int, int] | None:
        """The (height, width) a backbone is trained at: ``image_size``, else the size its weights were
        made at, else its architecture's default; None for a text model (its tokenizer sets the length)."""
        spec, weights = resolve(model)
        return None if spec.modality == "text" else self.image_size or spec.image_size(weights)

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        self.space.declare(hp)

    def config(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The trial's fine-tuning config, under the keys ``keras-zoo finetune --config`` takes."""
        config = self.space.config(hp)
        budget = hp.values.get("tuner/epochs")  # Hyperband's
        epochs = config.get("epochs", self.epochs)  # the space's, else the search's
        config["epochs"] = epochs if budget is None else max(budget, MIN_EPOCHS.get(config["recipe"], 1))
        size = self.input_size(config["model"])
        config["image_size"] = list(size) if size else None
        config["seed"], config["patience"] = self.seed, self.patience
        return config

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        config = self.config(hp)
        info = self.data.load(config["image_size"])[2]
        keras.utils.set_random_seed(self.seed)  # the same backbone weights in every trial: features can be shared
        shape = (*config["image_size"], info.channels) if config["image_size"] else None
        return zoo.create_model(config["model"], num_classes=info.num_classes, pretrained=config["pretrained"],
                                input_shape=shape, dropout=config["dropout"], head_hidden=config.get("head_hidden"))

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args,
            resume_from: str | os.PathLike | None = None, save_to: str | os.PathLike | None = None,
            **kwargs) -> dict[str, float]:
        """Fine-tune ``model`` as the trial says; returns its loss, accuracy, val_loss, val_accuracy and the
        epochs it trained. ``resume_from``: the weights of this trial's earlier Hyperband round, to go on
        from at that round's epoch budget (``tuner/initial_epoch``); ``save_to``: where to write the trained
        weights (atomically), for a later round. (keras-tuner's fit arguments, such as callbacks, are not used.)"""
        config = self.config(hp)
        size = tuple(config["image_size"]) if config["image_size"] else None
        initial_epoch = 0
        if resume_from is not None:
            model.load_weights(resume_from)  # a LoRA trial's were saved merged (Keras's Dense/EinsumDense do)
            initial_epoch = min(hp.values["tuner/initial_epoch"], config["epochs"] - 1)
        train, val = self.data.splits(size, config["augment"], config["batch_size"])
        share = self.features is not None and config["augment"] == "none"
        extractor = None
        if share:
            key = (config["model"], size, config["pretrained"])
            extractor = self.features.extractor(key, {"train": train, "validation": val})
        options = {k: config[k] for k in ("recipe", "epochs", "learning_rate", "blocks") if k in config}
        result = zoo.finetune(model, (train, val), **options, cache_features=share, patience=self.patience,
                              seed=self.seed, verbose=self.verbose, extractor=extractor, initial_epoch=initial_epoch)
        if save_to is not None:
            atomic_save(save_to, result.model.save_weights)
        last = result.history[-1]
        return {"loss": last["loss"], "accuracy": last["accuracy"], **result.metrics,
                "trained_epochs": len(result.history)}
