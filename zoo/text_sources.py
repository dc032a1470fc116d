"""Text sources for ``zoo.data.load``: a folder of class sub-folders of ``.txt`` files (Keras's
``text_dataset_from_directory`` convention), a CSV or JSONL file with ``text`` and ``label`` columns, and
``(texts, labels)`` lists. Each is read whole into memory (texts are small next to images) and becomes one part
that ``load`` splits, filters and batches as it does images.

Example:
    >>> train, val, test, info = zoo.data.load("reviews.csv", seed=0)
    >>> info.class_names
    ('negative', 'positive')
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import DataError

TABLES = (".csv", ".jsonl")
TEXT_COLUMN, LABEL_COLUMN = "text", "label"


def is_text_folder(root: Path) -> bool:
    """Whether a folder of class sub-folders holds texts: most of its files are ``.txt`` (a stray note among
    images leaves it a folder of images)."""
    files = [f for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") for f in d.rglob("*")
             if f.is_file()]
    return sum(f.suffix.lower() == ".txt" for f in files) * 2 > len(files)


def is_texts(pairs: Any) -> bool:
    """Whether ``(x, y)`` gives strings as ``x``."""
    return (isinstance(pairs, (tuple, list)) and len(pairs) == 2 and isinstance(pairs[0], (list, tuple, np.ndarray))
            and len(pairs[0]) > 0 and all(isinstance(t, str) for t in pairs[0]))


def read_folder(root: Path, strict: bool) -> tuple[list[str], list[str], list[str], tuple[str, ...]]:
    """(texts, class names, label names, files skipped) of a folder of class sub-folders of ``.txt`` files;
    files that are not UTF-8 are skipped with a warning naming them, or refused with ``strict``."""
    texts, labels, bad = [], [], []
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"{root} holds {len(classes)} class folder(s): put each class's .txt files in a sub-folder "
                        f"of its own (at least two classes), e.g. {root / 'positive'}/1.txt")
    for name in classes:
        files = sorted(f for f in (root / name).rglob("*.txt") if f.is_file())
        if not files:
            raise DataError(f"class folder {root / name} holds no .txt files: add some or remove the folder")
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                bad.append(str(f))
                continue
            texts.append(text)
            labels.append(name)
    if bad:
        listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        message = f"{len(bad)} file(s) in {root} are not UTF-8 text: {listed}"
        if strict:
            raise DataError(f"{message}; convert them to UTF-8 or remove them, or leave strict=False to skip them")
        warnings.warn(f"{message}; skipped them (strict=True refuses them)", stacklevel=6)  # load()'s caller
    return texts, classes, labels, tuple(bad)


def read_table(path: Path) -> tuple[list[str], list[Any]]:
    """(texts, labels) of a CSV file with a header, or a JSONL file of objects, with ``text`` and ``label``."""
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f)) if path.suffix.lower() == ".csv" else \
                [json.loads(line) for line in f if line.strip()]
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: not a JSON object ({e.msg}); give one object per line") from e
    columns = set(rows[0]) if rows and isinstance(rows[0], dict) else set()
    missing = [c for c in (TEXT_COLUMN, LABEL_COLUMN) if c not in columns]
    if missing or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path} has no column {', '.join(map(repr, missing or [TEXT_COLUMN]))} (its columns: "
                        f"{', '.join(sorted(columns)) or 'none'}): name the columns {TEXT_COLUMN} and {LABEL_COLUMN}")
    return [r.get(TEXT_COLUMN) for r in rows], [r.get(LABEL_COLUMN) for r in rows]


def labelled(texts: list, labels: list, where: str, class_names: list[str] | None = None
             ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Texts as an array of str, labels as class ids, and the class names: the sorted label names, or for
    integer labels their numbers. Refuses empty texts and labels of mixed types, naming the first."""
    if len(texts) != len(labels):
        raise DataError(f"{where} gives {len(texts)} texts but {len(labels)} labels: give one label per text")
    if not texts:
        raise DataError(f"{where} holds no texts")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: text {i} is empty ({text!r}); remove it or give it its text")
    labels = [_number(label) for label in labels]
    kinds = {type(label) for label in labels}
    if kinds - {int, str} or len(kinds) > 1:
        first = next(i for i, label in enumerate(labels) if type(label) is not type(labels[0]))
        raise DataError(f"{where} mixes label types ({labels[0]!r} and {labels[first]!r} at {first}): give every "
                        f"label as a class name, or every label as a class id")
    if kinds == {str}:
        names = class_names or sorted(set(labels))
        ids = np.array([names.index(label) for label in labels], np.int32)
    else:
        ids = np.array(labels, np.int32)
        if ids.min() < 0:
            raise DataError(f"{where}: label {ids.min()} is negative: labels are class ids 0..n-1 or class names")
        names = class_names or [str(i) for i in range(int(ids.max()) + 1)]
        if ids.max() >= len(names):
            raise DataError(f"{where}: label {ids.max()} is not a class id of {len(names)} classes")
    return np.array(texts, dtype=object), ids, tuple(names)


def _number(label: Any) -> Any:
    """A label as an int where it is one (``3``, ``"3"`` in a CSV, ``np.int64``), else as it is."""
    if isinstance(label, (bool, np.bool_)) or label is None:
        return label
    if isinstance(label, (int, np.integer)):
        return int(label)
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        return int(label)
    return label
