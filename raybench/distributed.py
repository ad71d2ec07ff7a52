"""Data-parallel training (option `workers`, §7.2's "distributed training ... across multiple GPUs"): the pieces
the shared loop needs to train one trial in several processes as one process would.

Every worker holds the whole split and draws the same data order; each takes its contiguous part of every global
batch (`Group.part`), so the global batch is the trial's `batch_size`. Gradients are averaged by
DistributedDataParallel over a loss weighted so that the average is the global batch's mean gradient, whatever
the parts' sizes (loop.train_one_epoch_parted); BatchNorm uses the global batch's statistics (`GlobalBatchNorm`,
on the CPU too, where PyTorch's SyncBatchNorm has no kernels); validation and test split the images between the
workers and gather every image's loss and output, so the metrics, the plateau schedule and the early stopping
see exactly what one process sees. Torch only: the processes and their process group come from Ray Train
(service.data_parallel).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place among the trial's workers (torch.distributed is initialised: Ray Train does it)."""

    rank: int
    world: int

    @classmethod
    def current(cls) -> Group:
        return cls(dist.get_rank(), dist.get_world_size())

    def part(self, n: int) -> slice:
        """This worker's contiguous part of n items (the parts' sizes differ by at most one; some may be empty)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every worker's `tensor` (parts along dim 0, any lengths), concatenated in rank order, on every worker."""
        length = torch.tensor([len(tensor)], device=tensor.device)
        lengths = [torch.zeros_like(length) for _ in range(self.world)]
        dist.all_gather(lengths, length)
        longest = int(max(lengths))
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(n)] for p, n in zip(parts, lengths, strict=True)])

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        total = value.clone()
        dist.all_reduce(total)
        return total


class _Summed(torch.autograd.Function):
    """The sum of a tensor over the workers, whose gradient is the sum of the workers' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _Summed.apply(grad)


def summed(tensor: torch.Tensor) -> torch.Tensor:
    return _Summed.apply(tensor)


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's, over every worker's part of it.

    The same parameters and buffers as BatchNorm2d (a checkpoint loads into either); the mean and the biased
    variance are summed across workers in two passes (the variance about the global mean), through collectives that
    carry gradients back, so the backward pass is that of one BatchNorm over the global batch. The running
    statistics are updated as BatchNorm2d updates them (the unbiased variance). Evaluation uses the running
    statistics, with no communication.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        local = torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])])
        total = summed(local)
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(1, -1, 1, 1)
        var = summed(centred.square().sum(dims)) / n
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        return out


def global_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm2d replaced by a GlobalBatchNorm holding the same parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(device=child.weight.device if child.affine else None)
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            if child.affine:
                replacement.weight.requires_grad_(child.weight.requires_grad)
                replacement.bias.requires_grad_(child.bias.requires_grad)
            setattr(module, name, replacement)
        else:
            global_batchnorm(child)
    return module


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model under DistributedDataParallel (gradients averaged across workers; every worker keeps the same
    weights, so buffers need no broadcast: GlobalBatchNorm keeps them equal)."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)
