"""The stages of the GPU check, each run in a process of its own (`python -m benchmarks.gpu_check.stages NAME`).

Each returns its record (`checks`: name -> {"ok": bool, ...}; the stage passes when every check is ok) and the
process writes it to OUT/NAME.json; what it prints is its log. `Size` holds every size a stage uses: the GPU's
(thesis sizes where the stage is about them) and the CPU's (tiny: the code runs, the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import gpu
from benchmarks.common import seconds
from raybench import batches, catalog, loop, models, mps, spec
from raybench import trial as lifecycle

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Size:
    """Every size the stages use, for one kind of machine."""

    device: str
    small_model: str  # (b): compiled against eager
    small_image: int
    compile_model: str  # (c): compile cost at thesis size
    compile_image: int
    run_models: tuple[str, ...]  # (d): through Ray Tune on the tiny tier
    run_image: int
    run_epochs: int
    bench_models: tuple[str, ...]  # (e): the step benchmark
    bench_image: int
    bench_steps: int
    share_steps: int  # (f)
    tolerance: float  # (b): per-epoch losses of compiled steps within this of eager ones (relative)


GPU = Size(
    device="cuda",
    small_model="resnet_18",
    small_image=64,
    compile_model="resnet_152",
    compile_image=352,
    run_models=catalog.MODEL_NAMES,  # every configuration trained from scratch (pretrained ones need downloads)
    run_image=352,
    run_epochs=2,
    bench_models=catalog.MODEL_NAMES,
    bench_image=352,
    bench_steps=5,
    share_steps=50,
    tolerance=2e-3,  # TF32 convolutions, cuDNN's autotuned kernels differ from run to run (tests/test_gpu.py)
)
CPU = Size(
    device="cpu",
    small_model="lenet5",
    small_image=32,
    compile_model="lenet5",
    compile_image=32,
    run_models=("lenet5", "mobilenet_small"),
    run_image=32,
    run_epochs=2,
    bench_models=("lenet5", "mobilenet_small"),
    bench_image=32,
    bench_steps=1,
    share_steps=2,
    tolerance=1e-4,
)


def check(ok: bool, **details) -> dict:
    return {"ok": bool(ok), **details}


def release() -> None:
    """Free what the last configuration held (memory, compiled graphs, CUDA graph pools) before the next."""
    import gc

    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ------------------------------------------------------------------------------------------ (a) environment


def environment(size: Size, out: Path, args: argparse.Namespace) -> dict:
    """GPU, driver, compute mode, torch, and what Triton needs to compile: a C compiler, Python.h, libcuda, caches."""
    checks, facts = {}, {"python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform()}
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "name,driver_version,compute_mode,memory.total,mig.mode.current"
        proc = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True)
        facts["nvidia_smi"] = proc.stdout.strip() or proc.stderr.strip()
    cuda = torch.cuda.is_available()
    facts["cuda"] = torch.version.cuda
    if cuda:
        props = torch.cuda.get_device_properties(0)
        facts.update(
            gpu=props.name,
            gpu_memory_gb=props.total_memory / 1e9,
            capability=list(props.major_minor()) if hasattr(props, "major_minor") else [props.major, props.minor],
        )
        x = torch.randn(1024, 1024, device="cuda")
        checks["cuda_matmul"] = check(bool(torch.isfinite(x @ x).all()))
    checks["device"] = check(cuda or size.device == "cpu", expected=size.device, cuda=cuda)
    compiler = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc") or shutil.which("clang")
    checks["c_compiler"] = check(compiler is not None, path=compiler)
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    checks["python_h"] = check(include.exists(), path=str(include))
    if size.device == "cuda":
        found = (
            subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
            if Path("/sbin/ldconfig").exists()
            else ""
        )
        checks["libcuda"] = check("libcuda.so" in found, how="ldconfig -p")
        try:
            import triton

            facts["triton"] = triton.__version__
            checks["triton"] = check(True, version=triton.__version__)
        except ImportError as error:
            checks["triton"] = check(False, error=str(error))
    for name, path in {"inductor_cache": Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]), "out": out}.items():
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        try:
            probe.write_text("ok")
            probe.unlink()
            checks[f"writable_{name}"] = check(True, path=str(path))
        except OSError as error:
            checks[f"writable_{name}"] = check(False, path=str(path), error=str(error))
    try:
        import ray

        checks["ray"] = check(ray.__version__.startswith("2."), version=ray.__version__, path=ray.__file__)
    except ImportError as error:
        checks["ray"] = check(False, error=f"{error}: run benchmarks/carry.py here and carry its folder")
    try:
        import mlp_mixer_pytorch  # noqa: F401

        checks["mlp_mixer_pytorch"] = check(True)
    except ImportError as error:
        checks["mlp_mixer_pytorch"] = check(False, error=str(error))
    return {"facts": facts, "checks": checks}


# ------------------------------------------------------------------------ (b) compiled against eager


def small_trainer(size: Size, *, step: str, max_epochs: int = 3, seed: int = 0) -> loop.Trainer:
    """The small model on random images (the numbers compare two steps, not models), 2 short batches an epoch."""
    device = torch.device(size.device)
    config = spec.TrainConfig(
        image_size=size.small_image,
        device=size.device,
        step=step,
        max_epochs=max_epochs,
        es_start=1,
        es_patience=3,
        es_min_delta=0.0,
    )
    rng = np.random.default_rng(1)
    n_train, n_val, batch = 68, 36, 16  # 4 full batches + one of 4; evaluation 2 + a short one on the CPU
    x = rng.integers(0, 256, (n_train + n_val, size.small_image, size.small_image), dtype=np.uint8)
    y = rng.integers(0, len(catalog.CLASSES), n_train + n_val)
    loop.seed_everything(seed)
    loop.set_precision("fp32", device)
    model = models.build_model(size.small_model, image_size=size.small_image).to(device)
    channels = catalog.configuration(size.small_model).channels

    def split(a, b):
        return batches.DeviceSplit(a, b, channels=channels, device=device)

    train, val = split(x[:n_train], y[:n_train]), split(x[n_train:], y[n_train:])
    return loop.Trainer(model, train, val, config, seed=seed, batch_size=batch)


def numbers(trainer: loop.Trainer) -> list[tuple[float, float, float]]:
    return [(r["train_loss"], r["val_loss"], r["lr"]) for r in trainer.history]


def close(a: list, b: list, rel: float) -> bool:
    return len(a) == len(b) and all(
        abs(x - y) <= rel * max(abs(x), abs(y), 1e-12)
        for p, q in zip(a, b, strict=True)
        for x, y in zip(p, q, strict=True)
    )


def compiled_vs_eager(size: Size, out: Path, args: argparse.Namespace) -> dict:
    """Compiled steps give eager's numbers within the tolerance, resume exactly, compile in trial after trial of one
    process, and a forced CUDA out-of-memory under them retries eager at the same batch."""
    checks = {}
    eager = small_trainer(size, step="eager")
    loop.fit(eager)
    started = time.perf_counter()
    graphed = small_trainer(size, step="compiled")
    loop.fit(graphed)
    checks["numbers"] = check(
        close(numbers(eager), numbers(graphed), size.tolerance) and graphed.step_ran == "compiled",
        tolerance=size.tolerance,
        eager=numbers(eager),
        compiled=numbers(graphed),
        step=graphed.step_ran,
        fallback=graphed.step_failure,
        compile_seconds=graphed.compile_seconds,
        epoch_seconds=[r["epoch_seconds"] for r in graphed.history],
        eager_epoch_seconds=[r["epoch_seconds"] for r in eager.history],
        wall_s=time.perf_counter() - started,
    )
    with tempfile.TemporaryDirectory() as directory:
        first = small_trainer(size, step="compiled", max_epochs=1)
        loop.fit(first)
        first.save(Path(directory) / "state.pt")
        resumed = small_trainer(size, step="compiled")
        resumed.load(Path(directory) / "state.pt")
        lr = resumed.optimizer.param_groups[0]["lr"]
        loop.fit(resumed)
    checks["resume"] = check(
        close(numbers(graphed), numbers(resumed), size.tolerance)
        and resumed.step_ran == "compiled"
        and isinstance(lr, torch.Tensor)
        and lr.device.type == size.device,
        uninterrupted=numbers(graphed),
        resumed=numbers(resumed),
        rate_device=str(getattr(lr, "device", "float")),
    )
    ran = []
    for seed in range(3):  # trial after trial in one process, as a reused actor runs them
        t = small_trainer(size, step="compiled", max_epochs=1, seed=seed)
        loop.fit(t)
        ran.append({"step": t.step_ran, "fallback": t.step_failure, "compile_seconds": t.compile_seconds})
    checks["trials_in_one_process"] = check(all(r["step"] == "compiled" for r in ran), trials=ran)
    forced = []

    def build(batch_size, step=None):
        return small_trainer(size, step=step or "compiled", max_epochs=1)

    def on_epoch_end(row, trainer, start):
        if trainer.compiled:
            from raybench.service.trainable import out_of_memory

            forced.append(trainer.batch_size)
            out_of_memory("gpu_check (b)")

    try:
        t = lifecycle.fit_halving_on_oom(build, batch_size=16, on_epoch_end=on_epoch_end, label="gpu_check")
        checks["forced_oom"] = check(
            forced == [16] and t.step_ran == "eager" and t.batch_size == 16 and t.epoch == 1,
            note=t.step_failure,
            reserved_gb=torch.cuda.max_memory_reserved() / 1e9 if size.device == "cuda" else None,
        )
    except Exception as error:
        checks["forced_oom"] = check(False, error=f"{type(error).__name__}: {str(error)[:300]}")
    return {"checks": checks}


# ------------------------------------------------------------------------------- (c) compile cost


def time_steps(name: str, *, image: int, batch: int, config: spec.TrainConfig) -> dict:
    """A first epoch of 3 training steps (compiling, if compiled), a steady one, and a first evaluation batch."""
    device = torch.device(config.device)
    torch.manual_seed(0)
    model = models.build_model(name, image_size=image).to(device)
    split = dict(image_size=image, channels=catalog.configuration(name).channels, device=device, channels_last=False)
    train, val = gpu.synthetic_split(batch * 3, **split), gpu.synthetic_split(batch, **split)
    trainer = loop.Trainer(model, train, val, config, seed=0, batch_size=batch)
    started = time.perf_counter()

    def epoch():
        loop.train_one_epoch(model, train.batches(batch), trainer.optimizer, step=trainer.train_step)

    first = seconds(epoch, device=device)
    steady = seconds(epoch, device=device)
    evaluated = seconds(lambda: loop.evaluate(model, val.batches(batch), step=trainer.eval_step), device=device)
    return {
        "first_epoch_s": first,
        "train_step_s": steady / 3,
        "first_eval_s": evaluated,
        "compile_seconds": trainer.compile_seconds,
        "step": trainer.step_ran,
        "fallback": trainer.step_failure,
        "wall_s": time.perf_counter() - started,
    }


def compile_cost(size: Size, out: Path, args: argparse.Namespace) -> dict:
    """Seconds to compile one large model's training and evaluation steps at thesis size, and what a step then costs."""
    name, image = size.compile_model, size.compile_image
    batch = catalog.batch_size(name)
    config = spec.TrainConfig(image_size=image, device=size.device, step="compiled")
    rows = {}
    for step in ("eager", "compiled"):
        release()
        rows[step] = time_steps(name, image=image, batch=batch, config=dataclasses.replace(config, step=step))
        print(f"  {name} {step}: {json.dumps(rows[step])}", flush=True)
    c, e = rows["compiled"], rows["eager"]
    saved = e["train_step_s"] - c["train_step_s"]
    return {
        "model": name,
        "image_size": image,
        "batch_size": batch,
        "steps": rows,
        # training steps before compiling pays for itself (never, when compiled steps are not faster)
        "payback_steps": c["compile_seconds"] / saved if saved > 0 else None,
        "checks": {"compiled": check(c["step"] == "compiled", fallback=c["fallback"])},
    }


