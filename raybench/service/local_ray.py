"""A Ray started by a run on this machine (no --address): reachable from this machine only, its token private.

Ray 2.60 listens on the node's network address (GCS, raylet, workers) and, with token authentication on by
default for a local `ray.init`, writes `~/.ray/auth_token` with the umask's mode (0644): any local user could
read the token and any host on the network reach the ports. A run's own Ray needs neither: its processes listen
on 127.0.0.1 (Ray's single-machine mode, the one it uses on macOS and Windows), and the token file is 0600.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from ray._private import ray_constants

SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is the loopback address


def token_path() -> Path | None:
    """The file Ray's token authentication reads its token from here; None when it uses none."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def keep_token_private() -> Path | None:
    """Make the token file 0600, creating it so (a random 256-bit token, as Ray makes them) when there is none."""
    path = token_path()
    if path is None:
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_uid == os.getuid():
            path.chmod(0o600)
        return path
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path


def bind_to_loopback() -> None:
    """Make the Ray this process starts listen on 127.0.0.1 only (before ray.init; its processes inherit it)."""
    os.environ[SINGLE_MACHINE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when ray was imported; Ray looks it up at each use
