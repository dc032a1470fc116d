"""create_model: builder + weights + channels + head + preprocessing, for every catalog entry.

Example:
    >>> import zoo
    >>> model = zoo.create_model("resnet50.imagenet", num_classes=5)
"""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import keras
import numpy as np

from applications.layers import Preprocessing, TokenPooling, adapt_channels
from zoo import weights as store
from zoo.backbone import Backbone, Entry
from zoo.errors import InvalidArgumentError, WeightsError
from zoo.registry import LENGTHS, ModelSpec, WeightSpec, requested_weights, resolve, specs

POOLINGS = ("avg", "max", "token", "flatten", "none")
HEAD = "head"  # the classifier layer's name, the same for every family
BACKBONE = "backbone"
log = logging.getLogger(__name__)


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: bool | str | os.PathLike = True,
    input_shape: tuple[int, ...] | None = None,
    in_channels: int | None = None,
    pooling: str | None = None,
    dropout: float = 0.0,
    head_hidden: tuple[int, ...] | None = None,
    include_preprocessing: bool = True,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
) -> keras.Model:
    """Build a catalog model as a plain ``keras.Model`` that takes raw 0-255 images.

    Args:
        name: ``"arch.tag"`` or a bare ``"arch"`` (its default tag); see ``zoo.list_models()``. Or a local
            checkpoint directory keras-hub reads (a keras-hub preset, or a transformers or timm checkpoint:
            ``config.json`` and ``model.safetensors``), or a hub handle (``hf://org/name``, ``kaggle://...``).
        num_classes: None (or 0) for the pooled embedding; N for a fresh Dense head named ``"head"``.
        pretrained: True (the name's tag), a tag, False (random weights), a path to a
            ``.weights.h5`` / ``.h5`` / ``.keras`` file, or for a keras-hub entry a checkpoint directory.
        input_shape: ``(h, w)`` or ``(h, w, c)``; defaults to the entry's input size.
        in_channels: channels of the input; pretrained first-convolution kernels are adapted as timm does.
        pooling: ``avg``, ``max``, ``token`` (class token), ``flatten`` or ``none``; None takes the
            architecture's own (``avg`` for CNNs, ``token`` for ViT).
        dropout: dropout rate before the head.
        head_hidden: widths of ReLU layers between the pooling and the head (``pre_logits_1``, ...);
            None takes the architecture's own classifier MLP (VGG's 4096, 4096; none for most).
        include_preprocessing: put the family's input normalisation inside the model.
        features_only: return the stage feature maps: a dict keyed by str(stride), or with
            ``out_indices`` a list of the stages at those indices (0 is the first stage).

    Example:
        >>> model = create_model("mobilenetv3_small", num_classes=10, pretrained=False, input_shape=(96, 96))
        >>> model.output.shape
        (None, 10)
    """
    directory = _directory(name)
    if isinstance(name, str) and name.startswith(store.HUB_PREFIXES):
        name, directory = store.hub_name(name)  # a catalog entry's handle, or a checkpoint fetched into the store
    if directory is not None:
        from zoo.hub_config import spec_for

        spec, weight = spec_for(directory), None
        pretrained = directory if pretrained is True else pretrained  # its own weights
    else:
        spec, weight = resolve(name)
    num_classes = _check_options(spec, num_classes, pooling, dropout, features_only, out_indices)
    named = weight
    weight, weight_file = _pick_weights(spec, weight, name, pretrained)
    if spec.modality != "image":
        vocabulary = None if weight_file is not None or named is None else store.local_checkpoint(named)
        return _sequence_model(spec, weight, weight_file or vocabulary, input_shape, in_channels,
                               num_classes=num_classes, random=weight_file is None, pooling=pooling, dropout=dropout,
                               head_hidden=head_hidden, include_preprocessing=include_preprocessing)
    shape = _input_shape(spec, input_shape or spec.image_size(weight), in_channels)

    builder_kwargs = dict(spec.builder_kwargs)
    if spec.preprocessing == "builtin" and not include_preprocessing:
        builder_kwargs["include_preprocessing"] = False
    checkpoint = _checkpoint(weight_file)
    if checkpoint is not None:  # keras-hub converts a checkpoint directory as it builds
        builder_kwargs["checkpoint"] = checkpoint
    body = _build_backbone(spec, shape, builder_kwargs)
    if weight_file is not None and checkpoint is None:
        _load_backbone_weights(spec, body, shape, builder_kwargs, weight, weight_file)
    entry = _entry(spec, weight, weight_file, shape, getattr(body, "hub_config", None))

    inputs = keras.Input(shape, name="image")
    x = inputs
    if include_preprocessing and spec.preprocessing not in ("builtin", "none"):
        x = Preprocessing(spec.preprocessing, name="preprocessing")(x)
    if features_only:
        return keras.Model(inputs, _feature_extractor(spec, body, out_indices, entry)(x), name=spec.arch)
    x = Backbone(body.input, body.output, entry=entry, name=BACKBONE)(x)
    x = _pool(x, pooling or spec.pooling)
    return keras.Model(inputs, _head(x, spec, num_classes, dropout, head_hidden), name=spec.arch)


