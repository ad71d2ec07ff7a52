"""The report's "Effects" (report/effects.py): effects computed from constructed trials, and (slow) a reduced
grids/future_quick.py through Ray, reported."""

import json
import math
import os
import runpy
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT

from raybench import catalog, results, spec
from raybench.report import Results, build_report, read_results, read_thesis, render_markdown
from raybench.report.effects import (
    PRETRAINING,
    describe_change,
    effect_summary,
    effect_table,
    effects,
    seed_stats,
    separation,
    split_baseline,
)
from raybench.report.statistics import mean_interval

# -------------------------------------------------------------------------------------------------- the grids


# ---------------------------------------------------------------------------------- effects, constructed trials

BASE = json.dumps(spec.dataclasses.asdict(spec.TrainConfig()), sort_keys=True)


def options(**changes) -> str:
    return json.dumps({**json.loads(BASE), **changes}, sort_keys=True)


def trial(model, tier, seed, accuracy, *, variant="", pretrained=False, n_train=198, status="ok", opts=BASE):
    label = f"-{variant}" if variant else ""
    return {
        "trial_id": f"{model}-{tier}{'-pretrained' if pretrained else ''}{label}-seed{seed}",
        "model": model,
        "tier": tier,
        "pretrained": pretrained,
        "seed": seed,
        "variant": variant,
        "init_from": "",
        "status": status,
        "test_accuracy": accuracy,
        "n_train": n_train,
        "options": opts,
    }


ADAMW = options(optimizer="adamw", lr=0.001)
TRIALS = pd.DataFrame(
    [
        *(trial("resnet_18", "tiny", s, a) for s, a in enumerate([0.70, 0.72, 0.74])),
        *(trial("resnet_18", "tiny", s, a, variant="adamw", opts=ADAMW) for s, a in enumerate([0.80, 0.81, 0.82])),
        *(trial("mobilenet_small", "tiny", s, a) for s, a in enumerate([0.17, 0.30, 0.20])),
        *(trial("mobilenet_small", "tiny", s, a, variant="adamw", opts=ADAMW) for s, a in enumerate([0.2, 0.3, 0.25])),
        trial("mobilenet_small", "tiny", 3, math.nan, variant="adamw", status="failed", opts=ADAMW),
        *(trial("resnet_18", "n600", s, a, n_train=298) for s, a in enumerate([0.8, 0.82, 0.84])),
        *(trial("resnet_18", "n600", s, a, variant="adamw", n_train=298, opts=ADAMW) for s, a in enumerate([0.6] * 3)),
        *(trial("resnet_18", "tiny", s, a, pretrained=True) for s, a in enumerate([0.78, 0.79, 0.80])),
        *(trial("xception", "tiny", s, a) for s, a in enumerate([0.45, 0.5, 0.55])),
        trial("convmixer_256_8", "n600", 0, 0.4, n_train=298),  # no thesis model ran at n600 ... but resnet_18 did
    ]
)


def test_seed_stats_are_the_mean_and_t_interval_of_the_finished_seeds():
    stats = seed_stats(TRIALS).set_index(["model", "tier", "pretrained", "variant"])
    row = stats.loc[("mobilenet_small", "tiny", False, "adamw")]
    assert row.seeds == 3  # the failed seed does not count
    assert (row.accuracy, row.accuracy_low, row.accuracy_high) == pytest.approx(mean_interval([0.2, 0.3, 0.25]))
    assert stats.loc[("resnet_18", "n600", False, "")].n_train == 298


def test_separation_needs_two_intervals_that_do_not_overlap():
    assert separation(0.8, 0.9, 0.6, 0.7) == "higher"
    assert separation(0.5, 0.6, 0.65, 0.7) == "lower"
    assert separation(0.5, 0.7, 0.6, 0.8) == "no"
    assert separation(0.5, 0.7, math.nan, math.nan) == ""


def test_describe_change_names_the_options_that_differ_from_the_baseline():
    stats = seed_stats(TRIALS)
    text = describe_change(stats[stats.variant == "adamw"], stats[stats.variant == ""])
    assert text == "lr=0.001 (baseline 0.1); optimizer=adamw (baseline sgd)"


