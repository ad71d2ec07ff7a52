"""The report on a real results folder: three short trials of the one-trial runner on the embedded images."""

import dataclasses
import math
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, synthetic_results
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

from raybench import catalog, data, grid, report, results, train
from raybench.report import figures as report_figures
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
def written(run_folder, decoded_cache):
    """The report the CLI writes for the plan-less folder, with the image cache its trials read."""
    assert report.main([str(run_folder), "--cache", str(decoded_cache)]) == 0
    return run_folder / "report"


@pytest.fixture(scope="session")
def written_all(run_folder, tmp_path_factory):
    """The report of the plan-less folder with --all-configurations: every thesis configuration."""
    out = tmp_path_factory.mktemp("all") / "report"
    assert report.main([str(run_folder), "--all-configurations", "--out", str(out)]) == 0
    return out


def csv(folder, key):
    return pd.read_csv(folder / "tables" / f"{key}.csv")


def test_every_table_and_figure_is_written_and_linked(written, run_folder):
    # whether the short trials collapsed is theirs to say: the unstable section's table and figures follow it
    ran = pd.read_parquet(run_folder / "trials.parquet")
    unstable = bool(ran.collapsed.any() or (ran.status == "diverged").any())
    tables = {p.stem for p in (written / "tables").glob("table_*.csv")}
    assert tables == {  # the configurations that ran (--all-configurations adds the thesis's others)
        "table_leaderboard",
        "table_5.7_tiny",
        "table_5.8_tiny",
        "table_5.9_lenet-5",
        "table_5.11_mobilenetv3",
        "table_a.1_trials",
        "table_4.1_tiers",
    } | ({"table_unstable_trials"} if unstable else set())
    figures = {p.stem for p in (written / "figures").glob("*.png")}
    # no learning-rate figure (it stays at 0.1 in 3 epochs), no figure against the training-set size (one tier)
    assert figures == {
        "heatmap_accuracy",
        "accuracy_vs_thesis",
        "speed_vs_thesis",
        "val_loss_tiny",
        "confusion_tiny",
        "map_curve_tiny",
        "figure_4.1_class_distribution",
        "figure_4.2_original",
        "figure_4.3_preprocessed",
        "figure_5.9_identical_accuracy",  # mobilenet_small is one of the thesis's three tiny configurations at 0.174
        "val_accuracy_lenet-5",
        "val_accuracy_mobilenetv3",
        "loss_lenet-5",
        "loss_mobilenetv3",
    } | ({"confusion_unstable", "val_loss_unstable"} if unstable else set())
    for path in (written / "figures").glob("*.png"):
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 200
    markdown = (written / "report.md").read_text()
    links = re.findall(r"\]\(((?:figures|tables)/[^)]+)\)", markdown)
    assert len(links) >= len(tables) + len(figures)
    assert all((written / link).is_file() for link in links)
    page = (written / "report.html").read_text()
    conclusions = (written / "tables" / "conclusions.csv").is_file()  # claims 6 and 6b read any trials
    assert page.count("<table>") == len(tables) + conclusions and page.count("<img ") == len(figures)
    for number in ("5.7", "5.8", "5.9", "5.11"):
        assert f"Table {number}:" in markdown


def test_tier_table_lists_every_thesis_configuration_with_its_published_numbers(written_all, run_folder):
    written = written_all
    table = csv(written, "table_5.7_tiny")
    assert list(table.model) == list(catalog.MODEL_NAMES)  # --all-configurations: all 22 of the thesis, missing marked
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
    low, high = report.wilson_interval(0.174, ours.n_test["mobilenet_small-tiny-seed0"])  # our test-set size
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
    lenet = csv(written, "table_5.9_lenet-5").set_index("tier").loc["tiny"]  # table 5.9: a row per tier
    assert lenet.accuracy == pytest.approx(accuracies.mean()) and lenet.thesis_accuracy == 0.313
    maps = csv(written, "table_5.8_tiny").set_index("architecture")
    assert maps.loc["LeNet-5", "model"] == "lenet5" and maps.loc["LeNet-5", "thesis_map_at_5"] == 0.15
    assert "ResNet" not in maps.index  # the thesis's best ResNet did not run here: left out unless asked
    assert "(2 seeds)" in (written / "report.md").read_text()


