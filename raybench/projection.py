"""How long a grid will take on this machine, before it runs: `--dry-run`'s hours per tier and in total.

Each trial's time is its epochs times its epoch's cost, plus building the model and the test pass:

- epochs: the thesis's count for the configuration and tier (tables 5.1-5.7, 5.15; its median on the tier for a
  configuration it did not train), mapped to the grid's early-stopping window (the epochs after `es_start` scale
  with `es_patience`: with the thesis's 10 and 20 it is the thesis's count), between the first epoch early
  stopping could end it and `max_epochs`; those two bounds are the range.
- cost: seconds per training and per evaluation image, measured here on a few real batches of the model at the
  trial's image size, batch size and precision, on the device the trial would use, with the threads a trial gets
  (Ray gives a CPU trial as many as its CPUs); cached per device kind (`costs.json` in the image cache's folder).
- concurrency: the trials are laid out in grid order on the slots the scheduler has (CPUs over `--cpus-per-trial`,
  each GPU's share per trial from the plan, `--max-concurrent`), as Tune starts a pending trial when one ends.
  Trials that share a GPU are taken to run at their own speed (MPS); the estimate says nothing of that slowdown.
- a data-parallel trial (`workers`) is taken to scale perfectly over its workers, plus its group's start.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
import statistics
import time
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raybench import catalog, loop, models, provenance
from raybench.batches import DeviceSplit
from raybench.spec import Trial
from raybench.stopping import EarlyStopping

RUN_START_S = 15.0  # Ray's start, the first actors and the shutdown: benchmark 3, on the 2-core CPU machine
TIMED_BATCHES = 3  # passes of one batch each, after a warm-up pass
PROBE_IMAGES = 2  # the first pass; a configuration whose full batch would take over SLOW_BATCH_S is timed at this size
SLOW_BATCH_S = 2.0
MEASURE_BUDGET_S = 60.0  # of timing per dry run; the configurations left are scaled from those timed, by FLOPs
COSTS_FILE = "costs.json"
# a data-parallel trial's Ray Train start (its controller, workers and process group): 16 s quiet, up to 35 s and
# more busy, on the 2-core CPU machine (benchmarks/results/data_parallel.md)
GROUP_START_S = 20.0


# ----------------------------------------------------------------------------------------------------- epochs


@dataclasses.dataclass(frozen=True)
class Epochs:
    """The epochs a trial is projected to train: `expected` from the thesis, within [`low`, `high`]."""

    expected: int
    low: int
    high: int
    source: str  # "thesis" (its count for this configuration and tier) or "tier median" (none published)


def thesis_epochs(model: str, tier: str, *, pretrained: bool) -> tuple[int, str]:
    """The thesis's epoch count for the configuration on the tier, else the median of its counts on that tier
    (any tier for a custom one), with where it came from."""
    rows = catalog.published_results()
    for row in rows:
        if row["model"] == model and row["dataset"] == tier and row["pretrained"] == pretrained:
            return row["epochs"], "thesis"
    same = [r["epochs"] for r in rows if r["dataset"] == tier and r["pretrained"] == pretrained]
    same = same or [r["epochs"] for r in rows if r["pretrained"] == pretrained] or [r["epochs"] for r in rows]
    return round(statistics.median(same)), "tier median"


def projected_epochs(trial: Trial) -> Epochs:
    """The thesis's epochs mapped to this trial's early-stopping window and epoch cap."""
    config, thesis = trial.config, catalog.LOOP_DEFAULTS
    count, source = thesis_epochs(trial.model, trial.tier, pretrained=trial.pretrained)
    after_start = max(count - thesis["es_start"], 0) * config.es_patience / thesis["es_patience"]
    low = min(EarlyStopping.from_config(config).earliest_stop, config.max_epochs)
    expected = min(max(round(config.es_start + after_start), low), config.max_epochs)
    return Epochs(expected, low, config.max_epochs, source)


# ------------------------------------------------------------------------------------------------------- cost


@dataclasses.dataclass(frozen=True)
class Cost:
    """Measured seconds per training image, per evaluation image, and to build the model, on one device kind."""

    train_s: float
    eval_s: float
    build_s: float


def device_kind(device: torch.device, *, threads: int) -> str:
    """What a measurement is valid for: the GPU's name, or the CPU's model and the threads a trial uses."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type != "cpu":
        return device.type
    return f"cpu: {provenance.cpu_model()}, {threads} thread{'s' if threads != 1 else ''}"


