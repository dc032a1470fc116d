"""Evaluation, written once: the loss a classifier trains with, and its loss and accuracy on a split.

``from_logits`` is decided here and nowhere else (a softmax output layer means probabilities);
``evaluate`` predicts without compiling, so a trained model keeps its optimizer state. Fine-tuning,
``lr_find``, the command line and the run reports all use these.

Example:
    >>> scores = evaluate(model, test)
    >>> scores.accuracy, scores.loss
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


def from_logits(model: keras.Model) -> bool:
    """Whether ``model`` outputs logits (True) or softmax probabilities (False), read from its last layer."""
    last = model.layers[-1]
    while isinstance(last, keras.Model):  # a model nested as the last layer: its own last layer
        last = last.layers[-1]
    return getattr(last, "activation", None) is not keras.activations.softmax


def loss_for(model: keras.Model, *, label_smoothing: float = 0.0, soft_labels: bool = False) -> keras.losses.Loss:
    """The classification loss for ``model``'s output: sparse categorical cross-entropy; with
    ``label_smoothing`` or ``soft_labels`` (mixed training batches), ``CrossEntropy``."""
    if label_smoothing or soft_labels:
        return CrossEntropy(from_logits=from_logits(model), label_smoothing=label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits(model))


def metrics_for(soft_labels: bool = False) -> list:
    """The metrics a fine-tune compiles with: accuracy (of the dominant class, for soft labels)."""
    return [Accuracy()] if soft_labels else ["accuracy"]


def _targets(y_true, y_pred):
    """Integer labels as one-hot rows; soft labels (a row of class weights per example) as they are."""
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == y_pred.shape[-1] and y_pred.shape[-1] != 1:
        return keras.ops.cast(y_true, y_pred.dtype)
    labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
    return keras.ops.one_hot(labels, y_pred.shape[-1], dtype=y_pred.dtype)


@keras.saving.register_keras_serializable(package="keras_zoo")
class CrossEntropy(keras.losses.Loss):
    """Cross-entropy on integer labels or soft labels, with label smoothing (Szegedy et al. 2016): the target
    is ``(1 - s) * one_hot + s / classes``. Keras's sparse cross-entropy takes neither soft labels nor
    smoothing, and its categorical one no integers; a fine-tune with mixup trains on soft labels and
    validates on integers.

    Example:
        >>> CrossEntropy(label_smoothing=0.1)([2], [[0.0, 1.0, 3.0]])
    """

    def __init__(self, from_logits: bool = True, label_smoothing: float = 0.0, name: str = "cross_entropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits, self.label_smoothing = from_logits, label_smoothing

    def call(self, y_true, y_pred):
        return keras.losses.categorical_crossentropy(_targets(y_true, y_pred), y_pred, from_logits=self.from_logits,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="keras_zoo")
class Accuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy against integer labels, or against the dominant class of soft labels."""

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(_accuracy, name=name, dtype=dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype}


def _accuracy(y_true, y_pred):
    return keras.metrics.categorical_accuracy(_targets(y_true, y_pred), y_pred)


@dataclass
class Evaluation:
    """Loss and accuracy on a split, with the labels and predicted classes they came from."""

    loss: float
    accuracy: float
    labels: np.ndarray
    predicted: np.ndarray

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}loss": self.loss, f"{prefix}accuracy": self.accuracy}


def evaluate(model: keras.Model, dataset) -> Evaluation:
    """Evaluate ``model`` on a batched dataset of ``(inputs, labels)``, without recompiling it.

    Example:
        >>> evaluate(model, test).accuracy
        0.93
    """
    labels = np.concatenate([np.asarray(y) for _, y in dataset])
    outputs = model.predict(dataset, verbose=0)
    loss = float(loss_for(model)(labels, outputs))
    predicted = np.argmax(outputs, axis=-1)
    return Evaluation(loss, float(np.mean(predicted == labels)), labels, predicted)
