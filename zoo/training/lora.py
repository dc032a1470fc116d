"""LoRA: low-rank adapters on a backbone's attention projections, or its dense and convolution layers.

As in the LoRA paper (Hu et al. 2021) and peft, a transformer's query and value projections are adapted
(a fused ``qkv`` projection where the backbone has one); a backbone without attention has every dense and
convolution layer adapted. Keras's ``enable_lora`` freezes a layer's kernel only; here everything else in
the backbone, biases and normalisation included, is frozen too, so only the adapters and the head train.
Saving to ``.keras`` merges the adapters into the kernels.

Example:
    >>> model = zoo.create_model("vit_tiny_p4", num_classes=10, pretrained=False)
    >>> apply_lora(model, rank=4)
"""
from __future__ import annotations

import fnmatch

import keras

from zoo import compat
from zoo.errors import InvalidArgumentError
from zoo.factory import BACKBONE

ADAPTABLE = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D, keras.layers.Conv2D,
             keras.layers.Conv3D)
ATTENTION = ("query", "value", "*qkv*")  # layer names: Keras's MultiHeadAttention projections, fused qkv


def _backbone(model: keras.Model) -> keras.Model:
    try:
        return model.get_layer(BACKBONE)
    except ValueError:
        return model


def apply_lora(model: keras.Model, rank: int = 4, alpha: float | None = None,
               targets: tuple[str, ...] | None = None) -> list[str]:
    """Add rank-``rank`` adapters to the backbone's attention projections (``targets``: fnmatch patterns of
    layer names; by default query and value, else every dense and convolution layer) and freeze the rest of
    the backbone.

    Returns the adapted layer names. A model without a ``backbone`` is adapted whole except its
    last layer (the head), which stays fully trainable.

    Example:
        >>> apply_lora(zoo.create_model("dinov2_small", num_classes=5), rank=8)[:2]
        ['query', 'value']
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InvalidArgumentError(f"LoRA rank must be a positive integer, got {rank!r}")
    body = _backbone(model)
    head = model.layers[-1] if body is model else None
    adaptable = [layer for layer in compat.flatten_layers(body, include_self=False)
                 if isinstance(layer, ADAPTABLE) and layer is not head and layer.built
                 and not getattr(layer, "lora_enabled", False)]
    chosen = [layer for layer in adaptable if any(fnmatch.fnmatch(layer.name, p) for p in targets or ATTENTION)]
    if targets is None and not chosen:
        chosen = adaptable
    if not chosen:
        what = f"layer matching {', '.join(targets)}" if targets else "dense, convolution or attention layer"
        raise InvalidArgumentError(f"{model.name} has no {what} LoRA can adapt: use recipe 'full' or 'linear_probe'")
    model.trainable = True
    for layer in chosen:
        layer.enable_lora(rank, lora_alpha=alpha)
    keep = {id(v) for v in (head.weights if head is not None else [])}
    for layer in compat.flatten_layers(body, include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # inference mode: moving statistics stay as they were
    for variable in body.weights:
        if "lora_kernel" not in variable.path and id(variable) not in keep:
            variable.trainable = False
    return [layer.name for layer in chosen]
