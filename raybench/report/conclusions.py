"""The thesis's conclusions, tested: each claim as data, each test on both levels of noise where there are two.

A claim is a tuple of tests, each one row of the table:

- `Comparison`: configuration A is more accurate than B on one tier. Across seeds, the mean of the seed-wise
  differences with its 95% t-interval (seeds share test images, so the differences are paired); on the same test
  images, an exact McNemar test on the discordant predictions summed over seeds (the p-value).
- the other tests measure one value per unit (a seed, or a trial) and test its mean against the claim's bound
  with a one-sample t-test and its 95% t-interval: `Ratio` (ImageNet pre-training multiplies accuracy by at
  least / at most x), `FasterThan` (training-time ratio below 1), `OneClass` (the model predicts mostly one
  class), `Degradation` (a larger configuration loses more accuracy as data shrinks), `TopConfusion` (the most
  frequent confusion is between given classes), `HoldsWhenBrokenDown` (a class stays accurate in trials that
  break down).

p-values are Holm-corrected over every test of the table. A test is decided when its corrected p < 0.05 and,
with two or more units, its interval excludes the bound; one seed decides only what its test images can (the
McNemar test of a comparison). Claims are data: a grid file or any Python file may declare `CLAIMS` (a list of
`Claim`) and `raybench report RESULTS --claims FILE` tests them beside the thesis's.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import runpy
from pathlib import Path

import numpy as np
import pandas as pd

from raybench import catalog
from raybench.report.statistics import mean_interval, t_quantile, t_test

ALPHA = 0.05
SCRATCH_RIVALS_TINY = (
    "resnet_18", "resnet_50", "resnet_101", "resnet_152", "mobilenet_small", "mobilenet_large",
    "convnext_tiny", "vit_b_16", "mlpmixer_s32", "lenet5",
)  # fmt: skip
PRETRAINED_RIVALS_TINY = ("convnext_tiny", "convnext_small", "convnext_base", "resnet_18", "resnet_152")


def _label(model: str, pretrained: bool) -> str:
    return f"{model} (ImageNet)" if pretrained else model


def _check_model(model: str) -> None:
    if model not in catalog.MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; valid: {', '.join(sorted(catalog.MODEL_NAMES))}")


def _check_tier(tier: str | None) -> None:
    if tier is not None and tier not in catalog.TIER_SPLITS:
        raise ValueError(f"unknown tier {tier!r}; valid: {', '.join(catalog.TIER_SPLITS)}")


MODEL_FIELDS = ("better", "worse", "model", "rival", "larger", "smaller")
TIER_FIELDS = ("tier", "from_tier", "to_tier")


def check_test(test) -> None:
    """Every model and tier a test names is one the catalog knows, and the test's own rules hold (`validate`)."""
    for field in dataclasses.fields(test):
        value = getattr(test, field.name)
        if field.name in MODEL_FIELDS:
            _check_model(value)
        elif field.name in TIER_FIELDS:
            _check_tier(value)
    if hasattr(test, "validate"):
        test.validate()


def _ok(trials: pd.DataFrame, model: str, tier: str, pretrained: bool) -> pd.DataFrame:
    """The finished baseline trials of one configuration, by (seed, split_seed)."""
    ok = trials[
        (trials.model == model) & (trials.tier == tier) & (trials.pretrained == pretrained) & (trials.status == "ok")
    ]
    if "variant" in ok:
        ok = ok[ok.variant.fillna("") == ""]
    return ok.set_index(["seed", "split_seed"])


def _thesis(model: str, tier: str, pretrained: bool, column: str = "accuracy") -> float:
    for row in catalog.published_results():
        if row["model"] == model and row["dataset"] == tier and row["pretrained"] == pretrained:
            return float(row[column])
    return math.nan


