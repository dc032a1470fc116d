"""Fully connected backbones for vectors and small images (flattened).

Hidden block ``i`` (1-based) is ``hidden{i}_dense`` [``hidden{i}_norm``] ``hidden{i}_act`` and ends in
the dropout layer ``hidden{i}_out`` (present at rate 0 too, so names never depend on the rate).

Example:
    >>> build_mlp((32, 32, 3), widths=(256, 128)).output.shape
    (None, 128)
"""
from __future__ import annotations

import keras
from keras import layers

from applications.blocks import check_positive, check_rate

NORMS = {"none": None, "batch": layers.BatchNormalization, "layer": layers.LayerNormalization}


def build_mlp(input_shape: tuple[int, ...],
              widths: tuple[int, ...] = (256, 128),
              norm: str = "none",
              activation: str = "relu",
              dropout: float = 0.0,
              name: str = "mlp") -> keras.Model:
    """A multilayer perceptron returning the last hidden layer, (batch, widths[-1]).

    ``norm`` is "none", "batch" or "layer", applied between each Dense and its activation (a Dense
    followed by a norm has no bias). Inputs of any rank are flattened first.

    Example:
        >>> build_mlp((64,), widths=(32,), norm="layer", dropout=0.1).count_params()
        2112
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")
    if not widths:
        raise ValueError("widths must name at least one hidden layer")
    if any(d is None for d in input_shape):
        raise ValueError(f"an MLP needs a fully known input shape, got {tuple(input_shape)}")
    check_positive(**{f"widths[{i}]": w for i, w in enumerate(widths)})
    check_rate(dropout=dropout)
    keras.activations.get(activation)  # raises ValueError for an unknown name

    inputs = keras.Input(input_shape)
    x = layers.Flatten(name="flatten")(inputs)
    for i, width in enumerate(widths, 1):
        x = layers.Dense(width, use_bias=norm == "none", name=f"hidden{i}_dense")(x)
        if NORMS[norm] is not None:
            x = NORMS[norm](name=f"hidden{i}_norm")(x)
        x = layers.Activation(activation, name=f"hidden{i}_act")(x)
        x = layers.Dropout(dropout, name=f"hidden{i}_out")(x)
    return keras.Model(inputs, x, name=name)
