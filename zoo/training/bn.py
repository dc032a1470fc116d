"""Precise BatchNorm: recompute moving statistics from the training data after a short schedule.

With momentum 0.99, a few dozen steps leave BatchNorm's moving mean and variance close to their
initial values, and a network that trained well evaluates at chance. Averaging the batch statistics
over the training data instead (as pycls' "precise BN" does) fixes that; frozen BatchNorm layers,
which run in inference mode, are left alone.

Example:
    >>> recalibrate_batchnorm(model, train)
"""
from __future__ import annotations

import weakref

import keras
import tensorflow as tf

from zoo import compat

# Per model: the BatchNorm layers recalibrated, the variable that stands in for their momentum while they are,
# and the traced forward pass (traced once, not once a call: a new set of trainable layers traces it again).
_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def recalibrate_batchnorm(model: keras.Model, dataset, max_batches: int = 200) -> int:
    """Set each trainable BatchNorm's moving statistics to its batch statistics averaged over
    ``dataset`` (batched ``(images, labels)``); returns how many layers were recalibrated."""
    layers = [layer for layer in compat.flatten_layers(model, include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    if not layers:
        return 0
    traced = _TRACED.get(model)
    if traced is None or traced[0] != layers:
        # BatchNorm reads its momentum when called: a variable there is read by the graph at each run
        weight = tf.Variable(0.0, trainable=False)
        net = weakref.ref(model)  # the cache must not keep the model alive
        traced = layers, weight, tf.function(lambda images: net()(images, training=True), reduce_retracing=True)
        _TRACED[model] = traced
    _, weight, forward = traced
    momentum = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = weight
        for i, (images, _) in enumerate(dataset.take(max_batches), start=1):
            weight.assign((i - 1) / i)  # moving = moving * (i-1)/i + batch / i: the running mean over batches
            forward(images)
    finally:
        for layer, m in zip(layers, momentum):
            layer.momentum = m
    return len(layers)