@dataclasses.dataclass(frozen=True)
class Comparison:
    """`better` is more accurate than `worse` on `tier` (from scratch unless `pretrained`; `worse_pretrained`
    defaults to `pretrained`), paired by seed and on the same test images."""

    better: str
    worse: str
    tier: str
    pretrained: bool = False
    worse_pretrained: bool | None = None

    kind = "comparison"
    unit = "seeds"
    null = 0.0
    direction = 1
    test = "paired t over seeds + exact McNemar on the same test images"

    @property
    def against_pretrained(self) -> bool:
        return self.pretrained if self.worse_pretrained is None else self.worse_pretrained

    def describe(self) -> str:
        return f"{_label(self.better, self.pretrained)} > {_label(self.worse, self.against_pretrained)}"

    def thesis_value(self) -> float:
        return _thesis(self.better, self.tier, self.pretrained) - _thesis(
            self.worse, self.tier, self.against_pretrained
        )

    def measure(self, trials: pd.DataFrame, predictions: pd.DataFrame, classes) -> dict:
        a = _ok(trials, self.better, self.tier, self.pretrained)
        b = _ok(trials, self.worse, self.tier, self.against_pretrained)
        keys = a.index.intersection(b.index)
        diffs = a.loc[keys, "test_accuracy"].astype(float) - b.loc[keys, "test_accuracy"].astype(float)
        only_a = only_b = 0
        for key in keys:
            pa = predictions[predictions.trial_id == a.loc[key, "trial_id"]].set_index("image")
            pb = predictions[predictions.trial_id == b.loc[key, "trial_id"]].set_index("image")
            shared = pa.index.intersection(pb.index)
            right_a = pa.loc[shared, "predicted"] == pa.loc[shared, "label"]
            right_b = pb.loc[shared, "predicted"] == pb.loc[shared, "label"]
            only_a += int((right_a & ~right_b).sum())
            only_b += int((right_b & ~right_a).sum())
        p = mcnemar_exact(only_a, only_b) if len(keys) else math.nan
        return {"values": list(diffs), "p": p, "b": only_a, "c": only_b, "better": self.better, "worse": self.worse}


@dataclasses.dataclass(frozen=True)
class Ratio:
    """ImageNet pre-training multiplies `model`'s accuracy on `tier` by at least `at_least` (or at most
    `at_most`): the seed-wise ratio of pretrained to from-scratch accuracy."""

    model: str
    tier: str
    at_least: float | None = None
    at_most: float | None = None

    kind = "ratio"
    unit = "seeds"
    test = "one-sample t over seeds of the pretrained / scratch accuracy ratio"

    def validate(self) -> None:
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError(f"Ratio({self.model!r}): give exactly one of at_least and at_most")

    @property
    def null(self) -> float:
        return self.at_least if self.at_least is not None else self.at_most

    @property
    def direction(self) -> int:
        return 1 if self.at_least is not None else -1

    def describe(self) -> str:
        return f"{self.model}: ImageNet / scratch accuracy {'>=' if self.direction > 0 else '<='} {self.null:g}"

    def thesis_value(self) -> float:
        return _thesis(self.model, self.tier, True) / _thesis(self.model, self.tier, False)

    def measure(self, trials, predictions, classes) -> dict:
        pre, scratch = _ok(trials, self.model, self.tier, True), _ok(trials, self.model, self.tier, False)
        keys = pre.index.intersection(scratch.index)
        ratios = pre.loc[keys, "test_accuracy"].astype(float) / scratch.loc[keys, "test_accuracy"].astype(float)
        return {"values": list(ratios.replace([np.inf, -np.inf], np.nan).dropna())}


@dataclasses.dataclass(frozen=True)
class FasterThan:
    """`model` trains in less time than `rival` on `tier` (the seed-wise ratio of their train_seconds, the same
    hardware in one run; trials sharing a device slow each other, so compare runs that shared alike)."""

    model: str
    rival: str
    tier: str

    kind = "time ratio"
    unit = "seeds"
    null = 1.0
    direction = -1
    test = "one-sample t over seeds of the training-time ratio"

    def describe(self) -> str:
        return f"{self.model} / {self.rival} training time < 1"

    def thesis_value(self) -> float:
        return _thesis(self.model, self.tier, False, "total_training_s") / _thesis(
            self.rival, self.tier, False, "total_training_s"
        )

    def measure(self, trials, predictions, classes) -> dict:
        a, b = _ok(trials, self.model, self.tier, False), _ok(trials, self.rival, self.tier, False)
        keys = a.index.intersection(b.index)
        ratios = a.loc[keys, "train_seconds"].astype(float) / b.loc[keys, "train_seconds"].astype(float)
        return {"values": list(ratios.dropna())}


