"""Figure 4.2: the original images (colour, full size) of the images figure 4.3 shows preprocessed.

The manifest names each image by its path under the dataset's class folders and its content hash; the report
looks for it where the run read its data (`--data` in run.json, relative to the run's folder, or a literal `data`
in its grid file, read without running it), then in the embedded sample, and draws only a file whose sha256 is the
manifest's. A .zip is read in place, never unpacked.
"""

from __future__ import annotations

import ast
import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from raybench.data.source import EMBEDDED_DATA


def _grid_data(grid_file: str | None, cwd: str) -> str | None:
    """The `data` of a grid file's GRID when it is a literal string (the file is parsed, not run)."""
    if not grid_file:
        return None
    path = Path(cwd, grid_file)
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return None
    grids = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "GRID" for t in node.targets)
        and isinstance(node.value, ast.Dict)
    ]
    for grid in grids:
        for key, value in zip(grid.keys, grid.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == "data" and isinstance(value, ast.Constant):
                return value.value if isinstance(value.value, str) else None
    return None


def data_sources(runs: Sequence[dict]) -> list[Path]:
    """Where the run read its images, newest invocation first, then the embedded sample."""
    found: list[Path] = []
    for run in reversed(list(runs)):
        cwd = run.get("cwd") or "."
        argv = list(run.get("argv") or [])
        given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--data"]
        given += [a.split("=", 1)[1] for a in argv if a.startswith("--data=")]
        given.append(_grid_data(run.get("grid_file"), cwd))
        for data in given:
            if data:
                found.append(Path(cwd, data).expanduser())
    found.append(EMBEDDED_DATA)
    return list(dict.fromkeys(found))


def _read(source: Path, image: str) -> bytes | None:
    """The bytes of `image` (class/file.jpg) under a dataset folder, its parent, or in a .zip; None if absent."""
    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            names = [n for n in archive.namelist() if n == image or n.endswith("/" + image)]
            return archive.read(names[0]) if names else None
    for folder in (source, *(sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else [])):
        path = folder / image
        if path.is_file():
            return path.read_bytes()
    return None


def original_images(rows: pd.DataFrame, runs: Sequence[dict]) -> tuple[list[np.ndarray | None], Path | None]:
    """The original RGB image of each manifest row (None where no source holds the same content), and the source
    that held them."""
    for source in data_sources(runs):
        images = []
        for image, sha in zip(rows.image, rows.sha256, strict=True):
            try:
                content = _read(source, image)
            except OSError:
                content = None
            if content is None or hashlib.sha256(content).hexdigest() != sha:
                images.append(None)
                continue
            with Image.open(io.BytesIO(content)) as img:
                images.append(np.asarray(img.convert("RGB")))
        if any(i is not None for i in images):
            return images, source
    return [None] * len(rows), None
