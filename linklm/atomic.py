"""Files that appear whole or not at all, and their SHA256.

Every artifact is written to a temporary name in its own folder and renamed into place
(``os.replace`` is atomic on one filesystem), so a crash leaves the good old file or
nothing, never half a file. Temporary names share one recognisable pattern so a later run
can sweep what a killed one left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, Timeout

TMP_MARK = ".tmp-"


# Temporary files and folders being written now, so a process told to stop (SIGTERM,
# Ctrl-C) removes them before it exits instead of leaving them for the next run to sweep.
_unfinished: set[Path] = set()
_unfinished_lock = threading.Lock()
_stopping = threading.Event()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def tmp_path_for(path: Path) -> Path:
    """A temporary sibling of ``path`` to write, remembered until it is renamed or removed;
    none once the process is stopping (``remove_unfinished``)."""
    if _stopping.is_set():
        raise InterruptedError(f"{path}: not started, the process is stopping")
    tmp = _temp_name(path)
    with _unfinished_lock:
        _unfinished.add(tmp)
    return tmp


def _finished(tmp: Path) -> None:
    with _unfinished_lock:
        _unfinished.discard(tmp)


def remove_unfinished() -> list[Path]:
    """Stop starting temporary files and remove those being written (another thread may be
    writing one): what a process about to exit on a signal calls. The files they would
    have replaced are untouched."""
    _stopping.set()
    with _unfinished_lock:
        pending = sorted(_unfinished)
        _unfinished.clear()
    for tmp in pending:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return pending


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success fsync it and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        _finished(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def sha256_file(path: str | os.PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while data := fh.read(block):
            digest.update(data)
    return digest.hexdigest()


def stray_temp_files(root: str | os.PathLike) -> list[Path]:
    """Temporary files and folders under ``root`` (outermost only)."""
    found = sorted(Path(root).rglob(f"*{TMP_MARK}*"))
    return [p for p in found if not any(q in p.parents for q in found)]


def sweep_temp_files(root: str | os.PathLike) -> list[Path]:
    """Delete what a killed run left half-written; call only while holding the folder's lock."""
    stray = stray_temp_files(root)
    for p in stray:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stray


def read_json_or_none(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (then it is rebuilt)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``path`` as a whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if path.exists():
            old = _temp_name(path)  # the good old folder: never removed on a signal
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _finished(tmp)


def claim_folder(folder: str | os.PathLike, busy: Callable[[Path], Exception]) -> FileLock:
    """One writer per folder: a second one fails at once (``busy(lock_file)``), not later.

    The lock is an OS file lock, so a killed writer releases it with its process.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        file_lock.acquire()
    except Timeout:
        raise busy(folder / LOCK_FILE) from None
    return file_lock


LOCK_FILE = ".lock"


@contextlib.contextmanager
def share_folder(folder: str | os.PathLike, busy: Callable[[Path], Exception]) -> Iterator[None]:
    """Hold ``folder``'s lock shared while reading it: any number of readers at once, and
    no writer (``claim_folder``) meanwhile; a writer holding it now fails the reader at
    once (``busy(lock_file)``). An OS lock on the same file ``claim_folder`` takes, released
    with the process. A folder that does not exist, or where the lock file cannot be made (a
    read-only mount, which no writer can change either), is read without it."""
    import fcntl

    lock_file = Path(folder) / LOCK_FILE
    try:
        flags = os.O_RDONLY if lock_file.exists() else os.O_RDWR | os.O_CREAT
        fd = os.open(lock_file, flags, 0o644)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(lock_file) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def held_by_readers(lock_file: str | os.PathLike) -> bool:
    """True when a busy folder lock is held shared (readers), not by a writer."""
    import fcntl

    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"  # pragma: no cover


def check_writable(folder: str | os.PathLike, need_bytes: int = 0, what: str = "") -> None:
    """Before any work: ``folder`` (or, where it does not exist yet, the nearest folder
    above it) is a folder this process can create files in, on a disk with ``need_bytes``
    free; else a StorageError in one line naming the path and the cause. A run that would
    fail at its first write, or after hours at its last, fails here instead."""
    from linklm.errors import StorageError

    folder = Path(folder).absolute()
    nearest = next(p for p in (folder, *folder.parents) if p.exists())  # '/' at the latest
    if not nearest.is_dir():
        where = "is a file" if nearest == folder else f"is under {nearest}, a file"
        raise StorageError(f"{folder}: {where}, not a folder; choose another location")
    probe = nearest / f".write-probe{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        probe.unlink()
    except OSError as exc:
        raise StorageError(
            f"{nearest}: cannot write there ({exc.strerror.lower()}); choose another location"
        ) from None
    free = shutil.disk_usage(nearest).free
    if need_bytes > free:
        raise StorageError(
            f"{nearest}: {_size(free)} free on its disk, and {what or 'this run'} needs about "
            f"{_size(need_bytes)}; free some space or choose another location"
        )


def disk_error(exc: BaseException) -> str | None:
    """One line for an error of the disk (full, read-only, not allowed) naming the path,
    or None for any other error."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        where = exc.filename or "a file"
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        fix = "free some space, or choose another location" if full else "choose another location"
        return f"{where}: {exc.strerror.lower()}; {fix}"
    return None
