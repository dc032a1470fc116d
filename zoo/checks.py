"""Checks of a command's inputs made before any work, in pure Python (no TensorFlow import): a model
the catalog lacks, weights it does not have, data that is not there, a place that cannot be written,
a malformed cluster. The command line calls them before TensorFlow's start-up, the data loading and the
model building, so a refusal is one line and leaves nothing behind.

Example:
    >>> run_config(RunConfig(model="resnet_tiny.digits", data="path/to/images"))
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from zoo.config import MIN_EPOCHS, RunConfig
from zoo.corpus import SOURCE
from zoo.errors import DataError, InvalidArgumentError
from zoo.registry import requested_weights, resolve
from zoo.text_sources import TABLES


def run_config(config: RunConfig, args: argparse.Namespace | None = None) -> None:
    """Refuse, in pure Python and before any work, what a run would find out only after TensorFlow's
    start-up, the data loading and the model building: a model the catalog lacks, weights it does not
    have, an input size below the model's least, a recipe with too few epochs, data that is not there,
    a run directory that cannot be written, a malformed cluster."""
    spec, weight = resolve(config.model)
    requested_weights(spec, weight, config.model, config.pretrained)
    size = config.image_size or spec.image_size(weight if config.pretrained is True else None)  # as run_finetune builds
    if min(size) < spec.min_input_size:
        least = spec.min_input_size
        raise InvalidArgumentError(f"--image-size {size[0]},{size[1]} is below {spec.arch}'s least input size "
                                   f"{least}x{least}: give a larger --image-size")
    if config.epochs < MIN_EPOCHS.get(config.recipe, 1):
        raise InvalidArgumentError(f"recipe '{config.recipe}' needs at least {MIN_EPOCHS[config.recipe]} epochs "
                                   f"(head first, then more), got --epochs {config.epochs}")
    data_source(config.data)
    known_classes(config.data, config.classes)
    writable(config.run_dir or "runs", "--run-dir")
    if args is not None and args.workers:
        cluster(args.workers, args.worker_index, config.strategy)
    elif args is not None and args.worker_index:
        raise InvalidArgumentError("--worker-index is this machine's place in --workers: give --workers too")


def data_source(data: str, flag: str = "--data") -> None:
    """A data source as the command line names it: ``digits``, ``pydoc``, ``tfds:NAME``, an existing folder, or a
    CSV or JSONL file of texts."""
    if data in ("digits", SOURCE):
        return
    if data.startswith("tfds:"):
        if not data[len("tfds:"):].strip(" /"):
            raise InvalidArgumentError(f"{flag} {data}: give a dataset name, e.g. tfds:tf_flowers")
        return
    path = Path(data).expanduser()
    if path.suffix.lower() in TABLES and path.is_file():
        return
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise DataError(f"{flag} {data} {what}: give a folder with one sub-folder per class, a .csv or .jsonl file "
                        f"of texts, digits, pydoc, or tfds:NAME")


def known_classes(data: str, classes) -> None:
    """``--classes`` against the class names of the sources that list them without TensorFlow."""
    if not classes or data.startswith("tfds:") or data == SOURCE or Path(data).suffix.lower() in TABLES:
        return  # names that only reading the data tells: zoo.data.load checks them
    if data == "digits":
        names = [str(i) for i in range(10)]
    else:
        names = sorted(d.name for d in Path(data).expanduser().iterdir() if d.is_dir() and not d.name.startswith("."))
    for c in classes:
        if not (str(c) in names or (isinstance(c, int) and 0 <= c < len(names))):
            listed = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise DataError(f"--classes: {data} has no class {c!r}; its classes: {listed}")


def writable(path: str | os.PathLike, flag: str, *, folder: bool = True) -> None:
    """Refuse a place the command could not write: a file where a folder goes (or a folder where a file goes),
    a file on the way to it, or a folder that cannot be written in (read-only, /proc, ...). The test makes and
    removes a temporary folder in the deepest folder that exists, so nothing is left behind."""
    path = Path(path).expanduser().absolute()
    if path.exists() and path.is_dir() != folder:
        raise InvalidArgumentError(f"{flag} {path} is a {'file' if folder else 'folder'}: give a "
                                   f"{'folder' if folder else 'file name'}")
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise InvalidArgumentError(f"{flag} {path}: {parent} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".keras-zoo-probe-", dir=parent))
    except OSError as e:
        raise InvalidArgumentError(f"{flag} {path}: cannot write in {parent} ({e.strerror or e})") from None


def address(text: str, flag: str) -> None:
    host, _, port = text.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgumentError(f"{flag}: '{text}' is not host:port (e.g. 10.0.0.1:12345)")


def cluster(workers: str, index: int, strategy) -> None:
    hosts = [w for w in workers.split(",") if w.strip()]
    if not hosts:
        raise InvalidArgumentError("--workers: give host:port,host:port,... (every machine of the cluster)")
    for host in hosts:
        address(host, "--workers")
    if not 0 <= index < len(hosts):
        raise InvalidArgumentError(f"--worker-index {index}: --workers lists {len(hosts)} machine(s), so use "
                                   f"0..{len(hosts) - 1}")
    if strategy != "multi_worker":
        raise InvalidArgumentError(f"--workers trains on a cluster: it needs --strategy multi_worker, not {strategy}")
