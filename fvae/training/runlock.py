"""One writer per run folder: an exclusive ``fcntl`` lock on ``RUN/.lock``.

The operating system releases the lock when the process ends, however it ends, so a killed
run never leaves a stale lock behind. Readers (``fvae eval``, ``sample``...) take no lock.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from fvae.errors import RunLocked


class RunLock:
    """``with RunLock(run_dir):`` holds the run folder's lock (creating the folder), or raises
    :class:`RunLocked` naming the process that holds it."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"{self.path.parent} is in use by process {holder}, which is training into it; "
                            f"wait for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
