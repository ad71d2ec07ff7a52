"""The report on a real results folder: three short trials of the one-trial runner on the embedded images."""

import math
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from raybench import catalog, report, results, train
from raybench.report.inputs import ARCHITECTURE_OF
from raybench.spec import Trial

RUNS = (("lenet5", 0), ("lenet5", 1), ("mobilenet_small", 0))
TINY = (
    "--tier",
    "tiny",
    "--set",
    "device=cpu",
    "--set",
    "image_size=32",
    "--set",
    "max_epochs=3",
    "--set",
    "es_start=0",
    "--set",
    "es_patience=2",
)
THESIS = report.read_thesis()


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory, decoded_cache):
    """trials/epochs/predictions of lenet5 (seeds 0 and 1) and mobilenet_small on tiny, in one folder, no plan."""
    out = tmp_path_factory.mktemp("report") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as fast for these tiny models, and 10x faster when other processes share the CPUs
    try:
        for model, seed in RUNS:
            assert (
                train.main(
                    ["--model", model, "--seed", str(seed), *TINY, "--out", str(out), "--cache", str(decoded_cache)]
                )
                == 0
            )
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def partial_folder(run_folder, tmp_path_factory):
    """The results with a plan of six trials: lenet5 seed 2 and resnet_18 seed 0 never ran, resnet_18 seed 1 failed."""
    out = tmp_path_factory.mktemp("partial") / "run"
    shutil.copytree(run_folder, out)
    plan = [
        {"trial_id": Trial(m, "tiny", seed=s).trial_id, "model": m, "tier": "tiny", "pretrained": False, "seed": s}
        for m, s in (*RUNS, ("lenet5", 2), ("resnet_18", 0), ("resnet_18", 1))
    ]
    results.write_plan(out, pd.DataFrame(plan))
    failed = {
        "trial_id": "resnet_18-tiny-seed1",
        "model": "resnet_18",
        "tier": "tiny",
        "pretrained": False,
        "seed": 1,
        "image_size": 32,
        "batch_size": 64,
        "max_epochs": 3,
    }
    results.write_results(out, [results.failed_result(failed, "Traceback ...\nRuntimeError: CUDA out of memory")])
    return out


@pytest.fixture(scope="session")
def written(run_folder):
    """The report the CLI writes for the plan-less folder."""
    assert report.main([str(run_folder)]) == 0
    return run_folder / "report"


def csv(folder, key):
    return pd.read_csv(folder / "tables" / f"{key}.csv")


def test_every_table_and_figure_is_written_and_linked(written):
    tables = {p.stem for p in (written / "tables").glob("table_*.csv")}
    assert tables == {
        "table_5.7_tiny",
        "table_5.8_tiny",
        "table_5.9_lenet-5",
        "table_5.10_resnet",
        "table_5.11_mobilenetv3",
        "table_5.12_convnext",
        "table_5.13_vit",
        "table_5.14_mlp-mixer",
        "table_5.15_tiny",
        "table_5.16_tiny",
        "table_5.17_tiny",
        "table_a.1_trials",
    }
    figures = {p.stem for p in (written / "figures").glob("*.png")}
    assert figures == {
        "heatmap_accuracy",
        "accuracy_vs_thesis",
        "speed_vs_thesis",
        "val_loss_tiny",
        "confusion_tiny",
        "map_curve_tiny",
        "learning_rate_tiny",
        "training_size_lenet-5",
        "training_size_mobilenetv3",
    }
    for path in (written / "figures").glob("*.png"):
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 200
    markdown = (written / "report.md").read_text()
    links = re.findall(r"\]\(((?:figures|tables)/[^)]+)\)", markdown)
    assert len(links) >= len(tables) + len(figures)
    assert all((written / link).is_file() for link in links)
    page = (written / "report.html").read_text()
    assert page.count("<table>") == len(tables) and page.count("<img ") == len(figures)
    for number in ("5.7", "5.8", "5.9", "5.14", "5.15", "5.16", "5.17"):
        assert f"Table {number}:" in markdown


