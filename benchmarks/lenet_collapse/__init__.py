"""LeNet-5's collapse at lr 0.1 on the tiny tier: raybench against a bare loop written from the thesis's text.

    python -m benchmarks.lenet_collapse --seeds 20 --max-epochs 11   # both loops, two processes, then the report
    python -m benchmarks.lenet_collapse --quick                       # 2 seeds, 2 epochs, 64 px, into a temp folder
    python -m benchmarks.lenet_collapse --report                      # rewrite the .md from the JSONL
    python -m benchmarks.lenet_collapse --impl bare --pixels raybench --order raybench --seeds 0,1 --max-epochs 2

Both loops see the same images: raybench's own tier draw of the shared real sample (`data.prepare(...,
tiers={'tiny': 400})`). raybench runs through `trial.train_trial`; the bare loop knows nothing of raybench's code:
ImageFolder-style loading, torchvision transforms on PIL images (Grayscale, CenterCrop(352), ToTensor, Normalize(0.5,
0.225)), a plain DataLoader (batch 64, shuffled), SGD lr 0.1, ReduceLROnPlateau on the validation loss and the
early-stopping rule of fig. 4.5, all as §4.2-4.5 describe them. Each (implementation, variant, seed) is one JSONL row,
written as soon as it ends; a row already in the file is not run again.

The bare loop's `--pixels raybench` (raybench's uint8 cache instead of torchvision's Grayscale) and `--order raybench`
(the images in manifest order, shuffled by `torch.randperm` from its own generator seeded with the seed, as
`loop.Trainer` does) swap one factor at a time; both together should be raybench's run number for number.

The real images are read from the folder RAYBENCH_SHARED_DATA names (the variable the tests read), or from --data.
The package: `probe` (what a LeNet-5's evaluations predict and which units fire), `raybench_loop` and `bare_loop` (the
two implementations, one seed each), `study` (the report from the JSONL rows), `__main__` (the command line).
"""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results"
JSONL = RESULTS / "lenet_collapse.jsonl"
REPORT = RESULTS / "lenet_collapse.md"
REPORT_NOTES = RESULTS / "lenet_collapse.notes.md"  # the hand-written explanation, appended to the report
NUM_CLASSES = 8
SAMPLE_VARIABLE = "RAYBENCH_SHARED_DATA"


def sample_folder() -> str:
    """The real images to draw the tiny tier from (RAYBENCH_SHARED_DATA), "" when it is not set."""
    return os.environ.get(SAMPLE_VARIABLE, "")
