"""The smallest grid that tests the thesis's claims 1-6 (raybench/report/conclusions.py) on the tiny and small tiers.

Five seeds of every configuration the claims compare there, at the thesis's settings; needs the full PBC dataset
(`--data`) and, for claim 5, the ImageNet weights of the thesis's 11 fine-tunes (downloaded once by torchvision).
Claims 1, 2b, 3 (tiny, small), 4, 4b, 5, 5b, 5c, 6 and 6b are tested; the large-tier ones (claim 2, claim 3's
medium and large, claim 7) stay "not run". 205 trials; its time on a GPU is unmeasured.
`raybench report results/conclusions` then shows "The thesis's conclusions, tested".
"""

COMPARED = [
    "resnet_18", "resnet_34", "resnet_50", "resnet_101", "resnet_152", "mobilenet_small", "mobilenet_large",
    "convnext_tiny", "vit_b_16", "mlpmixer_s32", "lenet5",
    "vit_l_16", "mlpmixer_s16", "mlpmixer_l16", "convnext_large",  # claim 4b: larger against smaller
]  # fmt: skip
FINE_TUNED = [
    "convnext_tiny", "convnext_small", "convnext_base", "convnext_large", "resnet_18", "resnet_34", "resnet_50",
    "resnet_101", "resnet_152", "mobilenet_small", "mobilenet_large",
]  # fmt: skip

GRID = {
    "name": "conclusions",
    "seeds": [0, 1, 2, 3, 4],
    "sweeps": [
        {"models": COMPARED, "tiers": ["tiny", "small"]},
        {"models": FINE_TUNED, "tiers": ["tiny"], "pretrained": True},  # claims 5, 5b, 5c
    ],
}
