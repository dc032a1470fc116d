"""What a network computes on the way: pooled embeddings, and the outputs of its stages or of any named layer.

``tap`` is the one tool: a model from the same inputs to the outputs of named layers at any depth (inside the
nested ``backbone``, or inside a user's own model that nests a zoo model), sharing the original layers and
weights. ``intermediates`` is timm's ``forward_intermediates`` for Keras; ``embed`` runs a model over a
dataset in one compiled pass and keeps the labels.

Example:
    >>> maps = intermediates(model, images)                      # {"1": ..., "2": ..., "4": ...} for resnet_tiny
    >>> emb = embed(model, "digits", split="test")               # emb.features (N, D), emb.labels (N,)
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from zoo.backbone import entry_of, find_backbone
from zoo.errors import InvalidArgumentError

POOLS = ("avg", "token", "none")
SPLITS = {"train": 0, "val": 1, "validation": 1, "test": 2}


@dataclass(frozen=True)
class Embedding:
    """Features (N, D) of one split, its labels (N,) and the class names."""

    features: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def layer_names(model: keras.Layer) -> list[str]:
    """Every layer name of ``model``, nested models included, outermost first."""
    names = []
    for layer in getattr(model, "layers", []):
        names.append(layer.name)
        names.extend(layer_names(layer))
    return names


def _holder(model: keras.Model, name: str) -> keras.Layer | None:
    """The top-level layer of ``model`` that is, or holds, the layer called ``name``."""
    for layer in model.layers:
        if layer.name == name or name in layer_names(layer):
            return layer
    return None


def tap(model: keras.Model, names: Sequence[str]) -> keras.Model:
    """A model from ``model``'s inputs to the outputs of the layers called ``names`` (at any depth), then
    ``model``'s own output; it shares ``model``'s layers and weights.

    Example:
        >>> *stages, logits = tap(model, zoo.entry_of(model).stages)(images)
    """
    missing = [n for n in names if _holder(model, n) is None]
    if missing:
        close = difflib.get_close_matches(missing[0], layer_names(model), n=3)
        raise InvalidArgumentError(f"{model.name} has no layer {missing[0]!r}"
                                   + (f": did you mean {', '.join(close)}?" if close else
                                      ": give a layer name from model.summary(expand_nested=True)"))
    own = {layer.name for layer in model.layers}
    if all(n in own for n in names):
        return keras.Model(model.inputs, [model.get_layer(n).output for n in names] + [model.output])
    # Layers inside a nested model: tap that model, then rebuild this one's graph around the tapped copy.
    inner = {}
    for n in names:
        if n not in own:
            inner.setdefault(_holder(model, n).name, []).append(n)
    tapped = {holder: tap(model.get_layer(holder), wanted) for holder, wanted in inner.items()}
    found = {}

    def call(layer, *args, **kwargs):  # the layers are shared, so their outputs are read here, in the new graph
        if layer.name not in tapped:
            found[layer.name] = layer(*args, **kwargs)
            return found[layer.name]
        *outputs, last = tapped[layer.name](*args, **kwargs)
        found.update(zip(inner[layer.name], outputs))
        return last

    rebuilt = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call)
    return keras.Model(rebuilt.inputs, [found[n] for n in names] + [rebuilt.output])


def stages_of(model: keras.Model, stages: Sequence[str] | None = None) -> dict[str, str]:
    """{key: layer name} of the stages to read: the catalog's (keyed by stride for CNNs, by block for
    transformers) when ``stages`` is None, else ``stages`` given as keys or layer names."""
    entry = entry_of(model)
    catalog = {}
    if entry is not None:
        body = find_backbone(model)
        for stride, name in zip(entry.strides, entry.stages):
            if "/" in name:  # a block inside a keras-hub encoder layer: not a node of the graph
                continue
            tokens = len(body.get_layer(name).output.shape) == 3
            catalog[name.removesuffix("_out") if tokens else str(stride)] = name
    if stages is None:
        if not catalog:
            some = layer_names(model)[-3:-1]
            raise InvalidArgumentError(f"{model.name} declares no stage outputs: name the layers to read, e.g. "
                                       f"stages={some} (--stages {','.join(some)} on the command line)")
        return catalog
    stages = [stages] if isinstance(stages, (str, int)) else stages
    return {str(s): catalog.get(str(s), str(s)) for s in stages}  # a stride may come as a number


def pooled(x, pool: str = "avg", class_token: bool = True):
    """A symbolic layer output, pooled: "avg" over space or tokens, "token" a transformer's class token,
    "none" as it is (``class_token=False`` drops token 0 of a transformer's tokens, where "token" does not)."""
    rank = len(x.shape)
    if rank == 3 and not class_token and pool != "token":
        x = x[:, 1:]
    if pool == "none" or rank == 2:
        return x
    if pool == "token":
        if rank != 3:
            raise InvalidArgumentError("pool='token' takes a transformer's class token: use 'avg' for feature maps")
        return x[:, 0]
    return keras.ops.mean(x, axis=tuple(range(1, rank - 1)))


def head_input(model: keras.Model) -> str | None:
    """The name of the layer whose output the classifier head reads (None for a model without a head)."""
    from zoo.factory import HEAD

    names = [layer.name for layer in model.layers]
    return names[names.index(HEAD) - 1] if HEAD in names else None


def intermediates(model: keras.Model, images, *, stages: Sequence[str] | None = None, pool: str = "none",
                  class_token: bool = True, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The outputs of ``model``'s stages on ``images``, as numpy arrays keyed by stride (CNNs) or block
    name (transformers), bottom to top.

    Args:
        images: a batch of raw images (N, H, W, C), as the model takes them.
        stages: keys (``"8"``, ``"block2"``) or layer names; None for every catalog stage.
        pool: "none" keeps the maps (N, H, W, C) or tokens (N, T, D); "avg" averages over space or
            tokens; "token" takes a transformer's class token.
        class_token: keep a transformer's class token among its tokens (ignored by ``pool="token"``).

    Example:
        >>> {k: v.shape for k, v in intermediates(model, images).items()}
        {'1': (8, 16, 16, 32), '2': (8, 8, 8, 64), '4': (8, 4, 4, 128)}
    """
    if pool not in POOLS:
        raise InvalidArgumentError(f"unknown pool {pool!r}: use one of {', '.join(POOLS)}")
    chosen = stages_of(model, stages)
    images = check_images(model, images)
    drop = not class_token and "class_token" in layer_names(model)
    tapped = tap(model, list(chosen.values()))
    probe = keras.Model(tapped.inputs, {k: pooled(out, pool, not drop) for k, out in zip(chosen, tapped.outputs)})
    values = probe.predict(images, batch_size=batch_size, verbose=0)
    return {key: np.asarray(values[key]) for key in chosen}


def check_images(model: keras.Model, images) -> np.ndarray:
    """``images`` as a float32 batch of the shape ``model`` takes, or a one-line error saying which it takes."""
    images = np.asarray(images, dtype="float32")
    want = tuple(model.input_shape[1:])
    if images.ndim != len(want) + 1 or any(w is not None and w != h for w, h in zip(want, images.shape[1:])):
        raise InvalidArgumentError(f"{model.name} takes images of shape {want}, got a batch of shape {images.shape}: "
                                   "resize them (zoo.data.load(..., model=model) does)")
    return images


def embedding_model(model: keras.Model, layer: str | None = None, pool: str = "avg") -> keras.Model:
    """A model from ``model``'s inputs to pooled features: what its classifier head reads (what a linear
    probe reads), the model's output when it has no head, or ``layer``'s output pooled."""
    if layer is None and head_input(model) is not None:  # the head's own input, in this model's graph
        from zoo.factory import HEAD

        return keras.Model(model.inputs, model.get_layer(HEAD).input)
    if layer is None:
        return model
    tapped = tap(model, [layer])
    return keras.Model(tapped.inputs, pooled(tapped.outputs[0], pool))


def embed(model: keras.Model, data, *, split: str = "train", data_options: dict | None = None,
          layer: str | None = None, pool: str = "avg", batch_size: int = 64) -> Embedding:
    """Pooled features of ``model`` over one split of ``data`` (anything ``zoo.data.load`` takes), with labels.

    The features are what the classifier head reads (the model's output for a model without a head), or
    ``layer``'s output averaged over space or tokens (``pool="token"``: a transformer's class token).

    Example:
        >>> emb = embed(model, "digits", split="test", data_options={"classes": [5, 6, 7, 8, 9]})
        >>> emb.features.shape, emb.labels.shape
        ((180, 128), (180,))
    """
    from zoo.data import load
    from zoo.training.features import extract

    if split not in SPLITS:
        raise InvalidArgumentError(f"unknown split {split!r}: use one of train, val, test")
    if pool not in POOLS[:2]:
        raise InvalidArgumentError(f"unknown pool {pool!r}: use avg or token")
    datasets = load(data, model=model, batch_size=batch_size, shuffle=False, **(data_options or {}))
    dataset, info = datasets[SPLITS[split]], datasets[3]
    if info.num_examples.get("validation" if split == "val" else split, 0) == 0:
        raise InvalidArgumentError(f"{info.source} has no {split} examples: use another split")
    features, labels = extract(embedding_model(model, layer, pool), dataset)
    return Embedding(features.reshape(len(features), -1), labels.astype("int64"), tuple(info.class_names))
