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

import copy
import json
import tempfile
from pathlib import Path

import keras
import numpy as np

from applications.blocks import resize_positions
from zoo.catalog.keras_hub import vision_config
from zoo.errors import InvalidArgumentError, WeightsError
from zoo.files import atomic_save
from zoo.hub_config import CONFIG, SUPPORTED, native_size, read_config

# Fields of a transformers config that keras-hub 0.32's converter drops, as constructor arguments: its ViT
# converter leaves LayerNorm's epsilon at 1e-6 where the checkpoint says 1e-12 (1e-3 off on the parity fixture).
DROPPED = {"vit": {"layer_norm_epsilon": "layer_norm_eps"}}


def build(input_shape: tuple[int, int, int], *, config: dict | None, checkpoint: str | Path | None = None,
          fixed_size: bool = False, tower: str | None = None, **kwargs) -> keras.Model:
    """A keras-hub backbone at ``input_shape``: random weights from ``config``, or ``checkpoint``'s weights.

    ``fixed_size``: the architecture's position table fixes its input size (keras-hub ViT, DeiT, Swin, SigLIP),
    so a checkpoint is converted at its own size and its position table then resized to ``input_shape``'s grid.
    ``tower``: the attribute of a two-tower backbone to keep (SigLIP's ``vision_encoder``). Other keyword
    arguments go to the backbone's constructor.
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
        body = _resized(from_preset(config, checkpoint, kwargs), config, input_shape, kwargs)
    elif fixed_size and not resized:
        body = from_preset(config, checkpoint, kwargs)
    else:  # random weights at any size, or an architecture that takes any size
        sized, kwargs = _sized(config, input_shape, kwargs)
        body = from_preset(sized, checkpoint, kwargs)
    if tower is not None:
        body = getattr(body, tower)
    hub_config = keras.saving.serialize_keras_object(body)  # keras-hub's class, for export_preset
    if isinstance(body.input, dict) and len(body.inputs) == 1:  # DINOv2, SigLIP's tower: the same graph, a tensor in
        body = keras.Model(body.inputs[0], body.output, name=body.name)
    body.hub_config = hub_config
    if tuple(body.input.shape[1:3]) != tuple(input_shape[:2]) and None not in body.input.shape[1:3]:
        raise InvalidArgumentError(f"the backbone takes {tuple(body.input.shape[1:])}, not {input_shape}")
    return body


def _sized(config: dict, input_shape, kwargs: dict) -> tuple[dict, dict]:
    """The config and constructor arguments of a backbone at ``input_shape``: a keras-hub preset's vision
    encoder has its size in its config (the two-tower backbone's constructor takes none), every other backbone
    takes ``image_shape``."""
    if vision_config(config) is not config.get("config", config):
        config = copy.deepcopy(config)
        vision_config(config)["image_shape"] = list(input_shape)
        return config, kwargs
    return config, {**kwargs, "image_shape": tuple(input_shape)}


def from_preset(config: dict, checkpoint, kwargs: dict) -> keras.Model:
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
    sized, sized_kwargs = _sized(config, input_shape, kwargs)
    target = from_preset(sized, None, sized_kwargs)
    patch = vision_config(config).get("patch_size", 16)
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


def save_preset(model: keras.Model, directory: str | Path) -> list[str]:
    """Write a fine-tuned model with a keras-hub backbone as a keras-hub preset directory, with keras-hub's own
    saver: the backbone (``keras_hub.models.Backbone.from_preset(directory)``), and where the head is one that
    keras-hub's ``ImageClassifier`` has (average or max pooling of a feature map, then one Dense layer) the task
    too (``keras_hub.models.ImageClassifier.from_preset(directory)``), whose preprocessor takes raw 0-255 images
    as the zoo model does. Returns the files written.

    Example:
        >>> save_preset(zoo.load_model("runs/x/model.keras"), "runs/x/preset")
    """
    import keras_hub  # noqa: F401 - registers keras-hub's classes, which deserialize_keras_object looks up

    from zoo.backbone import find_backbone

    body = find_backbone(model)
    if body is None or body.entry is None or not body.entry.hub_config:
        raise InvalidArgumentError(f"{model.name} has no keras-hub backbone, so it has no keras-hub preset: export it "
                                   f"as a SavedModel (keras-zoo export RUN), or fine-tune a keras-hub entry "
                                   f"(keras-zoo list --source keras-hub)")
    directory = Path(directory)
    hub_body = keras.saving.deserialize_keras_object(body.entry.hub_config)  # keras-hub's class, new weights
    hub_body.set_weights(body.get_weights())  # the same layers in the same order: keras-hub's graph, rewired
    task = _image_classifier(model, body, hub_body)
    atomic_save(directory, lambda tmp: (task or hub_body).save_to_preset(str(tmp)))  # no half-written preset
    return sorted(p.name for p in directory.iterdir())


def _image_classifier(model: keras.Model, body: keras.Model, hub_body: keras.Model):
    """keras-hub's ``ImageClassifier`` with ``model``'s head and input normalisation, or None where the head has
    another shape (a class token, hidden layers) than keras-hub's generic task."""
    import keras_hub

    from applications.layers import Preprocessing
    from zoo.factory import HEAD

    names = [layer.name for layer in model.layers]
    pools = {keras.layers.GlobalAveragePooling2D: "avg", keras.layers.GlobalMaxPooling2D: "max"}
    after = model.layers[names.index(body.name) + 1:] if body.name in names else []
    kinds = [type(layer) for layer in after]
    if len(body.output.shape) != 4 or not kinds or kinds[0] not in pools or after[-1].name != HEAD \
            or any(k not in (keras.layers.Dropout, keras.layers.Dense) for k in kinds[1:]) \
            or sum(k is keras.layers.Dense for k in kinds) != 1:
        return None
    dropout = next((layer.rate for layer in after if isinstance(layer, keras.layers.Dropout)), 0.0)
    normalise = next((layer for layer in model.layers if isinstance(layer, Preprocessing)), None)
    scale, offset = normalise.scale_offset() if normalise is not None else (None, None)
    task_cls = _for_backbone(keras_hub.models.ImageClassifier, type(hub_body))
    if task_cls is None:
        return None
    # the family's own classes, as ImageClassifier.from_preset(directory) looks them up
    converter = task_cls.preprocessor_cls.image_converter_cls(image_size=tuple(body.input.shape[1:3]), scale=scale,
                                                              offset=offset)
    task = task_cls(backbone=hub_body, num_classes=after[-1].units, pooling=pools[kinds[0]], dropout=dropout,
                    preprocessor=task_cls.preprocessor_cls(image_converter=converter))
    task.output_dense.set_weights(after[-1].get_weights())
    return task


def _for_backbone(base: type, backbone_cls: type) -> type | None:
    """The subclass of keras-hub's task ``base`` made for ``backbone_cls`` (``ResNetImageClassifier``), if any."""
    todo = list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        if getattr(cls, "backbone_cls", None) is backbone_cls:
            return cls
        todo += cls.__subclasses__()
    return None
