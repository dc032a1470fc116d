"""Layer 3: hyperparameter search over zoo models with keras-tuner."""