def _head(x, spec: ModelSpec, num_classes: int, dropout: float, head_hidden):
    """The classifier on pooled features ``x``: hidden ReLU layers, dropout, and a Dense layer named ``head``."""
    if not num_classes:
        return x
    hidden = spec.pre_logits if head_hidden is None else tuple(head_hidden)
    if any(not isinstance(w, int) or w < 1 for w in hidden):
        raise InvalidArgumentError(f"head_hidden must be positive widths, got {head_hidden!r}")
    for i, width in enumerate(hidden, start=1):
        x = keras.layers.Dense(width, activation="relu", name=f"pre_logits_{i}")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # zero-initialised, as BiT does: the first steps start from uniform predictions instead of
    # random logits over large pretrained features
    return keras.layers.Dense(num_classes, kernel_initializer="zeros", name=HEAD)(x)


def _sequence_model(spec: ModelSpec, weight: WeightSpec | None, weight_file, input_shape, in_channels, *,
                    num_classes: int, pooling, dropout: float, head_hidden, include_preprocessing: bool,
                    random: bool = False) -> keras.Model:
    """A text or sound model: strings or waveforms in (the checkpoint's tokenizer, or Whisper's log-mel features,
    inside), or the encoder's own inputs where there is no vocabulary or ``include_preprocessing=False``. ``random``:
    random weights, in the architecture of ``weight_file``'s checkpoint where there is one on this machine (a bundled
    or downloaded tag: its vocabulary too). Its length (tokens, samples) is ``input_shape``'s, else the entry's, at
    most the encoder's position table. The entry's builder module gives the inputs (``model_inputs``)."""
    from zoo.hub_config import read_config

    shape = _sequence_shape(spec, input_shape, in_channels)
    checkpoint = _checkpoint(weight_file)
    if checkpoint is None and weight_file is not None and (Path(weight_file).parent / "config.json").is_file():
        checkpoint = Path(weight_file).parent  # a keras-hub preset's model.weights.h5 beside its config
    if weight_file is not None and checkpoint is None:
        raise InvalidArgumentError(f"{spec.arch} is a keras-hub {spec.modality} encoder: give its checkpoint "
                                   f"directory (config.json, model weights and tokenizer files), not {weight_file}")
    if random and checkpoint is not None:
        builder_kwargs = {"config": read_config(checkpoint)}
    else:
        builder_kwargs = {**spec.builder_kwargs, **({"checkpoint": checkpoint} if checkpoint is not None else {})}
    body = _build_backbone(spec, shape, {**builder_kwargs, "pooling": pooling or spec.pooling})
    length, unit = shape[0], LENGTHS[spec.modality]
    if body.max_length and length > body.max_length:
        if input_shape is not None:  # asked for: say so; the entry's default just fits the table
            log.warning("input_shape=(%d,) is longer than %s's position table: inputs are cut at %d %s",
                        length, spec.arch, body.max_length, unit)
        length, shape = body.max_length, (body.max_length,)
    entry = _entry(spec, weight, None if random else weight_file, shape, body.hub_config)
    backbone = Backbone(body.input, body.output, entry=entry, name=BACKBONE)
    model_inputs = _function(spec.builder.partition(":")[0] + ":model_inputs")
    inputs, x = model_inputs(body, checkpoint, length, include_preprocessing)
    return keras.Model(inputs, _head(backbone(x), spec, num_classes, dropout, head_hidden), name=spec.arch)