def test_the_mask_sweeps_are_effects_that_say_what_the_mask_does():
    mask = [trial("resnet_18", "tiny", s, 0.6 + s / 100, variant=v, opts=options(input=i))
            for s in range(3) for v, i in (("mask", "grey3_mask"), ("masked", "grey3_masked"))]  # fmt: skip
    rows = effects(pd.concat([TRIALS, pd.DataFrame(mask)], ignore_index=True), order=["mask", "masked"])
    shown = rows[rows.effect.isin(["mask", "masked"])]
    assert list(shown.effect) == ["mask", "masked"] and (shown.seeds == 3).all() and shown.baseline_seeds.notna().all()
    assert list(shown.change) == [
        "input=grey3_mask (baseline grey3): the mask of the cell at the centre as one more channel",
        "input=grey3_masked (baseline grey3): the image multiplied by the mask of the cell at the centre",
    ]


def test_effects_pair_each_change_with_its_baseline():
    rows = effects(TRIALS)
    assert list(dict.fromkeys(zip(rows.kind, rows.effect, strict=True))) == [
        ("option", "adamw"),
        ("pretrained", PRETRAINING),
        ("architecture", "ConvMixer (architecture)"),  # the catalog's order
        ("architecture", "Xception (architecture)"),
    ]
    adamw = rows[rows.effect == "adamw"].set_index(["model", "tier"])
    assert list(adamw.index) == [("resnet_18", "n600"), ("resnet_18", "tiny"), ("mobilenet_small", "tiny")]
    assert adamw.loc[("resnet_18", "tiny"), "separated"] == "higher"
    assert adamw.loc[("resnet_18", "n600"), "separated"] == "lower"  # three equal seeds: an interval of width 0
    assert adamw.loc[("mobilenet_small", "tiny"), "separated"] == "no"
    assert adamw.loc[("resnet_18", "tiny"), "diff"] == pytest.approx(0.81 - 0.72)
    pretrained = rows[rows.kind == "pretrained"].iloc[0]
    assert (pretrained.model, pretrained.baseline_accuracy) == ("resnet_18", pytest.approx(0.72))
    xception = rows[rows.model == "xception"].iloc[0]
    assert (xception.baseline_model, xception.separated) == ("resnet_18", "lower")  # the tiny tier's best thesis model
    convmixer = rows[rows.model == "convmixer_256_8"].iloc[0]
    assert (convmixer.baseline_model, convmixer.separated) == ("resnet_18", "")  # one seed: no interval


def test_effect_summary_and_table():
    rows = effects(TRIALS)
    summary = effect_summary(rows).set_index("effect")
    assert summary.loc["adamw", ["compared", "higher", "lower", "overlapping"]].tolist() == [3, 1, 1, 1]
    table = effect_table(rows, "adamw")
    assert table.headers[2] == "Baseline" and table.rows[1][:2] == ["resnet_18", "tiny (198)"]
    assert table.rows[1][6] == "+0.090" and table.rows[1][7] == "**yes, higher**"
    assert effect_table(rows, "Xception (architecture)").rows[0][2].startswith("resnet_18: 0.720 [")


def test_a_trial_without_a_baseline_is_listed_but_not_compared():
    lone = pd.DataFrame([trial("lenet5", "tiny", 0, 0.5, variant="augment", opts=options(augment="flip"))])
    rows = effects(lone)
    assert len(rows) == 1 and math.isnan(rows.baseline_accuracy[0]) and rows.baseline_seeds[0] == 0
    assert "no baseline" in rows.change[0]
    assert effect_summary(rows).compared[0] == 0


def test_results_without_variants_have_no_effects_and_keep_every_trial_for_the_thesis():
    old = TRIALS[(TRIALS.variant == "") & TRIALS.model.isin(catalog.MODEL_NAMES)].drop(columns=["variant", "init_from"])
    assert effects(old[~old.pretrained]).empty
    results = Results("old", old, pd.DataFrame(columns=["trial_id"]), pd.DataFrame(columns=["trial_id"]), None, ())
    assert len(split_baseline(results).trials) == len(old)


