"""Hyperparameter search over zoo models with keras-tuner: ``tuning.search``.

The space mixes a choice of backbone (the pretrained ``resnet_tiny.digits`` and an MLP trained from
scratch), the recipe and log-uniform learning rates; random search tries ``max_trials`` of them on
scikit-learn's digits 0-9 at 16x16, fine-tuning each with ``zoo.finetune``. Trials that train only a
head over a frozen backbone share that backbone's features. The search writes trials.csv,
objective.png and best.yaml (a config for ``keras-zoo finetune --config``) under ``--out``; run it
again with the same ``--out`` and it resumes instead of repeating finished trials.

Run:  python examples/hyperparameter_search.py [--out DIR] [--quick]
"""
import argparse
from pathlib import Path

import tuning

parser = argparse.ArgumentParser(description="random search over zoo backbones and fine-tuning options")
parser.add_argument("--out", default="hyperparameter_search_out", help="the search's directory")
parser.add_argument("--quick", action="store_true", help="2 trials of 2 epochs instead of 8 of 6")
args = parser.parse_args()

space = {
    "backbone": ["resnet_tiny", "mlp_small"],
    "recipe": ["linear_probe", "two_phase"],
    "learning_rate": (1e-4, 1e-2, "log"),
    "dropout": (0.0, 0.5),
}
result = tuning.search(data="digits", space=space, tuner="random", max_trials=2 if args.quick else 8,
                       epochs=2 if args.quick else 6, image_size=(16, 16), directory=args.out, verbose=0)

print(result.table())
print(f"\n{len(result.trials)} trials; the best by {result.objective}, as {result.files['best']}:")
print(Path(result.files["best"]).read_text())
print(f"all trials in {result.files['trials']}, their scores plotted in {result.files['plot']}")
