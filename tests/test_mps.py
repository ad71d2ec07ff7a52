"""The MPS daemon counts as active only once a real client ran under it (raybench.mps), checked without a GPU:
the control pipe is a file in a temporary folder and the client a real process that succeeds, fails or hangs."""

import sys

import pytest

from raybench import mps


@pytest.fixture
def joined(tmp_path, monkeypatch):
    """A node whose MPS control pipe exists (a daemon raybench did not start)."""
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    (tmp_path / "control").touch()
    return tmp_path


def test_a_daemon_whose_client_runs_is_active(joined):
    state = mps.ensure(client=[sys.executable, "-c", "print(1.0)"])
    assert state.active and not state.started_here and str(joined) in state.reason


@pytest.mark.parametrize(
    "code, reason",
    [("import sys; sys.exit('no CUDA-capable device is detected')", "no CUDA-capable device"),
     ("import time; time.sleep(30)", "did not start within 1s")],
)  # fmt: skip
def test_a_daemon_whose_client_fails_or_hangs_is_not_active(joined, code, reason):
    state = mps.ensure(client=[sys.executable, "-c", code], client_timeout_s=1)
    assert not state.active and reason in state.reason


def test_without_the_driver_tools_there_is_no_mps(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-cuda-mps-control
    state = mps.ensure(client=[sys.executable, "-c", "print(1.0)"])
    assert not state.active and mps.CONTROL in state.reason


def test_a_daemon_started_here_whose_client_fails_is_stopped_again(tmp_path, monkeypatch):
    # a stand-in for the driver's control program: "-d" creates the control pipe, "quit" on stdin removes it
    control = tmp_path / "bin" / mps.CONTROL
    control.parent.mkdir()
    control.write_text(
        '#!/bin/sh\nif [ "$1" = "-d" ]; then touch "$CUDA_MPS_PIPE_DIRECTORY/control"; '
        'else read cmd; [ "$cmd" = quit ] && rm -f "$CUDA_MPS_PIPE_DIRECTORY/control"; fi\n'
    )
    control.chmod(0o755)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("PATH", f"{control.parent}:/usr/bin:/bin")
    state = mps.ensure(client=[sys.executable, "-c", "import sys; sys.exit('CUDA driver initialization failed')"])
    assert not state.active and "stopped it again" in state.reason and "initialization failed" in state.reason
    assert not mps.running()
    assert mps.ensure(client=[sys.executable, "-c", "print(1.0)"]).started_here
