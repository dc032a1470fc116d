"""Backbones built through keras-hub: its own presets, Hugging Face transformers and timm checkpoints.

A checkpoint directory holds a ``config.json`` (keras-hub's, transformers' or timm's) and its weights
(``model.safetensors``, or keras-hub's ``model.weights.h5``); keras-hub reads the format from the config and
converts the weights on load. A catalog entry carries its checkpoint's ``config.json`` as data, so the same
architecture builds offline with random weights, and a checkpoint directory builds with its weights.

Example:
    >>> body = build((224, 224, 3), config={"model_type": "dinov2", ...})           # random weights
    >>> body = build((224, 224, 3), config=None, checkpoint="path/to/dinov2-small")  # its weights
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import keras
import numpy as np

from applications.blocks import resize_positions
from zoo.errors import InvalidArgumentError, WeightsError
from zoo.hub_config import CONFIG, SUPPORTED, native_size, read_config

# Fields of a transformers config that keras-hub 0.32's converter drops, as constructor arguments: its ViT
# converter leaves LayerNorm's epsilon at 1e-6 where the checkpoint says 1e-12 (1e-3 off on the parity fixture).
DROPPED = {"vit": {"layer_norm_epsilon": "layer_norm_eps"}}


def build(input_shape: tuple[int, int, int], *, config: dict | None, checkpoint: str | Path | None = None,
          fixed_size: bool = False, **kwargs) -> keras.Model:
    """A keras-hub backbone at ``input_shape``: random weights from ``config``, or ``checkpoint``'s weights.

    ``fixed_size``: the architecture's position table fixes its input size (keras-hub ViT, DeiT, Swin), so a
    checkpoint is converted at its own size and its position table then resized to ``input_shape``'s grid.
    Other keyword arguments go to the backbone's constructor.
    """
    if checkpoint is not None:
        config = read_config(checkpoint)
        if input_shape[2] != 3:
            raise InvalidArgumentError(f"in_channels={input_shape[2]} with a checkpoint's weights is not supported "
                                       f"for keras-hub backbones yet: give 3-channel images, or pretrained=False")
    for argument, field in DROPPED.get(config.get("model_type"), {}).items():
        if field in config:
            kwargs.setdefault(argument, config[field])
    native = native_size(config)
    resized = fixed_size and native is not None and tuple(input_shape[:2]) != native
    if resized and checkpoint is not None:
        body = _resized(_from_preset(config, checkpoint, kwargs), config, input_shape, kwargs)
    else:
        body = _from_preset(config, checkpoint, kwargs if fixed_size and not resized
                            else {**kwargs, "image_shape": tuple(input_shape)})
    if isinstance(body.input, dict):  # DINOv2 names its one input: the same graph, taking a tensor
        body = keras.Model(body.inputs[0], body.output, name=body.name)
    if tuple(body.input.shape[1:3]) != tuple(input_shape[:2]) and None not in body.input.shape[1:3]:
        raise InvalidArgumentError(f"the backbone takes {tuple(body.input.shape[1:])}, not {input_shape}")
    return body


def _from_preset(config: dict, checkpoint, kwargs: dict) -> keras.Model:
    """keras-hub's backbone for ``checkpoint`` (its weights converted) or for ``config`` (random weights)."""
    import keras_hub
    from safetensors import SafetensorError

    try:
        if checkpoint is not None:
            return keras_hub.models.Backbone.from_preset(str(checkpoint), load_weights=True, **kwargs)
        with tempfile.TemporaryDirectory() as directory:
            (Path(directory) / CONFIG).write_text(json.dumps(config))
            return keras_hub.models.Backbone.from_preset(directory, load_weights=False, **kwargs)
    except ValueError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidArgumentError(f"keras-hub cannot build this checkpoint ({first[:200]}); it loads "
                                   f"{SUPPORTED}") from e
    except (OSError, KeyError, SafetensorError) as e:  # a missing tensor, a truncated or corrupt file
        raise WeightsError(f"the weights in {checkpoint} do not load ({e}): download the checkpoint again") from e


def _resized(source: keras.Model, config: dict, input_shape, kwargs: dict) -> keras.Model:
    """``source``'s weights in the same backbone built at ``input_shape``: its position table resized from the
    checkpoint's patch grid to the new one (bicubic, as timm and keras-hub's DINOv2 do); every other weight
    as it is."""
    target = _from_preset(config, None, {**kwargs, "image_shape": tuple(input_shape)})
    patch = config.get("patch_size", 16)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    grid = tuple(n // p for n, p in zip(native_size(config), patch))
    new_grid = tuple(n // p for n, p in zip(input_shape[:2], patch))
    if len(source.weights) != len(target.weights):
        raise InvalidArgumentError(f"this backbone is not built the same at {input_shape[0]}x{input_shape[1]} as "
                                   f"at {grid[0] * patch[0]}x{grid[1] * patch[1]}: use its own size")
    for have, want in zip(source.weights, target.weights):
        value = have.numpy()
        if value.shape != tuple(want.shape):
            rows, dim = int(np.prod(value.shape[:-1])), value.shape[-1]
            prefix = rows - grid[0] * grid[1]
            if prefix < 0 or int(np.prod(want.shape[:-1])) != prefix + new_grid[0] * new_grid[1]:
                raise InvalidArgumentError(f"{have.path} of shape {value.shape} is not a position table for "
                                           f"{input_shape[0]}x{input_shape[1]} images: use the backbone's own size")
            table = resize_positions(value.reshape(1, rows, dim), grid, new_grid, prefix, interpolation="bicubic")
            value = np.asarray(table).reshape(want.shape)
        want.assign(value)
    return target
