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
# Every example of digits 5-9 not used for training or validation is a test example (about 720), so a
# printed difference is more than a few images.
BUNDLED_TASK = {"model": "resnet_tiny.digits", "data": "digits", "classes": [5, 6, 7, 8, 9], "per_class": 5,
                "test_fraction": 0.8, "recipe": "full", "epochs": 20, "batch_size": 16, "learning_rate": 3e-3,
                "patience": None, "baseline": True}
CURVE = (1, 2, 5, 10)  # labelled examples per class of the label-efficiency curve
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

    import zoo
    from zoo import distribute

    clock = _Clock()
    strategy = distribute.strategy(config.strategy)
    chief = distribute.is_chief(strategy)  # other workers write only their own backup directory
    if chief:
        run.check_free()
    size = None if spec.modality != "image" else \
        tuple(config.image_size or spec.image_size(weight if config.pretrained is True else None))
    config = config.replace(run_dir=str(run_dir), image_size=size, strategy=strategy)
    data = _data(config, config.per_class)
    model = _model(config, data)
    with run.lock() if chief else contextlib.nullcontext():
        summary = {"run_dir": str(run_dir), "model": zoo.entry_of(model).name, "recipe": config.recipe}
        if config.baseline and config.pretrained is not False:
            summary["knn_before_training"] = _knn_before_training(model, config, data)
        result = clock.finetune(model, data, config, run_dir=run_dir, overwrite=overwrite, verbose=verbose)
        summary.update(test_accuracy=result.metrics.get("test_accuracy"), seconds=None)
        runs, scratch = [], None
        if config.baseline:
            summary["baseline"], scratch = _baseline(clock, config, data, run_dir / "baseline", overwrite, verbose,
                                                     resumed=result.resumed)
            runs.append(scratch.run_dir)
        if config.curve:
            summary["curve"], curve_runs = _curve(clock, config, run_dir / "curve", overwrite, verbose)
            runs += curve_runs
        summary["seconds"] = round(clock.seconds(), 1)
        if chief:
            _report(run_dir, config, result, weight if config.pretrained is True else None, summary, scratch, data)
        for done in [*runs, result.run_dir]:  # the main run last: a run whose main part is finished is finished
            RunDir(done).finish()
    return summary


def _knn_before_training(model, config: RunConfig, data) -> dict:
    """kNN accuracy (DINO's, k=20) of the backbone's features on the new classes before any training: the
    model's pretrained features against the same network's at random initialisation."""
    import keras

    import zoo
    from zoo.represent.features import embedding_model
    from zoo.represent.probes import knn_accuracy
    from zoo.training.features import extract

    keras.utils.set_random_seed(config.seed)
    random = zoo.create_model(zoo.entry_of(model).name, pretrained=False, input_shape=config.image_size)
    scores = {}
    for name, net in (("pretrained", embedding_model(model)), ("random init", random)):
        train_x, train_y = extract(net, data[0])
        test_x, test_y = extract(net, data[2])
        scores[name] = knn_accuracy(train_x, train_y, test_x, test_y, k=min(20, len(train_y)))
    log.info("kNN accuracy of the backbone's features before training: pretrained %.3f, random init %.3f",
             scores["pretrained"], scores["random init"])
    return scores


def _data(config: RunConfig, per_class: int | None):
    """The run's (train, val, test, info), with ``per_class`` labelled training examples per class."""
    from zoo.data import load

    spec = resolve(config.model)[0]
    sized = {} if spec.modality != "image" else {"image_size": config.image_size, "channels": spec.input_size[2]}
    return load(config.data, **sized, batch_size=config.batch_size, augment=config.augment, shuffle=False,
                **{**config.split(), "per_class": per_class})