# ------------------------------------------------------------------------- (d) raybench.run through Ray Tune


def ray_run(size: Size, out: Path, args: argparse.Namespace) -> dict:
    """A real `python -m raybench.run` over every configuration on the tiny tier of real images, with a forced CUDA
    out-of-memory (the batch halves, the trial finishes) and a trial killed and resumed; then the report and the
    outside check on its results."""
    results_dir = out / "run"
    grid_file = out / "gpu_check_grid.py"
    grid = {
        "name": "gpu_check",
        "data": None,
        "seeds": [0],
        "options": {"image_size": size.run_image, "max_epochs": size.run_epochs, "es_start": 1, "es_patience": 5},
        "sweeps": [{"models": list(size.run_models), "tiers": ["tiny"]}],
    }
    grid_file.write_text(f'"""The GPU check\'s sub-grid (written by benchmarks/gpu_check)."""\n\nGRID = {grid!r}\n')
    killed, oom = f"{size.run_models[0]}-tiny-seed0", f"{size.run_models[-1]}-tiny-seed0"
    command = [
        sys.executable,
        "-m",
        "raybench.run",
        str(grid_file),
        "--results",
        str(results_dir),
        "--checkpoint-every",
        "0",
        "--inject-failure",
        f"{killed}=once:1",
        "--inject-failure",
        f"{oom}=oom:1",
        "--cache",
        str(out / "cache"),
    ]
    if args.data:
        command += ["--data", args.data]
    if size.device == "cpu":
        command += ["--num-cpus", "2"]
    checks = {}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.box_s)
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n", flush=True)
    checks["run"] = check(proc.returncode == 0, exit=proc.returncode, seconds=time.perf_counter() - started)
    folder = results_dir / "gpu_check"
    if (folder / "trials.parquet").exists():
        import pandas as pd

        trials = pd.read_parquet(folder / "trials.parquet")
        epochs = pd.read_parquet(folder / "epochs.parquet")
        by_id = trials.set_index("trial_id")
        checks["every_trial_ok"] = check(
            (trials.status == "ok").all() and len(trials) == len(size.run_models),
            trials=len(trials),
            failed=trials[trials.status != "ok"].trial_id.tolist(),
        )
        thesis_batch = catalog.batch_size(size.run_models[-1])
        checks["oom_halved"] = check(
            oom in by_id.index and by_id.loc[oom, "batch_size"] == thesis_batch // 2,
            batch_size=int(by_id.loc[oom, "batch_size"]) if oom in by_id.index else None,
            thesis_batch=thesis_batch,
        )
        checks["killed_resumed"] = check(
            killed in by_id.index
            and by_id.loc[killed, "status"] == "ok"
            and "injected failure" in proc.stdout + proc.stderr + _trial_logs(results_dir),
            epochs=int((epochs.trial_id == killed).sum()),
        )
        columns = [
            "trial_id",
            "step",
            "device",
            "batch_size",
            "epochs",
            "seconds_per_epoch",
            "peak_gpu_memory_gb",
            "peak_gpu_reserved_gb",
            "gpu_fraction",
            "gpu_sharing",
            "test_accuracy",
        ]
        table = trials[columns].to_dict("records")
        report = subprocess.run(
            [sys.executable, "-m", "raybench.report", str(folder)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=max(30, args.box_s / 4),
        )
        print(report.stdout[-2000:], report.stderr[-2000:], sep="\n", flush=True)
        checks["report"] = check(report.returncode == 0, exit=report.returncode)
        tool = _check_results_tool(args)
        if tool is None:
            checks["check_results"] = check(False, error="check_results.py not found: pass --check-results PATH")
        else:
            outside = subprocess.run(
                [sys.executable, str(tool), str(folder), "--max-epochs", str(size.run_epochs)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            print(outside.stdout[-3000:], outside.stderr[-2000:], sep="\n", flush=True)
            checks["check_results"] = check(outside.returncode == 0, exit=outside.returncode, tool=str(tool))
        return {"checks": checks, "trials": table, "command": command}
    return {"checks": checks, "command": command}


def _trial_logs(results_dir: Path) -> str:
    """The trials' own stdout and stderr (Ray keeps them in the storage folder)."""
    return "".join(p.read_text(errors="replace") for p in results_dir.rglob("*.log") if p.stat().st_size < 1e7)


def _check_results_tool(args: argparse.Namespace) -> Path | None:
    candidates = [
        args.check_results,
        os.environ.get("RAYBENCH_CHECK_RESULTS"),
        ROOT.parent / "shared" / "tools" / "check_results.py",
        ROOT / "shared" / "tools" / "check_results.py",
        ROOT.parents[1] / "shared" / "tools" / "check_results.py",
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


# ------------------------------------------------------------------------------- (e) the step benchmark


def step_benchmark(size: Size, out: Path, args: argparse.Namespace) -> dict:
    """Every configuration eager in fp32 (its default) with raybench's step beside an honest bare loop, then bf16
    and compiled steps as the time box allows; the thesis grid's projected hours."""
    device = torch.device(size.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    setting = gpu.Setting(
        device,
        image_size=size.bench_image,
        warmup=2 if size.device == "cuda" else 1,
        steps=size.bench_steps,
        eval_steps=max(1, size.bench_steps // 2),
        dry_run=size.device == "cpu",
    )
    # compiled steps only on a GPU: on the CPU, stage (b) already compiles, and a compile would spend this box
    passes = [("fp32", "eager"), ("bf16", "eager")] + ([("fp32", "compiled")] if device.type == "cuda" else [])
    deadline = time.monotonic() + args.box_s * 0.85  # leave the rest for writing the record
    measured = []
    for precision, step in passes:
        for name in size.bench_models:
            if time.monotonic() > deadline:
                measured.append({"model": name, "precision": precision, "step": step, "skipped": "time box spent"})
                continue
            try:
                m = gpu.measure(
                    name, pretrained=False, precision=precision, setting=dataclasses.replace(setting, step=step)
                )
                measured.append(m)
                print(
                    f"  {name} {precision} {step}: {m['train_step_s'] * 1e3:.1f} ms/step "
                    f"(bare loop {m['bare_step_s'] * 1e3:.1f})",
                    flush=True,
                )
            except Exception as error:
                measured.append(
                    {
                        "model": name,
                        "precision": precision,
                        "step": step,
                        "error": f"{type(error).__name__}: {str(error)[:300]}",
                    }
                )
                print(f"  {name} {precision} {step}: {measured[-1]['error']}", flush=True)
            finally:
                release()
    eager = [m for m in measured if m.get("step") == "eager" and "train_step_s" in m]
    projection = {
        p: {k: v for k, v in gpu.project(eager, precision=p).items() if k != "trials_detail"} for p in ("fp32", "bf16")
    }
    first = [m for m in measured if m.get("precision") == "fp32" and m.get("step") == "eager"]
    return {
        "measured": measured,
        "projection": projection,
        "checks": {
            "every_configuration_fp32_eager": check(
                all("train_step_s" in m for m in first), measured=len(first), of=len(size.bench_models)
            )
        },
    }


# ---------------------------------------------------------------------------------------------- (f) MPS


def sharing(size: Size, out: Path, args: argparse.Namespace) -> dict:
    """Throughput of small trials sharing the GPU against one at a time: time-sliced, then under MPS."""
    device = torch.device(size.device)
    setting = gpu.Setting(
        device,
        image_size=size.bench_image if size.device == "cpu" else 352,
        share_steps=size.share_steps,
        dry_run=size.device == "cpu",
    )
    checks, record = {}, {}
    record["time_sliced"] = gpu.share(setting, out / "share-time-sliced")
    checks["time_sliced"] = check(
        record["time_sliced"]["speedup"] is not None, speedup=record["time_sliced"]["speedup"]
    )
    if size.device != "cuda":
        return {**record, "checks": checks, "mps": "not reached: no CUDA GPU"}
    state = mps.ensure()
    record["mps_state"] = dataclasses.asdict(state)
    if not state.active:
        checks["mps"] = check(False, reason=state.reason)
        return {**record, "checks": checks}
    try:
        record["mps"] = gpu.share(setting, out / "share-mps")
        checks["mps"] = check(record["mps"]["speedup"] is not None, speedup=record["mps"]["speedup"])
    finally:
        mps.stop(state)
    return {**record, "checks": checks}


STAGES = {  # in the order they run: what decides the most, per second, first; MPS (it changes the node) last
    "environment": environment,
    "compiled_vs_eager": compiled_vs_eager,
    "compile_cost": compile_cost,
    "ray_run": ray_run,
    "step_benchmark": step_benchmark,
    "sharing": sharing,
}


def main() -> None:
    parser = argparse.ArgumentParser(description="one stage of the GPU check (benchmarks.gpu_check runs them all)")
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpu", action="store_true", help="the CPU's tiny sizes")
    parser.add_argument("--box-s", type=float, required=True, help="this stage's time box")
    parser.add_argument("--data")
    parser.add_argument("--check-results")
    args = parser.parse_args()
    out = Path(args.out)
    size = CPU if args.cpu else GPU
    started = time.perf_counter()
    try:
        record = STAGES[args.stage](size, out, args)
    except Exception as error:  # the record says why; the other stages run anyway
        import traceback

        traceback.print_exc()
        record = {"checks": {"completed": check(False, error=f"{type(error).__name__}: {str(error)[:500]}")}}
    record["seconds"] = time.perf_counter() - started
    record["status"] = "pass" if record["checks"] and all(c["ok"] for c in record["checks"].values()) else "fail"
    (out / f"{args.stage}.json").write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