def _directory(name) -> Path | None:
    """``name`` as a local checkpoint directory (keras-hub preset, transformers or timm), or None."""
    if isinstance(name, (str, os.PathLike)) and not str(name).startswith(store.HUB_PREFIXES):
        path = Path(name).expanduser()
        return path if path.is_dir() else None
    return None


def _checkpoint(weight_file) -> Path | None:
    """The checkpoint directory keras-hub builds from: ``weight_file`` itself, or the directory of a
    ``model.safetensors`` beside its ``config.json``; None for a Keras weights file."""
    if weight_file is None:
        return None
    path = Path(weight_file)
    if path.is_dir():
        return path
    return path.parent if (path.parent / "config.json").is_file() and not str(path).endswith(".h5") else None


def _entry(spec: ModelSpec, weight: WeightSpec | None, weight_file, shape, hub_config: dict | None = None) -> Entry:
    """What the model will know about itself: the entry it was built from and where its weights came from."""
    keys = sorted(spec.stages)
    source = weight.tag if weight is not None else (Path(weight_file).name if weight_file is not None else None)
    return Entry(name=f"{spec.arch}.{weight.tag}" if weight is not None else spec.arch, arch=spec.arch,
                 family=spec.family, source=spec.source, preprocessing=spec.preprocessing, input_size=shape,
                 stages=tuple(spec.stages[k] for k in keys), strides=tuple(keys), first_conv=spec.first_conv,
                 weights=source, hub_config=hub_config)


def _check_options(spec, num_classes, pooling, dropout, features_only, out_indices) -> int:
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 0):
        raise InvalidArgumentError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    if features_only and num_classes:
        raise InvalidArgumentError("features_only=True returns feature maps and takes no head: "
                                   "drop num_classes, or drop features_only")
    if out_indices is not None and not features_only:
        raise InvalidArgumentError("out_indices selects feature maps: use it with features_only=True")
    if features_only and spec.modality != "image":
        raise InvalidArgumentError(f"{spec.arch} is a {spec.modality} model: features_only returns image feature "
                                   f"maps; use pooling='none' for its token sequence")
    if features_only and not spec.stages:
        raise InvalidArgumentError(f"{spec.arch} declares no stages, so it has no feature maps to return")
    if features_only and any("/" in stage for stage in spec.stages.values()):
        raise InvalidArgumentError(f"{spec.arch}'s blocks run inside keras-hub's encoder layer, so it has no "
                                   f"stage outputs to return: use pooling='none' for its last block's tokens")
    if pooling is not None and pooling not in POOLINGS:
        raise InvalidArgumentError(f"unknown pooling '{pooling}': use one of {', '.join(POOLINGS)}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise InvalidArgumentError(f"dropout must be in [0, 1), got {dropout}")
    return num_classes or 0


def _pick_weights(spec: ModelSpec, weight: WeightSpec | None, name: str, pretrained):
    """The weights to load: (WeightSpec or None, local file or None)."""
    chosen = requested_weights(spec, weight, name, pretrained)
    if isinstance(chosen, WeightSpec):
        return chosen, store.fetch(spec, chosen)
    return None, chosen


def _sequence_shape(spec: ModelSpec, input_shape, in_channels) -> tuple[int]:
    """``(tokens,)`` of a text model, ``(samples,)`` of a sound model: ``input_shape``, else the entry's."""
    unit = LENGTHS[spec.modality]
    if in_channels is not None:
        raise InvalidArgumentError(f"{spec.arch} is a {spec.modality} model: it takes no in_channels")
    shape = tuple(input_shape) if input_shape is not None else tuple(spec.input_size)
    least = max(spec.min_input_size, 2)
    if len(shape) != 1 or not isinstance(shape[0], int) or isinstance(shape[0], bool) or shape[0] < least:
        raise InvalidArgumentError(f"{spec.arch} is a {spec.modality} model: input_shape is ({unit},), a number of "
                                   f"{unit} of at least {least}, got {input_shape!r}")
    return shape


def _input_shape(spec: ModelSpec, input_shape, in_channels) -> tuple[int, int, int]:
    h, w, c = spec.input_size
    if input_shape is not None:
        if isinstance(input_shape, str) or not hasattr(input_shape, "__len__") or len(input_shape) not in (2, 3) \
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_shape):
            raise InvalidArgumentError(f"input_shape must be (height, width) or (height, width, channels), "
                                       f"got {input_shape}")
        h, w = input_shape[:2]
        c = input_shape[2] if len(input_shape) == 3 else c
    if in_channels is not None:
        if len(input_shape or ()) == 3 and input_shape[2] != in_channels:
            raise InvalidArgumentError(f"input_shape has {input_shape[2]} channels but in_channels={in_channels}")
        c = in_channels
    if not isinstance(c, int) or c < 1:
        raise InvalidArgumentError(f"the input needs at least one channel, got {c}")
    if min(h, w) < spec.min_input_size:
        raise InvalidArgumentError(f"{spec.arch} needs inputs of at least {spec.min_input_size}x"
                                   f"{spec.min_input_size}, got {h}x{w}: use a larger input_shape")
    return (int(h), int(w), int(c))


