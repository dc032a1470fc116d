"""A head-only search: plain keras-tuner over the full model against tuning.search's shared features.

    python benchmarks/tuning.py [--trials 6] [--epochs 10] [--backbone resnet_tiny] [--size 32] [--tuner hyperband]
    python benchmarks/tuning.py --rss [--trials 20]

Both sides search the same space (learning rate, dropout, head depth and width over a frozen, randomly
initialised backbone; linear_probe, no augmentation) on digits resized to --size, with the same number
of trials, epochs per trial and seed. Plain keras-tuner builds each trial's model and runs ``model.fit``
through the frozen backbone every epoch; ours computes the backbone's features once and trains only the
head on them. Prints trials per minute for both and the ratio (goal: at least 10). Ours runs first, so
the warm-up of TensorFlow counts against it. ``--tuner hyperband`` runs keras-tuner's Hyperband on both
sides (--epochs is its max_epochs; both continue a later round's trial from its earlier round's weights).

``--rss`` runs one search of --trials trials that mixes backbones and recipes and prints the process's
resident memory after each trial (once its memory is released), then its growth over the search.
"""

import argparse
import os
import sys
import tempfile
import time

# Run as a script, this file's folder comes first on sys.path, and this file is named tuning.py too.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402

import tuning  # noqa: E402
import zoo  # noqa: E402

HEAD_ONLY = {"recipe": "linear_probe", "pretrained": False, "learning_rate": (1e-4, 1e-2, "log"),
             "dropout": (0.0, 0.5), "head_depth": [0, 1], "head_width": [32, 64, 128]}
MIXED = {"backbone": ["resnet_tiny", "vit_pico_p4"], "recipe": ["linear_probe", "full"], "pretrained": False,
         "learning_rate": (1e-4, 1e-2, "log"), "dropout": (0.0, 0.5), "head_depth": [0, 1], "head_width": [16, 64]}


class PlainHyperModel(tuning.ZooHyperModel):
    """The same models, searched as plain keras-tuner does: compiled in build, ``model.fit`` in fit."""

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        model = zoo.freeze(super().build(hp))
        model.compile(optimizer=keras.optimizers.Adam(self.config(hp)["learning_rate"]),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
        config = self.config(hp)
        train, val = self.data.splits(tuple(config["image_size"]), config["augment"], config["batch_size"])
        kwargs["epochs"] = config["epochs"]  # kt.Hyperband's own, with its initial_epoch, when it runs the search
        return model.fit(train, validation_data=val, **kwargs)  # kwargs: verbose, callbacks


def trials_per_minute(run, trials: int) -> float:
    start = time.perf_counter()
    run()
    return trials / (time.perf_counter() - start) * 60


def speed(args: argparse.Namespace, tmp: str) -> None:
    space = {"backbone": args.backbone, **HEAD_ONLY}
    size = (args.size, args.size)
    common = {"max_trials": args.trials, "seed": args.seed, "overwrite": True}

    def ours():
        tuning.search("digits", space, tuner=args.tuner, epochs=args.epochs, image_size=size, patience=None,
                      verbose=0, directory=os.path.join(tmp, "ours"), **common)

    def plain():
        hypermodel = PlainHyperModel(tuning.Space(space), tuning.TrialData("digits", args.seed), epochs=args.epochs,
                                     image_size=size, seed=args.seed)
        folder = os.path.join(tmp, "plain")
        if args.tuner == "hyperband":
            tuner = kt.Hyperband(hypermodel, objective="val_accuracy", max_epochs=args.epochs, seed=args.seed,
                                 overwrite=True, directory=folder)
            tuner.oracle.max_trials = args.trials  # as tuning.search caps it
        else:
            tuner = kt.RandomSearch(hypermodel, objective="val_accuracy", directory=folder, **common)
        tuner.search(verbose=0)

    budget = f"up to {args.epochs} epochs (hyperband)" if args.tuner == "hyperband" else f"{args.epochs} epochs"
    print(f"{args.trials} trials of {budget}, {args.backbone} at {args.size}x{args.size} on digits")
    mine = trials_per_minute(ours, args.trials)
    print(f"ours: {mine:.2f} trials/min", flush=True)
    theirs = trials_per_minute(plain, args.trials)
    print(f"plain: {theirs:.2f} trials/min")
    print(f"ratio: {mine / theirs:.1f}")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss(args: argparse.Namespace, tmp: str) -> None:
    seen = []

    def record(row: dict) -> None:
        seen.append(rss_mb())
        print(f"trial {row['trial']:>3} {row['status']:9} {row['backbone']:12} {row['recipe']:12} "
              f"RSS {seen[-1]:7.1f} MB", flush=True)

    tuning.search("digits", MIXED, max_trials=args.trials, epochs=2, image_size=(16, 16), seed=args.seed,
                  directory=tmp, callback=record, verbose=0)
    warm = min(4, len(seen) - 1)  # the first trials also fill caches that stay (traced ops, the allocator's pools)
    print(f"RSS growth over {len(seen)} trials: {seen[-1] - seen[0]:+.1f} MB from trial 1, "
          f"{seen[-1] - seen[warm]:+.1f} MB from trial {warm + 1} (largest: {max(seen):.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--backbone", default="resnet_tiny")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tuner", choices=["random", "hyperband"], default="random")
    parser.add_argument("--rss", action="store_true", help="measure memory over a search instead")
    args = parser.parse_args()
    args.trials = args.trials or (20 if args.rss else 6)
    with tempfile.TemporaryDirectory() as tmp:
        (rss if args.rss else speed)(args, tmp)


if __name__ == "__main__":
    main()
