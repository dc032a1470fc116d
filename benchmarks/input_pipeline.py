"""zoo.data.load on a folder of JPEGs against the pipeline the Keras tutorials recommend,
``keras.utils.image_dataset_from_directory(...).cache().prefetch(AUTOTUNE)``.

    python benchmarks/input_pipeline.py [--quick] [--repeats 5]

Two rows, each resized to 160x160, batch 32:
- camera: 500 camera-sized JPEGs (1,000 to 2,000 pixels a side, about 2 bits a pixel, as users' photos are);
- small: 2,000 JPEGs of 200x200.
For each row it prints the time to the end of the first (cold) epoch, set-up included (ours scans the
folder and decodes every file once while checking it, held in memory as uint8; Keras lists the folder
and decodes in its first epoch), to the end of the third, and a warm epoch (both from memory), with the
ratios (Keras time / ours: above 1, ours is faster), twice: in a new process for each side and repeat (what a
user's first load costs, the first tracing of its functions and tf.data's thread pools included), then in
this process once each side has loaded before (the pipelines' own work). Then the memory an epoch adds to
each, measured in a new process. Each first epoch is cold (the files themselves sit in the OS's page cache for
both); each figure is the best of --repeats, since a shared machine adds noise (on 2026-12-06 about one run
in four, on either side, took about a second longer at the same CPU time; on ours that was tf.data's
autotuning leaving every core idle for a second of the decoding pass, which ``load`` now runs untuned: see
below). The small row also times a training step fed by our pipeline against one fed from in-memory
tensors (goal ~1.0: training is not input-bound).

The camera row's ceiling (measured 2026-12-02, 2 cores): decoding the 500 files alone takes 2.0 s at full
scale and 1.7 s at 1/4 scale in TensorFlow (1.65 s with Pillow's ``draft``, two threads), because at
2 bits a pixel most of a JPEG decoder's work is the entropy decoding, which DCT scaling cannot skip. Measured
again 2026-12-06 as CPU time, one thread, 150 of the files: 1.48 s at full scale, 1.18 at 1/2, 1.07 at 1/4,
0.90 at 1/8 (``fancy_upscaling=False`` and ``dct_method="INTEGER_FAST"`` change nothing). Ours decodes half
the files at 1/4 and half at 1/8 (never below 160 a side), so its first epoch costs about 0.67 of Keras's
CPU time.

The rest is set-up and the later epochs (measured 2026-12-07): ours traces its decoding function (0.07 s),
starts the pass (0.03 s), decodes (1.55 to 1.65 s, both cores busy) and builds the splits' pipelines
(0.04 s); Keras's first epoch takes 2.25 to 2.55 s. Four changes of 2026-12-07: the pipelines' functions
are traced as written, without AutoGraph (its rewriting, which changed nothing in them, cost about 0.4 s of a
user's first load: 2.34 to 2.48 s against 1.95 to 2.00 s, three new processes each); one decoding per file gives both
its pixels and its size (a second function read the header before); a grayscale file turns to RGB by a tile
rather than a branch (less to trace); and the pass runs with tf.data's autotuning off, one call per core
(with autotuning on, about one pass in three sat a second with every core idle, at the same CPU time; with it
off, none in 36). Each later epoch of ours gathers and casts the uint8 images to float32 in one map (0.02 s
for 500 images, in a new order) where Keras hands out the float32 batches it cached (0.004 s): the price of a
cache 4x smaller and of reshuffling, which is why the three-epoch ratio sits a little below the first epoch's.
(The tutorials' ``.cache()`` comes after the shuffle that ``image_dataset_from_directory`` does, so Keras's
side gives every later epoch the first one's batches in the first one's order: checked 2026-12-07.)
Since the second review of 2026-12-07 the splits are rows of the one tensor of decoded images (validation and
test were copied out of it: 0.04 s of a new process's set-up, and ours' cache 130 MiB became 110).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from zoo.data import load

SIZE, BATCH = (160, 160), 32
ROWS = {  # name: (images, smallest side, largest side)
    "camera": (500, 1000, 2000),
    "small": (2000, 200, 200),
}


def write_jpegs(root: Path, count: int, low: int, high: int, classes: int = 10) -> None:
    """Smooth colour blobs with grain, each of a random size between low and high pixels a side: about 2 bits
    a pixel at quality 90, as a 12-megapixel phone photo of 3 MB (grain costs the decoder most: see
    ``bits_per_pixel``)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = rng.integers(low, high + 1, 2)
        blobs = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
        grain = rng.integers(-12, 12, (h, w, 3))
        image = np.clip(np.asarray(blobs) + grain, 0, 255).astype(np.uint8)
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.jpg", quality=90)


def bits_per_pixel(root: Path) -> float:
    files = list(root.rglob("*.jpg"))
    pixels = sum(np.prod(Image.open(f).size) for f in files)
    return sum(f.stat().st_size for f in files) * 8 / pixels


def ours(root: Path) -> tf.data.Dataset:
    return load(root, image_size=SIZE, batch_size=BATCH, val_fraction=0, test_fraction=0)[0]


