"""Fine-tuning: freezing verbs, discriminative learning rates, recipes, cached features, LoRA, lr_find.

``zoo.finetune`` is this package and also the function: ``zoo.finetune(model, data, recipe=...)``.

Example:
    >>> zoo.freeze(model); zoo.unfreeze(model, blocks=2)
    >>> result = zoo.finetune(model, data="digits", recipe="two_phase", epochs=6)
"""
import sys
import types

from zoo.finetune.groups import freeze, freeze_to, groups, trainable_summary, unfreeze
from zoo.finetune.lora import apply_lora
from zoo.finetune.lr_find import lr_find
from zoo.finetune.optim import group_multipliers, make_optimizer, schedule
from zoo.finetune.recipes import RECIPES, FinetuneResult, finetune, plan

__all__ = ["RECIPES", "FinetuneResult", "apply_lora", "finetune", "freeze", "freeze_to", "group_multipliers",
           "groups", "lr_find", "make_optimizer", "plan", "schedule", "trainable_summary", "unfreeze"]


class _CallableModule(types.ModuleType):
    """Lets ``zoo.finetune(...)`` call the function once ``zoo.finetune`` the package is imported."""

    def __call__(self, *args, **kwargs):
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
