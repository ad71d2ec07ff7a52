"""Drawing the tiers and splits (thesis table 4.1, §4.3): nested, class-stratified tiers, each split 5:2:3 into
train / val / test, with exact totals. Torch-free: numpy and pandas only.

The counts come first (`tier_counts`: a class x split table per tier, each a stratified rounding of the next bigger
one), then the images (`draw`: a seeded, content-keyed order per class cut into those counts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raybench.catalog import CLASSES, SPLIT_RATIO, SPLITS, TIERS

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


def resolve_tiers(tiers: dict[str, int | None] | None, usable: int) -> tuple[dict[str, int], dict[str, int]]:
    """Requested tier sizes (None = all usable images) and the thesis tiers left out by default."""
    if tiers is None:
        wanted = {t: n for t, n in TIERS.items() if n is None or n <= usable}
        omitted = {t: n for t, n in TIERS.items() if n is not None and n > usable}
    else:
        if not isinstance(tiers, dict) or not tiers:
            raise ValueError(
                f"tiers must be a non-empty dict of tier name -> size (or None for all images), got {tiers!r}"
            )
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
            raise ValueError(
                f"tier {name!r} needs {size} images but only {usable} usable images are available; "
                "use the full dataset (python -m raybench.data download DEST) or a smaller tier"
            )
        empty = [s for s, n in zip(SPLITS, _largest_remainder(int(size), SPLIT_RATIO), strict=True) if n == 0]
        if empty:
            raise ValueError(
                f"tier {name!r} of {size} images leaves the {', '.join(empty)} split empty; use at least 3 images"
            )
        sizes[name] = int(size)
    return sizes, omitted


def _tables(class_counts: np.ndarray, sizes: Sequence[int]) -> dict[int, np.ndarray]:
    """Class x split counts for every size of the nesting chain: `sizes`, all usable images, and the thesis tiers
    that fit. Drawn biggest first, each a stratified rounding of the next bigger one, so cells never grow downwards."""
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


def tier_counts(class_counts: Sequence[int], tiers: dict[str, int | None] | None = None) -> dict[str, np.ndarray]:
    """Images per class (rows, in CLASSES order) and split (columns: train, val, test) of each tier.

    Totals are exact: a tier has its size and its splits the 5:2:3 shares of it (largest remainder). Tiers nest:
    they are drawn biggest first, each a class-stratified rounding of the next bigger one, no cell exceeding it.
    The thesis tiers that fit the data always take part in that chain, asked for or not, so a thesis tier is the
    same images whichever thesis tiers a run asks for (a custom tier changes the draw of the tiers below it).
    """
    class_counts = np.asarray(class_counts, dtype=np.int64)
    sizes, _ = resolve_tiers(tiers, int(class_counts.sum()))
    tables = _tables(class_counts, list(sizes.values()))
    return {name: tables[size] for name, size in sizes.items()}


def tiers_for(tier: str) -> dict[str, int | None]:
    """The tiers to prepare for a run of one thesis tier (its draw does not depend on the other tiers)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; thesis tiers: {', '.join(TIERS)}")
    return {tier: TIERS[tier]}


# --------------------------------------------------------------------------------------------------- images


def draw(images: pd.DataFrame, sizes: dict[str, int], *, seed: int) -> pd.DataFrame:
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
            for rank, row in enumerate(members[start : start + everything[label, s]]):
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
