"""The images as arrays (thesis §4.2): `preprocess` turns one image into the greyscale 352x352 centre crop
(resized if smaller) as uint8, and `load_split` reads a tier's split from a decode-once, memory-mapped cache.
`preprocess_colour` keeps the crop's RGB (input="colour", §7.2), in caches of their own; `load_masks` reads the
masks of the cell at the centre (input="..._mask" and "..._masked", §7.2; data.masks) from caches beside them.

One cache file holds one split of the biggest prepared tier at one image size; every smaller tier's split is a
prefix of it. Files are keyed by the images' content, the image size and PREPROCESS_VERSION, checksummed in chunks,
built under a lock (trials starting together build a cache once) and rebuilt whenever they do not check out. The
disk space is reserved before the first image is decoded: a full disk is one clear error, not a SIGBUS half-way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from raybench import files
from raybench.catalog import CROP, SPLITS
from raybench.data.masks import MASK_VERSION, preprocess_mask
from raybench.data.source import no_space
from raybench.data.validation import DataWarning, is_grey16, pixel_problem

if TYPE_CHECKING:
    from raybench.data.preparation import Prepared

# part of the cache key; v2: 16-bit greyscale is scaled to 8 bits (v1 clipped it to white)
PREPROCESS_VERSION = "pbc-grey(0.2989,0.587,0.114)-round-centercrop352-bilinear-v2"
# input="colour" (§7.2): the same crop in RGB, channels first, in caches of their own (another key and file name)
PREPROCESS_VERSION_COLOUR = "pbc-rgb-channels-first-centercrop352-bilinear-v1"
DEFAULT_CACHE_DIR = Path("~/.cache/raybench")  # each machine's decode-once cache, shared by its trials
_CHUNK_ROWS = 256  # the decoded cache is checksummed in chunks of this many images
_NO_SPACE_HINT = "free some space or pass another cache folder (--cache)"


def preprocess(img: Image.Image, image_size: int = CROP) -> np.ndarray:
    """§4.2: luminance Y = 0.2989 R + 0.587 G + 0.114 B (rounded), centre crop 352x352, then resize if smaller.

    16-bit greyscale is scaled to 8 bits first (round(v / 257)); pixels without a defined 8-bit scale (32-bit
    integer or float) are a ValueError, never a white or black image.
    """
    crop = centre_crop(img, image_size)
    rgb = np.asarray(crop.convert("RGB"), dtype=np.float64)
    grey = 0.2989 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    if image_size < CROP:
        grey = np.asarray(Image.fromarray(grey).resize((image_size, image_size), Image.BILINEAR))
    return grey


def preprocess_colour(img: Image.Image, image_size: int = CROP) -> np.ndarray:
    """input="colour": `preprocess`'s crop (and resize) in RGB, without the luminance: uint8 (3, size, size)."""
    rgb = centre_crop(img, image_size).convert("RGB")
    if image_size < CROP:
        rgb = rgb.resize((image_size, image_size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def centre_crop(img: Image.Image, image_size: int) -> Image.Image:
    """The checked 352x352 centre crop, 16-bit greyscale scaled to 8 bits (round(v / 257))."""
    if image_size > CROP or image_size < 1:
        raise ValueError(f"image_size must be between 1 and {CROP} (the thesis crops {CROP}x{CROP}), got {image_size}")
    width, height = img.size
    name = getattr(img, "filename", "") or "(unnamed image)"
    if width < CROP or height < CROP:
        raise ValueError(f"image {name} is {width}x{height}, smaller than the {CROP}x{CROP} centre crop")
    problem = pixel_problem(img)
    if problem:
        raise ValueError(f"image {name}: {problem}")
    top, left = round((height - CROP) / 2.0), round((width - CROP) / 2.0)  # as torchvision's CenterCrop
    crop = img.crop((left, top, left + CROP, top + CROP))
    if is_grey16(img):  # PIL's own conversion clips 16-bit values at 255
        crop = Image.fromarray(np.rint(np.asarray(crop, dtype=np.float64) / 257.0).astype(np.uint8), "L")
    return crop


def load_split(
    prepared: Prepared, tier: str, split: str, *, image_size: int = CROP, cache_dir: str | Path, colour: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, image_size, image_size), y int64 (N,)) of one tier and split, in manifest order.

    x is a read-only view of a memory-mapped cache shared by every trial on the machine. One cache file holds one
    split of the biggest tier of `prepared`; every smaller tier's split is a prefix of it. The file is keyed by the
    images' content, the image size and PREPROCESS_VERSION, checksummed, and rebuilt whenever it does not check out.
    With `colour`, x is RGB (N, 3, image_size, image_size), from caches keyed by PREPROCESS_VERSION_COLOUR.
    """
    return _load(prepared, tier, split, image_size=image_size, cache_dir=cache_dir, kind="colour" if colour else "grey")


def load_masks(
    prepared: Prepared, tier: str, split: str, *, image_size: int = CROP, cache_dir: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """(masks uint8 0/1 (N, image_size, image_size), y) of one tier and split, as `load_split` orders them: the cell
    at the centre of each image (data.masks), computed once per image into a cache keyed like the grey one."""
    return _load(prepared, tier, split, image_size=image_size, cache_dir=cache_dir, kind="mask")


def _load(
    prepared: Prepared, tier: str, split: str, *, image_size: int, cache_dir: str | Path, kind: str
) -> tuple[np.ndarray, np.ndarray]:
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
    position = {image: i for i, image in enumerate(block.image)}  # by path: kept duplicates share a sha256
    index = np.array([position[image] for image in rows.image], dtype=np.int64)
    prefix = bool((index == np.arange(len(index))).all())
    x = _decoded(
        prepared.root,
        block,
        image_size,
        Path(cache_dir).expanduser(),
        split=split,
        check_rows=len(index) if prefix else len(block),
        kind=kind,
    )
    x = x[: len(index)] if prefix else np.asarray(x[index])
    return x, rows.label.to_numpy(dtype=np.int64)


# what a cache holds -> (its version, part of the key; its file name's mark; its images' channels, 0: none)
KINDS = {
    "grey": (PREPROCESS_VERSION, "", 0),
    "colour": (PREPROCESS_VERSION_COLOUR, "rgb-", 3),
    "mask": (MASK_VERSION, "mask-", 0),
}


def _decoded(
    root: Path, block: pd.DataFrame, image_size: int, cache_dir: Path, *, split: str, check_rows: int, kind: str
) -> np.ndarray:
    """The cache of `block` at `image_size`, opened if it checks out, else built (once, under a lock) and opened."""
    path, expected = _cache_file(block, image_size, cache_dir, split=split, kind=kind)
    x = _open_cache(path, expected, check_rows)
    if x is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_suffix(".lock")):
            x = _open_cache(path, expected, check_rows, quiet=True)  # another process may have built it meanwhile
            if x is None:
                _remove_stale_temps(path)
                _build_cache(path, root, block, image_size, expected, kind=kind)
                x = _open_cache(path, expected, check_rows)
    if x is None:
        raise RuntimeError(
            f"the decoded cache {path} does not check out right after building it; "
            f"is {cache_dir} writable and not full?"
        )
    return x


def _cache_file(block: pd.DataFrame, image_size: int, cache_dir: Path, *, split: str, kind: str) -> tuple[Path, dict]:
    """Where the cache of `block` (one split of a prepared run's biggest tier, in manifest order) of `kind` (KINDS)
    lies, and what its sidecar must say."""
    version, mode, channels = KINDS[kind]  # the greyscale caches keep their keys and names
    shape = [len(block), *([channels] if channels else []), image_size, image_size]
    key = hashlib.sha256("\n".join([version, str(image_size), *block.sha256]).encode()).hexdigest()
    path = cache_dir / f"pbc-{split}-{image_size}px-{mode}{len(block)}-{key[:20]}.npy"
    return path, {"key": key, "preprocess": version, "shape": shape}


def cached_images(
    manifest: pd.DataFrame, *, split: str, image_size: int, cache_dir: str | Path
) -> tuple[np.ndarray | None, pd.DataFrame, Path]:
    """(images, their manifest rows, the cache file) of `split` of a results folder's manifest: its biggest tier's
    block as load_split keyed it, the images a read-only array, or None when this machine has no such cache (this
    never builds one)."""
    biggest = manifest.tier.value_counts().idxmax()
    block = manifest[(manifest.tier == biggest) & (manifest.split == split)]
    path, expected = _cache_file(block, image_size, Path(cache_dir).expanduser(), split=split, kind="grey")
    return _open_cache(path, expected, len(block), quiet=True), block, path


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


def _build_cache(
    path: Path, root: Path, block: pd.DataFrame, image_size: int, expected: dict, *, kind: str = "grey"
) -> None:
    """Reserve the disk, decode `block` into a temporary .npy, checksum it, then move it and its sidecar in place."""
    shape = tuple(expected["shape"])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        reserve(tmp, header.tell() + int(np.prod(shape)))
        with open(tmp, "r+b") as handle:  # the .npy header, written into the reserved file (no truncation)
            handle.write(header.getvalue())
        out = np.memmap(tmp, dtype=np.uint8, mode="r+", offset=header.tell(), shape=shape)
        _decode_into(out, root, block, image_size, kind=kind)
        out.flush()
        chunks = [hashlib.sha256(out[i : i + _CHUNK_ROWS]).hexdigest() for i in range(0, len(out), _CHUNK_ROWS)]
        del out
        files.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar_tmp = path.with_name(f"{path.stem}.json.tmp-{os.getpid()}")
    sidecar = {**expected, "chunk_rows": _CHUNK_ROWS, "chunks": chunks, "images": list(block.image)}
    try:
        sidecar_tmp.write_text(json.dumps(sidecar))
        files.replace(sidecar_tmp, path.with_suffix(".json"))
    except OSError as error:
        sidecar_tmp.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space(len(json.dumps(sidecar)), path.parent, _NO_SPACE_HINT) from error
        raise


def reserve(path: Path, size: int) -> None:
    """Create the file `path` with `size` bytes of disk allocated to it now, or raise NoSpaceError (one line).

    The pages of a memory-mapped file get their disk blocks only when written: on a full disk that write is a
    SIGBUS that kills the process and leaves a full-size file behind. posix_fallocate (or, where the system or file
    system lacks it, writing zeros) takes the space before anything is decoded.
    """
    if size > shutil.disk_usage(path.parent).free:
        raise no_space(size, path.parent, _NO_SPACE_HINT)
    try:
        with open(path, "wb") as handle:
            try:
                os.posix_fallocate(handle.fileno(), 0, size)
            except (AttributeError, OSError) as error:  # AttributeError: macOS has no posix_fallocate
                if isinstance(error, OSError) and error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                zeros = bytes(1 << 20)
                for start in range(0, size, len(zeros)):
                    handle.write(zeros[: size - start])
                handle.flush()
    except BaseException as error:
        path.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space(size, path.parent, _NO_SPACE_HINT) from error
        raise


def _remove_stale_temps(path: Path) -> None:
    """Delete the temporary files of cache builds that died (killed, or on a full disk): each can be a whole cache.

    Called under `path`'s lock, so its own temporaries are stale; another cache's are when nobody holds its lock.
    """
    own = path.with_suffix(".lock")
    for tmp in sorted(path.parent.glob("pbc-*.tmp-*")):
        lock = (path.parent / tmp.name.split(".tmp-")[0]).with_suffix(".lock")
        with contextlib.ExitStack() as stack:
            if lock != own and lock.exists():
                handle = stack.enter_context(open(lock, "a"))
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the handle closes
                except BlockingIOError:
                    continue  # that cache is being built right now
            size = tmp.stat().st_size if tmp.exists() else 0
            tmp.unlink(missing_ok=True)
            warnings.warn(
                f"removed {tmp} ({size / 1e9:.3g} GB), left by a cache build that did not finish",
                DataWarning,
                stacklevel=4,  # the caller of load_split
            )


def _decode_into(out: np.ndarray, root: Path, block: pd.DataFrame, image_size: int, *, kind: str = "grey") -> None:
    """Preprocess image i of `block` into out[i], in threads, checking that each file is the one prepared."""

    def decode(i_image_sha: tuple[int, str, str]) -> None:
        i, image, sha = i_image_sha
        content = (root / image).read_bytes()
        if hashlib.sha256(content).hexdigest() != sha:
            raise ValueError(f"{root / image} changed since the data was prepared: prepare it again")
        with Image.open(io.BytesIO(content)) as img:
            try:
                if kind == "mask":
                    out[i] = preprocess_mask(centre_crop(img, image_size), image_size)
                else:
                    out[i] = preprocess_colour(img, image_size) if kind == "colour" else preprocess(img, image_size)
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
