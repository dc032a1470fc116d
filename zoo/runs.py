"""Run directories: files written atomically, the resumable state, history and metrics.

Every file is written to a temporary name and renamed, so a killed process never leaves half a
checkpoint behind.

Example:
    >>> run = RunDir("runs/flowers")
    >>> run.write_json("metrics.json", {"test_accuracy": 0.9})
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

STATE = "state.json"
CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"


class RunExistsError(ZooError):
    """A finished run is never overwritten unless asked."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


class RunDir:
    """A run's folder: ``state.json``, checkpoints (``.npz``), ``history.csv``, ``metrics.json``..."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self, name: str) -> bool:
        return self.file(name).exists()

    def write_json(self, name: str, obj) -> None:
        atomic_write(self.file(name), json.dumps(obj, indent=2, default=_plain).encode())

    def read_json(self, name: str, default=None):
        return json.loads(self.file(name).read_text()) if self.exists(name) else default

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.file(name), text.encode())

    def save_arrays(self, name: str, arrays: dict[str, list[np.ndarray]]) -> None:
        """Save named lists of arrays (model weights, optimizer variables) in one ``.npz``."""
        flat = {f"{key}/{i:05d}": a for key, values in arrays.items() for i, a in enumerate(values)}
        buffer = io.BytesIO()
        np.savez(buffer, **flat)
        atomic_write(self.file(name), buffer.getvalue())

    def load_arrays(self, name: str) -> dict[str, list[np.ndarray]]:
        with np.load(self.file(name)) as data:
            out: dict[str, list[np.ndarray]] = {}
            for key in sorted(data.files):
                out.setdefault(key.rsplit("/", 1)[0], []).append(data[key])
        return out

    def write_history(self, rows: list[dict]) -> None:
        if not rows:
            return
        keys = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        self.write_text("history.csv", buffer.getvalue())

    def claim(self, overwrite: bool) -> dict | None:
        """The state of an unfinished run to resume, or None to start; refuses a finished run."""
        state = self.read_json(STATE)
        if state and state.get("finished"):
            if not overwrite:
                raise RunExistsError(f"{self.path} holds a finished run: pick another run directory, or pass "
                                     f"overwrite=True (--overwrite) to replace it")
            for name in (STATE, CHECKPOINT, BEST):
                self.file(name).unlink(missing_ok=True)
            return None
        return state


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, tuple, set)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch (train and validation), with phase changes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, np.nan) for row in history], style, marker="o", label=key)
        for before, row in zip(history, history[1:]):
            if row["phase"] != before["phase"]:
                ax.axvline(row["epoch"] - 0.5, color="grey", linewidth=0.8)
                ax.text(row["epoch"] - 0.4, ax.get_ylim()[1], row["phase"], va="top", fontsize=8)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} (phase '{history[0]['phase']}' first)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """A confusion matrix with counts in the cells (rows: true class, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * n, 0.8 + 0.5 * n))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title=title)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, int(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
