"""Preparing the data once, before trials run (nanoGPT's prepare.py): find the images, validate them, drop
duplicates and draw the tiers into a manifest; `Prepared` holds it and `PrepareReport` says what was found.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from raybench.catalog import CLASSES, SPLITS
from raybench.data.source import find_root
from raybench.data.tiers import draw, resolve_tiers
from raybench.data.validation import drop_duplicates, scan


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
        lines = [
            f"PBC data at {self.root} (split seed {self.seed})",
            f"  files seen          {self.files_seen:6d}",
            f"  skipped             {len(self.skipped):6d}",
            f"  duplicates dropped  {len(self.duplicates_dropped):6d}",
            f"  usable images       {self.usable:6d}  ("
            + ", ".join(f"{name} {n}" for name, n in self.usable_per_class.items())
            + ")",
            f"  {'tier':<10}{'size':>7}{'train':>7}{'val':>7}{'test':>7}",
        ]
        for tier, counts in self.tiers.items():
            lines.append(f"  {tier:<10}{sum(counts.values()):7d}" + "".join(f"{counts[s]:7d}" for s in SPLITS))
        if self.omitted_tiers:
            lines.append(
                "  not drawn (the data is too small): "
                + ", ".join(f"{t} (needs {n})" for t, n in self.omitted_tiers.items())
            )
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


def prepare(data: str | Path | None, *, tiers: dict[str, int | None] | None = None, seed: int = 0) -> Prepared:
    """Find, validate and deduplicate the images of `data` (None = the embedded sample) and draw the tiers.

    Every file of every class folder is decoded once here; a file that is not an image, is truncated, cannot be
    decoded or is smaller than the 352x352 crop is skipped with a DataWarning and listed in the report. Byte-identical
    images are dropped (all copies when their labels differ, all but the first by path otherwise), so duplicates
    never straddle splits. `tiers` (name -> size, None = all usable images) defaults to the thesis tiers that fit
    the data; asking for a tier bigger than the usable images is a ValueError.
    """
    root = find_root(data)
    images, skipped, seen = scan(root)
    images, dropped = drop_duplicates(images, root)
    if images.empty:
        raise ValueError(f"no usable images in {root}: all {seen} files were skipped or dropped (see the warnings)")
    sizes, omitted = resolve_tiers(tiers, len(images))
    manifest = draw(images, sizes, seed=seed)
    usable_per_class = {name: int((images.label == i).sum()) for i, name in enumerate(CLASSES)}
    drawn = {t: {s: int(((manifest.tier == t) & (manifest.split == s)).sum()) for s in SPLITS} for t in sizes}
    report = PrepareReport(
        root=root,
        seed=seed,
        files_seen=seen,
        skipped=tuple(skipped),
        duplicates_dropped=tuple(dropped),
        usable_per_class=usable_per_class,
        tiers=drawn,
        omitted_tiers=omitted,
    )
    return Prepared(root=root, manifest=manifest, report=report, seed=seed, tiers=sizes)
