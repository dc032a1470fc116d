"""Discriminative learning rates and schedules that survive ``.keras`` save/load, XLA and mixed precision.

Keras optimizers have no parameter groups, so each built-in optimizer gets a subclass whose
``update_step`` multiplies the learning rate per variable, keyed on the layer name in the
variable's path. (``MultiOptimizer`` breaks loading; scaling gradients does nothing under Adam.)

Example:
    >>> opt = make_optimizer("adam", 1e-3, multipliers={"conv1_conv": 0.1})
    >>> model.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
"""
from __future__ import annotations

import math

import keras

from zoo import compat, config
from zoo.errors import InvalidArgumentError

OPTIMIZERS = {name: getattr(keras.optimizers, cls) for name, cls in config.OPTIMIZERS.items()}


class _LRMultipliers:
    """Mixin: scale the learning rate of each variable by its layer's multiplier (default 1)."""

    def __init__(self, *args, multipliers: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.multipliers = dict(multipliers or {})

    def multiplier(self, path: str) -> float:
        """The multiplier for a variable path: its outermost layer name with one ("stage_0/downsample/norm/gamma"
        takes stage_0's: a layer's sublayers may share names with other layers, as keras-hub's ``norm`` do)."""
        for part in path.split("/")[:-1]:
            if part in self.multipliers:
                return self.multipliers[part]
        return 1.0

    def build(self, variables):
        super().build(variables)
        self._scales = [self.multiplier(v.path) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        # the TF backend passes the raw tf.Variable here, so look the scale up by index
        scale = self._scales[compat.variable_index(self, variable)]
        if scale != 1.0:
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers}


def _with_multipliers(base: type) -> type:
    doc = f"{base.__name__} with per-layer learning-rate multipliers."
    cls = type(f"Discriminative{base.__name__}", (_LRMultipliers, base), {"__doc__": doc})
    return keras.saving.register_keras_serializable(package="keras_zoo")(cls)


DISCRIMINATIVE = {name: _with_multipliers(base) for name, base in OPTIMIZERS.items()}


@keras.saving.register_keras_serializable(package="keras_zoo")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """fastai's one-cycle: cosine up from ``max_lr / div`` to ``max_lr``, then down to ``max_lr / final_div``.

    Example:
        >>> OneCycle(1e-3, total_steps=100)(50)
    """

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.25, div: float = 25.0,
                 final_div: float = 1e4):
        self.max_lr, self.total_steps, self.pct_start = max_lr, total_steps, pct_start
        self.div, self.final_div = div, final_div

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = max(1.0, self.total_steps * self.pct_start)
        down = max(1.0, self.total_steps - up)
        start, end = self.max_lr / self.div, self.max_lr / self.final_div

        def cos(a, b, t):
            return b + (a - b) / 2 * (1 + keras.ops.cos(math.pi * keras.ops.clip(t, 0.0, 1.0)))

        return keras.ops.where(step < up, cos(start, self.max_lr, step / up),
                               cos(self.max_lr, end, (step - up) / down))

    def get_config(self):
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div": self.div, "final_div": self.final_div}


def schedule(kind: str | None, learning_rate: float, total_steps: int, warmup_steps: int = 0):
    """A learning rate or schedule: ``None``/"constant", "cosine" or "one_cycle". The first two warm up
    linearly from 0 over ``warmup_steps`` (one_cycle has its own warm-up)."""
    if learning_rate <= 0:
        raise InvalidArgumentError(f"learning rates must be positive, got {learning_rate}")
    if kind not in (None, *config.SCHEDULES):
        raise InvalidArgumentError(f"unknown schedule '{kind}': use {', '.join(config.SCHEDULES)}")
    if kind == "one_cycle":
        return OneCycle(learning_rate, max(1, total_steps))
    warmup_steps = min(warmup_steps, total_steps - 1)
    if kind in (None, "constant") and not warmup_steps:
        return learning_rate
    # alpha: the fraction of the rate left at the end; 1.0 keeps a constant rate after the warm-up
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else learning_rate, max(1, total_steps - warmup_steps),
        alpha=0.0 if kind == "cosine" else 1.0, warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps)


def make_optimizer(name: str = "adam", learning_rate=1e-3, *, multipliers: dict[str, float] | None = None,
                   **kwargs) -> keras.optimizers.Optimizer:
    """A new optimizer (name from OPTIMIZERS) with optional per-layer learning-rate multipliers."""
    if name not in DISCRIMINATIVE:
        raise InvalidArgumentError(f"unknown optimizer '{name}': use one of {', '.join(DISCRIMINATIVE)}")
    bad = {k: v for k, v in (multipliers or {}).items() if not v > 0}
    if bad:
        raise InvalidArgumentError(f"learning-rate multipliers must be positive, got {bad}")
    if isinstance(learning_rate, (int, float)) and learning_rate <= 0:
        raise InvalidArgumentError(f"learning rates must be positive, got {learning_rate}")
    return DISCRIMINATIVE[name](learning_rate=learning_rate, multipliers=multipliers, **kwargs)


def group_multipliers(groups, *, lr_slice: tuple[float, float] | None = None,
                      layer_decay: float | None = None) -> dict[str, float]:
    """Per-layer multipliers (relative to the top group's rate) for groups ordered bottom to top.

    ``lr_slice=(lo, hi)``: fastai's geometric spread from ``lo`` at the bottom to ``hi`` at the top.
    ``layer_decay=d``: timm's layer-wise decay, ``d ** (groups above)``.

    Example:
        >>> group_multipliers(groups(model), lr_slice=(1e-5, 1e-3))
    """
    n = len(groups)
    if lr_slice is not None and layer_decay is not None:
        raise InvalidArgumentError("give lr_slice or layer_decay, not both")
    if lr_slice is not None:
        lo, hi = lr_slice
        if not 0 < lo <= hi:
            raise InvalidArgumentError(f"lr_slice=(lo, hi) needs 0 < lo <= hi, got {lr_slice}")
        scales = [(lo / hi) ** ((n - 1 - i) / max(1, n - 1)) for i in range(n)]
    elif layer_decay is not None:
        if not 0 < layer_decay <= 1:
            raise InvalidArgumentError(f"layer_decay must be in (0, 1], got {layer_decay}")
        scales = [layer_decay ** (n - 1 - i) for i in range(n)]
    else:
        return {}
    return {layer.name: scale for group, scale in zip(groups, scales)
            for top in group.layers for layer in _named(top) if scale != 1.0}


def _named(layer):
    yield layer
    for sub in getattr(layer, "layers", []):
        yield from _named(sub)
