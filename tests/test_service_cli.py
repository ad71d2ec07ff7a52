"""Bad input to `python -m raybench.run` is one line naming the thing, exit code 2, before anything starts."""

from pathlib import Path

import pytest
from conftest import refused

from raybench import run
from raybench.service import driver

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(ROOT / "grids" / "quickstart.py")


@pytest.mark.parametrize(
    "text, message",
    [
        ("GRID = {'sweeps': [\n", "failed to load: SyntaxError"),
        ("import no_such_module\nGRID = {}\n", "failed to load: ModuleNotFoundError"),
        ("GRID = [1, 2]\n", "GRID must be a dict, got list"),
        (
            "GRID = {'sweeps': [{'models': ['lenet5'], 'tiers': ['tiny']}], 'options': {'lr': 'fast'}}\n",
            "lr must be of type float",
        ),
        (
            "GRID = {'sweeps': [{'models': ['lenet5'], 'tiers': ['tiny']}], 'seeds': ['0']}\n",
            "seeds must be a non-empty list of int",
        ),
        (
            "GRID = {'sweeps': [{'models': ['lenet5'], 'tiers': ['tiny']}], 'seeds': 1.5}\n",
            "seeds must be a non-empty list of int",
        ),
    ],
)
def test_a_bad_grid_file_is_one_line(tmp_path, capsys, text, message):
    (tmp_path / "bad.py").write_text(text)
    assert message in refused([str(tmp_path / "bad.py"), "--dry-run", "--results", str(tmp_path)], capsys)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "res(net"], "is not a valid regular expression"),
        (["--set", "image_size=500"], "image_size must be between 32 and 352"),
        (["--set", "image_size=48"], "image_size 48 is not divisible by the patch size 32"),
        (["--set", "device=gpu0"], "device must be"),
        (["--set", "lr=nan"], "lr must be a finite number above 0"),
        (["--set", "lr=-0.1"], "lr must be a finite number above 0"),
        (["--set", "es_patience=-2"], "es_patience must be a finite number of at least 0"),
        (["--max-concurrent", "-1"], "--max-concurrent must be a finite number of at least 0"),
        (["--cpus-per-trial", "-1"], "--cpus-per-trial must be"),
        (["--num-cpus", "0"], "--num-cpus must be"),
        (["--checkpoint-every", "inf"], "--checkpoint-every must be a finite number"),
        (["--checkpoint-every", "nan"], "--checkpoint-every must be a finite number"),
        (["--inject-failure", "lenet5=sometimes:2"], "a fault drill is 'once:N', 'always:N', 'oom:N' or 'kill:N'"),
    ],
)
def test_bad_options_are_one_line(tmp_path, capsys, args, message):
    assert message in refused([QUICKSTART, "--dry-run", "--results", str(tmp_path), *args], capsys)


def test_resume_on_other_data_is_refused_before_anything_runs(tmp_path, capsys):
    import shutil
    import warnings

    from raybench import data, results

    out = tmp_path / "results" / "quickstart"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DataWarning)
        results.write_manifest(out, data.prepare(None).manifest)  # the run so far trained on the embedded images
    other = tmp_path / "other"
    shutil.copytree(data.EMBEDDED_DATA, other)
    neutrophil, platelet = sorted((other / "neutrophil").iterdir())[0], sorted((other / "platelet").iterdir())[0]
    neutrophil.rename(other / "platelet" / neutrophil.name)  # two images change class: the same count, other data
    platelet.rename(other / "neutrophil" / platelet.name)
    argv = [QUICKSTART, "--resume", "--data", str(other), "--results", str(tmp_path / "results")]
    assert "is not the data of the run" in refused(argv, capsys)


def test_gpu_trials_share_a_gpu_only_where_sharing_pays(tmp_path, capsys):
    import pandas as pd

    def plan(*flags):
        run.main([QUICKSTART, "--dry-run", "--results", str(tmp_path), "--gpu-memory-gb", "80", *flags])
        capsys.readouterr()
        return pd.read_parquet(tmp_path / "quickstart" / "plan.dry-run.parquet").set_index("model").gpu

    assert (plan() == 1.0).all()  # no MPS daemon here: packing would only make the trials take turns
    assert (plan("--gpu-sharing", "always") < 1).all()  # asked for: packed by memory
    assert (plan("--gpu-sharing", "off") == 1.0).all()
    assert driver.choose_sharing("auto", local_gpu=False, cluster_gpu=False).label == ""