def _function(reference: str):
    """The function a catalog entry names as ``"module:function"`` (its builder, its after_load step)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def _build_backbone(spec: ModelSpec, shape, builder_kwargs) -> keras.Model:
    builder = _function(spec.builder)
    try:
        backbone = builder(input_shape=shape, **builder_kwargs)
    except (ValueError, TypeError) as e:
        raise InvalidArgumentError(f"cannot build {spec.arch} with input {shape}: {e}") from e
    backbone.name = BACKBONE
    return backbone


def _load_backbone_weights(spec, backbone, shape, builder_kwargs, weight, path) -> None:
    """Load a file into the backbone. Catalog weights for another channel count go through a twin with the
    architecture's own channels; a local file is tried as it is first, then through that twin."""
    native = (*shape[:2], spec.input_size[2])
    target = backbone
    if shape[2] != native[2] and weight is not None:
        target = _build_backbone(spec, native, builder_kwargs)
    if str(path).endswith(".keras"):
        transfer_weights(keras.saving.load_model(path, compile=False), target, spec.first_conv)
    else:
        try:
            _load_file(target, path, spec, shape)
        except WeightsError:
            if target is not backbone or shape[2] == native[2]:
                raise
            target = _build_backbone(spec, native, builder_kwargs)  # a file made at the architecture's channels
            _load_file(target, path, spec, native)
    if weight is not None and spec.after_load:
        _function(spec.after_load)(target)
    if target is not backbone:
        transfer_weights(target, backbone, spec.first_conv)


def _load_file(target: keras.Model, path, spec: ModelSpec, shape) -> None:
    try:
        target.load_weights(path)
    except Exception as e:  # keras raises ValueError, KeyError or h5py errors on a mismatched file
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = " ".join(lines[:2])[:200]  # not the tensors Keras prints after the message
        raise WeightsError(f"{path} does not fit the backbone of {spec.arch} at input {shape} ({reason}); "
                           "give weights saved from this architecture with zoo.save_backbone_weights") from e


def _layers_by_name(model: keras.Model) -> dict:
    found = {}
    for layer in model.layers:
        found[layer.name] = layer
        if isinstance(layer, keras.Model):
            found.update(_layers_by_name(layer))
    return found


