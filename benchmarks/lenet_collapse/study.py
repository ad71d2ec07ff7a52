"""The study's report: the JSONL rows of both loops side by side, their verdicts and the tests between them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.lenet_collapse import REPORT_NOTES
from benchmarks.lenet_collapse.probe import finite
from raybench import catalog


def outcome(row: dict) -> str:
    """diverged (a loss went non-finite), one class, two classes, or learning (3 or more classes on test)."""
    if row["nonfinite"]:
        return "diverged"
    return {1: "one class", 2: "two classes"}.get(row["test_classes"], "learning")


def collapsed(row: dict) -> bool:
    """The issue's description of a collapse: a non-finite loss, or one or two classes predicted on test."""
    return outcome(row) != "learning"


# The biggest class's share of the tiny tier's test split (neutrophil, 23 of 115 with split seed 0 on the shared
# sample): the accuracy of always answering it.
MAJORITY_SHARE = 23 / 115


def at_chance(row: dict) -> bool:
    """A non-finite loss, or a test accuracy no better than always answering the biggest class."""
    return row["nonfinite"] or row["test_accuracy"] <= MAJORITY_SHARE + 1e-9


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher exact test of the 2x2 table [[a, b], [c, d]]: the sum of the tables as likely or less."""
    n1, n2, k = a + b, c + d, a + c
    total = math.comb(n1 + n2, k)

    def p(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, k - x) / total

    observed = p(a)
    return min(1.0, sum(p(x) for x in range(max(0, k - n2), min(k, n1) + 1) if p(x) <= observed * (1 + 1e-9)))


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95 % Wilson score interval of the share k/n."""
    share, d = k / n, 1 + z * z / n
    centre = (share + z * z / (2 * n)) / d
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


def share_difference(a: int, n1: int, b: int, n2: int) -> tuple[float, float, float]:
    """a/n1 - b/n2 and its 95 % interval (Newcombe's hybrid score interval, from the two Wilson intervals)."""
    p1, p2 = a / n1, b / n2
    (l1, u1), (l2, u2) = wilson(a, n1), wilson(b, n2)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


# The issue's runs: (collapsed, runs). raybench on a GPU: 5 of 5 at chance; the independent minimal implementation on
# the CPU: one diverged, one collapsed to one class, three predicted 3-4 classes.
ISSUE_RUNS = {"raybench, GPU, full length (issue)": (5, 5), "independent implementation, CPU (issue)": (2, 5)}


def load_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def cell(row: dict | None) -> list[str]:
    if row is None:
        return ["-"] * 7
    first = row["epochs"][0]["train_loss"] if row["epochs"] else None
    last = row["epochs"][-1] if row["epochs"] else {}
    return [
        fmt(first, 1) if first is not None and finite(first) else fmt(first),
        f"{row['n_epochs']}/{row['tested_epoch']}",
        f"{fmt(last.get('val_loss'), 3)}",
        str(last.get("fc1_live", "-")),
        f"{row['test_accuracy']:.3f}",
        str(row["test_classes"]),
        outcome(row),
    ]


def agreement(row: dict, ref: dict) -> str:
    """Whether two runs follow the same trajectory: every epoch's losses equal to 1e-5 relative (raybench sums an
    epoch's batch losses in float32, the bare loop in Python floats, so the printed means differ in the last bits)."""
    n = min(len(row["epochs"]), len(ref["epochs"]))

    def close(a: float, b: float) -> bool:
        return (not finite(a) and not finite(b)) or (finite(a) and finite(b) and abs(a - b) <= 1e-5 * abs(b))

    for i in range(n):
        if not all(close(row["epochs"][i][k], ref["epochs"][i][k]) for k in ("train_loss", "val_loss")):
            return f"no, from epoch {i + 1}"
    if row["n_epochs"] == ref["n_epochs"] and row["test_pred_counts"] == ref["test_pred_counts"]:
        return f"yes: all {n} epochs' losses (1e-5) and the test predictions"
    return f"same losses over {n} epochs"


