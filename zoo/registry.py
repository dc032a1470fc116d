"""The catalog: every model is an entry ``arch.tag`` declared as data.

This module never imports TensorFlow or Keras, so listing and describing the catalog is instant.

Example:
    >>> import zoo
    >>> zoo.list_models("efficientnet_b*", pretrained=True)[:2]
    ['efficientnet_b0.imagenet', 'efficientnet_b1.imagenet']
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from applications.normalisation import MODES
from zoo.errors import InvalidArgumentError, UnknownModelError, WeightsError

PREPROCESSING_MODES = (*MODES, "builtin", "none")  # builtin: the architecture's own layers; none: nothing
LENGTHS = {"text": "tokens", "audio": "samples"}  # what a text or sound model's one input dimension counts
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")  # the weights files create_model(pretrained=PATH) loads


@dataclass(frozen=True)
class WeightSpec:
    """One set of pretrained weights for an architecture.

    ``file_hash`` is what ``keras.utils.get_file`` checks (sha256, or md5 for 32 hex digits);
    None means the publisher gives no hash and the file cannot be verified. ``bundled`` weights
    ship inside the package (``zoo/pretrained/<file_name>``) and need no download.
    """

    tag: str
    file_name: str
    url: str | None = None
    file_hash: str | None = None
    dataset: str = ""
    num_classes: int | None = None
    license: str = ""
    input_size: tuple[int, int] | None = None
    cache_subdir: str = "models"
    bundled: bool = False
    description: str = ""
    top1: float | None = None  # the publisher's ImageNet top-1 of these weights with their classifier
    revision: str | None = None  # a hub checkpoint's pinned commit (Hugging Face); None: the main branch
    files: tuple[str, ...] = ()  # a hub checkpoint's further files (a tokenizer's vocabulary), beside its config


@dataclass(frozen=True)
class ModelSpec:
    """An architecture: how to build it and what generic code needs to know about it.

    ``builder`` is ``"module:function"``, imported only when a model is built; it is called as
    ``builder(input_shape=(h, w, c), **builder_kwargs)`` and returns a backbone ``keras.Model``.
    ``stages`` maps an output stride (4, 8, 16, 32) to the layer that ends that stage; transformers,
    which keep one resolution, map a block index to the layer ending that block instead.
    ``pre_logits`` are the widths of the classifier MLP an architecture puts before its logits.
    ``after_load`` is an optional ``"module:function"`` called as ``fn(backbone)`` after its weights
    are loaded, for families whose weights need a fix-up on a freshly built model.
    """

    arch: str
    family: str
    builder: str
    input_size: tuple[int, int, int]
    preprocessing: str
    stages: dict[int, str] = field(default_factory=dict)
    first_conv: str | None = None
    weights: tuple[WeightSpec, ...] = ()
    builder_kwargs: dict = field(default_factory=dict)
    source: str = "keras-zoo"
    min_input_size: int = 32
    pooling: str = "avg"
    pre_logits: tuple[int, ...] = ()
    after_load: str | None = None
    description: str = ""
    modality: str = "image"  # "image"; "text" or "audio": input_size is then (tokens,) or (samples,), see LENGTHS

    def __post_init__(self):
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(f"{self.arch}: preprocessing must be one of {PREPROCESSING_MODES}")

    def image_size(self, weight: WeightSpec | None = None) -> tuple[int, int]:
        """(height, width) a model is built at by default: the size its weights were made at, else the
        architecture's (timm's pretrained_cfg rule). The one place this rule is written. A text or sound model's
        ``(tokens,)`` or ``(samples,)``."""
        if self.modality != "image":
            return tuple(self.input_size)
        return tuple((weight.input_size if weight is not None else None) or self.input_size[:2])

    @property
    def default_tag(self) -> str | None:
        return self.weights[0].tag if self.weights else None

    def weight(self, tag: str) -> WeightSpec:
        for w in self.weights:
            if w.tag == tag:
                return w
        tags = ", ".join(w.tag for w in self.weights) or "none"
        raise UnknownModelError(f"{self.arch} has no weights tagged '{tag}' (its tags: {tags}); "
                                f"use one of them, or pretrained=False for random weights")


MEASURED = Path(__file__).parent / "catalog" / "measured.json"  # scripts/measure_catalog.py writes it


def measured_key(spec: ModelSpec) -> str:
    """The key of an architecture in measured.json: its source and its name (resnet50 has two sources)."""
    return f"{spec.source}:{spec.arch}"


@functools.cache
def _measured() -> dict:
    return json.loads(MEASURED.read_text()) if MEASURED.is_file() else {}


def measured(spec: ModelSpec) -> dict:
    """``{"params": backbone parameters, "gflops": GFLOPs of one image at the default size}`` as
    scripts/measure_catalog.py measured them, or {} for an architecture it has not measured."""
    return _measured().get(measured_key(spec), {})


_REGISTRY: dict[str, ModelSpec] = {}
# An architecture name a second source also publishes (timm's resnet50 beside keras.applications'): its tags
# resolve to that source's spec; the bare name stays the first source's.
_VARIANTS: dict[str, ModelSpec] = {}
_CATALOG_MODULES = ("zoo.catalog.keras_apps", "zoo.catalog.native", "zoo.catalog.keras_hub",
                    "zoo.catalog.keras_hub_text", "zoo.catalog.keras_hub_audio")
SOURCES = ("keras.applications", "keras-zoo", "keras-hub")  # which source a bare name shared by two means
_loaded = False


def register(spec: ModelSpec) -> ModelSpec:
    """Add an architecture to the catalog (a later entry with the same arch and source replaces it; one from
    another source adds its tags to that name, whose bare form means the source first in ``SOURCES``)."""
    first = _REGISTRY.get(spec.arch)
    if first is not None and first.source != spec.source:
        clash = {w.tag for w in first.weights} & {w.tag for w in spec.weights}
        if clash:
            raise ValueError(f"{spec.arch}: tags {sorted(clash)} are already {first.source}'s")
        rank = {source: i for i, source in enumerate(SOURCES)}
        if rank.get(spec.source, len(SOURCES)) < rank.get(first.source, len(SOURCES)):
            _REGISTRY[spec.arch], spec = spec, first  # registered in another order (a module imported early)
        _VARIANTS[spec.arch] = spec
    else:
        _REGISTRY[spec.arch] = spec
    return spec


def _catalog() -> dict[str, ModelSpec]:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _CATALOG_MODULES:
            importlib.import_module(module)
    return _REGISTRY


def _names(spec: ModelSpec) -> list[str]:
    return [f"{spec.arch}.{w.tag}" for w in spec.weights] or [spec.arch]


def list_models(pattern: str = "*", pretrained: bool | None = None, family: str | None = None) -> list[str]:
    """Names in the catalog matching an fnmatch ``pattern``, sorted.

    ``pretrained=True`` keeps names with weights (``arch.tag``), ``False`` the architectures without,
    ``None`` both. ``family`` keeps one family.

    Example:
        >>> list_models("resnet5*", pretrained=True)
        ['resnet50.imagenet', 'resnet50v2.imagenet']
    """
    out = []
    for spec in specs():
        if family is not None and spec.family != family:
            continue
        if pretrained is not None and bool(spec.weights) != pretrained:
            continue
        out += [n for n in _names(spec) if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(spec.arch, pattern)]
    return sorted(out)


def specs() -> list[ModelSpec]:
    """Every architecture in the catalog (an architecture two sources publish, once for each)."""
    return [*_catalog().values(), *_VARIANTS.values()]


def families() -> list[str]:
    """The families in the catalog, sorted."""
    return sorted({s.family for s in specs()})


def resolve(name: str) -> tuple[ModelSpec, WeightSpec | None]:
    """``"arch.tag"`` or a bare ``"arch"`` (its default tag) to its spec and weights.

    Raises UnknownModelError naming the closest names when nothing matches.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgumentError(f"a model name is a string such as 'resnet50' or 'resnet50.imagenet', got {name!r}")
    catalog = _catalog()
    arch, _, tag = name.partition(".")
    spec = catalog.get(arch)
    if spec is None:
        close = difflib.get_close_matches(arch, catalog, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownModelError(f"unknown model '{name}': {hint}run `keras-zoo list` to see the catalog")
    variant = _VARIANTS.get(arch)
    if tag and variant is not None and tag in {w.tag for w in variant.weights}:
        return variant, variant.weight(tag)
    if tag:
        return spec, spec.weight(tag)
    return spec, (spec.weights[0] if spec.weights else None)


def requested_weights(spec: ModelSpec, weight: WeightSpec | None, name: str,
                      pretrained: bool | str | os.PathLike | None) -> WeightSpec | Path | None:
    """What ``pretrained=`` asks for, checked without loading anything: catalog weights, a local file, or None.

    ``weight`` is the tag ``name`` resolved to; ``pretrained`` is True (that tag), False/None (random
    weights), a tag, a path to a ``.weights.h5`` / ``.h5`` / ``.keras`` file, or for a keras-hub entry a
    checkpoint directory.

    Example:
        >>> requested_weights(*resolve("resnet_tiny"), "resnet_tiny", True).tag
        'digits'
    """
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        if weight is None:
            raise InvalidArgumentError(f"{spec.arch} has no pretrained weights: pass pretrained=False (random "
                                       f"weights), or a weights file as pretrained=PATH")
        return weight
    path = Path(pretrained).expanduser()
    if isinstance(pretrained, str) and not path.suffix and os.sep not in pretrained:
        tagged = spec.weight(pretrained)  # a tag
        if "." in name and weight is not None and weight.tag != tagged.tag:
            raise InvalidArgumentError(f"'{name}' names tag '{weight.tag}' but pretrained='{pretrained}': "
                                       f"give the tag once")
        return tagged
    if path.is_dir() and spec.source == "keras-hub":
        return path  # a checkpoint directory: keras-hub builds the backbone from it
    if not str(path).endswith(WEIGHT_SUFFIXES):
        raise InvalidArgumentError(f"pretrained={pretrained!r}: a weights file must end in "
                                   f"{', '.join(WEIGHT_SUFFIXES)}")
    if not path.is_file():
        raise WeightsError(f"no weights file at {path}: check the path")
    return path


def model_info(name: str) -> dict:
    """Everything the catalog knows about a model, as plain data.

    ``name`` may also be a checkpoint directory (keras-hub preset, transformers or timm).

    Example:
        >>> model_info("resnet50")["input_size"]
        (224, 224, 3)
    """
    if Path(str(name)).expanduser().is_dir():  # a hub checkpoint directory: what its files say
        from zoo.hub_config import spec_for

        spec, weight = spec_for(Path(str(name)).expanduser()), None
    else:
        spec, weight = resolve(name)
    info = dataclasses.asdict(spec)
    info["name"] = f"{spec.arch}.{weight.tag}" if weight else spec.arch
    info["params"], info["gflops"] = measured(spec).get("params"), measured(spec).get("gflops")
    info["tags"] = [w.tag for w in spec.weights]
    info["default_input_size"] = (*spec.image_size(weight), *spec.input_size[2:])  # what the name builds at
    info["weights"] = dataclasses.asdict(weight) if weight else None
    if weight is not None and weight.file_hash is None and not weight.bundled:
        info["weights"]["file_hash"] = None
        info["weights"]["verification"] = "none: the publisher gives no hash for this file"
    elif weight is not None:
        info["weights"]["verification"] = "sha256" if len(weight.file_hash or "") == 64 else "md5"
    return info
