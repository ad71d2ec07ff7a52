"""One run per results folder: an advisory lock on RESULTS/NAME/.raybench.lock, held while the run lives.

flock(2) locks belong to the open file: the OS drops them when the holder exits, however it dies (kill -9,
a lost terminal), so a crashed run never blocks the next one. The file holds the holder's pid and host, for
the message a second run gets. Ray's own processes are started without the driver's file descriptors, so a
raylet outliving a killed driver does not keep the folder locked.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

LOCK_FILE = ".raybench.lock"


class RunLock:
    """The held lock of one results folder; `release` (or the process's exit) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the file drops its flock
            self.fd = -1


def acquire(out: Path) -> RunLock:
    """Lock the results folder `out` for this process, or raise ValueError naming the run that holds it."""
    path = Path(out) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise ValueError(
            f"cannot write in the results folder {out} ({error.strerror}): choose another --results"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "pid unknown"
        os.close(fd)
        raise ValueError(
            f"{out} is in use by another run ({holder}): wait for it to end, or run this one with another --name"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return RunLock(fd, path)
