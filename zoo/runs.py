"""Run directories: files written atomically, the resumable state, history and metrics.

Every file is written through ``zoo.files`` (a temporary name, fsync, rename), so a killed process
never leaves half a checkpoint behind. Plots use matplotlib's ``Figure`` API, never pyplot's global state,
so a notebook's backend stays as it is.

A run directory is also:

- locked while a process writes it (``RunDir.lock``): an OS lock on ``.lock`` inside it, which the kernel
  drops when the process ends, even by SIGKILL, so a killed run never blocks its own resume; a second
  process is refused at once (``RunLockedError``).
- tied to what it is (``fingerprint.json``: the model, the data, every option that changes the result,
  written when the run starts): ``RunDir.open`` refuses to resume it with other settings, naming them
  (``RunMismatchError``).
- checkpointed in self-checking files: every ``.npz`` holds the sha256 of its arrays, and the file it
  replaces is kept as ``NAME.prev.npz``; a truncated or damaged file is detected when it is read, and the
  previous good one is used, or the run is refused in one line (``RunDamagedError``), never loaded.

Example:
    >>> run = RunDir("runs/flowers")
    >>> with run.lock():
    ...     run.write_json("metrics.json", {"test_accuracy": 0.9})
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from zoo.errors import ZooError
from zoo.files import LockHeldError, atomic_save, atomic_write, lock_file, lock_is_held, unlock_file

STATE = "state.json"
CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"
FINGERPRINT = "fingerprint.json"
LOCK = ".lock"
CHECKSUM = "sha256"  # the key, in every .npz, of the sha256 of its other arrays


def previous(name: str) -> str:
    """The file that keeps the last good version of ``name``: ``checkpoint.npz`` -> ``checkpoint.prev.npz``."""
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.prev.{suffix}" if dot else f"{name}.prev"


# what a run writes (the command line's reports besides): removed when a run starts afresh
RUN_FILES = (STATE, CHECKPOINT, previous(CHECKPOINT), BEST, previous(BEST), FINGERPRINT, "config.yaml", "run.json",
             "history.csv", "metrics.json", "model.keras")


class RunExistsError(ZooError):
    """A finished run is never overwritten unless asked."""


class RunMismatchError(ZooError):
    """An unfinished run resumed with other settings (model, data, options) than it started with."""


class RunLockedError(ZooError):
    """The run directory is in use by another process."""


class RunDamagedError(ZooError):
    """A checkpoint that is truncated or damaged (its checksum does not match), with no good one to fall back on."""


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

    def save_arrays(self, name: str, arrays: dict[str, list[np.ndarray]], keep_previous: bool = False) -> None:
        """Save named lists of arrays (model weights, optimizer variables) in one ``.npz``, with their
        sha256; ``keep_previous``: the file it replaces is kept as ``previous(name)`` (renamed, not copied)."""
        flat = {f"{key}/{i:05d}": np.asarray(a) for key, values in arrays.items() for i, a in enumerate(values)}
        flat[CHECKSUM] = np.array(_digest(flat))
        buffer = io.BytesIO()
        np.savez(buffer, **flat)
        atomic_write(self.file(name), buffer.getvalue(), keep=self.file(previous(name)) if keep_previous else None)

    def save_model(self, model, name: str = "model.keras") -> None:
        """``model.save`` to a temporary ``.keras`` file, then renamed into place."""
        atomic_save(self.file(name), model.save)

    def load_arrays(self, name: str) -> dict[str, list[np.ndarray]]:
        """The arrays ``save_arrays`` saved; ``RunDamagedError`` if the file is truncated or its checksum differs."""
        path = self.file(name)
        try:
            with np.load(path) as data:
                flat = {key: data[key] for key in data.files}
        except FileNotFoundError:
            raise
        except Exception as e:  # a truncated zip, a bad CRC, an unreadable file: never loaded
            raise RunDamagedError(f"{path} is damaged ({type(e).__name__}: {' '.join(str(e).split())[:80]})") from None
        recorded = flat.pop(CHECKSUM, None)
        if recorded is None or str(recorded) != _digest(flat):
            raise RunDamagedError(f"{path} is damaged (its checksum does not match its content)")
        out: dict[str, list[np.ndarray]] = {}
        for key in sorted(flat):
            out.setdefault(key.rsplit("/", 1)[0], []).append(flat[key])
        return out

    def load_good(self, name: str, check: Callable[[dict], str | None] | None = None
                  ) -> tuple[dict[str, list[np.ndarray]] | None, str | None, list[str]]:
        """The arrays of ``name``, or of ``previous(name)`` where ``name`` is missing, damaged or fails ``check``
        (which returns what is wrong, or None): (arrays, the file's name, what was wrong with the files passed
        over); (None, None, problems) if neither will do."""
        problems = []
        for candidate in (name, previous(name)):
            if not self.exists(candidate):
                continue
            try:
                arrays = self.load_arrays(candidate)
            except RunDamagedError as e:
                problems.append(str(e))
                continue
            problem = check(arrays) if check is not None else None
            if problem is None:
                return arrays, candidate, problems
            problems.append(f"{self.file(candidate)}: {problem}")
        return None, None, problems

    def write_history(self, rows: list[dict]) -> None:
        if not rows:
            return
        keys = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.file("history.csv"), buffer.getvalue())

    # ------------------------------------------------------------------ one writer at a time

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the run directory's lock for the block: ``RunLockedError`` at once if another process holds it.

        The lock is an OS file lock on ``.lock`` (``zoo.files.lock_file``), taken before anything else is
        written; the kernel releases it when the process ends, however it ends. It is re-entrant within a
        thread (``zoo.finetune`` inside a job that holds it). A block that fails, in a directory this call
        created and where nothing but the lock was written, leaves no directory behind.
        """
        key, me = str(self.path.resolve()), threading.get_ident()
        with _HELD_GUARD:
            holder = _HELD.get(key)
        if holder == me:  # held by this thread, further out: it releases it
            yield self
            return
        if holder is not None:
            raise RunLockedError(self._busy("another thread of this process"))
        made = _missing_folders(self.path)
        try:
            fd = lock_file(self.file(LOCK))
        except LockHeldError as e:
            raise RunLockedError(self._busy(f"process {e.holder}" if e.holder else "")) from None
        except BaseException:
            _remove_folders(made)
            raise
        with _HELD_GUARD:
            _HELD[key] = me
        failed = True
        try:
            yield self
            failed = False
        finally:
            with _HELD_GUARD:
                del _HELD[key]
            empty = failed and bool(made) and self._holds_only_the_lock()
            unlock_file(fd, remove=self.file(LOCK) if empty else None)
            if empty:
                _remove_folders(made)

    def _holds_only_the_lock(self) -> bool:
        try:
            return [p.name for p in self.path.iterdir()] == [LOCK]
        except OSError:
            return False

    def check_free(self) -> None:
        """``RunLockedError`` if another process holds the lock now; creates and writes nothing (a quick
        check before long preparations; ``lock`` is what excludes)."""
        with _HELD_GUARD:
            if str(self.path.resolve()) in _HELD:
                return
        holder = lock_is_held(self.file(LOCK))
        if holder is not None:
            raise RunLockedError(self._busy(f"process {holder}" if holder else ""))

    def _busy(self, who: str) -> str:
        return (f"{self.path} is in use by another run{f' ({who})' if who else ''}: wait for it to finish, or "
                f"choose another run directory (--run-dir)")

    # ------------------------------------------------------------------ start, resume, finish

    def open(self, fingerprint: dict, overwrite: bool, check: Callable[[dict], str | None] | None = None
             ) -> tuple[dict[str, list[np.ndarray]], str, list[str]] | None:
        """Start or resume the run described by ``fingerprint``; call it holding ``lock()``.

        Returns the checkpoint to resume from, as ``load_good(CHECKPOINT, check)`` does, or None: the run
        starts afresh (what an earlier run left is removed and ``fingerprint.json`` written). A finished run,
        an unfinished one with another fingerprint and one with no good checkpoint are refused in one line, or
        with ``overwrite`` replaced; an unfinished run with the same fingerprint resumes, ``overwrite`` or not,
        so the same command resumes a run it started. A run killed before its first checkpoint has nothing to
        resume: it starts afresh, whatever its settings were.
        """
        self._remove_partials()
        fingerprint = json.loads(json.dumps(fingerprint, default=_loose))
        state = self._read_or_none(STATE) or {}
        old = self._read_or_none(FINGERPRINT)
        checkpoints = [n for n in (CHECKPOINT, previous(CHECKPOINT)) if self.exists(n)]
        again = "pass overwrite=True (--overwrite) to start it over, or choose another run directory (--run-dir)"
        if state.get("finished"):
            if not overwrite:
                raise RunExistsError(f"{self.path} holds a finished run: pick another run directory, or pass "
                                     f"overwrite=True (--overwrite) to replace it")
        elif state or checkpoints:  # something to resume (a run killed before its first checkpoint starts afresh)
            if not isinstance(old, dict):
                if not overwrite:
                    raise RunMismatchError(f"{self.path} holds an unfinished run whose settings are unknown (no "
                                           f"readable {FINGERPRINT}): {again}")
            elif differences := _differences(old, fingerprint):
                if not overwrite:
                    raise RunMismatchError(f"{self.path} holds an unfinished run with other settings "
                                           f"({_describe(differences)}): to resume it, give the same options; or "
                                           f"{again}")
            else:
                arrays, name, problems = self.load_good(CHECKPOINT, check)
                if arrays is not None:
                    return arrays, name, problems
                if not overwrite:
                    problems = problems or [f"{STATE} but no {CHECKPOINT}"]
                    raise RunDamagedError(f"the run in {self.path} cannot be resumed: {'; '.join(problems)}: delete "
                                          f"the run directory, or {again}")
        self.clear()
        self.write_json(FINGERPRINT, fingerprint)
        return None

    def clear(self) -> None:
        """Remove what a run wrote (``RUN_FILES``); other files (the command line's reports, logs) stay."""
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)

    def finish(self) -> None:
        """Mark the run finished (``zoo.finetune(..., finish=False)`` leaves that to its caller)."""
        state = self.read_json(STATE)
        if state is not None and not state.get("finished"):
            self.write_json(STATE, {**state, "finished": True})

    def _read_or_none(self, name: str):
        try:
            return self.read_json(name)
        except (ValueError, OSError):  # unreadable: as if missing
            return None

    def _remove_partials(self) -> None:
        """Temporary files of writes a killed process left (``zoo.files`` names them ``.NAME.*.partial``)."""
        if self.path.is_dir():
            for leftover in self.path.glob(".*.partial"):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)


