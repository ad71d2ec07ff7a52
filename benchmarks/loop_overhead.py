"""Benchmark 1: raybench's training loop against a bare PyTorch loop on the CPU. Goal: within 3 %.

raybench: `loop.train_one_epoch` over `DeviceSplit.batches` (uint8 split, normalised per batch by
`data.to_input`). Bare: the textbook loop over the same batches already in memory as contiguous float
tensors. Same model and initial weights (reset before every epoch), same SGD, same order, side by side.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import Row, interleaved, median, ratios, seconds
from raybench import batches, catalog, loop, models
from raybench import data as pbc

CASES = (("lenet5", 352), ("resnet_18", 128))
GOAL = 1.03


def bare_epoch(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], optimizer: torch.optim.Optimizer
) -> None:
    model.train()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0, dampening=0, weight_decay=0)  # as loop.Trainer


def measure(name: str, image_size: int, *, prepared: pbc.Prepared, cache_dir: Path, reps: int, images: int) -> dict:
    """Seconds per epoch of both loops over the first `images` images of the tiny train split."""
    x, y = pbc.load_split(prepared, "tiny", "train", image_size=image_size, cache_dir=cache_dir)
    x, y = x[:images], y[:images]
    channels = catalog.configuration(name).channels
    split = batches.DeviceSplit(x, y, channels=channels, device=torch.device("cpu"))
    batch_size = catalog.batch_size(name)
    torch.manual_seed(0)
    ours = models.build_model(name, image_size=image_size)
    bare = copy.deepcopy(ours)
    initial = copy.deepcopy(ours.state_dict())
    ours_opt, bare_opt = sgd(ours), sgd(bare)
    generator = torch.Generator().manual_seed(0)
    orders: dict[int, torch.Tensor] = {}

    def order(rep: int) -> torch.Tensor:  # one shuffle per repetition, shared by both loops
        if rep not in orders:
            orders[rep] = torch.randperm(len(split), generator=generator)
        return orders[rep]

    def run_ours(rep: int) -> float:
        ours.load_state_dict(initial)
        ours_batches = split.batches(batch_size, order(rep))
        return seconds(lambda: loop.train_one_epoch(ours, ours_batches, ours_opt))

    def run_bare(rep: int) -> float:
        bare.load_state_dict(initial)
        bare_batches = [
            (batches.to_input(split.x[i], channels).contiguous(), split.y[i]) for i in order(rep).split(batch_size)
        ]
        return seconds(lambda: bare_epoch(bare, bare_batches, bare_opt))

    times = interleaved({"raybench": run_ours, "bare": run_bare}, reps=reps)
    each = ratios(times["raybench"], times["bare"])
    return {
        "model": name,
        "image_size": image_size,
        "batch_size": batch_size,
        "images": len(split),
        "reps": reps,
        "raybench_s": times["raybench"],
        "bare_s": times["bare"],
        "ratios": each,
        "ratio": median(each),
        "raybench_median_s": median(times["raybench"]),
        "bare_median_s": median(times["bare"]),
    }


def run(*, prepared: pbc.Prepared, cache_dir: Path, quick: bool) -> tuple[dict, list[Row]]:
    reps = 2 if quick else 9
    cases = []
    for name, size in CASES:
        # the tiny train split (200 images); resnet_18 on two full batches to keep the run short; quick: half a batch
        images = 32 if quick else (128 if name == "resnet_18" else 200)
        cases.append(measure(name, size, prepared=prepared, cache_dir=cache_dir, reps=reps, images=images))
        print(f"  loop {name} {size}px: raybench/bare {cases[-1]['ratio']:.3f}", flush=True)
    rows = [
        Row(
            "1 loop overhead (CPU)",
            f"{c['model']} {c['image_size']}x{c['image_size']}, {c['images']} images, batch "
            f"{c['batch_size']}: raybench / bare epoch time, median of {c['reps']}",
            c["ratio"],
            "x",
            f"<= {GOAL:.2f}",
            c["ratio"] <= GOAL,
            f"{c['raybench_median_s']:.2f}s vs {c['bare_median_s']:.2f}s",
        )
        for c in cases
    ]
    return {"cases": cases}, rows
