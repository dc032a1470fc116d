"""Recipes as data: each recipe is a list of typed phases saying what trains, how long, at what rate.

Example:
    >>> [(p.name, p.trains, p.blocks) for p in plan("two_phase", 6, blocks=2, n_blocks=4)]
    [('head', 'head', 0), ('finetune', 'top', 2)]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from zoo.config import MIN_EPOCHS, RECIPES
from zoo.errors import InvalidArgumentError

__all__ = ["RECIPES", "Phase", "plan"]


@dataclass(frozen=True)
class Phase:
    """One phase of a recipe.

    ``trains``: "head" (the backbone frozen), "top" (the top ``blocks`` groups below the head, and the
    head), "all", or "lora" (adapters and head). ``lr_scale`` multiplies the base learning rate;
    ``spread`` spreads discriminative rates over the trainable groups (10x from bottom to top).
    """

    name: str
    epochs: int
    trains: Literal["head", "top", "all", "lora"]
    blocks: int = 0
    lr_scale: float = 1.0
    spread: bool = False

    def describe(self) -> str:
        return f"the top {self.blocks} blocks and the head" if self.trains == "top" else self.trains


def plan(recipe: str, epochs: int, blocks: int, n_blocks: int) -> list[Phase]:
    """The phases of a recipe for ``epochs`` epochs in all, on a model with ``n_blocks`` groups below its head.

    Example:
        >>> [p.name for p in plan("gradual", 4, blocks=2, n_blocks=4)]
        ['head', 'top1', 'top2', 'top3']
    """
    if recipe not in RECIPES:
        raise InvalidArgumentError(f"unknown recipe '{recipe}': use one of {', '.join(RECIPES)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgumentError(f"epochs must be a positive integer, got {epochs!r}")
    if epochs < MIN_EPOCHS.get(recipe, 1):
        raise InvalidArgumentError(f"recipe '{recipe}' needs at least {MIN_EPOCHS[recipe]} epochs (head first, "
                                   f"then more)")
    if recipe == "two_phase" and not 1 <= blocks <= n_blocks:
        raise InvalidArgumentError(f"blocks={blocks}: the backbone has {n_blocks} blocks; use 1..{n_blocks}")
    if recipe == "linear_probe":
        return [Phase("head", epochs, "head")]
    if recipe == "full":
        return [Phase("full", epochs, "all")]
    if recipe == "lora":
        return [Phase("lora", epochs, "lora")]
    if recipe == "two_phase":
        head = max(1, epochs // 3)
        return [Phase("head", head, "head"), Phase("finetune", epochs - head, "top", blocks, 0.1, True)]
    # gradual (ULMFiT): one more group per epoch, the last phase takes the remaining epochs
    phases = [Phase("head", 1, "head")] + [Phase(f"top{k}", 1, "top", k, 0.5, True) for k in range(1, n_blocks + 1)]
    phases = phases[:epochs]
    last = phases[-1]
    return phases[:-1] + [Phase(last.name, epochs - len(phases) + 1, last.trains, last.blocks, last.lr_scale,
                                last.spread)]