def test_the_thesis_sections_read_the_baseline_and_effects_the_rest(tmp_path):
    rows = TRIALS.assign(image_size=64, precision="fp32", batch_size=16, max_epochs=8, epochs=5, tested_epoch=3)
    rows = rows.astype(object).where(rows.notna(), None)
    rows["confusion_matrix"] = [[[int(i == j) for j in range(8)] for i in range(8)]] * len(rows)
    results.write_results(tmp_path, [results.TrialResult(r, [], []) for r in rows.to_dict("records")])
    run = read_results(tmp_path)
    baseline = split_baseline(run).trials
    assert set(baseline.variant) == {""} and set(baseline.model) == {"resnet_18", "mobilenet_small"}
    report = build_report(run, read_thesis())
    text = render_markdown(report)
    assert "## Effects" in text and "### Effect of adamw" in text and "### Effect of ImageNet pretraining" in text
    tier_tiny = next(t for t in report.tables if t.key == "table_5.7_tiny")
    mobilenet = tier_tiny.data.set_index("model").loc["mobilenet_small"]
    assert mobilenet.seeds_ok == 3 and mobilenet.accuracy == pytest.approx(0.67 / 3)  # the baseline seeds only
    assert {"table_effects", "table_effect_adamw"} <= {t.key for t in report.tables}
    assert "effect_adamw" in {p.key for p in report.plots}


# ------------------------------------------------------------------------------------- through Ray, reported


@pytest.mark.slow
def test_a_reduced_quick_future_grid_runs_through_ray_and_reports_its_effects(tmp_path):
    """grids/future_quick.py cut to MobileNetV3-Small and a grid's own model, two seeds, two epochs, the baseline and
    AdamW, through Ray (whose trial processes must import the grid's own builder from its folder)."""
    (tmp_path / "mine.py").write_text(
        "from torch import nn\n\n\ndef build(*, num_classes, image_size):\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), "
        "nn.Linear(8, num_classes))\n"
    )
    quick = runpy.run_path(str(ROOT / "grids" / "future_quick.py"))["GRID"]
    adamw = next(s for s in quick["sweeps"] if s.get("label") == "adamw")
    reduced = {
        **quick,
        "name": "reduced",
        "seeds": [0, 1],
        "options": {**quick["options"], "max_epochs": 2, "es_start": 0},
        "sweeps": [
            {"models": ["mobilenet_small", "mine"], "tiers": ["tiny"], "save_weights": True},
            {**adamw, "models": ["mobilenet_small"]},
        ],
    }
    models_text = "{'mine': {'builder': 'mine:build', 'batch_size': 16, 'architecture': 'Mine'}}"
    (tmp_path / "reduced.py").write_text(f"MODELS = {models_text}\nGRID = {reduced!r}\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "raybench.run", str(tmp_path / "reduced.py"), "--num-cpus", "2"]
    command += ["--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "results" / "reduced"
    trials = pd.read_parquet(out / "trials.parquet").set_index("trial_id")
    expected = [("mobilenet_small", ""), ("mine", ""), ("mobilenet_small", "-adamw")]
    assert set(trials.index) == {f"{m}-tiny{v}-seed{s}" for m, v in expected for s in (0, 1)}
    assert trials.loc["mine-tiny-seed0", "architecture"] == "Mine"
    assert trials.loc["mobilenet_small-tiny-adamw-seed1", "variant"] == "adamw"
    assert (out / "weights" / "mine-tiny-seed1.npz").is_file()
    assert not (out / "weights" / "mobilenet_small-tiny-adamw-seed0.npz").exists()
    report = build_report(read_results(out), read_thesis())
    summary = next(t for t in report.tables if t.key == "table_effects").data.set_index("effect")
    assert summary.loc["adamw", "compared"] == 1 and summary.loc["Mine (architecture)", "compared"] == 1
    assert "optimizer=adamw (baseline sgd)" in summary.loc["adamw", "change"]