def counts(rows: list[dict]) -> dict:
    out = {k: 0 for k in ("diverged", "one class", "two classes", "learning")}
    for row in rows:
        out[outcome(row)] += 1
    return out


def setting(row: dict) -> tuple:
    return (row["image_size"], row["max_epochs"], row.get("channels_last", False))


def describe_setting(key: tuple) -> str:
    size, cap, channels_last = key
    return f"{size} px, at most {cap} epochs, {'channels_last' if channels_last else 'contiguous (NCHW)'}"


def settled_from(row: dict) -> int | None:
    """The first epoch from which every later epoch (to the cap) predicts at most two classes on val, or None."""
    epochs = row["epochs"]
    for i in range(len(epochs)):
        if all(e["val_classes"] <= 2 for e in epochs[i:]):
            return epochs[i]["epoch"]
    return None


def measured(main: list[dict], key: tuple) -> list[str]:
    """What the main comparison's runs measured and what they cannot say, from their own epochs."""
    if not main:
        return []
    cap = key[1]
    thesis = catalog.published_row("lenet5", pretrained=False)
    rates = {e["lr"] for r in main for e in r["epochs"]}
    at_last = sum(r["tested_epoch"] == r["n_epochs"] for r in main)
    short = [r for r in main if r["n_epochs"] < cap]
    ended = "; ".join(
        f"{r['variant']} seed {r['seed']} ended at epoch {r['n_epochs']} on a non-finite loss" for r in short
    )
    stats = catalog.LOOP_DEFAULTS
    last_improvement = thesis["epochs"] - stats["es_patience"] if not thesis["hit_epoch_limit"] else thesis["epochs"]
    rate = (
        f"The learning rate was {rates.pop():g} in every epoch of every run (the plateau schedule's patience of 10 "
        "epochs cannot lower it this early)"
        if len(rates) == 1
        else f"The learning rate took the values {', '.join(f'{v:g}' for v in sorted(rates))}"
    )
    tested = (
        f": early stopping considers epochs from {stats['es_start'] + 1} on, so the tested model is epoch {cap} unless "
        f"a run ended before it{f' ({ended})' if ended else ''}"
        if cap <= stats["es_start"] + 1
        else f"{f' ({ended})' if ended else ''}"
    )
    old_rule = (
        " raybench's rows were run when a non-finite loss ended a trial (now `--set nonfinite_stop=loss`; the "
        'default "weights" trains on, as the thesis\'s loop did).'
        if any(r["variant"] == "raybench" for r in short)
        else ""
    )
    return [
        f"What this measured: every run was capped at {cap} epochs. {rate}, and the tested model was the last epoch "
        f"trained in {at_last} of {len(main)} runs{tested}.{old_rule} The thesis's LeNet-5 tiny ran "
        f"{thesis['epochs']} epochs, its last improvement at epoch {last_improvement}, and scored "
        f"{thesis['accuracy']:.3f}: these runs say how often the first {cap} epochs leave LeNet-5 predicting one or "
        "two classes, not how a full-length run ends, nor how often it reaches the "
        "thesis's accuracy.",
    ]


