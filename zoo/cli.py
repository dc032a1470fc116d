"""The ``keras-zoo`` command. Errors a user can cause print one line on stderr and exit with 2.

Every argument is checked before any heavy work: a bad flag, a model the catalog lacks, data that is not
there, a place that cannot be written are refused in pure Python, before TensorFlow is imported and
before anything is written.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import textwrap
from pathlib import Path

from zoo import checks
from zoo.config import EMBEDDING_MAPS, OBJECTIVES, PRETRAIN_METHODS, SALIENCY_METHODS, TUNERS
from zoo.errors import DataError, InvalidArgumentError, ZooError
from zoo.registry import LENGTHS, families, list_models, measured, model_info, resolve, specs
from zoo.text import table

log = logging.getLogger(__name__)


def cmd_list(args) -> int:
    if args.family is not None and args.family not in families():
        raise InvalidArgumentError(f"unknown family '{args.family}': use one of {', '.join(families())}")
    sources = sorted({s.source for s in specs()})
    if args.source is not None and args.source not in sources:
        raise InvalidArgumentError(f"unknown source '{args.source}': use one of {', '.join(sources)}")
    names = list_models(args.pattern, pretrained=True if args.pretrained else None, family=args.family)
    rows = []
    for name in names:
        spec, weight = resolve(name)
        if args.source is not None and spec.source != args.source:
            continue
        # the size the name builds at: its weights', else the architecture's
        built = (*spec.image_size(weight), *spec.input_size[2:])
        size = measured(spec)
        rows.append([name, spec.family, _dims(built, spec.modality),
                     f"{size['params'] / 1e6:.1f}M" if size else "-", f"{size['gflops']:.2f}" if size else "-",
                     f"{weight.top1:.1%}" if weight and weight.top1 else "-", weight.dataset if weight else "-",
                     spec.source, weight.license.split(" (")[0] if weight else "-"])
    print(table(rows, ["model", "family", "input", "params", "GFLOPs", "top-1", "pretrained on", "source",
                       "licence"]))
    print(f"{len(rows)} models")
    return 0


def cmd_info(args) -> int:
    info = model_info(args.name)
    w = info["weights"]
    stages = ", ".join(f"{k}: {v}" for k, v in info["stages"].items()) or "-"
    built, own, least = info["default_input_size"], info["input_size"], info["min_input_size"]
    notes = [f"the {w['tag']} weights' size", f"the architecture's own {_dims(own)}"] if tuple(built) != tuple(own) \
        else []
    notes += [f"{least:,} to its position table" if info["modality"] in LENGTHS else f"at least {least}x{least}"]
    lines = [
        ("name", info["name"]), ("family", info["family"]), ("source", info["source"]),
        ("input size", f"{_dims(built, info['modality'])} ({'; '.join(notes)})"),
        ("preprocessing", info["preprocessing"]), ("stages", stages), ("first conv", info["first_conv"] or "-"),
        ("pooling", info["pooling"]), ("tags", ", ".join(info["tags"]) or "none (random weights only)"),
        ("about", info["description"] or "-"),
        ("parameters", f"{info['params']:,} (the backbone)" if info["params"] else "not measured"),
        ("GFLOPs", f"{info['gflops']} per input of {_dims(own, info['modality'])}" if info["gflops"] is not None
         else "not measured"),
    ]
    if w:
        lines += [("weights file", w["file_name"]), ("url", w["url"] or "bundled with the package"),
                  *([("revision", w["revision"])] if w["revision"] else []),
                  ("hash", w["file_hash"] or "none"), ("verification", w["verification"]),
                  ("trained on", w["dataset"] + (f" ({w['num_classes']} classes)" if w["num_classes"] else "")),
                  ("licence", w["license"]),
                  ("top-1", f"{w['top1']:.1%} on ImageNet, as published" if w["top1"] else "not published")]
    print("\n".join(f"{k:14} {v}" for k, v in lines))
    return 0


def _dims(size, modality: str = "image") -> str:
    return f"{size[0]:,} {LENGTHS[modality]}" if modality in LENGTHS else "x".join(map(str, size))


def cmd_weights(args) -> int:
    _check_weights_args(args)
    from zoo import weights

    if args.action == "list":
        rows = []
        for spec in specs():
            for w in spec.weights:
                st = weights.status(f"{spec.arch}.{w.tag}")
                rows.append([st["name"], _state(st) if st["present"] else "missing", st["path"]])
        print(table(rows, ["model", "state", "path"]))
    elif args.action == "path":
        print(weights.local_path(resolve(args.name)[1]))
    elif args.action == "download":
        print(weights.resolve(args.name))
    elif args.action == "import":
        print(weights.import_file(args.name, args.model))
    elif args.action == "verify":
        names = [args.name] if args.name else [f"{s.arch}.{w.tag}" for s in specs() for w in s.weights]
        bad = []
        for name in names:
            st = weights.status(name)
            if st["present"]:
                print(f"{st['name']}: {_state(st)} {st['path']}")
                bad += [name] if st["verified"] is False or st["readable"] is False else []
            elif args.name:
                print(f"{st['name']}: missing {st['path']}")
        if bad:
            raise ZooError(f"{len(bad)} file(s) are damaged (a hash that does not match, or not a weights file): "
                           f"delete them and download again")
    return 0


def _state(status: dict) -> str:
    """A present weights file's state, worst first."""
    if status["verified"] is False:
        return "BAD HASH"
    if status["readable"] is False:
        return "NOT READABLE (not an HDF5 file)" if status["path"].endswith(".h5") else "NOT READABLE"
    if status["verified"] is None:
        return "unverifiable (the publisher gives no hash)"
    return "ok"