def test_resume_with_other_options_and_a_new_run_over_old_results_are_refused(tmp_path, capsys):
    from raybench import results

    argv = [QUICKSTART, "--results", str(tmp_path)]
    run.main([*argv, "--dry-run"])
    capsys.readouterr()
    out = tmp_path / "quickstart"
    (out / "plan.dry-run.parquet").rename(out / "plan.parquet")  # the plan a real run writes before it trains
    assert "differ from those of the run" in refused([*argv, "--resume", "--set", "max_epochs=3"], capsys)
    finished = results.TrialResult({"trial_id": "lenet5-tiny-seed0", "status": "ok"}, [], [])
    results.write_trial(tmp_path / "quickstart", finished)
    assert "already holds results of a run" in refused(argv, capsys)


def test_a_refusal_is_one_line_without_the_usage_before_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main([QUICKSTART, "--results", str(tmp_path), "--only", "vit"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "matches no trial" in err[0]
    assert err[0].startswith("python -m raybench.run: error:")


def test_set_help_lists_every_option_with_its_default_and_choices(capsys):
    with pytest.raises(SystemExit):
        run.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "max_epochs=100" in text and "precision='tf32' (tf32|fp32|bf16)" in text and "lr=0.1" in text
    assert "optimizer='sgd' (sgd|momentum|nesterov|adamw)" in text
    assert "pip install -e '.[mlflow]'" in text  # the extra the README names


def test_the_resume_command_is_the_command_as_started_with_resume():
    import shlex
    import sys

    from raybench.service.interrupt import resume_command

    console_script = resume_command(["/nowhere/.venv/bin/raybench", "run", "grids/q.py", "--set", "lr=0.01 x"])
    assert shlex.split(console_script) == ["/nowhere/.venv/bin/raybench", "run", "grids/q.py", "--set", "lr=0.01 x",
                                           "--resume"]  # fmt: skip
    module = shlex.split(resume_command(["/src/raybench/run.py", "grids/q.py", "--resume", "--name", "n"]))
    assert module[1:] == ["-m", "raybench.run", "grids/q.py", "--resume", "--name", "n"]  # --resume once
    assert module[0] in ("python", sys.executable)


def grid_file(folder: Path, *, name="quick", tiers=None, seeds=(0,)) -> str:
    """A one-trial grid file (lenet5 on the first of `tiers`) with the given name, tiers and seeds."""
    tiers = tiers or {"tiny": None}
    declared = {
        "name": name,
        "tiers": tiers,
        "seeds": list(seeds),
        "sweeps": [{"models": ["lenet5"], "tiers": [*tiers][:1]}],
    }
    path = folder / "grid.py"
    path.write_text(f"GRID = {declared!r}\n")
    return str(path)


@pytest.mark.parametrize("name", ["..", "../elsewhere", "/tmp/abs", "a/b", "a\nb", "a\x1bb", "<script>x", "a|b", ""])
def test_a_run_name_that_leaves_the_results_folder_or_breaks_the_report_is_refused(tmp_path, capsys, name):
    results = tmp_path / "results"
    line = refused([QUICKSTART, "--dry-run", "--results", str(results), "--name", name], capsys)
    assert f"--name {name!r} is not a valid name" in line and "letters, digits, '_', '-' and '.'" in line
    assert not any(tmp_path.rglob("plan*.parquet"))  # nothing written, inside or outside --results


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"name": "../../escaped"}, "the grid's name '../../escaped' is not a valid name"),
        ({"name": "<b>bold</b>"}, "the grid's name '<b>bold</b>' is not a valid name"),
        ({"tiers": {"../up": 100}}, "tier '../up' is not a valid name"),
        ({"tiers": {"a-b": 100}}, "tier 'a-b' is not a valid name"),  # "-" separates a trial id's parts
        ({"tiers": {"t\tx": 100}}, "tier 't\\tx' is not a valid name"),
    ],
)
def test_grid_and_tier_names_that_become_paths_are_refused(tmp_path, capsys, declared, message):
    argv = [grid_file(tmp_path, **declared), "--dry-run", "--results", str(tmp_path / "results")]
    assert message in refused(argv, capsys)
    assert not any(tmp_path.rglob("plan*.parquet"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", f"split_seed={2**32}"], "split_seed must be a whole number from 0 to 4294967295"),
        (["--set", f"max_epochs={2**63}"], "max_epochs must be at most 9223372036854775807"),
        (["--set", f"batch_size={2**64}"], "batch_size must be at most 9223372036854775807"),
        (["--set", f"es_patience={10**30}"], "es_patience must be at most 9223372036854775807"),
        (["--max-concurrent", str(2**63)], "--max-concurrent must be a finite number of at least 0 and at most"),
        (["--num-cpus", str(10**20)], "--num-cpus must be a finite number of at least 1 and at most"),
    ],
)
def test_whole_numbers_beyond_what_their_consumer_takes_are_refused_naming_the_option(tmp_path, capsys, args, message):
    assert message in refused([QUICKSTART, "--dry-run", "--results", str(tmp_path), *args], capsys)


