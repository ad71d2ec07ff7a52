"""The thesis's curves and confusion-matrix sets (figs. 5.7-5.29) and its figure 4.2, on a real results folder:
short trials of LeNet-5, ViT-B/32 (two seeds each) and ConvNeXt-T (two tiers) on the embedded images."""

import hashlib
import io
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from raybench import data, report, train
from raybench.provenance import RUN_FILE
from raybench.report import curves
from raybench.report.document import context

pytestmark = pytest.mark.slow  # five short trials, ViT-B/32 among them: about 100 s on 2 CPUs

RUNS = (("lenet5", "tiny", 0), ("vit_b_32", "tiny", 0), ("vit_b_32", "tiny", 1), ("convnext_tiny", "tiny", 0),
        ("convnext_tiny", "large", 0))  # fmt: skip
SHORT = ["--set", "device=cpu", "--set", "image_size=32", "--set", "max_epochs=2", "--set", "es_start=0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, decoded_cache):
    out = tmp_path_factory.mktemp("thesis_figures") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for model, tier, seed in RUNS:
            argv = ["--model", model, "--tier", tier, "--seed", str(seed), *SHORT, "--out", str(out)]
            assert train.main([*argv, "--cache", str(decoded_cache)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert report.main([str(out), "--cache", str(decoded_cache)]) == 0
    return out


def table(folder, key) -> pd.DataFrame:
    return pd.read_csv(folder / "report" / "tables" / f"{key}.csv")


def markdown(folder) -> str:
    return (folder / "report" / "report.md").read_text()


def trials(folder) -> pd.DataFrame:
    return pd.read_parquet(folder / "trials.parquet").set_index("trial_id")


def matrix(folder, trial_id) -> np.ndarray:
    return np.asarray([list(r) for r in trials(folder).confusion_matrix[trial_id]], dtype=float)


def named(folder, key) -> bool:
    return (folder / "report" / "figures" / f"{key}.png").is_file() and f"](figures/{key}.png)" in markdown(folder)


def test_validation_accuracy_is_drawn_for_every_trial_a_panel_per_tier(folder):
    assert named(folder, "val_accuracy_vit") and named(folder, "val_accuracy_convnext")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    drawn = table(folder, "val_accuracy_vit")
    assert set(drawn.trial_id) == {"vit_b_32-tiny-seed0", "vit_b_32-tiny-seed1"}  # one line per seed
    ours = epochs[epochs.trial_id.isin(drawn.trial_id)].sort_values(["trial_id", "epoch"])
    assert np.allclose(drawn.sort_values(["trial_id", "epoch"]).val_accuracy, ours.val_accuracy)
    comparison = context(report.read_results(folder), report.read_thesis()).comparison
    assert [tier for tier, _, _ in curves.panels(comparison, "ConvNeXt")] == ["large", "tiny"]  # largest first
    text = markdown(folder)
    assert "cf. thesis figs. 5.7, 5.15, 5.19, 5.20, 5.22, 5.27" in text
    assert "the thesis publishes its curves as pictures only, so only ours are drawn" in text


def test_loss_curves_of_every_configuration_per_tier_and_the_log_axis_rule(folder):
    assert named(folder, "loss_convnext") and named(folder, "loss_lenet-5")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    drawn = table(folder, "loss_convnext")
    assert set(drawn.trial_id) == {"convnext_tiny-tiny-seed0", "convnext_tiny-large-seed0"}
    own = epochs[epochs.trial_id.isin(drawn.trial_id)].sort_values(["trial_id", "epoch"])
    assert np.allclose(
        drawn.sort_values(["trial_id", "epoch"])[["train_loss", "val_loss"]], own[["train_loss", "val_loss"]]
    )
    assert "cf. thesis figs. 5.10, 5.11, 5.13, 5.16, 5.18, 5.28" in markdown(folder)
    # a loss that spans more than LOG_SPAN puts its panel on a log axis, as the thesis's fig. 5.13
    ctx = context(report.read_results(folder), report.read_thesis())
    _, scales = curves.loss_curves(epochs, ctx.comparison, "ViT")
    assert list(scales.axis) == ["linear"]
    spiked = epochs.copy()
    spiked.loc[spiked.trial_id.str.startswith("vit_b_32") & (spiked.epoch == 1), "val_loss"] *= 10 * curves.LOG_SPAN
    _, scales = curves.loss_curves(spiked, ctx.comparison, "ViT")
    assert list(scales.axis) == ["log"]


def test_figure_5_24_is_vits_mean_normalised_matrix(folder):
    assert named(folder, "figure_5.24_confusion_vit_mean")
    cells = table(folder, "figure_5.24_confusion_vit_mean")
    assert cells.panel.nunique() == 1 and cells.panel.iloc[0].startswith("tier tiny: mean of 2 trial(s)")
    shares = [m / m.sum(1, keepdims=True) for m in (matrix(folder, f"vit_b_32-tiny-seed{s}") for s in (0, 1))]
    assert np.allclose(cells.value.to_numpy().reshape(8, 8), np.mean(shares, axis=0))
    assert np.allclose(cells.groupby("true", sort=False).value.sum(), 1.0)
    assert "Figure 5.24: ViT's mean normalised confusion matrix" in markdown(folder)


def test_figure_5_29_is_convnext_across_tiers_and_names_the_tiers_not_run(folder):
    assert named(folder, "figure_5.29_confusion_convnext_tiers")
    cells = table(folder, "figure_5.29_confusion_convnext_tiers")
    panels = list(dict.fromkeys(cells.panel))
    assert [p.split(":")[0] for p in panels] == ["tier large", "tier tiny"]  # the thesis's order, largest first
    for panel, tier in zip(panels, ("large", "tiny"), strict=True):
        drawn = cells[cells.panel == panel].value.to_numpy().reshape(8, 8)
        assert np.array_equal(drawn, matrix(folder, f"convnext_tiny-{tier}-seed0"))
    text = markdown(folder)
    assert (
        "Not in this run: tier medium (thesis's best: convnext_base 0.853); "
        "tier small (thesis's best: convnext_large 0.619)." in text
    )


def test_figure_5_9_draws_ours_for_the_thesiss_tied_configurations_and_names_the_others(folder):
    assert named(folder, "figure_5.9_identical_accuracy")
    cells = table(folder, "figure_5.9_identical_accuracy")
    panels = list(dict.fromkeys(cells.panel))
    # the thesis's tiny 0.591 (vit_b_32, vit_l_16, vit_l_32), then its 0.2 (convnext_tiny, convnext_large)
    assert [p.split(" ours")[0] for p in panels] == ["vit_b_32 tiny", "convnext_tiny tiny"]
    summed = matrix(folder, "vit_b_32-tiny-seed0") + matrix(folder, "vit_b_32-tiny-seed1")
    assert np.array_equal(cells[cells.panel == panels[0]].value.to_numpy().reshape(8, 8), summed)
    text = markdown(folder)
    assert (
        "Not in this run: " in text
        and "vit_l_16 tiny (thesis 0.591); vit_l_32 tiny (thesis 0.591); convnext_large tiny (thesis 0.200)" in text
    )
    assert "mobilenet_small tiny (thesis 0.174)" in text  # a group none of whose configurations ran: named only


def test_figure_4_2_shows_the_original_files_of_figure_4_3(folder):
    assert named(folder, "figure_4.2_original")
    shown = table(folder, "figure_4.2_original")
    assert shown.found.all() and list(shown.class_name) == list(data.CLASSES)
    for image, sha in zip(shown.image, shown.sha256, strict=True):
        assert hashlib.sha256((data.EMBEDDED_DATA / image).read_bytes()).hexdigest() == sha
    assert f"read from `{data.EMBEDDED_DATA}`" in markdown(folder)


def test_figure_4_2_reads_the_zip_the_run_names_and_leaves_out_an_image_whose_content_differs(folder, tmp_path):
    shown = table(folder, "figure_4.2_original")
    archive = tmp_path / "PBC.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for image in shown.image:
            content = (data.EMBEDDED_DATA / image).read_bytes()
            if image.startswith("basophil/"):  # the same name, another content
                buffer = io.BytesIO()
                Image.new("RGB", (360, 363), "red").save(buffer, "JPEG")
                content = buffer.getvalue()
            z.writestr(f"PBC_dataset_normal_DIB/{image}", content)
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("trials.parquet", "epochs.parquet", "predictions.parquet", "manifest.parquet"):
        (copy / name).write_bytes((folder / name).read_bytes())
    run = {"argv": ["raybench", "run", "grid.py", "--data", "PBC.zip"], "cwd": str(tmp_path), "started_at": "x"}
    (copy / RUN_FILE).write_text(pd.Series({"runs": [run]}).to_json())
    assert report.main([str(copy), "--cache", str(tmp_path / "no-cache")]) == 0
    text = (copy / "report" / "report.md").read_text()
    assert f"read from `{archive}`" in text and "; not found: basophil" in text
    again = pd.read_csv(copy / "report" / "tables" / "figure_4.2_original.csv").set_index("class_name").found
    assert not again.basophil and again.drop("basophil").all()
