"""A run's own Ray (no --address) listens on the loopback address only, and its token file is the user's alone
(real Ray in a fresh process, its sockets read from /proc)."""

import json
import os
import stat
import subprocess
import sys

from conftest import ROOT

from raybench.service import local_ray

LISTENING = r"""
import json, os
from pathlib import Path
import ray
from raybench.service import driver

def children(pid):
    found = {pid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found |= children(int(stat.parent.name))
    return found

def listening(pids):
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                found.append(fields[1].split(":")[0])
    return found

driver.init_ray(driver.RunOptions(num_cpus=1))
assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker started, its ports open too
print(json.dumps(listening(children(os.getpid()))))
ray.shutdown()
"""

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def test_a_local_run_s_ray_listens_on_loopback_only_and_its_token_is_0600(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", LISTENING], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    addresses = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(addresses) >= 3  # the GCS, the raylet, the driver's and the worker's own servers
    assert set(addresses) <= LOOPBACK, addresses
    token = tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text()) == 64


def test_an_existing_readable_token_is_made_private(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("a" * 64)
    token.chmod(0o644)
    assert local_ray.keep_token_private() == token
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == "a" * 64  # the same token
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert local_ray.token_path() is None
