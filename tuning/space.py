"""The search space: zoo fine-tuning options as data, checked before any trial runs.

One entry per option. A list is a choice, a 2-tuple or 2-list of numbers a uniform range, and
``(low, high, "log")`` a log-uniform one; ``{"choice": [a, b]}`` is a choice of two numbers; any
other value is fixed. Options left out train as ``zoo.finetune`` and ``zoo.create_model`` would.

Example:
    >>> space = Space({"backbone": ["resnet_tiny", "mlp_small"], "learning_rate": (1e-4, 1e-2, "log"),
    ...                "dropout": (0.0, 0.5), "recipe": ["linear_probe", "two_phase"], "blocks": (1, 2)})
    >>> space.params["learning_rate"]
    Param(name='learning_rate', kind='range', values=(0.0001, 0.01), log=True)
"""
from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
import yaml

from zoo.config import AUGMENTS, RECIPES, FinetuneConfig
from zoo.errors import InvalidArgumentError, UnknownModelError
from zoo.registry import resolve


class SpaceError(InvalidArgumentError):
    """A search space that cannot be searched."""


@dataclass(frozen=True)
class _Option:
    type: type
    valid: Callable[[Any], bool]
    rule: str  # what a valid value is, for error messages


# In declaration order: a parent option comes before the options that depend on it.
OPTIONS = {
    "backbone": _Option(str, lambda v: True, "a catalog name (`keras-zoo list`)"),  # checked against the catalog
    "pretrained": _Option(bool, lambda v: True, "True or False"),
    "recipe": _Option(str, lambda v: v in RECIPES, f"one of {', '.join(RECIPES)}"),
    "blocks": _Option(int, lambda v: v >= 1, "a positive integer"),
    "learning_rate": _Option(float, lambda v: v > 0, "a positive number"),
    "batch_size": _Option(int, lambda v: v >= 1, "a positive integer"),
    "dropout": _Option(float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "head_depth": _Option(int, lambda v: v >= 0, "an integer >= 0"),
    "head_width": _Option(int, lambda v: v >= 1, "a positive integer"),
    "augment": _Option(str, lambda v: v in AUGMENTS, f"one of {', '.join(AUGMENTS)}"),
    "epochs": _Option(int, lambda v: v >= 1, "a positive integer"),  # Hyperband sets its own instead
}
# The BERT paper's fine-tuning grid (Devlin et al. 2019, appendix A.3), a whole fine-tune per trial:
# ``tuning.search(data, {"backbone": "bert_base.uncased", **BERT_GRID})``.
BERT_GRID = {"recipe": "full", "batch_size": {"choice": [16, 32]}, "learning_rate": [5e-5, 3e-5, 2e-5],
             "epochs": [2, 3, 4]}
# An option that applies only for some values of another: child -> (parent, test, when, in words).
CONDITIONS = {
    "blocks": ("recipe", lambda recipe: recipe == "two_phase", "recipe is two_phase"),
    "head_width": ("head_depth", lambda depth: depth > 0, "head_depth > 0"),
}
HEAD = {"head_depth", "head_width"}  # either one in the space sets head_hidden = [head_width] * head_depth
# zoo.finetune's own defaults, so an option left out trains as `keras-zoo finetune` would.
DEFAULTS = {name: FinetuneConfig.defaults()[name] for name in ("recipe", "blocks", "learning_rate", "batch_size",
                                                                 "augment")}
DEFAULTS |= {"dropout": 0.0, "head_depth": 1, "head_width": 128}


@dataclass(frozen=True)
class Param:
    """One option of the space: a ``choice`` of values, a ``range`` (low, high) or a ``fixed`` value."""

    name: str
    kind: str
    values: tuple
    log: bool = False

    def possible(self) -> list | None:
        """Every value the option can take; None for a range of floats."""
        if self.kind != "range":
            return list(self.values)
        low, high = self.values
        return list(range(low, high + 1)) if isinstance(low, int) else None

    def declare(self, hp: kt.HyperParameters) -> Any:
        """Register the option on ``hp`` and return its value for this trial (None where inactive)."""
        if self.kind == "fixed":
            return hp.Fixed(self.name, self.values[0])
        if self.kind == "choice" and isinstance(self.values[0], bool):
            return hp.Boolean(self.name, default=self.values[0])  # hp.Choice turns booleans into 0 and 1
        if self.kind == "choice":
            return hp.Choice(self.name, list(self.values))
        low, high = self.values
        sampling = "log" if self.log else "linear"
        if isinstance(low, int):
            return hp.Int(self.name, low, high, sampling=sampling)
        return hp.Float(self.name, low, high, sampling=sampling)


class Space:
    """A checked search space; ``config(hp)`` gives one trial's fine-tuning options.

    Example:
        >>> Space({"backbone": "resnet_tiny", "recipe": "linear_probe", "blocks": (1, 3)})
        Traceback (most recent call last):
        tuning.space.SpaceError: blocks applies only when recipe is two_phase, which this space never allows: ...
    """

    def __init__(self, spec: Mapping[str, Any]):
        if not isinstance(spec, Mapping):
            raise SpaceError(f"a search space is a mapping of option to values, got {type(spec).__name__}")
        for name in spec:
            if name not in OPTIONS:
                close = difflib.get_close_matches(str(name), OPTIONS, n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                raise SpaceError(f"unknown option '{name}' in the space: {hint}options are {', '.join(OPTIONS)}")
        if "backbone" not in spec:
            raise SpaceError("the space needs a backbone: a catalog name or a list of them, e.g. "
                             "{'backbone': ['resnet_tiny', 'mlp_small']}")
        self.params = {name: _param(name, spec[name]) for name in OPTIONS if name in spec}
        self._check_conditions()
        self._check_pretrained()

    def __repr__(self) -> str:
        return f"Space({self.describe()})"

    def possible(self, name: str) -> list | None:
        """The values an option can take in this space (its default when the space leaves it out)."""
        return self.params[name].possible() if name in self.params else [DEFAULTS[name]]

    def describe(self) -> dict:
        """The space as plain data (JSON-able)."""
        return {p.name: {"kind": p.kind, "values": list(p.values), "log": p.log} for p in self.params.values()}

    def declare(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """Register every option on ``hp`` (conditional ones in their scope); return the active values."""
        values = {}
        for name, param in self.params.items():
            scope = self._scope(name)
            with hp.conditional_scope(*scope) if scope else contextlib.nullcontext():
                value = param.declare(hp)
            if value is not None:
                values[name] = value
        return values

    def _scope(self, name: str) -> tuple[str, list] | None:
        """(parent, the parent's values where ``name`` applies) when ``name`` depends on a searched option."""
        if name not in CONDITIONS:
            return None
        parent, active, _ = CONDITIONS[name]
        if parent not in self.params or self.params[parent].kind == "fixed":
            return None  # then it always applies: _check_conditions refused the space otherwise
        return parent, [v for v in self.params[parent].possible() if active(v)]

    def config(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """One trial's options under ``keras-zoo finetune``'s names (model, head_hidden, ...).

        Options that do not apply (blocks unless recipe is two_phase) are left out.
        """
        values = {**DEFAULTS, **self.declare(hp)}
        for child, (parent, active, _) in CONDITIONS.items():
            if not active(values[parent]):
                del values[child]
        depth, width = values.pop("head_depth"), values.pop("head_width", None)
        if HEAD & self.params.keys():
            values["head_hidden"] = [width] * depth
        model = values.pop("backbone")
        values.setdefault("pretrained", resolve(model)[1] is not None)  # pretrained where the entry has weights
        return {"model": model, **values}

    def _check_conditions(self) -> None:
        for child, (parent, active, when) in CONDITIONS.items():
            if child in self.params and not any(active(v) for v in self.possible(parent)):
                raise SpaceError(f"{child} applies only when {when}, which this space never allows: "
                                 f"add such a value to {parent}, or drop {child}")

    def _check_pretrained(self) -> None:
        if "pretrained" in self.params and self.params["pretrained"].possible() == [True]:
            bare = [b for b in self.params["backbone"].values if resolve(b)[1] is None]
            if bare:
                raise SpaceError(f"pretrained=True but {', '.join(bare)} has no pretrained weights: "
                                 f"drop pretrained from the space to use weights where an entry has them")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param(name: str, spec: Any) -> Param:
    if isinstance(spec, Mapping):
        if set(spec) != {"choice"}:
            raise SpaceError(f"{name}: a mapping must be {{'choice': [values]}}, got {dict(spec)}")
        return _choice(name, spec["choice"])
    if isinstance(spec, (list, tuple)):
        ends = list(spec[:2])
        if len(spec) == 2 and all(map(_is_number, ends)):
            return _range(name, ends, log=False)
        if len(spec) == 3 and all(map(_is_number, ends)) and isinstance(spec[2], str):
            if spec[2] != "log":
                raise SpaceError(f"{name}: a 3-item range is (low, high, 'log'), got {spec[2]!r} as its third item")
            return _range(name, ends, log=True)
        return _choice(name, spec)
    return Param(name, "fixed", (_value(name, spec),))


def _choice(name: str, values: Any) -> Param:
    if not isinstance(values, (list, tuple)) or not values:
        raise SpaceError(f"{name}: the choice is empty: give at least one value")
    return Param(name, "choice", tuple(_value(name, v) for v in values))


def _range(name: str, ends: list, log: bool) -> Param:
    option = OPTIONS[name]
    kind = "log range" if log else "range"
    if option.type not in (int, float):
        raise SpaceError(f"{name}: {ends} reads as a {kind}, but {name} takes {option.rule}: give a list of "
                         f"three or more values, or {{'choice': {ends}}}")
    if option.type is int and not all(isinstance(v, int) for v in ends):
        raise SpaceError(f"{name}: a range of {name} needs integer ends, got {ends}")
    low, high = ends
    if low > high:
        raise SpaceError(f"{name}: the {kind} ({low}, {high}) has its low end above its high end; for a choice "
                         f"of two numbers write {{'choice': [{low}, {high}]}}")
    if log and low <= 0:
        raise SpaceError(f"{name}: a log range needs positive ends, got ({low}, {high})")
    return Param(name, "range", (_value(name, low), _value(name, high)), log)


def _value(name: str, value: Any) -> Any:
    """Check one value of an option; floats options take ints too (as floats)."""
    option = OPTIONS[name]
    ok_type = _is_number(value) if option.type is float else type(value) is option.type
    if not ok_type or not option.valid(value):
        raise SpaceError(f"{name}: {value!r} is not valid: {name} takes {option.rule}")
    if name == "backbone":
        try:
            resolve(value)
        except UnknownModelError as e:
            raise SpaceError(f"backbone: {e}") from None
    return float(value) if option.type is float else value


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-4 as a string (it wants 1.0e-4); read it as a number, as YAML 1.2 does."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def load_space(path: str | Path) -> Space:
    """Read a search space from a YAML file (ranges are lists: ``[1e-4, 1e-2, log]``).

    Example:
        >>> Path("space.yaml").write_text("backbone: [resnet_tiny, mlp_small]\\nlearning_rate: [1e-4, 1e-2, log]\\n")
        >>> load_space("space.yaml").params["learning_rate"].log
        True
    """
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"no search space file at {path}: give a YAML file mapping options to values")
    try:
        spec = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as e:
        raise SpaceError(f"{path} is not valid YAML: {e}") from None
    return Space(spec)
