"""Validating the images once (thesis §4.1-4.2): every file of every class folder is read and fully decoded,
files that cannot be used are skipped, and byte-identical images are listed: kept by default, as the thesis kept
them, or dropped (dedupe) so that no duplicate straddles splits.
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


# Pixel modes that PIL turns into 8-bit RGB correctly (alpha dropped, as convert("RGB") does), and 16-bit greyscale,
# which preprocess scales to 8 bits (65535 -> 255) first: PIL would clip it, and a 16-bit image would come out white.
RGB_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr"})
GREY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# A PBC image is about 17 kB and any image that can take the 352x352 crop is far below this: a bigger file is not one
# of the dataset's images, and is skipped without being read
MAX_IMAGE_BYTES = 256 * 2**20


def is_grey16(img: Image.Image) -> bool:
    """16-bit greyscale: the I;16 modes, or mode I read from a PNG (older Pillow opens 16-bit greyscale PNGs so)."""
    return img.mode in GREY16_MODES or (img.mode == "I" and img.format == "PNG")


def pixel_problem(img: Image.Image) -> str | None:
    """Why this image's pixels have no defined 8-bit greyscale (the thesis's luminance), or None when they have."""
    if img.mode in RGB_MODES or is_grey16(img):
        return None
    if img.mode == "F":
        return "32-bit float pixels have no defined 8-bit scale (save it as 8-bit)"
    if img.mode.startswith("I"):
        return f"{img.mode} integer pixels have no defined 8-bit scale (save it as 8-bit)"
    return f"pixel mode {img.mode} has no defined conversion to 8-bit RGB (save it as 8-bit RGB)"


def _inspect(path: Path) -> tuple[str, str | None]:
    """(sha256 of the file, None) for a usable image, else (sha256 or "", the reason to skip it)."""
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            return "", f"too large for an image ({size / 2**20:.0f} MiB; at most {MAX_IMAGE_BYTES // 2**20} MiB read)"
        with Image.open(path):  # its header only: a file that is no image is never read whole
            pass
        content = path.read_bytes()
    except Image.UnidentifiedImageError:
        return "", "not an image"
    except OSError as error:
        return "", f"unreadable ({error})"
    except Exception as error:  # a header PIL recognises but cannot parse
        return "", f"cannot be decoded ({type(error).__name__}: {error})"
    sha = hashlib.sha256(content).hexdigest()
    try:
        with Image.open(io.BytesIO(content)) as img:
            img.load()  # a full decode: catches truncated and corrupt files here, not half-way through a grid
            width, height = img.size
            problem = pixel_problem(img)
    except Image.UnidentifiedImageError:
        return sha, "not an image"
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return sha, f"cannot be decoded ({type(error).__name__}: {error})"
    if width < CROP or height < CROP:  # §4.2 crops 352x352: skip here rather than fail inside a trial
        return sha, f"too small ({width}x{height}; the centre crop needs {CROP}x{CROP})"
    return sha, problem


def scan(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]], int]:
    """Every file of every class folder, validated: (valid images sorted by path, skipped files, files seen).

    Warnings point at the caller of `prepare`, which calls this. A class folder without a usable image is a
    ValueError: the models have 8 outputs, and a class must not silently vanish from the tiers.
    """
    files = [
        (f"{name}/{p.name}", p, label)
        for label, name in enumerate(CLASSES)
        for p in sorted((root / name).iterdir())
        if p.is_file()
    ]
    files.sort()
    seen, labels = len(files), [label for *_, label in files]
    rows, skipped = [], []
    bad = unencodable(files)
    for image in sorted(bad):  # a Parquet string is UTF-8: the manifest could not hold such a name
        name = printable(image)
        warnings.warn(f"skipping {root / name}: its name is not valid UTF-8 (rename it)", DataWarning, stacklevel=3)
        skipped.append((name, "its name is not valid UTF-8 (rename it)"))
    files = [f for f in files if f[0] not in bad]
    for folder in other_folders(root):
        count = sum(1 for p in folder.iterdir() if p.is_file())
        reason = f"not one of the {len(CLASSES)} classes ({', '.join(CLASSES)}): its {count} file(s) are ignored"
        name = printable(folder.name)
        warnings.warn(f"ignoring the folder {root / name}: {reason}", DataWarning, stacklevel=3)
        skipped.append((f"{name}/", reason))
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        inspected = list(pool.map(_inspect, [p for _, p, _ in files]))
    for (image, _, label), (sha, problem) in zip(files, inspected, strict=True):
        if problem:
            warnings.warn(f"skipping {root / image}: {problem}", DataWarning, stacklevel=3)
            skipped.append((image, problem))
        else:
            rows.append((image, sha, label, CLASSES[label]))
    _check_every_class(root, labels, {label for _, _, label, _ in rows})
    return pd.DataFrame(rows, columns=["image", "sha256", "label", "class_name"]), skipped, seen


def unencodable(files: list[tuple[str, Path, int]]) -> set[str]:
    """The names (class/file) that the filesystem allows but UTF-8 cannot encode (Python's surrogate escapes)."""
    return {image for image, _, _ in files if printable(image) != image}


def printable(name: str) -> str:
    """A file name as text: the bytes UTF-8 cannot decode written as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def other_folders(root: Path) -> list[Path]:
    """The folders beside the class folders that are not classes (hidden ones and macOS's __MACOSX aside)."""
    return sorted(
        p for p in root.iterdir() if p.is_dir() and p.name not in CLASSES and not p.name.startswith((".", "__MACOSX"))
    )


def _check_every_class(root: Path, labels: list[int], usable: set[int]) -> None:
    """Refuse, in one line, a dataset in which some class folder has no usable image."""
    lacking = [
        f"{root / name} ({f'none of its {labels.count(label)} files is usable' if label in labels else 'empty'})"
        for label, name in enumerate(CLASSES)
        if label not in usable
    ]
    if lacking:
        raise ValueError(
            f"no usable image in class folder {', '.join(lacking)}: each of the {len(CLASSES)} classes needs images "
            "(the models have 8 outputs); put its images back or pass the complete dataset"
        )


def drop_duplicates(
    images: pd.DataFrame, root: Path, *, drop: bool = True
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Byte-identical images: one kept (first by path) when they share a class, all dropped when labels conflict.

    With `drop=False` (the thesis kept all 17,092 images) every copy stays, without warnings: the list then names
    each copy after the first, for the report.
    """
    dropped = []
    for _, group in images[images.sha256.duplicated(keep=False)].groupby("sha256", sort=False):
        names = sorted(group.image)
        if not drop:
            labels = "different labels" if group.label.nunique() > 1 else "same label"
            dropped += [(name, f"same image as {names[0]} ({labels})") for name in names[1:]]
        elif group.label.nunique() > 1:
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
    gone = {name for name, _ in dropped} if drop else set()
    return images[~images.image.isin(gone)].reset_index(drop=True), dropped