@pytest.mark.parametrize(
    "declared, message",
    [
        ({"seeds": [2**32]}, "seed must be a whole number from 0 to 4294967295"),
        ({"seeds": [-1]}, "seed must be a whole number from 0 to 4294967295"),
        ({"tiers": {"tiny": 2**63}}, "tier 'tiny' needs a size of at least 10 images"),
    ],
)
def test_grid_numbers_beyond_what_their_consumer_takes_are_refused(tmp_path, capsys, declared, message):
    argv = [grid_file(tmp_path, **declared), "--dry-run", "--results", str(tmp_path / "results")]
    assert message in refused(argv, capsys)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "max_epochs=5", "--set", "max_epochs=3"], "--set max_epochs is given twice (5 and 3)"),
        (["--set", "lr=0.1", "--set", " lr = 0.01"], "--set lr is given twice (0.1 and 0.01)"),
        (["--inject-failure", "nothing_like_it=once:1"], "--inject-failure 'nothing_like_it' matches no trial"),
        (["--inject-failure", "res(=once:1"], "--inject-failure 'res(' is not a valid regular expression"),
    ],
)
def test_a_repeated_set_or_an_unmatched_fault_drill_is_one_line_naming_its_option(tmp_path, capsys, args, message):
    line = refused([QUICKSTART, "--dry-run", "--results", str(tmp_path), *args], capsys)
    assert message in line and "--only" not in line


@pytest.mark.parametrize(
    "call, code", [("sys.exit()", "None"), ("sys.exit(0)", "0"), ("raise SystemExit('bye')", "'bye'")]
)
def test_a_grid_file_that_calls_sys_exit_says_so_in_one_line(tmp_path, capsys, call, code):
    (tmp_path / "exits.py").write_text(f"import sys\n{call}\nGRID = {{}}\n")
    line = refused([str(tmp_path / "exits.py"), "--dry-run", "--results", str(tmp_path)], capsys)
    assert f"exits.py' called sys.exit({code}) while it was loaded" in line


def test_a_plan_written_by_an_older_raybench_is_said_so_not_that_options_differ(tmp_path, capsys):
    import json

    import pandas as pd

    argv = [QUICKSTART, "--results", str(tmp_path)]
    run.main([*argv, "--dry-run"])
    capsys.readouterr()
    out = tmp_path / "quickstart"
    plan = pd.read_parquet(out / "plan.dry-run.parquet")
    plan.drop(columns=["options", "variant"]).to_parquet(out / "plan.parquet")  # as plans before those columns
    (out / "run.json").write_text(json.dumps({"runs": [{"versions": {"raybench": "0.1.0"}}]}))
    line = refused([*argv, "--resume"], capsys)
    assert "this run was planned by an older raybench (0.1.0): its plan.parquet lacks options, so" in line
    assert "differ" not in line and "start a new run with another --name" in line
