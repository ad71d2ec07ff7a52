"""Where a run's numbers came from: versions, the code's commit, the command, the grid file, the machine, the times.

Torch-free and Ray-free (versions are read from the installed packages' metadata), so the report can read it too.
Each invocation of a run (the first, each --resume) adds one entry to RESULTS/NAME/run.json.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path

from raybench import files

RUN_FILE = "run.json"
PACKAGES = ("raybench", "torch", "torchvision", "ray", "numpy", "pandas", "pyarrow")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(command: list[str], cwd: Path | None = None) -> str | None:
    """A short command's output, None when it is missing or fails (provenance never stops a run)."""
    if shutil.which(command[0]) is None:
        return None
    try:
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(folder: Path) -> dict:
    """The commit of the checkout raybench runs from and whether its tracked files differ from it (None outside git)."""
    commit = _run(["git", "rev-parse", "HEAD"], folder)
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], folder)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[dict]:
    """This machine's NVIDIA GPUs (name, driver, memory), from nvidia-smi; [] without one."""
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    rows = []
    for line in (out or "").splitlines():
        name, driver, memory = (part.strip() for part in line.split(",", 2))
        rows.append({"name": name, "driver": driver, "memory": memory})
    return rows


def describe(*, argv: list[str], grid_file: str | Path | None = None) -> dict:
    """One invocation's provenance, with its start time (`ended_at` is filled in by `finish`)."""
    grid_sha = hashlib.sha256(Path(grid_file).read_bytes()).hexdigest() if grid_file else None
    return {
        "started_at": now(),
        "ended_at": None,
        "argv": list(argv),
        "cwd": os.getcwd(),
        "grid_file": str(grid_file) if grid_file else None,
        "grid_sha256": grid_sha,
        "versions": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "git": git_state(Path(__file__).resolve().parent),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus(),
    }


def read_runs(out: str | Path) -> list[dict]:
    """Every invocation recorded for a results folder, oldest first ([] without run.json)."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text()).get("runs", []))
    except (OSError, ValueError, AttributeError):
        return []


def record(out: str | Path, info: dict) -> None:
    """Add (or, for the same start, update) this invocation's entry in run.json, atomically."""
    runs = [r for r in read_runs(out) if r.get("started_at") != info["started_at"] or r.get("argv") != info["argv"]]
    path = Path(out) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"runs": [*runs, info]}, indent=2) + "\n")
    files.replace(tmp, path)


def finish(out: str | Path, info: dict) -> None:
    info["ended_at"] = now()
    record(out, info)
