"""XLA (``jit_compile``) on and off, on this machine's devices: time to the first epoch's end and per epoch.

    python benchmarks/xla.py            # about 5 minutes on 2 cores
    python benchmarks/xla.py --quick    # a smoke run

Each model (random weights) fine-tunes with ``zoo.finetune(recipe="full")`` on 1,024 random images at its
input size, batch 32, 3 epochs, ``jit_compile`` True and False in turn. "first epoch" runs from the call to
the end of epoch 1 (tracing and compiling included); "per epoch" is the median of the later epochs. The
ratios are off / on: above 1, XLA is faster.

Measured on the 2-core CPU machine (TensorFlow 2.21, Keras 3.15), seconds:

    model                         first epoch off / on        per epoch off / on
    resnet_tiny 32x32           13.9 /  16.4  (0.85)       7.8 /   8.9  (0.88)
    mobilenetv3_small 96x96     18.7 /  47.6  (0.39)       5.0 /  26.9  (0.19)
    vit_pico_p4 32x32           11.6 /  16.9  (0.69)       3.7 /   3.2  (1.18)

So on a CPU XLA does not pay back its compile within a short fine-tune (slower per epoch for the two CNNs,
1.2x faster for the ViT after a first epoch 1.5x slower). Keras 3.15's own ``jit_compile="auto"``, which
``FinetuneConfig.jit_compile="auto"`` hands on, already leaves XLA off on CPU-only machines (and under
tf.distribute): the numbers confirm that choice, so "auto" keeps Keras's meaning.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402

ROWS = [("resnet_tiny", 32), ("mobilenetv3_small", 96), ("vit_pico_p4", 32)]


class EpochEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter())


def run(name: str, size: int, images: int, epochs: int, jit: bool) -> tuple[float, float]:
    """Seconds to the first epoch's end, and the median of the later epochs."""
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 256, (images, size, size, 3), dtype=np.uint8), np.arange(images) % 10)
    keras.utils.set_random_seed(0)
    model = zoo.create_model(name, num_classes=10, pretrained=False, input_shape=(size, size))
    ends = EpochEnds()
    start = time.perf_counter()
    zoo.finetune(model, data, recipe="full", epochs=epochs, jit_compile=jit, patience=None, verbose=0,
                 data_options={"val_fraction": 0.0, "test_fraction": 0.0}, callbacks=[ends])
    times = [start, *ends.times]
    return times[1] - start, statistics.median(b - a for a, b in zip(times[1:], times[2:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    images, epochs = (128, 2) if args.quick else (1024, 3)
    rows = ROWS[:1] if args.quick else ROWS
    print(f"{'model':<24}{'first epoch off / on':>26}{'per epoch off / on':>26}")
    for name, size in rows:
        (first_off, epoch_off), (first_on, epoch_on) = (run(name, size, images, epochs, jit) for jit in (False, True))
        print(f"{name + f' {size}x{size}':<24}{first_off:8.1f} / {first_on:5.1f}  ({first_off / first_on:.2f})"
              f"{epoch_off:10.1f} / {epoch_on:5.1f}  ({epoch_off / epoch_on:.2f})")


if __name__ == "__main__":
    main()
