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
import logging
import tempfile
from pathlib import Path

import keras

from zoo.errors import InvalidArgumentError, WeightsError
from zoo.registry import ModelSpec, specs

log = logging.getLogger(__name__)

CONFIG = "config.json"
# Fields of a transformers config that keras-hub 0.32's converter drops, as constructor arguments: its ViT
# converter leaves LayerNorm's epsilon at 1e-6 where the checkpoint says 1e-12 (1e-3 off on the parity fixture).
DROPPED = {"vit": {"layer_norm_epsilon": "layer_norm_eps"}}
# What keras-hub 0.32 converts (keras_hub/src/utils/{transformers,timm}/preset_loader.py), for error messages.
SUPPORTED = ("keras-hub presets; transformers vision models of type vit, deit, dinov2, dinov2_with_registers, "
             "swin; timm resnet*, efficientnet*, mobilenet*, densenet*, vgg*, cspnet*")


def read_config(directory: str | Path) -> dict:
    """A checkpoint directory's ``config.json``, checked to be one keras-hub can read."""
    directory = Path(directory).expanduser()
    path = directory / CONFIG
    if not path.is_file():
        raise InvalidArgumentError(f"{directory} has no {CONFIG}: give a keras-hub preset, transformers or timm "
                                   f"checkpoint directory (config.json and model.safetensors)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path} is not readable JSON ({e}): download the checkpoint again") from e
    if not isinstance(config, dict) or not {"registered_name", "model_type", "architecture"} & set(config):
        raise InvalidArgumentError(f"{path} is neither a keras-hub, a transformers nor a timm config: keras-hub "
                                   f"loads {SUPPORTED}")
    return config


def spec_for(directory: Path) -> ModelSpec:
    """A catalog-like entry for a checkpoint directory: its architecture from ``config.json``; its input
    normalisation from the checkpoint's preprocessing config, else the catalog family's, else ImageNet's."""
    config = read_config(directory)
    family = _kind(config)
    known = next((s for s in specs() if s.source == "keras-hub" and _kind(s.builder_kwargs["config"]) == family),
                 None)
    size = _native_size(config)
    fixed = known.builder_kwargs.get("fixed_size", False) if known else False
    preprocessing, said = _normalisation(directory, config)
    if preprocessing is None:
        preprocessing = known.preprocessing if known else "torch"
        said = f"{'the catalog family ' + known.family if known else 'ImageNet'}'s mean and std (the checkpoint " \
               f"has no preprocessing config)"
    return ModelSpec(arch=directory.name, family=known.family if known else family, source="keras-hub",
                     builder="zoo.hub:build", builder_kwargs={"config": config, **({"fixed_size": True} if fixed
                                                                                    else {})},
                     input_size=(*(size or (224, 224)), 3), preprocessing=preprocessing,
                     pooling=known.pooling if known else "avg", description=f"{directory}: {said}")


def _kind(config: dict) -> str:
    """The architecture a ``config.json`` names: transformers' model_type, timm's architecture, keras-hub's class."""
    return str(config.get("model_type") or config.get("architecture") or config.get("registered_name"))


def _normalisation(directory: Path, config: dict) -> tuple[str | None, str]:
    """The Preprocessing mode a checkpoint's own mean and std name (transformers' preprocessor_config.json,
    timm's pretrained_cfg), and where it came from; None where the checkpoint gives none."""
    source, values = None, None
    processor = directory / "preprocessor_config.json"
    if processor.is_file():
        loaded = json.loads(processor.read_text())
        source, values = processor.name, (loaded.get("image_mean"), loaded.get("image_std"))
    elif "mean" in config.get("pretrained_cfg", {}):
        source, values = "pretrained_cfg", (config["pretrained_cfg"]["mean"], config["pretrained_cfg"].get("std"))
    if source is None or None in values:
        return None, ""
    for mode, (mean, std) in {"torch": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                              "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}.items():
        if all(abs(a - b) < 1e-3 for a, b in zip([*values[0], *values[1]], [*mean, *std])):
            return mode, f"mean and std from its {source}"
    log.warning("%s: its mean %s and std %s are neither ImageNet's nor 0.5; the model takes images normalised "
                "that way (it has no preprocessing layer)", directory, values[0], values[1])
    return "none", f"no preprocessing inside: normalise with its {source}'s mean and std"


def build(input_shape: tuple[int, int, int], *, config: dict | None, checkpoint: str | Path | None = None,
          fixed_size: bool = False, **kwargs) -> keras.Model:
    """A keras-hub backbone at ``input_shape``: random weights from ``config``, or ``checkpoint``'s weights.

    ``fixed_size``: the architecture's position table fixes its input size (keras-hub ViT, DeiT, Swin).
    Other keyword arguments go to the backbone's constructor.
    """
    import keras_hub
    from safetensors import SafetensorError

    if checkpoint is not None:
        config = read_config(checkpoint)
        if input_shape[2] != 3:
            raise InvalidArgumentError(f"in_channels={input_shape[2]} with a checkpoint's weights is not supported "
                                       f"for keras-hub backbones yet: give 3-channel images, or pretrained=False")
    native = _native_size(config)
    if fixed_size and native is not None and tuple(input_shape[:2]) != native:
        raise InvalidArgumentError(f"this backbone is built at {native[0]}x{native[1]} (its position table); "
                                   f"input_shape {input_shape[0]}x{input_shape[1]} is not supported yet")
    if not fixed_size:
        kwargs["image_shape"] = tuple(input_shape)
    for argument, field in DROPPED.get(config.get("model_type"), {}).items():
        if field in config:
            kwargs.setdefault(argument, config[field])
    try:
        if checkpoint is not None:
            body = keras_hub.models.Backbone.from_preset(str(checkpoint), load_weights=True, **kwargs)
        else:
            with tempfile.TemporaryDirectory() as directory:
                (Path(directory) / CONFIG).write_text(json.dumps(config))
                body = keras_hub.models.Backbone.from_preset(directory, load_weights=False, **kwargs)
    except ValueError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidArgumentError(f"keras-hub cannot build this checkpoint ({first[:200]}); it loads "
                                   f"{SUPPORTED}") from e
    except (OSError, KeyError, SafetensorError) as e:  # a missing tensor, a truncated or corrupt file
        raise WeightsError(f"the weights in {checkpoint} do not load ({e}): download the checkpoint again") from e
    if isinstance(body.input, dict):  # DINOv2 names its one input: the same graph, taking a tensor
        body = keras.Model(body.inputs[0], body.output, name=body.name)
    if tuple(body.input.shape[1:3]) != tuple(input_shape[:2]) and None not in body.input.shape[1:3]:
        raise InvalidArgumentError(f"the backbone takes {tuple(body.input.shape[1:])}, not {input_shape}")
    return body


def _native_size(config: dict) -> tuple[int, int] | None:
    """The input size a checkpoint's config names, where it names one."""
    inner = config.get("config", config)
    for key in ("image_size", "image_shape"):
        value = inner.get(key)
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, (list, tuple)) and len(value) >= 2:
            return (int(value[0]), int(value[1]))
    size = config.get("pretrained_cfg", {}).get("input_size")  # timm: (channels, height, width)
    return (int(size[1]), int(size[2])) if size else None
