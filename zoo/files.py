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
    >>> atomic_write("runs/a/checkpoint.npz", data, keep="runs/a/checkpoint.prev.npz")  # and the one before

Besides whole files, this module holds the one file zoo writes in place: a lock file (``lock_file``), an OS
lock that the kernel releases when its process ends, however it ends.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_copy", "atomic_save", "lock_file", "unlock_file", "lock_is_held", "LockHeldError"]


def atomic_write(path: str | os.PathLike, data: bytes | str, keep: str | os.PathLike | None = None) -> Path:
    """Write ``data`` (``str`` is encoded as UTF-8) to ``path`` atomically; returns ``path``.

    ``keep``: once the new file is written, the old one is renamed to ``keep`` (replacing what was there),
    then the new one to ``path``: ``keep`` always holds a whole file, the one before ``path``'s (a process
    killed between the two renames leaves ``path`` missing and the old file at ``keep``).
    """
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial, fd = _partial_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if keep is not None and path.exists():
            os.replace(path, keep)
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
    ``atomic_save("model.keras", model.save)``. ``write`` must create a single file at ``tmp``, or a folder
    (``atomic_save("preset", backbone.save_to_preset)``), which replaces only a missing or empty one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = _partial_folder(path)
    tmp = folder / path.name
    try:
        write(tmp)
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_save: the writer did not create {tmp}")
        for written in [tmp] if tmp.is_file() else [p for p in tmp.rglob("*") if p.is_file()]:
            fd = os.open(written, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _fsync_dir(path.parent)
    return path


class LockHeldError(OSError):
    """Another process (or another open of the file) holds the lock; ``holder`` is what it wrote there."""

    def __init__(self, path: Path, holder: str):
        super().__init__(errno.EWOULDBLOCK, "locked by another process", str(path))
        self.holder = holder


def lock_file(path: str | os.PathLike) -> int:
    """Take an exclusive OS lock on ``path`` (created if missing, with its folders) without waiting; return its
    descriptor, for ``unlock_file``. Raises ``LockHeldError`` if another process holds it.

    ``flock`` on POSIX (``msvcrt.locking`` on Windows): the kernel drops the lock when the process ends, even
    by SIGKILL, so a killed process never blocks the next one. The file holds the holder's process id. A
    lock file removed and created again while this waited is detected (the name no longer leads to the file
    locked) and locked anew.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        try:
            _lock(fd)
        except OSError as e:
            os.close(fd)
            if e.errno in _HELD_ERRNOS:
                raise LockHeldError(path, _holder(path)) from None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file was removed (and maybe made again) before we locked it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:  # a full disk: the lock holds all the same, without the process id
        pass
    return fd


def unlock_file(fd: int, remove: str | os.PathLike | None = None) -> None:
    """Release a lock from ``lock_file``; ``remove``: its path, to delete the file first (while still held)."""
    try:
        if remove is not None:
            Path(remove).unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def lock_is_held(path: str | os.PathLike) -> str | None:
    """Without creating or writing anything: the holder (its process id, or "") if another process holds the
    lock ``path``, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        _lock(fd, shared=True)
    except OSError as e:
        return _holder(Path(path)) if e.errno in _HELD_ERRNOS else None  # else: cannot tell; lock_file decides
    finally:
        os.close(fd)
    return None


_HELD_ERRNOS = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", -1))


def _lock(fd: int, shared: bool = False) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip()[:20]
    except (OSError, UnicodeDecodeError):
        return ""


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
