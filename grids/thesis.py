"""The thesis's grid (Foix Romero 2022, chapter 5): 22 configurations on 4 tiers + 11 pretrained on tiny = 99 trials.

Every trial uses the thesis's batch size for its model, SGD at 0.1, the plateau schedule and the
early stopping of §4.4, at 352x352. Point --data at the full PBC dataset (python -m raybench.data download).
The data is the thesis's too: all 17,092 images, duplicates kept, each class of a tier split int(t/2) / int(t/5) /
int(3t/10) (large 8544 / 3415 / 5125, tiny 198 / 76 / 115: catalog.SPLIT_RULES).
"""

from raybench.catalog import MODEL_NAMES, PRETRAINABLE

GRID = {
    "name": "thesis",
    "data": None,
    "seeds": [0],
    "options": {"split_rule": "thesis", "dedupe": False},  # the defaults, stated: the thesis's splits and images
    "sweeps": [
        {"models": list(MODEL_NAMES), "tiers": ["large", "medium", "small", "tiny"]},
        {"models": list(PRETRAINABLE), "tiers": ["tiny"], "pretrained": True},
    ],
}
