"""The machine a run starts on is checked before Ray starts: each problem is one line, exit code 2, and nothing
is written (real read-only file systems as root, real files)."""

import pytest
import ray
import torch
from conftest import ROOT, read_only

from raybench import run

QUICKSTART = str(ROOT / "grids" / "quickstart.py")


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        run.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not ray.is_initialized()
    return err.strip().splitlines()[-1]


@pytest.fixture
def argv(tmp_path):
    return [QUICKSTART, "--results", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]


def test_a_cache_that_is_a_file_or_read_only_is_refused(tmp_path, argv, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert "--cache" in refused([*argv, "--cache", str(tmp_path / "file")], capsys)
    with read_only(tmp_path / "ro", []) as folder:
        assert "is not writable" in refused([*argv, "--cache", str(folder / "cache")], capsys)
        monkeypatch.setenv("HOME", str(folder))  # the default cache, ~/.cache/raybench, on a read-only home
        line = refused([QUICKSTART, "--results", str(tmp_path / "results")], capsys)
        assert f"--cache {folder}/.cache/raybench: {folder} is not writable" in line
    assert not (tmp_path / "results").exists()


def test_results_that_are_a_file_or_read_only_are_refused(tmp_path, argv, capsys):
    (tmp_path / "file").write_text("x")
    assert f"--results {tmp_path / 'file'} is not a folder" in refused(
        [*argv, "--results", str(tmp_path / "file")], capsys
    )
    with read_only(tmp_path / "ro", []) as folder:
        assert f"--results {folder}: {folder} is not writable" in refused([*argv, "--results", str(folder)], capsys)


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_device_torch_does_not_have_is_refused_by_the_run_and_the_dry_run(argv, capsys, dry_run):
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: missing on every machine
    line = refused([*argv, *dry_run, "--set", f"device={missing}"], capsys)
    assert f"device {missing!r}: torch {torch.__version__} sees no such device here" in line
    if not torch.cuda.is_available():
        assert "sees no such device" in refused([*argv, *dry_run, "--set", "device=cuda"], capsys)


def test_a_storage_with_an_unknown_scheme_or_a_file_is_refused(tmp_path, argv, capsys):
    assert "unknown scheme 'ftp'" in refused([*argv, "--storage", "ftp://host/runs"], capsys)
    (tmp_path / "file").write_text("x")
    assert "--storage" in refused([*argv, "--storage", str(tmp_path / "file")], capsys)
    assert "is not a folder" in refused([*argv, "--storage", f"file://{tmp_path / 'file'}/sub"], capsys)
