"""grids/future.py on a 2-core laptop in about ten minutes: each training option of the future work against the
baseline, on the embedded 400 real images.

Tiny tier (198 / 76 / 115), 64x64 inputs, batches of 16, at most 5 epochs with the early-stopping window shortened
to fit, three seeds. ResNet-18 (robust in the thesis) and MobileNetV3-Small (collapsing on its tiny tier) run the
baseline and every option as a labelled sweep; ConvMixer-256/8 runs the baseline. Not here, as they download
ImageNet weights or need the full dataset: the fine-tunes, the tiers between tiny and small, PBC pretraining.
`python -m raybench.report results/future_quick` then shows the "Effects" section.
"""

OPTIONS = {
    "momentum": {"optimizer": "momentum", "lr": 0.01},
    "adamw": {"optimizer": "adamw", "lr": 0.001},
    "lr_sqrt": {"lr_scaling": "sqrt"},  # the batch of 16 is a quarter of the thesis's 64: lr x 1/2
    "es_relative": {"es_mode": "relative", "es_min_delta": 0.01},
    "lowest_val_loss": {"tested": "lowest_val_loss"},
    "augment": {"augment": "flip+rot90+shift"},
    "grey1": {"input": "grey1"},
    "colour": {"input": "colour"},
    "measured": {"normalise": "measured"},
}
COMPARED = ["resnet_18", "mobilenet_small"]

GRID = {
    "name": "future_quick",
    "data": None,  # the embedded, stratified 400-image sample of the PBC dataset
    "seeds": [0, 1, 2],
    "options": {
        "image_size": 64,
        "batch_size": 16,
        "max_epochs": 5,
        "es_start": 1,
        "es_patience": 3,
        "es_min_delta": 0.01,
    },
    "sweeps": [
        {"models": [*COMPARED, "convmixer_256_8"], "tiers": ["tiny"]},
        *({"models": COMPARED, "tiers": ["tiny"], "label": label, "options": o} for label, o in OPTIONS.items()),
    ],
}
