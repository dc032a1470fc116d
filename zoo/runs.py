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
