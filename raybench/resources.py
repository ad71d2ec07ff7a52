"""What a trial asks the scheduler for: CPUs, and a fraction of a GPU sized to the model's memory need.

The GPU memory of a training step is estimated as
    weights and gradients (4 bytes each per trainable parameter, 4 per frozen one)
  + the activations autograd keeps for the backward pass, per image x batch size
  + the tier's images, kept on the GPU as uint8
  + a fixed allowance for the CUDA context, cuDNN workspaces and allocator slack.
The per-image activation figures (ACTIVATION_MB, fp32 at 352x352) were measured with
`benchmarks/activation_memory.py`: a forward pass on the CPU under `torch.autograd.graph.saved_tensors_hooks`
that sums the bytes of every distinct tensor saved for backward. They scale with the pixel count, and
halve under bf16 autocast. A trial then asks for the smallest fraction 1/2^k of a GPU that holds its need,
so that small models share a GPU several at a time and the largest take a whole one.
"""
from __future__ import annotations

from raybench import data as pbc
from raybench import models

CUDA_OVERHEAD_GB = 1.0  # context (~0.5 GB on recent drivers) + cuDNN workspace + fragmentation
SAFETY = 1.25  # the estimate leaves out allocator rounding and temporary buffers
MIN_FRACTION = 1 / 16
FORWARD_ONLY = 0.25  # share of the training activations a frozen backbone's forward pass holds at its peak
FULL_DATASET_IMAGES = 17_092  # the PBC dataset: the size assumed for the large tier and custom tiers

# MB of activations saved for backward per training image, fp32, 352x352 (benchmarks/activation_memory.py,
# measured on the CPU, torch 2.14.1). Checked against the thesis's RTX 3080 (10 GB): wherever it went below
# its usual batch of 64 for memory, the estimate at twice its batch size exceeds 10 GB (convnext_base: 8 x
# 573 MB fits, 16 would not), except vit_b_32 and vit_l_32, whose batch of 4 memory does not explain.
ACTIVATION_MB: dict[str, float] = {
    "lenet5": 13.6, "resnet_18": 54.8, "resnet_34": 79.6, "resnet_50": 212.3,
    "resnet_101": 313.7, "resnet_152": 438.7, "mobilenet_small": 39.9, "mobilenet_large": 108.9,
    "convnext_tiny": 269.5, "convnext_small": 430.2, "convnext_base": 572.9, "convnext_large": 858.4,
    "vit_b_16": 290.9, "vit_b_32": 74.3, "vit_l_16": 769.2, "vit_l_32": 194.6,
    "mlpmixer_s32": 27.5, "mlpmixer_s16": 105.6, "mlpmixer_b32": 59.9, "mlpmixer_b16": 235.0,
    "mlpmixer_l32": 156.7, "mlpmixer_l16": 622.2,
}


def activation_mb(model: str, *, image_size: int, precision: str) -> float:
    per_image = ACTIVATION_MB[model]
    return per_image * (image_size / 352) ** 2 * (0.5 if precision == "bf16" else 1.0)


def estimate_gpu_memory_gb(trial) -> float:
    """Estimated peak GPU memory of one training step of `trial` (a train.Trial), in GB."""
    total, trainable = models.parameter_counts(trial.model, pretrained=trial.pretrained, image_size=trial.config.image_size)
    weights = (total + trainable) * 4 / 1e9
    # a frozen backbone (pretrained) keeps nothing for backward, but its forward pass still holds a few layers'
    # outputs at a time: a quarter of the training figure covers that
    activations = activation_mb(trial.model, image_size=trial.config.image_size, precision=trial.config.precision)
    activations *= trial.batch_size / 1e3 * (FORWARD_ONLY if trial.pretrained else 1.0)
    # the trial keeps its splits on the GPU as uint8 (train.DeviceSplit): train and val, then test as well
    images = pbc.THESIS_TIERS.get(trial.tier) or FULL_DATASET_IMAGES
    splits = images * trial.config.image_size ** 2 / 1e9
    return weights + activations + splits + CUDA_OVERHEAD_GB


def gpu_fraction(need_gb: float, gpu_memory_gb: float) -> float:
    """The smallest 1/2^k share of a GPU (at least 1/16) that holds `need_gb` with the safety margin."""
    fraction = 1.0
    while fraction / 2 >= MIN_FRACTION and need_gb * SAFETY <= gpu_memory_gb * fraction / 2:
        fraction /= 2
    return fraction


def trial_resources(trial, *, gpu_memory_gb: float | None, cpus: float = 1.0) -> dict[str, float]:
    """Ray resources for one trial: no GPU when the trial runs on the CPU or no GPU is known."""
    if gpu_memory_gb is None or trial.config.device == "cpu":
        return {"cpu": cpus, "gpu": 0.0}
    return {"cpu": cpus, "gpu": gpu_fraction(estimate_gpu_memory_gb(trial), gpu_memory_gb)}


def local_gpu_memory_gb() -> float | None:
    """Memory of this machine's first GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 1e9
