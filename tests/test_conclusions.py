"""The thesis's conclusions, tested: verdicts on results built through the real writers; statistics against scipy."""

import math
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from raybench import results
from raybench.report import conclusions
from raybench.report.inputs import read_results
from raybench.report.statistics import mean_interval

N_IMAGES = 400
SEEDS = (0, 1, 2, 3, 4)


def trial_result(model: str, seed: int, accuracy: float) -> results.TrialResult:
    """A trial of `model` on tiny whose predictions are right on a seeded `accuracy` share of the test images."""
    rng = np.random.default_rng(zlib.crc32(f"{model}{seed}".encode()))
    labels = np.arange(N_IMAGES) % len(results.CLASSES)
    right = rng.random(N_IMAGES) < accuracy
    predicted = np.where(right, labels, (labels + 1) % len(results.CLASSES))
    trial_id = f"{model}-tiny-seed{seed}"
    trial = {
        "trial_id": trial_id, "model": model, "tier": "tiny", "pretrained": False, "seed": seed, "split_seed": 0,
        "variant": "", "status": "ok", "test_accuracy": float(right.mean()),
    }  # fmt: skip
    matrix = np.zeros((len(results.CLASSES),) * 2, dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    trial["confusion_matrix"] = matrix.tolist()
    trial |= {"n_train": 198, "n_val": 76, "n_test": N_IMAGES, "epochs": 3, "tested_epoch": 3, "batch_size": 64}
    trial |= {"image_size": 32, "max_epochs": 3, "train_seconds": 3.0, "seconds_per_epoch": 1.0}
    predictions = [
        {"trial_id": trial_id, "image": f"img{i}", "label": int(label), "class_name": results.CLASSES[label],
         "predicted": int(p)}
        for i, (label, p) in enumerate(zip(labels, predicted, strict=True))
    ]  # fmt: skip
    return results.TrialResult(trial=trial, epochs=[], predictions=predictions)


def verdict(tmp_path, accuracy_a: float, accuracy_b: float) -> str:
    written = [trial_result("resnet_34", s, accuracy_a) for s in SEEDS]
    written += [trial_result("resnet_152", s, accuracy_b) for s in SEEDS]
    results.write_results(tmp_path, written)
    ran = read_results(tmp_path)
    claim = conclusions.Claim("A", "test", "A beats B", (conclusions.Comparison("resnet_34", "resnet_152", "tiny"),))
    table = conclusions.evaluate_claims(ran.trials, ran.predictions, claims=(claim,))
    return conclusions.claim_verdicts(table).verdict.item()


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(0.9, 0.6, "supported"), (0.75, 0.75, "undecided at this run's size"), (0.6, 0.9, "contradicted")],
)
def test_verdict_follows_the_true_difference(tmp_path, a, b, expected):
    assert verdict(tmp_path, a, b) == expected


def test_a_claim_whose_configurations_were_not_run_is_not_run(tmp_path):
    results.write_results(tmp_path, [trial_result("resnet_34", s, 0.9) for s in SEEDS])
    ran = read_results(tmp_path)
    table = conclusions.evaluate_claims(ran.trials, ran.predictions)
    assert set(conclusions.claim_verdicts(table).verdict) == {"not run"}


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 12), (10, 10), (1, 30), (25, 7)])
def test_mcnemar_matches_scipy_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else stats.binomtest(b, b + c, 0.5).pvalue
    assert conclusions.mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_mean_interval_matches_scipy_t_interval():
    x = np.array([0.02, 0.05, -0.01, 0.04, 0.03])
    mean, low, high = mean_interval(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (mean, low, high) == pytest.approx((x.mean(), lo, hi), abs=1e-4)


def test_holm_matches_its_definition():
    assert conclusions.holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)


def test_seeds_to_decide_is_where_the_interval_first_excludes_zero():
    n = conclusions.seeds_to_decide([0.01, 0.03, -0.01])
    sd, d = np.std([0.01, 0.03, -0.01], ddof=1), 0.01
    assert stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < d <= stats.t.ppf(0.975, n - 2) * sd / math.sqrt(n - 1)


def test_the_report_has_the_section_and_writes_its_table(tmp_path):
    from raybench import report

    written = [trial_result(m, s, 0.8) for m in ("resnet_34", "resnet_152") for s in SEEDS]
    results.write_results(tmp_path, written)
    assert report.main([str(tmp_path)]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## The thesis's conclusions, tested" in markdown
    table = pd.read_csv(tmp_path / "report" / "tables" / "conclusions.csv")
    ran = table[table.seeds > 0]
    assert set(ran.better) == {"resnet_34"} and set(ran.worse) == {"resnet_152"} and (ran.seeds == 5).all()
    assert set(table.verdict[table.seeds == 0]) == {"not run"}


def test_a_claim_naming_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="resnet_999"):
        conclusions.Claim("x", "§0", "bad", (conclusions.Comparison("resnet_999", "resnet_18", "tiny"),))
