"""The thesis's conclusions, tested: each claim as data, compared across seeds and on the same test images.

A claim is a list of comparisons "A is more accurate than B" on one tier. Each comparison uses both levels of
noise: across seeds, the mean of the seed-wise differences with a 95% t-interval (the seeds share test images,
so the differences are paired), and on the same test images, an exact McNemar test on the discordant
predictions summed over seeds. p-values are Holm-corrected over every comparison tested.
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from raybench import catalog
from raybench.report.statistics import mean_interval, t_quantile

ALPHA = 0.05
SCRATCH_RIVALS_TINY = (
    "resnet_18", "resnet_50", "resnet_101", "resnet_152", "mobilenet_small", "mobilenet_large",
    "convnext_tiny", "vit_b_16", "mlpmixer_s32", "lenet5",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Comparison:
    """`better` is more accurate than `worse` on `tier` (both from scratch unless `pretrained`)."""

    better: str
    worse: str
    tier: str
    pretrained: bool = False


@dataclasses.dataclass(frozen=True)
class Claim:
    """One of the thesis's conclusions: its words, where it says them, and the comparisons that test it."""

    id: str
    section: str
    words: str
    comparisons: tuple[Comparison, ...]

    def __post_init__(self):
        for c in self.comparisons:
            for model in (c.better, c.worse):
                if model not in catalog.MODEL_NAMES:
                    raise ValueError(
                        f"claim {self.id}: unknown model {model!r}; valid: {', '.join(sorted(catalog.MODEL_NAMES))}"
                    )
            if c.tier not in catalog.TIER_SPLITS:
                raise ValueError(f"claim {self.id}: unknown tier {c.tier!r}; valid: {', '.join(catalog.TIER_SPLITS)}")


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
)


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
    """Seeds whose 95% t-interval of the mean difference would exclude zero at the observed mean and spread."""
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


def _trials(trials: pd.DataFrame, model: str, tier: str, pretrained: bool) -> pd.DataFrame:
    ok = trials[
        (trials.model == model) & (trials.tier == tier) & (trials.pretrained == pretrained) & (trials.status == "ok")
    ]
    if "variant" in ok:
        ok = ok[ok.variant.fillna("") == ""]
    return ok.set_index(["seed", "split_seed"])


def compare(trials: pd.DataFrame, predictions: pd.DataFrame, comparison: Comparison) -> dict:
    """One comparison: seeds paired, the mean difference and its t-interval, McNemar on the same test images."""
    a = _trials(trials, comparison.better, comparison.tier, comparison.pretrained)
    b = _trials(trials, comparison.worse, comparison.tier, comparison.pretrained)
    keys = a.index.intersection(b.index)
    row = {"better": comparison.better, "worse": comparison.worse, "tier": comparison.tier, "seeds": len(keys)}
    if not len(keys):
        empty = {"difference": math.nan, "low": math.nan, "high": math.nan, "b": 0, "c": 0, "p": math.nan}
        return {**row, **empty, "seeds_to_decide": math.nan}
    diffs = a.loc[keys, "test_accuracy"].astype(float) - b.loc[keys, "test_accuracy"].astype(float)
    mean, low, high = mean_interval(diffs)
    only_a = only_b = 0
    for key in keys:
        pa = predictions[predictions.trial_id == a.loc[key, "trial_id"]].set_index("image")
        pb = predictions[predictions.trial_id == b.loc[key, "trial_id"]].set_index("image")
        shared = pa.index.intersection(pb.index)
        right_a = pa.loc[shared, "predicted"] == pa.loc[shared, "label"]
        right_b = pb.loc[shared, "predicted"] == pb.loc[shared, "label"]
        only_a += int((right_a & ~right_b).sum())
        only_b += int((right_b & ~right_a).sum())
    return {
        **row,
        "difference": mean,
        "low": low,
        "high": high,
        "b": only_a,
        "c": only_b,
        "p": mcnemar_exact(only_a, only_b),
        "seeds_to_decide": seeds_to_decide(diffs),
    }