def _check_weights_args(args) -> None:
    """Each action's arguments, checked against the catalog before Keras is imported."""
    if args.action == "list" and args.name:
        raise InvalidArgumentError(f"weights list takes no name (it lists every weights file), got '{args.name}'")
    if args.model and args.action != "import":
        raise InvalidArgumentError(f"--model is for weights import; weights {args.action} takes the model as NAME")
    if args.action in ("path", "download", "import") and not args.name:
        raise InvalidArgumentError("weights import needs the downloaded file: keras-zoo weights import FILE "
                                   "--model NAME" if args.action == "import" else
                                   f"weights {args.action} needs a model name")
    if args.action == "import":
        if not args.model:
            raise InvalidArgumentError("weights import needs --model NAME: the catalog entry the file belongs to")
        if not Path(args.name).expanduser().is_file():
            raise InvalidArgumentError(f"no such file: {args.name}; give the path of the downloaded weights file")
    name = args.model if args.action == "import" else args.name
    if name:
        spec, weight = resolve(name)
        if weight is None:
            raise InvalidArgumentError(f"{spec.arch} has no pretrained weights (`keras-zoo list --pretrained` "
                                       f"lists the models that have some)")


def _value(text: str):
    """A command-line value as YAML would read it: true/false, none/null, a number, else the text."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _listed(text: str) -> list | None:
    """Comma-separated values (``none`` for no list)."""
    return None if text.lower() in ("none", "null") else [_value(item) for item in text.split(",") if item]


def run_config(args: argparse.Namespace):
    """The run's ``RunConfig``: ``--config`` (else, without --model and --data, the bundled task) with the
    flags given on top. Checked before any TensorFlow import."""
    from zoo.config import RunConfig, fields
    from zoo.jobs import BUNDLED_TASK

    given = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not _UNSET}
    if args.config:
        values = RunConfig.from_yaml(args.config).as_dict()
    else:
        values = dict(BUNDLED_TASK) if not {"model", "data"} & set(given) else {}
    if args.workers:
        given.setdefault("strategy", "multi_worker")
    return RunConfig.from_dict({**values, **given}, where="options")


def _defaults_note(args: argparse.Namespace) -> str:
    """Which defaults a run's unset options take, said at the start of the run."""
    if args.config:
        return f"options: those in {args.config}, with the flags given on top"
    given = [f"--{k}" for k in ("model", "data") if getattr(args, k) is not _UNSET]
    if not given:
        return f"defaults: the bundled task's ({_bundled()}); flags given override them"
    return (f"defaults: FinetuneConfig's ({_config_defaults()}), as {' and '.join(given)} "
            f"{'is' if len(given) == 1 else 'are'} given (the bundled task's apply only with neither --model nor "
            f"--data); flags given override them")


