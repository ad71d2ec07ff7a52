"""The masks checked as a person would (§7.2): `measure` segments every image of a PBC folder and says whether its
mask is the cell at the centre, `shares` sums that up per class, and `draw` outlines the masks of a few images of
each class. `python -m raybench.data masks DATA --out FILE.png` does all three.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from raybench.catalog import CLASSES
from raybench.data.cache import centre_crop
from raybench.data.masks import cell_mask

MOST_OF_THE_FRAME = 0.5  # a mask above this share of the 352x352 crop is background or red cells, not one cell
SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def images_of(root: Path, *, per_class: int | None = None) -> list[tuple[str, str]]:
    """(class name, image path relative to `root`) of every image file in the class folders (the first `per_class`
    of each), sorted."""
    return [
        (name, f"{name}/{path.name}")
        for name in CLASSES
        if (root / name).is_dir()
        for path in sorted(p for p in (root / name).iterdir() if p.suffix.lower() in SUFFIXES)[:per_class]
    ]


def mask_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(the 352x352 crop as RGB, its mask) of one image, as the mask cache computes it."""
    with Image.open(path) as img:
        crop = centre_crop(img, 352).convert("RGB")
    rgb = np.asarray(crop)
    return rgb, cell_mask(rgb)


def measure(root: Path, *, per_class: int | None = None, workers: int | None = None) -> pd.DataFrame:
    """One row per image (the first `per_class` of each class): class_name, image, share (of the crop),
    covers_centre, is_cell (covers the centre and is at most MOST_OF_THE_FRAME; so not empty), error (an image that
    could not be read; the rest are None)."""

    def one(item: tuple[str, str]) -> dict:
        name, image = item
        try:
            _, mask = mask_of(root / image)
        except (OSError, ValueError) as error:
            return {"class_name": name, "image": image, "share": np.nan, "covers_centre": False, "error": str(error)}
        h, w = mask.shape
        return {
            "class_name": name,
            "image": image,
            "share": float(mask.mean()),
            "covers_centre": bool(mask[h // 2, w // 2]),
            "error": None,
        }

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        table = pd.DataFrame(list(pool.map(one, images_of(root, per_class=per_class))))
    if table.empty:
        raise ValueError(f"{root} holds no images in class folders ({', '.join(CLASSES)})")
    table["is_cell"] = table.covers_centre & (table.share <= MOST_OF_THE_FRAME)
    return table


def shares(table: pd.DataFrame) -> pd.DataFrame:
    """Per class and overall: images, the share whose mask covers the centre, and the share that is the cell."""
    readable = table[table.error.isna()]
    rows = [(name, readable[readable.class_name == name]) for name in CLASSES if (readable.class_name == name).any()]
    return pd.DataFrame(
        [
            {
                "class_name": name,
                "images": len(part),
                "covers_centre": part.covers_centre.mean(),
                "is_cell": part.is_cell.mean(),
                "median_share": part.share.median(),
            }
            for name, part in [*rows, ("all", readable)]
        ]
    )


def draw(root: Path, table: pd.DataFrame, *, per_class: int = 2, seed: int = 0) -> Figure:
    """`per_class` images of each class (a seeded draw), their masks outlined, in a grid labelled by class."""
    readable = table[table.error.isna()]
    picked = [
        row
        for name in CLASSES
        for row in random.Random(f"{seed}-{name}").sample(
            list(readable[readable.class_name == name].itertuples()),
            k=min(per_class, int((readable.class_name == name).sum())),
        )
    ]
    columns = 4
    rows = -(-len(picked) // columns)
    figure = Figure(figsize=(2.1 * columns, 2.25 * rows))
    for i, row in enumerate(picked):
        ax = figure.add_subplot(rows, columns, i + 1)
        rgb, mask = mask_of(root / row.image)
        ax.imshow(rgb)
        ax.contour(mask, levels=[0.5], colors="lime", linewidths=1.2)
        ax.plot([rgb.shape[1] // 2], [rgb.shape[0] // 2], "+", color="white", markersize=6)
        ax.set_title(f"{row.class_name}  ({row.share:.0%} of the crop)", fontsize=8)
        ax.set_axis_off()
    overall = shares(table).iloc[-1]
    figure.suptitle(
        f"Masks of the cell at the centre (outlined; + the centre), {per_class} a class of {Path(root).name}; "
        f"the cell in {overall.is_cell:.1%} of its {overall.images} images",
        fontsize=8,
    )
    figure.tight_layout()
    return figure
