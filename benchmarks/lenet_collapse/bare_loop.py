"""One seed of LeNet-5 through a bare loop written from the thesis's text alone (PIL, torchvision transforms,
a DataLoader), knowing nothing of raybench's loop."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

from benchmarks.lenet_collapse import NUM_CLASSES
from benchmarks.lenet_collapse.probe import Probe, finite, state_sha


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