def thesis_map(logits: np.ndarray, labels: np.ndarray, n: int) -> float:
    """§5.1.1 written out: per class, the images predicted as it, by their logit for it; hits in the first n / n."""
    aps = []
    for c in range(logits.shape[1]):
        mine = np.flatnonzero(logits.argmax(1) == c)
        ranked = mine[np.argsort(-logits[mine, c], kind="stable")][:n]
        aps.append((labels[ranked] == c).sum() / n)
    return float(np.mean(aps))


def test_logits_are_stored_and_mAP_and_its_curve_follow_the_thesis(written, run_folder):
    predictions = pd.read_parquet(run_folder / "predictions.parquet")
    classes = results.class_names(run_folder / "predictions.parquet")
    curves = csv(written, "map_curve_tiny")
    trials = pd.read_parquet(run_folder / "trials.parquet").set_index("trial_id")
    assert set(curves.trial_id) == {"lenet5-tiny-seed0", "lenet5-tiny-seed1", "mobilenet_small-tiny-seed0"}
    assert set(curves.ranked_by) == {"logits"}
    for trial_id, drawn in curves.groupby("trial_id"):
        rows = predictions[predictions.trial_id == trial_id]
        logits = rows[[f"logit_{c}" for c in classes]].to_numpy(dtype=np.float64)
        scores, labels = rows[[f"score_{c}" for c in classes]].to_numpy(), rows.label.to_numpy()
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        assert np.allclose(scores, softmax / softmax.sum(1, keepdims=True), atol=1e-6)  # the scores are the logits'
        assert (rows.predicted == logits.argmax(1)).all()
        assert trials.classes_predicted[trial_id] == len(set(rows.predicted))
        assert trials.collapsed[trial_id] == (trials.classes_predicted[trial_id] <= 2)
        assert list(drawn.n) == list(range(1, len(rows) + 1))
        for n in (1, 5, 17, 100, len(rows)):
            assert drawn.set_index("n")["map"][n] == pytest.approx(thesis_map(logits, labels, n))
        assert trials.map_at_5[trial_id] == pytest.approx(thesis_map(logits, labels, 5))
        assert trials.map_at_100[trial_id] == pytest.approx(thesis_map(logits, labels, 100))