@dataclasses.dataclass(frozen=True)
class OneClass:
    """`model` breaks down on `tier`: more than `share` of its test predictions fall in one class."""

    model: str
    tier: str
    share: float = 0.5

    kind = "one class"
    unit = "seeds"
    direction = 1
    test = "one-sample t over seeds of the share of predictions in the most-predicted class"

    @property
    def null(self) -> float:
        return self.share

    def describe(self) -> str:
        return f"{self.model}: most-predicted class > {self.share:.0%} of predictions"

    def thesis_value(self) -> float:
        return math.nan  # the thesis shows the confusion matrix, not the share

    def measure(self, trials, predictions, classes) -> dict:
        ids = _ok(trials, self.model, self.tier, False).trial_id
        shares = [
            float(p.predicted.value_counts(normalize=True).iloc[0])
            for p in (predictions[predictions.trial_id == i] for i in ids)
            if len(p)
        ]
        return {"values": shares}


@dataclasses.dataclass(frozen=True)
class Degradation:
    """`larger` loses more accuracy than `smaller` from `from_tier` to `to_tier` (both from scratch), seed by seed:
    (larger's loss) - (smaller's loss)."""

    larger: str
    smaller: str
    from_tier: str = "small"
    to_tier: str = "tiny"

    kind = "degradation"
    unit = "seeds"
    null = 0.0
    direction = 1
    test = "one-sample t over seeds of the difference of accuracy losses"

    @property
    def tier(self) -> str:
        return f"{self.from_tier}->{self.to_tier}"

    def describe(self) -> str:
        return f"{self.larger} loses more than {self.smaller}"

    def _loss(self, model: str, source) -> object:
        return source(model, self.from_tier) - source(model, self.to_tier)

    def thesis_value(self) -> float:
        def source(model, tier):
            return _thesis(model, tier, False)

        return self._loss(self.larger, source) - self._loss(self.smaller, source)

    def measure(self, trials, predictions, classes) -> dict:
        def source(model, tier):
            return _ok(trials, model, tier, False).test_accuracy.astype(float)

        losses = self._loss(self.larger, source) - self._loss(self.smaller, source)  # aligned on (seed, split_seed)
        return {"values": list(losses.dropna())}


@dataclasses.dataclass(frozen=True)
class TopConfusion:
    """The most frequent confusion is between two of `classes`: per trial (every finished trial of `tier`, or of
    the run), (the largest count of a pair within the classes) - (the largest count of any other pair), as a
    share of the trial's errors; a pair counts both directions."""

    classes: tuple[str, ...]
    tier: str | None = None

    kind = "confusion"
    unit = "trials"
    null = 0.0
    direction = 1
    test = "one-sample t over trials of (top pair within - top pair outside) / errors"

    def validate(self) -> None:
        if len(self.classes) < 2:
            raise ValueError(f"TopConfusion needs at least two classes, got {self.classes}")

    def describe(self) -> str:
        return f"top confusion within {', '.join(self.classes)}"

    def thesis_value(self) -> float:
        return math.nan

    def measure(self, trials, predictions, classes) -> dict:
        unknown = set(self.classes) - set(classes)
        if unknown:
            raise ValueError(f"TopConfusion: unknown class(es) {sorted(unknown)}; valid: {', '.join(classes)}")
        inside = {frozenset(p) for p in itertools.combinations([classes.index(c) for c in self.classes], 2)}
        chosen = (
            trials[trials.status == "ok"]
            if self.tier is None
            else trials[(trials.status == "ok") & (trials.tier == self.tier)]
        )
        values = []
        for trial_id in chosen.trial_id:
            p = predictions[(predictions.trial_id == trial_id) & (predictions.predicted != predictions.label)]
            if not len(p):
                continue
            pairs = pd.Series([frozenset(x) for x in zip(p.label, p.predicted, strict=True)]).value_counts()
            within = max((n for pair, n in pairs.items() if pair in inside), default=0)
            outside = max((n for pair, n in pairs.items() if pair not in inside), default=0)
            values.append((within - outside) / len(p))
        return {"values": values}