def test_tier_table_lists_every_thesis_configuration_with_its_published_numbers(written, run_folder):
    table = csv(written, "table_5.7_tiny")
    assert list(table.model) == list(catalog.MODEL_NAMES)  # without a plan: all 22 of the thesis, missing ones marked
    status = table.set_index("model").status
    assert (
        status.lenet5 == "ok"
        and status.mobilenet_small == "ok"
        and (status.drop(["lenet5", "mobilenet_small"]) == "missing").all()
    )
    published = THESIS.results[(THESIS.results.tier == "tiny") & ~THESIS.results.pretrained].set_index("model")
    table = table.set_index("model")
    for column, theirs in (
        ("thesis_accuracy", "test_accuracy"),
        ("thesis_parameters", "parameters"),
        ("thesis_batch_size", "batch_size"),
        ("thesis_seconds_per_epoch", "seconds_per_epoch"),
    ):
        assert np.allclose(table[column], published.loc[table.index, theirs])
    ours = pd.read_parquet(run_folder / "trials.parquet").set_index("trial_id")
    row = table.loc["mobilenet_small"]
    assert row.accuracy == pytest.approx(ours.test_accuracy["mobilenet_small-tiny-seed0"])
    assert row.accuracy_diff == pytest.approx(row.accuracy - 0.174)
    assert row.seconds_per_epoch_ratio == pytest.approx(row.seconds_per_epoch / 0.612)
    assert row.parameters == row.thesis_parameters == 1526056  # parameter counts do not depend on the image size
    low, high = report.wilson_interval(0.174, 120)
    assert (row.thesis_interval_low, row.thesis_interval_high) == pytest.approx((low, high))
    assert row.inside_thesis_interval == (low <= row.accuracy <= high)
    assert row.device.startswith("cpu") and row.hit_epoch_limit  # 3 epochs of at most 3
    markdown = (written / "report.md").read_text()
    assert re.search(r"\| mobilenet_small \| ok \| 1,526,056 \| 1,526,056 \| 0 \|", markdown)
    assert "| resnet_18 | **MISSING** |" in markdown
    assert re.search(r"Agreement with the thesis: \d of 2 configurations", markdown)
    assert "Wilson" in markdown and "cpu" in markdown and "RTX 3080" in markdown


def test_seeds_are_aggregated_to_a_mean_and_t_interval(written, run_folder):
    ours = pd.read_parquet(run_folder / "trials.parquet").set_index("trial_id")
    accuracies = ours.test_accuracy[["lenet5-tiny-seed0", "lenet5-tiny-seed1"]].to_numpy()
    row = csv(written, "table_5.7_tiny").set_index("model").loc["lenet5"]
    assert row.seeds_ok == 2 and row.seeds == "0,1"
    half = 12.7062 * accuracies.std(ddof=1) / math.sqrt(2)  # t(0.975, 1 df)
    assert row.accuracy == pytest.approx(accuracies.mean())
    expected = (
        max(accuracies.mean() - half, 0),
        min(accuracies.mean() + half, 1),
    )  # a proportion's interval stays in [0, 1]
    assert (row.accuracy_low, row.accuracy_high) == pytest.approx(expected)
    assert row.map_at_5 == pytest.approx(ours.map_at_5[["lenet5-tiny-seed0", "lenet5-tiny-seed1"]].mean())
    lenet = csv(written, "table_5.9_lenet-5").iloc[0]
    assert lenet.accuracy_tiny == pytest.approx(accuracies.mean()) and lenet.thesis_accuracy_tiny == 0.313
    maps = csv(written, "table_5.8_tiny").set_index("architecture")
    assert maps.loc["LeNet-5", "model"] == "lenet5" and maps.loc["LeNet-5", "thesis_map_at_5"] == 0.15
    assert maps.loc["ResNet", "thesis_map_at_5"] == 0.75 and pd.isna(maps.loc["ResNet", "model"])  # shown, not dropped
    assert "(2 seeds)" in (written / "report.md").read_text()


def test_map_curve_matches_a_direct_computation_from_predictions(written, run_folder):
    predictions = pd.read_parquet(run_folder / "predictions.parquet")
    classes = results.class_names(run_folder / "predictions.parquet")
    curves = csv(written, "map_curve_tiny")
    trials = pd.read_parquet(run_folder / "trials.parquet").set_index("trial_id")
    assert set(curves.trial_id) == {"lenet5-tiny-seed0", "lenet5-tiny-seed1", "mobilenet_small-tiny-seed0"}
    for trial_id, drawn in curves.groupby("trial_id"):
        rows = predictions[predictions.trial_id == trial_id]
        scores, labels = rows[[f"score_{c}" for c in classes]].to_numpy(), rows.label.to_numpy()
        assert list(drawn.n) == list(range(1, len(rows) + 1))
        for n in (1, 5, 17, 100, len(rows)):  # precision of the n images ranked highest for each class, averaged
            direct = np.mean(
                [(labels[np.argsort(-scores[:, c], kind="stable")[:n]] == c).mean() for c in range(len(classes))]
            )
            assert drawn.set_index("n")["map"][n] == pytest.approx(direct)
        assert drawn.set_index("n")["map"][5] == pytest.approx(trials.map_at_5[trial_id])
        assert drawn.set_index("n")["map"][100] == pytest.approx(trials.map_at_100[trial_id])


