"""Run directories: files written atomically, the resumable state, history and metrics.

Every file is written through ``zoo.files`` (a temporary name, fsync, rename), so a killed process
never leaves half a checkpoint behind. Plots use matplotlib's ``Figure`` API, never pyplot's global state,
so a notebook's backend stays as it is.

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
from zoo.files import atomic_save, atomic_write

STATE = "state.json"
CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"


class RunExistsError(ZooError):
    """A finished run is never overwritten unless asked."""


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
        atomic_write(self.file(name), text)

    def save_arrays(self, name: str, arrays: dict[str, list[np.ndarray]]) -> None:
        """Save named lists of arrays (model weights, optimizer variables) in one ``.npz``."""
        flat = {f"{key}/{i:05d}": a for key, values in arrays.items() for i, a in enumerate(values)}
        buffer = io.BytesIO()
        np.savez(buffer, **flat)
        atomic_write(self.file(name), buffer.getvalue())

    def save_model(self, model, name: str = "model.keras") -> None:
        """``model.save`` to a temporary ``.keras`` file, then renamed into place."""
        atomic_save(self.file(name), model.save)

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
        atomic_write(self.file("history.csv"), buffer.getvalue())

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
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay as they are

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, np.nan) for row in history], style, marker="o", label=key)
        for before, row in zip(history, history[1:]):
            if row["phase"] != before["phase"]:
                ax.axvline(row["epoch"] - 0.5, color="grey", linewidth=0.8)
                ax.text(row["epoch"] - 0.4, ax.get_ylim()[1], row["phase"], va="top", fontsize=8)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} (phase '{history[0]['phase']}' first)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    atomic_save(path, fig.savefig)


def confusion_report(labels, predicted, class_names: list[str], path: Path,
                     title: str = "confusion matrix") -> np.ndarray:
    """Count true ``labels`` against ``predicted`` class indices over ``len(class_names)`` classes with
    ``sklearn.metrics.confusion_matrix``, draw it to ``path`` (``plot_confusion``) and return the matrix
    (rows: true class, columns: predicted)."""
    from sklearn.metrics import confusion_matrix

    n = len(class_names)
    matrix = confusion_matrix(np.asarray(labels).reshape(-1), np.asarray(predicted).reshape(-1), labels=range(n))
    plot_confusion(matrix, class_names, path, title)
    return matrix


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """A confusion matrix (rows: true class, columns: predicted), readable for long names and many classes:
    the figure grows with the class count and the longest name, x labels are rotated, and cell counts
    shrink with the class count and are left out beyond 30 classes."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay as they are
    from sklearn.metrics import ConfusionMatrixDisplay

    names = [str(c) for c in class_names]
    n = len(names)
    cell = max(0.2, min(0.6, 8.0 / max(n, 1)))  # inches per class
    grid = min(cell * n, 24.0)  # the matrix itself; beyond ~120 classes the cells shrink instead
    tick_size = max(4.0, min(9.0, 0.8 * 72 * grid / max(n, 1)))  # points; a label fits its cell
    label_inches = 0.6 * tick_size / 72 * max((len(c) for c in names), default=1)
    rotation = 0 if label_inches <= 0.9 * cell else 45 if n <= 12 and label_inches <= 1.5 else 90
    fig = Figure(figsize=(grid + label_inches + 2.2, grid + label_inches + 1.2), layout="constrained")
    ax = fig.subplots()
    show_counts = n <= 30
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=names).plot(
        ax=ax, cmap="Blues", colorbar=True, include_values=show_counts,
        xticks_rotation=rotation, text_kw={"fontsize": 9 if n <= 12 else 7 if n <= 20 else 6.5})
    ax.tick_params(labelsize=tick_size)
    if rotation == 45:  # the label's end, not its middle, under its column
        for label in ax.get_xticklabels():
            label.set(ha="right", rotation_mode="anchor")
    ax.set(xlabel="predicted", ylabel="true", title=title + ("" if show_counts else " (counts: colour only)"))
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))
