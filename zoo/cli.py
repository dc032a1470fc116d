"""The ``keras-zoo`` command. Errors a user can cause print one line on stderr and exit with 2."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap

from zoo.errors import ZooError
from zoo.registry import list_models, model_info, resolve, specs


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def cmd_list(args) -> int:
    names = list_models(args.pattern, pretrained=True if args.pretrained else None, family=args.family)
    rows = []
    for name in names:
        spec, weight = resolve(name)
        h, w, c = spec.input_size
        rows.append([name, spec.family, f"{h}x{w}x{c}", weight.dataset if weight else "-", spec.source])
    print(_table(rows, ["model", "family", "input", "pretrained on", "source"]))
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
        print(_table(rows, ["model", "state", "path"]))
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


def _need(value, action):
    if not value:
        raise ZooError(f"weights {action} needs a model name (or a file, for import)")
    return value


def _parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users
    args = _parser().parse_args(argv)
    try:
        return args.fn(args)
    except ZooError as e:
        if args.debug:
            raise
        print(f"keras-zoo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
