"""Cached features: run a frozen backbone once and train the head on what it computes.

With the backbone frozen and no augmentation, training through it recomputes the same features
every epoch. The head layers are shared between the full model and the head-only model, so the
trained head is already back on the full model when training ends.

Example:
    >>> split = head_split(model)          # (features model, head model) or None
    >>> x, y = extract(split[0], train)
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

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


# Examples per call of the body when extracting: inference keeps no activations for a backward pass, and a
# small network runs faster per image on larger batches on a CPU (MobileNetV3Small at 96x96 on 2 cores:
# 1.08 ms an image at 32, 0.59 at 256; ResNet50 at 160: the same). More than 32 (the default batch) only while
# one call holds at most 2**22 input values (16 MB of float32), so that large inputs cannot exhaust memory.
MIN_ROWS, MAX_ROWS, MAX_VALUES = 32, 256, 2**22


def extraction_rows(spec: tf.TensorSpec) -> int:
    """How many examples the body runs on per call for (batched) inputs of ``spec``: 32 for texts."""
    values = spec.shape[1:].num_elements()
    if not (spec.dtype.is_floating or spec.dtype.is_integer) or not values:
        return MIN_ROWS
    return max(MIN_ROWS, min(MAX_ROWS, MAX_VALUES // values))


def extract(features: keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels for every example of a batched ``(inputs, labels)`` dataset, in its order.

    Every call of the body takes the same number of examples (the last chunk padded), so its graph is traced
    once for all the splits it runs on, whatever their sizes.

    Example:
        >>> x, y = extract(features, train)   # x: (examples, *features.output.shape[1:])
    """
    rows = extraction_rows(dataset.element_spec[0])
    xs, ys = [], []
    for inputs, labels in dataset.unbatch().batch(rows):
        inputs = np.asarray(inputs)
        n = len(inputs)
        if n < rows:
            inputs = np.concatenate([inputs, np.repeat(inputs[-1:], rows - n, axis=0)])
        xs.append(np.asarray(features.predict_on_batch(inputs))[:n])  # a compiled graph, not eager calls
        ys.append(np.asarray(labels))
    return np.concatenate(xs), np.concatenate(ys)
