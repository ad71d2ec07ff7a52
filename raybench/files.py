"""Replacing a file durably: the new content is on the disk before its name points at it. Torch-free.

A rename without fsync can survive a power loss or a crashed host while the data it names does not (ext4's
delayed allocation, XFS): the file reads as zero bytes afterwards. So: fsync the new file, rename it over the
old one, fsync the folder that holds the name.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fsync_path(path: str | Path, *, folder: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    except OSError as error:
        if not folder or error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise  # a folder some file systems cannot sync (the rename is then as durable as they make it)
    finally:
        os.close(fd)


def replace(tmp: str | Path, path: str | Path) -> None:
    """Rename `tmp` over `path`, its content synced to the disk first and the rename after."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(Path(path).parent, folder=True)
