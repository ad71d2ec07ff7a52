"""LeNet-5's collapse at lr 0.1 on the tiny tier: raybench against a bare loop written from the thesis's text.

    python -m benchmarks.lenet_collapse --seeds 20 --max-epochs 11   # both loops, two processes, then the report
    python -m benchmarks.lenet_collapse --quick                       # 2 seeds, 2 epochs, 64 px, into a temp folder
    python -m benchmarks.lenet_collapse --report                      # rewrite the .md from the JSONL
    python -m benchmarks.lenet_collapse --impl bare --pixels raybench --order raybench --seeds 0,1 --max-epochs 2

Both loops see the same images: raybench's own tier draw of the shared real sample (`data.prepare(...,
tiers={'tiny': 400})`). raybench runs through `trial.train_trial`; the bare loop knows nothing of raybench's code:
ImageFolder-style loading, torchvision transforms on PIL images (Grayscale, CenterCrop(352), ToTensor, Normalize(0.5,
0.225)), a plain DataLoader (batch 64, shuffled), SGD lr 0.1, ReduceLROnPlateau on the validation loss and the
early-stopping rule of fig. 4.5, all as §4.2-4.5 describe them. Each (implementation, variant, seed) is one JSONL row,
written as soon as it ends; a row already in the file is not run again.

The bare loop's `--pixels raybench` (raybench's uint8 cache instead of torchvision's Grayscale) and `--order raybench`
(the images in manifest order, shuffled by `torch.randperm` from its own generator seeded with the seed, as
`loop.Trainer` does) swap one factor at a time; both together should be raybench's run number for number.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `raybench` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
JSONL = RESULTS / "lenet_collapse.jsonl"
REPORT = RESULTS / "lenet_collapse.md"
SAMPLE = Path("/work/shared/data/pbc_sample")
NUM_CLASSES = 8


# ------------------------------------------------------------------------------------------------- the probe


class Probe:
    """Watches a LeNet-5's evaluation passes: predicted classes and how many fc1 / fc2 ReLU units ever fire."""

    def __init__(self, model, relu1, relu2) -> None:
        self.handles = [
            model.register_forward_hook(self._output),
            relu1.register_forward_hook(lambda m, i, o: self._live(0, m, o)),
            relu2.register_forward_hook(lambda m, i, o: self._live(1, m, o)),
        ]
        self.reset()

    def reset(self) -> None:
        self.predictions: list = []
        self.live: list = [None, None]

    def _output(self, module, inputs, output) -> None:
        if not module.training:
            self.predictions.append(output.detach().argmax(1).cpu())

    def _live(self, k: int, module, output) -> None:
        if not module.training:
            fired = (output.detach() > 0).any(0).cpu()
            self.live[k] = fired if self.live[k] is None else self.live[k] | fired

    def take(self) -> dict:
        """The evaluation passes since the last take: predicted-class counts and live units; then reset."""
        import torch

        predicted = torch.cat(self.predictions) if self.predictions else torch.zeros(0, dtype=torch.long)
        counts = torch.bincount(predicted, minlength=NUM_CLASSES).tolist()
        out = {
            "pred_counts": counts,
            "classes": sum(c > 0 for c in counts),
            "fc1_live": None if self.live[0] is None else int(self.live[0].sum()),
            "fc2_live": None if self.live[1] is None else int(self.live[1].sum()),
        }
        self.reset()
        return out


def state_sha(model) -> str:
    """A short hash of the initial weights: equal hashes mean the two loops start from the same network."""
    h = hashlib.sha256()
    for tensor in model.state_dict().values():
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def finite(value: float) -> bool:
    return value is not None and math.isfinite(value)


# ------------------------------------------------------------------------------------------------- raybench


