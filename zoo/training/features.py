"""Cached features: run a frozen backbone once and train the head on what it computes.

With the backbone frozen and no augmentation, training through it recomputes the same features
every epoch. The head layers are shared between the full model and the head-only model, so the
trained head is already back on the full model when training ends.

Example:
    >>> split = head_split(model)          # (features model, head model) or None
    >>> x, y, batch_size = extract(split[0], train)
"""
from __future__ import annotations

import keras
import numpy as np

from applications.layers import TokenPooling
from zoo.backbone import example_input

_POOLING = (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
            keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten, TokenPooling)


def head_split(model: keras.Model) -> tuple[keras.Model, keras.Model] | None:
    """Split a model whose trainable layers form a chain on top of a frozen body.

    Returns ``(features, head)``: ``features`` maps inputs to what the head consumes, ``head`` reuses
    the model's own top layers. None when the model has no such split (e.g. nothing is frozen).
    """
    layers = model.layers
    top = len(layers)
    while top > 1 and (layers[top - 1].trainable_weights or not layers[top - 1].weights):
        top -= 1
    while top < len(layers) and isinstance(layers[top], _POOLING):
        top += 1  # cache the pooled vectors, not the feature maps
    chain = layers[top:]
    if not chain or any(w.trainable for layer in layers[:top] for w in layer.weights):
        return None
    # the chain's input in this model's graph: Keras 3's public ``.input`` is that of the layer's first
    # call, i.e. its first inbound node (a layer also called by an earlier head model has more calls;
    # the probe below checks the split)
    entry = chain[0].input
    features = keras.Model(model.input, entry[0] if isinstance(entry, (list, tuple)) else entry,
                           name=f"{model.name}_features")
    x = inputs = keras.Input(features.output.shape[1:], name="features")
    for layer in chain:
        x = layer(x)
    head = keras.Model(inputs, x, name=f"{model.name}_head")
    if x.shape != model.output.shape:
        return None
    # the split must compute what the model does (one pass through the body gives both)
    entry_and_output = keras.Model(model.input, [features.output, model.output])
    computed, expected = entry_and_output(example_input(model))
    if not np.allclose(head(computed), expected, atol=1e-5):
        return None
    return features, head


def extract(features: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray, int]:
    """Features and labels for every batch of a ``(images, labels)`` dataset, in its order,
    and the dataset's batch size (so the head trains on batches of the same size)."""
    xs, ys = [], []
    for images, labels in dataset:
        images = np.asarray(images)
        n = len(images)
        if xs and n < len(xs[0]):  # a short last batch, padded: the backbone's graph is traced once, not twice
            images = np.concatenate([images, np.repeat(images[-1:], len(xs[0]) - n, axis=0)])
        xs.append(np.asarray(features.predict_on_batch(images))[:n])  # a compiled graph, not eager calls
        ys.append(np.asarray(labels))
    return np.concatenate(xs), np.concatenate(ys), len(xs[0])
