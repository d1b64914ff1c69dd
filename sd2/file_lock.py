"""One writer per output file, and whole-file rewrites that a reader or a kill never sees half done.

Training (``sd2train.generate_replies``) and evaluation (answer files) append to files that a rerun
resumes; two runs on one file would interleave or drop each other's records. So a writer holds::

    with exclusive_lock(path, what="replies file"):
        ...  # append to path, or rewrite it with atomic_write_text

``exclusive_lock`` takes a non-blocking ``fcntl.flock`` on the sibling ``<path>.lock`` and raises
``FileLockedError`` (naming the file and the holder's process id) when another process holds it.
The lock goes with the process, so a killed run leaves no stale lock behind; the small ``.lock``
file stays (removing it would let a second run lock a fresh file while a first still holds the old).

``atomic_write_text`` writes to a uniquely named temporary file in the same folder, then
``os.replace``-s it over ``path``: concurrent rewrites never share a temporary name, and ``path``
is always either the old or the new whole file.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


class FileLockedError(RuntimeError):
    """Another process is writing the file."""


def lock_path(path) -> Path:
    return Path(str(path) + ".lock")


@contextmanager
def exclusive_lock(path, what: str = "file"):
    """Hold the write lock of ``path`` for the ``with`` block; refuse at once if another process has it."""
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            by = f" (process {holder})" if holder.isdigit() else ""
            raise FileLockedError(f"{what} {path} is being written by another run{by}: wait for it to end "
                                  "or choose another output") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path, mode: str = "w", encoding: str | None = "utf-8"):
    """A file object whose content replaces ``path`` in one step when the ``with`` block ends without
    an error (and is discarded otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` in one step (a unique temporary file, then ``os.replace``)."""
    with atomic_writer(path, "w", encoding) as f:
        f.write(text)


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_writer(path, "wb") as f:
        f.write(data)
