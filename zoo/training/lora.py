"""LoRA: low-rank adapters on a backbone's dense, convolution and attention projections.

Keras's ``enable_lora`` freezes a layer's kernel only; here everything else in the backbone, biases
and normalisation included, is frozen too, so only the adapters and the head train. Saving to
``.keras`` merges the adapters into the kernels.

Example:
    >>> model = zoo.create_model("vit_tiny_p4", num_classes=10, pretrained=False)
    >>> apply_lora(model, rank=4)
"""
from __future__ import annotations

import keras

from zoo import compat
from zoo.errors import InvalidArgumentError
from zoo.factory import BACKBONE

ADAPTABLE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D, keras.layers.Conv2D,
             keras.layers.Conv3D)


def _backbone(model: keras.Model) -> keras.Model:
    try:
        return model.get_layer(BACKBONE)
    except ValueError:
        return model


def apply_lora(model: keras.Model, rank: int = 4, alpha: float | None = None) -> list[str]:
    """Add rank-``rank`` adapters to every adaptable backbone layer and freeze the rest of the backbone.

    Returns the adapted layer names. A model without a ``backbone`` is adapted whole except its
    last layer (the head), which stays fully trainable.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InvalidArgumentError(f"LoRA rank must be a positive integer, got {rank!r}")
    body = _backbone(model)
    head = model.layers[-1] if body is model else None
    targets = [layer for layer in compat.flatten_layers(body, include_self=False)
               if isinstance(layer, ADAPTABLE) and layer is not head and layer.built
               and not getattr(layer, "lora_enabled", False)]
    if not targets:
        raise InvalidArgumentError(f"{model.name} has no dense, convolution or attention layer LoRA can "
                                   f"adapt: use recipe 'full' or 'linear_probe'")
    model.trainable = True
    for layer in targets:
        layer.enable_lora(rank, lora_alpha=alpha)
    keep = {id(v) for v in (head.weights if head is not None else [])}
    for layer in compat.flatten_layers(body, include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference mode: moving statistics stay as they were
    for variable in body.weights:
        if "lora_kernel" not in variable.path and id(variable) not in keep:
            variable.trainable = False
    return [layer.name for layer in targets]