def run_raybench(
    seed: int, prepared, *, max_epochs: int, image_size: int, channels_last: bool, cache_dir: Path
) -> dict:
    """One trial through raybench.trial.train_trial, watched by a Probe attached on the model's first forward."""
    import torch

    from raybench import models, spec
    from raybench import trial as lifecycle

    probe: dict = {}

    def attach(module, inputs):
        if isinstance(module, models.LeNet5) and "probe" not in probe:
            probe["probe"] = Probe(module, module.classifier[2], module.classifier[4])
            probe["init_sha"] = state_sha(module)  # the first forward comes before the first SGD step

    handle = torch.nn.modules.module.register_module_forward_pre_hook(attach)
    epochs: list[dict] = []

    def on_epoch_end(row: dict, trainer) -> None:
        seen = probe["probe"].take()
        epochs.append(
            {
                "epoch": row["epoch"],
                "train_loss": row["train_loss"],
                "val_loss": row["val_loss"],
                "val_accuracy": row["val_accuracy"],
                "val_classes": seen["classes"],
                "val_pred_counts": seen["pred_counts"],
                "fc1_live": seen["fc1_live"],
                "fc2_live": seen["fc2_live"],
                "lr": row["lr"],
                "improved": row["improved"],
                "seconds": row["epoch_seconds"],
            }
        )

    config = spec.TrainConfig(device="cpu", max_epochs=max_epochs, image_size=image_size, channels_last=channels_last)
    trial = spec.Trial("lenet5", "tiny", seed=seed, config=config)
    try:
        result = lifecycle.train_trial(trial, lifecycle.TrialData(prepared, cache_dir), on_epoch_end=on_epoch_end)
    finally:
        handle.remove()
    probe["probe"].take()  # the test pass; its counts come from the result's confusion matrix
    row = result.trial
    counts = [int(c) for c in torch.tensor(row["confusion_matrix"]).sum(0).tolist()]
    return {
        "init_sha": probe["init_sha"],
        "epochs": epochs,
        "n_epochs": row["epochs"],
        "tested_epoch": row["tested_epoch"],
        "stopped_early": row["stopped_early"],
        "nonfinite": row["status"] == "diverged",
        "test_accuracy": row["test_accuracy"],
        "test_pred_counts": counts,
        "test_classes": sum(c > 0 for c in counts),
        "n_train": row["n_train"],
        "n_val": row["n_val"],
        "n_test": row["n_test"],
    }


# ------------------------------------------------------------------------------------------------- the bare loop
# Written from the thesis's text (§4.2-4.5, figures 4.4-4.6) only; it imports nothing from raybench.


def bare_lenet5(side: int = 85):
    """Fig. 4.6: conv(1->6, 5x5) BN ReLU pool2, conv(6->16, 5x5) BN ReLU pool2, 16x85x85 -> 120 -> 84 -> 8."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, NUM_CLASSES),
    )


def bare_split(root: Path, images: list[str], labels: list[int], *, order: str, transform, raybench_pixels):
    """One split as (x, y) tensors, decoded once (the transforms are deterministic, so a DataLoader over them is a
    DataLoader over the ImageFolder). order "dataloader": ImageFolder's own order (class folder, then file name);
    "raybench": the manifest's order."""
    import torch
    import torchvision
    from PIL import Image

    if order == "dataloader":
        wanted = {str(root / image) for image in images}
        folder = torchvision.datasets.ImageFolder(str(root), is_valid_file=lambda path: path in wanted)
        samples = [(path, label) for path, label in folder.samples]
    else:
        samples = [(str(root / image), label) for image, label in zip(images, labels, strict=True)]
    position = {str(root / image): i for i, image in enumerate(images)}
    xs = []
    for path, _ in samples:
        if raybench_pixels is not None:  # raybench's uint8 greyscale crop of the same file: only ToTensor, Normalize
            to_tensor, normalize = transform.transforms[-2:]
            xs.append(normalize(to_tensor(Image.fromarray(raybench_pixels[position[path]]))))
        else:
            with Image.open(path) as f:
                xs.append(transform(f.convert("RGB")))
    return torch.stack(xs), torch.tensor([label for _, label in samples])


