"""Layer groups and the freezing verbs: freeze, unfreeze, freeze_to, trainable_summary.

A zoo model's groups follow the stages its ``Backbone`` knows (stem and first stage, then one group
per stage) plus the head, which is every layer outside the backbone; this holds for a reloaded or
renamed model and for a zoo model nested in a user's own model. A stage named by a path
(``encoder/layers_2``) ends inside a layer that holds blocks (a keras-hub encoder): that layer is opened, and
its blocks are frozen one by one. Any other model falls back to groups of consecutive layers with about
equal parameter counts. Frozen BatchNormalization runs in inference
mode, so its moving statistics never change (``train_bn=True`` keeps them training, as in fastai).
Every verb recompiles a compiled model with a new optimizer, since a trainable change takes effect
only at compile.

Example:
    >>> model = zoo.create_model("resnet50.imagenet", num_classes=5)
    >>> freeze(model)              # only the head trains
    >>> unfreeze(model, blocks=2)  # and the top two stages
    >>> print(trainable_summary(model))
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import keras

from zoo import compat
from zoo.backbone import find_backbone
from zoo.errors import InvalidArgumentError

FALLBACK_GROUPS = 4


@dataclass
class Group:
    """Consecutive layers that are frozen and unfrozen together."""

    name: str
    layers: list

    @property
    def params(self) -> int:
        return sum(int(w.numpy().size) for layer in self.layers for w in layer.weights)


def _weighted(layers) -> list:
    return [layer for layer in layers if layer.weights]


def groups(model: keras.Model) -> list[Group]:
    """The model's layer groups, bottom to top; the last one is the head.

    Example:
        >>> [g.name for g in groups(zoo.create_model("resnet50", num_classes=3, pretrained=False))]
        ['stage1', 'stage2', 'stage3', 'stage4', 'head']
    """
    backbone = find_backbone(model)
    stages = backbone.entry.stages if backbone is not None and backbone.entry is not None else ()
    if not stages:
        return _equal_groups(model)
    out, current, ends = [], [], iter(stages)
    end = next(ends)
    for path, layer in _units(backbone, _opened(backbone)):
        current.append(layer)
        if path == end:
            out.append(Group(f"stage{len(out) + 1}", current))
            current, end = [], next(ends, None)
    if end is not None:
        raise InvalidArgumentError(f"{backbone.entry.name} declares stage {end!r}, which its backbone does not have")
    out[-1].layers += current  # layers after the last stage end (final norm, top conv) join it
    inside = _ids([backbone])
    top = [leaf for leaf in _leaf_layers(model) if id(leaf) not in inside and leaf.weights]
    return out + [Group("head", top)]


def _opened(backbone) -> set[int]:
    """The layers a stage path passes through (``encoder`` in ``encoder/layers_2``): their blocks are the units."""
    opened = set()
    for stage in backbone.entry.stages if backbone is not None and backbone.entry is not None else ():
        layer = backbone
        for name in stage.split("/")[:-1]:
            layer = next((sub for sub in compat.sublayers(layer) if sub.name == name), None)
            if layer is None:
                raise InvalidArgumentError(f"{backbone.entry.name} declares stage {stage!r}, which its backbone "
                                           f"does not have")
            opened.add(id(layer))
    return opened


def _units(layer, opened: set[int], prefix: str = ""):
    """(path, layer) of ``layer``'s children, opening the layers in ``opened``."""
    for sub in layer.layers if isinstance(layer, keras.Model) else compat.sublayers(layer):
        if id(sub) in opened:
            yield from _units(sub, opened, f"{prefix}{sub.name}/")
        else:
            yield f"{prefix}{sub.name}", sub


def _equal_groups(model: keras.Model) -> list[Group]:
    layers = _weighted(_leaf_layers(model))
    if len(layers) < 2:
        raise InvalidArgumentError(f"{model.name} has fewer than two layers with weights: nothing to group")
    head, body = layers[-1], layers[:-1]
    sizes = [sum(int(w.numpy().size) for w in layer.weights) for layer in body]
    total, n = max(1, sum(sizes)), min(FALLBACK_GROUPS, len(body))
    parts: dict[int, list] = {}
    before = 0
    for layer, size in zip(body, sizes):  # each layer goes where its parameters' midpoint falls
        parts.setdefault(min(n - 1, int((before + size / 2) / total * n)), []).append(layer)
        before += size
    out = [Group(f"group{i + 1}", part) for i, part in enumerate(parts.values())]
    return out + [Group("head", [head])]


