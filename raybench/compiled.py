"""Compiled training and evaluation steps (`step="compiled"`) that can only ever cost speed, never a trial.

A `CompiledStep` wraps one of the loop's steps: batches of the size it was built for run compiled (one graph per
step: `dynamic=False` would otherwise compile every short last batch again), every other batch runs eager, and
any failure to compile or to capture a CUDA graph switches it to eager for the rest of the trial with one console
line and the reason (`failure`, for the trial's row). The seconds its compiling calls took are counted apart
(`compile_seconds`), so that an epoch's seconds are the steps' own.
"""

from __future__ import annotations

import time
import typing

import torch

Compiler = typing.Callable[[typing.Callable], typing.Callable]


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA out of memory, as torch raises it or as a crowded GPU reports it ("CUDA error: out of memory")."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error)


def torch_compiler(device: torch.device) -> Compiler:
    """torch.compile as raybench uses it: CUDA graphs on a GPU (the CPU no longer paces small steps), else
    Inductor's default mode; one shape per graph."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    return lambda step: torch.compile(step, mode=mode, dynamic=False)


def reset_compiler(*, compile_threads: int) -> None:
    """A clean compiler for a new trial in this process.

    Dynamo keys its cache on the step's code, which every trial shares: without a reset the 9th trial in one
    process (Ray's reused actors) hits `recompile_limit` and silently runs eager; the reset also frees the last
    trial's graphs and CUDA graph pools. Past the limit, compiling raises instead (and the step falls back with
    the reason). Inductor's compile workers are capped at this trial's CPUs: trials packed on one node would
    otherwise each start one per core.
    """
    torch._dynamo.reset()
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    torch._inductor.config.compile_threads = max(1, compile_threads)


def describe(error: BaseException) -> str:
    """One line: the error and, when the compiler wraps another (BackendCompilerFailed), the one it wraps."""
    root = error
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = inner
    lines = [f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}" for e in {error: 0, root: 0}]
    return " <- ".join(lines)


class CompiledStep:
    """A loop step (`loop.train_step` or `loop.eval_step`) compiled for batches of `batch_size` images."""

    def __init__(self, step: typing.Callable, *, batch_size: int, compiler: Compiler, name: str) -> None:
        self.eager, self.batch_size, self.name = step, batch_size, name
        self.compiled = compiler(step)
        self.failure: str | None = None  # why it runs eager now, once compiling or capturing failed
        self.compile_seconds = 0.0
        self.calls = 0  # compiled calls so far; the first compiles

    @property
    def ran(self) -> str:
        """ "compiled" while compiled calls run, "eager" once it fell back."""
        return "eager" if self.failure is not None else "compiled"

    def __call__(self, *args):
        x = args[-3]  # both steps take (..., x, y, precision)
        if self.failure is not None or len(x) != self.batch_size:
            return self.eager(*args)
        started = time.perf_counter()
        try:
            out = self.compiled(*args)
        except Exception as error:
            if is_out_of_memory(error):  # the trial halves its batch (trial.fit_halving_on_oom)
                raise
            self.failure = describe(error)
            print(f"raybench: the compiled {self.name} failed, running it eager from here: {self.failure}", flush=True)
            return self.eager(*args)
        if self.calls == 0:  # the first call traces and compiles: its time is not the step's
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            self.compile_seconds += time.perf_counter() - started
        self.calls += 1
        return out
