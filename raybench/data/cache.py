"""The images as arrays (thesis §4.2): `preprocess` turns one image into the greyscale 352x352 centre crop
(resized if smaller) as uint8, and `load_split` reads a tier's split from a decode-once, memory-mapped cache.

One cache file holds one split of the biggest prepared tier at one image size; every smaller tier's split is a
prefix of it. Files are keyed by the images' content, the image size and PREPROCESS_VERSION, checksummed in chunks,
built under a lock (trials starting together build a cache once) and rebuilt whenever they do not check out.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from raybench.catalog import CROP, SPLITS
from raybench.data.validation import DataWarning

if TYPE_CHECKING:
    from raybench.data.preparation import Prepared

PREPROCESS_VERSION = "pbc-grey(0.2989,0.587,0.114)-round-centercrop352-bilinear-v1"  # part of the cache key
_CHUNK_ROWS = 256  # the decoded cache is checksummed in chunks of this many images


def preprocess(img: Image.Image, image_size: int = CROP) -> np.ndarray:
    """§4.2: luminance Y = 0.2989 R + 0.587 G + 0.114 B (rounded), centre crop 352x352, then resize if smaller."""
    if image_size > CROP or image_size < 1:
        raise ValueError(f"image_size must be between 1 and {CROP} (the thesis crops {CROP}x{CROP}), got {image_size}")
    width, height = img.size
    if width < CROP or height < CROP:
        name = getattr(img, "filename", "") or "(unnamed image)"
        raise ValueError(f"image {name} is {width}x{height}, smaller than the {CROP}x{CROP} centre crop")
    top, left = round((height - CROP) / 2.0), round((width - CROP) / 2.0)  # as torchvision's CenterCrop
    rgb = np.asarray(img.crop((left, top, left + CROP, top + CROP)).convert("RGB"), dtype=np.float64)
    grey = 0.2989 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    if image_size < CROP:
        grey = np.asarray(Image.fromarray(grey).resize((image_size, image_size), Image.BILINEAR))
    return grey


def load_split(
    prepared: Prepared, tier: str, split: str, *, image_size: int = CROP, cache_dir: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, image_size, image_size), y int64 (N,)) of one tier and split, in manifest order.

    x is a read-only view of a memory-mapped cache shared by every trial on the machine. One cache file holds one
    split of the biggest tier of `prepared`; every smaller tier's split is a prefix of it. The file is keyed by the
    images' content, the image size and PREPROCESS_VERSION, checksummed, and rebuilt whenever it does not check out.
    """
    if tier not in prepared.tiers:
        hint = (
            f"; tier {tier!r} needs {prepared.report.omitted_tiers[tier]} images but {prepared.root} has "
            f"{prepared.report.usable} usable"
            if tier in prepared.report.omitted_tiers
            else ""
        )
        raise ValueError(f"tier {tier!r} was not prepared; prepared tiers: {', '.join(prepared.tiers)}{hint}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    if not 1 <= image_size <= CROP:
        raise ValueError(f"image_size must be between 1 and {CROP}, got {image_size}")
    manifest = prepared.manifest
    biggest = max(prepared.tiers, key=prepared.tiers.get)
    block = manifest[(manifest.tier == biggest) & (manifest.split == split)]
    rows = manifest[(manifest.tier == tier) & (manifest.split == split)]
    position = {sha: i for i, sha in enumerate(block.sha256)}
    index = np.array([position[sha] for sha in rows.sha256], dtype=np.int64)
    prefix = bool((index == np.arange(len(index))).all())
    x = _decoded(
        prepared.root,
        block,
        image_size,
        Path(cache_dir).expanduser(),
        split=split,
        check_rows=len(index) if prefix else len(block),
    )
    x = x[: len(index)] if prefix else np.asarray(x[index])
    return x, rows.label.to_numpy(dtype=np.int64)


def _decoded(
    root: Path, block: pd.DataFrame, image_size: int, cache_dir: Path, *, split: str, check_rows: int
) -> np.ndarray:
    """The cache of `block` at `image_size`, opened if it checks out, else built (once, under a lock) and opened."""
    key = hashlib.sha256("\n".join([PREPROCESS_VERSION, str(image_size), *block.sha256]).encode()).hexdigest()
    path = cache_dir / f"pbc-{split}-{image_size}px-{len(block)}-{key[:20]}.npy"
    expected = {"key": key, "preprocess": PREPROCESS_VERSION, "shape": [len(block), image_size, image_size]}
    x = _open_cache(path, expected, check_rows)
    if x is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_suffix(".lock")):
            x = _open_cache(path, expected, check_rows, quiet=True)  # another process may have built it meanwhile
            if x is None:
                _build_cache(path, root, block, image_size, expected)
                x = _open_cache(path, expected, check_rows)
    if x is None:
        raise RuntimeError(
            f"the decoded cache {path} does not check out right after building it; "
            f"is {cache_dir} writable and not full?"
        )
    return x


