"""What the benchmarks share: side-by-side timing, the rows of the table, and the machine they ran on."""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import threading
import time
import typing

import torch


@dataclasses.dataclass
class Row:
    """One line of the results table: a figure, its goal, and whether it met it (None: no goal)."""

    benchmark: str
    figure: str
    value: float | None
    unit: str
    goal: str = ""
    met: bool | None = None
    note: str = ""

    def cells(self) -> list[str]:
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        met = {True: "yes", False: "NO", None: ""}[self.met]
        return [self.benchmark, self.figure, f"{value} {self.unit}".strip(), self.goal, met, self.note]


def interleaved(
    runs: dict[str, typing.Callable[[int], float]], *, reps: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Call each run once per repetition, side by side: A B, B A, A B, ... (the order flips so neither always
    goes first). Each run gets the repetition index and returns its own seconds, so it can keep setup untimed.
    `warmup` repetitions (index -1, -2, ...) run first and are not kept."""
    for rep in range(-warmup, 0):
        for run in runs.values():
            run(rep)
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            times[name].append(runs[name](rep))
    return times


def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-repetition ratios: each pair was measured side by side, so the machine's drift cancels in it."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def median(values: typing.Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def seconds(fn: typing.Callable[[], object], *, device: torch.device | None = None) -> float:
    """Wall seconds of `fn()`, synchronising a CUDA device before and after."""
    sync = device is not None and device.type == "cuda"
    if sync:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def load_average() -> float:
    """The 1-minute load average (the machine is shared: other people's runs slow ours)."""
    return os.getloadavg()[0]


class LoadSampler:
    """Samples the 1-minute load average every `every_s` seconds in a background thread while in use."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s, self.samples = every_s, [load_average()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(load_average())

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(load_average())

    def summary(self) -> dict:
        return {
            "before": self.samples[0],
            "after": self.samples[-1],
            "max": max(self.samples),
            "mean": sum(self.samples) / len(self.samples),
            "samples": len(self.samples),
        }


def wait_for_load(limit: float, *, max_wait_s: float = 600, poll_s: float = 30) -> float:
    """Poll until the 1-minute load average is below `limit` (at most `max_wait_s`); return the last reading."""
    deadline = time.monotonic() + max_wait_s
    load = load_average()
    while load >= limit and time.monotonic() < deadline:
        print(f"load average {load:.2f} >= {limit}: waiting {poll_s:.0f}s", flush=True)
        time.sleep(poll_s)
        load = load_average()
    return load


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict:
    """The machine and software the figures were measured on."""
    info = {
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "arch": platform.machine(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": None,
    }
    try:
        import ray
        import torchvision

        info["ray"], info["torchvision"] = ray.__version__, torchvision.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return info


def describe(info: dict) -> str:
    gpu = info["gpu"] or "no GPU"
    cpu = f"{info['cpu_cores']}-core {info['arch']} CPU ({info['cpu']})"
    return f"{cpu}, {info['memory_gb']:g} GB, {gpu}; torch {info['torch']}"
