"""Preparing the data once, before trials run (nanoGPT's prepare.py): find the images, validate them, keep or drop
duplicates and draw the tiers into a manifest; `Prepared` holds it and `PrepareReport` says what was found.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from raybench.catalog import CLASSES, SPLITS
from raybench.data.source import find_root
from raybench.data.tiers import check_split_rule, draw, resolve_tiers
from raybench.data.validation import drop_duplicates, scan

SPLIT_PAIRS: tuple[tuple[str, str], ...] = (("train", "val"), ("train", "test"), ("val", "test"))
PAIR_NAMES = tuple(f"{a}/{b}" for a, b in SPLIT_PAIRS)
PAIRS_TITLE = "   identical pairs across "


def straddling_pairs(rows: pd.DataFrame) -> dict[str, int]:
    """Pairs of identical images (same sha256) that one tier's manifest rows put in two splits, per pair of splits:
    {"train/val": n, "train/test": n, "val/test": n}. A test image with a copy in train is one the model has seen."""
    per_split = rows.groupby(["sha256", "split"]).size().unstack(fill_value=0).reindex(columns=SPLITS, fill_value=0)
    return {
        name: int((per_split[a] * per_split[b]).sum()) for name, (a, b) in zip(PAIR_NAMES, SPLIT_PAIRS, strict=True)
    }


@dataclasses.dataclass(frozen=True)
class PrepareReport:
    """What `prepare` found: files seen, skipped (with reasons), duplicates kept or dropped, usable images, tiers
    drawn (per class and split) and the identical images each tier puts in two splits."""

    root: Path
    seed: int
    files_seen: int
    skipped: tuple[tuple[str, str], ...]  # (image, reason): not an image, truncated, undecodable, too small
    duplicates_dropped: tuple[tuple[str, str], ...]  # (image, reason), with dedupe
    usable_per_class: dict[str, int]
    tiers: dict[str, dict[str, int]]  # tier -> split -> images
    omitted_tiers: dict[str, int]  # tiers left out because the data is too small for them
    split_rule: str = "thesis"
    dedupe: bool = False
    duplicates_kept: tuple[tuple[str, str], ...] = ()  # (image, reason): every copy after the first, without dedupe
    per_class: dict[str, dict[str, tuple[int, int, int]]] = dataclasses.field(default_factory=dict)  # tier -> class
    straddling: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # tier -> "train/test" -> pairs
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # tier -> size asked for

    @property
    def usable(self) -> int:
        return sum(self.usable_per_class.values())

    def __str__(self) -> str:
        duplicates = "dropped" if self.dedupe else "kept"
        lines = [
            f"PBC data at {self.root} (split seed {self.seed}, split rule {self.split_rule}, duplicates {duplicates})",
            f"  files seen          {self.files_seen:6d}",
            f"  skipped             {len(self.skipped):6d}",
            f"  duplicates {duplicates:<9}{len(self.duplicates_dropped if self.dedupe else self.duplicates_kept):6d}"
            + ("" if self.dedupe else "  (copies of another image, kept as the thesis did; dedupe=true drops them)"),
            f"  usable images       {self.usable:6d}  ("
            + ", ".join(f"{name} {n}" for name, n in self.usable_per_class.items())
            + ")",
            f"  {'tier':<10}{'size':>7}{'train':>7}{'val':>7}{'test':>7}{PAIRS_TITLE}" + "  ".join(PAIR_NAMES),
        ]
        for tier, counts in self.tiers.items():
            pairs = self.straddling.get(tier, {})
            lines.append(
                f"  {tier:<10}{self.sizes.get(tier, sum(counts.values())):7d}"
                + "".join(f"{counts[s]:7d}" for s in SPLITS)
                + " " * len(PAIRS_TITLE)
                + "  ".join(f"{pairs.get(name, 0):>{len(name)}d}" for name in PAIR_NAMES)
            )
        if self.omitted_tiers:
            lines.append(
                "  not drawn (the data is too small): "
                + ", ".join(f"{t} (needs {n})" for t, n in self.omitted_tiers.items())
            )
        lines += self.class_table()
        for title, items in (
            ("skipped", self.skipped),
            ("dropped", self.duplicates_dropped),
            ("kept", self.duplicates_kept),
        ):
            for image, reason in items[:20]:
                lines.append(f"  {title} {image}: {reason}")
            if len(items) > 20:
                lines.append(f"  ... and {len(items) - 20} more {title}")
        return "\n".join(lines)

    def class_table(self) -> list[str]:
        """Each tier's train / val / test images per class, side by side, with the totals."""
        if not self.per_class:
            return []
        tiers = list(self.per_class)
        lines = [
            f"  {'images per class':<16}" + "".join(f"  {tier:>17}" for tier in tiers),
            f"  {'':<16}" + "".join(f"  {'train':>7}{'val':>5}{'test':>5}" for _ in tiers),
        ]
        for name in CLASSES:
            lines.append(
                f"  {name:<16}"
                + "".join(f"  {a:7d}{b:5d}{c:5d}" for a, b, c in (self.per_class[t][name] for t in tiers))
            )
        totals = [[sum(self.per_class[t][name][i] for name in CLASSES) for i in range(3)] for t in tiers]
        lines.append(f"  {'total':<16}" + "".join(f"  {a:7d}{b:5d}{c:5d}" for a, b, c in totals))
        return lines


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A validated dataset and its tiers: `manifest` has one row per image and tier."""

    root: Path  # manifest images are relative to it
    manifest: pd.DataFrame  # image, sha256, label, class_name, tier, split
    report: PrepareReport
    seed: int
    tiers: dict[str, int]  # tier -> size asked for (images)
    split_rule: str = "thesis"
    dedupe: bool = False


def prepare(
    data: str | Path | None,
    *,
    tiers: dict[str, int | None] | None = None,
    seed: int = 0,
    split_rule: str = "thesis",
    dedupe: bool = False,
    omit_too_big: bool = False,
) -> Prepared:
    """Find and validate the images of `data` (None = the embedded sample) and draw the tiers.

    Every file of every class folder is decoded once here; a file that is not an image, is truncated, cannot be
    decoded or is smaller than the 352x352 crop is skipped with a DataWarning and listed in the report. Byte-identical
    images are kept, as the thesis kept them (the report counts the pairs each tier puts in two splits); with `dedupe`
    they are dropped (all copies when their labels differ, all but the first by path otherwise), so duplicates never
    straddle splits. `split_rule` is "thesis" or "exact" (see `tiers`). `tiers` (name -> size, None = all usable
    images) defaults to the thesis tiers that fit the data; a tier bigger than the data is a ValueError, or left out
    and listed in the report with `omit_too_big`.
    """
    check_split_rule(split_rule)
    root = find_root(data)
    images, skipped, seen = scan(root)
    images, duplicates = drop_duplicates(images, root, drop=dedupe)
    if images.empty:
        raise ValueError(f"no usable images in {root}: all {seen} files were skipped or dropped (see the warnings)")
    class_counts = [int((images.label == i).sum()) for i in range(len(CLASSES))]
    sizes, omitted = resolve_tiers(tiers, class_counts, split_rule=split_rule, omit_too_big=omit_too_big)
    manifest = draw(images, sizes, seed=seed, split_rule=split_rule)
    drawn, per_class, straddling = {}, {}, {}
    for tier in sizes:
        rows = manifest[manifest.tier == tier]
        table = rows.groupby(["label", "split"]).size().unstack(fill_value=0)
        table = table.reindex(index=range(len(CLASSES)), columns=SPLITS, fill_value=0)
        drawn[tier] = {s: int(table[s].sum()) for s in SPLITS}
        per_class[tier] = {name: tuple(int(n) for n in table.loc[i]) for i, name in enumerate(CLASSES)}
        straddling[tier] = straddling_pairs(rows)
    report = PrepareReport(
        root=root,
        seed=seed,
        files_seen=seen,
        skipped=tuple(skipped),
        duplicates_dropped=tuple(duplicates) if dedupe else (),
        usable_per_class=dict(zip(CLASSES, class_counts, strict=True)),
        tiers=drawn,
        omitted_tiers=omitted,
        split_rule=split_rule,
        dedupe=dedupe,
        duplicates_kept=() if dedupe else tuple(duplicates),
        per_class=per_class,
        straddling=straddling,
        sizes=sizes,
    )
    return Prepared(
        root=root, manifest=manifest, report=report, seed=seed, tiers=sizes, split_rule=split_rule, dedupe=dedupe
    )
