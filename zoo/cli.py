"""The ``keras-zoo`` command. Errors a user can cause print one line on stderr and exit with 2."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap

from zoo.errors import ZooError
from zoo.registry import list_models, model_info, resolve, specs
from zoo.text import table


def cmd_list(args) -> int:
    names = list_models(args.pattern, pretrained=True if args.pretrained else None, family=args.family)
    rows = []
    for name in names:
        spec, weight = resolve(name)
        h, w, c = spec.input_size
        rows.append([name, spec.family, f"{h}x{w}x{c}", weight.dataset if weight else "-", spec.source])
    print(table(rows, ["model", "family", "input", "pretrained on", "source"]))
    print(f"{len(rows)} models")
    return 0


def cmd_info(args) -> int:
    info = model_info(args.name)
    w = info["weights"]
    stages = ", ".join(f"{k}: {v}" for k, v in info["stages"].items()) or "-"
    lines = [
        ("name", info["name"]), ("family", info["family"]), ("source", info["source"]),
        ("input size", "x".join(map(str, info["input_size"])) + f" (at least {info['min_input_size']})"),
        ("preprocessing", info["preprocessing"]), ("stages", stages), ("first conv", info["first_conv"] or "-"),
        ("pooling", info["pooling"]), ("tags", ", ".join(info["tags"]) or "none (random weights only)"),
    ]
    if w:
        lines += [("weights file", w["file_name"]), ("url", w["url"] or "bundled with the package"),
                  ("hash", w["file_hash"] or "none"), ("verification", w["verification"]),
                  ("trained on", f"{w['dataset']} ({w['num_classes']} classes)"), ("licence", w["license"])]
    print("\n".join(f"{k:14} {v}" for k, v in lines))
    return 0


def cmd_weights(args) -> int:
    from zoo import weights

    if args.action == "list":
        rows = []
        for spec in specs():
            for w in spec.weights:
                st = weights.status(f"{spec.arch}.{w.tag}")
                state = "missing" if not st["present"] else {True: "ok", False: "BAD HASH", None: "unverifiable"}[
                    st["verified"]]
                rows.append([st["name"], state, st["path"]])
        print(table(rows, ["model", "state", "path"]))
    elif args.action == "path":
        print(weights.local_path(resolve(_need(args.name, "path"))[1]))
    elif args.action == "download":
        print(weights.resolve(_need(args.name, "download")))
    elif args.action == "import":
        if not args.model:
            raise ZooError("weights import needs --model NAME: the catalog entry the file belongs to")
        print(weights.import_file(_need(args.name, "import"), args.model))
    elif args.action == "verify":
        names = [args.name] if args.name else [f"{s.arch}.{w.tag}" for s in specs() for w in s.weights]
        bad = []
        for name in names:
            st = weights.status(name)
            if st["present"]:
                print(f"{name}: {'ok' if st['verified'] is not False else 'BAD HASH'} {st['path']}")
                bad += [name] if st["verified"] is False else []
        if bad:
            raise ZooError(f"{len(bad)} file(s) do not match their hash: delete them and download again")
    return 0


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


def cmd_finetune(args) -> int:
    from zoo.jobs import run_finetune

    config = run_config(args)
    if args.workers:  # this machine's place in a multi-worker cluster, instead of a TF_CONFIG
        from zoo.distribute import tf_config

        os.environ["TF_CONFIG"] = tf_config(args.workers, args.worker_index)
    summary = run_finetune(config, overwrite=args.overwrite)
    print(f"\n{summary['model']} ({summary['recipe']}): test accuracy {summary['test_accuracy']:.3f}")
    if "baseline" in summary:
        b = summary["baseline"]
        print(f"{b['model']} from scratch (full, learning rate {b['learning_rate']:.2g} from lr_find, same "
              f"epochs): test accuracy {b['test_accuracy']:.3f}")
    print(f"time {summary['seconds']:.0f} s; run directory {summary['run_dir']}")
    return 0


def _run_model(run: str):
    from pathlib import Path

    import zoo

    path = Path(run) / "model.keras"
    if not path.is_file():
        raise ZooError(f"{run} holds no model.keras: give the directory of a finished run")
    return zoo.load_model(path, compile=False)


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from zoo.config import RunConfig
    from zoo.data import load
    from zoo.evaluation import evaluate

    model = _run_model(args.run)
    config = RunConfig.from_yaml(Path(args.run) / "config.yaml")
    same = args.data is None or args.data == config.data
    _, val, test, info = load(args.data or config.data, image_size=tuple(model.input_shape[1:3]),
                              channels=model.input_shape[3], batch_size=config.batch_size, shuffle=False,
                              seed=config.seed, classes=config.classes if same else None,
                              per_class=config.per_class if same else None)
    if info.num_classes != model.output.shape[-1]:
        raise ZooError(f"the data has {info.num_classes} classes but the model predicts "
                       f"{model.output.shape[-1]}: give data with the run's classes")
    for name, split in (("validation", val), ("test", test)):
        if split is not None:
            scores = evaluate(model, split)
            print(f"{name}: accuracy {scores.accuracy:.4f}, loss {scores.loss:.4f}")
    return 0


def cmd_predict(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from zoo.data import read_image
    from zoo.training.loop import RUN_INFO

    model = _run_model(args.run)
    meta = Path(args.run) / RUN_INFO
    names = (json.loads(meta.read_text()).get("class_names") if meta.is_file() else None) or \
        [str(i) for i in range(model.output.shape[-1])]
    size, channels = tuple(model.input_shape[1:3]), model.input_shape[3]
    images = np.stack([read_image(path, size, channels) for path in args.images])
    logits = model.predict(images, verbose=0)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    for path, p in zip(args.images, probs):
        top = np.argsort(p)[::-1][: args.top]
        print(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.3f}" for i in top))
    return 0


def cmd_export(args) -> int:
    from pathlib import Path

    out = Path(args.out or Path(args.run) / "export")
    if out.exists() and any(out.iterdir()):
        raise ZooError(f"{out} already exists and is not empty: choose another --out")
    model = _run_model(args.run)
    model.export(str(out / "saved_model"), format="tf_saved_model", verbose=False)
    print(f"SavedModel: {out / 'saved_model'}")
    if args.tflite:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved_model"))
        (out / "model.tflite").write_bytes(converter.convert())
        print(f"TFLite: {out / 'model.tflite'}")
    return 0


def cmd_pretrain(args) -> int:
    from zoo.jobs import pretrain

    path, digest = pretrain(args.out, epochs=args.epochs, seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB), sha256 {digest}")
    return 0


def cmd_tune(args) -> int:
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


def _need(value, action):
    if not value:
        raise ZooError(f"weights {action} needs a model name (or a file, for import)")
    return value


def parser() -> argparse.ArgumentParser:
    def sub(name, help_, example, fn):
        p = subs.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(fn=fn)
        return p

    parser = argparse.ArgumentParser(
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
            "--epochs 10", cmd_finetune)
    p.add_argument("--config", help="a run's config.yaml: reproduce it (flags given here override it)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --run-dir")
    p.add_argument("--workers", help="host:port,host:port,...: the cluster, for --strategy multi_worker")
    p.add_argument("--worker-index", type=int, default=0, help="this machine's index in --workers")
    _finetune_flags(p)

    p = sub("evaluate", "evaluate a finished run's model", "keras-zoo evaluate runs/my-run --data digits",
            cmd_evaluate)
    p.add_argument("run")
    p.add_argument("--data", help="data to evaluate on (default: the run's)")

    p = sub("predict", "classify image files with a run's model",
            "keras-zoo predict runs/my-run img1.jpg img2.png --top 3", cmd_predict)
    p.add_argument("run")
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=3)

    p = sub("export", "export a run's model as a SavedModel (and TFLite)",
            "keras-zoo export runs/my-run --tflite", cmd_export)
    p.add_argument("run")
    p.add_argument("--out", help="output folder (default RUN/export)")
    p.add_argument("--tflite", action="store_true", help="also write model.tflite")

    p = sub("tune", "search hyperparameters of zoo models with keras-tuner",
            "keras-zoo tune --space space.yaml --data digits --tuner bayesian --max-trials 20", cmd_tune)
    p.add_argument("--space", required=True, help="a YAML file: backbone, learning_rate, dropout, ... "
                   "(a list is a choice, [low, high] a range, [low, high, log] a log range)")
    p.add_argument("--data", default="digits", help="folder, tfds:NAME, digits, ...")
    p.add_argument("--tuner", default="random", help="random, bayesian, hyperband or grid")
    p.add_argument("--objective", default="val_accuracy")
    p.add_argument("--max-trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=6, help="epochs per trial (hyperband: the most)")
    p.add_argument("--image-size", type=_listed, help="H,W for every backbone (default: each one's own)")
    p.add_argument("--directory", default="tuning_runs/search", help="results; a search there resumes")
    p.add_argument("--overwrite", action="store_true", help="start the search in --directory over")
    p.add_argument("--seed", type=int, default=0)
    role = p.add_mutually_exclusive_group()
    role.add_argument("--chief", action="store_true", help="serve trials to workers at --oracle")
    role.add_argument("--worker", action="store_true", help="run trials from the chief at --oracle")
    p.add_argument("--oracle", default="127.0.0.1:8000", help="host:port of the chief")
    p.add_argument("--worker-id", help="a name unique to this worker (default: host and process id)")

    p = sub("pretrain", "rebuild the bundled resnet_tiny.digits checkpoint (seeded)",
            "keras-zoo pretrain --out zoo/pretrained/resnet_tiny_digits.weights.h5", cmd_pretrain)
    p.add_argument("--out", default="resnet_tiny_digits.weights.h5")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
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
    args = parser().parse_args(argv)
    for name in ("zoo", "tuning"):  # the library's log lines are the command's output
        logger = logging.getLogger(name)
        logger.addHandler(logging.StreamHandler(sys.stdout))
        logger.setLevel(logging.INFO)
    try:
        return args.fn(args)
    except ZooError as e:
        if args.debug:
            raise
        print(f"keras-zoo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
