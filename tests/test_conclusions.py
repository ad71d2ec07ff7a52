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
from raybench.report.statistics import mean_interval, t_test

N_IMAGES = 400
SEEDS = (0, 1, 2, 3, 4)


def trial_result(
    model: str,
    seed: int,
    accuracy: float,
    *,
    pretrained: bool = False,
    tier: str = "tiny",
    seconds: float = 3.0,
    wrong=None,
    right_always=(),
) -> results.TrialResult:
    """A trial whose predictions are right on a seeded `accuracy` share of the test images (always right on the
    classes `right_always`); a wrong one is `wrong(label)` (default: the next class)."""
    rng = np.random.default_rng(zlib.crc32(f"{model}{pretrained}{tier}{seed}".encode()))
    labels = np.arange(N_IMAGES) % len(results.CLASSES)
    always = np.isin(labels, [results.CLASSES.index(c) for c in right_always])
    right = (rng.random(N_IMAGES) < accuracy) | always
    wrong = wrong or (lambda label: (label + 1) % len(results.CLASSES))
    predicted = np.where(right, labels, [wrong(int(label)) for label in labels])
    trial_id = f"{model}{'-pretrained' if pretrained else ''}-{tier}-seed{seed}"
    trial = {
        "trial_id": trial_id, "model": model, "tier": tier, "pretrained": pretrained, "seed": seed, "split_seed": 0,
        "variant": "", "status": "ok", "test_accuracy": float(right.mean()),
    }  # fmt: skip
    matrix = np.zeros((len(results.CLASSES),) * 2, dtype=int)
    np.add.at(matrix, (labels, predicted), 1)
    trial["confusion_matrix"] = matrix.tolist()
    trial |= {"n_train": 198, "n_val": 76, "n_test": N_IMAGES, "epochs": 3, "tested_epoch": 3, "batch_size": 64}
    trial |= {"image_size": 32, "max_epochs": 3, "train_seconds": seconds, "seconds_per_epoch": seconds / 3}
    predictions = [
        {"trial_id": trial_id, "image": f"img{i}", "label": int(label), "class_name": results.CLASSES[label],
         "predicted": int(p)}
        for i, (label, p) in enumerate(zip(labels, predicted, strict=True))
    ]  # fmt: skip
    return results.TrialResult(trial=trial, epochs=[], predictions=predictions)


def verdict_of(tmp_path, written, *tests) -> str:
    results.write_results(tmp_path, written)
    ran = read_results(tmp_path)
    claim = conclusions.Claim("A", "test", "a claim", tests)
    table = conclusions.evaluate_claims(ran.trials, ran.predictions, claims=(claim,), classes=ran.classes)
    return conclusions.claim_verdicts(table).verdict.item()


def verdict(tmp_path, accuracy_a: float, accuracy_b: float) -> str:
    written = [trial_result("resnet_34", s, accuracy_a) for s in SEEDS]
    written += [trial_result("resnet_152", s, accuracy_b) for s in SEEDS]
    return verdict_of(tmp_path, written, conclusions.Comparison("resnet_34", "resnet_152", "tiny"))


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
    verdicts = conclusions.claim_verdicts(table).set_index("claim").verdict
    assert set(verdicts.drop(["6", "6b"])) == {"not run"}  # every claim naming configurations
    assert verdicts["6"] != "not run"  # the most frequent confusion: any trials of the run test it


RATIO = 0.2  # the from-scratch accuracy beside which pre-training multiplies


@pytest.mark.parametrize(
    ("pretrained_accuracy", "test", "expected"),
    [
        (1.0, conclusions.Ratio("convnext_tiny", "tiny", at_least=4), "supported"),  # x5
        (0.6, conclusions.Ratio("convnext_tiny", "tiny", at_least=4), "contradicted"),  # x3
        (0.8, conclusions.Ratio("convnext_tiny", "tiny", at_least=4), "undecided at this run's size"),  # x4
        (0.4, conclusions.Ratio("convnext_tiny", "tiny", at_most=3), "supported"),  # x2
    ],
)
def test_a_ratio_claim_follows_the_true_ratio(tmp_path, pretrained_accuracy, test, expected):
    written = [trial_result("convnext_tiny", s, RATIO) for s in SEEDS]
    written += [trial_result("convnext_tiny", s, pretrained_accuracy, pretrained=True) for s in SEEDS]
    assert verdict_of(tmp_path, written, test) == expected


def test_pretrained_against_scratch_of_the_same_model(tmp_path):
    written = [trial_result("resnet_34", s, 0.6, pretrained=True) for s in SEEDS]
    written += [trial_result("resnet_34", s, 0.9) for s in SEEDS]
    worse = conclusions.Comparison("resnet_34", "resnet_34", "tiny", pretrained=False, worse_pretrained=True)
    assert verdict_of(tmp_path, written, worse) == "supported"


@pytest.mark.parametrize(("seconds", "expected"), [(2.0, "supported"), (3.0, "undecided"), (5.0, "contradicted")])
def test_a_faster_claim_follows_the_training_times(tmp_path, seconds, expected):
    noise = (0.1, -0.2, 0.15, -0.05, 0.0)  # the same machine's times vary
    written = [trial_result("resnet_152", s, 0.8, tier="large", seconds=seconds + noise[s]) for s in SEEDS]
    written += [trial_result("vit_b_16", s, 0.8, tier="large", seconds=3.0 + noise[::-1][s]) for s in SEEDS]
    faster = conclusions.FasterThan("resnet_152", "vit_b_16", "large")
    assert verdict_of(tmp_path, written, faster).startswith(expected)


