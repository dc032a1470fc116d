"""Cached features vs training through the frozen backbone: the same head, the same data and epochs.

    python benchmarks/cached_features.py            # three rows, about 4 minutes on 2 cores
    python benchmarks/cached_features.py --quick    # a smoke run

Every run goes through ``zoo.finetune``; the cached one includes the feature extraction and the final
evaluation. Rows (random weights, random images, 10 classes, batch 32, 10 epochs, 200 validation images):

1. MobileNetV3Small at 96x96 on 1,000 images, ``recipe="linear_probe"`` (its ``ratio:`` line is the figure
   issue 16 asks for: at least 5, the physical limit being about the epoch count);
2. ResNet50 at 160x160 on 300 images, ``linear_probe``;
3. MobileNetV3Small as row 1 with ``recipe="two_phase"``: the head phase (to the end of its ``fit``, set-up
   and extraction included) should shrink to almost nothing; the fine-tuning phase costs the same either way.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402

ROWS = [("mobilenetv3_small", 96, 1000, "linear_probe"), ("resnet50", 160, 300, "linear_probe"),
        ("mobilenetv3_small", 96, 1000, "two_phase")]


class PhaseEnds(keras.callbacks.Callback):
    """When each phase's ``fit`` ends."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_end(self, logs=None):
        self.times.append(time.perf_counter())


def run(model_name: str, size: int, images: int, recipe: str, epochs: int, cached: bool) -> tuple[float, float]:
    """Seconds of the whole ``zoo.finetune`` call, and to the end of its first phase (set-up, the extraction of
    cached features and the phase's ``fit``)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (images, size, size, 3)).astype("float32")
    y = (np.arange(images) % 10).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    val = tf.data.Dataset.from_tensor_slices((x[:200], y[:200])).batch(32)
    keras.utils.set_random_seed(0)
    model = zoo.create_model(model_name, num_classes=10, pretrained=False, input_shape=(size, size))
    phases = PhaseEnds()
    start = time.perf_counter()
    zoo.finetune(model, (train, val), recipe=recipe, epochs=epochs, cache_features=cached, patience=None,
                 verbose=0, callbacks=[phases])
    return time.perf_counter() - start, phases.times[0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows = [(name, 32, 64, recipe) for name, _, _, recipe in ROWS[::2]] if args.quick else ROWS
    epochs = 2 if args.quick else args.epochs
    for name, size, images, recipe in rows:
        (plain, plain_head), (cached, cached_head) = (run(name, size, images, recipe, epochs, c) for c in (False, True))
        print(f"{name} at {size}x{size}, {images} images, {epochs} epochs, {recipe}")
        print(f"  through the frozen backbone: {plain:.1f} s; cached features (extraction included): {cached:.1f} s")
        print(f"  ratio: {plain / cached:.1f}")
        if recipe == "two_phase":
            print(f"  head phase (set-up and extraction included): {plain_head:.1f} s through the backbone, "
                  f"{cached_head:.1f} s on cached features; ratio: {plain_head / cached_head:.1f}")


if __name__ == "__main__":
    main()
