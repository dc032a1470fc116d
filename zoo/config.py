"""The one list of fine-tuning options: ``FinetuneConfig``, and ``RunConfig`` for a whole run.

Every entry point reads these dataclasses: ``zoo.finetune(model, data, config, **options)`` takes a
``FinetuneConfig`` or its field names; ``keras-zoo finetune`` makes one flag per ``RunConfig`` field
(help and default from the field); a run's ``config.yaml`` is a ``RunConfig``; tuning's defaults and its
``best.yaml`` come from them. Values are checked by pydantic against the field types, so a bad value
is refused before any work. This module never imports TensorFlow.

Example:
    >>> config = FinetuneConfig(recipe="full", epochs=3)
    >>> RunConfig.from_dict({"model": "resnet_tiny.digits", "epochs": 3}).recipe
    'two_phase'
"""
from __future__ import annotations

import contextvars
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml

from zoo.errors import InvalidArgumentError

# The names each option accepts: one place, read by the modules that implement them.
RECIPES = ("linear_probe", "two_phase", "gradual", "full", "lora")
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "nadam": "Nadam",
              "lion": "Lion"}  # option -> keras.optimizers class
SCHEDULES = ("constant", "cosine", "one_cycle")
AUGMENTS = ("none", "light", "strong")
MIXES = ("none", "mixup", "cutmix", "mixup_cutmix")  # batch mixing of images and labels (zoo.training.mixing)
STRATEGIES = ("auto", "off", "one_device", "mirrored", "multi_worker", "tpu")
LR_SCALING = ("linear", "sqrt")
PRECISIONS = ("mixed_float16", "mixed_bfloat16")
MIN_EPOCHS = {"two_phase": 2, "gradual": 2}  # head first, then more: zoo.training.recipes.plan refuses fewer
# keras-zoo tune's choices, read without importing keras-tuner (tuning.search maps them to its oracles)
TUNERS = ("random", "bayesian", "hyperband", "grid")
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min"}  # what trials report
# the representation tools (zoo.represent)
PRETRAIN_METHODS = ("supervised", "simclr")
SALIENCY_METHODS = ("auto", "gradcam", "attention_rollout", "integrated_gradients")  # auto: by the model's kind
EMBEDDING_MAPS = {"tsne": "t-SNE", "umap": "UMAP"}  # option: the name in a picture

Positive = Annotated[int, pydantic.Strict(), pydantic.Field(ge=1)]  # strict: True is not a batch size
Rate = Annotated[float, pydantic.Field(gt=0)]
Fraction = Annotated[float, pydantic.Field(ge=0, lt=1)]


def _strategy(value: Any) -> Any:
    """A strategy name, or a ``tf.distribute.Strategy`` object (kept as it is)."""
    if isinstance(value, str) or not hasattr(value, "scope"):
        if value not in STRATEGIES:
            raise ValueError(f"must be one of {', '.join(STRATEGIES)}, or a tf.distribute.Strategy")
    return value


def option(default: Any, help: str, **metadata) -> Any:  # noqa: A002 - the field's help text
    """A config field: its default and the help text the command line shows."""
    factory = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(**factory, metadata={"help": help, **metadata})


