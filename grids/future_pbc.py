"""Pretraining on the PBC data itself (§7.2), the second half of grids/future.py: run it once that grid has finished.

grids/future.py trains ResNet-18 and MobileNetV3-Small on the large tier and keeps their tested weights in
results/future/weights/; here each seed starts from the same seed's weights and trains the whole network again on the
small tiers where MobileNet breaks down, beside a from-scratch baseline of the same trials (the report's "Effects"
compares the two). Run it from the folder future.py was run from, with the same --data: tiers nest split by split,
so the large tier's training images hold these tiers' training images and none of their validation or test images.
"""

TIERS = ["n1500", "n600", "tiny"]
PRETRAINED_ON_LARGE = ["resnet_18", "mobilenet_small"]

GRID = {
    "name": "future_pbc",
    "data": None,
    "tiers": {"n1500": 1500, "n600": 600, "tiny": 400},
    "seeds": [0, 1, 2],
    "options": {"split_rule": "thesis", "dedupe": False},  # as future.py drew its tiers
    "sweeps": [
        {"models": PRETRAINED_ON_LARGE, "tiers": TIERS},
        {
            "models": PRETRAINED_ON_LARGE,
            "tiers": TIERS,
            "label": "pbc_large",
            "init_from": "results/future/weights/{model}-large-seed{seed}.npz",
        },
    ],
}