def test_a_model_that_predicts_one_class_has_broken_down(tmp_path):
    one_class = [trial_result("mobilenet_small", s, 0.0, wrong=lambda label: 3) for s in SEEDS]  # all "ig"
    assert verdict_of(tmp_path, one_class, conclusions.OneClass("mobilenet_small", "tiny")) == "supported"
    healthy = [trial_result("mobilenet_small", s, 0.9) for s in SEEDS]
    assert verdict_of(tmp_path / "h", healthy, conclusions.OneClass("mobilenet_small", "tiny")) == "contradicted"


def test_the_most_frequent_confusion(tmp_path):
    ig, monocyte = results.CLASSES.index("ig"), results.CLASSES.index("monocyte")
    between = {ig: monocyte, monocyte: ig}  # ig and monocyte mistaken for each other, the rest right
    written = [trial_result("resnet_18", s, 0.0, wrong=lambda label: between.get(label, label)) for s in SEEDS]
    test = conclusions.TopConfusion(("ig", "monocyte", "neutrophil"))
    assert verdict_of(tmp_path, written, test) == "supported"
    elsewhere = [trial_result("resnet_18", s, 0.7) for s in SEEDS]  # errors spread to the next class
    assert verdict_of(tmp_path / "e", elsewhere, test) == "contradicted"


def test_a_class_that_holds_when_the_model_breaks_down(tmp_path):
    written = [trial_result("mobilenet_small", s, 0.2, right_always=("platelet",)) for s in SEEDS]
    written += [trial_result("resnet_18", s, 0.95) for s in SEEDS]  # not broken down: not counted
    assert verdict_of(tmp_path, written, conclusions.HoldsWhenBrokenDown("platelet")) == "supported"
    plain = [trial_result("mobilenet_small", s, 0.2) for s in SEEDS]
    assert verdict_of(tmp_path / "p", plain, conclusions.HoldsWhenBrokenDown("platelet")).startswith("undecided")


def test_a_larger_configuration_that_degrades_more(tmp_path):
    written = [trial_result("vit_l_16", s, 0.8, tier="small") for s in SEEDS]
    written += [trial_result("vit_l_16", s, 0.3) for s in SEEDS]
    written += [trial_result("vit_b_16", s, 0.8, tier="small") for s in SEEDS]
    written += [trial_result("vit_b_16", s, 0.7) for s in SEEDS]
    assert verdict_of(tmp_path, written, conclusions.Degradation("vit_l_16", "vit_b_16")) == "supported"


def test_the_thesis_column_is_the_same_statistic_from_its_numbers():
    assert conclusions.Ratio("convnext_large", "tiny", at_least=4).thesis_value() == pytest.approx(0.878 / 0.200)
    assert conclusions.Comparison("resnet_34", "resnet_152", "tiny").thesis_value() == pytest.approx(0.791 - 0.774)
    faster = conclusions.FasterThan("resnet_152", "vit_b_16", "large").thesis_value()
    assert faster == pytest.approx(5319.037 / 6663.277)


@pytest.mark.parametrize("x", [[0.02, 0.05, -0.01, 0.04, 0.03], [1.0, 2.0, 3.0], [3.9, 4.5, 4.1, 4.8, 4.2]])
def test_t_test_matches_scipy(x):
    assert t_test(x, 4.0 if x[0] > 3 else 0.0) == pytest.approx(
        stats.ttest_1samp(x, 4.0 if x[0] > 3 else 0.0).pvalue, rel=1e-9
    )


def test_claims_of_ones_own_from_a_file_and_from_the_runs_grid_file(tmp_path):
    from raybench import provenance, report

    written = [trial_result(m, s, a) for m, a in (("resnet_50", 0.9), ("resnet_101", 0.6)) for s in SEEDS]
    results.write_results(tmp_path / "run", written)
    mine = tmp_path / "mine.py"
    mine.write_text(
        "from raybench.report.conclusions import Claim, Comparison\n"
        "BETTER = (Comparison('resnet_50', 'resnet_101', 'tiny'),)\n"
        "CLAIMS = [Claim('m1', 'my notes', 'ResNet-50 beats ResNet-101', BETTER)]\n"
    )
    assert report.main([str(tmp_path / "run"), "--claims", str(mine)]) == 0
    table = pd.read_csv(tmp_path / "run" / "report" / "tables" / "conclusions.csv")
    assert table.set_index("claim").loc["m1", "verdict"] == "supported"

    grid = tmp_path / "grid.py"  # a grid file declaring CLAIMS: the report of its run tests them unasked
    grid.write_text("GRID = {'name': 'g', 'sweeps': []}\n" + mine.read_text().replace("m1", "g1"))
    provenance.record(tmp_path / "run", provenance.describe(argv=["raybench", "run", str(grid)], grid_file=grid))
    assert report.main([str(tmp_path / "run")]) == 0
    table = pd.read_csv(tmp_path / "run" / "report" / "tables" / "conclusions.csv")
    assert table.set_index("claim").loc["g1", "verdict"] == "supported"


def test_a_claims_file_without_claims_is_one_line(tmp_path, capsys):
    from raybench import report

    results.write_results(tmp_path / "run", [trial_result("resnet_50", 0, 0.9)])
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "run"), "--claims", str(tmp_path / "none.py")])
    assert "declares no CLAIMS" in capsys.readouterr().err


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
    ran = table[(table.n > 0) & (table.kind == "comparison")]
    assert set(ran.better) == {"resnet_34"} and set(ran.worse) == {"resnet_152"} and (ran.n == 5).all()
    assert set(table.verdict[table.n == 0]) == {"not run"}


def test_a_claim_naming_an_unknown_model_is_refused():
    with pytest.raises(ValueError, match="claim x: unknown model 'resnet_999'"):
        conclusions.Claim("x", "§0", "bad", (conclusions.Comparison("resnet_999", "resnet_18", "tiny"),))