def cmd_finetune(args) -> int:
    config = run_config(args)
    checks.run_config(config, args)
    from zoo.jobs import run_finetune

    log.info(_defaults_note(args))
    if args.workers:  # this machine's place in a multi-worker cluster, instead of a TF_CONFIG
        from zoo.distribute import tf_config

        os.environ["TF_CONFIG"] = tf_config(args.workers, args.worker_index)
    summary = run_finetune(config, overwrite=args.overwrite)
    print()
    if "knn_before_training" in summary:
        knn = summary["knn_before_training"]
        print(f"before training, kNN on the backbone's features: {knn['pretrained']:.3f} pretrained, "
              f"{knn['random init']:.3f} random init")
    print(f"{summary['model']} ({summary['recipe']}): {_accuracy(summary['test_accuracy'])}")
    if "baseline" in summary:
        b = summary["baseline"]
        print(f"{b['model']} from scratch (full, learning rate {b['learning_rate']:.2g} from lr_find, same "
              f"epochs): {_accuracy(b['test_accuracy'])}")
    if "curve" in summary:
        curve = summary["curve"]
        print(table(zip(curve["per_class"], curve["pretrained"], curve["scratch"]),
                    ["labels per class", "pretrained", "from scratch"]))
    print(f"time {summary['seconds']:.0f} s; run directory {summary['run_dir']}")
    return 0


def _accuracy(value) -> str:
    return "no test split (too few examples to hold one out)" if value is None else f"test accuracy {value:.3f}"


def _check_run(run: str) -> Path:
    """A finished run's directory: it holds model.keras."""
    path = Path(run).expanduser()
    if not path.is_dir():
        raise InvalidArgumentError(f"no run directory at {run}: give the directory of a finished run")
    if not (path / "model.keras").is_file():
        raise ZooError(f"{run} holds no model.keras: give the directory of a finished run")
    return path


def _run_model(run: str):
    import zoo

    return zoo.load_model(_check_run(run) / "model.keras", compile=False)


def _class_names(run: str, model) -> list[str]:
    """A run's class names (from its run.json), else the class indices."""
    import json

    from zoo.training.loop import RUN_INFO

    meta = Path(run) / RUN_INFO
    return (json.loads(meta.read_text()).get("class_names") if meta.is_file() else None) or \
        [str(i) for i in range(model.output.shape[-1])]


def cmd_evaluate(args) -> int:
    from zoo.config import RunConfig

    config = RunConfig.from_yaml(_check_run(args.run) / "config.yaml")
    if args.data is not None:
        checks.data_source(args.data)
    from zoo.data import load
    from zoo.evaluation import evaluate

    model = _run_model(args.run)
    same = args.data is None or args.data == config.data
    _, val, test, info = load(args.data or config.data, image_size=tuple(model.input_shape[1:3]),
                              channels=model.input_shape[3], batch_size=config.batch_size, shuffle=False,
                              **(config.split() if same else {"seed": config.seed}))
    if info.num_classes != model.output.shape[-1]:
        raise ZooError(f"the data has {info.num_classes} classes but the model predicts "
                       f"{model.output.shape[-1]}: give data with the run's classes")
    for name, split in (("validation", val), ("test", test)):
        if info.num_examples[name]:  # a split too small to hold out is empty
            scores = evaluate(model, split)
            print(f"{name}: accuracy {scores.accuracy:.4f}, loss {scores.loss:.4f}")
    return 0


def cmd_predict(args) -> int:
    _check_run(args.run)
    if bool(args.images) == bool(args.text):
        raise InvalidArgumentError("give image or .wav files, or texts with --text, to classify (not both)")
    for file in args.images:
        if not Path(file).expanduser().is_file():
            raise DataError(f"no such file: {file}")
    import numpy as np

    model = _run_model(args.run)
    names = _class_names(args.run, model)
    takes = "texts" if model.input.dtype == "string" else "sounds" if len(model.input.shape) == 2 else "images"
    if bool(args.text) != (takes == "texts"):
        raise InvalidArgumentError(f"{args.run}'s model takes {takes}: give "
                                   f"{'--text' if takes == 'texts' else f'{takes[:-1]} files'}")
    shown = args.text or args.images
    if takes == "texts":
        inputs = np.array(args.text, dtype=object)
    elif takes == "sounds":
        from zoo.audio_sources import read_clip

        inputs = np.stack([read_clip(Path(path).expanduser(), model) for path in args.images])
    else:
        from zoo.data import read_image

        size, channels = tuple(model.input_shape[1:3]), model.input_shape[3]
        inputs = np.stack([read_image(path, size, channels) for path in args.images])
    logits = model.predict(inputs, verbose=0)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for what, p in zip(shown, probs):
        top = np.argsort(p)[::-1][: args.top]
        print(f"{what}: " + ", ".join(f"{names[i]} {p[i]:.3f}" for i in top))
    return 0


