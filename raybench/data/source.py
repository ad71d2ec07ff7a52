"""Where the PBC images come from: the folder holding the 8 class folders, the embedded 400-image sample,
the .zip (unpacked once, next to it), and the download of the full dataset from Mendeley Data.

Images: Acevedo, Merino, Alférez, Molina, Boldú, Rodellar, "A dataset of microscopic peripheral blood cell images
for development of automatic recognition systems", Data in Brief 30 (2020) 105474, CC BY 4.0.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from raybench.catalog import CLASSES

EMBEDDED_DATA: Path = Path(__file__).resolve().parent.parent / "embedded" / "pbc400"

# The dataset's only file on Mendeley Data (https://data.mendeley.com/datasets/snkd93bnjr/1,
# "PBC_dataset_normal_DIB.zip"): the address the dataset page's download button points to, as used by several
# public projects. Mendeley publishes no checksum; the download is checked against the server's Content-Length,
# the zip's CRCs and its 8 class folders.
PBC_URL = (
    "https://data.mendeley.com/public-files/datasets/snkd93bnjr/files/"
    "2fc38728-2ae7-4a62-a857-032af82334c3/file_downloaded"
)
PBC_ZIP = "PBC_dataset_normal_DIB.zip"


class DownloadError(RuntimeError):
    """The dataset could not be downloaded or is not what it should be."""


# ---------------------------------------------------------------------------------------------- finding the data


def _is_root(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in CLASSES)


def find_root(data: str | Path | None) -> Path:
    """The folder holding the class folders: `data` itself, its one dataset subfolder, or a .zip unpacked next to it."""
    if data is None:
        return EMBEDDED_DATA
    path = Path(data).expanduser().resolve()
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path} is a file but not a zip archive: "
                "pass the PBC_dataset_normal_DIB folder, its parent or the .zip"
            )
        entries = _unpack(path)
        if set(CLASSES) <= set(entries):  # the zip holds the class folders themselves
            return path.parent
        candidates = [path.parent / entry for entry in entries]
    elif path.is_dir():
        if _is_root(path):
            return path
        candidates = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith((".", "__MACOSX")))
    else:
        raise ValueError(f"data {path} does not exist")
    roots = [d for d in candidates if d.is_dir() and _is_root(d)]
    if len(roots) == 1:
        return roots[0]
    if len(roots) > 1:
        raise ValueError(f"{path} holds several datasets ({', '.join(r.name for r in roots)}): pass one of them")
    present = [name for name in CLASSES if (path / name).is_dir()]
    if present:
        missing = [name for name in CLASSES if name not in present]
        raise ValueError(f"{path} has class folders {', '.join(present)} but lacks {', '.join(missing)}")
    raise ValueError(
        f"no PBC dataset in {path}: expected the folders {', '.join(CLASSES)} (as in PBC_dataset_normal_DIB/), "
        "a folder holding them, or the .zip (python -m raybench.data download DEST fetches it)"
    )


def _unpack(zip_path: Path) -> list[str]:
    """Unpack a zip once, next to it; return its top-level entries. A marker file records a finished unpack."""
    marker = zip_path.parent / f".{zip_path.name}.unpacked.json"
    stat = zip_path.stat()
    stamp = {"zip": zip_path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    old = json.loads(marker.read_text()) if marker.is_file() else None
    if old and {k: old.get(k) for k in stamp} == stamp and all((zip_path.parent / e).exists() for e in old["entries"]):
        return old["entries"]
    with zipfile.ZipFile(zip_path) as archive:
        members = [m for m in archive.namelist() if not m.startswith("__MACOSX/")]
        entries = sorted({m.split("/")[0] for m in members if m.split("/")[0]})
        for entry in entries:  # never overwrite a folder raybench did not unpack itself
            target = zip_path.parent / entry
            if target.exists() and not (old and entry in old["entries"]):
                raise ValueError(
                    f"{target} exists but was not unpacked by raybench from {zip_path.name}: "
                    "pass that folder instead of the zip, or remove it"
                )
        tmp = zip_path.parent / f".{zip_path.name}.unpacking-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        archive.extractall(tmp, members)  # checks every member's CRC
    for entry in entries:
        target = zip_path.parent / entry
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp / entry, target)
    shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(json.dumps({**stamp, "entries": entries}))
    return entries


# ------------------------------------------------------------------------------------------------- download


def download(dest: str | Path, *, url: str = PBC_URL, attempts: int = 3, retry_wait: float = 2.0) -> Path:
    """Fetch, check and unpack the full dataset into `dest`; return the dataset folder. Resumes a broken download."""
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    zip_path = dest / PBC_ZIP
    if not zip_path.exists():
        part = dest / (PBC_ZIP + ".part")
        for attempt in range(1, attempts + 1):
            try:
                _fetch(url, part)
                break
            except (OSError, http.client.HTTPException, DownloadError) as error:  # cut connections, timeouts, resets
                if isinstance(error, urllib.error.HTTPError) and error.code < 500 and error.code not in (408, 416, 429):
                    raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error  # retrying won't help
                have = part.stat().st_size if part.exists() else 0
                if attempt == attempts:
                    raise DownloadError(
                        f"download of {url} failed ({error}); {have} bytes are kept in {part}: "
                        "run the same command again to resume"
                    ) from error
                print(f"download interrupted ({error}); resuming from byte {have}", file=sys.stderr)
                time.sleep(retry_wait)
        _check_zip(part)
        os.replace(part, zip_path)
    return find_root(zip_path)


def _fetch(url: str, part: Path) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "raybench (python urllib)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the .part may already be whole
            total = re.search(r"/(\d+)", error.headers.get("Content-Range", ""))
            if total and int(total.group(1)) == have:
                return
            part.unlink()
        raise
    with response:
        total = None
        if have and response.status == 206:
            match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != have:
                part.unlink()
                raise DownloadError(
                    f"the server resumed at the wrong place ({response.headers.get('Content-Range')}); starting over"
                )
            total = int(match.group(2)) if match.group(2) != "*" else None
            mode = "ab"
        else:  # 200: the server sends everything (again)
            length = response.headers.get("Content-Length")
            total, mode, have = (int(length) if length else None), "wb", 0
        print(f"downloading {url} -> {part}" + (f" ({total / 1e6:.0f} MB)" if total else ""), file=sys.stderr)
        with open(part, mode) as handle:
            while block := response.read(1 << 20):
                handle.write(block)
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"the connection closed after {size} of {total} bytes")


def _check_zip(path: Path) -> None:
    """A readable zip whose CRCs check out and which holds the 8 class folders; else delete it and raise."""
    try:
        with zipfile.ZipFile(path) as archive:
            folders = {tuple(name.split("/")[:2]) for name in archive.namelist() if name.count("/") >= 2}
            if not any(all((top, c) in folders for c in CLASSES) for top, _ in folders):
                raise DownloadError(f"the archive lacks the class folders {', '.join(CLASSES)}")
            broken = archive.testzip()
            if broken:
                raise DownloadError(f"the archive member {broken} is corrupt")
    except (zipfile.BadZipFile, DownloadError) as error:
        path.unlink()
        raise DownloadError(
            f"the download is not the PBC dataset ({error}); if the address changed, find the file on "
            "https://data.mendeley.com/datasets/snkd93bnjr/1 and pass --url"
        ) from error
