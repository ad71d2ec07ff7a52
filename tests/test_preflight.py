"""The machine a run starts on is checked before Ray starts: each problem is one line, exit code 2, and nothing
is written (real read-only file systems as root, real files)."""

import socket
import time

import pytest
import torch
from conftest import ROOT, read_only, refused

from raybench.service import preflight

QUICKSTART = str(ROOT / "grids" / "quickstart.py")


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


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_ray_address_an_mlflow_server_and_an_s3_endpoint_that_never_answer_are_a_bounded_wait_then_one_line(
    argv, capsys, monkeypatch
):
    monkeypatch.setenv("RAYBENCH_CONNECT_TIMEOUT_S", "2")
    port = closed_port()
    started = time.monotonic()
    line = refused([*argv, "--address", f"127.0.0.1:{port}"], capsys)
    assert f"--address 127.0.0.1:{port}: no Ray cluster answered at " in line and "within 2 s" in line
    assert 2 <= time.monotonic() - started < 20
    started = time.monotonic()
    line = refused([*argv, "--mlflow", f"http://127.0.0.1:{port}"], capsys)
    assert f"--mlflow http://127.0.0.1:{port}: no tracking server answered within 2 s" in line
    assert 2 <= time.monotonic() - started < 20
    started = time.monotonic()
    line = refused([*argv, "--storage", f"s3://bucket/runs?endpoint_override=127.0.0.1:{port}&scheme=http"], capsys)
    assert f"its S3 endpoint 127.0.0.1:{port} did not answer within 2 s" in line
    assert 2 <= time.monotonic() - started < 20


def test_a_listening_cluster_and_a_tracking_server_that_answers_pass(server):
    with socket.create_server(("0.0.0.0", 0)) as listening:  # Ray dials the node's address for 127.0.0.1
        preflight.check_ray_address(f"127.0.0.1:{listening.getsockname()[1]}", timeout=2)
    preflight.check_mlflow(server["url"].rsplit("/", 1)[0], timeout=2)  # any HTTP answer: a server is there
