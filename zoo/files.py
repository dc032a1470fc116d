"""Atomic file writes: a reader sees the old file or the whole new one, never half of one.

Every writer goes to a temporary name in the target's own folder (so the rename stays on one
filesystem), is flushed and fsynced, replaces the target with ``os.replace``, and then the folder is
fsynced so that the rename itself survives a crash. If anything fails (a full disk, an exception in
the writer), the temporary file is removed, the old file is left as it was, and the error is raised.

Example:
    >>> from zoo.files import atomic_copy, atomic_save, atomic_write
    >>> atomic_write("runs/a/metrics.json", '{"accuracy": 0.9}')
    >>> atomic_copy("~/Downloads/weights.h5", "cache/weights.h5")
    >>> atomic_save("runs/a/curves.png", fig.savefig)        # a matplotlib Figure
    >>> atomic_save("runs/a/model.keras", model.save)         # a keras model (the name ends in .keras)
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_copy", "atomic_save"]


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (``str`` is encoded as UTF-8) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial, fd = _partial_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the file ``src`` to ``dst`` atomically; returns ``dst``."""
    src = Path(src).expanduser()
    return atomic_save(dst, lambda tmp: shutil.copyfile(src, tmp))


def atomic_save(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to write a file at ``tmp``, then move it to ``path`` atomically.

    ``tmp`` has the same file name as ``path`` (inside a fresh hidden folder beside it), so writers that
    pick a format from the suffix work: ``atomic_save("curves.png", fig.savefig)``,
    ``atomic_save("model.keras", model.save)``. ``write`` must create a single file at ``tmp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = _partial_folder(path)
    tmp = folder / path.name
    try:
        write(tmp)
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_save: the writer did not create the file {tmp}")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _fsync_dir(path.parent)
    return path


def _partial_file(path: Path) -> tuple[Path, int]:
    """A new, exclusive temporary file beside ``path`` (created with the usual umask permissions)."""
    while True:
        partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        try:
            return partial, os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                                    0o666)
        except FileExistsError:
            continue


def _partial_folder(path: Path) -> Path:
    while True:
        folder = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder for fsync)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # filesystems that cannot sync folders
            raise
    finally:
        os.close(fd)
