"""Precise BatchNorm: recompute moving statistics from the training data after a short schedule.

With momentum 0.99, a few dozen steps leave BatchNorm's moving mean and variance close to their
initial values, and a network that trained well evaluates at chance. Averaging the batch statistics
over the training data instead (as pycls' "precise BN" does) fixes that; frozen BatchNorm layers,
which run in inference mode, are left alone.

Example:
    >>> recalibrate_batchnorm(model, train)
"""
from __future__ import annotations

import keras

from zoo import compat


def recalibrate_batchnorm(model: keras.Model, dataset, max_batches: int = 200) -> int:
    """Set each trainable BatchNorm's moving statistics to its batch statistics averaged over
    ``dataset`` (batched ``(images, labels)``); returns how many layers were recalibrated."""
    layers = [layer for layer in compat.flatten_layers(model, include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers:
        return 0
    momentum = [layer.momentum for layer in layers]
    try:
        for i, (images, _) in enumerate(dataset.take(max_batches), start=1):
            for layer in layers:  # moving = moving * (i-1)/i + batch / i: the running mean over batches
                layer.momentum = (i - 1) / i
            model(images, training=True)
    finally:
        for layer, m in zip(layers, momentum):
            layer.momentum = m
    return len(layers)