@dataclasses.dataclass(frozen=True)
class HoldsWhenBrokenDown:
    """`class_name` stays accurate when a model breaks down: in every finished trial with test accuracy below
    `below`, that class's recall minus the trial's accuracy."""

    class_name: str
    below: float = 0.5

    kind = "class holds"
    unit = "trials"
    null = 0.0
    direction = 1
    tier = None
    test = "one-sample t over broken-down trials of (class recall - accuracy)"

    def describe(self) -> str:
        return f"{self.class_name} recall > accuracy where accuracy < {self.below:g}"

    def thesis_value(self) -> float:
        return math.nan

    def measure(self, trials, predictions, classes) -> dict:
        if self.class_name not in classes:
            raise ValueError(f"HoldsWhenBrokenDown: unknown class {self.class_name!r}; valid: {', '.join(classes)}")
        label = classes.index(self.class_name)
        broken = trials[(trials.status == "ok") & (trials.test_accuracy.astype(float) < self.below)]
        values = []
        for trial_id, accuracy in zip(broken.trial_id, broken.test_accuracy.astype(float), strict=True):
            p = predictions[(predictions.trial_id == trial_id) & (predictions.label == label)]
            if len(p):
                values.append(float((p.predicted == label).mean()) - accuracy)
        return {"values": values}


TESTS = (Comparison, Ratio, FasterThan, OneClass, Degradation, TopConfusion, HoldsWhenBrokenDown)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the thesis's conclusions: its words, where it says them, and the tests of it."""

    id: str
    section: str
    words: str
    comparisons: tuple

    def __post_init__(self):
        for test in self.comparisons:
            if not isinstance(test, TESTS):
                raise ValueError(f"claim {self.id}: {test!r} is not one of {', '.join(t.__name__ for t in TESTS)}")
            try:
                check_test(test)
            except ValueError as error:
                raise ValueError(f"claim {self.id}: {error}") from None


CLAIMS = (
    Claim(
        "1",
        "abstract, §6",
        "Without pre-training, ResNet is the most accurate architecture on small data (tiny: resnet_34 0.791).",
        tuple(Comparison("resnet_34", rival, "tiny") for rival in SCRATCH_RIVALS_TINY),
    ),
    Claim(
        "2",
        "§5, §6",
        "MobileNetV3 is the most accurate on the large tier (0.971).",
        tuple(
            Comparison("mobilenet_large", rival, "large")
            for rival in ("resnet_18", "resnet_34", "resnet_152", "convnext_tiny", "vit_b_16")
        ),
    ),
    Claim(
        "2b",
        "§5.1, §6",
        "MobileNetV3 breaks down on the tiny tier, predicting one class (0.174).",
        (OneClass("mobilenet_small", "tiny"), OneClass("mobilenet_large", "tiny")),
    ),
    Claim(
        "3",
        "§6",
        "The two smallest ResNets (18, 34) are more accurate than ResNet-152 at every tier.",
        tuple(
            Comparison(small, "resnet_152", tier)
            for tier in ("tiny", "small", "medium", "large")
            for small in ("resnet_18", "resnet_34")
        ),
    ),
    Claim(
        "4",
        "§6, chapter 7",
        "ViT, MLP-Mixer and ConvNeXt from scratch are much less accurate than ResNet and MobileNet.",
        tuple(
            Comparison(good, bad, tier)
            for tier in ("tiny", "small")
            for good in ("resnet_18", "mobilenet_large")
            for bad in ("vit_b_16", "mlpmixer_s32", "convnext_tiny")
        ),
    ),
    Claim(
        "4b",
        "§6",
        "They degrade as data shrinks, more for larger configurations (small -> tiny).",
        (
            Degradation("vit_l_16", "vit_b_16"),
            Degradation("mlpmixer_l16", "mlpmixer_s16"),
            Degradation("convnext_large", "convnext_tiny"),
        ),
    ),
    Claim(
        "5",
        "§5.5, §6",
        "With ImageNet pre-training ConvNeXt is the most accurate on tiny (convnext_large 0.878).",
        tuple(Comparison("convnext_large", rival, "tiny", pretrained=True) for rival in PRETRAINED_RIVALS_TINY),
    ),
    Claim(
        "5b",
        "§5.5, §6",
        "Pre-training multiplies ConvNeXt's tiny accuracy by at least 4 and MobileNet's by 2.5-3.",
        (
            Ratio("convnext_tiny", "tiny", at_least=4),
            Ratio("convnext_large", "tiny", at_least=4),
            Ratio("mobilenet_small", "tiny", at_least=2.5),
            Ratio("mobilenet_small", "tiny", at_most=3),
            Ratio("mobilenet_large", "tiny", at_least=2.5),
            Ratio("mobilenet_large", "tiny", at_most=3),
        ),
    ),
    Claim(
        "5c",
        "§5.5, §6",
        "Pre-training makes the ResNets other than ResNet-18 slightly worse on tiny.",
        tuple(
            Comparison(model, model, "tiny", pretrained=False, worse_pretrained=True)
            for model in ("resnet_34", "resnet_50", "resnet_101", "resnet_152")
        ),
    ),
    Claim(
        "6",
        "§5, §6",
        "The most frequent confusions are between ig, monocyte and neutrophil.",
        (TopConfusion(("ig", "monocyte", "neutrophil")),),
    ),
    Claim(
        "6b",
        "§5, §6",
        "Platelets stay accurate when a model breaks down.",
        (HoldsWhenBrokenDown("platelet", below=0.5),),
    ),
    Claim(
        "7",
        "§6",
        "ResNet is among the fastest to train (ResNet-152 under 1.5 h on the large tier on an RTX 3080).",
        tuple(FasterThan("resnet_152", rival, "large") for rival in ("convnext_tiny", "vit_b_16", "vit_l_16")),
    ),
)


