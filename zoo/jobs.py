"""The jobs behind the command line: a fine-tune run with its reports, the bundled pretraining.

A ``RunConfig`` holds every option a run needs; ``zoo.finetune`` writes it to the run directory as
``config.yaml``, and ``--config`` reads it back to reproduce the run.

Example:
    >>> summary = run_finetune(RunConfig(model="resnet_tiny.digits", data="digits", epochs=5))
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from zoo.config import RunConfig
from zoo.errors import InvalidArgumentError
from zoo.registry import resolve

log = logging.getLogger(__name__)

# The bundled task: a backbone pretrained by the package on digits 0-4 learns digits 5-9 from
# a few labels per class, next to the same network trained from scratch.
BUNDLED_TASK = {"model": "resnet_tiny.digits", "data": "digits", "classes": [5, 6, 7, 8, 9], "per_class": 5,
                "recipe": "full", "epochs": 20, "batch_size": 16, "learning_rate": 3e-3, "patience": None,
                "baseline": True}
PRETRAIN_CLASSES = [0, 1, 2, 3, 4]


def run_finetune(config: RunConfig, *, overwrite: bool = False, verbose: int | str = "auto") -> dict:
    """Fine-tune as ``config`` says, write the run directory and its reports; return a summary.

    Nothing is written before the inputs are checked (the data loads, the model builds) and the run
    directory is locked; a refused run leaves no new directory behind. The directory stays locked until the
    reports are written, and the run counts as finished only then: the same command resumes a run killed at
    any point, its reports included. ``summary["seconds"]`` is the whole run's time, over every resume.
    """
    from zoo.runs import RunDir

    spec, weight = resolve(config.model)
    run_dir = Path(config.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{spec.arch}")
    run = RunDir(run_dir)
    if config.strategy != "multi_worker":  # one process: a busy directory is refused before TensorFlow loads
        run.check_free()

    import keras

    import zoo
    from zoo import distribute
    from zoo.data import load

    clock = _Clock()
    strategy = distribute.strategy(config.strategy)
    chief = distribute.is_chief(strategy)  # other workers write only their own backup directory
    if chief:
        run.check_free()
    size = tuple(config.image_size or spec.image_size(weight if config.pretrained is True else None))
    data = load(config.data, image_size=size, channels=spec.input_size[2], batch_size=config.batch_size,
                augment=config.augment, shuffle=False, seed=config.seed, classes=config.classes,
                per_class=config.per_class)
    config = config.replace(run_dir=str(run_dir), image_size=size, strategy=strategy)

    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = zoo.create_model(config.model, num_classes=data[3].num_classes, pretrained=config.pretrained,
                                 input_shape=size, dropout=config.dropout, head_hidden=config.head_hidden)
    with run.lock() if chief else contextlib.nullcontext():
        result = clock.finetune(model, data, config, run_dir=run_dir, overwrite=overwrite, verbose=verbose)
        entry = zoo.entry_of(result.model)
        summary = {"run_dir": str(run_dir), "model": entry.name, "recipe": config.recipe,
                   "test_accuracy": result.metrics.get("test_accuracy"), "seconds": None}
        runs = [result.run_dir]
        if config.baseline:
            summary["baseline"], baseline_dir = _baseline(clock, config, entry.arch, data, run_dir / "baseline",
                                                          overwrite, verbose, resumed=result.resumed)
            runs.insert(0, baseline_dir)
        summary["seconds"] = round(clock.seconds(), 1)
        if chief:
            _report(run_dir, config, result, weight if config.pretrained is True else None, summary)
        for done in runs:  # the baseline first: a run whose main part is finished is a finished job
            RunDir(done).finish()
    return summary


class _Clock:
    """A job's time: its own, plus each run's time in ``zoo.finetune`` over every call that resumed it."""

    def __init__(self):
        self.started, self.in_finetune, self.runs = time.monotonic(), 0.0, 0.0

    def finetune(self, *args, **kwargs):
        import zoo

        start = time.monotonic()
        try:
            result = zoo.finetune(*args, finish=False, **kwargs)
        finally:
            self.in_finetune += time.monotonic() - start
        self.runs += result.seconds
        return result

    def seconds(self) -> float:
        return time.monotonic() - self.started - self.in_finetune + self.runs


def _baseline(clock: _Clock, config: RunConfig, arch: str, data, run_dir: Path, overwrite: bool, verbose,
              resumed: bool) -> tuple[dict, str]:
    """The same network from scratch, at its own learning rate (lr_find), with the same budget. In a resumed
    job (``resumed``: the main run went on from its checkpoint), an unfinished baseline keeps the rate it
    started with."""
    import keras

    import zoo
    from zoo.runs import RunDir

    keras.utils.set_random_seed(config.seed)
    with config.strategy.scope():
        model = zoo.create_model(arch, num_classes=data[3].num_classes, pretrained=False,
                                 input_shape=config.image_size, dropout=config.dropout,
                                 head_hidden=config.head_hidden)
    rate = _resumed_rate(RunDir(run_dir)) if resumed else None
    if rate is None:
        rate = zoo.lr_find(model, data[0], steps=60).suggestion
    keras.utils.set_random_seed(config.seed)
    scratch = config.replace(recipe="full", learning_rate=rate, pretrained=False, baseline=False,
                             run_dir=str(run_dir))
    result = clock.finetune(model, data, scratch, run_dir=run_dir, overwrite=overwrite, verbose=verbose)
    return {"model": arch, "recipe": "full", "learning_rate": rate,
            "test_accuracy": result.metrics.get("test_accuracy")}, result.run_dir


def _resumed_rate(run) -> float | None:
    """The learning rate of an unfinished baseline in ``run``, or None."""
    from zoo.runs import STATE

    try:
        if (run.read_json(STATE) or {}).get("finished") or not run.exists("config.yaml"):
            return None
        return RunConfig.from_yaml(run.file("config.yaml")).learning_rate
    except (ValueError, OSError):  # unreadable: find the rate again
        return None


def _report(run_dir: Path, config: RunConfig, result, weight, summary) -> None:
    from zoo.runs import RunDir, confusion_report, plot_curves
    from zoo.training.loop import RUN_INFO

    run = RunDir(run_dir)
    if result.history:
        plot_curves(result.history, run.file("curves.png"))
    split = next((s for s in ("test", "val") if s in result.evaluations), None)
    if split is not None:  # a dataset too small to hold out examples has neither
        scores = result.evaluations[split]
        n = result.model.output.shape[-1]
        names = run.read_json(RUN_INFO, {}).get("class_names") or [str(i) for i in range(n)]
        confusion_report(scores.labels, scores.predicted, names, run.file("confusion_matrix.png"),
                         f"confusion matrix ({split} split)")
    run.write_json("summary.json", summary)
    run.write_text("README.md", _model_card(config, result, weight, result.metrics, summary))


def _model_card(config, result, weight, metrics, summary) -> str:
    source = (f"`{summary['model']}`: {weight.dataset} ({weight.num_classes} classes), licence {weight.license}"
              if weight else ("random initialisation" if config.pretrained is False else f"file {config.pretrained}"))
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float))
    phases = ", ".join(f"{p.name} ({p.epochs} epochs, trains {p.describe()})" for p in result.phases)
    lines = [f"# {summary['model']} fine-tuned on {config.data}", "",
             f"- Model: `{summary['model']}` ({result.model.count_params():,} parameters)",
             f"- Weights: {source}",
             f"- Data: `{config.data}`" + (f", classes {config.classes}" if config.classes else "")
             + (f", {config.per_class} labelled examples per class" if config.per_class else ""),
             f"- Recipe: `{config.recipe}`: {phases}; learning rate {config.learning_rate:g}, "
             f"batch {config.batch_size}, seed {config.seed}",
             f"- Wall time: {summary['seconds']} s", "", "| metric | value |", "|---|---|", rows, ""]
    if "baseline" in summary:
        b = summary["baseline"]
        lines += [f"Baseline: `{b['model']}` from scratch, recipe `full`, learning rate {b['learning_rate']:.3g} "
                  f"(from lr_find), same epochs and data: test accuracy {b['test_accuracy']:.4f}.", ""]
    lines += ["Reproduce: `keras-zoo finetune --config config.yaml --run-dir NEW_DIR`", "",
              "Files: config.yaml, run.json, history.csv, metrics.json, model.keras, curves.png, confusion_matrix.png"]
    return "\n".join(lines) + "\n"


def pretrain(out: str | Path, *, epochs: int = 30, seed: int = 0) -> tuple[Path, str]:
    """Pretrain ``resnet_tiny`` on scikit-learn's digits 0-4 (16x16, seeded, deterministic ops) and
    save its backbone weights: the bundled ``resnet_tiny.digits`` checkpoint. Returns (path, sha256).

    Small shifts and rotations (never flips: a mirrored digit is another symbol) make features that
    carry over to the other digits.
    """
    import keras
    import tensorflow as tf

    import zoo
    from zoo.data import load
    from zoo.weights import file_hash

    out = Path(out)
    if out.exists():
        raise InvalidArgumentError(f"{out} exists: remove it first, or give another --out")
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    model = zoo.create_model("resnet_tiny", num_classes=len(PRETRAIN_CLASSES), pretrained=False,
                             input_shape=(16, 16))
    train, val, test, info = load("digits", image_size=(16, 16), classes=PRETRAIN_CLASSES, shuffle=False,
                                  seed=seed)
    jitter = keras.Sequential([keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
                               keras.layers.RandomRotation(0.05, fill_mode="constant", seed=seed)])
    train = train.map(lambda x, y: (jitter(x, training=True), y))
    result = zoo.finetune(model, (train, val, test, info), recipe="full", epochs=epochs, learning_rate=3e-3,
                          patience=None, seed=seed, verbose=0)
    log.info("pretrained on digits %s: %s", PRETRAIN_CLASSES, result.metrics)
    zoo.save_backbone_weights(model, out)
    return out, file_hash(out)
