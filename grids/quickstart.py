"""A two-minute taste of the thesis on a 2-core laptop: four fast models on the embedded 400 real images.

Tiny tier (198/76/115), 64x64 inputs (352 centre crop, then resized), batches of 16, at most 20 epochs
with the early-stopping window shortened to fit; everything else is the thesis's loop. Expect ResNet-18
and LeNet-5 well above chance (1/8), and MobileNetV3 near it, as in the thesis's tiny tier (table 5.7).
"""

GRID = {
    "name": "quickstart",
    "data": None,  # the embedded, stratified 400-image sample of the PBC dataset
    "seeds": [0],
    "options": {
        "image_size": 64,
        "batch_size": 16,
        "max_epochs": 20,
        "es_start": 2,
        "es_patience": 8,
        "es_min_delta": 0.01,
    },
    "sweeps": [
        {"models": ["lenet5", "resnet_18", "mobilenet_small", "mlpmixer_s32"], "tiers": ["tiny"]},
    ],
}
