"""A run's provenance (provenance.py): what run.json records of each invocation, and the report's box of it."""

import json
import subprocess
import sys

from conftest import ROOT

from raybench import provenance, report


def test_an_invocation_records_versions_commit_command_grid_machine_and_times(tmp_path):
    grid = ROOT / "grids" / "quickstart.py"
    info = provenance.describe(argv=["raybench", "run", str(grid)], grid_file=grid)
    provenance.record(tmp_path, info)
    (saved,) = provenance.read_runs(tmp_path)
    assert saved["ended_at"] is None and saved["argv"] == ["raybench", "run", str(grid)]
    assert saved["versions"]["torch"] and saved["versions"]["ray"] and saved["versions"]["raybench"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert saved["git"]["commit"] == (head or None) and saved["host"] and saved["cpu"]
    import hashlib

    assert saved["grid_sha256"] == hashlib.sha256(grid.read_bytes()).hexdigest()
    provenance.finish(tmp_path, info)
    resumed = provenance.describe(argv=["raybench", "run", str(grid), "--resume"], grid_file=grid)
    provenance.record(tmp_path, resumed)
    runs = provenance.read_runs(tmp_path)
    assert len(runs) == 2 and runs[0]["ended_at"] and runs[1]["argv"][-1] == "--resume"
    assert json.loads((tmp_path / "run.json").read_text())["runs"] == runs


def test_the_report_shows_the_run_environment(tmp_path, embedded):
    from raybench import spec
    from raybench import trial as lifecycle

    config = spec.TrainConfig(image_size=32, max_epochs=1, device="cpu")
    result = lifecycle.train_trial(spec.Trial("lenet5", "tiny", config=config), lifecycle.TrialData(embedded, tmp_path))
    out = tmp_path / "results"
    from raybench import results

    results.write_results(out, [result], manifest=embedded.manifest)
    provenance.finish(out, provenance.describe(argv=[sys.executable, "-m", "raybench.run", "g.py"]))
    text = report.render_markdown(report.build_report(report.read_results(out), report.read_thesis()))
    assert "## Run environment" in text and "raybench.run g.py" in text and "Machine:" in text