def cost_key(trial: Trial, *, eval_batch_size: int) -> str:
    """Everything about a trial that changes its seconds per image."""
    c = trial.config
    fields = (trial.model, trial.pretrained and c.finetune, c.image_size, trial.batch_size, eval_batch_size)
    return "|".join(str(f) for f in (*fields, trial.channels, c.input, c.precision, c.channels_last))


def eval_batch_size(trial: Trial, device: torch.device) -> int:
    """The trainer's evaluation batch (loop.Trainer's rule)."""
    b = trial.batch_size
    return trial.config.eval_batch_size or (min(4 * b, 256) if device.type == "cuda" else b)


def _synthetic(n: int, *, trial: Trial, device: torch.device) -> DeviceSplit:
    size, colour = trial.config.image_size, trial.config.input == "colour"
    shape = (n, 3, size, size) if colour else (n, size, size)
    x = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    y = np.arange(n) % len(catalog.CLASSES)
    return DeviceSplit(x, y, channels=trial.channels, device=device, channels_last=trial.config.channels_last)


def _build(trial: Trial, device: torch.device) -> torch.nn.Module:
    """The trial's model with random weights (a pretrained one's shapes and frozen backbone: the same time)."""
    size = trial.config.image_size
    with torch.device(device):
        if trial.pretrained:
            model = models.build_model(trial.model, num_classes=1000, image_size=size)
            model = models.adapt_first_layer(
                model, channels=trial.channels, native=catalog.configuration(trial.model).channels
            )
            return models.freeze_backbone(model, num_classes=len(catalog.CLASSES), finetune=trial.config.finetune)
        return models.build_model(trial.model, image_size=size, channels=trial.channels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_cost(trial: Trial, device: torch.device) -> Cost:
    """Time one warm-up and a few real training and evaluation batches of the trial's model on `device`."""
    config, batch = trial.config, trial.batch_size
    eval_batch = eval_batch_size(trial, device)
    loop.set_precision(config.precision, device)
    torch.manual_seed(0)
    started = time.perf_counter()
    model = _build(trial, device)
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    _sync(device)
    build_s = time.perf_counter() - started
    split = _synthetic(max(batch, eval_batch), trial=trial, device=device)
    trainer = loop.Trainer(model, split, split, config, seed=0, batch_size=batch, step="eager")

    def seconds(run, repeat: int) -> float:
        """The median of `repeat` passes: a busy machine's odd slow one does not count."""
        times = []
        for _ in range(repeat):
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def train(data: DeviceSplit, size: int) -> None:
        loop.train_one_epoch(model, data.batches(size), trainer.optimizer, precision=config.precision)

    def evaluate(data: DeviceSplit, size: int) -> None:
        loop.evaluate(model, data.batches(size), precision=config.precision)

    # a probe of PROBE_IMAGES first (it also allocates and warms caches): where a full batch would take more than
    # SLOW_BATCH_S, the cost per image is taken at the largest batch that takes about that long: it falls with the
    # batch on a CPU too (timed at 2 images, ResNet-152's trials of grids/conclusions_quick.py were projected at 1.8
    # times what they took)
    probe = _synthetic(min(PROBE_IMAGES, len(split)), trial=trial, device=device)
    warm = seconds(lambda: train(probe, batch), 1)
    if warm / len(probe) * batch > SLOW_BATCH_S:
        size = max(len(probe), min(batch, int(SLOW_BATCH_S * len(probe) / warm)))
        timed, batch, eval_batch, repeat = _synthetic(size, trial=trial, device=device), size, size, 1
        seconds(lambda: train(timed, batch), 1)
    else:
        timed, repeat = split, TIMED_BATCHES
        seconds(lambda: train(timed, batch), 1)
    seconds(lambda: evaluate(timed, eval_batch), 1)
    train_s = seconds(lambda: train(timed, batch), repeat) / len(timed)
    eval_s = seconds(lambda: evaluate(timed, eval_batch), repeat) / len(timed)
    return Cost(train_s=train_s, eval_s=eval_s, build_s=build_s)


def training_flops(trial: Trial) -> tuple[float, float]:
    """(training, evaluation) FLOPs per image: the forward pass counted on the meta device (no memory, no weights),
    3x for a training step (forward and backward), 1x where only a new head trains (finetune="head")."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    model = _build(trial, meta)
    size, colour = trial.config.image_size, trial.config.input == "colour"
    x = torch.empty(1, 3 if colour else trial.channels, size, size, device=meta)
    with FlopCounterMode(display=False) as counter:
        model(x)
    forward = float(counter.get_total_flops())
    frozen = trial.pretrained and trial.config.finetune == "head"
    return forward * (1 if frozen else 3), forward


def busy() -> float:
    """The 1-minute load average per CPU core: above 1, a timing here is slower than the machine is."""
    return os.getloadavg()[0] / (os.cpu_count() or 1)


class CostTable:
    """Measured costs per device kind, kept in a JSON file so that each configuration is timed once per machine.

    Each cost keeps how busy the machine was when it was timed (`busy`); one timed while the machine was busier than
    its cores (load per core above BUSY) is timed again when it is less busy than that, so that a busy moment does
    not slow every later projection (measured on the 2-core machine: costs kept from a busy earlier session projected
    the quickstart at 2.2 times what its quiet run took; timed quiet, at 0.88 times).
    """

    BUSY = 1.0

    def __init__(self, path: Path | None, *, load: typing.Callable[[], float] = busy) -> None:
        self.path, self.spent, self.load = path, 0.0, load  # seconds spent measuring
        self.table: dict[str, dict[str, dict]] = {}
        if path is not None and path.is_file():
            try:
                self.table = json.loads(path.read_text())
            except (OSError, ValueError):  # a damaged cache is measured again
                self.table = {}

    def cost(
        self, trial: Trial, device: torch.device, *, threads: int, budget_s: float = math.inf
    ) -> tuple[Cost | None, bool]:
        """(the trial's cost, whether it was measured now); (None, False) when it is not known and this table has
        spent `budget_s` measuring."""
        kind = device_kind(device, threads=threads)
        key = cost_key(trial, eval_batch_size=eval_batch_size(trial, device))
        known = self._known(kind, key)
        if known is not None:
            return known, False
        if self.spent >= budget_s:
            return None, False
        before, started = torch.get_num_threads(), time.perf_counter()
        if device.type == "cpu":
            torch.set_num_threads(threads)
        try:
            cost = measure_cost(trial, device)
        finally:
            torch.set_num_threads(before)
            self.spent += time.perf_counter() - started
        self.table.setdefault(kind, {})[key] = {**dataclasses.asdict(cost), "busy": round(self.load(), 2)}
        self.save()
        return cost, True

    def _known(self, kind: str, key: str) -> Cost | None:
        """The kept cost, unless it was timed busy and the machine is not busy now."""
        entry = self.table.get(kind, {}).get(key)
        if entry is None or (entry.get("busy", 0.0) > self.BUSY and self.load() <= self.BUSY):
            return None
        return Cost(**{k: v for k, v in entry.items() if k != "busy"})

    def known(self, trial: Trial, device: torch.device, *, threads: int) -> bool:
        key = cost_key(trial, eval_batch_size=eval_batch_size(trial, device))
        return self._known(device_kind(device, threads=threads), key) is not None

    def save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(self.table, indent=1, sort_keys=True))
            os.replace(temporary, self.path)
        except OSError:  # a read-only cache: the projection is still printed, measured again next time
            pass


# ------------------------------------------------------------------------------------------------ concurrency


@dataclasses.dataclass(frozen=True)
class Slots:
    """What the scheduler has to place trials on: CPUs, GPUs (each a capacity of 1) and a cap on trials at once."""

    cpus: float
    gpus: int = 0
    max_concurrent: int = 0  # 0: no cap

    def describe(self) -> str:
        cap = f", at most {self.max_concurrent} at once" if self.max_concurrent else ""
        return f"{self.cpus:g} CPU{'s' if self.cpus != 1 else ''}, {self.gpus} GPU{'s' if self.gpus != 1 else ''}{cap}"


def schedule(durations: list[float], needs: list[tuple[float, float]], slots: Slots) -> tuple[float, int]:
    """(wall seconds, most trials at once) of trials started in order whenever their CPUs and GPU share are free.

    `needs` is each trial's (cpu, gpu); a GPU share below 1 must fit on one GPU, a whole share takes whole GPUs."""
    free_cpu, free_gpu = slots.cpus, [1.0] * slots.gpus
    running: list[tuple[float, int, float, list[tuple[int, float]]]] = []  # (end, index, cpu, [(gpu, share)])
    now, most = 0.0, 0
    for index, (seconds, (cpu, gpu)) in enumerate(zip(durations, needs, strict=True)):
        while True:
            place = _place(gpu, free_gpu) if cpu <= free_cpu + 1e-9 else None
            if place is not None and not (slots.max_concurrent and len(running) >= slots.max_concurrent):
                break
            if not running:  # it can never be placed: check_placeable refuses such a run; count it alone
                place = []
                break
            now, _, cpu_back, gpus_back = heapq.heappop(running)
            free_cpu += cpu_back
            for g, share in gpus_back:
                free_gpu[g] += share
        free_cpu -= cpu
        for g, share in place:
            free_gpu[g] -= share
        heapq.heappush(running, (now + seconds, index, cpu, place))
        most = max(most, len(running))
    return max((end for end, *_ in running), default=now), most


def _place(gpu: float, free: list[float]) -> list[tuple[int, float]] | None:
    """Which GPUs take a share `gpu` (the first that holds it; whole GPUs for 1 or more), or None."""
    if gpu <= 0:
        return []
    if gpu < 1:
        for g, left in enumerate(free):
            if left >= gpu - 1e-9:
                return [(g, gpu)]
        return None
    whole = [g for g, left in enumerate(free) if left >= 1 - 1e-9][: math.ceil(gpu)]
    return [(g, 1.0) for g in whole] if len(whole) >= math.ceil(gpu) else None


# ------------------------------------------------------------------------------------------------- projection


@dataclasses.dataclass(frozen=True)
class Projection:
    """Per trial: epochs and seconds (expected, low, high); per tier and in total: wall seconds with the slots."""

    trials: pd.DataFrame
    tiers: dict[str, tuple[float, float, float]]  # tier -> (expected, low, high) wall seconds, the tier alone
    total: tuple[float, float, float]
    at_once: int
    slots: Slots
    device: str
    measured: int  # configurations timed now (the rest came from the cache)

    def lines(self) -> list[str]:
        """The dry run's answer to "how long": one line in total, one per tier."""
        e, lo, hi = self.total
        out = [
            f"projected time on {self.device} ({self.slots.describe()}; up to {self.at_once} trial(s) at once): "
            f"{hours(e)} (range {hours(lo)}-{hours(hi)}: every trial stopping as early as its early stopping allows, "
            "or running to max_epochs)"
        ]
        tiers = ", ".join(f"{tier} {hours(t[0])}" for tier, t in self.tiers.items())
        out.append(f"  per tier, each alone: {tiers}")
        scaled = int((self.trials.cost_source != "measured").sum())
        if scaled:
            out.append(
                f"  {scaled} trial(s) not timed within the {MEASURE_BUDGET_S:.0f} s of timing: scaled from those timed "
                "by FLOPs per image (the timings are kept: the next dry run times more)"
            )
        guessed = int((self.trials.epochs_source != "thesis").sum())
        if guessed:
            out.append(f"  {guessed} trial(s) the thesis did not train: the median of its epochs on their tier")
        return out


def hours(seconds: float) -> str:
    """0.03 h, 1.2 h, 37 h."""
    h = seconds / 3600
    return f"{h:.2f} h" if h < 1 else f"{h:.1f} h" if h < 10 else f"{h:.0f} h"


def project(
    trials: list[Trial],
    plan: pd.DataFrame,
    *,
    split_sizes: dict[str, tuple[int, int, int]],
    slots: Slots,
    costs: CostTable,
    cpus_per_trial: float = 1.0,
    run_start_s: float = RUN_START_S,
    budget_s: float = MEASURE_BUDGET_S,
    announce: typing.Callable[[str], None] | None = None,
) -> Projection:
    """The projection of `trials` (with the plan's cpu and gpu per trial) on this machine's devices."""
    threads = max(1, int(cpus_per_trial))
    need = {r.trial_id: (float(r.cpu), float(r.gpu)) for r in plan.itertuples()}
    work = {r.trial_id: float(r.parameters) * r.image_size**2 * r.batch_size for r in plan.itertuples()}
    costs_of, measured, kinds = {}, 0, set()
    if announce is not None:
        unknown = {
            cost_key(t, eval_batch_size=eval_batch_size(t, loop.resolve_device(t.config.device)))
            for t in trials
            if not costs.known(t, loop.resolve_device(t.config.device), threads=threads)
        }
        if unknown:
            announce(
                f"timing {len(unknown)} configuration(s) on a few batches each (at most {budget_s:.0f} s; "
                f"kept in {costs.path})"
            )
    for trial in sorted(trials, key=lambda t: work.get(t.trial_id, 0.0)):  # the cheapest first, within the budget
        device = loop.resolve_device(trial.config.device)
        kinds.add(device_kind(device, threads=threads))
        costs_of[trial.trial_id], fresh = costs.cost(trial, device, threads=threads, budget_s=budget_s)
        measured += fresh
    scaled = fill_by_flops(trials, costs_of)
    rows = []
    for trial in trials:
        cost = costs_of[trial.trial_id]
        n_train, n_val, n_test = split_sizes[trial.tier]
        # a data-parallel trial's workers each take 1/workers of the images at the same cost per image (perfect
        # scaling: their communication is not counted), after Ray Train has started their group
        workers = trial.config.workers
        epoch_s = (n_train * cost.train_s + n_val * cost.eval_s) / workers
        fixed = cost.build_s + n_test * cost.eval_s / workers + (GROUP_START_S if workers > 1 else 0.0)
        epochs = projected_epochs(trial)
        rows.append(
            {
                "trial_id": trial.trial_id,
                "tier": trial.tier,
                "epochs": epochs.expected,
                "epochs_low": epochs.low,
                "epochs_high": epochs.high,
                "epochs_source": epochs.source,
                "cost_source": "scaled by FLOPs" if trial.trial_id in scaled else "measured",
                "epoch_seconds": epoch_s,
                "seconds": fixed + epochs.expected * epoch_s,
                "seconds_low": fixed + epochs.low * epoch_s,
                "seconds_high": fixed + epochs.high * epoch_s,
            }
        )
    frame = pd.DataFrame(rows)

    def wall(part: pd.DataFrame) -> tuple[tuple[float, float, float], int]:
        needs = [need[t] for t in part.trial_id]
        walls = [schedule(part[c].tolist(), needs, slots) for c in ("seconds", "seconds_low", "seconds_high")]
        return tuple(run_start_s + w for w, _ in walls), walls[0][1]

    total, at_once = wall(frame)
    tiers = {tier: wall(frame[frame.tier == tier])[0] for tier in dict.fromkeys(frame.tier)}
    return Projection(frame, tiers, total, at_once, slots, " and ".join(sorted(kinds)), measured)


def fill_by_flops(trials: list[Trial], costs_of: dict[str, Cost | None]) -> set[str]:
    """Give every trial without a measured cost one scaled from the measured ones by FLOPs per image (the median
    seconds per FLOP of those measured); the ids of those scaled."""
    missing = [t for t in trials if costs_of[t.trial_id] is None]
    if not missing:
        return set()
    flops = {}
    for t in trials:
        key = (t.model, t.pretrained, t.config.finetune, t.config.image_size, t.channels, t.config.input)
        flops[t.trial_id] = flops.get(key) or training_flops(t)
        flops[key] = flops[t.trial_id]
    known = [t for t in trials if costs_of[t.trial_id] is not None]
    per_train = statistics.median(costs_of[t.trial_id].train_s / flops[t.trial_id][0] for t in known)
    per_eval = statistics.median(costs_of[t.trial_id].eval_s / flops[t.trial_id][1] for t in known)
    build = statistics.median(costs_of[t.trial_id].build_s for t in known)
    for t in missing:
        train, evaluation = flops[t.trial_id]
        costs_of[t.trial_id] = Cost(train_s=per_train * train, eval_s=per_eval * evaluation, build_s=build)
    return {t.trial_id for t in missing}


def split_sizes(manifest: pd.DataFrame, tiers: dict[str, int | None]) -> dict[str, tuple[int, int, int]]:
    """Each tier's train / val / test images: the prepared data's, else (a tier the data cannot fill) the
    thesis's rule on the full dataset."""
    sizes = {}
    for tier, size in tiers.items():
        rows = manifest[manifest.tier == tier] if "tier" in manifest else manifest.iloc[:0]
        if len(rows):
            sizes[tier] = tuple(int((rows.split == s).sum()) for s in catalog.SPLITS)
        else:
            sizes[tier] = catalog.tier_split(catalog.PBC_CLASS_COUNTS, size or catalog.PBC_IMAGES)
    return sizes


def local_slots(*, num_cpus: int | None, max_concurrent: int = 0) -> Slots:
    """The slots of a Ray started on this machine."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return Slots(cpus=float(num_cpus or os.cpu_count() or 1), gpus=gpus, max_concurrent=max_concurrent)


def cost_table(cache: str | None) -> CostTable:
    """The cost table beside the image cache (--cache, else ~/.cache/raybench)."""
    folder = Path(cache).expanduser() if cache else Path.home() / ".cache" / "raybench"
    return CostTable(folder / COSTS_FILE)