def test_partial_results_show_missing_and_failed_trials(partial_folder, tmp_path):
    assert report.main([str(partial_folder), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    table = csv(out, "table_5.7_tiny").set_index("model")
    assert list(table.index) == ["lenet5", "resnet_18", "mobilenet_small"]  # the plan, not the thesis's 22
    assert table.status.to_dict() == {"lenet5": "partial", "resnet_18": "failed", "mobilenet_small": "ok"}
    assert (table.seeds_ok.lenet5, table.seeds_missing.lenet5) == (2, 1)
    assert (table.seeds_failed.resnet_18, table.seeds_missing.resnet_18) == (1, 1)
    assert table.thesis_accuracy.resnet_18 == 0.713 and pd.isna(table.accuracy.resnet_18)
    trials = csv(out, "table_a.1_trials").set_index("trial_id")
    assert trials.status.to_dict() == {
        "lenet5-tiny-seed0": "ok",
        "lenet5-tiny-seed1": "ok",
        "lenet5-tiny-seed2": "missing",
        "resnet_18-tiny-seed0": "missing",
        "resnet_18-tiny-seed1": "failed",
        "mobilenet_small-tiny-seed0": "ok",
    }
    markdown = (out / "report.md").read_text()
    assert "3 finished, 1 failed, 2 missing (planned in plan.parquet)" in markdown
    assert (
        "| lenet5 | partial: 2 ok, 1 missing |" in markdown
        and "| resnet_18 | **FAILED** (1 failed, 1 missing) |" in markdown
    )
    assert "RuntimeError: CUDA out of memory" in markdown and "| lenet5-tiny-seed2 | **MISSING** |" in markdown
    assert not (out / "figures" / "training_size_resnet.png").exists()  # nothing finished to draw


def test_filters_focus_the_report_and_refuse_unknown_names(run_folder, tmp_path, capsys):
    picked, thesis = report.select(
        report.read_results(run_folder), THESIS, models=["MobileNetV3"], tiers=["tiny", "large"]
    )
    assert set(picked.trials.model) == {"mobilenet_small"} and set(picked.predictions.trial_id) == {
        "mobilenet_small-tiny-seed0"
    }
    trials = report.trial_status(picked, thesis, tiers=["tiny", "large"])
    configs = report.configurations(trials)
    assert set(configs.model) == {"mobilenet_small", "mobilenet_large"}
    assert set(configs[configs.tier == "large"].status) == {"missing"}  # asked-for tiers without trials are listed
    assert len(configs) == 2 * 2 + 2  # two tiers from scratch, and the tiny pretrained pair
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "draft.txt").write_text("keep me")
    for argv, word in (
        (["--models", "resnet_19"], "resnet_18"),
        (["--tiers", "huge"], "medium"),
        (["--out", str(tmp_path / "notes")], "not a raybench report folder"),
    ):
        with pytest.raises(SystemExit) as exit_:
            report.main([str(run_folder), "--out", str(tmp_path / "x"), *argv])  # the last --out wins
        assert exit_.value.code == 2 and word in capsys.readouterr().err
    assert (tmp_path / "notes" / "draft.txt").read_text() == "keep me" and not (tmp_path / "x").exists()


def test_pretrained_change_is_a_proportion_beside_the_thesis(run_folder):
    loaded = report.read_results(run_folder)
    trials = loaded.trials
    fake = trials[trials.trial_id == "mobilenet_small-tiny-seed0"].assign(
        trial_id="mobilenet_small-tiny-pretrained-seed0",
        pretrained=True,
        test_accuracy=0.5,
        trainable_parameters=599048,
    )
    loaded = report.Results(
        loaded.name,
        pd.concat([trials, fake], ignore_index=True),
        loaded.epochs,
        loaded.predictions,
        None,
        loaded.classes,
    )
    comparison = report.compare_with_thesis(report.configurations(report.trial_status(loaded, THESIS)), THESIS)
    change = report.change_table(report.pretrained_change(comparison, THESIS), tier="tiny").data.set_index("model")
    scratch = trials.set_index("trial_id").test_accuracy["mobilenet_small-tiny-seed0"]
    assert change.accuracy_change.mobilenet_small == pytest.approx((0.5 - scratch) / scratch)
    assert change.thesis_accuracy_change.mobilenet_small == pytest.approx((0.461 - 0.174) / 0.174)
    assert change.thesis_accuracy_change.resnet_18 == pytest.approx(
        (0.783 - 0.713) / 0.713
    )  # thesis only: still listed
    table = report.tier_table(comparison, tier="tiny", pretrained=True)
    row = table.data.set_index("model").loc["mobilenet_small"]
    assert row.parameters == row.thesis_parameters == 599048 and table.title.startswith("Table 5.15")


def test_statistics():
    assert report.wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert report.wilson_interval(1.0, 120)[1] == 1.0 and report.wilson_interval(0.0, 120)[0] == 0.0
    # two-sided 95% t quantiles: the table, and the expansion beyond 30 degrees of freedom
    for df, t in ((1, 12.7062), (30, 2.0423), (31, 2.0395), (60, 2.0003), (120, 1.9799)):
        assert report.t_quantile(df) == pytest.approx(t, abs=2e-4)
    assert report.mean_interval([0.5])[0] == 0.5 and math.isnan(report.mean_interval([0.5])[1])


def test_architectures_cover_the_registry_and_the_thesis_data():
    assert sorted(ARCHITECTURE_OF) == sorted(catalog.MODEL_NAMES)
    assert len(THESIS.results) == 99 and set(THESIS.results.model) <= set(catalog.MODEL_NAMES)
    assert set(THESIS.maps.model) <= set(catalog.MODEL_NAMES) and set(THESIS.results.tier) == set(catalog.TIER_SPLITS)