def keras_pipeline(root: Path) -> tf.data.Dataset:
    ds = keras.utils.image_dataset_from_directory(root, image_size=SIZE, batch_size=BATCH, seed=0, verbose=False)
    return ds.cache().prefetch(tf.data.AUTOTUNE)


def timed(make, root: Path) -> dict:
    """Seconds to the end of the first epoch, set-up included (ours decodes the files while it checks them,
    Keras in its first epoch), to the end of the third, and of a warm epoch (both from memory)."""
    start = time.perf_counter()
    ds = make(root)
    setup = time.perf_counter() - start
    epochs = []
    for _ in range(4):
        start = time.perf_counter()
        for _ in ds:
            pass
        epochs.append(time.perf_counter() - start)
    return {"set-up + first epoch": setup + epochs[0], "3 epochs + set-up": setup + sum(epochs[:3]),
            "warm epoch": epochs[3]}


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def in_new_process(what: str, side: str, root: Path) -> str:
    """The last line this script prints with ``--WHAT-of SIDE FOLDER``, run in a new process."""
    out = subprocess.run([sys.executable, __file__, f"--{what}-of", side, str(root)], capture_output=True,
                         text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return out.stdout.strip().splitlines()[-1]


def memory_mib(side: str, root: Path) -> float:
    """The resident memory one epoch of a pipeline adds (its cache, mostly), measured in a new process so
    that neither side reuses memory the other freed."""
    return float(in_new_process("memory", side, root))


def timed_in_new_process(side: str, root: Path) -> dict:
    """``timed`` as a user's first load sees it: in a new process whose TensorFlow has run one eager op (as
    building a model does), so each side pays its own first tracing and thread pools."""
    return json.loads(in_new_process("time", side, root))


def measure_time(side: str, root: Path) -> None:
    tf.constant(1.0) + 1.0
    print(json.dumps(timed(SIDES[side], root)))


def measure_memory(side: str, root: Path) -> None:
    for _ in tf.data.Dataset.range(1000).map(lambda i: i + 1, num_parallel_calls=tf.data.AUTOTUNE):
        pass  # TensorFlow's runtime and thread pools, before the measurement
    before = resident_mib()
    for _ in SIDES[side](root):
        pass
    print(resident_mib() - before)


def train_step_ratio(ds: tf.data.Dataset, classes: int, repeats: int) -> tuple[float, float]:
    """ms per step of a small CNN fed by `ds` and fed from the same images in memory."""
    x, y = map(np.concatenate, zip(*((a.numpy(), b.numpy()) for a, b in ds)))
    model = keras.Sequential([
        keras.Input((*SIZE, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(classes),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = -(-len(y) // BATCH)

    def per_step(data, **kwargs) -> float:
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, **kwargs)
        return (time.perf_counter() - start) / steps * 1000

    feeds = [lambda: per_step(ds, shuffle=False), lambda: per_step(x, y=y, batch_size=BATCH)]  # ours shuffles
    for feed in feeds:
        feed()  # warm-up: tracing
    return tuple(map(min, zip(*([feed() for feed in feeds] for _ in range(repeats)))))


SIDES = {"ours": ours, "keras": keras_pipeline}


def print_best(title: str, runs: list[tuple[dict, dict]]) -> None:
    """Each figure's best over the repeats, ours and Keras's, and their ratio."""
    print(f"  {title}:")
    for key in runs[0][0]:
        o, k = (min(run[i][key] for run in runs) for i in (0, 1))
        print(f"    {key}: ours {o:.2f} s, keras {k:.2f} s, ratio: {k / o:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a fifth of the images, one repeat")
    parser.add_argument("--memory-of", nargs=2, metavar=("SIDE", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--time-of", nargs=2, metavar=("SIDE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return measure_memory(args.memory_of[0], Path(args.memory_of[1]))
    if args.time_of:
        return measure_time(args.time_of[0], Path(args.time_of[1]))
    repeats = 1 if args.quick else args.repeats
    for name, (count, low, high) in ROWS.items():
        count = count // 5 if args.quick else count
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            write_jpegs(root, count, low, high)
            print(f"{name}: {count} JPEGs {low}-{high} px a side ({bits_per_pixel(root):.1f} bits a pixel) -> "
                  f"{SIZE[0]}x{SIZE[1]}, batch {BATCH}")
            fresh = [(timed_in_new_process("ours", root), timed_in_new_process("keras", root))
                     for _ in range(repeats)]  # alternating
            print_best("in a new process, as a user's first load", fresh)
            timed(ours, root), timed(keras_pipeline, root)  # this process's first load of each, not counted
            again = [(timed(ours, root), timed(keras_pipeline, root)) for _ in range(repeats)]
            print_best("in a process that has loaded before (first tracing and thread pools paid)", again)
            print(f"  memory an epoch adds (the cache): ours {memory_mib('ours', root):.0f} MiB, "
                  f"keras {memory_mib('keras', root):.0f} MiB; the images as uint8: "
                  f"{count * np.prod(SIZE) * 3 / 2**20:.0f} MiB")
            if name == "small":
                fed, memory = train_step_ratio(ours(root), 10, repeats)
                print(f"  train step fed by ours: {fed:.1f} ms, from in-memory tensors: {memory:.1f} ms, "
                      f"ratio: {fed / memory:.2f}")


if __name__ == "__main__":
    main()
