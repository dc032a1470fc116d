"""Training: freezing verbs, discriminative learning rates, recipes, cached features, LoRA, lr_find.

``zoo.finetune`` is ``zoo.training.finetune`` (the function, in ``loop.py``); recipes are data (``recipes.py``).

Example:
    >>> zoo.freeze(model); zoo.unfreeze(model, blocks=2)
    >>> result = zoo.finetune(model, data="digits", recipe="two_phase", epochs=6)
"""
from zoo.training.groups import freeze, freeze_to, groups, trainable_summary, unfreeze
from zoo.training.loop import FinetuneResult, TrainingDivergedError, finetune
from zoo.training.lora import apply_lora
from zoo.training.lr_find import lr_find
from zoo.training.optim import group_multipliers, make_optimizer, schedule
from zoo.training.recipes import RECIPES, Phase, plan

__all__ = ["RECIPES", "FinetuneResult", "Phase", "TrainingDivergedError", "apply_lora", "finetune", "freeze",
           "freeze_to", "group_multipliers", "groups", "lr_find", "make_optimizer", "plan", "schedule",
           "trainable_summary", "unfreeze"]