def _model(config: RunConfig, data, pretrained: bool | str | None = None):
    """The run's model for ``data`` (train, val, test, info), seeded, in its strategy's scope (``pretrained``: None
    for the config's weights). A sound model takes the data's clips whole."""
    import keras

    import zoo

    train, info = data[0], data[3]
    shape = (train.element_spec[0].shape[1],) if info.modality == "audio" else config.image_size
    keras.utils.set_random_seed(config.seed)
    with config.strategy.scope():
        return zoo.create_model(config.model, num_classes=info.num_classes,
                                pretrained=config.pretrained if pretrained is None else pretrained,
                                input_shape=shape, dropout=config.dropout, head_hidden=config.head_hidden)


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


def _baseline(clock: _Clock, config: RunConfig, data, run_dir: Path, overwrite: bool, verbose,
              resumed: bool) -> tuple[dict, object]:
    """The same network from scratch, at its own learning rate (lr_find), with the same budget. In a resumed
    job (``resumed``: the main run went on from its checkpoint), an unfinished baseline keeps the rate it
    started with."""
    import keras

    import zoo
    from zoo.runs import RunDir

    model = _model(config, data, pretrained=False)
    rate = _resumed_rate(RunDir(run_dir)) if resumed else None
    if rate is None:
        rate = zoo.lr_find(model, data[0], steps=60).suggestion
    keras.utils.set_random_seed(config.seed)
    scratch = config.replace(recipe="full", learning_rate=rate, pretrained=False, baseline=False,
                             run_dir=str(run_dir))
    result = clock.finetune(model, data, scratch, run_dir=run_dir, overwrite=overwrite, verbose=verbose)
    return {"model": zoo.entry_of(model).arch, "recipe": "full", "learning_rate": rate,
            "test_accuracy": result.metrics.get("test_accuracy")}, result


def _curve(clock: _Clock, config: RunConfig, folder: Path, overwrite: bool, verbose) -> tuple[dict, list[str]]:
    """Test accuracy against labelled examples per class (``CURVE``), fine-tuned as ``config`` says and from
    scratch (at its own lr_find rate), each point a run of its own under ``folder``. The test split is the
    same at every point: it is held out before the training examples are drawn."""
    curve, runs = {"per_class": list(CURVE), "pretrained": [], "scratch": []}, []
    for n in CURVE:
        point = config.replace(per_class=n, baseline=False, curve=False, run_dir=str(folder / f"{n}_per_class"))
        data = _data(config, n)
        model = _model(config, data)
        result = clock.finetune(model, data, point, run_dir=point.run_dir, overwrite=overwrite, verbose=verbose)
        summary, scratch = _baseline(clock, point, data, folder / f"{n}_scratch", overwrite, verbose,
                                     resumed=result.resumed)
        curve["pretrained"].append(result.metrics.get("test_accuracy"))
        curve["scratch"].append(summary["test_accuracy"])
        runs += [result.run_dir, scratch.run_dir]
        log.info("%d labels per class: test accuracy %.3f pretrained, %.3f from scratch", n,
                 curve["pretrained"][-1], curve["scratch"][-1])
    return curve, runs


def _resumed_rate(run) -> float | None:
    """The learning rate of an unfinished baseline in ``run``, or None."""
    from zoo.runs import STATE

    try:
        if (run.read_json(STATE) or {}).get("finished") or not run.exists("config.yaml"):
            return None
        return RunConfig.from_yaml(run.file("config.yaml")).learning_rate
    except (ValueError, OSError):  # unreadable: find the rate again
        return None


