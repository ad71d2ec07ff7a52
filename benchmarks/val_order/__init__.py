"""How much the validation loss's order and averaging steer a tiny-tier trial: val_order "class" against "shuffled"
(both with the thesis's mean of per-batch means, val_loss="batches") and val_loss="images" (the mean over images).

    python -m benchmarks.val_order --data /path/to/pbc_sample     # every (model, seed, variant) not yet in the CSV
    python -m benchmarks.val_order --report                       # rewrite the .md from the CSV
    python -m benchmarks.val_order --quick                        # 1 model, 1 seed, 2 epochs, into a temp folder

Each trial runs in this process through `trial.train_trial` (no Ray) on the tiny tier (198/76/115) of the real images
that RAYBENCH_SHARED_DATA or --data names, with the thesis's loop and schedule except the image size and the epoch cap
(the command line's, recorded per row). Seed s trains with seed s on split seed s, so every seed is its own tier
draw, validation order and initialisation, and the three variants of a seed differ only in the validation loss.
Each finished trial is one CSV row (and its epochs are rows of the epochs CSV), written as soon as it ends; a row
already there is not run again, so the run can be stopped and resumed.
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
TRIALS_CSV = RESULTS / "val_order.csv"
EPOCHS_CSV = RESULTS / "val_order_epochs.csv"
REPORT = RESULTS / "val_order.md"
SAMPLE_VARIABLE = "RAYBENCH_SHARED_DATA"
MODELS = ("lenet5", "mobilenet_small", "resnet_18")  # cheapest first
# name -> the TrainConfig options that make it; the first is the reference the others are compared with
VARIANTS = {
    "class": {"val_order": "class", "val_loss": "batches"},
    "shuffled": {"val_order": "shuffled", "val_loss": "batches"},
    "images": {"val_order": "class", "val_loss": "images"},
}


def sample_folder() -> str:
    """The real images to draw the tiny tier from (RAYBENCH_SHARED_DATA), "" when it is not set."""
    return os.environ.get(SAMPLE_VARIABLE, "")
