"""Where the PBC images come from: the folder holding the 8 class folders, the embedded 400-image sample,
the .zip (checked, then unpacked once, next to it or into the user's cache when its folder is read-only), and the
download of the full dataset from Mendeley Data.

Images: Acevedo, Merino, Alférez, Molina, Boldú, Rodellar, "A dataset of microscopic peripheral blood cell images
for development of automatic recognition systems", Data in Brief 30 (2020) 105474, CC BY 4.0.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

from raybench import files
from raybench.catalog import CLASSES

EMBEDDED_DATA: Path = Path(__file__).resolve().parent.parent / "embedded" / "pbc400"

# The dataset's only file on Mendeley Data (https://data.mendeley.com/datasets/snkd93bnjr/1,
# "PBC_dataset_normal_DIB.zip"): the address the dataset page's download button points to, as used by several
# public projects. The download is checked against the server's Content-Length, the zip's CRCs and its 8 class
# folders, and against PBC_SHA256 when that is known.
PBC_URL = (
    "https://data.mendeley.com/public-files/datasets/snkd93bnjr/files/"
    "2fc38728-2ae7-4a62-a857-032af82334c3/file_downloaded"
)
PBC_ZIP = "PBC_dataset_normal_DIB.zip"
# unknown: the dataset page shows no checksum and none was found in public code or documentation (searched for
# "PBC_dataset_normal_DIB.zip sha256", "snkd93bnjr sha256"). Mendeley's file listing of the dataset reports one per
# file (content_details.sha256_hash); set it here, or pass `sha256=` / `--sha256`, and every download is checked.
PBC_SHA256: str | None = None

# The archive unpacks to about 0.3 GB (17,092 JPEGs of about 17 kB): anything far bigger is not the dataset, or a
# zip bomb, and is refused before a byte is written.
MAX_UNPACKED_BYTES = 4 * 10**9
MAX_MEMBERS = 50_000

# The whole download's time limit, retries included (a server that trickles bytes never trips a socket's timeout):
# 0.3 GB in 2 hours is 40 kB/s. RAYBENCH_DOWNLOAD_DEADLINE_S or `deadline_s=` sets another.
DOWNLOAD_DEADLINE_S = 2 * 3600.0
SOCKET_TIMEOUT_S = 60.0  # one read or connect that hears nothing
PROGRESS_EVERY_S = 10.0  # a progress line on the console this often


class DownloadError(RuntimeError):
    """The dataset could not be downloaded or is not what it should be."""


class NoSpaceError(OSError, ValueError):
    """The disk is too full for a download, an unpack or a decoded cache (a ValueError too: commands print one line)."""

    def __str__(self) -> str:
        return str(self.strerror)


def no_space(need: int | None, folder: Path, hint: str) -> NoSpaceError:
    """The one-line error for a full disk: how much is needed where, how much is free, and what to do."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free / 1e9
    needed = f"need {need / 1e9:.3g} GB at {folder}" if need is not None else f"at {folder}"
    return NoSpaceError(errno.ENOSPC, f"no space left: {needed} ({free:.3g} GB free); {hint}")


# ---------------------------------------------------------------------------------------------- finding the data


def _is_root(folder: Path) -> bool:
    return all((folder / name).is_dir() for name in CLASSES)


def find_root(data: str | Path | None, *, unpack_to: str | Path | None = None) -> Path:
    """The folder holding the class folders: `data` itself, its one dataset subfolder, or a .zip unpacked once.

    A zip is unpacked next to it or, when that folder is read-only, into `unpack_to` (default: a folder of its own
    under ~/.cache/raybench/unpacked).
    """
    if data is None:
        return EMBEDDED_DATA
    path = Path(data).expanduser().resolve()
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path} is a file but not a zip archive: "
                "pass the PBC_dataset_normal_DIB folder, its parent or the .zip"
            )
        fallback = Path(unpack_to).expanduser().resolve() if unpack_to else _user_unpack_folder(path)
        folder, entries = _unpack(path, fallback)
        if set(CLASSES) <= set(entries):  # the zip holds the class folders themselves
            return folder
        candidates = [folder / entry for entry in entries]
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


def _user_unpack_folder(zip_path: Path) -> Path:
    """Where a zip in a read-only folder is unpacked: one folder per zip path under the user's raybench cache."""
    return Path.home() / ".cache" / "raybench" / "unpacked" / f"{zip_path.stem}-{_short_hash(str(zip_path))}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=folder).cleanup()  # a real write: root ignores modes but not a read-only mount
    except OSError:
        return False
    return True


