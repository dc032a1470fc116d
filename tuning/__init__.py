"""Layer 3: hyperparameter search over zoo models with keras-tuner.

Example:
    >>> import tuning
    >>> result = tuning.search("digits", {"backbone": ["resnet_tiny", "mlp_small"],
    ...                                   "learning_rate": (1e-4, 1e-2, "log"), "dropout": (0.0, 0.5)},
    ...                        tuner="hyperband", max_trials=20, directory="tuning_runs/digits")
    >>> result.best_config, print(result.table())
"""
from tuning.hypermodel import FeatureCache, TrialData, ZooHyperModel
from tuning.results import SearchResult
from tuning.search import OBJECTIVES, ORACLES, SearchError, ZooTuner, search
from tuning.space import BERT_GRID, Space, SpaceError, load_space

__all__ = ["BERT_GRID", "OBJECTIVES", "ORACLES", "FeatureCache", "SearchError", "SearchResult", "Space", "SpaceError",
           "TrialData", "ZooHyperModel", "ZooTuner", "load_space", "search"]
