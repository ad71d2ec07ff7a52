"""One seed of LeNet-5 through raybench's own trial (`trial.train_trial`), watched by the probe."""

from __future__ import annotations

from pathlib import Path

from benchmarks.lenet_collapse.probe import Probe, state_sha


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
