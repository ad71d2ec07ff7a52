"""The PBC dataset (thesis §4.1-4.3): find the images, validate them once, drop duplicates, draw nested
class-stratified tiers split 5:2:3, and decode each image once into a memory-mapped cache.

    prepared = prepare(None)                      # the embedded 400-image sample; or a folder or the .zip
    x, y = load_split(prepared, "tiny", "train", cache_dir="~/.cache/raybench")
    batch = to_input(torch.from_numpy(x[:32]).to(device), channels=3)

Command line: `python -m raybench.data download DEST` fetches the full dataset (Mendeley Data snkd93bnjr v1),
`python -m raybench.data prepare [DATA]` prints the preparation report.

Images: Acevedo, Merino, Alférez, Molina, Boldú, Rodellar, "A dataset of microscopic peripheral blood cell images
for development of automatic recognition systems", Data in Brief 30 (2020) 105474, CC BY 4.0.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
from PIL import Image

if TYPE_CHECKING:
    import torch

CLASSES: tuple[str, ...] = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")
THESIS_TIERS: dict[str, int | None] = {"large": None, "medium": 8500, "small": 4200, "tiny": 400}  # table 4.1; None = all
SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_RATIO = (5, 2, 3)  # §4.3: train / validation / test

CROP = 352  # §4.2: centre crop 352x352
MEAN, STD = 0.5, 0.225  # §4.2: per channel, after scaling to [0, 1]
PREPROCESS_VERSION = "pbc-grey(0.2989,0.587,0.114)-round-centercrop352-bilinear-v1"  # part of the cache key

EMBEDDED_DATA: Path = Path(__file__).resolve().parent / "embedded" / "pbc400"

# The dataset's only file on Mendeley Data (https://data.mendeley.com/datasets/snkd93bnjr/1, "PBC_dataset_normal_DIB.zip"):
# the address the dataset page's download button points to, as used by several public projects. Mendeley publishes
# no checksum; the download is checked against the server's Content-Length, the zip's CRCs and its 8 class folders.
PBC_URL = "https://data.mendeley.com/public-files/datasets/snkd93bnjr/files/2fc38728-2ae7-4a62-a857-032af82334c3/file_downloaded"
PBC_ZIP = "PBC_dataset_normal_DIB.zip"

_CHUNK_ROWS = 256  # the decoded cache is checksummed in chunks of this many images


class DataWarning(UserWarning):
    """A file was skipped or dropped while preparing the data, or a decoded cache was rebuilt."""


class DownloadError(RuntimeError):
    """The dataset could not be downloaded or is not what it should be."""


@dataclasses.dataclass(frozen=True)
class PrepareReport:
    """What `prepare` found: files seen, skipped (with reasons), duplicates dropped, usable images, tiers drawn."""

    root: Path
    seed: int
    files_seen: int
    skipped: tuple[tuple[str, str], ...]  # (image, reason): not an image, truncated, undecodable, too small
    duplicates_dropped: tuple[tuple[str, str], ...]  # (image, reason)
    usable_per_class: dict[str, int]
    tiers: dict[str, dict[str, int]]  # tier -> split -> images
    omitted_tiers: dict[str, int]  # thesis tiers left out by default because the data is too small for them

    @property
    def usable(self) -> int:
        return sum(self.usable_per_class.values())

    def __str__(self) -> str:
        lines = [f"PBC data at {self.root} (split seed {self.seed})",
                 f"  files seen          {self.files_seen:6d}",
                 f"  skipped             {len(self.skipped):6d}",
                 f"  duplicates dropped  {len(self.duplicates_dropped):6d}",
                 f"  usable images       {self.usable:6d}  ("
                 + ", ".join(f"{name} {n}" for name, n in self.usable_per_class.items()) + ")",
                 f"  {'tier':<10}{'size':>7}{'train':>7}{'val':>7}{'test':>7}"]
        for tier, counts in self.tiers.items():
            lines.append(f"  {tier:<10}{sum(counts.values()):7d}" + "".join(f"{counts[s]:7d}" for s in SPLITS))
        if self.omitted_tiers:
            lines.append("  not drawn (the data is too small): "
                         + ", ".join(f"{t} (needs {n})" for t, n in self.omitted_tiers.items()))
        for title, items in (("skipped", self.skipped), ("dropped", self.duplicates_dropped)):
            for image, reason in items[:20]:
                lines.append(f"  {title} {image}: {reason}")
            if len(items) > 20:
                lines.append(f"  ... and {len(items) - 20} more {title}")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A validated, deduplicated dataset and its tiers: `manifest` has one row per image and tier."""

    root: Path  # manifest images are relative to it
    manifest: pd.DataFrame  # image, sha256, label, class_name, tier, split
    report: PrepareReport
    seed: int
    tiers: dict[str, int]  # tier -> number of images


