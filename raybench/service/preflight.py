"""The machine a run starts on, checked before Ray starts: the folders it writes, the devices it asks for, the
storage scheme. Each problem is a ValueError naming the option, the value and what to do.

Only what this machine can know is checked: with --address the trials run on the cluster's nodes, whose caches
("~" is each node's user) and devices are their own.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import torch

from raybench.trial import default_cache_dir

CONNECT_TIMEOUT_S = 30.0  # how long a cluster or a tracking server may take to answer (RAYBENCH_CONNECT_TIMEOUT_S)

# the URI schemes Ray's storage reaches through pyarrow's filesystems
STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def check_writable(flag: str, path: Path, *, hint: str) -> None:
    """`path` is a folder this process can write in, or can create (its nearest existing parent is such a folder)."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == path else f": {existing} is a file"
        raise ValueError(f"{flag} {path} is not a folder{where}; {hint}")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".raybench-probe-"):
            pass
    except OSError as error:
        raise ValueError(f"{flag} {path}: {existing} is not writable ({error.strerror}); {hint}") from None


def check_storage(storage: str, *, connect: bool = True) -> None:
    scheme = urlparse(storage).scheme if "://" in storage else ""
    if scheme and scheme not in STORAGE_SCHEMES:
        raise ValueError(
            f"--storage {storage}: unknown scheme {scheme!r}; use a local or NFS path or one of "
            f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}"
        )
    if scheme in ("", "file"):
        path = Path(urlparse(storage).path if scheme else storage).expanduser()
        check_writable("--storage", path.resolve(), hint="give a folder you can write in")
    endpoint = s3_endpoint(storage) if scheme == "s3" and connect else None
    if endpoint is not None:
        timeout = connect_timeout()
        why = wait_for(tcp_probe(*endpoint), timeout=timeout)
        if why is not None:
            raise ValueError(
                f"--storage {storage}: its S3 endpoint {endpoint[0]}:{endpoint[1]} did not answer within "
                f"{timeout:g} s ({why}); start it or fix the endpoint"
            )


def s3_endpoint(storage: str) -> tuple[str, int] | None:
    """The host and port of an S3 endpoint named explicitly (`?endpoint_override=` in the URI, or
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL); None for AWS's own, which may sit behind a proxy."""
    query = parse_qs(urlparse(storage).query)
    override = (query.get("endpoint_override") or [""])[0]
    secure = (query.get("scheme") or ["https"])[0] != "http"
    url = override or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if not url:
        return None
    parsed = urlparse(url if "://" in url else f"{'https' if secure else 'http'}://{url}")
    if not parsed.hostname:
        return None
    return parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)


def device_available(device: str) -> bool:
    """Whether torch here can run on `device` ("auto" always can: it falls back to the CPU)."""
    kind, _, index = device.partition(":")
    if kind in ("auto", "cpu"):
        return True
    if kind == "cuda":
        return torch.cuda.is_available() and int(index or 0) < torch.cuda.device_count()
    if kind == "mps":
        return torch.backends.mps.is_available()
    backend = getattr(torch, kind, None)
    return backend is not None and backend.is_available() and int(index or 0) < backend.device_count()


def check_devices(devices: set[str]) -> None:
    for device in sorted(devices):
        if not device_available(device):
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            shown = "" if visible is None else f", CUDA_VISIBLE_DEVICES={visible!r}"
            raise ValueError(
                f"device {device!r}: torch {torch.__version__} sees no such device here{shown}; "
                "--set device=cpu (or auto), or run on a machine that has it (--address joins a GPU cluster)"
            )


def connect_timeout() -> float:
    return float(os.environ.get("RAYBENCH_CONNECT_TIMEOUT_S", CONNECT_TIMEOUT_S))


def wait_for(probe, *, timeout: float) -> str | None:
    """Call `probe` (None when it answered, else why not) every second until it answers or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        why = probe(max(0.1, min(5.0, deadline - time.monotonic())))
        if why is None or time.monotonic() >= deadline:
            return why
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def tcp_probe(host: str, port: int):
    def probe(timeout: float) -> str | None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return None
        except OSError as error:
            return error.strerror or type(error).__name__

    return probe


def http_probe(url: str):
    def probe(timeout: float) -> str | None:
        try:
            urllib.request.urlopen(url, timeout=timeout).close()
        except urllib.error.HTTPError:
            return None  # a server answered (an MLflow without /health still serves its API)
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            return getattr(reason, "strerror", None) or str(reason)
        return None

    return probe


def ray_bootstrap_address(address: str) -> tuple[str, int] | None:
    """The host and port `ray.init(address=...)` connects to; None for "auto" and "local" (Ray finds those)."""
    if address in ("auto", "local"):
        return None
    plain = address.removeprefix("ray://")
    host, sep, port = plain.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--address {address}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    if not address.startswith("ray://"):
        try:  # Ray dials the node's own address for localhost: probe what it will dial
            from ray._private.services import resolve_ip_for_localhost

            host = resolve_ip_for_localhost(host)
        except Exception:
            pass
    return host.strip("[]"), int(port)


def check_ray_address(address: str, *, timeout: float) -> None:
    target = ray_bootstrap_address(address)
    if target is None:
        return
    why = wait_for(tcp_probe(*target), timeout=timeout)
    if why is not None:
        raise ValueError(
            f"--address {address}: no Ray cluster answered at {target[0]}:{target[1]} within {timeout:g} s ({why}); "
            "start it (ray start --head on that node) or fix --address"
        )


def check_mlflow(uri: str, *, timeout: float) -> None:
    if importlib.util.find_spec("mlflow") is None:
        raise ValueError(f"--mlflow {uri} needs MLflow: pip install -e '.[mlflow]'")
    if uri.startswith(("http://", "https://")):
        why = wait_for(http_probe(f"{uri.rstrip('/')}/health"), timeout=timeout)
        if why is not None:
            raise ValueError(
                f"--mlflow {uri}: no tracking server answered within {timeout:g} s ({why}); start it "
                "(mlflow server), fix the URI, or run without --mlflow"
            )
    elif "://" not in uri or uri.startswith("file://"):
        check_writable("--mlflow", Path(uri.removeprefix("file://")).expanduser().resolve(), hint="give a folder")


def check_environment(args: argparse.Namespace, *, devices: set[str]) -> None:
    """Everything about this machine that would make the run fail after Ray started, for the trials' `devices`."""
    check_writable("--results", Path(args.results).expanduser().resolve(), hint="give a folder you can write in")
    if args.storage:
        check_storage(args.storage, connect=not args.dry_run)  # a dry run connects to nothing
    if args.mlflow and not args.dry_run:
        check_mlflow(args.mlflow, timeout=connect_timeout())
    if args.address:
        if not args.dry_run:  # a dry run connects to nothing
            check_ray_address(args.address, timeout=connect_timeout())
        return
    cache = Path(args.cache).expanduser() if args.cache else default_cache_dir()
    check_writable("--cache", cache.resolve(), hint="give --cache a folder you can write in")
    check_devices(devices)