def _verdict(row: pd.Series) -> str:
    if row.seeds == 0:
        return "not run"
    significant = row.p_holm < ALPHA and (row.seeds < 2 or not (row.low <= 0 <= row.high))
    if not significant:
        return "undecided at this run's size"
    return "supported" if row.difference > 0 else "contradicted"


def evaluate_claims(trials: pd.DataFrame, predictions: pd.DataFrame, claims=CLAIMS) -> pd.DataFrame:
    """One row per comparison of every claim, with its Holm-corrected p-value and verdict."""
    rows = [
        {"claim": claim.id, "section": claim.section, "words": claim.words, **compare(trials, predictions, c)}
        for claim in claims
        for c in claim.comparisons
    ]
    frame = pd.DataFrame(rows)
    frame["test"] = "paired t over seeds + exact McNemar (summed over seeds), Holm"
    frame["p_holm"] = holm(list(frame.p))
    frame["verdict"] = frame.apply(_verdict, axis=1)
    return frame


def claim_verdicts(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per claim: supported when every comparison is, contradicted when any is, not run when any is missing."""

    def one(group: pd.DataFrame) -> str:
        verdicts = set(group.verdict)
        if "not run" in verdicts:
            return "not run"
        if "contradicted" in verdicts:
            return "contradicted"
        return "supported" if verdicts == {"supported"} else "undecided at this run's size"

    out = comparisons.groupby(["claim", "section", "words"], sort=False).apply(one, include_groups=False)
    return out.rename("verdict").reset_index()


def conclusions_section(trials: pd.DataFrame, predictions: pd.DataFrame, claims=CLAIMS) -> list:
    """The report's section "The thesis's conclusions, tested": one verdict per claim, then a row per comparison."""
    from raybench.report.document import Heading, Paragraph
    from raybench.report.tables import Table

    table = evaluate_claims(trials, predictions, claims)
    verdicts = claim_verdicts(table)

    def num(value, digits=3):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+.{digits}f}"

    rows = [
        [
            r.claim,
            f"{r.better} > {r.worse}",
            r.tier,
            str(r.seeds),
            f"{num(r.difference)} [{num(r.low)}, {num(r.high)}]",
            f"{r.b}/{r.c}",
            "-" if math.isnan(r.p_holm) else f"{r.p_holm:.3g}",
            "-" if math.isnan(r.seeds_to_decide) else f"{r.seeds_to_decide:.0f}",
            r.verdict,
        ]
        for r in table.itertuples()
    ]
    summary = "; ".join(f"claim {v.claim} ({v.section}): **{v.verdict}**" for v in verdicts.itertuples())
    if not (table.seeds > 0).any():  # nothing to compare: say so, without an empty table
        return [
            Heading(2, "The thesis's conclusions, tested"),
            Paragraph("No claim's configurations were all run: every claim is not run. " + summary + "."),
        ]
    return [
        Heading(2, "The thesis's conclusions, tested"),
        Paragraph(
            "Each claim is tested as comparisons of two configurations on one tier: the mean of the seed-wise "
            "accuracy differences with its 95% t-interval, and an exact McNemar test on the same test images "
            "(discordant predictions summed over seeds), Holm-corrected over every comparison. A comparison is "
            "decided when the corrected p < 0.05 and, with two or more seeds, the interval excludes 0; a claim is "
            "supported when all its comparisons are, contradicted when any is reversed, not run when any "
            "configuration is missing. " + summary + "."
        ),
        Table(
            "conclusions",
            "The thesis's conclusions, tested",
            table,
            [
                "claim",
                "comparison",
                "tier",
                "seeds",
                "difference [95% CI]",
                "only A / only B right",
                "p (Holm)",
                "seeds to decide",
                "verdict",
            ],
            rows,
            note="; ".join(f"claim {c.id} ({c.section}): {c.words}" for c in claims),
        ),
    ]