def _unpack(zip_path: Path, fallback: Path) -> tuple[Path, list[str]]:
    """Unpack a zip once, next to it or else into `fallback`; return the folder and the zip's top-level entries.

    A marker file records a finished unpack. The members are checked first: their number, their total size and
    their names (none absolute or with '..'), and the free space.
    """
    stat = zip_path.stat()
    stamp = {"zip": zip_path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    for folder in (zip_path.parent, fallback):  # unpacked already?
        old = _marker(folder, zip_path)
        if old and {k: old.get(k) for k in stamp} == stamp and all((folder / e).exists() for e in old["entries"]):
            return folder, old["entries"]
    folder = zip_path.parent
    if not _writable(folder):
        if not _writable(fallback):
            raise ValueError(
                f"cannot unpack {zip_path}: neither its folder nor {fallback} can be written; "
                "unpack it yourself and pass the PBC_dataset_normal_DIB folder"
            )
        print(f"{zip_path.parent} is read-only: unpacking {zip_path.name} into {fallback}", file=sys.stderr)
        folder = fallback
    old, infos = _marker(folder, zip_path), []
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = [i for i in archive.infolist() if not i.filename.startswith("__MACOSX/")]
            _check_members(zip_path, infos, folder)
            members = [i.filename for i in infos]
            entries = sorted({m.split("/")[0] for m in members if m.split("/")[0]})
            for entry in entries:  # never overwrite a folder raybench did not unpack itself
                target = folder / entry
                if target.exists() and not (old and entry in old["entries"]):
                    raise ValueError(
                        f"{target} exists but was not unpacked by raybench from {zip_path.name}: "
                        "pass that folder instead of the zip, or remove it"
                    )
            tmp = folder / f".{zip_path.name}.unpacking-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                archive.extractall(tmp, members)  # checks every member's CRC
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{zip_path} is damaged ({error}): download it again") from error
    except OSError as error:
        if isinstance(error, NoSpaceError):
            raise
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            need = sum(i.file_size for i in infos)
            raise no_space(need, folder, "free some space, or unpack the zip elsewhere and pass the folder") from error
        raise ValueError(f"cannot unpack {zip_path} into {folder} ({error})") from error
    for entry in entries:
        target = folder / entry
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp / entry, target)
    shutil.rmtree(tmp, ignore_errors=True)
    _marker_path(folder, zip_path).write_text(json.dumps({**stamp, "entries": entries}))
    return folder, entries


def _marker_path(folder: Path, zip_path: Path) -> Path:
    return folder / f".{zip_path.name}.unpacked.json"


def _marker(folder: Path, zip_path: Path) -> dict | None:
    try:
        return json.loads(_marker_path(folder, zip_path).read_text())
    except (OSError, ValueError):
        return None


def _check_members(zip_path: Path, infos: list[zipfile.ZipInfo], folder: Path) -> None:
    """Refuse, before writing anything, an archive that cannot be the dataset: too many or too big members (a zip
    bomb), names that would land outside the folder, or more than the disk can hold."""
    if len(infos) > MAX_MEMBERS:
        raise ValueError(
            f"{zip_path} holds {len(infos)} files, far more than the PBC dataset (17,092 images; at most "
            f"{MAX_MEMBERS} accepted): refusing to unpack it"
        )
    unsafe = [i.filename for i in infos if _unsafe_name(i.filename)]
    if unsafe:
        raise ValueError(
            f"{zip_path} has a member that would land outside its folder ({unsafe[0]!r}): refusing to unpack it"
        )
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        raise ValueError(
            f"{zip_path} would unpack to {total / 1e9:.3g} GB, far more than the PBC dataset (about 0.3 GB; at most "
            f"{MAX_UNPACKED_BYTES / 1e9:.3g} GB accepted): refusing to unpack it (a zip bomb, or not the dataset)"
        )
    if total > shutil.disk_usage(folder).free:
        raise no_space(total, folder, "free some space, or unpack the zip elsewhere and pass the folder")


def _unsafe_name(name: str) -> bool:
    """An absolute name, a Windows drive, or a '..' part: extracting it could write outside the target folder."""
    return name.startswith(("/", "\\")) or bool(re.match(r"[A-Za-z]:", name)) or ".." in re.split(r"[/\\]", name)


# ------------------------------------------------------------------------------------------------- download


def download_deadline() -> float:
    """The download's overall time limit in seconds: RAYBENCH_DOWNLOAD_DEADLINE_S, else DOWNLOAD_DEADLINE_S."""
    text = os.environ.get("RAYBENCH_DOWNLOAD_DEADLINE_S", "")
    try:
        seconds = float(text) if text else DOWNLOAD_DEADLINE_S
    except ValueError:
        seconds = float("nan")
    if not (0 < seconds < float("inf")):
        raise ValueError(f"RAYBENCH_DOWNLOAD_DEADLINE_S must be a number of seconds above 0, got {text!r}")
    return seconds


