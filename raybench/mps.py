"""NVIDIA's Multi-Process Service: trials that share a GPU run their kernels side by side only under MPS.

Without it, processes on one GPU take turns (time slicing): four small trials packed on an H200 ran at 0.91x
the throughput of the same trials one after another (benchmarks/gpu.py). So raybench packs trials onto a GPU
only where an MPS daemon serves it: `ensure` joins the node's running daemon or starts one, and says why not
when it cannot (no NVIDIA driver tools, no permission). Torch-free and Ray-free; the cluster files start the
daemon on every GPU node the same way (`nvidia-cuda-mps-control -d`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
DEFAULT_PIPE_DIRECTORY = "/tmp/nvidia-mps"  # NVIDIA's default; CUDA_MPS_PIPE_DIRECTORY moves it


@dataclasses.dataclass(frozen=True)
class Mps:
    """Whether an MPS daemon serves this node's GPUs, whether raybench started it, and why not if it does not."""

    active: bool
    started_here: bool = False
    reason: str = ""


def pipe_directory() -> Path:
    return Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", DEFAULT_PIPE_DIRECTORY))


def running() -> bool:
    """An MPS control daemon listens on this node (its control pipe exists)."""
    return (pipe_directory() / "control").exists()


def ensure(*, wait_s: float = 10.0) -> Mps:
    """Join the node's MPS daemon, or start one; never raises (a node without MPS runs trials on whole GPUs)."""
    if running():
        return Mps(active=True, reason=f"joined the MPS daemon at {pipe_directory()}")
    control = shutil.which(CONTROL)
    if control is None:
        return Mps(active=False, reason=f"{CONTROL} is not installed (it comes with the NVIDIA driver)")
    try:
        started = subprocess.run([control, "-d"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return Mps(active=False, reason=f"{CONTROL} -d failed: {error}")
    if started.returncode != 0:
        return Mps(active=False, reason=f"{CONTROL} -d exited {started.returncode}: {started.stderr.strip()[-300:]}")
    deadline = time.monotonic() + wait_s
    while not running() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not running():
        return Mps(active=False, reason=f"{CONTROL} -d started, but no control pipe appeared in {pipe_directory()}")
    return Mps(active=True, started_here=True, reason=f"started an MPS daemon at {pipe_directory()}")


def stop(state: Mps) -> None:
    """Stop the daemon if raybench started it (one that was running before is left alone)."""
    if state.started_here and shutil.which(CONTROL):
        subprocess.run([CONTROL], input="quit\n", text=True, capture_output=True, timeout=30, check=False)