# ---------------------------------------------------------------------------------------------- finding the data

def _is_root(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in CLASSES)


def find_root(data: str | Path | None) -> Path:
    """The folder holding the class folders: `data` itself, its one dataset subfolder, or a .zip unpacked next to it."""
    if data is None:
        return EMBEDDED_DATA
    path = Path(data).expanduser().resolve()
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is a file but not a zip archive: pass the PBC_dataset_normal_DIB folder, its parent or the .zip")
        entries = _unpack(path)
        if set(CLASSES) <= set(entries):  # the zip holds the class folders themselves
            return path.parent
        candidates = [path.parent / entry for entry in entries]
    elif path.is_dir():
        if _is_root(path):
            return path
        candidates = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith((".", "__MACOSX")))
    else:
        raise ValueError(f"data {path} does not exist")
    roots = [d for d in candidates if d.is_dir() and _is_root(d)]
    if len(roots) == 1:
        return roots[0]
    if len(roots) > 1:
        raise ValueError(f"{path} holds several datasets ({', '.join(r.name for r in roots)}): pass one of them")
    present = [name for name in CLASSES if (path / name).is_dir()]
    if present:
        missing = [name for name in CLASSES if name not in present]
        raise ValueError(f"{path} has class folders {', '.join(present)} but lacks {', '.join(missing)}")
    raise ValueError(f"no PBC dataset in {path}: expected the folders {', '.join(CLASSES)} (as in PBC_dataset_normal_DIB/), "
                     "a folder holding them, or the .zip (python -m raybench.data download DEST fetches it)")


def _unpack(zip_path: Path) -> list[str]:
    """Unpack a zip once, next to it; return its top-level entries. A marker file records a finished unpack."""
    marker = zip_path.parent / f".{zip_path.name}.unpacked.json"
    stat = zip_path.stat()
    stamp = {"zip": zip_path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    old = json.loads(marker.read_text()) if marker.is_file() else None
    if old and {k: old.get(k) for k in stamp} == stamp and all((zip_path.parent / e).exists() for e in old["entries"]):
        return old["entries"]
    with zipfile.ZipFile(zip_path) as archive:
        members = [m for m in archive.namelist() if not m.startswith("__MACOSX/")]
        entries = sorted({m.split("/")[0] for m in members if m.split("/")[0]})
        for entry in entries:  # never overwrite a folder raybench did not unpack itself
            target = zip_path.parent / entry
            if target.exists() and not (old and entry in old["entries"]):
                raise ValueError(f"{target} exists but was not unpacked by raybench from {zip_path.name}: "
                                 "pass that folder instead of the zip, or remove it")
        tmp = zip_path.parent / f".{zip_path.name}.unpacking-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        archive.extractall(tmp, members)  # checks every member's CRC
    for entry in entries:
        target = zip_path.parent / entry
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp / entry, target)
    shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(json.dumps({**stamp, "entries": entries}))
    return entries


# ------------------------------------------------------------------------------------------------- validation

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


