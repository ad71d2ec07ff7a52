"""The prepared GPU check (benchmarks/gpu_check) in its CPU version, end to end, so that it cannot rot before a GPU
runs it: every stage inside its time box, a summary that says pass for each."""

import subprocess
import sys

import pytest
from conftest import ROOT

TOOL = ROOT.parent / "shared" / "tools" / "check_results.py"  # the outside check the Ray stage runs on its results


@pytest.mark.slow  # about 3 minutes on 2 cores
@pytest.mark.skipif(not TOOL.is_file(), reason="needs the shared check_results.py beside the checkout")
def test_the_cpu_version_of_the_gpu_check_passes_every_stage(tmp_path):
    out = tmp_path / "check"
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out), "--cpu", "--check-results", str(TOOL)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=540)
    summary = (out / "summary.md").read_text()
    assert proc.returncode == 0, summary + proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("environment", "compiled_vs_eager", "compile_cost", "ray_run", "step_benchmark", "sharing"):
        assert f"| {stage} | pass |" in summary, summary
