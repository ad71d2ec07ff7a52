"""The small tier of the shared 4,199-image sample (../shared/data/pbc_sample), sized for a 2-core CPU, for
`../shared/tools/check_results.py` (benchmarks/results/small_check.md): LeNet-5 (two seeds) and ResNet-18 (one) at
32x32, at most 14 epochs, early stopping from the second epoch with a patience of 3 and the plateau patience
shortened to 1, so that both the stopping rule and the learning-rate schedule have something to re-derive.
"""

GRID = {
    "name": "small_check",
    "data": None,  # given on the command line: --data ../shared/data/pbc_sample
    "seeds": [0],
    "options": {
        "image_size": 32,
        "batch_size": 32,
        "max_epochs": 14,
        "es_start": 1,
        "es_patience": 3,
        "plateau_patience": 1,
    },
    "sweeps": [
        {"models": ["lenet5"], "tiers": ["small"], "seeds": [0, 1]},
        {"models": ["resnet_18"], "tiers": ["small"]},
    ],
}