def _scan(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]], int]:
    """Every file of every class folder, validated: (valid images sorted by path, skipped files, files seen)."""
    files = [(f"{name}/{p.name}", p, label) for label, name in enumerate(CLASSES)
             for p in sorted((root / name).iterdir()) if p.is_file()]
    files.sort()
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
        inspected = list(pool.map(_inspect, [p for _, p, _ in files]))
    rows, skipped = [], []
    for (image, _, label), (sha, problem) in zip(files, inspected):
        if problem:
            warnings.warn(f"skipping {root / image}: {problem}", DataWarning, stacklevel=3)
            skipped.append((image, problem))
        else:
            rows.append((image, sha, label, CLASSES[label]))
    return pd.DataFrame(rows, columns=["image", "sha256", "label", "class_name"]), skipped, len(files)


def _drop_duplicates(images: pd.DataFrame, root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Byte-identical images: one kept (first by path) when they share a class, all dropped when labels conflict."""
    dropped = []
    for _, group in images[images.sha256.duplicated(keep=False)].groupby("sha256", sort=False):
        names = sorted(group.image)
        if group.label.nunique() > 1:
            reason = "identical images with different labels (" + ", ".join(names) + "): all copies dropped"
            warnings.warn(f"dropping {', '.join(str(root / n) for n in names)}: identical images with different labels",
                          DataWarning, stacklevel=3)
            dropped += [(name, reason) for name in names]
        else:
            for name in names[1:]:
                warnings.warn(f"dropping {root / name}: same image as {names[0]} (kept)", DataWarning, stacklevel=3)
                dropped.append((name, f"same image as {names[0]} (kept)"))
    gone = {name for name, _ in dropped}
    return images[~images.image.isin(gone)].reset_index(drop=True), dropped


# ------------------------------------------------------------------------------------------- tiers and splits

def _largest_remainder(total: int, weights: Sequence[int]) -> np.ndarray:
    """Integer shares of `total` proportional to integer `weights` (Hamilton's method; ties go to the earlier weight)."""
    weights = np.asarray(weights, dtype=np.int64)
    scaled = total * weights
    counts = scaled // weights.sum()
    order = np.argsort(-(scaled % weights.sum()), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _rake(seed: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Scale `seed` until its row and column sums are `rows` and `cols` (iterative proportional fitting)."""
    table = seed.astype(float)
    for _ in range(200):
        row_sums = table.sum(1, keepdims=True)
        table *= np.divide(rows[:, None], row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
        col_sums = table.sum(0, keepdims=True)
        table *= np.divide(cols[None, :], col_sums, out=np.zeros_like(col_sums), where=col_sums > 0)
        if np.abs(table.sum(1) - rows).max() < 1e-9:
            break
    return table


def _round_table(target: np.ndarray, rows: np.ndarray, cols: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """An integer table with row sums `rows`, column sums `cols` and cells <= `cap`, each cell the floor or
    the ceiling of `target` where possible: fill from the floors, one unit at a time along augmenting paths."""
    table = np.minimum(np.floor(target + 1e-9), cap).astype(np.int64)
    for low, high in ((table.copy(), np.minimum(np.ceil(target - 1e-9), cap)), (np.zeros_like(table), cap)):
        while (rows - table.sum(1)).any():
            if not _augment(table, low, high, rows - table.sum(1), cols - table.sum(0), target):
                break
    if (rows - table.sum(1)).any() or (cols - table.sum(0)).any():
        raise ValueError(f"cannot split {rows.sum()} images into classes {rows.tolist()} and splits {cols.tolist()} "
                         "inside the next bigger tier: choose tier sizes further apart")
    return table


def _augment(table, low, high, row_need, col_need, target) -> bool:
    """Add one unit from a row that needs it to a column that needs it, shifting units along the way; False if none."""
    n_rows, n_cols = table.shape
    direct = [(target[r, c] - table[r, c], r, c) for r in range(n_rows) for c in range(n_cols)
              if row_need[r] > 0 and col_need[c] > 0 and table[r, c] < high[r, c]]
    if direct:  # the cell furthest below its target first
        _, r, c = max(direct)
        table[r, c] += 1
        return True
    parent: dict[tuple[str, int], tuple[str, int] | None] = {("row", r): None for r in range(n_rows) if row_need[r] > 0}
    queue = list(parent)
    while queue:
        kind, i = queue.pop(0)
        if kind == "row":
            steps = [("col", c) for c in range(n_cols) if table[i, c] < high[i, c]]
        else:
            steps = [("row", r) for r in range(n_rows) if table[r, i] > low[r, i]]
        for step in steps:
            if step in parent:
                continue
            parent[step] = (kind, i)
            if step[0] == "col" and col_need[step[1]] > 0:
                node = step
                while parent[node] is not None:  # walk back: +1 on row->col edges, -1 on col->row edges
                    prev = parent[node]
                    if node[0] == "col":
                        table[prev[1], node[1]] += 1
                    else:
                        table[node[1], prev[1]] -= 1
                    node = prev
                return True
            queue.append(step)
    return False


def _resolve_tiers(tiers: dict[str, int | None] | None, usable: int) -> tuple[dict[str, int], dict[str, int]]:
    """Requested tier sizes (None = all usable images) and the thesis tiers left out by default."""
    if tiers is None:
        wanted = {t: n for t, n in THESIS_TIERS.items() if n is None or n <= usable}
        omitted = {t: n for t, n in THESIS_TIERS.items() if n is not None and n > usable}
    else:
        if not isinstance(tiers, dict) or not tiers:
            raise ValueError(f"tiers must be a non-empty dict of tier name -> size (or None for all images), got {tiers!r}")
        wanted, omitted = dict(tiers), {}
    sizes = {}
    for name, size in wanted.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tier names must be non-empty strings, got {name!r}")
        if size is None:
            size = usable
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"tier {name!r}: size must be a positive integer or None (all images), got {size!r}")
        if size > usable:
            raise ValueError(f"tier {name!r} needs {size} images but only {usable} usable images are available; "
                             "use the full dataset (python -m raybench.data download DEST) or a smaller tier")
        empty = [s for s, n in zip(SPLITS, _largest_remainder(int(size), SPLIT_RATIO)) if n == 0]
        if empty:
            raise ValueError(f"tier {name!r} of {size} images leaves the {', '.join(empty)} split empty; use at least 3 images")
        sizes[name] = int(size)
    return sizes, omitted


def _tables(class_counts: np.ndarray, sizes: Sequence[int]) -> dict[int, np.ndarray]:
    """Class x split counts for every size of the nesting chain: `sizes`, all usable images, and the thesis tiers
    that fit. Drawn biggest first, each a stratified rounding of the next bigger one, so cells never grow downwards."""
    usable = int(class_counts.sum())
    chain = sorted({usable, *sizes, *(n for n in THESIS_TIERS.values() if n is not None and n <= usable)}, reverse=True)
    ratio = np.asarray(SPLIT_RATIO, dtype=np.int64)
    table, drawn = None, {}
    for size in chain:
        cols = _largest_remainder(size, ratio)
        if table is None:  # all usable images: each class split 5:2:3
            rows, seed, cap = class_counts, np.outer(class_counts, ratio), np.outer(class_counts, np.ones_like(ratio))
        else:
            rows, seed, cap = _largest_remainder(size, table.sum(1)), table, table
            if (cols > table.sum(0)).any():
                raise ValueError(f"cannot nest {size} images inside {table.sum()}: choose tier sizes further apart")
        table = _round_table(_rake(seed, rows.astype(float), cols.astype(float)), rows, cols, cap)
        drawn[size] = table
    return drawn


def tier_counts(class_counts: Sequence[int], tiers: dict[str, int | None] | None = None) -> dict[str, np.ndarray]:
    """Images per class (rows, in CLASSES order) and split (columns: train, val, test) of each tier.

    Totals are exact: a tier has its size and its splits the 5:2:3 shares of it (largest remainder). Tiers nest:
    they are drawn biggest first, each a class-stratified rounding of the next bigger one, no cell exceeding it.
    The thesis tiers that fit the data always take part in that chain, asked for or not, so a thesis tier is the
    same images whichever thesis tiers a run asks for (a custom tier changes the draw of the tiers below it).
    """
    class_counts = np.asarray(class_counts, dtype=np.int64)
    sizes, _ = _resolve_tiers(tiers, int(class_counts.sum()))
    tables = _tables(class_counts, list(sizes.values()))
    return {name: tables[size] for name, size in sizes.items()}


def _draw(images: pd.DataFrame, sizes: dict[str, int], *, seed: int) -> pd.DataFrame:
    """The manifest. Each class's images are put in a seeded order and cut into train, val and test blocks for all
    usable images; a tier's (class, split) cell is a prefix of that block, so tiers nest split by split. Rows of a
    split are sorted by the smallest tier holding them, so every tier's split is a prefix of the biggest one's."""
    tables = _tables(np.bincount(images.label, minlength=len(CLASSES)), list(sizes.values()))
    chain = sorted(tables)  # smallest first
    everything = tables[chain[-1]]
    # the order depends on content only: the same images draw the same way wherever they are stored
    key = images.sha256.map(lambda sha: hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest())
    placed = []  # (split, level, label, rank, row of `images`)
    for label in range(len(CLASSES)):
        members = images.index[images.label == label][np.argsort(key[images.label == label].to_numpy(), kind="stable")]
        start = 0
        for s in range(len(SPLITS)):
            for rank, row in enumerate(members[start: start + everything[label, s]]):
                level = next(i for i, size in enumerate(chain) if tables[size][label, s] > rank)
                placed.append((s, level, label, rank, row))
            start += everything[label, s]
    placed.sort()
    frames = []
    for tier, size in sizes.items():
        for s, split in enumerate(SPLITS):
            rows = [row for (s_, level, _, _, row) in placed if s_ == s and chain[level] <= size]
            frames.append(images.loc[rows].assign(tier=tier, split=split))
    return pd.concat(frames, ignore_index=True)[["image", "sha256", "label", "class_name", "tier", "split"]]


def tiers_for(tier: str) -> dict[str, int | None]:
    """The tiers to prepare for a run of one thesis tier (its draw does not depend on the other tiers)."""
    if tier not in THESIS_TIERS:
        raise ValueError(f"unknown tier {tier!r}; thesis tiers: {', '.join(THESIS_TIERS)}")
    return {tier: THESIS_TIERS[tier]}


def prepare(data: str | Path | None, *, tiers: dict[str, int | None] | None = None, seed: int = 0) -> Prepared:
    """Find, validate and deduplicate the images of `data` (None = the embedded sample) and draw the tiers.

    Every file of every class folder is decoded once here; a file that is not an image, is truncated, cannot be
    decoded or is smaller than the 352x352 crop is skipped with a DataWarning and listed in the report. Byte-identical
    images are dropped (all copies when their labels differ, all but the first by path otherwise), so duplicates
    never straddle splits. `tiers` (name -> size, None = all usable images) defaults to the thesis tiers that fit
    the data; asking for a tier bigger than the usable images is a ValueError.
    """
    root = find_root(data)
    images, skipped, seen = _scan(root)
    images, dropped = _drop_duplicates(images, root)
    if images.empty:
        raise ValueError(f"no usable images in {root}: all {seen} files were skipped or dropped (see the warnings)")
    sizes, omitted = _resolve_tiers(tiers, len(images))
    manifest = _draw(images, sizes, seed=seed)
    usable_per_class = {name: int((images.label == i).sum()) for i, name in enumerate(CLASSES)}
    drawn = {t: {s: int(((manifest.tier == t) & (manifest.split == s)).sum()) for s in SPLITS} for t in sizes}
    report = PrepareReport(root=root, seed=seed, files_seen=seen, skipped=tuple(skipped), duplicates_dropped=tuple(dropped),
                           usable_per_class=usable_per_class, tiers=drawn, omitted_tiers=omitted)
    return Prepared(root=root, manifest=manifest, report=report, seed=seed, tiers=sizes)


# --------------------------------------------------------------------------------------------- preprocessing

def preprocess(img: Image.Image, image_size: int = CROP) -> np.ndarray:
    """§4.2: luminance Y = 0.2989 R + 0.587 G + 0.114 B (rounded), centre crop 352x352, then resize if smaller."""
    if image_size > CROP or image_size < 1:
        raise ValueError(f"image_size must be between 1 and {CROP} (the thesis crops {CROP}x{CROP}), got {image_size}")
    width, height = img.size
    if width < CROP or height < CROP:
        name = getattr(img, "filename", "") or "(unnamed image)"
        raise ValueError(f"image {name} is {width}x{height}, smaller than the {CROP}x{CROP} centre crop")
    top, left = int(round((height - CROP) / 2.0)), int(round((width - CROP) / 2.0))  # as torchvision's CenterCrop
    rgb = np.asarray(img.crop((left, top, left + CROP, top + CROP)).convert("RGB"), dtype=np.float64)
    grey = 0.2989 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    if image_size < CROP:
        grey = np.asarray(Image.fromarray(grey).resize((image_size, image_size), Image.BILINEAR))
    return grey


def to_input(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 images (N, H, W) -> normalised float32 (N, channels, H, W); the channels are views of one (§4.2)."""
    import torch

    if x.dtype != torch.uint8 or x.ndim != 3:
        raise ValueError(f"to_input expects uint8 images shaped (N, H, W), got {x.dtype} {tuple(x.shape)}")
    if channels < 1:
        raise ValueError(f"channels must be positive (1 for lenet5, 3 otherwise), got {channels}")
    x = x.to(torch.float32).div_(255.0).sub_(MEAN).div_(STD)
    return x.unsqueeze(1).expand(-1, channels, -1, -1)


# ------------------------------------------------------------------------------------ the decode-once cache

def load_split(prepared: Prepared, tier: str, split: str, *, image_size: int = CROP,
               cache_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, image_size, image_size), y int64 (N,)) of one tier and split, in manifest order.

    x is a read-only view of a memory-mapped cache shared by every trial on the machine. One cache file holds one
    split of the biggest tier of `prepared`; every smaller tier's split is a prefix of it. The file is keyed by the
    images' content, the image size and PREPROCESS_VERSION, checksummed, and rebuilt whenever it does not check out.
    """
    if tier not in prepared.tiers:
        hint = (f"; tier {tier!r} needs {prepared.report.omitted_tiers[tier]} images but {prepared.root} has "
                f"{prepared.report.usable} usable" if tier in prepared.report.omitted_tiers else "")
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
    x = _decoded(prepared.root, block, image_size, Path(cache_dir).expanduser(), split=split,
                 check_rows=len(index) if prefix else len(block))
    x = x[: len(index)] if prefix else np.asarray(x[index])
    return x, rows.label.to_numpy(dtype=np.int64)


def _decoded(root: Path, block: pd.DataFrame, image_size: int, cache_dir: Path, *, split: str, check_rows: int) -> np.ndarray:
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
        raise RuntimeError(f"the decoded cache {path} does not check out right after building it; is {cache_dir} writable and not full?")
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
            if hashlib.sha256(x[i: i + rows]).hexdigest() != meta["chunks"][i // rows]:
                raise ValueError(f"the checksum of images {i}-{min(i + rows, len(x)) - 1} differs")
    except Exception as error:  # missing sidecar, truncated file, bad header, wrong checksum: all mean rebuild
        if not quiet:
            warnings.warn(f"decoded cache {path} is unusable ({error}); rebuilding it", DataWarning, stacklevel=4)
        return None
    return x


def _build_cache(path: Path, root: Path, block: pd.DataFrame, image_size: int, expected: dict) -> None:
    """Decode every image of `block` into a temporary .npy, checksum it, then move it and its sidecar in place."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=tuple(expected["shape"]))

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

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, os.cpu_count() or 1)) as pool:
            list(pool.map(decode, zip(range(len(block)), block.image, block.sha256)))
        out.flush()
        chunks = [hashlib.sha256(out[i: i + _CHUNK_ROWS]).hexdigest() for i in range(0, len(out), _CHUNK_ROWS)]
        del out
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sidecar_tmp = path.with_name(f"{path.stem}.json.tmp-{os.getpid()}")
    sidecar_tmp.write_text(json.dumps({**expected, "chunk_rows": _CHUNK_ROWS, "chunks": chunks, "images": list(block.image)}))
    os.replace(sidecar_tmp, path.with_suffix(".json"))


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock between processes (trials starting together build a cache once)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------- download

def download(dest: str | Path, *, url: str = PBC_URL, attempts: int = 3, retry_wait: float = 2.0) -> Path:
    """Fetch, check and unpack the full dataset into `dest`; return the dataset folder. Resumes a broken download."""
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    zip_path = dest / PBC_ZIP
    if not zip_path.exists():
        part = dest / (PBC_ZIP + ".part")
        for attempt in range(1, attempts + 1):
            try:
                _fetch(url, part)
                break
            except (OSError, http.client.HTTPException, DownloadError) as error:  # cut connections, timeouts, resets
                if isinstance(error, urllib.error.HTTPError) and error.code < 500 and error.code not in (408, 416, 429):
                    raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error  # retrying won't help
                have = part.stat().st_size if part.exists() else 0
                if attempt == attempts:
                    raise DownloadError(f"download of {url} failed ({error}); {have} bytes are kept in {part}: "
                                        "run the same command again to resume") from error
                print(f"download interrupted ({error}); resuming from byte {have}", file=sys.stderr)
                time.sleep(retry_wait)
        _check_zip(part)
        os.replace(part, zip_path)
    return find_root(zip_path)


def _fetch(url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "raybench (python urllib)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the .part may already be whole
            total = re.search(r"/(\d+)", error.headers.get("Content-Range", ""))
            if total and int(total.group(1)) == have:
                return
            part.unlink()
        raise
    with response:
        total = None
        if have and response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink()
                raise DownloadError(f"the server resumed at the wrong place ({response.headers.get('Content-Range')}); starting over")
            total = int(match.group(2)) if match.group(2) != "*" else None
            mode = "ab"
        else:  # 200: the server sends everything (again)
            length = response.headers.get("Content-Length")
            total, mode, have = (int(length) if length else None), "wb", 0
        print(f"downloading {url} -> {part}" + (f" ({total / 1e6:.0f} MB)" if total else ""), file=sys.stderr)
        with open(part, mode) as handle:
            while block := response.read(1 << 20):
                handle.write(block)
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"the connection closed after {size} of {total} bytes")


def _check_zip(path: Path) -> None:
    """A readable zip whose CRCs check out and which holds the 8 class folders; else delete it and raise."""
    try:
        with zipfile.ZipFile(path) as archive:
            folders = {tuple(name.split("/")[:2]) for name in archive.namelist() if name.count("/") >= 2}
            if not any(all((top, c) in folders for c in CLASSES) for top, _ in folders):
                raise DownloadError(f"the archive lacks the class folders {', '.join(CLASSES)}")
            broken = archive.testzip()
            if broken:
                raise DownloadError(f"the archive member {broken} is corrupt")
    except (zipfile.BadZipFile, DownloadError) as error:
        path.unlink()
        raise DownloadError(f"the download is not the PBC dataset ({error}); if the address changed, find the file on "
                            "https://data.mendeley.com/datasets/snkd93bnjr/1 and pass --url") from error


# ------------------------------------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raybench.data", description="The PBC dataset: download or prepare it.")
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="fetch, check and unpack PBC_dataset_normal_DIB.zip (resumes)")
    get.add_argument("dest", help="folder to download into")
    get.add_argument("--url", default=PBC_URL, help="where to fetch the zip from (default: Mendeley Data snkd93bnjr v1)")
    prep = commands.add_parser("prepare", help="validate the images, draw the tiers and print the report")
    prep.add_argument("data", nargs="?", help="PBC_dataset_normal_DIB folder, its parent or the .zip (default: embedded sample)")
    prep.add_argument("--seed", type=int, default=0, help="split seed (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            print(f"dataset ready at {download(args.dest, url=args.url)}")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)  # the report lists every skipped and dropped file
                print(prepare(args.data, seed=args.seed).report)
    except (ValueError, DownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
