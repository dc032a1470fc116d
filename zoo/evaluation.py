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


def loss_for(model: keras.Model) -> keras.losses.Loss:
    """The classification loss for ``model``'s output: sparse categorical cross-entropy."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits(model))


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