def load_claims(path: str | Path) -> tuple[Claim, ...]:
    """The `CLAIMS` a Python file (a grid file, or any) declares: a list or tuple of `Claim`."""
    try:
        namespace = runpy.run_path(str(path))
    except FileNotFoundError:
        raise ValueError(f"claims file {str(path)!r} does not exist") from None
    declared = namespace.get("CLAIMS")
    if declared is None:
        raise ValueError(f"{path} declares no CLAIMS: add CLAIMS = [Claim(...), ...] (raybench.report.conclusions)")
    if not isinstance(declared, list | tuple) or not all(isinstance(c, Claim) for c in declared):
        raise ValueError(f"{path}: CLAIMS must be a list of raybench.report.conclusions.Claim")
    return tuple(declared)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only A right) and c (only B right)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order (NaN stays NaN)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def seeds_to_decide(differences) -> float:
    """Units (seeds) whose 95% t-interval of the mean would exclude zero at the observed mean and spread."""
    x = pd.Series(differences, dtype=float).dropna()
    if len(x) < 2 or x.mean() == 0:
        return math.nan
    sd = float(x.std(ddof=1))
    if sd == 0:
        return float(len(x))
    n = 2
    while t_quantile(n - 1) * sd / math.sqrt(n) >= abs(float(x.mean())) and n < 10_000:
        n += 1
    return float(n)


def measure(test, trials: pd.DataFrame, predictions: pd.DataFrame, classes) -> dict:
    """One test's row: its estimate with the 95% t-interval over units, the p-value, and the units to decide."""
    measured = test.measure(trials, predictions, classes)
    values = measured.pop("values")
    estimate, low, high = mean_interval(values)
    p = measured.pop("p") if "p" in measured else t_test(values, test.null)
    return {
        "kind": test.kind,
        "description": test.describe(),
        "better": "",
        "worse": "",
        "b": math.nan,
        "c": math.nan,
        **measured,
        "tier": test.tier if test.tier is not None else "all",
        "n": len(values),
        "unit": test.unit,
        "estimate": estimate,
        "low": low,
        "high": high,
        "bound": test.null,
        "direction": test.direction,
        "thesis": test.thesis_value(),
        "p": p,
        "n_to_decide": seeds_to_decide(np.asarray(values, dtype=float) - test.null) if len(values) else math.nan,
        "test": test.test,
    }


def _verdict(row: pd.Series) -> str:
    if row.n == 0:
        return "not run"
    interval_clear = row.n < 2 or not (row.low <= row.bound <= row.high)
    if not (row.p_holm < ALPHA and interval_clear):
        return "undecided at this run's size"
    return "supported" if (row.estimate - row.bound) * row.direction > 0 else "contradicted"


