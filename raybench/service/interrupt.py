"""Ctrl-C of a run: Tune stops its trials and saves its state; raybench then says in one line how to go on.

Tune's own lines about it are for Tune's API (`Tuner.restore(...)`), and its analysis warns about every trial that
had not started yet (it has no metrics to fetch); both are dropped here, on an interrupted run and on its resume.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

UNFINISHED = 3  # the exit code of a run that left planned trials without results (Ctrl-C, SIGTERM): --resume goes on

# (logger, the start of a message it drops); the first also says that a Ctrl-C came
DROPPED = (
    ("ray.tune.tune", "Stop signal received"),
    ("ray.tune.tune", "Experiment has been interrupted"),
    ("ray.tune.tune", "Training has been interrupted"),
    ("ray.tune.tune", "Trials did not complete"),
    ("ray.tune.analysis.experiment_analysis", "Failed to fetch metrics"),
)


class TuneNoise(logging.Filter):
    """Drops Tune's lines about an interrupt and about trials without metrics; remembers an interrupt."""

    def __init__(self, logger: str) -> None:
        super().__init__()
        self.starts = tuple(start for name, start in DROPPED if name == logger)
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(DROPPED[0][1]):
            self.interrupted = True
        return not message.startswith(self.starts)


class Quiet:
    """What `quiet_tune` yields: whether Tune was stopped by a Ctrl-C (SIGINT) while it ran."""

    def __init__(self, filters: list[TuneNoise]) -> None:
        self.filters = filters

    @property
    def interrupted(self) -> bool:
        return any(f.interrupted for f in self.filters)


@contextlib.contextmanager
def quiet_tune() -> Iterator[Quiet]:
    """Tune's interrupt and missing-metrics lines dropped while the block runs."""
    loggers = {name: logging.getLogger(name) for name, _ in DROPPED}
    filters = {name: TuneNoise(name) for name in loggers}
    for name, logger in loggers.items():
        logger.addFilter(filters[name])
    try:
        yield Quiet(list(filters.values()))
    finally:
        for name, logger in loggers.items():
            logger.removeFilter(filters[name])


def resume_command(argv: list[str] | None = None) -> str:
    """The command line that resumes this run: as it was started (`raybench run ...` or `python -m raybench.run
    ...`), with --resume."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv else Path("raybench")
    if script.name == "raybench":  # the console script: raybench run ARGS
        found = shutil.which("raybench")
        head = ["raybench" if found and Path(found).absolute() == script.absolute() else str(script), "run"]
        rest = argv[2:]
    else:  # python -m raybench.run ARGS
        python = shutil.which("python")
        head = ["python" if python == sys.executable else sys.executable, "-m", "raybench.run"]
        rest = argv[1:]
    rest = [a for a in rest if a != "--dry-run"]
    if "--resume" not in rest:
        rest.append("--resume")
    return shlex.join([*head, *rest])
