"""`python -m benchmarks.gpu_check --out DIR [--cpu]`: run the stages (benchmarks/gpu_check/stages.py), each under
its time box, and write DIR/summary.md."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# seconds each stage may take on one H100/H200, in the order they run (stages.STAGES): 535 s in all, under 9 min
GPU_BOXES = {
    "environment": 30,
    "compiled_vs_eager": 75,
    "compile_cost": 75,
    "ray_run": 200,
    "step_benchmark": 110,
    "sharing": 45,
}
CPU_BOXES = {  # the CPU's tiny sizes, on a loaded 2-core machine
    "environment": 30,
    "compiled_vs_eager": 90,
    "compile_cost": 60,
    "ray_run": 150,
    "step_benchmark": 40,
    "sharing": 40,
}
TOTAL_S = {"gpu": 540, "cpu": 480}
STARTUP_S = 10  # a stage's interpreter start and imports, before its work: no stage starts without its box and this


def run_stage(name: str, *, box_s: float, out: Path, cpu: bool, extra: list[str]) -> dict:
    """One stage in a process of its own, killed (with its children: Ray, workers) when its box is spent."""
    command = [sys.executable, "-m", "benchmarks.gpu_check.stages", name, "--out", str(out), "--box-s", str(box_s)]
    command += (["--cpu"] if cpu else []) + extra
    record_path = out / f"{name}.json"
    record_path.unlink(missing_ok=True)
    started = time.monotonic()
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=box_s + STARTUP_S)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
    seconds = time.monotonic() - started
    if record_path.exists():
        record = json.loads(record_path.read_text())
    else:
        why = f"timed out after {box_s:.0f}s" if timed_out else f"exited {proc.returncode} without its record"
        record = {"status": "fail", "checks": {"completed": {"ok": False, "error": why}}}
        record_path.write_text(json.dumps(record, indent=1))
    record["wall_s"] = seconds
    return record


def summary(records: dict[str, dict], *, mode: str, boxes: dict[str, float], seconds: float) -> str:
    """The markdown summary: one line per stage (pass, fail or not reached) and one per check."""
    lines = [
        f"# GPU check ({mode})",
        "",
        f"{seconds:.0f} s in all.",
        "",
        "| stage | status | seconds | box | checks |",
        "|---|---|---|---|---|",
    ]
    for name, box in boxes.items():
        record = records.get(name)
        if record is None:
            lines.append(f"| {name} | not reached | | {box} | |")
            continue
        failed = [k for k, c in record["checks"].items() if not c["ok"]]
        detail = f"failed: {', '.join(failed)}" if failed else ", ".join(record["checks"])
        lines.append(f"| {name} | {record['status']} | {record['wall_s']:.0f} | {box} | {detail} |")
    lines.append("")
    for name, record in records.items():
        lines.append(f"## {name}: {record['status']}")
        for key, c in record["checks"].items():
            shown = {k: v for k, v in c.items() if k != "ok" and len(json.dumps(v, default=str)) < 400}
            lines.append(f"- {'ok' if c['ok'] else 'FAIL'} {key}: {json.dumps(shown, default=str)}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for each stage's JSON and log, and summary.md")
    parser.add_argument("--cpu", action="store_true", help="the CPU's tiny sizes (the default without CUDA)")
    parser.add_argument("--only", help="comma-separated stages to run (default: all)")
    parser.add_argument("--data", help="PBC images for the Ray run (default: the embedded 400 real images)")
    parser.add_argument("--check-results", help="the outside check_results.py (default: ../shared/tools/)")
    args = parser.parse_args(argv)
    import torch  # only to decide the sizes; the stages import what they need

    cpu = args.cpu or not torch.cuda.is_available()
    mode = "cpu" if cpu else "gpu"
    boxes = CPU_BOXES if cpu else GPU_BOXES
    if args.only:
        unknown = set(args.only.split(",")) - set(boxes)
        if unknown:
            parser.error(f"unknown stages {sorted(unknown)}; the stages are {', '.join(boxes)}")
        boxes = {k: v for k, v in boxes.items() if k in args.only.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # every stage's compiled kernels in one cache under DIR: later stages reuse what earlier ones built
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(out / "inductor"))
    extra = [
        flag
        for key in ("data", "check_results")
        if getattr(args, key)
        for flag in (f"--{key.replace('_', '-')}", getattr(args, key))
    ]
    started, records = time.monotonic(), {}
    for name, box in boxes.items():
        left = TOTAL_S[mode] - (time.monotonic() - started)
        if left < box + STARTUP_S:
            print(
                f"gpu_check {name}: not reached ({left:.0f}s left of {TOTAL_S[mode]}s, its box is {box}s)", flush=True
            )
            continue
        records[name] = run_stage(name, box_s=box, out=out, cpu=cpu, extra=extra)
        print(f"gpu_check {name}: {records[name]['status']} in {records[name]['wall_s']:.0f}s", flush=True)
    text = summary(records, mode=mode, boxes=boxes, seconds=time.monotonic() - started)
    (out / "summary.md").write_text(text)
    print(f"summary: {out / 'summary.md'}", flush=True)
    return 0 if len(records) == len(boxes) and all(r["status"] == "pass" for r in records.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
