"""Build the folder that travels with the working tree to a GPU machine for the check: `python -m
benchmarks.gpu_check.carry --data PBC_FOLDER` (here, with PyPI reachable), then run the command it prints there.

The GPU image has torch 2.11 for Python 3.12, pandas, pyarrow, grpcio, aiohttp, msgpack, protobuf, pyyaml,
tensorboard, scipy and scikit-image, and no network. The folder holds what it lacks, unpacked into one
site-packages tree and packed with xz: Ray 2.60 for cp312 without what raybench never loads (Java jars, RLlib,
Serve, the LLM library, the dashboard's client build, source maps) and the wheels Ray and raybench need beyond the
image (jsonschema, pydantic, tensorboardX, mlp-mixer-pytorch and their own needs; typing_extensions, filelock and
packaging stay the image's own); and a stratified subset of real images (`--per-class` of each class).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT_MB = 50  # the device tool carries 64 MiB in all; the working tree is about 8 MB of it
WHEELS = (
    "ray==2.60.0",
    "jsonschema",
    "jsonschema-specifications",
    "referencing",
    "rpds-py",
    "attrs",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "tensorboardX",
    "mlp-mixer-pytorch==0.3.1",
    "einops",
    "click",
    "requests",
    "idna",
    "urllib3",
    "certifi",
    "charset-normalizer",
)
IMAGE_OWN = ("typing_extensions", "filelock", "packaging")  # the image's own copies must win
UNUSED = ("ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client/build")


def download(wheels: Path) -> None:
    """The cp312 manylinux wheels, each without its dependencies (the list above is the closure needed there)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", "3.12", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64"]
    subprocess.run([*command, "--dest", str(wheels), *WHEELS], check=True)


def unpack(wheels: Path, site: Path) -> None:
    """Every wheel into one site-packages tree (a wheel is a zip of it), Ray's unused parts left out."""
    for wheel in sorted(wheels.glob("*.whl")):
        if wheel.name.split("-")[0].lower() in IMAGE_OWN:
            continue
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    for part in UNUSED:
        shutil.rmtree(site / part, ignore_errors=True)
    for path in site.rglob("*.js.map"):
        path.unlink()


def copy_images(data: Path, dest: Path, *, per_class: int) -> int:
    """The first `per_class` images of each class folder (sorted names: deterministic), in the official layout."""
    source = data / "PBC_dataset_normal_DIB" if (data / "PBC_dataset_normal_DIB").is_dir() else data
    copied = 0
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        target = dest / "PBC_dataset_normal_DIB" / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for image in sorted(folder.glob("*.jpg"))[:per_class]:
            shutil.copy(image, target / image.name)
            copied += 1
    return copied


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check.carry", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / ".carry"), help="the carry folder (git-ignored; default: .carry)")
    parser.add_argument("--data", required=True, help="real PBC images (pbc_sample or the full dataset)")
    parser.add_argument("--per-class", type=int, default=40, help="images of each class to carry (default: 40)")
    parser.add_argument("--wheels", help="a folder of already downloaded wheels (default: download them)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(args.wheels) if args.wheels else Path(tmp) / "wheels"
        if not args.wheels:
            download(wheels)
        site = Path(tmp) / "site"
        unpack(wheels, site)
        with tarfile.open(out / "site.tar.xz", "w:xz", preset=6) as archive:
            archive.add(site, arcname="site")
    images = copy_images(Path(args.data), out / "data", per_class=args.per_class)
    total = size_mb(out)
    print(f"{out}: site.tar.xz {size_mb(out / 'site.tar.xz'):.1f} MB, {images} images, {total:.1f} MB in all")
    if total > LIMIT_MB:
        print(f"carry: {total:.1f} MB is over {LIMIT_MB} MB; lower --per-class", file=sys.stderr)
        return 1
    relative = out.resolve().relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out
    print(
        "On the GPU machine (device run, carry: ['" + str(relative) + "']):\n"
        f"  mkdir -p /tmp/carry && tar -xJf {relative}/site.tar.xz -C /tmp/carry && "
        f"PYTHONPATH=/tmp/carry/site:$PWD python3 -m benchmarks.gpu_check --out $OUT/check --data {relative}/data "
        "--check-results shared/tools/check_results.py"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
