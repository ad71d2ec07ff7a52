"""§7.2's larger batches across GPUs: "if the implementation could be altered to use some kind of distributed
training and evaluation across multiple GPUs, then it would be possible to explore larger batch sizes".

The global batch at the thesis's 64 (one process), and at 2x, 4x and 8x it as data-parallel trials of 2, 4 and 8
workers (`workers`: one GPU each, each worker training the thesis's 64 images of every global batch, BatchNorm over
the global batch), each with the thesis's learning rate and with it scaled linearly (`lr_scaling`: lr x k, Goyal
et al. 2017) or by sqrt(k). ResNet-18 (robust in the thesis) and MobileNetV3-Large (its most accurate on the large
tier), on the large, small and tiny tiers, three seeds: 180 trials. The 8-worker trials need 8 GPUs (on one node or
across nodes: Ray Train places the group); a cluster that cannot hold them is refused at once: leave them out there
with `--only '^(?!.*batch512)'`. `--dry-run` prints the plan and its projected time (it takes the workers to scale
perfectly). It has not run on GPUs yet (no GPU was lent): its data-parallel path is tested on the CPU (gloo).
"""

COMPARED = ["resnet_18", "mobilenet_large"]  # both at the thesis's batch of 64
SCALINGS = {"": "none", "_linear": "linear", "_sqrt": "sqrt"}

GRID = {
    "name": "future_batches",
    "data": None,  # point --data at the full PBC dataset (python -m raybench.data download DEST)
    "tiers": {"large": None, "small": 4200, "tiny": 400},
    "seeds": [0, 1, 2],
    "sweeps": [
        {"models": COMPARED, "tiers": ["large", "small", "tiny"]},
        *(
            {
                "models": COMPARED,
                "tiers": ["large", "small", "tiny"],
                "label": f"batch{64 * k}{suffix}",
                "options": {"workers": k, "batch_size": 64 * k, "lr_scaling": scaling},
            }
            for k in (2, 4, 8)
            for suffix, scaling in SCALINGS.items()
        ),
    ],
}