_HELD: dict[str, int] = {}  # run directory -> the thread that holds its lock, for the locks this process holds
_HELD_GUARD = threading.Lock()


def _missing_folders(path: Path) -> list[Path]:
    """The folders up to ``path`` that do not exist yet, innermost first."""
    missing, folder = [], path.absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _digest(flat: dict[str, np.ndarray]) -> str:
    """sha256 of named arrays: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for key in sorted(k for k in flat if k != CHECKSUM):
        a = np.ascontiguousarray(flat[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fields(fingerprint: dict) -> dict:
    """``{"section.field": value}``: a fingerprint's sections (model, data, options...) flattened one level."""
    return {f"{section}.{key}": value for section, fields in fingerprint.items()
            for key, value in (fields.items() if isinstance(fields, dict) else [("", fields)])}


def _differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    a, b = _fields(old), _fields(new)
    return [(key, a.get(key), b.get(key)) for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]


def _describe(differences: list[tuple[str, object, object]], most: int = 3) -> str:
    def short(value) -> str:
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."

    parts = [f"{key.removeprefix('options.')}: {short(old)} there, {short(new)} now"
             for key, old, new in differences[:most]]
    more = len(differences) - most
    return "; ".join(parts) + (f"; and {more} more, see {FINGERPRINT}" if more > 0 else "")


def _loose(value):
    """For a fingerprint: plain values as ``_plain`` makes them, anything else by its text."""
    try:
        return _plain(value)
    except TypeError:
        return str(value)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (Path, tuple, set)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def plot_curves(history: list[dict], path: Path, baseline: list[dict] | None = None) -> None:
    """Loss and accuracy per epoch (train and validation), with phase changes marked; with ``baseline`` (the
    history of the same network trained from scratch) its curves beside the run's, in grey."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures stay as they are

    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        lines = ((history, None, "this run: " if baseline else ""), (baseline or [], "grey", "from scratch: "))
        for rows, colour, name in lines:
            epochs = [row["epoch"] for row in rows]
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                if any(key in row for row in rows):
                    ax.plot(epochs, [row.get(key, np.nan) for row in rows], style, marker="o", markersize=4,
                            color=colour, label=name + key)
        for before, row in zip(history, history[1:]):
            if row["phase"] != before["phase"]:
                ax.axvline(row["epoch"] - 0.5, color="grey", linewidth=0.8)
                ax.text(row["epoch"] - 0.4, ax.get_ylim()[1], row["phase"], va="top", fontsize=8)
        ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} (phase '{history[0]['phase']}' first)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
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