def evaluate_claims(
    trials: pd.DataFrame, predictions: pd.DataFrame, claims=CLAIMS, classes=tuple(catalog.CLASSES)
) -> pd.DataFrame:
    """One row per test of every claim, with its Holm-corrected p-value and verdict."""
    rows = [
        {"claim": claim.id, "section": claim.section, "words": claim.words, **measure(t, trials, predictions, classes)}
        for claim in claims
        for t in claim.comparisons
    ]
    frame = pd.DataFrame(rows)
    frame["p_holm"] = holm(list(frame.p))
    frame["verdict"] = frame.apply(_verdict, axis=1)
    return frame


def claim_verdicts(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: supported when every test is, contradicted when any is, not run when any is missing."""

    def one(group: pd.DataFrame) -> str:
        verdicts = set(group.verdict)
        if "not run" in verdicts:
            return "not run"
        if "contradicted" in verdicts:
            return "contradicted"
        return "supported" if verdicts == {"supported"} else "undecided at this run's size"

    out = comparisons.groupby(["claim", "section", "words"], sort=False).apply(one, include_groups=False)
    return out.rename("verdict").reset_index()


def conclusions_section(
    trials: pd.DataFrame, predictions: pd.DataFrame, claims=CLAIMS, classes=tuple(catalog.CLASSES)
) -> list:
    """The report's section "The thesis's conclusions, tested": one verdict per claim, then a row per test."""
    from raybench.report.document import Heading, Paragraph
    from raybench.report.tables import Table

    table = evaluate_claims(trials, predictions, claims, classes)
    verdicts = claim_verdicts(table)

    def num(value, digits=3, sign=True):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"

    def estimate(r) -> str:
        sign = r.kind in ("comparison", "degradation", "confusion", "class holds")
        if r.n < 2:
            return num(r.estimate, sign=sign) + (
                " (one unit: no spread)" if r.n == 1 and r.kind != "comparison" else ""
            )
        return f"{num(r.estimate, sign=sign)} [{num(r.low, sign=sign)}, {num(r.high, sign=sign)}]"

    rows = [
        [
            r.claim,
            r.description,
            r.tier,
            f"{r.n} {r.unit}",
            estimate(r),
            num(r.thesis, sign=r.kind in ("comparison", "degradation")),
            "-" if math.isnan(r.b) else f"{r.b:.0f}/{r.c:.0f}",
            "-" if math.isnan(r.p_holm) else f"{r.p_holm:.3g}",
            "-" if math.isnan(r.n_to_decide) else f"{r.n_to_decide:.0f}",
            r.verdict,
        ]
        for r in table.itertuples()
    ]
    summary = "; ".join(f"claim {v.claim} ({v.section}): **{v.verdict}**" for v in verdicts.itertuples())
    if not (table.n > 0).any():  # nothing to compare: say so, without an empty table
        return [
            Heading(2, "The thesis's conclusions, tested"),
            Paragraph("No claim's configurations were all run: every claim is not run. " + summary + "."),
        ]
    tests = "; ".join(f"{kind}: {test}" for kind, test in dict(zip(table.kind, table.test, strict=True)).items())
    return [
        Heading(2, "The thesis's conclusions, tested"),
        Paragraph(
            "Each claim is tested as one or more rows. A comparison of two configurations on one tier: the mean of "
            "the seed-wise accuracy differences with its 95% t-interval, and an exact McNemar test on the same "
            "test images (discordant predictions summed over seeds). Every other row measures one value per seed "
            "or per trial and tests its mean against the claim's bound (one-sample t, 95% t-interval). p-values "
            "are Holm-corrected over every row. A row is decided when the corrected p < 0.05 and, with two or more "
            "units, the interval excludes the bound; one seed decides only what its test images can (McNemar). A "
            "claim is supported when all its rows are, contradicted when any is reversed, not run when any "
            "configuration is missing. 'thesis' is the same statistic from the thesis's published numbers, where "
            "they give it. " + summary + "."
        ),
        Table(
            "conclusions",
            "The thesis's conclusions, tested",
            table,
            [
                "claim",
                "test",
                "tier",
                "n",
                "estimate [95% CI]",
                "thesis",
                "only A / only B right",
                "p (Holm)",
                "units to decide",
                "verdict",
            ],
            rows,
            note="; ".join(f"claim {c.id} ({c.section}): {c.words}" for c in claims) + ". Tests: " + tests,
        ),
    ]