def cmd_export(args) -> int:
    _check_run(args.run)
    out = Path(args.out or Path(args.run) / "export")
    checks.writable(out, "--out")
    if out.exists() and any(out.iterdir()):
        raise ZooError(f"{out} already exists and is not empty: choose another --out")
    model = _run_model(args.run)
    if args.preset:
        from zoo.hub import save_preset

        files = save_preset(model, out / "preset")
        print(f"keras-hub preset: {out / 'preset'} ({', '.join(files)})")
    model.export(str(out / "saved_model"), format="tf_saved_model", verbose=False)
    print(f"SavedModel: {out / 'saved_model'}")
    if args.tflite:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved_model"))
        (out / "model.tflite").write_bytes(converter.convert())
        print(f"TFLite: {out / 'model.tflite'}")
    return 0


def cmd_pretrain(args) -> int:
    if args.method == "mlm":
        return _pretrain_mlm(args)
    args.out = args.out or "resnet_tiny_digits.weights.h5"
    if not args.out.endswith(".weights.h5"):
        raise InvalidArgumentError(f"--out {args.out}: the file name must end in .weights.h5 (Keras's weights file)")
    if Path(args.out).exists():
        raise InvalidArgumentError(f"--out {args.out} exists: remove it first, or give another --out")
    checks.writable(args.out, "--out", folder=False)
    bundled = args.method == "supervised" and args.model is None and args.data is None and args.classes is None
    model, data = args.model or "resnet_tiny", args.data or "digits"
    if not bundled:
        resolve(model)
        checks.data_source(data)
        checks.known_classes(data, args.classes)
        if args.run_dir:
            checks.writable(args.run_dir, "--run-dir")
    if bundled:
        from zoo.jobs import pretrain

        path, digest = pretrain(args.out, epochs=args.epochs, seed=args.seed)
    else:
        from zoo.jobs import pretrain_backbone

        path, digest = pretrain_backbone(model, data, args.out, method=args.method, epochs=args.epochs,
                                         seed=args.seed, run_dir=args.run_dir, image_size=args.image_size,
                                         classes=args.classes, overwrite=args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB), sha256 {digest}")
    return 0


def _pretrain_mlm(args) -> int:
    """Masked-language-model pretraining of a small BERT; with no --data, the bundled bert_tiny.pydoc."""
    from zoo.corpus import SOURCE

    out = Path(args.out or "bert_tiny_pydoc")
    if args.model not in (None, "bert_tiny") or args.classes or args.image_size:
        raise InvalidArgumentError("--method mlm pretrains a BERT-tiny-sized text encoder: leave out --model, "
                                   "--classes and --image-size")
    if out.exists():
        raise InvalidArgumentError(f"--out {out} exists: remove it first, or give another --out")
    checks.writable(out, "--out")
    data = args.data or SOURCE
    if data != SOURCE:
        checks.data_source(data)
    from zoo import corpus
    from zoo.represent.mlm import pretrain_mlm

    if data == SOURCE:
        texts = corpus.pretraining()
    else:
        from zoo.data import load

        train = load(data, shuffle=False, val_fraction=0, test_fraction=0, batch_size=1024)[0]
        texts = [t.decode() for batch, _ in train for t in batch.numpy()]
    path, summary = pretrain_mlm(texts, out, epochs=args.epochs, seed=args.seed)
    print(f"wrote {path} ({', '.join(sorted(p.name for p in path.iterdir()))}): {summary}")
    return 0


def _representation_inputs(args, *models: str | None) -> dict:
    """Check the models, the data and the output of a representation command; return the data options."""
    for name in models:
        if name is not None and not (Path(name).expanduser().is_dir() or name.endswith(".keras")):
            resolve(name)
        elif name is not None and not Path(name).expanduser().exists():
            raise InvalidArgumentError(f"{name} does not exist: give a run directory, a .keras file or a catalog name")
    checks.data_source(args.data)
    checks.known_classes(args.data, args.classes)
    checks.writable(args.out, "--out", folder=False)
    return {"classes": args.classes, **({"per_class": args.per_class} if getattr(args, "per_class", None) else {})}


