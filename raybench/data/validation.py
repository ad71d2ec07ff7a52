"""Validating the images once (thesis §4.1-4.2): every file of every class folder is read and fully decoded,
files that cannot be used are skipped, and byte-identical images are dropped so that no duplicate straddles splits.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import warnings
from pathlib import Path

import pandas as pd
from PIL import Image

from raybench.catalog import CLASSES, CROP


class DataWarning(UserWarning):
    """A file was skipped or dropped while preparing the data, or a decoded cache was rebuilt."""


def _inspect(path: Path) -> tuple[str, str | None]:
    """(sha256 of the file, None) for a usable image, else (sha256 or "", the reason to skip it)."""
    try:
        content = path.read_bytes()
    except OSError as error:
        return "", f"unreadable ({error})"
    sha = hashlib.sha256(content).hexdigest()
    try:
        with Image.open(io.BytesIO(content)) as img:
            img.load()  # a full decode: catches truncated and corrupt files here, not half-way through a grid
            width, height = img.size
    except Image.UnidentifiedImageError:
        return sha, "not an image"
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return sha, f"cannot be decoded ({type(error).__name__}: {error})"
    if width < CROP or height < CROP:  # §4.2 crops 352x352: skip here rather than fail inside a trial
        return sha, f"too small ({width}x{height}; the centre crop needs {CROP}x{CROP})"
    return sha, None


def scan(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]], int]:
    """Every file of every class folder, validated: (valid images sorted by path, skipped files, files seen).

    Warnings point at the caller of `prepare`, which calls this.
    """
    files = [
        (f"{name}/{p.name}", p, label)
        for label, name in enumerate(CLASSES)
        for p in sorted((root / name).iterdir())
        if p.is_file()
    ]
    files.sort()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        inspected = list(pool.map(_inspect, [p for _, p, _ in files]))
    rows, skipped = [], []
    for (image, _, label), (sha, problem) in zip(files, inspected, strict=True):
        if problem:
            warnings.warn(f"skipping {root / image}: {problem}", DataWarning, stacklevel=3)
            skipped.append((image, problem))
        else:
            rows.append((image, sha, label, CLASSES[label]))
    return pd.DataFrame(rows, columns=["image", "sha256", "label", "class_name"]), skipped, len(files)


def drop_duplicates(images: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Byte-identical images: one kept (first by path) when they share a class, all dropped when labels conflict."""
    dropped = []
    for _, group in images[images.sha256.duplicated(keep=False)].groupby("sha256", sort=False):
        names = sorted(group.image)
        if group.label.nunique() > 1:
            reason = "identical images with different labels (" + ", ".join(names) + "): all copies dropped"
            warnings.warn(
                f"dropping {', '.join(str(root / n) for n in names)}: identical images with different labels",
                DataWarning,
                stacklevel=3,
            )
            dropped += [(name, reason) for name in names]
        else:
            for name in names[1:]:
                warnings.warn(f"dropping {root / name}: same image as {names[0]} (kept)", DataWarning, stacklevel=3)
                dropped.append((name, f"same image as {names[0]} (kept)"))
    gone = {name for name, _ in dropped}
    return images[~images.image.isin(gone)].reset_index(drop=True), dropped