def download(
    dest: str | Path,
    *,
    url: str = PBC_URL,
    sha256: str | None = PBC_SHA256,
    attempts: int = 3,
    retry_wait: float = 2.0,
    deadline_s: float | None = None,
) -> Path:
    """Fetch, check and unpack the full dataset into `dest`; return the dataset folder. Resumes a broken download.

    With `sha256` the archive must have that SHA-256: a download that does not is deleted, never kept as the zip.
    A full disk stops at once (the partial file is kept for the next call); network failures are retried, all within
    `deadline_s` (default: download_deadline()), after which the partial file is kept for the next call.
    """
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    limit = download_deadline() if deadline_s is None else deadline_s
    if not (0 < limit < float("inf")):
        raise ValueError(f"the download deadline (--deadline) must be a number of seconds above 0, got {limit!r}")
    deadline = time.monotonic() + limit
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"download target {dest} is a file, not a folder: pass a folder (it is created if missing)")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the download folder {dest} ({error.strerror}): pass another folder") from error
    zip_path = dest / PBC_ZIP
    if zip_path.exists():
        if sha256:
            _check_sha256(zip_path, sha256, delete=False)
        return find_root(zip_path)
    part = dest / (PBC_ZIP + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _fetch(url, part, deadline=deadline)
            break
        except ValueError:  # the local disk (full, not writable): retrying won't help
            raise
        except (OSError, http.client.HTTPException, DownloadError) as error:  # cut connections, timeouts, resets
            if isinstance(error, urllib.error.HTTPError) and error.code < 500 and error.code not in (408, 416, 429):
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error  # retrying won't help
            have = part.stat().st_size if part.exists() else 0
            if time.monotonic() >= deadline:
                raise DownloadError(
                    f"the download of {url} did not finish within its deadline of {limit:g} s "
                    f"(RAYBENCH_DOWNLOAD_DEADLINE_S); {have} bytes are kept in {part}: run the same command again "
                    "to resume"
                ) from error
            if attempt == attempts:
                raise DownloadError(
                    f"download of {url} failed ({error}); {have} bytes are kept in {part}: "
                    "run the same command again to resume"
                ) from error
            print(f"download interrupted ({error}); resuming from byte {have}", file=sys.stderr)
            time.sleep(retry_wait)
    digest = _check_sha256(part, sha256, delete=True)
    _check_zip(part)
    files.replace(part, zip_path)
    print(f"{zip_path}: {zip_path.stat().st_size} bytes, SHA-256 {digest}", file=sys.stderr)
    return find_root(zip_path)


def _fetch(url: str, part: Path, *, deadline: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "raybench (python urllib)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    timeout = max(0.1, min(SOCKET_TIMEOUT_S, deadline - time.monotonic()))
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
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
        if total is not None and total - have > shutil.disk_usage(part.parent).free:
            raise _disk_error(OSError(errno.ENOSPC, "No space left on device"), part, total)
        print(f"downloading {url} -> {part}" + (f" ({total / 1e6:.0f} MB)" if total else ""), file=sys.stderr)
        progress = Progress(have, total)
        with _open_part(part, mode, total) as handle:
            while block := response.read1(1 << 20):  # what has come: a trickle still reaches the deadline check
                view = memoryview(block)
                try:
                    while view:
                        view = view[handle.write(view) :]
                except OSError as error:
                    raise _disk_error(error, part, total) from error
                progress.add(len(block))
                if time.monotonic() >= deadline:  # network errors propagate as they are: retried
                    raise DownloadError(f"the deadline passed after {progress.have} bytes")
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"the connection closed after {size} of {total} bytes")


class Progress:
    """The download's progress, printed on the console every PROGRESS_EVERY_S: bytes, share, speed, time left."""

    def __init__(self, have: int, total: int | None) -> None:
        self.have, self.total, self.start = have, total, have
        self.started = self.shown = time.monotonic()

    def add(self, count: int) -> None:
        self.have += count
        now = time.monotonic()
        if now - self.shown < PROGRESS_EVERY_S:
            return
        self.shown = now
        rate = (self.have - self.start) / max(now - self.started, 1e-9)
        line = f"downloaded {self.have / 1e6:.1f}"
        if self.total:
            left = (self.total - self.have) / rate if rate > 0 else float("inf")
            line += f" of {self.total / 1e6:.1f} MB ({self.have / self.total:.0%})"
            line += f", {rate / 1e6:.2f} MB/s, about {left:.0f} s left" if left < float("inf") else ""
        else:
            line += f" MB, {rate / 1e6:.2f} MB/s"
        print(line, file=sys.stderr, flush=True)


def _open_part(part: Path, mode: str, total: int | None):
    try:
        return open(part, mode, buffering=0)  # unbuffered: a full disk fails the write, not a later flush
    except OSError as error:
        raise _disk_error(error, part, total) from error


def _disk_error(error: OSError, part: Path, total: int | None) -> ValueError:
    """A local write failed: a full disk says how much is still needed; either way the partial file is kept."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        have = part.stat().st_size if part.exists() else 0
        return no_space(
            None if total is None else total - have,
            part.parent,
            f"free some space and run the same command again: the {have} bytes downloaded so far are kept in {part}",
        )
    return ValueError(f"cannot write {part} ({error.strerror}): pass a folder you can write to")


def _check_sha256(path: Path, expected: str | None, *, delete: bool) -> str:
    """The file's SHA-256; one that is not `expected` is refused, and deleted when it is a download."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    actual = digest.hexdigest()
    if expected is not None and actual != expected.lower():
        if delete:
            path.unlink()
            raise DownloadError(
                f"the download's SHA-256 is {actual}, not the expected {expected}, so it was deleted; if the dataset "
                "was republished, check https://data.mendeley.com/datasets/snkd93bnjr/1 and pass its --sha256"
            )
        raise DownloadError(f"{path} has SHA-256 {actual}, not the expected {expected}: remove it to download again")
    return actual


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
