"""The thesis's grid (Foix Romero 2022, chapter 5): 22 configurations on 4 tiers + 11 pretrained on tiny = 99 trials.

Every trial uses the thesis's batch size for its model, SGD at 0.1, the plateau schedule and the
early stopping of §4.4, at 352x352. Point --data at the full PBC dataset (python -m raybench.data download).
"""
from raybench.catalog import MODEL_NAMES, PRETRAINABLE

GRID = {
    "name": "thesis",
    "data": None,
    "seeds": [0],
    "sweeps": [
        {"models": list(MODEL_NAMES), "tiers": ["large", "medium", "small", "tiny"]},
        {"models": list(PRETRAINABLE), "tiers": ["tiny"], "pretrained": True},
    ],
}
