"""Benchmark 2: one epoch's data cost with the decode-once cache against decoding the JPEGs every epoch.

Decode-once (raybench): `data.load_split` from a warm cache + `DeviceSplit` + `to_input` per batch, in images/s;
in steady state (every epoch after a trial's first) only the per-batch indexing and `to_input` remain.
Every epoch (the thesis's notebooks): torchvision `ImageFolder` + Grayscale(3), CenterCrop(352), ToTensor,
Normalize + `DataLoader(shuffle=True)`, with 0 and with 2 worker processes.
Goal: feeding costs under 2 % of a lenet5 epoch (352x352, batch 64) on the CPU, measured in the same run.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torchvision import transforms

from benchmarks.common import Row, interleaved, median, ratios, seconds
from raybench import batches, catalog, loop, models
from raybench import data as pbc

GOAL = 0.02
BATCH = 64  # the thesis's batch size for lenet5 and resnet_18


def thesis_loader(prepared: pbc.Prepared, images: list[str], *, workers: int) -> torch.utils.data.DataLoader:
    """The tiny train split read the way the thesis's notebooks read every epoch."""
    transform = transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=3),
            transforms.CenterCrop(catalog.CROP),
            transforms.ToTensor(),
            transforms.Normalize([catalog.MEAN] * 3, [catalog.STD] * 3),
        ]
    )
    folder = torchvision.datasets.ImageFolder(str(prepared.root), transform=transform)
    index = {Path(path).relative_to(prepared.root).as_posix(): i for i, (path, _) in enumerate(folder.samples)}
    subset = torch.utils.data.Subset(folder, [index[image] for image in images])
    return torch.utils.data.DataLoader(subset, batch_size=BATCH, shuffle=True, num_workers=workers)


def run(*, prepared: pbc.Prepared, cache_dir: Path, quick: bool) -> tuple[dict, list[Row]]:
    reps = 2 if quick else 5
    cpu = torch.device("cpu")
    pbc.load_split(prepared, "tiny", "train", cache_dir=cache_dir)  # warm the cache: decoding once is not timed here
    n = BATCH // 2 if quick else None  # quick: half a batch; else the whole split (200 images)
    x, y = pbc.load_split(prepared, "tiny", "train", cache_dir=cache_dir)
    x, y = x[:n], y[:n]
    n = len(y)
    rows = prepared.manifest[(prepared.manifest.tier == "tiny") & (prepared.manifest.split == "train")]
    loaders = {workers: thesis_loader(prepared, list(rows.image[:n]), workers=workers) for workers in (0, 2)}
    generator = torch.Generator().manual_seed(0)
    split = batches.DeviceSplit(x, y, channels=3, device=cpu)
    lenet_split = batches.DeviceSplit(x, y, channels=catalog.configuration("lenet5").channels, device=cpu)
    torch.manual_seed(0)
    lenet = models.build_model("lenet5", image_size=catalog.CROP)
    optimizer = torch.optim.SGD(lenet.parameters(), lr=0.1)
    initial = {k: v.clone() for k, v in lenet.state_dict().items()}

    def drain(batches) -> None:
        for _ in batches:
            pass

    def first_epoch(rep: int) -> float:  # a trial's first epoch: open the cache, copy the split, feed every batch
        def feed() -> None:
            xs, ys = pbc.load_split(prepared, "tiny", "train", cache_dir=cache_dir)
            drain(
                batches.DeviceSplit(xs[:n], ys[:n], channels=3, device=cpu).batches(
                    BATCH, torch.randperm(n, generator=generator)
                )
            )

        return seconds(feed)

    def steady_epoch(rep: int) -> float:  # every later epoch: index and normalise each batch
        order = torch.randperm(n, generator=generator)
        return seconds(lambda: drain(split.batches(BATCH, order)))

    def thesis_epoch(workers: int):
        return lambda rep: seconds(lambda: drain(loaders[workers]))

    def lenet_epoch(rep: int) -> float:
        lenet.load_state_dict(initial)
        order = torch.randperm(n, generator=generator)
        return seconds(lambda: loop.train_one_epoch(lenet, lenet_split.batches(BATCH, order), optimizer))

    times = interleaved(
        {
            "cache_first": first_epoch,
            "cache_steady": steady_epoch,
            "thesis_0": thesis_epoch(0),
            "thesis_2": thesis_epoch(2),
            "lenet5_epoch": lenet_epoch,
        },
        reps=reps,
    )
    med = {name: median(values) for name, values in times.items()}
    result = {
        "images": n,
        "batch_size": BATCH,
        "reps": reps,
        "seconds": times,
        "median_s": med,
        "images_per_s": {name: n / s for name, s in med.items() if name != "lenet5_epoch"},
        "speedup_first_vs_thesis_0": median(ratios(times["thesis_0"], times["cache_first"])),
        "speedup_first_vs_thesis_2": median(ratios(times["thesis_2"], times["cache_first"])),
        "speedup_steady_vs_thesis_2": median(ratios(times["thesis_2"], times["cache_steady"])),
        "fraction_steady": median(ratios(times["cache_steady"], times["lenet5_epoch"])),
        "fraction_first": median(ratios(times["cache_first"], times["lenet5_epoch"])),
        "fraction_thesis_0": median(ratios(times["thesis_0"], times["lenet5_epoch"])),
        "fraction_thesis_2": median(ratios(times["thesis_2"], times["lenet5_epoch"])),
    }
    ips = result["images_per_s"]
    print(
        f"  feeding: cache {ips['cache_first']:.0f} img/s (first epoch), {ips['cache_steady']:.0f} img/s (steady); "
        f"JPEG decode {ips['thesis_0']:.0f} (0 workers) / {ips['thesis_2']:.0f} (2 workers) img/s; "
        f"steady feeding {result['fraction_steady']:.2%} of a lenet5 epoch",
        flush=True,
    )
    bench = "2 data feeding (CPU)"
    rows = [
        Row(
            bench,
            f"decode-once cache, a trial's first epoch (load_split from warm cache + to_input), {n} images 352x352",
            ips["cache_first"],
            "img/s",
            note=f"{result['speedup_first_vs_thesis_2']:.0f}x the JPEG path with 2 workers",
        ),
        Row(bench, "decode-once cache, later epochs (index + to_input per batch)", ips["cache_steady"], "img/s"),
        Row(
            bench,
            "JPEG decode every epoch (ImageFolder + transforms + DataLoader), 0 / 2 workers",
            ips["thesis_0"],
            "img/s",
            note=f"{ips['thesis_2']:.0f} img/s with 2 workers",
        ),
        Row(
            bench,
            "feeding / lenet5 epoch, decode-once cache, later epochs",
            100 * result["fraction_steady"],
            "%",
            f"< {GOAL:.0%}",
            result["fraction_steady"] < GOAL,
            f"lenet5 epoch {med['lenet5_epoch']:.2f}s",
        ),
        Row(
            bench,
            "feeding / lenet5 epoch, decode-once cache, a trial's first epoch",
            100 * result["fraction_first"],
            "%",
            f"< {GOAL:.0%}",
            result["fraction_first"] < GOAL,
        ),
        Row(
            bench,
            "feeding / lenet5 epoch, JPEG decode every epoch (2 workers)",
            100 * result["fraction_thesis_2"],
            "%",
            note="the thesis's way, for comparison",
        ),
    ]
    return result, rows
