"""The cost of zoo.finetune's loop over a hand-written ``model.compile(...); model.fit(...)``.

    python benchmarks/overhead.py            # about 4 minutes on 2 cores
    python benchmarks/overhead.py --quick    # a smoke run

The same model (MobileNetV3Small at 96x96, random weights), data (600 random images in 10 classes,
from ``zoo.data.load``, 120 of them for validation), batch (32), optimizer (Adam, 10% linear warm-up
then cosine decay) and epochs. The hand-written side is what the Keras guides write::

    model.compile(optimizer=keras.optimizers.Adam(CosineDecay(...)), loss=..., metrics=["accuracy"])
    model.fit(train, validation_data=val, epochs=EPOCHS)

and the zoo side ``zoo.finetune(model, data, recipe="full", precise_bn=False, patience=None)``. An epoch's
time runs from ``on_epoch_begin`` to the end of the epoch's ``on_epoch_end`` callbacks (validation and
zoo's bookkeeping included); the figure is the median over epochs 2 to EPOCHS (the first traces the
graph), the best of --repeats, the two sides alternating. Its ``ratio:`` line (zoo / Keras, goal at most
1.03) is the figure issue 16 asks for. Then each extra the loop can add, timed the same way against the
bare loop: checkpointing (``run_dir``: checkpoint.npz every epoch, best.npz when validation improves),
precise BatchNorm (``precise_bn=True``, the default: statistics recomputed, validation repeated), and
the run report the command line writes once at the end (curves.png, confusion matrix).
"""
import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402
from zoo.runs import RunDir, confusion_report, plot_curves  # noqa: E402

SIZE, IMAGES, VAL, BATCH, LR = 96, 600, 120, 32, 1e-3


class EpochTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def data(images: int):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, SIZE, SIZE, 3), dtype=np.uint8)
    y = np.arange(images) % 10
    return zoo.data.load((x, y), batch_size=BATCH, val_fraction=VAL / IMAGES, test_fraction=0)


def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return zoo.create_model("mobilenetv3_small", num_classes=10, pretrained=False, input_shape=(SIZE, SIZE))


def keras_fit(loaded, epochs: int) -> list[float]:
    train, val, _, info = loaded
    net = model()
    steps = epochs * -(-info.num_examples["train"] // BATCH)
    warmup = int(0.1 * steps)
    rate = keras.optimizers.schedules.CosineDecay(0.0, steps - warmup, warmup_target=LR, warmup_steps=warmup)
    net.compile(optimizer=keras.optimizers.Adam(rate), loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=["accuracy"])
    times = EpochTimes()
    net.fit(train, validation_data=val, epochs=epochs, callbacks=[times], verbose=0)
    return times.seconds


def zoo_fit(loaded, epochs: int, **options) -> list[float]:
    times = EpochTimes()
    options = {"precise_bn": False, **options}
    zoo.finetune(model(), loaded, recipe="full", epochs=epochs, learning_rate=LR, patience=None, verbose=0,
                 callbacks=[times], **options)
    return times.seconds


def per_epoch(seconds: list[float]) -> float:
    return statistics.median(seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs, repeats = (2, 1) if args.quick else (args.epochs, args.repeats)
    loaded = data(IMAGES // 5 if args.quick else IMAGES)
    with tempfile.TemporaryDirectory() as tmp:
        sides = {
            "keras": lambda: keras_fit(loaded, epochs),
            "zoo": lambda: zoo_fit(loaded, epochs),
            "zoo + checkpoints": lambda: zoo_fit(loaded, epochs, run_dir=tempfile.mkdtemp(dir=tmp)),
            "zoo + precise BatchNorm": lambda: zoo_fit(loaded, epochs, precise_bn=True),
        }
        seconds = {name: [] for name in sides}
        for _ in range(repeats):  # the sides in turn, so that the machine's drift touches each alike
            for name, side in sides.items():
                seconds[name].append(per_epoch(side()))
        best = {name: min(figures) for name, figures in seconds.items()}

        result = zoo.finetune(model(), loaded, recipe="full", epochs=epochs, verbose=0, run_dir=f"{tmp}/report")
        start = time.perf_counter()
        run = RunDir(result.run_dir)
        plot_curves(result.history, run.file("curves.png"))
        scores = result.evaluations["val"]
        confusion_report(scores.labels, scores.predicted, list(loaded[3].class_names), run.file("confusion_matrix.png"))
        report = time.perf_counter() - start

    print(f"MobileNetV3Small {SIZE}x{SIZE}, {loaded[3].num_examples['train']} training images, batch {BATCH}, "
          f"{epochs} epochs; seconds per epoch (median of epochs 2-{epochs}, best of {repeats})")
    print(f"  hand-written compile + fit: {best['keras']:.2f} s; zoo.finetune(recipe='full'): {best['zoo']:.2f} s")
    print(f"  ratio: {best['zoo'] / best['keras']:.3f}")
    for name in ("zoo + checkpoints", "zoo + precise BatchNorm"):
        print(f"  {name}: {best[name]:.2f} s per epoch, +{best[name] / best['zoo'] - 1:.1%} over the bare loop")
    print(f"  run report (curves, confusion matrix), once per run: {report:.2f} s")


if __name__ == "__main__":
    main()
