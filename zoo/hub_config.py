"""What a hub checkpoint directory says, read without TensorFlow: its ``config.json`` (keras-hub's,
transformers' or timm's), the architecture it names, its input normalisation and size, and the catalog-like
entry ``create_model`` and ``keras-zoo info`` use for it.

Example:
    >>> spec_for(Path("path/to/dinov2-small")).preprocessing
    'torch'
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from applications.normalisation import mode_of
from zoo.catalog.keras_hub import stages_for, vision_config
from zoo.catalog.keras_hub_audio import AUDIO_KINDS, audio_spec
from zoo.catalog.keras_hub_text import TEXT_KINDS, text_spec
from zoo.errors import InvalidArgumentError, WeightsError
from zoo.registry import ModelSpec, specs

log = logging.getLogger(__name__)

CONFIG = "config.json"
# What keras-hub 0.32 converts (keras_hub/src/utils/{transformers,timm}/preset_loader.py), for error messages.
SUPPORTED = ("keras-hub presets; transformers models of type vit, deit, dinov2, dinov2_with_registers, swin, "
             "bert, distilbert, roberta, xlm-roberta; timm resnet*, efficientnet*, mobilenet*, densenet*, vgg*, "
             "cspnet*")


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
    family = kind(config)
    if family in TEXT_KINDS:
        return text_spec(directory.name, TEXT_KINDS[family], config, description=f"{directory}: its own tokenizer")
    if family in AUDIO_KINDS:
        return audio_spec(directory.name, config, description=f"{directory}: Whisper's encoder")
    known = next((s for s in specs() if s.source == "keras-hub" and kind(s.builder_kwargs["config"]) == family),
                 None)
    size = native_size(config)
    same = {key: known.builder_kwargs[key] for key in ("fixed_size", "tower") if key in known.builder_kwargs} \
        if known else {}  # the family's: a fixed position table, the tower of a two-tower preset
    preprocessing, said = _normalisation(directory, config)
    if preprocessing is None:
        preprocessing = known.preprocessing if known else "torch"
        said = f"{'the catalog family ' + known.family if known else 'ImageNet'}'s mean and std (the checkpoint " \
               f"has no preprocessing config)"
    return ModelSpec(arch=directory.name, family=known.family if known else family, source="keras-hub",
                     builder="zoo.hub:build", builder_kwargs={"config": config, **same},
                     input_size=(*(size or (224, 224)), 3), preprocessing=preprocessing,
                     pooling=known.pooling if known else "avg", stages=stages_for(config),
                     description=f"{directory}: {said}")


# config.json fields that make an architecture (transformers', timm's, a keras-hub vision encoder's)
ARCHITECTURE_KEYS = ("model_type", "architecture", "registered_name", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "patch_size", "embed_dim", "depths", "hidden_dim", "num_layers",
                     "num_heads", "image_shape")


def architecture(config: dict) -> dict:
    """The fields of a ``config.json`` that say which network it is: a checkpoint imported for a catalog
    entry must agree with the entry's config on each."""
    fields = {**config, **vision_config(config)}
    return {key: fields[key] for key in ARCHITECTURE_KEYS if key in fields}


def kind(config: dict) -> str:
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
    mode = mode_of(*values)
    if mode is not None:
        return mode, f"mean and std from its {source}"
    log.warning("%s: its mean %s and std %s are neither ImageNet's nor 0.5; the model takes images normalised "
                "that way (it has no preprocessing layer)", directory, values[0], values[1])
    return "none", f"no preprocessing inside: normalise with its {source}'s mean and std"


def native_size(config: dict) -> tuple[int, int] | None:
    """The input size a checkpoint's config names, where it names one."""
    inner = vision_config(config)
    for key in ("image_size", "image_shape"):
        value = inner.get(key)
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, (list, tuple)) and len(value) >= 2:
            return (int(value[0]), int(value[1]))
    size = config.get("pretrained_cfg", {}).get("input_size")  # timm: (channels, height, width)
    return (int(size[1]), int(size[2])) if size else None
