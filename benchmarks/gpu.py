"""Benchmark 4 (GPU): seconds per epoch of every thesis configuration, GPU sharing, peak memory, and a projection
of grids/thesis.py's wall time from the thesis's epoch counts.

Every configuration (22 from scratch + 11 pretrained heads, the thesis's batch sizes, 352x352) trains a few steps
in fp32 and in bf16 (autocast; channels_last for the convolutional nets) through raybench's own path:
`loop.Trainer` for the optimiser, `batches.DeviceSplit` holding synthetic uint8 images generated on the device
(no dataset needed), `loop.train_one_epoch` and `loop.evaluate`, cuDNN in benchmark mode. The steps' times give
each tier's epoch time (train split + validation split), and with the thesis's epoch counts (results.csv) the
wall time of the 99 trials one after another, against the thesis's 103.7 h and the 0.7 h compute floor.
Peak memory (`torch.cuda.max_memory_allocated`) gives MB of activations per image in the format of
`the catalog records' activation_mb`. Sharing: several small-model trials as separate processes on the one GPU
(what Ray's fractional GPUs do) against the same trials one at a time.

`--gpu-dry-run` runs the same code on the CPU at a tiny size (a few models, 32x32, one step) so that it is
exercised where there is no GPU; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import Row, seconds
from raybench import batches, catalog, loop, models, resources, spec
from raybench import grid as grids

ROOT = Path(__file__).resolve().parents[1]
CONV_NETS = (
    "lenet5",
    "resnet_18",
    "resnet_34",
    "resnet_50",
    "resnet_101",
    "resnet_152",
    "mobilenet_small",
    "mobilenet_large",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_large",
)
THESIS_HOURS = 103.7  # 99 trainings on one RTX 3080, fp32
GRID_PFLOP = 2525  # forward FLOPs at 352x352 (torch.utils.flop_counter) x 3 for training, over the thesis's epochs
PEAK_BF16_TFLOPS = 990  # H100 SXM, dense bf16
FLOOR_HOURS = GRID_PFLOP * 1e15 / (PEAK_BF16_TFLOPS * 1e12) / 3600
SHARED = ("lenet5", "lenet5", "resnet_18", "resnet_18")  # small trials that Ray packs several to a GPU
DRY_MODELS = ("lenet5", "resnet_18", "mobilenet_small", "mlpmixer_s32")  # conv, pretrained heads, and not conv


@dataclasses.dataclass(frozen=True)
class Setting:
    device: torch.device
    image_size: int = 352
    warmup: int = 3  # steps before timing: cuDNN's benchmark mode tries its kernels, the allocator grows
    steps: int = 10  # timed training steps
    eval_steps: int = 5  # timed evaluation steps
    budget_s: float = math.inf  # configurations left when this is spent are skipped (default: none; all 33 x 3)
    step: str = "eager"  # raybench's step: "eager" or "compiled" (torch.compile, CUDA graphs)
    share_steps: int = 100  # training steps of each sharing worker
    dry_run: bool = False


def synthetic_split(
    n: int, *, image_size: int, channels: int, device: torch.device, channels_last: bool
) -> batches.DeviceSplit:
    """A DeviceSplit of `n` random uint8 images made on the device itself (no host copy, no dataset)."""
    empty = np.zeros((0, image_size, image_size), np.uint8)
    split = batches.DeviceSplit(
        empty, np.zeros(0, np.int64), channels=channels, device=device, channels_last=channels_last
    )
    split.x = torch.randint(0, 256, (n, image_size, image_size), dtype=torch.uint8, device=device)
    split.y = torch.randint(0, len(catalog.CLASSES), (n,), device=device)
    return split


def build(name: str, *, pretrained: bool, image_size: int, device: torch.device) -> torch.nn.Module:
    """The configuration, initialised on the device; a pretrained one gets random weights in place of ImageNet's
    (the same shapes and the same frozen backbone: the time is the same, and no download is needed)."""
    with torch.device(device):
        if pretrained:
            return models.freeze_backbone(
                models.build_model(name, num_classes=1000, image_size=image_size), num_classes=len(catalog.CLASSES)
            )
        return models.build_model(name, image_size=image_size)


def measure(name: str, *, pretrained: bool, precision: str, setting: Setting) -> dict:
    """Seconds per training and per evaluation step, and peak memory, of one configuration."""
    device, size = setting.device, setting.image_size
    channels_last = precision == "bf16" and name in CONV_NETS
    batch = catalog.batch_size(name, pretrained=pretrained)
    channels = catalog.configuration(name).channels
    torch.manual_seed(0)
    model = build(name, pretrained=pretrained, image_size=size, device=device)
    model = model.to(memory_format=torch.channels_last if channels_last else torch.preserve_format)
    config = spec.make_config(
        {
            "image_size": size,
            "precision": precision,
            "channels_last": channels_last,
            "device": str(device),
            "step": setting.step,
        }
    )
    loop.set_precision(precision, device)
    split = dict(image_size=size, channels=channels, device=device, channels_last=channels_last)
    warm = synthetic_split(batch * setting.warmup, **split)
    timed = synthetic_split(batch * setting.steps, **split)
    val = synthetic_split(batch * setting.eval_steps, **split)
    trainer = loop.Trainer(model, timed, val, config, seed=0, batch_size=batch)
    train_step, eval_step = trainer.train_step, trainer.eval_step
    loop.train_one_epoch(model, warm.batches(batch), trainer.optimizer, precision=precision, step=train_step)
    loop.evaluate(model, val.batches(batch), precision=precision, step=eval_step)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)  # weights, last step's gradients, the synthetic images
    order = torch.randperm(len(timed), device=device)
    train_s = seconds(
        lambda: loop.train_one_epoch(
            model, timed.batches(batch, order), trainer.optimizer, precision=precision, step=train_step
        ),
        device=device,
    )
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    eval_s = seconds(
        lambda: loop.evaluate(model, val.batches(batch), precision=precision, step=eval_step), device=device
    )
    # the bare loop's own optimiser, with a float rate as a tutorial's: the trainer's may hold a device tensor
    bare_optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    bare_s = seconds(lambda: bare_epoch(model, bare_optimizer, timed, batch, precision=precision), device=device)
    out = {
        "model": name,
        "pretrained": pretrained,
        "precision": precision,
        "channels_last": channels_last,
        "batch_size": batch,
        "image_size": size,
        "step": setting.step,
        "train_step_s": train_s / setting.steps,
        "bare_step_s": bare_s / setting.steps,
        "eval_step_s": eval_s / setting.eval_steps,
        "images_per_s": batch * setting.steps / train_s,
        "peak_gb": None if peak is None else peak / 1e9,
        "activation_mb_per_image": None if peak is None else (peak - base) / batch / 1e6,
        # the service's estimate for the tiny tier (its 400 images are ~0.05 GB on the device, as the synthetic ones)
        "estimated_gb": resources.estimate_gpu_memory_gb(
            spec.Trial(name, "tiny", pretrained=pretrained, config=config)
        ),
    }
    model = trainer = warm = timed = val = bare_optimizer = None  # free the GPU memory before the next configuration
    return out


def bare_epoch(model, optimizer, split: batches.DeviceSplit, batch: int, *, precision: str) -> None:
    """A bare PyTorch loop over the same images, as a tutorial writes it: the yardstick of raybench's own step."""
    model.train()
    x_all = batches.to_input(split.x, split.channels)
    autocast = torch.autocast(x_all.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    for start in range(0, len(split), batch):
        x, y = x_all[start : start + batch], split.y[start : start + batch]
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def configurations(setting: Setting) -> list[tuple[str, bool, str]]:
    """(model, pretrained, precision): all from-scratch ones first, so a spent budget skips pretrained heads."""
    names = DRY_MODELS if setting.dry_run else catalog.MODEL_NAMES
    pretrainable = [n for n in names if n in catalog.PRETRAINABLE]
    scratch = [(n, False, p) for n in names for p in spec.PRECISIONS]
    return scratch + [(n, True, p) for n in pretrainable for p in spec.PRECISIONS]


def split_sizes() -> dict[str, tuple[int, int, int]]:
    """(train, val, test) images of each thesis tier of the full PBC dataset, as the thesis split them."""
    return catalog.TIER_SPLITS


def packed_hours(per_trial: dict, *, measured: dict, sharing_speedup: float | None) -> float | None:
    """Hours of the same trials as the scheduler would pack them on one GPU: each trial holds its memory share
    (resources.gpu_fraction of its measured peak on this GPU) for its time; packed trials run together at the
    measured sharing speedup. A lower bound, as no packing ends before its longest trial."""
    if not per_trial or not sharing_speedup or not torch.cuda.is_available():
        return None
    gpu_gb = resources.local_gpu_memory_gb()
    busy, longest = 0.0, 0.0
    for trial_id, t in per_trial.items():
        model, pretrained = trial_id.split("-")[0], "-pretrained-" in trial_id
        peak = measured[(model, pretrained)].get("peak_gb") or gpu_gb
        fraction = resources.gpu_fraction(peak, gpu_gb)
        busy += t["trial_s"] * (fraction if fraction < 1 else 1) / (sharing_speedup if fraction < 1 else 1)
        longest = max(longest, t["trial_s"])
    return max(busy, longest) / 3600


def project(measured: list[dict], *, precision: str, sharing_speedup: float | None = None) -> dict:
    """Hours of grids/thesis.py run one trial after another at the thesis's epoch counts, from the measured steps."""
    steps = {
        (m["model"], m["pretrained"]): m for m in measured if m.get("precision") == precision and "train_step_s" in m
    }
    thesis = pd.read_csv(Path(catalog.__file__).parent / "thesis" / "results.csv")
    epochs = {(r.model, r.dataset, bool(r.pretrained)): int(r.epochs) for r in thesis.itertuples()}
    sizes = split_sizes()
    total, missing, per_model = 0.0, [], {}
    for trial in grids.load_grid(ROOT / "grids" / "thesis.py").trials:
        m = steps.get((trial.model, trial.pretrained))
        if m is None:
            missing.append(trial.trial_id)
            continue
        n_train, n_val, n_test = sizes[trial.tier]
        batch = m["batch_size"]
        epoch = math.ceil(n_train / batch) * m["train_step_s"] + math.ceil(n_val / batch) * m["eval_step_s"]
        trial_s = (
            epochs[(trial.model, trial.tier, trial.pretrained)] * epoch + math.ceil(n_test / batch) * m["eval_step_s"]
        )
        total += trial_s
        per_model[trial.trial_id] = {"epoch_s": epoch, "trial_s": trial_s}
    hours = total / 3600
    return {
        "precision": precision,
        "hours": hours,
        "packed_hours": packed_hours(per_model, measured=steps, sharing_speedup=sharing_speedup),
        "trials": len(per_model),
        "missing": missing,
        "speedup_vs_thesis": THESIS_HOURS / hours if hours else None,
        "floor_hours": FLOOR_HOURS,
        "x_floor": hours / FLOOR_HOURS,
        "trials_detail": per_model,
    }


def activation_table(measured: list[dict], *, image_size: int, precision: str = "fp32") -> dict[str, float]:
    """MB per 352x352 training image, as the catalog records' activation_mb (fp32; scaled by pixels if smaller):
    the peak of a training epoch minus what was allocated before it (weights, gradients, images), per image."""
    scale = (352 / image_size) ** 2
    return {
        m["model"]: round(m["activation_mb_per_image"] * scale, 1)
        for m in measured
        if not m["pretrained"] and m.get("precision") == precision and m.get("activation_mb_per_image") is not None
    }


def forward_only_share(measured: list[dict]) -> dict[str, float]:
    """Per pretrained model (fp32): its frozen backbone's peak memory beyond the weights, per image, as a share of
    the same model's when trained from scratch (raybench.resources.FORWARD_ONLY assumes 0.25)."""
    scratch = {
        m["model"]: m["activation_mb_per_image"]
        for m in measured
        if not m["pretrained"] and m.get("precision") == "fp32" and m.get("activation_mb_per_image")
    }
    return {
        m["model"]: round(m["activation_mb_per_image"] / scratch[m["model"]], 3)
        for m in measured
        if m["pretrained"]
        and m.get("precision") == "fp32"
        and m.get("activation_mb_per_image") is not None
        and m["model"] in scratch
    }


def epoch_table(measured: list[dict], *, dry_run: bool) -> str:
    """Markdown: seconds per epoch of every configuration and tier, fp32 and bf16, and peak memory."""
    sizes = split_sizes()
    lines = [
        "| configuration | batch | precision | ms/step | "
        + " | ".join(f"s/epoch {t}" for t in sizes)
        + " | peak GB | estimated GB |",
        "|" + " --- |" * (6 + len(sizes)),
    ]
    for m in measured:
        label = m["model"] + (" pretrained" if m["pretrained"] else "")
        if "train_step_s" not in m:
            lines.append(
                f"| {label} | | {m['precision']} | {m.get('skipped') or m.get('error')} |" + " |" * (len(sizes) + 2)
            )
            continue
        epochs = [
            math.ceil(n_train / m["batch_size"]) * m["train_step_s"]
            + math.ceil(n_val / m["batch_size"]) * m["eval_step_s"]
            for n_train, n_val, _ in sizes.values()
        ]
        peak = "" if m["peak_gb"] is None else f"{m['peak_gb']:.2f}"
        lines.append(
            f"| {label} | {m['batch_size']} | {m['precision']}{' channels_last' if m['channels_last'] else ''} | "
            f"{m['train_step_s'] * 1e3:.1f} | "
            + " | ".join(f"{e:.1f}" for e in epochs)
            + f" | {peak} | {m['estimated_gb']:.2f} |"
        )
    title = "Seconds per epoch (train split + validation split) on the full PBC dataset's tiers"
    return f"{title}{' (DRY RUN on the CPU at 32x32: not a measurement)' if dry_run else ''}:\n\n" + "\n".join(lines)


# -------------------------------------------------------------------------------------------------- sharing


def worker(name: str, *, image_size: int, steps: int, device: str, barrier: Path | None, parties: int) -> dict:
    """One trial-like process: warm up, wait for the others, train `steps` steps; its images and its timed span."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    batch = catalog.batch_size(name)
    torch.manual_seed(0)
    model = build(name, pretrained=False, image_size=image_size, device=dev)
    split = synthetic_split(
        batch * min(steps, 8),
        image_size=image_size,
        channels=catalog.configuration(name).channels,
        device=dev,
        channels_last=False,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loop.train_one_epoch(model, split.batches(batch), optimizer)  # warm-up
    if barrier is not None:  # start together, so that the timed spans overlap
        (barrier / f"ready-{os.getpid()}").touch()
        deadline = time.time() + 300
        while len(list(barrier.glob("ready-*"))) < parties and time.time() < deadline:
            time.sleep(0.01)
    done = 0
    start = time.time()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    while done < steps:
        loop.train_one_epoch(model, split.batches(batch), optimizer)  # one host sync per epoch, as in raybench
        done += math.ceil(len(split) / batch)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return {"model": name, "images": done * batch, "start": start, "end": time.time()}


def spawn(names: tuple[str, ...], setting: Setting, *, barrier: Path) -> list[dict]:
    """Run one worker process per name at once; their results."""
    barrier.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if setting.device.type == "cpu":
        env["OMP_NUM_THREADS"] = "1"  # dry run: do not oversubscribe the CPU
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.gpu",
                "--worker",
                name,
                "--image-size",
                str(setting.image_size),
                "--steps",
                str(setting.share_steps),
                "--device",
                str(setting.device),
                "--barrier",
                str(barrier),
                "--parties",
                str(len(names)),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    out = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"sharing worker exited {proc.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def share(setting: Setting, workdir: Path) -> dict:
    """Throughput of the SHARED trials all at once on one device against the same trials one at a time."""
    names = SHARED if not setting.dry_run else SHARED[1:3]
    alone = [spawn((name,), setting, barrier=workdir / f"alone-{i}")[0] for i, name in enumerate(names)]
    together = spawn(names, setting, barrier=workdir / "together")
    images = sum(r["images"] for r in together)
    alone_s = sum(r["end"] - r["start"] for r in alone)
    together_s = max(r["end"] for r in together) - min(r["start"] for r in together)
    gpu_gb = resources.local_gpu_memory_gb() if setting.device.type == "cuda" else None
    fractions = {}
    if gpu_gb:
        for name in set(names):
            trial = spec.Trial(name, "large", config=spec.make_config({"image_size": setting.image_size}))
            fractions[name] = resources.gpu_fraction(resources.estimate_gpu_memory_gb(trial), gpu_gb)
    return {
        "models": list(names),
        "image_size": setting.image_size,
        "alone": alone,
        "together": together,
        "alone_images_per_s": images / alone_s,
        "together_images_per_s": images / together_s,
        "speedup": alone_s / together_s,
        "ray_gpu_fraction": fractions,
    }


# ----------------------------------------------------------------------------------------------------- run


def run(*, workdir: Path, quick: bool, dry_run: bool, step: str = "eager") -> tuple[dict, list[Row]]:
    if dry_run:
        setting = Setting(
            torch.device("cpu"), image_size=32, warmup=1, steps=1, eval_steps=1, share_steps=2, dry_run=True, step=step
        )
    else:
        if not torch.cuda.is_available():
            raise RuntimeError("--gpu needs CUDA; use --gpu-dry-run to exercise the code on the CPU")
        torch.backends.cudnn.benchmark = True  # as trial.build_trainer does on CUDA
        setting = Setting(
            torch.device("cuda"),
            steps=5 if quick else 10,
            eval_steps=3 if quick else 5,
            share_steps=50 if quick else 100,
            step=step,
        )
    started = time.perf_counter()
    measured = []
    for name, pretrained, precision in configurations(setting):
        label = f"{name}{' pretrained' if pretrained else ''} {precision}"
        if time.perf_counter() - started > setting.budget_s:
            measured.append(
                {"model": name, "pretrained": pretrained, "precision": precision, "skipped": "time budget spent"}
            )
            continue
        try:
            m = measure(name, pretrained=pretrained, precision=precision, setting=setting)
            measured.append(m)
            peak = "" if m["peak_gb"] is None else f", peak {m['peak_gb']:.1f} GB (estimated {m['estimated_gb']:.1f})"
            print(
                f"  gpu {label}: {m['train_step_s'] * 1e3:.1f} ms/step, {m['images_per_s']:.0f} img/s{peak}", flush=True
            )
        except Exception as error:  # out of memory, or one configuration's kernel failing: measure the others
            measured.append(
                {
                    "model": name,
                    "pretrained": pretrained,
                    "precision": precision,
                    "error": f"{type(error).__name__}: {error}"[:300],
                }
            )
            print(f"  gpu {label}: {type(error).__name__}: {str(error)[:200]}", flush=True)
        finally:
            release(setting.device)
    try:
        sharing = share(setting, workdir)
        print(
            f"  gpu sharing {sharing['models']}: {sharing['speedup']:.2f}x the throughput of one at a time", flush=True
        )
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:  # keep the per-configuration figures
        sharing = {"models": list(SHARED), "speedup": None, "error": str(error)[-2000:]}
        print(f"  gpu sharing failed: {error}", flush=True)
    speedup = sharing.get("speedup")
    projections = {p: project(measured, precision=p, sharing_speedup=speedup) for p in spec.PRECISIONS}
    activations = activation_table(measured, image_size=setting.image_size)
    result = {
        "dry_run": dry_run,
        "setting": {**dataclasses.asdict(setting), "device": str(setting.device)},
        "measured": measured,
        "sharing": sharing,
        "projection": projections,
        "ACTIVATION_MB": activations,
        "seconds": time.perf_counter() - started,
    }
    result["ACTIVATION_MB_BF16"] = activation_table(measured, image_size=setting.image_size, precision="bf16")
    result["FORWARD_ONLY"] = forward_only_share(measured)
    result["markdown"] = epoch_table(measured, dry_run=dry_run)
    print("  ACTIVATION_MB = " + json.dumps(activations), flush=True)
    tag = " [dry run on CPU, 32x32: not a measurement]" if dry_run else ""
    bench = f"4 GPU ({'dry run' if dry_run else torch.cuda.get_device_name(0)})"
    rows = []
    for p, proj in projections.items():
        partial = f"; {len(proj['missing'])} of 99 trials not measured" if proj["missing"] else ""
        rows.append(
            Row(
                bench,
                f"thesis grid, 99 trials one at a time, {p}: projected hours (thesis {THESIS_HOURS} h, floor "
                f"{FLOOR_HOURS:.1f} h)",
                proj["hours"],
                "h",
                note=f"{proj['speedup_vs_thesis'] or 0:.0f}x faster than the "
                f"thesis, {proj['x_floor']:.1f}x the floor{partial}{tag}",
            )
        )
        rows.append(
            Row(
                bench,
                f"thesis grid, packed on one GPU as the scheduler would (memory shares, measured sharing), {p}",
                proj["packed_hours"],
                "h",
                note=tag.strip() or "a lower bound: no packing ends before its longest trial",
            )
        )
    rows.append(
        Row(
            bench,
            f"{len(sharing['models'])} small trials sharing the device ({', '.join(sharing['models'])}) "
            "/ one at a time",
            sharing["speedup"],
            "x throughput",
            note=sharing.get("error", "")[:200] or tag.strip(),
        )
    )
    done = [m for m in measured if "train_step_s" in m]
    rows.append(
        Row(
            bench,
            "configurations measured (model x pretrained x precision); seconds per epoch: the table below",
            len(done),
            f"of {len(measured)}",
            note=tag.strip(),
        )
    )
    return result, rows


def main() -> None:
    parser = argparse.ArgumentParser(description="a GPU-sharing worker (run_all.py starts these)")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--image-size", type=int, default=352)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--barrier")
    parser.add_argument("--parties", type=int, default=1)
    args = parser.parse_args()
    result = worker(
        args.worker,
        image_size=args.image_size,
        steps=args.steps,
        device=args.device,
        barrier=Path(args.barrier) if args.barrier else None,
        parties=args.parties,
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