def cmd_embed(args) -> int:
    options = _representation_inputs(args, args.model)
    if args.projector:
        checks.writable(args.projector, "--projector")
    from zoo.represent.jobs import embed_job

    print(embed_job(args.model, args.data, out=args.out, split=args.split, layer=args.layer, plot=args.plot,
                    projector=args.projector, image_size=args.image_size, data_options=options))
    return 0


def cmd_probe(args) -> int:
    options = _representation_inputs(args, args.model)
    from zoo.represent.jobs import probe_job

    print(probe_job(args.model, args.data, out=args.out, k=args.k, image_size=args.image_size,
                    random=not args.no_random, stages=args.stages, data_options=options))
    return 0


def cmd_compare(args) -> int:
    options = _representation_inputs(args, args.model, args.other)
    from zoo.represent.jobs import compare_job

    print(compare_job(args.model, args.other, args.data, out=args.out, examples=args.examples,
                      batch_size=args.batch_size, image_size=args.image_size, stages=args.stages,
                      data_options=options))
    return 0


def cmd_explain(args) -> int:
    _check_run(args.run)
    for image in args.images:
        if not Path(image).expanduser().is_file():
            raise DataError(f"no such image file: {image}")
    if args.out_dir:
        checks.writable(args.out_dir, "--out-dir")
    from zoo.represent.saliency import explain_files

    model = _run_model(args.run)
    names = _class_names(args.run, model)
    explain_files(model, args.images, method=args.method, out_dir=args.out_dir, class_names=names)  # logs each file
    return 0


def cmd_tune(args) -> int:
    if not Path(args.space).is_file():
        raise InvalidArgumentError(f"--space {args.space}: no such file; give a YAML file mapping options to values")
    checks.data_source(args.data)
    checks.writable(args.directory, "--directory")
    if args.chief or args.worker:
        checks.address(args.oracle, "--oracle")
    import tuning  # layer 3: imported only for this command

    space = tuning.load_space(args.space)
    role = "chief" if args.chief else "worker" if args.worker else None
    result = tuning.search(args.data, space, tuner=args.tuner, objective=args.objective,
                           max_trials=args.max_trials, epochs=args.epochs,
                           image_size=tuple(args.image_size) if args.image_size else None,
                           directory=args.directory, overwrite=args.overwrite, seed=args.seed,
                           distributed=role, oracle_address=args.oracle, worker_id=args.worker_id)
    if role != "worker":
        print(result.table())
        print(f"best: {result.best_config}\nresults in {args.directory} (trials.csv, objective.png, best.yaml); "
              f"retrain with: keras-zoo finetune --config {args.directory}/best.yaml")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other refusal: ``keras-zoo: error: ... (see keras-zoo
    COMMAND --help)``, exit 2. The usage lives in ``--help``."""

    def error(self, message: str):
        self._fail(message, self.prog)

    def _fail(self, message: str, prog: str):
        self.exit(2, f"keras-zoo: error: {' '.join(message.split())} (see {prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:  # flags the command does not have: point at the command's help, not the top level's
            command = getattr(args, "command", None)
            where = f"{self.prog} {command}" if command else self.prog
            self._fail(f"unrecognized arguments: {' '.join(extras)}", where)
        return args


def _integer(least: int):
    """An argparse type: an integer of at least ``least``."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got '{text}'") from None
        if value < least:
            rule = "a positive integer" if least == 1 else f"{least} or more"
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    return integer


def _size(text: str) -> tuple[int, int]:
    """An argparse type: H,W in positive integers."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"must be H,W in positive integers (e.g. 32,32), got '{text}'")
    return int(parts[0]), int(parts[1])


def _finetune_help() -> str:
    """``keras-zoo finetune --help``'s description: which defaults apply when."""
    return textwrap.fill(
        f"Defaults: with neither --model nor --data (nor --config), the bundled task's: {_bundled()}. Once "
        f"--model or --data is given, unset options take FinetuneConfig's defaults, shown after each flag below "
        f"({_config_defaults()}). With --config, that file's values. Flags given override either; the run "
        f"says at its start which defaults it took.", 100)


