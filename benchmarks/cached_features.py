"""Cached features vs training through the frozen backbone: the same head, 10 epochs, the same data.

    python benchmarks/cached_features.py            # MobileNetV3Small at 96x96 on 1,000 images
    python benchmarks/cached_features.py --quick    # a smoke run

Both runs go through ``zoo.finetune(recipe="linear_probe")``; the cached one includes the feature
extraction. Prints the wall time of each and the ratio.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilenetv3_small")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.images, args.epochs, args.size = 64, 2, 32
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.images, args.size, args.size, 3)).astype("float32")
    y = (np.arange(args.images) % 10).astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    val = tf.data.Dataset.from_tensor_slices((x[:200], y[:200])).batch(32)
    times = {}
    for cached in (False, True):
        keras.utils.set_random_seed(0)
        model = zoo.create_model(args.model, num_classes=10, pretrained=False, input_shape=(args.size, args.size))
        start = time.perf_counter()
        zoo.finetune(model, (train, val), recipe="linear_probe", epochs=args.epochs, cache_features=cached,
                     patience=None, verbose=0)
        times[cached] = time.perf_counter() - start
    print(f"{args.model} at {args.size}x{args.size}, {args.images} images, {args.epochs} epochs")
    print(f"through the frozen backbone: {times[False]:.1f} s")
    print(f"cached features (extraction included): {times[True]:.1f} s")
    print(f"ratio: {times[False] / times[True]:.1f}")


if __name__ == "__main__":
    main()