def _report(run_dir: Path, config: RunConfig, result, weight, summary, scratch, data) -> None:
    from zoo.represent.pictures import plot_label_efficiency
    from zoo.runs import RunDir, confusion_report, plot_curves
    from zoo.training.loop import RUN_INFO

    run = RunDir(run_dir)
    if result.history:
        plot_curves(result.history, run.file("curves.png"), baseline=scratch.history if scratch else None)
    if "curve" in summary:
        curve = summary["curve"]
        plot_label_efficiency(curve["per_class"], {"pretrained": curve["pretrained"], "from scratch": curve["scratch"]},
                              run.file("label_efficiency.png"), f"{summary['model']} on {config.data}")
    split = next((s for s in ("test", "val") if s in result.evaluations), None)
    if split is not None:  # a dataset too small to hold out examples has neither
        scores = result.evaluations[split]
        n = result.model.output.shape[-1]
        names = run.read_json(RUN_INFO, {}).get("class_names") or [str(i) for i in range(n)]
        confusion_report(scores.labels, scores.predicted, names, run.file("confusion_matrix.png"),
                         f"confusion matrix ({split} split)")
        if data[3].modality == "text":
            summary["misclassified"] = _misclassified(data[2 if split == "test" else 1], scores, names)
    run.write_json("summary.json", summary)
    run.write_text("README.md", _model_card(config, result, weight, result.metrics, summary))


def _misclassified(dataset, scores, names: list[str], count: int = 5) -> list[dict]:
    """The first ``count`` texts of a split (unshuffled: in the order it was evaluated in) the model got wrong."""
    texts = [t.decode() for batch, _ in dataset for t in batch.numpy()]
    wrong = [i for i in range(len(texts)) if scores.labels[i] != scores.predicted[i]][:count]
    return [{"text": " ".join(texts[i].split())[:160], "label": names[scores.labels[i]],
             "predicted": names[scores.predicted[i]]} for i in wrong]


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
    if "knn_before_training" in summary:
        knn = summary["knn_before_training"]
        lines += [f"Before any training, the backbone's features classify the test set by kNN (k=20) with accuracy "
                  f"{knn['pretrained']:.4f} pretrained, {knn['random init']:.4f} at random initialisation.", ""]
    if summary.get("misclassified"):
        lines += ["A few misclassified test texts:", ""]
        lines += [f"- ({m['label']}, predicted {m['predicted']}) {m['text']}" for m in summary["misclassified"]] + [""]
    files = "config.yaml, run.json, history.csv, metrics.json, model.keras, curves.png, confusion_matrix.png"
    if "curve" in summary:
        curve = summary["curve"]
        lines += ["| labels per class | pretrained | from scratch |", "|---|---|---|"]
        lines += [f"| {n} | {a:.4f} | {b:.4f} |" for n, a, b in zip(curve["per_class"], curve["pretrained"],
                                                                    curve["scratch"])] + [""]
        files += ", label_efficiency.png"
    lines += ["Reproduce: `keras-zoo finetune --config config.yaml --run-dir NEW_DIR`", "", f"Files: {files}"]
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


def pretrain_backbone(arch: str, data, out: str | Path, *, method: str = "simclr", epochs: int = 15, seed: int = 0,
                      run_dir: str | None = None, image_size: tuple[int, int] | None = None,
                      classes: list | None = None, overwrite: bool = False) -> tuple[Path, str]:
    """Pretrain ``arch`` from random initialisation on ``data`` (``zoo.pretrain``: SimCLR or supervised;
    seeded, deterministic ops) and save its backbone to ``out``, for ``create_model(arch, pretrained=out)``.
    Returns (path, sha256). The bundled ``resnet_tiny.simclr_digits`` is ``pretrain_backbone("resnet_tiny",
    "digits", OUT, epochs=30, image_size=(16, 16), classes=[0, 1, 2, 3, 4])``.

    Example:
        >>> pretrain_backbone("resnet_tiny", "digits", "ssl.weights.h5", classes=[0, 1, 2, 3, 4])
    """
    import keras
    import tensorflow as tf

    import zoo
    from zoo.weights import file_hash

    out = Path(out)
    if out.exists():
        raise InvalidArgumentError(f"{out} exists: remove it first, or give another --out")
    spec, _ = resolve(arch)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    model = zoo.create_model(spec.arch, pretrained=False, input_shape=tuple(image_size or spec.image_size(None)))
    zoo.pretrain(model, data, method=method, epochs=epochs, seed=seed, run_dir=run_dir, overwrite=overwrite,
                 data_options={"classes": classes})
    zoo.save_backbone_weights(model, out)
    return out, file_hash(out)