@dataclass
class FinetuneConfig:
    """How ``zoo.finetune`` trains: the recipe, the optimisation, what is frozen, the devices."""

    recipe: Literal[RECIPES] = option("two_phase", f"{', '.join(RECIPES)}")
    epochs: Positive = option(6, "epochs in all, over every phase")
    learning_rate: Rate = option(1e-3, "base learning rate (the head's; phases scale it)")
    batch_size: Positive = option(32, "global batch size, split over the replicas")
    blocks: Positive = option(2, "blocks below the head that two_phase unfreezes")
    optimizer: Literal[tuple(OPTIMIZERS)] = option("adam", ", ".join(OPTIMIZERS))
    lr_schedule: Literal[SCHEDULES] = option("cosine", f"{', '.join(SCHEDULES)} (cosine warms up first)")
    warmup: Fraction = option(0.1, "fraction of each phase's steps spent warming up (cosine)")
    lr_slice: tuple[Rate, Rate] | None = option(None, "LO,HI: fastai's discriminative rates, bottom to top group")
    layer_decay: Annotated[float, pydantic.Field(gt=0, le=1)] | None = option(
        None, "timm's layer-wise decay of the rate, in (0, 1]")
    lora_rank: Positive = option(4, "rank of the LoRA adapters (recipe lora)")
    augment: Literal[AUGMENTS] = option("none", ", ".join(AUGMENTS))
    mix: Literal[MIXES] = option("none", f"{', '.join(MIXES)}: training batches mix images and labels (timm's "
                                         f"mixup 0.8, cutmix 1.0)")
    label_smoothing: Fraction = option(0.0, "share of each label spread over all classes (0.1 is usual)")
    grad_accum: Positive = option(1, "batches whose gradients are summed into one update (Keras's "
                                     "gradient_accumulation_steps): a step's batch is this times batch_size")
    ema: Annotated[float, pydantic.Field(gt=0, lt=1)] | None = option(
        None, "decay of a moving average of the weights (timm's model_ema_decay, e.g. 0.999): validation "
              "and the kept model use the average")
    shuffle: bool = option(True, "shuffle the training data every epoch")
    cache_features: bool | Literal["auto"] = option(
        "auto", "train a head-only phase on cached backbone features: auto (when nothing augments), true, false")
    patience: Positive | None = option(3, "early stopping on validation loss within a phase (none: off)")
    train_bn: bool = option(False, "keep BatchNorm statistics training in frozen groups")
    precise_bn: bool = option(True, "recompute trainable BatchNorm statistics from the training data each epoch")
    seed: Annotated[int, pydantic.Strict(), pydantic.Field(ge=0)] = option(
        0, "random seed (weights of new layers, shuffling)")
    jit_compile: bool | Literal["auto"] = option(
        "auto", "XLA: true, false or auto (Keras's: off on CPU-only machines and under tf.distribute)")
    strategy: Annotated[Any, pydantic.AfterValidator(_strategy)] = option(
        "auto", f"{', '.join(STRATEGIES)} (in Python also a tf.distribute.Strategy)")
    lr_scaling: Literal[LR_SCALING] | None = option(
        None, "linear or sqrt: scale the learning rate with the global batch")
    mixed_precision: Literal[PRECISIONS] | None = option(None, " or ".join(PRECISIONS))
    tensorboard: bool = option(False, "write TensorBoard logs to the run directory's logs/")

    def __post_init__(self):
        """Check the values however the config is made: ``FinetuneConfig(epochs=0)`` is refused like a flag."""
        if _CHECKING.get():  # pydantic's own instance, inside the check below
            return
        token = _CHECKING.set(True)
        try:
            checked = _adapter(type(self)).validate_python(self.as_dict(plain=False))
        except pydantic.ValidationError as e:
            raise InvalidArgumentError(f"{type(self).__name__}: {_reason(type(self), e.errors()[0])}") from None
        finally:
            _CHECKING.reset(token)
        for f in dataclasses.fields(self):  # pydantic's forms: tuples where a tuple is declared
            object.__setattr__(self, f.name, getattr(checked, f.name))
        self._check_combinations(type(self).__name__)

    def _check_combinations(self, where: str) -> None:
        """Rules across fields, which a field's type cannot say."""
        if self.mix != "none" and self.cache_features is True:
            raise InvalidArgumentError(f"{where}: cache_features=true trains the head on features of unmixed "
                                       f"images, so mix={self.mix} would not apply: use cache_features auto or false")
        if self.lr_slice is not None and self.lr_slice[0] > self.lr_slice[1]:
            raise InvalidArgumentError(f"{where}: lr_slice LO,HI must have LO <= HI (the bottom group's rate first), "
                                       f"got {list(self.lr_slice)}")

    @classmethod
    def from_dict(cls, values: dict, where: str = "options"):
        """Build from plain data (YAML, flags, keyword arguments), refusing unknown keys and bad values."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise InvalidArgumentError(f"{where}: unknown key(s) {', '.join(unknown)}; the known keys: "
                                       f"{', '.join(names)}")
        token = _CHECKING.set(True)
        try:
            config = _adapter(cls).validate_python(dict(values))
        except pydantic.ValidationError as e:
            raise InvalidArgumentError(f"{where}: {_reason(cls, e.errors()[0])}") from None
        finally:
            _CHECKING.reset(token)
        config._check_combinations(where)
        return config

    def replace(self, **changes):
        """A copy with ``changes``, checked like the original."""
        return type(self).from_dict({**self.as_dict(plain=False), **changes}, where="options")

    def as_dict(self, plain: bool = True) -> dict:
        """The fields as a dict; ``plain`` gives objects their string form (a strategy by its name)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: _plain(v) for k, v in values.items()} if plain else values

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise InvalidArgumentError(f"no config file at {path}: give the config.yaml of a run")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise InvalidArgumentError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
        if not isinstance(values, dict):
            raise InvalidArgumentError(f"{path} must hold a mapping of option: value")
        return cls.from_dict(values, where=str(path))

    @classmethod
    def defaults(cls) -> dict:
        """Every field's default."""
        return cls().as_dict()


