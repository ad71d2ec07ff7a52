"""A two-minute taste of the thesis on a 2-core laptop: four fast models on the embedded 400 real images.

Tiny tier (200/80/120), 64x64 inputs (352 centre crop, then resized), 12 epochs with the early-stopping
window shortened to fit; everything else is the thesis's loop. Expect clearly better than chance (1/8).
"""
GRID = {
    "name": "quickstart",
    "data": None,  # the embedded, stratified 400-image sample of the PBC dataset
    "seeds": [0],
    "options": {"image_size": 64, "max_epochs": 12, "es_start": 2, "es_patience": 5, "es_min_delta": 0.01},
    "sweeps": [
        {"models": ["lenet5", "resnet_18", "mobilenet_small", "mlpmixer_s32"], "tiers": ["tiny"]},
    ],
}
