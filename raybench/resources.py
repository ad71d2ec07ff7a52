"""What a trial asks the scheduler for: CPUs, and a fraction of a GPU sized to the model's memory need.

The GPU memory of a training step is estimated as
    weights and gradients (4 bytes each per trainable parameter, 4 per frozen one)
  + the activations autograd keeps for the backward pass, per image x batch size
  + the tier's images, kept on the GPU as uint8
  + a fixed allowance for the CUDA context, cuDNN workspaces and allocator slack.
The per-image activation figures (catalog records' `activation_mb`, fp32 at 352x352) were measured with
`benchmarks/activation_memory.py`: a forward pass on the CPU under `torch.autograd.graph.saved_tensors_hooks`
that sums the bytes of every distinct tensor saved for backward. They scale with the pixel count, and
halve under bf16 autocast. A trial then asks for the smallest fraction 1/2^k of a GPU that holds its need,
so that small models share a GPU several at a time and the largest take a whole one.

Packing pays only where the trials' kernels can run side by side: under NVIDIA MPS (raybench.mps says what was
measured without it); so without MPS every GPU trial asks for a whole GPU.
"""

from __future__ import annotations

from raybench import catalog, models
from raybench.spec import Trial, input_parts

CUDA_OVERHEAD_GB = 1.0  # context (~0.5 GB on recent drivers) + cuDNN workspace + fragmentation
SAFETY = 1.25  # the estimate leaves out allocator rounding and temporary buffers
MIN_FRACTION = 1 / 16
FORWARD_ONLY = 0.25  # share of the training activations a frozen backbone's forward pass holds at its peak


def activation_mb(model: str, *, image_size: int, precision: str) -> float:
    """MB one training image keeps for backward (measured at 352, fp32; scaled by pixels and precision)."""
    per_image = catalog.configuration(model).activation_mb
    return per_image * (image_size / 352) ** 2 * (0.5 if precision == "bf16" else 1.0)


def estimate_gpu_memory_gb(trial: Trial) -> float:
    """Estimated peak GPU memory of one training step of `trial`, in GB."""
    total, trainable = models.parameter_counts(
        trial.model, pretrained=trial.pretrained, image_size=trial.config.image_size, channels=trial.channels
    )
    frozen = trial.pretrained and trial.config.finetune == "head"
    weights = (total + (trainable if frozen else total)) * 4 / 1e9
    # a frozen backbone (pretrained, head only) keeps nothing for backward, but its forward pass still holds a
    # few layers' outputs at a time: a quarter of the training figure covers that
    activations = activation_mb(trial.model, image_size=trial.config.image_size, precision=trial.config.precision)
    activations *= trial.batch_size / 1e3 * (FORWARD_ONLY if frozen else 1.0)
    # the trial keeps its splits on the GPU as uint8 (batches.DeviceSplit): train and val, then test as well;
    # colour ones (input="colour") are three times the size, and a mask channel ("..._mask") one plane more
    images = catalog.TIERS.get(trial.tier) or catalog.PBC_IMAGES  # the large tier and custom tiers: all
    image, use_mask = input_parts(trial.config.input)
    planes = (3 if image == "colour" else 1) + (use_mask == "channel")
    splits = images * trial.config.image_size**2 * planes / 1e9
    return weights + activations + splits + CUDA_OVERHEAD_GB


def gpu_fraction(need_gb: float, gpu_memory_gb: float) -> float:
    """The smallest 1/2^k share of a GPU (at least 1/16) that holds `need_gb` with the safety margin."""
    fraction = 1.0
    while fraction / 2 >= MIN_FRACTION and need_gb * SAFETY <= gpu_memory_gb * fraction / 2:
        fraction /= 2
    return fraction


# the Tune trial of a data-parallel trial (workers > 1) only drives its Ray Train workers, which Ray Train places
# as one group: it holds a megabyte of memory and no CPU, so that it never keeps its own workers from a node
DRIVER = {"cpu": 0.0, "gpu": 0.0, "memory": float(1 << 20)}


def trial_resources(
    trial: Trial, *, gpu_memory_gb: float | None, cpus: float = 1.0, share_gpu: bool = True
) -> dict[str, float]:
    """Ray resources for one trial: no GPU when the trial runs on the CPU or no GPU is known; a whole GPU when
    GPUs are not shared (no MPS); else the share its memory needs. A data-parallel trial needs its whole group:
    `cpus` and (on GPUs) a whole GPU for each of its workers (NCCL cannot put two workers on one GPU)."""
    workers = trial.config.workers
    if gpu_memory_gb is None or trial.config.device == "cpu":
        return {"cpu": cpus * workers, "gpu": 0.0}
    if workers > 1:
        return {"cpu": cpus * workers, "gpu": float(workers)}
    if not share_gpu:
        return {"cpu": cpus, "gpu": 1.0}
    return {"cpu": cpus, "gpu": gpu_fraction(estimate_gpu_memory_gb(trial), gpu_memory_gb)}


def local_gpu_memory_gb() -> float | None:
    """Memory of this machine's first GPU, or None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 1e9