def _open_cache(path: Path, expected: dict, check_rows: int, quiet: bool = False) -> np.ndarray | None:
    """The cache as a read-only memmap, or None (with a warning if a file was there) when it is missing or bad."""
    sidecar = path.with_suffix(".json")
    if not path.exists() and not sidecar.exists():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        if {k: meta.get(k) for k in expected} != expected:
            raise ValueError(f"its sidecar {sidecar.name} describes other contents")
        x = np.load(path, mmap_mode="r")
        if list(x.shape) != expected["shape"] or x.dtype != np.uint8:
            raise ValueError(f"it holds {x.dtype} {x.shape}")
        rows = meta["chunk_rows"]
        for i in range(0, min(check_rows, len(x)), rows):
            if hashlib.sha256(x[i : i + rows]).hexdigest() != meta["chunks"][i // rows]:
                raise ValueError(f"the checksum of images {i}-{min(i + rows, len(x)) - 1} differs")
    except Exception as error:  # missing sidecar, truncated file, bad header, wrong checksum: all mean rebuild
        if not quiet:  # stacklevel 4: the caller of load_split
            warnings.warn(f"decoded cache {path} is unusable ({error}); rebuilding it", DataWarning, stacklevel=4)
        return None
    return x


def _build_cache(path: Path, root: Path, block: pd.DataFrame, image_size: int, expected: dict) -> None:
    """Decode every image of `block` into a temporary .npy, checksum it, then move it and its sidecar in place."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(expected["shape"]))
    try:
        _decode_into(out, root, block, image_size)
        out.flush()
        chunks = [hashlib.sha256(out[i : i + _CHUNK_ROWS]).hexdigest() for i in range(0, len(out), _CHUNK_ROWS)]
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar_tmp = path.with_name(f"{path.stem}.json.tmp-{os.getpid()}")
    sidecar = {**expected, "chunk_rows": _CHUNK_ROWS, "chunks": chunks, "images": list(block.image)}
    sidecar_tmp.write_text(json.dumps(sidecar))
    os.replace(sidecar_tmp, path.with_suffix(".json"))


def _decode_into(out: np.ndarray, root: Path, block: pd.DataFrame, image_size: int) -> None:
    """Preprocess image i of `block` into out[i], in threads, checking that each file is the one prepared."""

    def decode(i_image_sha: tuple[int, str, str]) -> None:
        i, image, sha = i_image_sha
        content = (root / image).read_bytes()
        if hashlib.sha256(content).hexdigest() != sha:
            raise ValueError(f"{root / image} changed since the data was prepared: prepare it again")
        with Image.open(io.BytesIO(content)) as img:
            try:
                out[i] = preprocess(img, image_size)
            except ValueError as error:
                raise ValueError(f"{root / image}: {error}") from error

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, zip(range(len(block)), block.image, block.sha256, strict=True)))


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock between processes (trials starting together build a cache once)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