def _leaf_layers(model):
    """The layers freezing sets, at any depth: nested models and the layers stage paths pass through are opened."""
    opened = _opened(find_backbone(model))

    def walk(layer):
        for _, sub in _units(layer, opened):
            if isinstance(sub, keras.Model):
                yield from walk(sub)
            else:
                yield sub
    return walk(model)


def _trainable_leaves(model) -> set[int]:
    """The leaves that train now: trainable, and inside containers that are trainable."""
    opened = _opened(find_backbone(model))

    def walk(layer, parent: bool):
        for _, sub in _units(layer, opened):
            on = parent and sub.trainable
            if isinstance(sub, keras.Model):
                yield from walk(sub, on)
            elif on:
                yield id(sub)
    return set(walk(model, True))


def _apply(model: keras.Model, train: set[int], train_bn: bool) -> keras.Model:
    """Make exactly the leaf layers in ``train`` trainable; frozen BatchNorm runs in inference mode."""
    model.trainable = True  # containers stay open (this also opens every leaf); the leaves decide
    for leaf in _leaf_layers(model):
        bn = isinstance(leaf, keras.layers.BatchNormalization)
        leaf.trainable = id(leaf) in train or (bn and train_bn)
    return _recompile(model)


def _ids(layers) -> set[int]:
    return {id(leaf) for layer in layers
            for leaf in (_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])}


def freeze_to(model: keras.Model, n: int, *, train_bn: bool = False) -> keras.Model:
    """Freeze the groups before group ``n`` and train the rest (negative ``n`` counts from the top).

    ``freeze_to(model, -1)`` trains the head only; ``freeze_to(model, 0)`` trains everything.

    Example:
        >>> freeze_to(model, -2)   # the top stage and the head
    """
    gs = groups(model)
    if not isinstance(n, int) or not -len(gs) <= n <= len(gs):
        raise InvalidArgumentError(f"freeze_to({n}): {model.name} has {len(gs)} groups "
                                   f"({', '.join(g.name for g in gs)}); use -{len(gs)}..{len(gs)}")
    n = n % len(gs) if n < 0 else n
    return _apply(model, _ids(layer for g in gs[n:] for layer in g.layers), train_bn)


def freeze(model: keras.Model, *, train_bn: bool = False) -> keras.Model:
    """Train the head only."""
    return freeze_to(model, -1, train_bn=train_bn)


def unfreeze(model: keras.Model, *, blocks: int | None = None, layers: str | None = None,
             train_bn: bool = False) -> keras.Model:
    """Make more of the model trainable: everything, the top ``blocks`` groups below the head,
    or the layers whose names match the fnmatch pattern ``layers``. Nothing trained is refrozen.

    Example:
        >>> unfreeze(model, blocks=2)
        >>> unfreeze(model, layers="conv5_*")
    """
    if blocks is not None and layers is not None:
        raise InvalidArgumentError("unfreeze takes blocks or layers, not both")
    gs = groups(model)
    if layers is not None:
        more = [leaf for leaf in _leaf_layers(model) if fnmatch.fnmatch(leaf.name, layers)]
        if not more:
            raise InvalidArgumentError(f"no layer of {model.name} matches '{layers}'")
    else:
        body = len(gs) - 1
        blocks = body if blocks is None else blocks
        if isinstance(blocks, bool) or not isinstance(blocks, int) or not 0 <= blocks <= body:
            raise InvalidArgumentError(f"blocks={blocks}: {model.name} has {body} blocks below its head; "
                                       f"use 0..{body}")
        more = [layer for g in gs[body - blocks:] for layer in g.layers]
    return _apply(model, _trainable_leaves(model) | _ids(more), train_bn)


def _recompile(model: keras.Model) -> keras.Model:
    """A trainable change takes effect at compile; recompile with a new optimizer of the same config."""
    if model.compiled:
        model.compile_from_config(model.get_compile_config())
    return model


def trainable_summary(model: keras.Model) -> str:
    """One line per group: trainable parameters of total, and whether BatchNorm trains."""
    lines = []
    for group in groups(model):
        leaves = [leaf for layer in group.layers
                  for leaf in (_leaf_layers(layer) if isinstance(layer, keras.Model) else [layer])]
        total = sum(int(w.numpy().size) for leaf in leaves for w in leaf.weights)
        train = sum(int(w.numpy().size) for leaf in leaves for w in leaf.trainable_weights)
        flags = {leaf.trainable for leaf in leaves if leaf.weights}
        lora = any(getattr(sub, "lora_enabled", False) for leaf in leaves for sub in compat.flatten_layers(leaf))
        state = ("frozen" if train == 0 else "LoRA adapters" if lora else "trainable" if flags == {True}
                 else "partly trainable")
        lines.append(f"{group.name:10} {state:17} {train:>12,} / {total:,} params")
    return "\n".join(lines)