def test_results_without_logits_get_the_thesis_mAP_from_their_scores(run_folder, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(run_folder, old, ignore=shutil.ignore_patterns("report", "parts"))
    predictions = pd.read_parquet(old / "predictions.parquet")
    predictions.drop(columns=[c for c in predictions.columns if c.startswith("logit_")]).to_parquet(
        old / "predictions.parquet"
    )
    trials = pd.read_parquet(old / "trials.parquet")
    trials.drop(columns=["classes_predicted", "collapsed"]).assign(map_at_5=9.0).to_parquet(old / "trials.parquet")
    loaded = report.read_results(old)
    assert loaded.trials.set_index("trial_id").classes_predicted.equals(
        trials.set_index("trial_id").classes_predicted.astype("Int64")
    )  # counted from the confusion matrices
    remapped, redone = report.maps_without_logits(loaded.trials, loaded.predictions, loaded.classes)
    assert sorted(redone) == sorted(trials.trial_id)
    classes = loaded.classes
    for trial_id, rows in loaded.predictions.groupby("trial_id"):
        scores = rows[[f"score_{c}" for c in classes]].to_numpy(dtype=np.float64)
        expected = thesis_map(scores, rows.label.to_numpy(), 5)
        assert remapped.set_index("trial_id").map_at_5[trial_id] == pytest.approx(expected)
    built = report.build_report(loaded, THESIS)
    assert "stored no logits" in render(built).split("## Summary")[0]


def render(built) -> str:
    return report.render_markdown(built)


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
    trials = report.trial_status(picked, thesis, all_configurations=True)
    configs = report.configurations(trials)
    assert set(configs.model) == {"mobilenet_small", "mobilenet_large"}
    assert set(configs[configs.tier == "large"].status) == {"missing"}  # the chosen thesis configurations, listed
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


def test_table_5_16_gives_ratios_pretrained_over_scratch_with_parameters(run_folder):
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
    status = report.trial_status(loaded, THESIS, all_configurations=True)
    comparison = report.compare_with_thesis(report.configurations(status), THESIS)
    table = report.change_table(report.pretrained_ratios(comparison, THESIS), tier="tiny")
    ratios = table.data.set_index("model")
    scratch = trials.set_index("trial_id").test_accuracy["mobilenet_small-tiny-seed0"]
    assert ratios.accuracy_ratio.mobilenet_small == pytest.approx(0.5 / scratch)
    assert ratios.thesis_accuracy_ratio.mobilenet_small == pytest.approx(0.461 / 0.174)
    assert ratios.parameters_ratio.mobilenet_small == pytest.approx(599048 / 1526056)
    assert ratios.thesis_parameters_ratio.mobilenet_small == pytest.approx(599048 / 1526056)
    assert ratios.thesis_epochs_ratio.mobilenet_small == pytest.approx(70 / 31)
    assert ratios.thesis_accuracy_ratio.resnet_18 == pytest.approx(0.783 / 0.713)  # thesis only: still listed
    assert table.title.startswith("Table 5.16") and table.headers[1] == "Parameters"
    row = dict(zip(table.headers, table.rows[list(ratios.index).index("mobilenet_small")], strict=False))
    assert row["Parameters"] == "×0.39" and row["Accuracy"] == f"×{0.5 / scratch:.2f}"
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


def test_architecture_tables_are_numbered_and_laid_out_as_the_thesis(written_all, run_folder):
    written = written_all
    markdown = (written / "report.md").read_text()
    for number, name in (("5.12", "ViT"), ("5.13", "MLP-Mixer"), ("5.14", "ConvNeXt")):
        assert f"**Table {number}: {name} in every tier (from scratch)**" in markdown
    assert markdown.index("### ViT") < markdown.index("### MLP-Mixer") < markdown.index("### ConvNeXt")
    table = csv(written, "table_5.11_mobilenetv3").set_index("model")
    row = table[table.tier == "tiny"].loc["mobilenet_small"]  # and its three other tiers, missing
    ours = pd.read_parquet(run_folder / "trials.parquet").set_index("trial_id").loc["mobilenet_small-tiny-seed0"]
    assert (row.tier, row.parameters, row.thesis_parameters, row.batch_size, row.thesis_batch_size) == (
        "tiny",
        1526056,
        1526056,
        64,
        64,
    )
    assert (row.epochs, row.thesis_epochs, row.thesis_train_seconds, row.thesis_seconds_per_epoch) == (
        ours.epochs,
        31,
        18.974,
        0.612,
    )
    assert row.train_seconds == pytest.approx(ours.train_seconds) and row.accuracy == pytest.approx(ours.test_accuracy)
    assert set(table.loc["mobilenet_large"].status) == {"missing"} and len(table) == 8
    assert "| mobilenet_small | tiny | " in markdown


def test_the_mAP_tables_show_each_of_the_thesis_s_tied_best_configurations():
    nothing = results.TRIALS_SCHEMA.empty_table().to_pandas()
    empty = report.Results("none", nothing, pd.DataFrame(), pd.DataFrame(), None, catalog.CLASSES)
    comparison = report.compare_with_thesis(
        report.configurations(report.trial_status(empty, THESIS, all_configurations=True)), THESIS
    )
    table = report.map_table(comparison, THESIS, tier="tiny")
    data = table.data
    vit = data[data.architecture == "ViT"]
    assert list(vit.model) == ["vit_b_32", "vit_l_16", "vit_l_32"]  # tied at 0.591 accuracy, 0.085 mAP@100
    assert list(vit.thesis_map_at_5) == [0.625, 0.4, 0.6] and set(vit.thesis_accuracy) == {0.591}
    assert list(data[data.architecture == "ConvNeXt"].model) == ["convnext_tiny", "convnext_large"]
    assert list(data[data.architecture == "MobileNetV3"].model) == ["mobilenet_small", "mobilenet_large"]
    assert data.thesis_best.all() and not data.our_best.any()
    shown = [row[1] for row in table.rows]
    assert shown.count("vit_l_16") == 1 and len(table.rows) == len(
        THESIS.maps.query("tier == 'tiny' and not pretrained")
    )


def rows_of(folder, name: str) -> list[dict]:
    return pq.read_table(folder / f"{name}.parquet").to_pylist()


@pytest.fixture(scope="session")
def unstable_folder(run_folder, tmp_path_factory):
    """The results plus a collapsed trial (every test image predicted as neutrophil) and a diverged one."""
    out = tmp_path_factory.mktemp("unstable") / "run"
    shutil.copytree(run_folder, out, ignore=shutil.ignore_patterns("report"))
    done = next(t for t in rows_of(run_folder, "trials") if t["trial_id"] == "lenet5-tiny-seed0")
    predictions = pd.read_parquet(run_folder / "predictions.parquet").query("trial_id == 'lenet5-tiny-seed0'")
    labels = predictions.label.to_numpy()
    logits = np.zeros((len(labels), len(catalog.CLASSES)), dtype=np.float32)
    logits[:, 6] = np.linspace(3, 1, len(labels))
    scores = torch.softmax(torch.from_numpy(logits), 1).numpy()
    matrix = np.zeros((8, 8), dtype=np.int64)
    np.add.at(matrix, (labels, 6), 1)
    collapsed = {
        **done,
        "trial_id": "lenet5-tiny-seed5",
        "seed": 5,
        "test_accuracy": float((labels == 6).mean()),
        "map_at_5": 0.0,
        "map_at_100": 0.0,
        "confusion_matrix": matrix.tolist(),
        "classes_predicted": 1,
        "collapsed": True,
    }
    diverged = {
        **collapsed,
        "trial_id": "lenet5-tiny-seed6",
        "seed": 6,
        "status": "diverged",
        "error": "the train loss is not finite (nan) in epoch 2",
    }
    epochs = [e for e in rows_of(run_folder, "epochs") if e["trial_id"] == "lenet5-tiny-seed0"]
    spiked = [
        {**e, "trial_id": "lenet5-tiny-seed6", "val_loss": 5000.0 if e["epoch"] == 1 else e["val_loss"]} for e in epochs
    ]
    images = predictions.image.tolist()
    rows = results.prediction_rows("lenet5-tiny-seed5", images, labels, scores, logits=logits)
    results.write_results(
        out,
        [
            results.TrialResult(collapsed, [{**e, "trial_id": "lenet5-tiny-seed5"} for e in epochs], rows),
            results.TrialResult(
                diverged, spiked, results.prediction_rows("lenet5-tiny-seed6", images, labels, scores, logits=logits)
            ),
        ],
    )
    return out


def test_collapsed_and_diverged_trials_are_flagged_counted_and_shown(unstable_folder, tmp_path):
    assert report.main([str(unstable_folder), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out"
    markdown = (out / "report.md").read_text()
    first_screen = markdown.split("## Tier ")[0]
    assert re.search(r"Unstable trials: [1-9] of 4 finished trials collapsed", first_screen)
    assert "lenet5-tiny-seed5" in first_screen and "1 diverged" in first_screen
    assert "Trials: 4 finished, 0 failed, 1 diverged," in first_screen
    unstable = csv(out, "table_unstable_trials").set_index("trial_id")
    assert {"lenet5-tiny-seed5", "lenet5-tiny-seed6"} <= set(unstable.index)
    assert unstable.status["lenet5-tiny-seed6"] == "diverged" and unstable.classes_predicted["lenet5-tiny-seed5"] == 1
    assert unstable.predicted_counts["lenet5-tiny-seed5"].startswith("neutrophil ")
    assert "| lenet5-tiny-seed6 | **DIVERGED** |" in markdown and "the train loss is not finite (nan)" in markdown
    tier = csv(out, "table_5.7_tiny").set_index("model")
    assert (tier.seeds_ok.lenet5, tier.seeds_diverged.lenet5, tier.status.lenet5) == (3, 1, "partial")
    assert tier.classes_predicted.lenet5 == 1 and tier.seeds_collapsed.lenet5 >= 1
    assert "partial: 3 ok, 1 diverged" in markdown and "**1: collapsed, " in markdown
    trials = csv(out, "table_a.1_trials").set_index("trial_id")
    assert bool(trials.collapsed["lenet5-tiny-seed5"]) and trials.status["lenet5-tiny-seed6"] == "diverged"
    # the diverged trial's first-epoch spike is cut off the linear axis, its value written
    spiked = csv(out, "val_loss_unstable")
    assert spiked.val_loss.max() == 5000.0
    assert (out / "figures" / "val_loss_unstable.png").is_file()


def test_a_first_epoch_spike_is_cut_off_a_linear_axis_and_written():
    epochs = pd.DataFrame(
        {
            "trial_id": ["a"] * 6 + ["b"] * 6,
            "epoch": list(range(1, 7)) * 2,
            "val_loss": [850.0, 2.1, 1.9, 1.7, 1.65, 1.6, 2.08, 2.0, 1.95, 1.9, 1.92, 1.88],
            "improved": [False, True, True, True, False, False] * 2,
        }
    )
    best = pd.DataFrame(
        {
            "trial_ids": [("a",), ("b",)],
            "architecture": ["ResNet", "LeNet-5"],
            "model": ["resnet_18", "lenet5"],
            "pretrained": [False, False],
            "seeds_ok": [1, 1],
        }
    )
    figure = report_figures.curve_figure(epochs, best, value="val_loss", title="t", ylabel="validation loss")
    ax = figure.axes[0]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "linear" and 1.5 < low < 1.6 and 2.1 < high < 2.3  # the curves use the whole height
    assert [t.get_text() for t in ax.texts] == ["850"]  # the spike, written on the top edge
    assert any(line.get_marker() == "^" for line in ax.lines)
    calm = epochs.assign(val_loss=epochs.val_loss.where(epochs.epoch > 1, 2.2))
    ax = report_figures.curve_figure(calm, best, value="val_loss", title="t", ylabel="validation loss").axes[0]
    assert ax.get_ylim()[1] > 2.2 and not ax.texts  # nothing to cut


def test_table_4_1_as_printed_stands_beside_the_sizes_used_and_says_why(written):
    markdown = (written / "report.md").read_text()
    assert "Table 4.1: the tiers, as the thesis prints them and as used" in markdown.split("## Method")[1]
    assert "| tiny | 400 | 200 / 80 / 120 | 198 / 76 / 115 | 198 / 76 / 115 |" in markdown
    assert "| medium | 8500 | 4250 / 1700 / 2550 | 4250 / 1698 / 2547 | – |" in markdown
    assert "all 33 of the thesis's 33 tiny-tier accuracies are multiples of 1/115" in markdown
    assert "only 5 of 1/120" in markdown
    data = csv(written, "table_4.1_tiers").set_index("tier")
    assert tuple(data.loc["tiny", ["table_4_1_test", "used_test"]]) == (120, 115)


def test_figures_4_1_and_4_3_show_the_classes_and_the_images_the_trials_read(written, run_folder, decoded_cache):
    markdown = (written / "report.md").read_text().split("## Method")[1]
    assert "Figure 4.1: images per class" in markdown and "Figure 4.3: the first training image" in markdown
    counts = csv(written, "figure_4.1_class_distribution")
    assert counts[counts.tier == "PBC dataset"].images.sum() == catalog.PBC_IMAGES
    tiny = counts[counts.tier == "tiny"].groupby("split").images.sum()
    assert dict(tiny) == {"train": 198, "val": 76, "test": 115}
    manifest = pd.read_parquet(run_folder / "manifest.parquet")
    images, block, _ = data.cached_images(manifest, split="train", image_size=32, cache_dir=decoded_cache)
    prepared = data.prepare(None, tiers=data.tiers_for("tiny"))  # as the one-trial runner prepared it
    x, y = data.load_split(prepared, "tiny", "train", image_size=32, cache_dir=decoded_cache)
    assert images is not None and np.array_equal(images, x) and list(block.label) == list(y)


def test_figure_4_3_without_the_cache_says_where_it_looked(run_folder, tmp_path):
    assert report.main([str(run_folder), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "empty")]) == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert (
        f"Figure 4.3 not drawn: no decoded cache of these training images at 32 px in {tmp_path / 'empty'}" in markdown
    )
    assert not (tmp_path / "out" / "figures" / "figure_4.3_preprocessed.png").exists()


def test_settings_that_differ_from_the_thesis_open_the_report(written):
    markdown = (written / "report.md").read_text()
    top = markdown.split("## Summary")[0]
    assert "**Not the thesis's setup**" in top
    for note in ("image_size 32 (thesis: 352)", "max_epochs 3 (thesis: 100)", "es_start 0 (thesis: 10)"):
        assert note in top


def test_the_contents_link_every_section_to_its_heading(written):
    page = (written / "report.html").read_text()
    nav = re.search(r"<nav class='contents'>(.*?)</nav>", page).group(1)
    targets = re.findall(r"href='#([^']+)'", nav)
    ids = re.findall(r"<h[23] id='([^']+)'>", page)
    assert targets and sorted(targets) == sorted(ids)  # every section and subsection, each once
    assert len(set(ids)) == len(ids) and page.index("<nav") < page.index("<h2")
    sections = re.findall(r"<h2 id='[^']+'>(.*?)</h2>", page)
    assert "Summary" in sections and "Method" in sections and len(re.findall(r"<li>", nav)) == len(sections)
    # report.md: GitHub's anchors (lower case, punctuation dropped, spaces to '-', repeats numbered)
    markdown = (written / "report.md").read_text()
    seen: dict[str, int] = {}
    anchors = []
    for text in re.findall(r"^#{2,3} (.+)$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower()).replace(" ", "-")
        anchors.append(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    links = re.findall(r"\]\(#([^)]+)\)", markdown.split("## ")[0])
    assert sorted(links) == sorted(anchors) == sorted(ids)


def expected_leaderboard(trials: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """The leaderboard computed directly: mean and 95% t-interval of the finished seeds, the best `top` per tier."""
    ok = trials[trials.status == "ok"]
    stats = ok.groupby(["tier", "pretrained", "model"]).test_accuracy.agg(["mean", "std", "count"]).reset_index()
    t95 = {2: 12.7062, 3: 4.3027, 4: 3.1824}
    half = [
        t95[n] * sd / math.sqrt(n) if n > 1 else math.nan for sd, n in zip(stats["std"], stats["count"], strict=True)
    ]
    stats = stats.assign(low=(stats["mean"] - half).clip(lower=0), high=(stats["mean"] + half).clip(upper=1))
    stats = stats.sort_values("mean", ascending=False, kind="stable")
    return stats.groupby(["tier", "pretrained"], sort=False).head(top)


def test_the_leaderboard_is_the_best_configurations_of_each_tier_beside_the_thesis(written, run_folder):
    board = csv(written, "table_leaderboard")
    expected = expected_leaderboard(pd.read_parquet(run_folder / "trials.parquet"))
    assert list(board.model) == list(expected.model) and list(board["rank"]) == [1, 2]
    assert np.allclose(board.accuracy, expected["mean"]) and list(board.seeds_ok) == list(expected["count"])
    assert np.allclose(board.accuracy_low, expected.low, equal_nan=True)
    assert np.allclose(board.accuracy_high, expected.high, equal_nan=True)
    published = THESIS.results.query("tier == 'tiny' and not pretrained").set_index("model").test_accuracy
    assert np.allclose(board.thesis_accuracy, published[board.model])
    assert list(board.thesis_rank) == [int(published.rank(ascending=False, method="min")[m]) for m in board.model]
    markdown = (written / "report.md").read_text()
    assert markdown.index("## Summary") < markdown.index("## Leaderboard") < markdown.index("## Tier tiny")
    lenet = expected.set_index("model").loc["lenet5"]
    assert f"| {lenet['mean']:.3f} [{lenet.low:.3f}, {lenet.high:.3f}] | 0.313 |" in markdown  # 2 seeds: an interval


def test_configurations_not_run_are_left_out_unless_asked(written, written_all):
    markdown = (written / "report.md").read_text()
    summary = markdown.split("## Summary")[1].split("## ")[0]
    assert (
        "Not in this run: 97 of the thesis's 99 configurations (none on tiers large, medium, small), left out of the "
        "tables and figures (--all-configurations lists them)." in summary
    )
    assert set(csv(written, "table_5.7_tiny").model) == {"lenet5", "mobilenet_small"}
    assert set(csv(written, "table_5.8_tiny").model) == {"lenet5", "mobilenet_small"}  # not the thesis's resnet_34
    assert len(csv(written, "table_a.1_trials")) == 3 and "MISSING" not in markdown and "thesis only" not in markdown
    assert not (written / "tables" / "table_5.15_tiny.csv").exists() and "### ResNet" not in markdown
    everything = (written_all / "report.md").read_text()
    assert "Not in this run: 97 of the thesis's 99 configurations (none on tiers large, medium, small), listed as " in (
        everything
    )
    assert len(csv(written_all, "table_5.7_tiny")) == 22 and len(csv(written_all, "table_5.15_tiny")) == 11
    assert "resnet_34" in set(csv(written_all, "table_5.8_tiny").model)
    trials = csv(written_all, "table_a.1_trials")
    assert len(trials) == 3 + 97 and (trials.status == "missing").sum() == 97 and trials.trial_id.isna().sum() == 97
    assert (written_all / "tables" / "table_5.10_resnet.csv").exists()


@pytest.mark.parametrize("steps", [False, True])
def test_a_learning_rate_that_never_changes_is_one_line_not_a_figure(tmp_path, steps):
    trials = [Trial("lenet5", "tiny"), Trial("resnet_18", "tiny")]
    folder = synthetic_results(tmp_path / "run", trials, n_test=16, lr_steps=steps)
    built = report.build_report(report.read_results(folder), THESIS)
    keys = {plot.key for plot in built.plots}
    assert ("learning_rate_tiny" in keys) is steps and "val_loss_tiny" in keys
    text = render(built)
    assert ("Learning rate, tier tiny, from scratch: 0.1 in every epoch" in text) is not steps


def label_boxes(figure):
    """The window extents of the labels written on a figure's first axes (after drawing it)."""
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw_without_rendering()
    texts = figure.axes[0].texts
    for text in texts:
        text.update_positions(renderer)
    return [(t.get_text(), Text.get_window_extent(t, renderer)) for t in texts]  # the words, without leader lines


def overlapping(boxes) -> list[tuple[str, str]]:
    return [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1 :] if x.overlaps(y)]


def test_the_values_of_cut_off_spikes_are_written_apart():
    # four trials spiking in their first epoch, two of them in the second too: eight values near one another
    spikes = {"a": (900.0, 400.0), "b": (700.0, 380.0), "c": (650.0, 2.1), "d": (500.0, 2.0)}
    rows = []
    for trial, (first, second) in spikes.items():
        for epoch, loss in enumerate([first, second, 1.9, 1.8, 1.7, 1.75, 1.7, 1.72, 1.69, 1.7], start=1):
            rows.append({"trial_id": trial, "epoch": epoch, "val_loss": loss, "improved": epoch in (1, 3, 4, 5)})
    best = pd.DataFrame(
        {
            "trial_ids": [(t,) for t in spikes],
            "architecture": ["ResNet", "LeNet-5", "ViT", "ConvNeXt"],
            "model": ["resnet_18", "lenet5", "vit_b_16", "convnext_tiny"],
            "pretrained": [False] * 4,
            "seeds_ok": [1] * 4,
        }
    )
    figure = report_figures.curve_figure(pd.DataFrame(rows), best, value="val_loss", title="t", ylabel="loss")
    boxes = label_boxes(figure)
    assert sorted(text for text, _ in boxes) == sorted(["900", "700", "650", "500", "400", "380"])
    assert not overlapping(boxes)


def scatter_comparison(rows: pd.DataFrame, *, shift: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A comparison for the accuracy scatter: the thesis's rows with our accuracy near theirs."""
    rng = np.random.default_rng(seed)
    ours = (rows.test_accuracy + shift + rng.normal(0, 0.05, len(rows))).clip(0.05, 1.0)
    low, high = zip(*(report.wilson_interval(p, 115) for p in rows.test_accuracy), strict=True)
    return rows.assign(
        architecture=rows.model.map(ARCHITECTURE_OF),
        seeds_ok=1,
        thesis_accuracy=rows.test_accuracy,
        accuracy=ours,
        accuracy_low=math.nan,
        accuracy_high=math.nan,
        accuracy_diff=ours - rows.test_accuracy,
        interval_n=115,
        inside_thesis_interval=(ours >= np.array(low)) & (ours <= np.array(high)),
    ).reset_index(drop=True)


def test_the_accuracy_scatter_labels_what_can_be_read_and_nothing_overlaps():
    comparison = scatter_comparison(THESIS.results)  # the thesis's 99 configurations
    figure = report_figures.accuracy_scatter(comparison)
    boxes = label_boxes(figure)
    assert 6 <= len(boxes) <= report_figures.SCATTER_LABELS and not overlapping(boxes)
    ax = figure.axes[0]
    frame = ax.get_window_extent()
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for _, b in boxes)
    points = ax.transData.transform(comparison[["thesis_accuracy", "accuracy"]].to_numpy())
    for text, box in boxes:  # a label covers no point but (at most) its own
        assert sum(box.contains(x, y) for x, y in points) <= 1, text
    drawn = {text for text, _ in boxes}
    ranked = report_figures.scatter_points(comparison)
    best = ranked[ranked.accuracy == ranked.groupby(["tier", "pretrained"]).accuracy.transform("max")]
    assert set(best.label) <= drawn  # the best of each tier first
    assert drawn <= set(ranked.head(report_figures.SCATTER_LABELS).label)
    few = scatter_comparison(THESIS.results.query("tier == 'tiny' and not pretrained").head(4), seed=1)
    assert len(label_boxes(report_figures.accuracy_scatter(few))) == 4  # a handful of points: each labelled


@pytest.mark.slow
def test_the_thesis_grid_s_report_reads_at_a_glance(tmp_path):
    """The report of the thesis grid's 99 trials (synthesised through the real writers), two seeds of the tiny tier."""
    trials = grid.load_grid(ROOT / "grids" / "thesis.py").trials
    tiny = [dataclasses.replace(t, seed=1) for t in trials if t.tier == "tiny" and not t.pretrained]
    folder = synthetic_results(tmp_path / "thesis", [*trials, *tiny], n_test=24)  # and a second seed on tiny
    out = tmp_path / "report"
    assert report.main([str(folder), "--out", str(out)]) == 0
    board = csv(out, "table_leaderboard")
    trials = pd.read_parquet(folder / "trials.parquet")
    expected = expected_leaderboard(trials)
    for (tier, pretrained), mine in board.groupby(["tier", "pretrained"], sort=False):
        theirs = expected[(expected.tier == tier) & (expected.pretrained == pretrained)]
        assert np.allclose(mine.accuracy, theirs["mean"])  # the top 3 accuracies (ties may swap models)
        assert np.allclose(mine.accuracy_low, theirs.low, equal_nan=True)
    stats = expected_leaderboard(trials, top=99).set_index(["tier", "pretrained", "model"])
    for r in board.itertuples():
        assert r.accuracy == pytest.approx(stats.loc[(r.tier, r.pretrained, r.model), "mean"])
    assert list(board.tier.unique()) == ["large", "medium", "small", "tiny"] and board.pretrained.sum() == 3
    assert board[(board.tier == "tiny") & ~board.pretrained].accuracy_low.notna().all()  # two seeds: an interval
    markdown = (out / "report.md").read_text()
    assert "Not in this run" not in markdown and "| **MISSING** |" not in markdown
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert {"learning_rate_large", "training_size_resnet", "epoch_time_mobilenetv3"} <= figures
    points = csv(out, "accuracy_vs_thesis")
    assert len(points) == 99 and list(points.priority) == list(range(1, 100))


def test_the_thesis_s_nearly_equal_mobilenet_lines_are_told_apart():
    published = THESIS.results
    rows = published[published.model.isin(["mobilenet_small", "mobilenet_large"]) & ~published.pretrained]
    comparison = scatter_comparison(rows).assign(n_train=lambda f: f.tier.map(lambda t: catalog.TIER_SPLITS[t][0]))
    ax = report_figures.size_figure(comparison, THESIS, "MobileNetV3").axes[0]
    theirs = [line for line in ax.lines if line.get_markerfacecolor() == "white" and len(line.get_xdata()) == 4]
    assert len(theirs) == 2  # the thesis's line of each model: on tiny both are 0.174
    small, large = theirs
    assert small.get_marker() != large.get_marker() and small._dash_pattern != large._dash_pattern
    assert not np.allclose(small.get_xdata(), large.get_xdata())  # side by side, not on top of each other
    assert np.allclose(sorted(small.get_ydata()), sorted(rows[rows.model == "mobilenet_small"].test_accuracy))
