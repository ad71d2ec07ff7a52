"""The mask of the cell at the image centre (§7.2: "an extra input channel containing a mask that indicates which
pixels are actually part of the cell of interest"), by classical segmentation: no model, no download, deterministic.

The thesis names StarDist and SplineDist; the stained cell of a PBC image stands out well enough for a threshold.
On the 352x352 crop, in RGB:

1. the stain: blue over green (B - G), where the purple nucleus and the lilac cytoplasm stand out from the pale
   background and from the red cells (pink: little more blue than green);
2. the seed: Otsu's threshold on it, opened (a disc of radius 2), its parts of at least SEED_MIN_AREA pixels within
   SEED_MERGE pixels of the centre (a lobed nucleus is several parts), else the part nearest the centre;
3. the cytoplasm: a second Otsu threshold among the pixels below the first, without red-cell pixels (R - B above
   the red cells' own median, measured more than RED_CELL_DISTANCE from the seed, less RED_CELL_MARGIN), within
   GROWTH pixels of the seed;
4. the cell: the seed, its convex hull (the cytoplasm between the lobes of a nucleus shaped like a C or in parts,
   which stains little: neutrophils, eosinophils) and the cytoplasm connected to it, closed (radius 4), holes
   filled, opened (radius 3).

`cell_mask` gives it as booleans; `preprocess_mask` for an image as the cache stores it (uint8 0/1, the grey
cache's crop and size, resized with the nearest pixel).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage, spatial

from raybench.catalog import CROP

# part of the mask cache's key: change it with any rule or constant below
MASK_VERSION = "pbc-mask-b-g-otsu2-seed25-hull-grow30-redcell8-v2"
SEED_MIN_AREA = 30  # pixels at 352x352: specks of stain are no seed
SEED_MERGE = 25  # pixels from the centre: every seed part this close is the cell's (lobed nuclei)
GROWTH = 30  # pixels: how far the cytoplasm reaches beyond the seed
RED_CELL_DISTANCE = 70  # pixels from the seed: stained pixels this far are red cells (and other cells)
RED_CELL_MARGIN = 8.0  # R - B levels below the red cells' median: cytoplasm is bluer than red cells
MIN_RED_CELL_PIXELS = 100


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of `values` (the bin centre that maximises the between-class variance)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) if values.size else 0.0
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(hist)
    above = below[-1] - below
    mass = np.cumsum(hist * centres)
    mean_below = mass / np.maximum(below, 1)
    mean_above = (mass[-1] - mass) / np.maximum(above, 1)
    return float(centres[np.argmax(below * above * (mean_below - mean_above) ** 2)])


def _disc(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def cell_mask(rgb: np.ndarray) -> np.ndarray:
    """The cell at the centre of an RGB image (H, W, 3) as a boolean mask (H, W); empty when nothing is stained."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"cell_mask expects an RGB image shaped (H, W, 3), got {rgb.shape}")
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    stain = blue - green
    high = otsu_threshold(stain)
    parts, n = ndimage.label(ndimage.binary_opening(stain > high, _disc(2)))
    empty = np.zeros(stain.shape, dtype=bool)
    if n == 0:
        return empty
    h, w = stain.shape
    yy, xx = np.ogrid[:h, :w]
    from_centre = np.hypot(yy - h // 2, xx - w // 2)
    ids = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones_like(stain), parts, ids)
    nearest = ndimage.minimum(from_centre, parts, ids)
    candidates = ids[areas >= SEED_MIN_AREA]
    if candidates.size == 0:
        return empty
    close = candidates[nearest[candidates - 1] <= SEED_MERGE]
    seed = np.isin(parts, close if close.size else candidates[np.argmin(nearest[candidates - 1])])
    stained = stain > otsu_threshold(stain[stain <= high])
    from_seed = ndimage.distance_transform_edt(~seed)
    red_cells = stained & (from_seed > RED_CELL_DISTANCE)
    redness = red - blue
    cytoplasm = stained
    if red_cells.sum() >= MIN_RED_CELL_PIXELS:
        cytoplasm = stained & (redness < np.median(redness[red_cells]) - RED_CELL_MARGIN)
    cytoplasm = ndimage.binary_opening(cytoplasm, _disc(2)) & (from_seed <= GROWTH)
    seed |= convex_hull(seed)
    grown, _ = ndimage.label(cytoplasm | seed)
    touching = np.unique(grown[seed])
    cell = np.isin(grown, touching[touching > 0])
    cell = ndimage.binary_fill_holes(ndimage.binary_closing(cell, _disc(4)))
    return ndimage.binary_opening(cell, _disc(3))


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of a boolean mask's pixels (the mask itself when they are fewer than 3 or in a line)."""
    edge = mask & ~ndimage.binary_erosion(mask)
    points = np.argwhere(edge)
    if len(points) < 3 or np.linalg.matrix_rank(points - points[0]) < 2:
        return mask.copy()
    top, left = points.min(0)
    bottom, right = points.max(0) + 1
    yy, xx = np.mgrid[top:bottom, left:right]
    inside = spatial.Delaunay(points).find_simplex(np.column_stack([yy.ravel(), xx.ravel()])) >= 0
    hull = np.zeros_like(mask)
    hull[top:bottom, left:right] = inside.reshape(yy.shape)
    return hull | mask


def preprocess_mask(crop: Image.Image, image_size: int = CROP) -> np.ndarray:
    """The mask of the checked 352x352 centre crop `crop` at `image_size` (nearest pixel), uint8 0/1."""
    mask = cell_mask(np.asarray(crop.convert("RGB")))
    if image_size < CROP:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((image_size, image_size), Image.NEAREST))
    return np.ascontiguousarray(mask, dtype=np.uint8)
