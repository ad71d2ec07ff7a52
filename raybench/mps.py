"""NVIDIA's Multi-Process Service: trials that share a GPU run their kernels side by side only under MPS.

Without it, processes on one GPU take turns (time slicing): four small trials packed on an H200 ran at 0.91x
the throughput of the same trials one after another (benchmarks/gpu.py). So raybench packs trials onto a GPU
only where an MPS daemon serves it: `ensure` joins the node's running daemon or starts one, and says why not
when it cannot (no NVIDIA driver tools, no permission, a server that serves no CUDA client). Torch-free and
Ray-free; the cluster files start the daemon on every GPU node the same way (`nvidia-cuda-mps-control -d`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
import typing
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


# A CUDA client: the MPS server starts at the first one, so only a client that got a context proves MPS works
CUDA_CLIENT = ("import torch; x = torch.ones(1, device='cuda'); torch.cuda.synchronize(); print(float(x.sum()))",)
CLIENT_TIMEOUT_S = 60.0


def client_starts(command: typing.Sequence[str], *, timeout_s: float) -> str:
    """ "" when `command` (a CUDA client) exits 0 within `timeout_s`, else why not."""
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"a CUDA client did not start within {timeout_s:.0f}s"
    except OSError as error:
        return f"a CUDA client could not run: {error}"
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [""])[-1][-300:]
        return f"a CUDA client failed (exit {proc.returncode}): {tail}"
    return ""


def ensure(
    *, wait_s: float = 10.0, client: typing.Sequence[str] | None = None, client_timeout_s: float = CLIENT_TIMEOUT_S
) -> Mps:
    """Join the node's MPS daemon, or start one, and count it active only once a real CUDA client ran under it
    (`client`: a command; by default this Python creating a CUDA context); never raises (a node without MPS
    runs trials on whole GPUs). A daemon started here whose client fails is stopped again."""
    client = list(client or (sys.executable, "-c", *CUDA_CLIENT))
    if running():
        failed = client_starts(client, timeout_s=client_timeout_s)
        if failed:
            return Mps(active=False, reason=f"the MPS daemon at {pipe_directory()} serves no client ({failed})")
        return Mps(active=True, reason=f"joined the MPS daemon at {pipe_directory()}")
    started = _start(wait_s)
    if not started.active:
        return started
    failed = client_starts(client, timeout_s=client_timeout_s)
    if failed:
        stop(started)
        return Mps(active=False, reason=f"started an MPS daemon, but {failed}: stopped it again")
    return started


def _start(wait_s: float) -> Mps:
    """Start an MPS control daemon and wait for its control pipe."""
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
