"""Pretrain resnet_tiny with SimCLR on scikit-learn's digits 0-4 (16x16, every image, labels ignored) and save its
backbone, as the bundled supervised checkpoint is made (``zoo.jobs.pretrain``) but without labels.

Run from the project root:

    python scripts/pretrain_simclr_digits.py --out resnet_tiny_simclr_digits.weights.h5

The file loads with ``zoo.create_model("resnet_tiny", pretrained=OUT, input_shape=(16, 16))``. Seeded, with
TensorFlow's deterministic ops: the same command writes the same weights on the same machine.
"""
import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = [0, 1, 2, 3, 4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="resnet_tiny_simclr_digits.weights.h5", help="the backbone weights file")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None, help="checkpoint every epoch there (and resume)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import keras
    import tensorflow as tf

    import zoo
    from zoo.weights import file_hash

    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(args.seed)
    model = zoo.create_model("resnet_tiny", pretrained=False, input_shape=(16, 16))
    started = time.monotonic()
    result = zoo.pretrain(model, "digits", method="simclr", epochs=args.epochs, seed=args.seed, run_dir=args.run_dir,
                          data_options={"classes": CLASSES})
    zoo.save_backbone_weights(model, args.out)
    logging.info("SimCLR on digits %s: %d epochs, loss %.4f -> %.4f, %.1f s; backbone in %s (sha256 %s)", CLASSES,
                 args.epochs, result.history[0]["loss"], result.history[-1]["loss"], time.monotonic() - started,
                 args.out, file_hash(args.out))


if __name__ == "__main__":
    main()