def run_bare(
    seed: int,
    prepared,
    *,
    max_epochs: int,
    image_size: int,
    pixels: str,
    order: str,
    channels_last: bool,
    cache_dir: Path,
) -> dict:
    import random

    import numpy as np
    import torch
    import torchvision.transforms as T
    from torch import nn

    steps = [T.Grayscale(num_output_channels=1), T.CenterCrop(352)]
    if image_size != 352:  # --quick only
        steps.append(T.Resize(image_size))
    transform = T.Compose([*steps, T.ToTensor(), T.Normalize(mean=[0.5], std=[0.225])])
    manifest = prepared.manifest[prepared.manifest.tier == "tiny"]
    splits = {}
    for name in ("train", "val", "test"):
        rows = manifest[manifest.split == name]
        raybench_pixels = None
        if pixels == "raybench":
            from raybench import data

            raybench_pixels, _ = data.load_split(prepared, "tiny", name, image_size=image_size, cache_dir=cache_dir)
        splits[name] = bare_split(
            Path(prepared.root),
            rows.image.tolist(),
            rows.label.tolist(),
            order=order,
            transform=transform,
            raybench_pixels=raybench_pixels,
        )

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    model = bare_lenet5(((image_size - 4) // 2 - 4) // 2)  # 85 at 352; --quick's 64 px leave 13
    init_sha = state_sha(model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)  # the same numbers; only the conv kernels' summation order changes
    probe = Probe(model, model[10], model[12])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    loss_fn = nn.CrossEntropyLoss()

    x_train, y_train = splits["train"]
    if order == "dataloader":
        train_loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x_train, y_train), batch_size=64, shuffle=True
        )
    else:
        generator = torch.Generator().manual_seed(seed)

        def raybench_order():
            index = torch.randperm(len(y_train), generator=generator)
            return [(x_train[index[i : i + 64]], y_train[index[i : i + 64]]) for i in range(0, len(index), 64)]

    def evaluate(x, y):
        model.eval()
        losses, correct = [], 0
        with torch.no_grad():
            for xb, yb in torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64):
                out = model(xb.contiguous(memory_format=memory_format))
                losses.append(loss_fn(out, yb).item())
                correct += (out.argmax(1) == yb).sum().item()
        return sum(losses) / len(losses), correct / len(y)

    best, best_epoch, bad, best_state = None, None, 0, None
    epochs, dead = [], False
    for epoch in range(max_epochs):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        if dead:  # NaN weights stay NaN under SGD: every batch's loss would be NaN; skip the arithmetic
            train_loss = float("nan")
        else:
            model.train()
            losses = []
            for xb, yb in train_loader if order == "dataloader" else raybench_order():
                optimizer.zero_grad()
                loss = loss_fn(model(xb.contiguous(memory_format=memory_format)), yb)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            train_loss = sum(losses) / len(losses)
            dead = not math.isfinite(train_loss) and all(not torch.isfinite(p).any() for p in model.parameters())
        val_loss, val_accuracy = evaluate(*splits["val"])
        seen = probe.take()
        scheduler.step(val_loss)
        improved = False
        if epoch >= 10:  # fig. 4.5: from the 11th epoch; the first considered always improves; 0.1 below the best
            if best is None or val_loss < best - 0.1:
                best, best_epoch, bad, improved = val_loss, epoch, 0, True
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        epochs.append(
            {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "val_classes": seen["classes"],
                "val_pred_counts": seen["pred_counts"],
                "fc1_live": seen["fc1_live"],
                "fc2_live": seen["fc2_live"],
                "lr": lr,
                "improved": improved,
                "seconds": time.perf_counter() - started,
            }
        )
        if bad >= 20:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    _, test_accuracy = evaluate(*splits["test"])
    seen = probe.take()
    return {
        "init_sha": init_sha,
        "epochs": epochs,
        "n_epochs": len(epochs),
        "tested_epoch": best_epoch + 1 if best_epoch is not None else len(epochs),
        "stopped_early": bad >= 20,
        "nonfinite": any(not finite(e["train_loss"]) or not finite(e["val_loss"]) for e in epochs),
        "test_accuracy": test_accuracy,
        "test_pred_counts": seen["pred_counts"],
        "test_classes": seen["classes"],
        "n_train": len(splits["train"][1]),
        "n_val": len(splits["val"][1]),
        "n_test": len(splits["test"][1]),
    }


# ------------------------------------------------------------------------------------------------- one process


