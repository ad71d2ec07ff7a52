"""Drawing the tiers and splits (thesis table 4.1, §4.3): nested, class-stratified tiers, each split into train /
val / test by one of two rules (catalog.SPLIT_RULES). Torch-free: numpy and pandas only.

"thesis", the default, is the rule the thesis ran: per class, a tier takes its share of the class's images and splits
them int(t/2) / int(t/5) / int(3t/10), the 0-3 left over unused (catalog.class_images, catalog.class_split). A tier's
size is a number of images, shared between the classes in the proportions of the data at hand: t_c = n_c x size / N,
n_c and N counted in that data (usable images, duplicates included unless dropped). On the full dataset these are the
thesis's numbers; on a smaller sample a tier is still `size` images (the embedded 400 are the whole tiny tier), and it
can be drawn as long as no class needs more images than it has. "exact" is table 4.1 as printed: a tier has its size
and its splits the exact 5:2:3 shares of it, each tier a stratified rounding of the next bigger one.

The counts come first (`tier_counts`: a class x split table per tier), then the images (`draw`: a seeded,
content-keyed order per class cut into those counts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raybench.catalog import CLASSES, SPLIT_RATIO, SPLIT_RULES, SPLITS, TIERS, class_images, class_split, is_whole

# ------------------------------------------------------------------------------------------------- rounding


def _largest_remainder(total: int, weights: Sequence[int]) -> np.ndarray:
    """Integer shares of `total` proportional to integer `weights` (Hamilton's method; ties to the earlier weight)."""
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
        raise ValueError(
            f"cannot split {rows.sum()} images into classes {rows.tolist()} and splits {cols.tolist()} "
            "inside the next bigger tier: choose tier sizes further apart"
        )
    return table


def _augment(table, low, high, row_need, col_need, target) -> bool:
    """Add one unit from a row that needs it to a column that needs it, shifting units along the way; False if none."""
    n_rows, n_cols = table.shape
    direct = [
        (target[r, c] - table[r, c], r, c)
        for r in range(n_rows)
        for c in range(n_cols)
        if row_need[r] > 0 and col_need[c] > 0 and table[r, c] < high[r, c]
    ]
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


# ---------------------------------------------------------------------------------------------------- tiers


def check_split_rule(split_rule: str) -> None:
    if split_rule not in SPLIT_RULES:
        raise ValueError(f"unknown split_rule {split_rule!r}; split rules: {', '.join(SPLIT_RULES)}")


def _thesis_table(class_counts: np.ndarray, size: int) -> np.ndarray:
    """Class x split counts of a tier of `size` under the thesis's rule."""
    return np.array([class_split(t) for t in class_images(class_counts.tolist(), size)], dtype=np.int64)


def _fits(class_counts: np.ndarray, size: int, split_rule: str) -> bool:
    if split_rule == "thesis":  # a tier a little bigger than the data may still round to what each class has
        return bool((np.array(class_images(class_counts.tolist(), size)) <= class_counts).all())
    return size <= class_counts.sum()


def _empty_splits(class_counts: np.ndarray, size: int, split_rule: str) -> list[str]:
    if split_rule == "thesis":
        totals = _thesis_table(class_counts, size).sum(0)
    else:
        totals = _largest_remainder(size, SPLIT_RATIO)
    return [split for split, n in zip(SPLITS, totals, strict=True) if n == 0]


def resolve_tiers(
    tiers: dict[str, int | None] | None,
    class_counts: Sequence[int],
    *,
    split_rule: str = "thesis",
    omit_too_big: bool = False,
) -> tuple[dict[str, int], dict[str, int]]:
    """Requested tier sizes (None = all usable images) and the tiers left out because the data is too small for them.

    The thesis tiers (`tiers` None) are left out quietly when they do not fit, and so are `tiers` with
    `omit_too_big`; otherwise a tier bigger than the data is a ValueError.
    """
    check_split_rule(split_rule)
    class_counts = np.asarray(class_counts, dtype=np.int64)
    usable = int(class_counts.sum())
    if tiers is None:
        tiers, omit_too_big = dict(TIERS), True
    elif not isinstance(tiers, dict) or not tiers:
        raise ValueError(f"tiers must be a non-empty dict of tier name -> size (or None for all images), got {tiers!r}")
    sizes, omitted = {}, {}
    for name, size in tiers.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tier names must be non-empty strings, got {name!r}")
        if size is None:
            size = usable
        if not is_whole(size):
            raise ValueError(f"tier {name!r}: size must be a positive integer or None (all images), got {size!r}")
        if not _fits(class_counts, int(size), split_rule):
            if omit_too_big:
                omitted[name] = int(size)
                continue
            raise ValueError(
                f"tier {name!r} needs {size} images but only {usable} usable images are available; "
                "use the full dataset (python -m raybench.data download DEST) or a smaller tier"
            )
        empty = _empty_splits(class_counts, int(size), split_rule)
        if empty:
            hint = (
                "a class gives a tier's train split an image from 2 images on, test from 4 and val from 5 (the "
                "thesis's rule); use a bigger tier or split_rule='exact'"
                if split_rule == "thesis"
                else "use at least 3 images"
            )
            raise ValueError(f"tier {name!r} of {size} images leaves the {', '.join(empty)} split empty: {hint}")
        sizes[name] = int(size)
    return sizes, omitted


def _exact_tables(class_counts: np.ndarray, sizes: Sequence[int]) -> dict[int, np.ndarray]:
    """The "exact" rule's class x split counts for every size of the nesting chain: `sizes`, all usable images, and
    the thesis tiers that fit. Drawn biggest first, each a stratified rounding of the next bigger one, so cells never
    grow downwards; the thesis tiers always take part, so a thesis tier is the same whichever tiers a run asks for."""
    usable = int(class_counts.sum())
    chain = sorted({usable, *sizes, *(n for n in TIERS.values() if n is not None and n <= usable)}, reverse=True)
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


def _tables(class_counts: np.ndarray, sizes: Sequence[int], split_rule: str) -> dict[int, np.ndarray]:
    """Class x split counts of every size in `sizes` and of all usable images, none of whose cells shrinks as the
    size grows (so tiers nest). Under the thesis's rule each tier is its own rounding of the class counts."""
    if split_rule == "thesis":
        return {size: _thesis_table(class_counts, size) for size in {int(class_counts.sum()), *sizes}}
    return _exact_tables(class_counts, sizes)


def tier_counts(
    class_counts: Sequence[int], tiers: dict[str, int | None] | None = None, *, split_rule: str = "thesis"
) -> dict[str, np.ndarray]:
    """Images per class (rows, in CLASSES order) and split (columns: train, val, test) of each tier.

    "thesis": per class c, t_c = n_c x size / N images (rounded half up) split int(t_c/2) / int(t_c/5) /
    int(3 t_c/10). "exact": totals are exact, a tier has its size and its splits the 5:2:3 shares of it (largest
    remainder). Either way tiers nest cell by cell: no smaller tier has more images of a class in a split.
    """
    class_counts = np.asarray(class_counts, dtype=np.int64)
    sizes, _ = resolve_tiers(tiers, class_counts, split_rule=split_rule)
    tables = _tables(class_counts, list(sizes.values()), split_rule)
    return {name: tables[size] for name, size in sizes.items()}


def tiers_for(tier: str) -> dict[str, int | None]:
    """The tiers to prepare for a run of one thesis tier (its draw does not depend on the other tiers)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; thesis tiers: {', '.join(TIERS)}")
    return {tier: TIERS[tier]}


# --------------------------------------------------------------------------------------------------- images


def draw(images: pd.DataFrame, sizes: dict[str, int], *, seed: int, split_rule: str = "thesis") -> pd.DataFrame:
    """The manifest. Each class's images are put in a seeded order and cut into train, val and test blocks for all
    usable images (the thesis's rule leaves the last 0-3 of a class out); a tier's (class, split) cell is a prefix of
    that block, so tiers nest split by split. Rows of a split are sorted by the smallest tier holding them, so every
    tier's split is a prefix of the biggest one's."""
    check_split_rule(split_rule)
    tables = _tables(np.bincount(images.label, minlength=len(CLASSES)), list(sizes.values()), split_rule)
    chain = sorted(tables)  # smallest first
    everything = tables[chain[-1]]
    # the order depends on content only: the same images draw the same way wherever they are stored. A kept copy of
    # an image (the 2nd, 3rd... by path) draws on its own, as each image did in the thesis's random split.
    copy = images.groupby("sha256").cumcount()
    content = images.sha256.where(copy == 0, images.sha256 + ":" + copy.astype(str))
    key = content.map(lambda text: hashlib.sha256(f"{seed}:{text}".encode()).hexdigest())
    placed = []  # (split, level, label, rank, row of `images`)
    for label in range(len(CLASSES)):
        members = images.index[images.label == label][np.argsort(key[images.label == label].to_numpy(), kind="stable")]
        start = 0
        for s in range(len(SPLITS)):
            for rank, row in enumerate(members[start : start + everything[label, s]]):
                level = next(i for i, size in enumerate(chain) if tables[size][label, s] > rank)
                placed.append((s, level, label, rank, row))
            start += everything[label, s]
    placed.sort()
    frames = [images.iloc[:0].assign(tier="", split="")]  # no rows when no tier fits the data (a dry run's report)
    for tier, size in sizes.items():
        for s, split in enumerate(SPLITS):
            rows = [row for (s_, level, _, _, row) in placed if s_ == s and chain[level] <= size]
            frames.append(images.loc[rows].assign(tier=tier, split=split))
    return pd.concat(frames, ignore_index=True)[["image", "sha256", "label", "class_name", "tier", "split"]]
