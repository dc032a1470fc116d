"""How well do pretrained features transfer to new classes? The README's table, on scikit-learn's digits.

Backbones (resnet_tiny at 16x16) pretrained on digits 0-4 are measured on digits 5-9, against raw pixels and
random initialisation: kNN (DINO's, k=20) and a linear probe on frozen features, with all training labels and
with 5 per class, then a fine-tune (the bundled task's recipe: full, 20 epochs) at 2 and 5 labels per class.
Digits 5-9 are split once (seed 0): 10% validation, 50% test (about 450 images), the rest for training.

    python scripts/transfer_table.py supervised=zoo/pretrained/resnet_tiny_digits.weights.h5 \\
        simclr=zoo/pretrained/resnet_tiny_simclr_digits.weights.h5
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

SPLIT = {"classes": [5, 6, 7, 8, 9], "test_fraction": 0.5}
SIZE = (16, 16)


def frozen_scores(features, labels, k: int = 20) -> list[float]:
    """kNN and linear-probe test accuracy with all training labels and with 5 per class."""
    import zoo

    (train_x, test_x), (train_y, test_y) = features, labels
    few = np.concatenate([np.flatnonzero(train_y == c)[:5] for c in np.unique(train_y)])
    scores = []
    for x, y in ((train_x, train_y), (train_x[few], train_y[few])):
        scores.append(zoo.knn_accuracy(x, y, test_x, test_y, k=min(k, len(y))))
    for x, y in ((train_x, train_y), (train_x[few], train_y[few])):
        scores.append(zoo.linear_probe(x, y, test_x, test_y).accuracy)
    return scores


def finetuned(pretrained, per_class: int) -> float:
    import keras

    import zoo
    from zoo.jobs import BUNDLED_TASK

    keras.utils.set_random_seed(0)
    model = zoo.create_model("resnet_tiny", num_classes=5, pretrained=pretrained, input_shape=SIZE)
    options = {k: BUNDLED_TASK[k] for k in ("recipe", "epochs", "batch_size", "learning_rate", "patience")}
    result = zoo.finetune(model, "digits", data_options={**SPLIT, "per_class": per_class}, verbose=0, **options)
    return result.metrics["test_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", help="name=path of a resnet_tiny backbone .weights.h5")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import zoo
    from zoo.data import load
    from zoo.text import table

    train, _, test, _ = load("digits", image_size=SIZE, shuffle=False, **SPLIT)
    pixels = [np.concatenate([x.numpy().reshape(len(x), -1) for x, _ in split]) for split in (train, test)]
    labels = [np.concatenate([y.numpy() for _, y in split]) for split in (train, test)]
    rows = [["raw pixels", *frozen_scores(pixels, labels), None, None]]
    for name, pretrained in [("random init", False), *(c.split("=", 1) for c in args.checkpoints)]:
        model = zoo.create_model("resnet_tiny", pretrained=pretrained, input_shape=SIZE)
        features = [zoo.embed(model, "digits", split=s, data_options=SPLIT).features for s in ("train", "test")]
        rows.append([name, *frozen_scores(features, labels), finetuned(pretrained, 2), finetuned(pretrained, 5)])
    print(f"digits 5-9: {len(labels[0])} training and {len(labels[1])} test images, 16x16")
    print(table(rows, ["features", "kNN all", "kNN 5/class", "linear all", "linear 5/class", "fine-tune 2/class",
                       "fine-tune 5/class"], ".3f"))


if __name__ == "__main__":
    main()