def variant_name(impl: str, pixels: str, order: str) -> str:
    if impl == "raybench":
        return "raybench"
    return "bare" if (pixels, order) == ("pil", "dataloader") else f"bare+{pixels}-pixels+{order}-order"


def done_keys(path: Path) -> set:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            keys.add(
                (row["variant"], row["seed"], row["max_epochs"], row["image_size"], row.get("channels_last", False))
            )
    return keys


def worker(args: argparse.Namespace) -> None:
    """Run one implementation over the seeds, one JSONL row per seed as soon as it ends."""
    os.nice(19)
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*not an image.*")
    from raybench import data
    from raybench import trial as lifecycle

    cache_dir = Path(args.cache_dir) if args.cache_dir else lifecycle.default_cache_dir()
    prepared = data.prepare(str(args.data), tiers={"tiny": 400})
    out = Path(args.out)
    variant = variant_name(args.impl, args.pixels, args.order)
    done = done_keys(out)
    for seed in parse_seeds(args.seeds):
        if (variant, seed, args.max_epochs, args.image_size, args.channels_last) in done:
            continue
        started = time.perf_counter()
        if args.impl == "raybench":
            row = run_raybench(
                seed,
                prepared,
                max_epochs=args.max_epochs,
                image_size=args.image_size,
                channels_last=args.channels_last,
                cache_dir=cache_dir,
            )
        else:
            row = run_bare(
                seed,
                prepared,
                max_epochs=args.max_epochs,
                image_size=args.image_size,
                pixels=args.pixels,
                order=args.order,
                channels_last=args.channels_last,
                cache_dir=cache_dir,
            )
        row = {
            "impl": args.impl,
            "variant": variant,
            "seed": seed,
            "max_epochs": args.max_epochs,
            "image_size": args.image_size,
            "channels_last": args.channels_last,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "wall_seconds": time.perf_counter() - started,
            **row,
        }
        with out.open("a") as f:  # one line per write: the two processes never interleave within a row
            f.write(json.dumps(row) + "\n")
        first = row["epochs"][0]["train_loss"] if row["epochs"] else float("nan")
        diverged = " non-finite" if row["nonfinite"] else ""
        print(
            f"{variant} seed {seed}: epoch-1 loss {first:.4g}, {row['n_epochs']} epochs, "
            f"test {row['test_accuracy']:.3f} ({row['test_classes']} classes){diverged}, {row['wall_seconds']:.0f} s",
            flush=True,
        )


def parse_seeds(text: str) -> list[int]:
    """ "20" is seeds 0-19; "0,3,5" and "4-7" name them."""
    if text.isdigit():
        return list(range(int(text)))
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


# ------------------------------------------------------------------------------------------------- the report


def outcome(row: dict) -> str:
    """diverged (a loss went non-finite), one class, two classes, or learning (3 or more classes on test)."""
    if row["nonfinite"]:
        return "diverged"
    return {1: "one class", 2: "two classes"}.get(row["test_classes"], "learning")


def collapsed(row: dict) -> bool:
    """The issue's description of a collapse: a non-finite loss, or one or two classes predicted on test."""
    return outcome(row) != "learning"


# The biggest class's share of the tiny tier's test split (neutrophil, 23 of 115 with split seed 0 on the shared
# sample): the accuracy of always answering it.
MAJORITY_SHARE = 23 / 115


