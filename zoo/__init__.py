"""keras-zoo: a model zoo and transfer-learning package on Keras 3.

Listing and describing the catalog never imports TensorFlow; the names that need it are imported
on first use.

Example:
    >>> import zoo
    >>> zoo.list_models("efficientnet_b0*")
    ['efficientnet_b0.imagenet']
    >>> model = zoo.create_model("efficientnet_b0.imagenet", num_classes=5)
"""
import importlib

from zoo.errors import ZooError
from zoo.registry import families, list_models, model_info

__version__ = "0.1.0"

_LAZY = {"create_model": "zoo.factory", "load_model": "zoo.factory", "entry_of": "zoo.backbone",
         "audio_model": "zoo.audio",
         "save_backbone_weights": "zoo.backbone", "FinetuneConfig": "zoo.config", "RunConfig": "zoo.config",
         **{name: "zoo.training" for name in ("finetune", "freeze", "unfreeze", "freeze_to", "trainable_summary",
                                             "lr_find", "apply_lora")},
         **{name: "zoo.represent.features" for name in ("embed", "intermediates")},
         **{name: "zoo.represent.probes" for name in ("knn_accuracy", "linear_probe")},
         "cka": "zoo.represent.similarity", "pretrain": "zoo.represent.pretraining",
         **{name: "zoo.represent.saliency" for name in ("gradcam", "attention_rollout", "integrated_gradients")}}
_SUBMODULES = {"data", "weights", "factory", "registry", "errors", "training", "runs", "distribute", "config",
               "backbone", "evaluation", "represent"}

__all__ = ["FinetuneConfig", "RunConfig", "ZooError", "apply_lora", "attention_rollout", "audio_model", "cka",
           "create_model",
           "embed", "entry_of", "families", "finetune", "freeze", "freeze_to", "gradcam", "integrated_gradients",
           "intermediates", "knn_accuracy", "linear_probe", "list_models", "load_model", "lr_find", "model_info",
           "pretrain", "save_backbone_weights", "trainable_summary", "unfreeze"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"zoo.{name}")
    raise AttributeError(f"module 'zoo' has no attribute '{name}'")