def _bundled() -> str:
    from zoo.jobs import BUNDLED_TASK as task

    return (f"{task['model']} on {task['data']} classes {','.join(map(str, task['classes']))} with "
            f"{task['per_class']} labels per class, recipe {task['recipe']}, {task['epochs']} epochs, batch "
            f"{task['batch_size']}, learning rate {task['learning_rate']:g}, next to the same network from scratch")


def _config_defaults() -> str:
    from zoo.config import FinetuneConfig

    d = FinetuneConfig.defaults()
    return f"recipe {d['recipe']}, {d['epochs']} epochs, batch {d['batch_size']}, learning rate {d['learning_rate']:g}"


def parser() -> argparse.ArgumentParser:
    def sub(name, help_, example, fn, description=None):
        p = subs.add_parser(name, help=help_, description=description or help_, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(fn=fn)
        return p

    parser = _Parser(
        prog="keras-zoo", description="A Keras 3 model zoo and transfer-learning toolkit.",
        epilog=textwrap.dedent("""\
            examples:
              keras-zoo list "efficientnet*" --pretrained
              keras-zoo info resnet50"""),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    subs = parser.add_subparsers(dest="command", required=True)

    p = sub("list", "list catalog models", 'keras-zoo list "resnet*" --pretrained', cmd_list)
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'efficientnet*'")
    p.add_argument("--pretrained", action="store_true", help="only models with pretrained weights")
    p.add_argument("--family", help="only this family, e.g. resnet")
    p.add_argument("--source", help="only this source: keras.applications, keras-zoo or keras-hub")

    p = sub("info", "describe a catalog model", "keras-zoo info efficientnet_b0.imagenet", cmd_info)
    p.add_argument("name")

    p = sub("weights", "manage pretrained weight files",
            "keras-zoo weights import ~/Downloads/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 "
            "--model resnet50.imagenet", cmd_weights)
    p.add_argument("action", choices=["list", "path", "download", "import", "verify"])
    p.add_argument("name", nargs="?", help="model name (arch.tag), or for import the file")
    p.add_argument("--model", help="for import: the catalog entry the file belongs to")

    p = sub("finetune", "fine-tune a catalog model; with no arguments, the bundled offline task",
            "keras-zoo finetune --model efficientnet_b0.imagenet --data path/to/images --recipe two_phase "
            "--epochs 10", cmd_finetune,
            description="fine-tune a catalog model; with no arguments, the bundled offline task\n\n" + _finetune_help())
    p.add_argument("--config", help="a run's config.yaml: reproduce it (flags given here override it)")
    p.add_argument("--overwrite", action="store_true", help="replace what --run-dir holds when it cannot be "
                   "resumed (a finished run, other settings, damaged checkpoints)")
    p.add_argument("--workers", help="host:port,host:port,...: the cluster, for --strategy multi_worker")
    p.add_argument("--worker-index", type=_integer(0), default=0, help="this machine's index in --workers")
    _finetune_flags(p)

    p = sub("evaluate", "evaluate a finished run's model", "keras-zoo evaluate runs/my-run --data digits",
            cmd_evaluate)
    p.add_argument("run")
    p.add_argument("--data", help="data to evaluate on (default: the run's)")

    p = sub("predict", "classify image files, .wav files or texts with a run's model",
            "keras-zoo predict runs/my-run img1.jpg img2.png --top 3\n  keras-zoo predict runs/my-sound-run clip.wav\n"
            "  keras-zoo predict runs/my-text-run --text 'an example sentence'", cmd_predict)
    p.add_argument("run")
    p.add_argument("images", nargs="*", help="image files, or .wav files for a sound model")
    p.add_argument("--text", action="append", default=[], help="a text to classify (repeat for more)")
    p.add_argument("--top", type=_integer(1), default=3, help="how many classes to show per input (default 3)")

    p = sub("export", "export a run's model as a SavedModel (and TFLite, a keras-hub preset)",
            "keras-zoo export runs/my-run --tflite", cmd_export)
    p.add_argument("run")
    p.add_argument("--out", help="output folder (default RUN/export)")
    p.add_argument("--tflite", action="store_true", help="also write model.tflite")
    p.add_argument("--preset", action="store_true", help="also write a keras-hub preset (keras-hub backbones): "
                   "the backbone, and keras-hub's ImageClassifier where the head is one")

    p = sub("tune", "search hyperparameters of zoo models with keras-tuner",
            "keras-zoo tune --space space.yaml --data digits --tuner bayesian --max-trials 20", cmd_tune)
    p.add_argument("--space", required=True, help="a YAML file: backbone, learning_rate, dropout, ... "
                   "(a list is a choice, [low, high] a range, [low, high, log] a log range)")
    p.add_argument("--data", default="digits", help="folder, tfds:NAME, digits, ...")
    p.add_argument("--tuner", default="random", choices=TUNERS, help=", ".join(TUNERS))
    p.add_argument("--objective", default="val_accuracy", choices=list(OBJECTIVES), help=", ".join(OBJECTIVES))
    p.add_argument("--max-trials", type=_integer(1), default=10)
    p.add_argument("--epochs", type=_integer(1), default=6, help="epochs per trial (hyperband: the most)")
    p.add_argument("--image-size", type=_size, help="H,W for every backbone (default: each one's own)")
    p.add_argument("--directory", default="tuning_runs/search", help="results; a search there resumes")
    p.add_argument("--overwrite", action="store_true", help="start the search in --directory over")
    p.add_argument("--seed", type=_integer(0), default=0)
    role = p.add_mutually_exclusive_group()
    role.add_argument("--chief", action="store_true", help="serve trials to workers at --oracle")
    role.add_argument("--worker", action="store_true", help="run trials from the chief at --oracle")
    p.add_argument("--oracle", default="127.0.0.1:8000", help="host:port of the chief")
    p.add_argument("--worker-id", help="a name unique to this worker (default: host and process id)")

    p = sub("pretrain", "pretrain a backbone (SimCLR, supervised, or a text encoder by masked language modelling); "
            "with no --model, --data or --classes, rebuild the bundled resnet_tiny.digits checkpoint (seeded), or "
            "with --method mlm the bundled bert_tiny.pydoc",
            "keras-zoo pretrain --method simclr --model resnet_tiny --data digits --classes 0,1,2,3,4 "
            "--out ssl.weights.h5\n  keras-zoo pretrain --method mlm --out bert_tiny_pydoc", cmd_pretrain)
    p.add_argument("--method", default="supervised", choices=(*PRETRAIN_METHODS, "mlm"),
                   help="simclr: self-supervised, labels ignored; supervised: a classifier on the labels; mlm: "
                        "masked language modelling of a text encoder (--data: texts, default pydoc)")
    p.add_argument("--model", help="catalog architecture to pretrain from random initialisation (default resnet_tiny)")
    p.add_argument("--data", help="folder, tfds:NAME or digits (default digits)")
    p.add_argument("--classes", type=_listed, help="comma-separated subset of the data's classes")
    p.add_argument("--image-size", type=_size, help="H,W (default: the architecture's own)")
    p.add_argument("--out", help="a new .weights.h5 file: the backbone, for create_model(arch, pretrained=FILE) "
                   "(default resnet_tiny_digits.weights.h5); with --method mlm a new keras-hub preset folder, for "
                   "create_model(FOLDER) (default bert_tiny_pydoc)")
    p.add_argument("--epochs", type=_integer(1), default=15)
    p.add_argument("--seed", type=_integer(0), default=0)
    p.add_argument("--run-dir", help="checkpoint every epoch there; the same command resumes (not for the bundled "
                   "rebuild)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --run-dir")

    def representation(p, out: str, data_help: str = "data: folder, tfds:NAME or digits (default digits)"):
        p.add_argument("--data", default="digits", help=data_help)
        p.add_argument("--classes", type=_listed, help="comma-separated subset of the data's classes")
        p.add_argument("--image-size", type=_size, help="H,W (default: the model's own)")
        p.add_argument("--out", default=out, help=f"output file (default {out})")

    stages_help = ("comma-separated stage keys (strides, block names) or layer names (default: the catalog's "
                   "stages; a model without them needs this)")
    model_help = ("arch.tag (those weights), a bare arch (random initialisation), a finished run's directory or "
                  "a .keras file")
    p = sub("embed", "embed a split of a dataset with a model's features; save them, map them (t-SNE, UMAP)",
            "keras-zoo embed resnet_tiny.digits --data digits --out emb.npz --plot tsne", cmd_embed)
    p.add_argument("model", help=model_help)
    representation(p, "embeddings.npz")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--layer", help="a layer name: its output averaged over space or tokens (default: the "
                   "features the classifier reads)")
    p.add_argument("--plot", choices=EMBEDDING_MAPS, help="also draw a 2-D map next to --out")
    p.add_argument("--projector", help="also write TensorBoard projector files into this folder")

    p = sub("probe", "kNN and linear-probe accuracy at every stage, pretrained and at random initialisation",
            "keras-zoo probe resnet_tiny.digits --data digits --classes 5,6,7,8,9", cmd_probe)
    p.add_argument("model", help=model_help)
    representation(p, "probe.png")
    p.add_argument("--per-class", type=_integer(1), help="labelled examples per class the probes fit on")
    p.add_argument("--k", type=_integer(1), default=20, help="neighbours of the kNN probe (default 20, as DINO)")
    p.add_argument("--no-random", action="store_true", help="leave out the random-init twin")
    p.add_argument("--stages", type=_listed, help=stages_help)

    p = sub("compare", "linear CKA between the stages of two models (or of one against itself), as a heat map",
            "keras-zoo compare resnet_tiny.digits resnet_tiny --data digits", cmd_compare)
    p.add_argument("model", help=model_help)
    p.add_argument("other", nargs="?", help="the second model (default: the first against itself)")
    representation(p, "cka.png")
    p.add_argument("--examples", type=_integer(4), default=1000, help="test images to compare on (default 1000)")
    p.add_argument("--batch-size", type=_integer(4), default=250, help="minibatch of the CKA estimate (default 250)")
    p.add_argument("--stages", type=_listed, help=stages_help + "; with two models, the first one's")

    p = sub("explain", "saliency maps of a run's predictions, written as PNG overlays next to the images",
            "keras-zoo explain runs/my-run img1.png img2.jpg --method gradcam", cmd_explain)
    p.add_argument("run")
    p.add_argument("images", nargs="+")
    p.add_argument("--method", default="auto", choices=SALIENCY_METHODS,
                   help="auto: Grad-CAM for CNNs, attention rollout for ViTs, integrated gradients otherwise")
    p.add_argument("--out-dir", help="write the overlays here instead of next to the images")
    return parser


_UNSET = object()  # a flag not given: the config file's value, or the default


def _finetune_flags(p: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field: ``--field-name``, with the field's help and default."""
    import typing

    from zoo.config import RunConfig, fields

    defaults = RunConfig.defaults()
    for field in fields(RunConfig):
        flag, hint = "--" + field.name.replace("_", "-"), field.type
        text = f"{field.metadata['help']} (default: {_shown(defaults[field.name])})"
        kinds = {typing.get_origin(a) or a for a in typing.get_args(hint)} | {typing.get_origin(hint) or hint}
        if hint is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=_UNSET, help=text)
        elif kinds & {list, tuple}:
            p.add_argument(flag, type=_listed, default=_UNSET, help=text, metavar="A,B")
        else:
            p.add_argument(flag, type=_value, default=_UNSET, help=text, metavar="VALUE")


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad flag, already said on one line (2)
        return 0 if e.code is None else e.code
    for name in ("zoo", "tuning"):  # the library's log lines are the command's output
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Stdout) for h in logger.handlers):  # once, however often main runs
            logger.addHandler(_Stdout())
        logger.setLevel(logging.INFO)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("keras-zoo: interrupted: run the same command to resume", file=sys.stderr)
        return 130
    except (ZooError, OSError) as e:  # OSError: a full disk, a folder that cannot be written, ...
        if args.debug:
            raise
        print(f"keras-zoo: error: {_one_line(e)}", file=sys.stderr)
        return 2


class _Stdout(logging.StreamHandler):
    """A handler that writes to ``sys.stdout`` as it is when a line is logged (a redirect, a test's capture)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler sets it; the current sys.stdout is always used
        pass


def _one_line(error: Exception) -> str:
    """An error's message on one line; an OSError with its file and, for a full disk, what to do."""
    if isinstance(error, OSError) and not isinstance(error, ZooError):
        text = f"{error.filename}: {error.strerror}" if error.filename else str(error.strerror or error)
        if error.errno == errno.ENOSPC:
            text += ": free some space (the last good checkpoint is kept), then run the same command to resume"
        return text
    return " ".join(str(error).split())


if __name__ == "__main__":
    sys.exit(main())
