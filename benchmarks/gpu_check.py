"""Training throughput on GPUs: float32, mixed_float16 and mixed_float16 with XLA, on one device and mirrored.

    python benchmarks/gpu_check.py [--model resnet50] [--size 224] [--batch-size 64] [--steps 50]
    python benchmarks/gpu_check.py --quick   # tiny settings: a smoke test that runs on CPU

Fine-tunes a catalog model (random weights, a 10-class head; the same random batch every
step, prefetched to the devices by tf.distribute) with SGD, six times in one process: float32,
mixed_float16, and mixed_float16 with XLA (``jit_compile=True``), each under `one_device` and
under `mirrored` over every GPU. `--batch-size` is per replica, so the mirrored runs' global batch
grows with the GPUs. Each run traces (and compiles) and warms up for `--warmup` steps, then times
`--steps` steps. Prints images per second of each and its ratio to float32 on one device (the
published reference on an A100: mixed precision is 2.6 to 2.9x float32 for ResNet-50).
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import zoo
from zoo import distribute


def images_per_second(strategy_name: str, policy: str, xla: bool, args: argparse.Namespace) -> float:
    keras.mixed_precision.set_global_policy(policy)
    keras.backend.clear_session()
    strategy = distribute.strategy(strategy_name)
    plan = distribute.batch_plan(strategy, per_replica_batch_size=args.batch_size, learning_rate=0.01)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (plan.global_batch_size, args.size, args.size, 3)).astype("float32")
    labels = rng.integers(0, 10, plan.global_batch_size)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    with strategy.scope():
        model = zoo.create_model(args.model, num_classes=10, pretrained=False, input_shape=(args.size, args.size))
        model.compile(keras.optimizers.SGD(plan.learning_rate, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=xla)
    model.fit(data, steps_per_epoch=args.warmup, shuffle=False, verbose=0)  # traces (and compiles) the step
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=args.steps, shuffle=False, verbose=0)  # ends reading the loss: steps done
    rate = args.steps * plan.global_batch_size / (time.perf_counter() - start)
    print(f"{strategy_name:>10} {policy:>13}{' + XLA' if xla else '      '}: {rate:8.1f} images/s  "
          f"({plan.describe()})", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64, help="per replica")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="resnet_tiny at 32x32, batch 8, 3 steps")
    args = parser.parse_args()
    if args.quick:
        args.model, args.size, args.batch_size, args.steps, args.warmup = "resnet_tiny", 32, 8, 3, 1

    gpus = tf.config.list_logical_devices("GPU")
    print(f"{args.model} at {args.size}x{args.size}, {args.steps} steps; GPUs: {len(gpus) or 'none (CPU)'}")
    rates = {(strategy, policy, xla): images_per_second(strategy, policy, xla, args)
             for strategy in ("one_device", "mirrored")
             for policy, xla in (("float32", False), ("mixed_float16", False), ("mixed_float16", True))}
    keras.mixed_precision.set_global_policy("float32")
    baseline = rates["one_device", "float32", False]
    for (strategy, policy, xla), rate in list(rates.items())[1:]:
        print(f"ratio {strategy}+{policy}{'+XLA' if xla else ''} / one_device+float32: {rate / baseline:.2f}x")


if __name__ == "__main__":
    main()