def at_chance(row: dict) -> bool:
    """A non-finite loss, or a test accuracy no better than always answering the biggest class."""
    return row["nonfinite"] or row["test_accuracy"] <= MAJORITY_SHARE + 1e-9


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact test of the 2x2 table [[a, b], [c, d]]: the sum of the tables as likely or less."""
    n1, n2, k = a + b, c + d, a + c
    total = math.comb(n1 + n2, k)

    def p(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, k - x) / total

    observed = p(a)
    return min(1.0, sum(p(x) for x in range(max(0, k - n2), min(k, n1) + 1) if p(x) <= observed * (1 + 1e-9)))


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


# The issue's runs: (collapsed, runs). raybench on a GPU: 5 of 5 at chance; the independent minimal implementation on
# the CPU: one diverged, one collapsed to one class, three predicted 3-4 classes.
ISSUE_RUNS = {"raybench, GPU, full length (issue)": (5, 5), "independent implementation, CPU (issue)": (2, 5)}


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def cell(row: dict | None) -> list[str]:
    if row is None:
        return ["-"] * 7
    first = row["epochs"][0]["train_loss"] if row["epochs"] else None
    last = row["epochs"][-1] if row["epochs"] else {}
    return [
        fmt(first, 1) if first is not None and finite(first) else fmt(first),
        f"{row['n_epochs']}/{row['tested_epoch']}",
        f"{fmt(last.get('val_loss'), 3)}",
        str(last.get("fc1_live", "-")),
        f"{row['test_accuracy']:.3f}",
        str(row["test_classes"]),
        outcome(row),
    ]


def agreement(row: dict, ref: dict) -> str:
    """Whether two runs follow the same trajectory: every epoch's losses equal to 1e-5 relative (raybench sums an
    epoch's batch losses in float32, the bare loop in Python floats, so the printed means differ in the last bits)."""
    n = min(len(row["epochs"]), len(ref["epochs"]))

    def close(a: float, b: float) -> bool:
        return (not finite(a) and not finite(b)) or (finite(a) and finite(b) and abs(a - b) <= 1e-5 * abs(b))

    for i in range(n):
        if not all(close(row["epochs"][i][k], ref["epochs"][i][k]) for k in ("train_loss", "val_loss")):
            return f"no, from epoch {i + 1}"
    if row["n_epochs"] == ref["n_epochs"] and row["test_pred_counts"] == ref["test_pred_counts"]:
        return f"yes: all {n} epochs' losses (1e-5) and the test predictions"
    return f"same losses over {n} epochs"


def counts(rows: list[dict]) -> dict:
    out = {k: 0 for k in ("diverged", "one class", "two classes", "learning")}
    for row in rows:
        out[outcome(row)] += 1
    return out


def setting(row: dict) -> tuple:
    return (row["image_size"], row["max_epochs"], row.get("channels_last", False))


def describe_setting(key: tuple) -> str:
    size, cap, channels_last = key
    return f"{size} px, at most {cap} epochs, {'channels_last' if channels_last else 'contiguous (NCHW)'}"


def settled_from(row: dict) -> int | None:
    """The first epoch from which every later epoch (to the cap) predicts at most two classes on val, or None."""
    epochs = row["epochs"]
    for i in range(len(epochs)):
        if all(e["val_classes"] <= 2 for e in epochs[i:]):
            return epochs[i]["epoch"]
    return None


