"""How long a grid will take: the thesis's epochs mapped to a grid's stopping window, a measured cost per image,
the scheduler's concurrency, and the dry run that prints it."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from raybench import projection, run, spec

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "grids" / "quickstart.py")


def trial(model="resnet_18", tier="tiny", pretrained=False, **options):
    return spec.Trial(model, tier, pretrained=pretrained, config=spec.make_config(options))


def test_thesis_settings_give_the_thesis_epochs():
    assert projection.projected_epochs(trial()).expected == 44  # table 5.7: ResNet-18 on tiny, 44 epochs
    assert projection.projected_epochs(trial("convnext_tiny", "large")).expected == 100  # hit the limit
    assert projection.projected_epochs(trial("resnet_18", pretrained=True)).expected == 56


def test_a_shorter_stopping_window_scales_the_epochs_after_its_start_and_caps_them():
    quick = {"es_start": 2, "es_patience": 8, "max_epochs": 20}
    # 44 epochs = 10 + 34 after es_start; 34 x 8/20 = 13.6 after the new start of 2
    assert projection.projected_epochs(trial(**quick)) == projection.Epochs(16, 11, 20, "thesis")
    assert projection.projected_epochs(trial("lenet5", **quick)).expected == 20  # 10 + 56 -> 24, capped at 20
    short = projection.projected_epochs(trial("mobilenet_small", **{**quick, "es_patience": 1}))
    assert short.expected == short.low == 4  # never below the first epoch early stopping can end it


def test_a_configuration_the_thesis_did_not_train_takes_the_median_of_its_tier():
    epochs = projection.projected_epochs(trial("convmixer_256_8"))
    thesis = pd.read_csv(ROOT / "raybench" / "thesis" / "results.csv")
    tiny = thesis[(thesis.dataset == "tiny") & ~thesis.pretrained].epochs
    assert epochs.source == "tier median" and epochs.expected == round(tiny.median())


@pytest.mark.parametrize(
    "needs, slots, wall, most",
    [
        ([(1, 0)] * 4, projection.Slots(cpus=2), 20, 2),  # 2 CPUs: two at a time
        ([(1, 0)] * 4, projection.Slots(cpus=4, max_concurrent=1), 40, 1),
        ([(1, 0.5)] * 4, projection.Slots(cpus=8, gpus=1), 20, 2),  # half a GPU each
        ([(1, 0.25)] * 4, projection.Slots(cpus=8, gpus=1), 10, 4),
        ([(1, 1.0)] * 4, projection.Slots(cpus=8, gpus=2), 20, 2),
    ],
)
def test_trials_are_laid_out_on_the_schedulers_slots(needs, slots, wall, most):
    assert projection.schedule([10.0] * 4, needs, slots) == (wall, most)


def test_a_long_trial_and_short_ones_share_the_slots_in_grid_order():
    # 30 s on one CPU while 10 + 10 + 10 run on the other: 30 s in all
    assert projection.schedule([30, 10, 10, 10], [(1, 0)] * 4, projection.Slots(cpus=2)) == (30, 2)


def test_the_cost_is_measured_once_per_device_kind_and_kept(tmp_path):
    table = projection.CostTable(tmp_path / "costs.json")
    t = trial("resnet_18", image_size=32, batch_size=8)
    cost, fresh = table.cost(t, torch.device("cpu"), threads=1)
    assert fresh and cost.train_s > 0 and cost.eval_s > 0 and cost.build_s > 0
    assert cost.train_s > cost.eval_s  # a training image also goes backward
    again, fresh = projection.CostTable(tmp_path / "costs.json").cost(t, torch.device("cpu"), threads=1)
    assert not fresh and again == cost
    kinds = json.loads((tmp_path / "costs.json").read_text())
    assert list(kinds) == [projection.device_kind(torch.device("cpu"), threads=1)]
    other, fresh = table.cost(trial("resnet_18", image_size=128, batch_size=8), torch.device("cpu"), threads=1)
    assert fresh and other.train_s > cost.train_s  # 16 times the pixels


def test_configurations_past_the_timing_budget_are_scaled_by_flops(tmp_path):
    timed, untimed = trial("lenet5", image_size=64), trial("resnet_18", image_size=64)
    costs = {timed.trial_id: projection.Cost(train_s=0.01, eval_s=0.004, build_s=0.1), untimed.trial_id: None}
    assert projection.fill_by_flops([timed, untimed], costs) == {untimed.trial_id}
    (lenet_train, lenet_eval), (resnet_train, resnet_eval) = map(projection.training_flops, (timed, untimed))
    assert costs[untimed.trial_id].train_s == pytest.approx(0.01 * resnet_train / lenet_train)
    assert costs[untimed.trial_id].eval_s == pytest.approx(0.004 * resnet_eval / lenet_eval)
    assert resnet_train == pytest.approx(3 * resnet_eval)  # forward and backward
    table = projection.CostTable(tmp_path / "costs.json")
    table.spent = 61.0
    assert table.cost(untimed, torch.device("cpu"), threads=1, budget_s=60.0) == (None, False)


def test_the_dry_run_says_how_long_first_and_keeps_each_trial_to_a_short_row(tmp_path, capsys):
    assert run.main([QUICKSTART, "--dry-run", "--results", str(tmp_path), "--cache", str(tmp_path / "c")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines.pop(0).startswith("timing 4 configuration(s)")  # a fresh cost table: each timed once
    assert lines[0].startswith("quickstart: 4 trials, 4 models on tier(s) tiny")
    assert lines[1].startswith("projected time on cpu") and "up to 2 trial(s) at once" in lines[1]
    options = [line for line in lines if "options that differ from the thesis" in line]
    assert len(options) == 1 and "image_size=64" in options[0] and "max_epochs=20" in options[0]
    rows = [line for line in lines if line.startswith(("lenet5-", "resnet_18-", "mobilenet_small-", "mlpmixer_s32-"))]
    assert len(rows) == 4 and all(len(line) < 120 for line in rows)
    assert lines.index(options[0]) < lines.index(rows[0]) < next(i for i, x in enumerate(lines) if "PBC data" in x)
    assert not any('{"augment"' in line for line in lines)  # the options' JSON stays in the plan file
    plan = pd.read_parquet(tmp_path / "quickstart" / "plan.dry-run.parquet")
    assert (plan.projected_seconds > 0).all() and (plan.projected_epochs <= 20).all()
    assert "options" in plan


def test_the_embedded_samples_large_tier_is_one_warning(tmp_path, capsys):
    grid = tmp_path / "two.py"
    options = {"image_size": 32, "max_epochs": 2, "es_start": 0, "es_patience": 1}
    grid.write_text(
        f"GRID = {{'options': {options!r}, 'sweeps': [{{'models': ['lenet5'], 'tiers': ['large', 'tiny']}}]}}\n"
    )
    assert run.main([str(grid), "--dry-run", "--results", str(tmp_path), "--cache", str(tmp_path / "c")]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and re.search(r"tier large is the same \d+ images as tiny", warnings[0])


def test_a_data_parallel_trial_takes_its_workers_share_of_the_images_after_its_group_starts(tmp_path):
    one = trial("lenet5", image_size=32, batch_size=6)
    wide = spec.Trial("lenet5", "tiny", config=spec.make_config({"image_size": 32, "batch_size": 6, "workers": 3}),
                      variant="dp3")  # fmt: skip
    table = projection.CostTable(tmp_path / "costs.json")
    cpu = torch.device("cpu")
    cost = projection.Cost(train_s=0.01, eval_s=0.004, build_s=0.5)
    kind, key = projection.device_kind(cpu, threads=1), projection.cost_key(one, eval_batch_size=6)
    table.table = {kind: {key: {"train_s": cost.train_s, "eval_s": cost.eval_s, "build_s": cost.build_s}}}
    assert table.known(wide, cpu, threads=1)  # the same cost per image: each worker trains the same model
    plan = pd.DataFrame(
        [{**t.columns(), "parameters": 1, "cpu": float(t.config.workers), "gpu": 0.0} for t in (one, wide)]
    )
    sizes = {"tiny": (198, 76, 115)}
    got = projection.project([one, wide], plan, split_sizes=sizes, slots=projection.Slots(cpus=3), costs=table)
    seconds = got.trials.set_index("trial_id").seconds
    epochs = projection.projected_epochs(one).expected
    steps = 115 * 0.004 + epochs * (198 * 0.01 + 76 * 0.004)
    assert seconds[one.trial_id] == pytest.approx(0.5 + steps)
    assert seconds[wide.trial_id] == pytest.approx(0.5 + steps / 3 + projection.GROUP_START_S)
    assert got.at_once == 1  # 1 CPU and 3 CPUs do not fit 3 CPUs at once


def test_a_cost_timed_while_the_machine_was_busy_is_timed_again_once_it_is_not(tmp_path):
    t, cpu = trial("lenet5", image_size=32, batch_size=8), torch.device("cpu")
    _, fresh = projection.CostTable(tmp_path / "costs.json", load=lambda: 3.0).cost(t, cpu, threads=1)
    assert fresh and json.loads((tmp_path / "costs.json").read_text()).popitem()[1].popitem()[1]["busy"] == 3.0
    assert projection.CostTable(tmp_path / "costs.json", load=lambda: 2.5).known(t, cpu, threads=1)  # still busy
    quiet = projection.CostTable(tmp_path / "costs.json", load=lambda: 0.4)
    assert not quiet.known(t, cpu, threads=1)
    _, fresh = quiet.cost(t, cpu, threads=1)
    assert fresh and projection.CostTable(tmp_path / "costs.json", load=lambda: 0.4).known(t, cpu, threads=1)
