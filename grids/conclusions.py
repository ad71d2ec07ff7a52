"""The smallest grid that tests the thesis's claims 1-4 (raybench/report/conclusions.py) on the tiny and small tiers.

Five seeds of every configuration the claims compare there, at the thesis's settings; needs the full PBC dataset
(`--data`). The large-tier comparisons (claim 2, claim 3's medium and large) stay "not run". Its time on a GPU is
unmeasured. `python -m raybench.report results/conclusions` then shows "The thesis's conclusions, tested".
"""

COMPARED = [
    "resnet_18", "resnet_34", "resnet_50", "resnet_101", "resnet_152", "mobilenet_small", "mobilenet_large",
    "convnext_tiny", "vit_b_16", "mlpmixer_s32", "lenet5",
]  # fmt: skip

GRID = {
    "name": "conclusions",
    "seeds": [0, 1, 2, 3, 4],
    "sweeps": [{"models": COMPARED, "tiers": ["tiny", "small"]}],
}