def report(rows: list[dict], *, wall: str = "") -> str:
    """The side-by-side table, the counts and the test, then the one-factor runs, as Markdown."""
    size = max((r["image_size"] for r in rows), default=352)  # 352 but in --quick
    pairs = [r for r in rows if r["variant"] in ("raybench", "bare") and r["image_size"] == size]
    by_setting: dict = {}
    for r in pairs:
        by_setting.setdefault(setting(r), []).append(r)
    key = max(by_setting, key=lambda k: len(by_setting[k]), default=(size, 0, False))  # the main comparison
    main = by_setting.get(key, [])
    by = {(r["variant"], r["seed"]): r for r in main}
    seeds = sorted({r["seed"] for r in main})
    rb = [by[("raybench", s)] for s in seeds if ("raybench", s) in by]
    bare = [by[("bare", s)] for s in seeds if ("bare", s) in by]
    first = (rb or bare or rows or [{}])[0]
    lines = [
        "# LeNet-5 at lr 0.1 on the tiny tier: raybench against a bare loop from the thesis's text",
        "",
        f"Data: the tiny tier (raybench's draw, split seed 0) of the real sample `pbc_sample` (shared data): "
        f"{first.get('n_train', '?')} train / {first.get('n_val', '?')} val / {first.get('n_test', '?')} test images, "
        f"greyscale, fp32 on the CPU, one thread per loop, torch {first.get('torch', '?')}. Main comparison: "
        f"{describe_setting(key)}. {wall}".rstrip(),
        "",
        "Columns per loop: epoch-1 training loss; epochs run / epoch tested; validation loss of the last epoch; fc1 "
        "units (of 120) that fire on any validation image in the last epoch; test accuracy; classes predicted on test; "
        "outcome (diverged: a loss went non-finite; one / two classes: the tested model predicts only that many "
        "classes on test; learning: 3 or more). Same init: the two loops' initial weights hash the same.",
        "",
        *measured(main, key),
        "",
        "| seed | same init | raybench ep1 loss | ep/tested | last val loss | fc1 live | test acc | classes | outcome "
        "| bare ep1 loss | ep/tested | last val loss | fc1 live | test acc | classes | outcome |",
        "|---:|:---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in seeds:
        a, b = by.get(("raybench", s)), by.get(("bare", s))
        same = "yes" if a and b and a["init_sha"] == b["init_sha"] else ("no" if a and b else "-")
        lines.append("| " + " | ".join([str(s), same, *cell(a), *cell(b)]) + " |")
    ca, cb = counts(rb), counts(bare)
    lines += [
        "",
        "| outcome | raybench | bare |",
        "|---|---:|---:|",
        *[f"| {k} | {ca[k]} | {cb[k]} |" for k in ca],
        f"| seeds | {len(rb)} | {len(bare)} |",
    ]
    if rb and bare:
        xa, xb = sum(map(collapsed, rb)), sum(map(collapsed, bare))
        p = fisher_exact(xa, len(rb) - xa, xb, len(bare) - xb)
        da, db = ca["diverged"], cb["diverged"]
        p_div = fisher_exact(da, len(rb) - da, db, len(bare) - db)
        za, zb = sum(map(at_chance, rb)), sum(map(at_chance, bare))
        p_chance = fisher_exact(za, len(rb) - za, zb, len(bare) - zb)

        def mean(rs: list[dict], f) -> float:
            values = [f(r) for r in rs]
            values = [v for v in values if v is not None and finite(v)]
            return sum(values) / len(values) if values else float("nan")

        both = [s for s in seeds if {("raybench", s), ("bare", s)} <= by.keys()]
        agree = sum(collapsed(by[("raybench", s)]) == collapsed(by[("bare", s)]) for s in both)
        ep1 = lambda r: r["epochs"][0]["train_loss"] if r["epochs"] else None  # noqa: E731
        accuracy = lambda r: r["test_accuracy"]  # noqa: E731

        def difference(a: int, b: int) -> str:
            d, lo, hi = share_difference(a, len(rb), b, len(bare))
            return f"difference {d:+.2f}, 95 % interval {lo:+.2f} to {hi:+.2f}"

        def loss_range(rs: list[dict]) -> str:
            values = [v for v in map(ep1, rs) if v is not None and finite(v)]
            return f"{min(values):.1f}-{max(values):.1f}" if values else "-"

        lines += [
            "",
            f"Collapsed (diverged, one or two classes): raybench {xa}/{len(rb)}, bare {xb}/{len(bare)}, "
            f"{difference(xa, xb)} (Newcombe). An interval this wide neither separates the loops nor shows them "
            f"equivalent: the two-sided Fisher exact test's p = {p:.3f} says only that these seeds detect no "
            f"difference. Diverged alone: {da} against {db} ({difference(da, db)}, Fisher p = {p_div:.3f}). At "
            f"chance (diverged, or a test accuracy no better than always answering the biggest class, "
            f"{MAJORITY_SHARE:.3f}): raybench {za}/{len(rb)}, bare {zb}/{len(bare)} ({difference(za, zb)}, Fisher "
            f"p = {p_chance:.3f}). Mean test accuracy: raybench {mean(rb, accuracy):.3f}, bare "
            f"{mean(bare, accuracy):.3f}. Epoch-1 training loss (finite ones): raybench {loss_range(rb)} (mean "
            f"{mean(rb, ep1):.1f}), bare {loss_range(bare)} (mean {mean(bare, ep1):.1f}). The same verdict "
            f"(collapsed or not) in {agree} of the {len(both)} seeds that both loops ran (the same initial weights, "
            "another data order).",
        ]
        best = max((r for r in rb + bare if collapsed(r)), key=accuracy, default=None)
        if best is not None:
            thesis = catalog.published_row("lenet5", pretrained=False)["accuracy"]
            lines += [
                "",
                f"Collapsed is a statement about classes predicted, not about accuracy: the best collapsed run "
                f"({best['variant']} seed {best['seed']}, {outcome(best)}) scored {best['test_accuracy']:.3f} on "
                f"test, {'above' if best['test_accuracy'] > thesis else 'below'} the thesis's {thesis:.3f}.",
            ]
        pooled, n = xa + xb, len(rb) + len(bare)
        lines += [
            "",
            f"Against the runs of the fidelity issue (pooled here: {pooled}/{n} collapsed; the issue's runs went on "
            "past epoch 11, so these tests set runs of different lengths side by side):",
            "",
        ]
        for name, (k, m) in ISSUE_RUNS.items():
            q = fisher_exact(k, m - k, pooled, n - pooled)
            lines.append(
                f"- {name}: {k}/{m} collapsed; Fisher p = {q:.3f} against the pooled {pooled}/{n}; the chance of "
                f"{k} or more of {m} at the pooled rate {pooled / n:.2f} is {binomial_tail(k, m, pooled / n):.3f}."
            )
        settled = [settled_from(r) for r in rb + bare if collapsed(r) and not r["nonfinite"]]
        if settled:
            lines += [
                "",
                "Among the finite collapsed runs, the epoch from which validation predictions stay at one or two "
                f"classes to the cap: {sorted(settled)}.",
            ]
    extra = [r for r in rows if r not in main and r["image_size"] == size]
    if extra:
        lines += [
            "",
            "## One factor at a time",
            "",
            "Bare-loop variants on a few seeds (pixels: `pil` = torchvision Grayscale on the PIL image, `raybench` = "
            "raybench's uint8 cache; order: `dataloader` = ImageFolder order shuffled by DataLoader from the global "
            "RNG, `raybench` = manifest order shuffled by randperm from a generator seeded with the seed), and runs in "
            "another memory format. Each is compared with the main runs of the same seed: the same trajectory means "
            "every epoch's training and validation losses agree to 1e-5 relative.",
            "",
            "| variant | setting | seed | train loss, epochs 1-3 | val loss, epochs 1-3 | test acc | classes "
            "| outcome | vs raybench | vs bare |",
            "|---|---|---:|---|---|---:|---:|---|---|---|",
        ]
        for r in sorted(extra, key=lambda r: (r["variant"], setting(r), r["seed"])):
            refs = [by.get((v, r["seed"])) for v in ("raybench", "bare")]
            lines.append(
                f"| {r['variant']} | {describe_setting(setting(r))} | {r['seed']} | "
                + ", ".join(fmt(e["train_loss"], 4) for e in r["epochs"][:3])
                + " | "
                + ", ".join(fmt(e["val_loss"], 4) for e in r["epochs"][:3])
                + f" | {r['test_accuracy']:.3f} | {r['test_classes']} | {outcome(r)} | "
                + " | ".join("-" if ref is None else f"{outcome(ref)}; {agreement(r, ref)}" for ref in refs)
                + " |"
            )
    if REPORT_NOTES.exists():
        lines += ["", REPORT_NOTES.read_text().rstrip()]
    return "\n".join(lines) + "\n"
