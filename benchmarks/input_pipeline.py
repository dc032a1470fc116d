"""zoo.data.load on a folder of JPEGs against keras.utils.image_dataset_from_directory.

    python benchmarks/input_pipeline.py [--images 2000] [--size 160] [--batch-size 32] [--repeats 3]

Writes ~2,000 random 200x200 JPEGs in 10 class folders to a temporary folder and resizes them to
160x160 in both pipelines. Prints images per second for a full epoch of each after a warm-up epoch
(ours has filled its cache by then; Keras' pipeline has none), the ratio, the first (cold) epoch of
each, and the time of a training step fed by our pipeline over one fed from in-memory tensors
(goal: ~1.0). Timed passes alternate between the two sides; each figure is the best of --repeats,
since a shared machine adds noise.
"""

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from zoo.data import load


def write_jpegs(root: Path, count: int, classes: int = 10, side: int = 200) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        blobs = Image.fromarray(rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8))
        noise = rng.integers(-20, 20, (side, side, 3))
        image = np.clip(np.asarray(blobs.resize((side, side), Image.BILINEAR)) + noise, 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)


def images_per_second(ds) -> float:
    start, n = time.perf_counter(), 0
    for images, _ in ds:
        n += int(images.shape[0])
    return n / (time.perf_counter() - start)


def seconds_per_step(model: keras.Model, steps: int, data, **fit_kwargs) -> float:
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0, **fit_kwargs)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size, batch = (args.size, args.size), args.batch_size

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root, args.images)
        start = time.perf_counter()
        ours, _, _, info = load(root, image_size=size, batch_size=batch, val_fraction=0, test_fraction=0)
        setup = time.perf_counter() - start
        keras_ds = keras.utils.image_dataset_from_directory(root, image_size=size, batch_size=batch, seed=0,
                                                            verbose=False)
        ours_cold, keras_cold = images_per_second(ours), images_per_second(keras_ds)  # also the warm-up
        rates = [(images_per_second(ours), images_per_second(keras_ds)) for _ in range(args.repeats)]
        ours_rate, keras_rate = map(max, zip(*rates))

        x, y = map(np.concatenate, zip(*((a.numpy(), b.numpy()) for a, b in ours)))
        model = keras.Sequential([
            keras.Input((*size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(info.num_classes),
        ])
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        steps = -(-len(y) // batch)
        feeds = {
            "memory": lambda: seconds_per_step(model, steps, x, y=y, batch_size=batch),
            "ours": lambda: seconds_per_step(model, steps, ours, shuffle=False),  # ours shuffles itself
        }
        for feed in feeds.values():
            feed()  # warm-up: tracing
        times = [(feeds["ours"](), feeds["memory"]()) for _ in range(args.repeats)]
        ours_step, memory_step = map(min, zip(*times))

    print(f"images: {info.num_examples['train']} JPEGs 200x200 -> {args.size}x{args.size}, batch {batch}")
    print(f"ours setup (scan + decode check, once per load): {setup:.2f} s")
    print(f"ours: {ours_rate:.0f} img/s")
    print(f"keras: {keras_rate:.0f} img/s")
    print(f"ratio: {ours_rate / keras_rate:.2f}")
    print(f"first epoch (cold) ours: {ours_cold:.0f} img/s, keras: {keras_cold:.0f} img/s, "
          f"ratio: {ours_cold / keras_cold:.2f}")
    print(f"train step fed by ours: {ours_step * 1000:.1f} ms, "
          f"from in-memory tensors: {memory_step * 1000:.1f} ms")
    print(f"train step ratio (ours / in-memory): {ours_step / memory_step:.2f}")


if __name__ == "__main__":
    main()