def adapt_conv_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
    """timm's ``adapt_input_conv`` for a Keras kernel ``(kh, kw, in, out)``.

    One channel: the sum over the RGB kernels. N channels: repeat, truncate to N, scale by 3/N.

    Example:
        >>> adapt_conv_kernel(np.ones((3, 3, 3, 8)), 1).shape
        (3, 3, 1, 8)
    """
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    reps = -(-channels // kernel.shape[2])
    return np.tile(kernel, (1, 1, reps, 1))[:, :, :channels, :] * (kernel.shape[2] / channels)


def transfer_weights(source: keras.Model, target: keras.Model, first_conv: str | None = None) -> int:
    """Copy weights layer by layer, by name, adapting input channels; returns the layers copied.

    The first convolution's kernel is adapted with ``adapt_conv_kernel``, and per-channel input
    statistics (a Normalization layer's mean and variance) with ``adapt_channels``.
    """
    sources = _layers_by_name(source)
    copied = 0
    for name, layer in _layers_by_name(target).items():
        src = sources.get(name)
        if src is None or isinstance(layer, keras.Model) or not layer.weights:
            continue
        values = []
        for have, want in zip(src.get_weights(), layer.get_weights()):
            if have.shape == want.shape:
                values.append(have)
            elif name == first_conv and have.ndim == 4:
                values.append(adapt_conv_kernel(have, want.shape[2]))
            elif have.ndim == 1 and want.ndim == 1:
                values.append(adapt_channels(have, want.shape[0]))
            else:
                raise WeightsError(f"layer {name}: weights of shape {have.shape} cannot serve {want.shape}; "
                                   f"build the model with the input the weights were made for")
        layer.set_weights(values)
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()  # its mean and variance are cached when loaded, not read per call
        copied += 1
    if copied == 0:
        raise WeightsError(f"no layer of {source.name} matches a layer of {target.name} by name: "
                           f"the file holds another architecture")
    return copied


def _feature_extractor(spec: ModelSpec, backbone: keras.Model, out_indices, entry: Entry) -> Backbone:
    keys = sorted(spec.stages)
    if out_indices is None:
        outputs = {str(k): backbone.get_layer(spec.stages[k]).output for k in keys}
    else:
        bad = [i for i in out_indices if not -len(keys) <= i < len(keys)]
        if bad:
            raise InvalidArgumentError(f"out_indices {bad} out of range: {spec.arch} has {len(keys)} stages "
                                       f"({', '.join(map(str, keys))})")
        outputs = [backbone.get_layer(spec.stages[keys[i]]).output for i in out_indices]
    return Backbone(backbone.input, outputs, entry=entry, name=BACKBONE)


def _pool(x, pooling: str):
    rank = len(x.shape)
    if rank == 2 or pooling == "none":
        return x
    if pooling == "flatten":
        return keras.layers.Flatten(name="pool")(x)
    if pooling == "token":
        if rank != 3:
            raise InvalidArgumentError("pooling='token' needs a transformer's tokens: use 'avg' for this model")
        return TokenPooling(name="pool")(x)
    layers = {(3, "avg"): keras.layers.GlobalAveragePooling1D, (3, "max"): keras.layers.GlobalMaxPooling1D,
              (4, "avg"): keras.layers.GlobalAveragePooling2D, (4, "max"): keras.layers.GlobalMaxPooling2D}
    return layers[rank, pooling](name="pool")(x)


def load_model(path: str | os.PathLike, **kwargs) -> keras.Model:
    """Load a saved zoo model in any process (``safe_mode=True``): registers the zoo's layers first.

    Example:
        >>> model.save("m.keras"); same = zoo.load_model("m.keras")
    """
    # everything a saved zoo model may name: the builders' layers, and the fine-tuning optimizers
    for module in {spec.builder.partition(":")[0] for spec in specs()} | {"zoo.training.optim", "zoo.backbone",
                                                                         "zoo.audio"}:
        importlib.import_module(module)
    return keras.saving.load_model(path, safe_mode=True, **kwargs)
