"""grids/conclusions.py sized for a 2-core CPU: claim 3's tiny-tier comparisons (ResNet-18 and -34 against -152)
and claim 2b (MobileNetV3 predicts one class on tiny), which with them also test claims 6 and 6b (the most
frequent confusion; platelets in the trials that break down).

The embedded 400 real images (the tiny tier, 198 / 76 / 115), 64x64 inputs, batches of 16, at most 5 epochs with
the early-stopping window shortened to fit, five seeds (25 trials).
"""

GRID = {
    "name": "conclusions_quick",
    "data": None,
    "seeds": [0, 1, 2, 3, 4],
    "options": {
        "image_size": 64,
        "batch_size": 16,
        "max_epochs": 5,
        "es_start": 1,
        "es_patience": 3,
        "es_min_delta": 0.01,
    },
    "sweeps": [
        {"models": ["resnet_18", "resnet_34", "resnet_152"], "tiers": ["tiny"]},
        {"models": ["mobilenet_small", "mobilenet_large"], "tiers": ["tiny"]},
    ],
}
