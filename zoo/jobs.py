"""The jobs behind the command line: a fine-tune run with its reports, the bundled pretraining.

A ``FinetuneConfig`` holds every option a run needs; it is written to the run directory as
``config.yaml`` and read back with ``--config`` to reproduce the run.

Example:
    >>> summary = run_finetune(FinetuneConfig(model="resnet_tiny.digits", data="digits", epochs=5))
"""
from __future__ import annotations

import dataclasses
import time
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from zoo.errors import InvalidArgumentError
from zoo.registry import resolve

# The bundled task: a backbone pretrained by the package on digits 0-4 learns digits 5-9 from
# a few labels per class, next to the same network trained from scratch.
BUNDLED_TASK = {"model": "resnet_tiny.digits", "data": "digits", "classes": [5, 6, 7, 8, 9], "per_class": 5,
                "recipe": "full", "epochs": 20, "batch_size": 16, "learning_rate": 3e-3, "patience": None,
                "baseline": True}
PRETRAIN_CLASSES = [0, 1, 2, 3, 4]


@dataclass
class FinetuneConfig:
    """Everything a fine-tune run needs; the defaults of ``zoo.finetune`` where it has them."""

    model: str = BUNDLED_TASK["model"]
    data: str = BUNDLED_TASK["data"]
    pretrained: bool | str = True
    classes: list | None = None
    per_class: int | None = None
    image_size: list | None = None
    recipe: str = "two_phase"
    epochs: int = 6
    learning_rate: float = 1e-3
    batch_size: int = 32
    blocks: int = 2
    dropout: float = 0.0
    head_hidden: list | None = None
    augment: str = "none"
    lora_rank: int = 4
    patience: int | None = 3
    seed: int = 0
    strategy: str = "auto"
    lr_scaling: str | None = None
    mixed_precision: str | None = None
    jit_compile: bool | str = "auto"
    run_dir: str | None = None
    baseline: bool = False

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "FinetuneConfig":
        """Build from plain data, refusing unknown keys and values of the wrong type."""
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise InvalidArgumentError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: "
                                       f"{', '.join(hints)}")
        for key, value in values.items():
            allowed = _types(hints[key])
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
                raise InvalidArgumentError(f"{where}: '{key}' must be {names}, got {value!r}")
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "FinetuneConfig":
        path = Path(path)
        if not path.is_file():
            raise InvalidArgumentError(f"no config file at {path}: give the config.yaml of a run")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise InvalidArgumentError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
        if not isinstance(values, dict):
            raise InvalidArgumentError(f"{path} must hold a mapping of option: value")
        return cls.from_dict(values, where=str(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False)


def _types(hint) -> tuple:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    out = tuple(typing.get_origin(a) or a for a in args)
    return out + (int,) if float in out else out  # 1 is a fine learning rate


def run_finetune(config: FinetuneConfig, *, overwrite: bool = False, verbose: int | str = "auto") -> dict:
    """Fine-tune as ``config`` says, write the run directory and its reports; return a summary."""
    import keras

    import zoo
    from zoo import distribute
    from zoo.data import load

    started = time.time()
    strategy = distribute.strategy(config.strategy)
    spec, weight = resolve(config.model)
    size = tuple(config.image_size or (weight.input_size if weight and config.pretrained is True else None)
                 or spec.input_size[:2])
    data = load(config.data, image_size=size, channels=spec.input_size[2], batch_size=config.batch_size,
                augment=config.augment, shuffle=False, seed=config.seed, classes=config.classes,
                per_class=config.per_class)
    info = data[3]
    run_dir = Path(config.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{spec.arch}")
    config = dataclasses.replace(config, run_dir=str(run_dir), image_size=list(size))
    options = dict(recipe=config.recipe, epochs=config.epochs, learning_rate=config.learning_rate,
                   blocks=config.blocks, augment=config.augment, lora_rank=config.lora_rank,
                   patience=config.patience, seed=config.seed, jit_compile=config.jit_compile,
                   overwrite=overwrite, verbose=verbose, strategy=strategy,
                   mixed_precision=config.mixed_precision, lr_scaling=config.lr_scaling)

    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = zoo.create_model(config.model, num_classes=info.num_classes, pretrained=config.pretrained,
                                 input_shape=size, dropout=config.dropout, head_hidden=config.head_hidden)
    run_dir.mkdir(parents=True, exist_ok=True)
    result = zoo.finetune(model, data, run_dir=run_dir, **options)
    summary = {"run_dir": str(run_dir), "model": config.model, "recipe": config.recipe,
               "test_accuracy": result.metrics.get("test_accuracy"), "seconds": None}
    if config.baseline:
        summary["baseline"] = _baseline(config, spec.arch, data, options, run_dir / "baseline")
    summary["seconds"] = round(time.time() - started, 1)
    _report(run_dir, config, result, weight if config.pretrained is True else None, data[2] or data[1], summary)
    return summary


def _baseline(config, arch, data, options, run_dir) -> dict:
    """The same network from scratch, at its own learning rate (lr_find), with the same budget."""
    import keras

    import zoo

    keras.utils.set_random_seed(config.seed)
    with options["strategy"].scope():
        model = zoo.create_model(arch, num_classes=data[3].num_classes, pretrained=False,
                                 input_shape=config.image_size, dropout=config.dropout,
                                 head_hidden=config.head_hidden)
    rate = zoo.lr_find(model, data[0], steps=60).suggestion
    keras.utils.set_random_seed(config.seed)
    result = zoo.finetune(model, data, run_dir=run_dir, **{**options, "recipe": "full", "learning_rate": rate})
    return {"model": arch, "recipe": "full", "learning_rate": rate,
            "test_accuracy": result.metrics.get("test_accuracy")}


def _report(run_dir: Path, config, result, weight, eval_data, summary) -> None:
    import numpy as np

    from zoo.runs import RunDir, plot_confusion, plot_curves

    run = RunDir(run_dir)
    run.write_text("config.yaml", config.to_yaml())
    if result.history:
        plot_curves(result.history, run.file("curves.png"))
    labels = np.concatenate([np.asarray(y) for _, y in eval_data])
    predicted = np.argmax(result.model.predict(eval_data, verbose=0), axis=-1)
    n = result.model.output.shape[-1]
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    names = run.read_json("config.json", {}).get("class_names") or [str(i) for i in range(n)]
    plot_confusion(matrix, names, run.file("confusion_matrix.png"), "confusion matrix (test split)")
    run.write_json("summary.json", summary)
    run.write_text("README.md", _model_card(config, result, weight, result.metrics, summary))


def _model_card(config, result, weight, metrics, summary) -> str:
    source = (f"`{config.model}`: {weight.dataset} ({weight.num_classes} classes), licence {weight.license}"
              if weight else ("random initialisation" if config.pretrained is False else f"file {config.pretrained}"))
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float))
    phases = ", ".join(f"{p.name} ({p.epochs} epochs, trains {p.train})" for p in result.phases)
    lines = [f"# {config.model} fine-tuned on {config.data}", "",
             f"- Model: `{config.model}` ({result.model.count_params():,} parameters)",
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
              "Files: config.yaml, history.csv, metrics.json, model.keras, curves.png, confusion_matrix.png"]
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
    print(f"pretrained on digits {PRETRAIN_CLASSES}: {result.metrics}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.get_layer("backbone").save_weights(out)
    return out, file_hash(out)
