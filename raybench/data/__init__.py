"""The PBC dataset (thesis §4.1-4.3): find the images, validate them once, keep duplicates (as the thesis did) or drop
them, draw nested class-stratified tiers split by the thesis's per-class rule (or exactly 5:2:3), and decode each image
once into a memory-mapped cache. Torch-free.

    prepared = prepare(None)                      # the embedded 400-image sample; or a folder or the .zip
    x, y = load_split(prepared, "tiny", "train", cache_dir="~/.cache/raybench")
    batch = batches.to_input(torch.from_numpy(x[:32]).to(device), channels=3)

Modules: `source` (finding, unpacking and downloading the data), `validation` (skipping broken files, finding
duplicates), `tiers` (the tiers and splits), `preparation` (`prepare`, its report), `cache` (`preprocess`,
the decode-once cache, `load_split`, `load_masks`) and `masks` (the cell at the centre, §7.2).

Command line: `python -m raybench.data download DEST` fetches the full dataset (Mendeley Data snkd93bnjr v1),
`python -m raybench.data prepare [DATA]` prints the preparation report.
"""

from raybench.catalog import CLASSES, SPLITS  # the class folders and the split names, defined in catalog
from raybench.data.cache import DEFAULT_CACHE_DIR, PREPROCESS_VERSION, cached_images, load_masks, load_split, preprocess
from raybench.data.masks import cell_mask
from raybench.data.preparation import Prepared, PrepareReport, prepare, straddling_pairs
from raybench.data.source import EMBEDDED_DATA, PBC_URL, PBC_ZIP, DownloadError, download, find_root
from raybench.data.tiers import tier_counts, tiers_for
from raybench.data.validation import DataWarning

__all__ = [
    "CLASSES",
    "DEFAULT_CACHE_DIR",
    "EMBEDDED_DATA",
    "PBC_URL",
    "PBC_ZIP",
    "PREPROCESS_VERSION",
    "SPLITS",
    "DataWarning",
    "DownloadError",
    "PrepareReport",
    "Prepared",
    "cached_images",
    "cell_mask",
    "download",
    "find_root",
    "load_masks",
    "load_split",
    "prepare",
    "preprocess",
    "straddling_pairs",
    "tier_counts",
    "tiers_for",
]