def report(rows: list[dict], *, wall: str = "") -> str:
    """The side-by-side table, the counts and the test, then the one-factor runs, as Markdown."""
    size = max((r["image_size"] for r in rows), default=352)  # 352 but in --quick
    pairs = [r for r in rows if r["variant"] in ("raybench", "bare") and r["image_size"] == size]
    by_setting: dict = {}
    for r in pairs:
        by_setting.setdefault(setting(r), []).append(r)
    key = max(by_setting, key=lambda k: len(by_setting[k]), default=(size, 0, False))  # the main comparison
    main = by_setting.get(key, [])
    by = {(r["variant"], r["seed"]): r for r in main}
    seeds = sorted({r["seed"] for r in main})
    rb = [by[("raybench", s)] for s in seeds if ("raybench", s) in by]
    bare = [by[("bare", s)] for s in seeds if ("bare", s) in by]
    first = (rb or bare or rows or [{}])[0]
    lines = [
        "# LeNet-5 at lr 0.1 on the tiny tier: raybench against a bare loop from the thesis's text",
        "",
        f"Data: the tiny tier (raybench's draw, split seed 0) of the real sample `/work/shared/data/pbc_sample`: "
        f"{first.get('n_train', '?')} train / {first.get('n_val', '?')} val / {first.get('n_test', '?')} test images, "
        f"greyscale, fp32 on the CPU, one thread per loop, torch {first.get('torch', '?')}. Main comparison: "
        f"{describe_setting(key)}. {wall}".rstrip(),
        "",
        "Columns per loop: epoch-1 training loss; epochs run / epoch tested; validation loss of the last epoch; fc1 "
        "units (of 120) that fire on any validation image in the last epoch; test accuracy; classes predicted on test; "
        "outcome (diverged: a loss went non-finite; one / two classes: the tested model predicts only that many "
        "classes on test; learning: 3 or more). Same init: the two loops' initial weights hash the same.",
        "",
        "| seed | same init | raybench ep1 loss | ep/tested | last val loss | fc1 live | test acc | classes | outcome "
        "| bare ep1 loss | ep/tested | last val loss | fc1 live | test acc | classes | outcome |",
        "|---:|:---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in seeds:
        a, b = by.get(("raybench", s)), by.get(("bare", s))
        same = "yes" if a and b and a["init_sha"] == b["init_sha"] else ("no" if a and b else "-")
        lines.append("| " + " | ".join([str(s), same, *cell(a), *cell(b)]) + " |")
    ca, cb = counts(rb), counts(bare)
    lines += [
        "",
        "| outcome | raybench | bare |",
        "|---|---:|---:|",
        *[f"| {k} | {ca[k]} | {cb[k]} |" for k in ca],
        f"| seeds | {len(rb)} | {len(bare)} |",
    ]
    if rb and bare:
        xa, xb = sum(map(collapsed, rb)), sum(map(collapsed, bare))
        p = fisher_exact(xa, len(rb) - xa, xb, len(bare) - xb)
        da, db = ca["diverged"], cb["diverged"]
        p_div = fisher_exact(da, len(rb) - da, db, len(bare) - db)
        za, zb = sum(map(at_chance, rb)), sum(map(at_chance, bare))
        p_chance = fisher_exact(za, len(rb) - za, zb, len(bare) - zb)

        def mean(rs: list[dict], f) -> float:
            values = [f(r) for r in rs]
            values = [v for v in values if v is not None and finite(v)]
            return sum(values) / len(values) if values else float("nan")

        agree = sum(
            collapsed(by[("raybench", s)]) == collapsed(by[("bare", s)])
            for s in seeds
            if {("raybench", s), ("bare", s)} <= by.keys()
        )
        ep1 = lambda r: r["epochs"][0]["train_loss"] if r["epochs"] else None  # noqa: E731
        accuracy = lambda r: r["test_accuracy"]  # noqa: E731
        lines += [
            "",
            f"Collapsed (diverged, one or two classes): raybench {xa}/{len(rb)}, bare {xb}/{len(bare)}; two-sided "
            f"Fisher exact test p = {p:.3f}. Diverged alone: {da} against {db}, p = {p_div:.3f}. At chance (diverged, "
            f"or a test accuracy no better than always answering the biggest class, {MAJORITY_SHARE:.3f}): raybench "
            f"{za}/{len(rb)}, bare {zb}/{len(bare)}, p = {p_chance:.3f}. Mean test accuracy: "
            f"raybench {mean(rb, accuracy):.3f}, bare {mean(bare, accuracy):.3f}. Mean finite epoch-1 training loss: "
            f"raybench {mean(rb, ep1):.1f}, bare {mean(bare, ep1):.1f}. The same verdict (collapsed or not) for the "
            f"same seed in {agree} of {len(seeds)} seeds (the same initial weights, another data order).",
        ]
        pooled, n = xa + xb, len(rb) + len(bare)
        lines += ["", f"Against the runs of the fidelity issue (pooled here: {pooled}/{n} collapsed):", ""]
        for name, (k, m) in ISSUE_RUNS.items():
            q = fisher_exact(k, m - k, pooled, n - pooled)
            lines.append(
                f"- {name}: {k}/{m} collapsed; Fisher p = {q:.3f} against the pooled {pooled}/{n}; the chance of "
                f"{k} or more of {m} at the pooled rate {pooled / n:.2f} is {binomial_tail(k, m, pooled / n):.3f}."
            )
        settled = [settled_from(r) for r in rb + bare if collapsed(r) and not r["nonfinite"]]
        if settled:
            lines += [
                "",
                "Among the finite collapsed runs, the epoch from which validation predictions stay at one or two "
                f"classes to the cap: {sorted(settled)}.",
            ]
    extra = [r for r in rows if r not in main and r["image_size"] == size]
    if extra:
        lines += [
            "",
            "## One factor at a time",
            "",
            "Bare-loop variants on a few seeds (pixels: `pil` = torchvision Grayscale on the PIL image, `raybench` = "
            "raybench's uint8 cache; order: `dataloader` = ImageFolder order shuffled by DataLoader from the global "
            "RNG, `raybench` = manifest order shuffled by randperm from a generator seeded with the seed), and runs in "
            "another memory format. Each is compared with the main runs of the same seed: the same trajectory means "
            "every epoch's training and validation losses agree to 1e-5 relative.",
            "",
            "| variant | setting | seed | train loss, epochs 1-3 | val loss, epochs 1-3 | test acc | classes "
            "| outcome | vs raybench | vs bare |",
            "|---|---|---:|---|---|---:|---:|---|---|---|",
        ]
        for r in sorted(extra, key=lambda r: (r["variant"], setting(r), r["seed"])):
            refs = [by.get((v, r["seed"])) for v in ("raybench", "bare")]
            lines.append(
                f"| {r['variant']} | {describe_setting(setting(r))} | {r['seed']} | "
                + ", ".join(fmt(e["train_loss"], 4) for e in r["epochs"][:3])
                + " | "
                + ", ".join(fmt(e["val_loss"], 4) for e in r["epochs"][:3])
                + f" | {r['test_accuracy']:.3f} | {r['test_classes']} | {outcome(r)} | "
                + " | ".join("-" if ref is None else f"{outcome(ref)}; {agreement(r, ref)}" for ref in refs)
                + " |"
            )
    if REPORT_NOTES.exists():
        lines += ["", REPORT_NOTES.read_text().rstrip()]
    return "\n".join(lines) + "\n"


REPORT_NOTES = RESULTS / "lenet_collapse.notes.md"  # the hand-written explanation, appended to the report


# ------------------------------------------------------------------------------------------------- the CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("both", "raybench", "bare"), default="both")
    parser.add_argument("--seeds", default="20", help='"20": seeds 0-19; or "0,3" or "4-7"')
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=352)
    parser.add_argument("--pixels", choices=("pil", "raybench"), default="pil", help="bare loop only")
    parser.add_argument("--order", choices=("dataloader", "raybench"), default="dataloader", help="bare loop only")
    parser.add_argument(
        "--channels-last", action="store_true", help="both loops in channels_last (about 2x faster on the CPU)"
    )
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--cache-dir", default="")
    parser.add_argument("--out", default="", help=f"the JSONL (default {JSONL}; --quick: a temp folder)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 2 epochs, 64 px, into a temp folder")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the JSONL")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.max_epochs, args.image_size = "2", 2, 64
        if not args.out:
            args.out = str(Path(tempfile.mkdtemp(prefix="lenet_collapse-")) / "lenet_collapse.jsonl")
    out = Path(args.out or JSONL)
    args.out = str(out)
    report_path = out.with_suffix(".md")
    if args.report:
        report_path.write_text(report(load_rows(out)))
        print(report_path)
        return 0
    if args.impl != "both":
        worker(args)
        return 0
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    common = [
        *("--seeds", args.seeds, "--max-epochs", str(args.max_epochs), "--image-size", str(args.image_size)),
        *("--data", args.data, "--out", str(out)),
        *(["--channels-last"] if args.channels_last else []),
        *(["--cache-dir", args.cache_dir] if args.cache_dir else []),
    ]
    procs = [
        subprocess.Popen([sys.executable, "-m", "benchmarks.lenet_collapse", "--impl", impl, *common])
        for impl in ("raybench", "bare")
    ]
    codes = [p.wait() for p in procs]
    minutes = (time.perf_counter() - started) / 60
    report_path.write_text(report(load_rows(out), wall=f"Wall time of this invocation: {minutes:.1f} min."))
    print(f"{out}\n{report_path}\n{minutes:.1f} min")
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