@dataclass
class RunConfig(FinetuneConfig):
    """A whole run of ``keras-zoo finetune``: the model and the data, then how to fine-tune (the
    ``FinetuneConfig`` fields). Its YAML is a run's ``config.yaml``."""

    model: str = option("resnet_tiny.digits", "catalog name, e.g. efficientnet_b0.imagenet")
    data: str = option("digits", "a folder of class sub-folders, tfds:NAME[/CONFIG], or digits")
    pretrained: bool | str = option(True, "true, false, a weights tag or a weights file")
    classes: list[int | str] | None = option(None, "comma-separated subset of the data's classes")
    per_class: Positive | None = option(None, "labelled training examples per class")
    test_fraction: Fraction = option(0.1, "fraction of the examples held out for testing, where the data has no "
                                          "test split")
    image_size: tuple[Positive, Positive] | None = option(None, "H,W (default: the model's weights', else its own)")
    dropout: Fraction = option(0.0, "dropout before the head")
    head_hidden: list[Positive] | None = option(None, "comma-separated widths of hidden layers before the head")
    baseline: bool = option(False, "also train the same network from scratch and report both, with the kNN "
                                   "accuracy of the backbone's features before training, pretrained and random")
    curve: bool = option(False, "also fine-tune pretrained and from scratch at 1, 2, 5 and 10 labels per class, "
                                "and plot test accuracy against labels (label_efficiency.png)")
    run_dir: str | None = option(None, "where the run goes (default runs/<time>-<arch>)")

    def _check_combinations(self, where: str) -> None:
        super()._check_combinations(where)
        if self.classes is not None and len(set(map(str, self.classes))) < 2:
            raise InvalidArgumentError(f"{where}: classes must name at least two different classes, got {self.classes}")
        for name in ("model", "data"):
            if not getattr(self, name).strip():
                raise InvalidArgumentError(f"{where}: {name} must not be empty ({_help(type(self), name)})")

    def split(self) -> dict:
        """The options of ``zoo.data.load`` that choose this run's examples (every command reads the same)."""
        return {"classes": self.classes, "per_class": self.per_class, "test_fraction": self.test_fraction,
                "seed": self.seed}

    def as_dict(self, plain: bool = True) -> dict:
        values = super().as_dict(plain)
        first = [f.name for f in dataclasses.fields(RunConfig) if f.name not in _FINETUNE_FIELDS]
        return {k: values[k] for k in first + [k for k in values if k not in first]}  # model and data first


_FINETUNE_FIELDS = {f.name for f in dataclasses.fields(FinetuneConfig)}


def fields(cls=RunConfig) -> list[dataclasses.Field]:
    """The fields of a config class, with their types resolved (for generating flags)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        out.append(f)
    return sorted(out, key=lambda f: f.name in _FINETUNE_FIELDS and cls is not FinetuneConfig)  # model, data first


def _adapter(cls) -> pydantic.TypeAdapter:
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = pydantic.TypeAdapter(cls)
    return _ADAPTERS[cls]


_ADAPTERS: dict[type, pydantic.TypeAdapter] = {}  # built on first use: a few ms each
_CHECKING = contextvars.ContextVar("checking", default=False)  # a check is under way: do not check again


def _help(cls, name: str) -> str:
    return next((f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name), "")


def _reason(cls, error: dict) -> str:
    """One line from pydantic's first error: the option, the value, and what it must be."""
    key, value = error["loc"][0], error["input"]
    if error["type"] == "literal_error":
        return f"unknown {key} {value!r}: use {error['ctx']['expected'].replace(chr(39), '')}"
    help_ = _help(cls, key)
    kind, ctx = error["type"], error.get("ctx", {})
    bound = next(iter(ctx.values()), None)
    rule = _RULES.get((kind, bound)) or _RULES.get(kind) or _RULES.get(kind.split("_")[0]) or error["msg"]
    if kind == "value_error":
        rule = str(ctx.get("error", rule))
    return f"{key} {rule.format(bound=bound)}, got {value!r}" + (f" ({help_})" if help_ else "")


_RULES = {("greater_than", 0): "must be positive", ("greater_than_equal", 1): "must be a positive integer",
          "greater_than": "must be above {bound}", "greater_than_equal": "must be {bound} or more",
          "less_than": "must be below {bound}", "less_than_equal": "must be at most {bound}",
          "int": "must be an integer", "float": "must be a number", "bool": "must be true or false",
          "tuple": "must be a list of values", "list": "must be a list of values", "missing": "has too few values",
          "too": "has too many values"}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    return _STRATEGY_NAMES.get(type(value).__name__, type(value).__name__)  # a strategy object: its name


# tf.distribute classes -> the strategy names above (read without importing TensorFlow)
_STRATEGY_NAMES = {"MirroredStrategy": "mirrored", "MultiWorkerMirroredStrategy": "multi_worker",
                   "CollectiveAllReduceStrategy": "multi_worker", "TPUStrategy": "tpu",
                   "OneDeviceStrategy": "one_device", "_DefaultDistributionStrategy": "off"}
