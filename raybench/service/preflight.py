"""The machine a run starts on, checked before Ray starts: the folders it writes, the devices it asks for, the
storage scheme. Each problem is a ValueError naming the option, the value and what to do.

Only what this machine can know is checked: with --address the trials run on the cluster's nodes, whose caches
("~" is each node's user) and devices are their own.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch

from raybench.trial import default_cache_dir

# the URI schemes Ray's storage reaches through pyarrow's filesystems
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def check_writable(flag: str, path: Path, *, hint: str) -> None:
    """`path` is a folder this process can write in, or can create (its nearest existing parent is such a folder)."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == path else f": {existing} is a file"
        raise ValueError(f"{flag} {path} is not a folder{where}; {hint}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".raybench-probe-"):
            pass
    except OSError as error:
        raise ValueError(f"{flag} {path}: {existing} is not writable ({error.strerror}); {hint}") from None


def check_storage(storage: str) -> None:
    scheme = urlparse(storage).scheme if "://" in storage else ""
    if scheme and scheme not in STORAGE_SCHEMES:
        raise ValueError(
            f"--storage {storage}: unknown scheme {scheme!r}; use a local or NFS path or one of "
            f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}"
        )
    if scheme in ("", "file"):
        path = Path(urlparse(storage).path if scheme else storage).expanduser()
        check_writable("--storage", path.resolve(), hint="give a folder you can write in")


def device_available(device: str) -> bool:
    """Whether torch here can run on `device` ("auto" always can: it falls back to the CPU)."""
    kind, _, index = device.partition(":")
    if kind in ("auto", "cpu"):
        return True
    if kind == "cuda":
        return torch.cuda.is_available() and int(index or 0) < torch.cuda.device_count()
    if kind == "mps":
        return torch.backends.mps.is_available()
    backend = getattr(torch, kind, None)
    return backend is not None and backend.is_available() and int(index or 0) < backend.device_count()


def check_devices(devices: set[str]) -> None:
    for device in sorted(devices):
        if not device_available(device):
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            shown = "" if visible is None else f", CUDA_VISIBLE_DEVICES={visible!r}"
            raise ValueError(
                f"device {device!r}: torch {torch.__version__} sees no such device here{shown}; "
                "--set device=cpu (or auto), or run on a machine that has it (--address joins a GPU cluster)"
            )


def check_environment(args: argparse.Namespace, *, devices: set[str]) -> None:
    """Everything about this machine that would make the run fail after Ray started, for the trials' `devices`."""
    check_writable("--results", Path(args.results).expanduser().resolve(), hint="give a folder you can write in")
    if args.storage:
        check_storage(args.storage)
    if args.address:
        return
    cache = Path(args.cache).expanduser() if args.cache else default_cache_dir()
    check_writable("--cache", cache.resolve(), hint="give --cache a folder you can write in")
    check_devices(devices)
