"""Bad input to the data layer: each is one clear line (a ValueError, a DownloadError, or exit code 2 with one
line on stderr), and nothing computed is lost. Real files, a real HTTP server on 127.0.0.1, real file systems."""

import errno
import fcntl
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset, read_only, small_disk
from PIL import Image

from raybench import data
from raybench.data import cache, source, validation
from raybench.data.__main__ import main


def zip_folder(root: Path, zip_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in sorted(root.rglob("*.jpg")):
            archive.write(file, file.relative_to(root.parent).as_posix())
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
    return zip_path


def one_line_error(capsys) -> str:
    """The command's error: its last line on stderr, after any progress lines, and no traceback."""
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("python -m raybench.data: error: ") and "Traceback" not in err, err
    return last


# -------------------------------------------------------------------------------------------- pixel formats


def save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def test_a_16_bit_greyscale_png_is_scaled_to_8_bits_not_white(tmp_path):
    values = (np.arange(360 * 360, dtype=np.uint32).reshape(360, 360) * 97 % 65536).astype(np.uint16)
    path = save(Image.fromarray(values), tmp_path / "BA_16bit.png")
    expected = np.rint(values[4:356, 4:356] / 257.0).astype(np.uint8)  # 65535 -> 255, 257 -> 1
    with Image.open(path) as img:
        assert img.mode in validation.GREY16_MODES or img.mode == "I"
        out = data.preprocess(img)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == 255 and 100 < out.mean() < 155  # not a white image


def test_16_bit_greyscale_images_go_through_prepare_and_the_cache(tmp_path):
    """Every basophil saved as 16-bit greyscale PNG (its thesis grey times 257) decodes as the 8-bit JPEG did."""
    root = make_dataset(tmp_path, per_class=6)
    originals = {}
    for jpg in sorted((root / "basophil").glob("*.jpg")):
        with Image.open(jpg) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float64)
            originals[f"basophil/{jpg.stem}.png"] = data.preprocess(img)
        grey = np.rint(0.2989 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint16)
        Image.fromarray(grey * 257).save(jpg.with_suffix(".png"))
        jpg.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.DataWarning)  # nothing skipped
        prepared = data.prepare(root, tiers={"all": None})
    rows = prepared.manifest[(prepared.manifest.tier == "all") & (prepared.manifest.split == "train")]
    x, _ = data.load_split(prepared, "all", "train", cache_dir=tmp_path / "cache")
    checked = [name for name in rows.image if name in originals]
    assert checked
    for name in checked:
        np.testing.assert_array_equal(x[list(rows.image).index(name)], originals[name])


RED_ORANGE = (200, 100, 50)  # 0.2989 * 200 + 0.587 * 100 + 0.114 * 50 = 124.18


@pytest.mark.parametrize(
    "make, grey",
    [
        (lambda: Image.new("LA", (360, 360), (100, 7)), 100),  # alpha dropped, as convert("RGB") does
        (lambda: Image.new("RGBA", (360, 360), (*RED_ORANGE, 0)), 124),
        (lambda: Image.new("RGB", (360, 360), RED_ORANGE).convert("P", palette=Image.Palette.ADAPTIVE), 124),
        (lambda: Image.new("CMYK", (360, 360), (0, 255, 255, 0)), 76),  # pure red
        (lambda: Image.new("1", (360, 360), 1), 255),
        (lambda: Image.new("I;16", (360, 360), 257 * 124), 124),
        (lambda: Image.new("I;16B", (360, 360), 257 * 30), 30),
    ],
)
def test_pixel_modes_give_the_thesis_grey(make, grey):
    img = make()
    assert validation.pixel_problem(img) is None
    assert (data.preprocess(img) == grey).all()


def test_pixels_without_an_8_bit_scale_are_skipped_naming_file_and_reason(tmp_path):
    root = make_dataset(tmp_path, per_class=6)
    float_tif = save(Image.new("F", (360, 360), 0.5), root / "monocyte" / "MO_float.tif")
    int_tif = save(Image.new("I", (360, 360), 70000), root / "platelet" / "PLT_int32.tif")
    with pytest.warns(data.DataWarning) as caught:
        prepared = data.prepare(root, tiers={"all": None})
    messages = "\n".join(str(w.message) for w in caught)
    assert f"skipping {float_tif}: 32-bit float pixels have no defined 8-bit scale" in messages
    assert f"skipping {int_tif}: I integer pixels have no defined 8-bit scale" in messages
    assert dict(prepared.report.skipped).keys() == {"monocyte/MO_float.tif", "platelet/PLT_int32.tif"}
    for path in (float_tif, int_tif):
        with Image.open(path) as img, pytest.raises(ValueError, match=rf"{path.name}: .* no defined 8-bit scale"):
            data.preprocess(img)


def test_a_file_name_utf8_cannot_encode_is_skipped_naming_the_file(tmp_path):
    root = make_dataset(tmp_path, per_class=6)
    source_image = sorted((root / "basophil").glob("*.jpg"))[0]
    bad = os.path.join(os.fsencode(root / "basophil"), b"BA_caf\xe9.jpg")  # Latin-1, as an old archive might name it
    Path(os.fsdecode(bad)).write_bytes(source_image.read_bytes())
    with pytest.warns(data.DataWarning) as caught:
        prepared = data.prepare(root, tiers={"all": None})
    messages = "\n".join(str(w.message) for w in caught)
    assert f"skipping {root}/basophil/BA_caf\\xe9.jpg: its name is not valid UTF-8 (rename it)" in messages
    assert dict(prepared.report.skipped) == {"basophil/BA_caf\\xe9.jpg": "its name is not valid UTF-8 (rename it)"}
    assert prepared.report.usable == 8 * 6 and prepared.report.files_seen == 8 * 6 + 1


SCAN_UNDER_A_MEMORY_CAP = """
import resource, sys, warnings
from pathlib import Path
from raybench.data import validation
with open("/proc/self/status") as status:
    size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (size + 192 * 2**20, resource.RLIM_INFINITY))  # 192 MiB more than now
with warnings.catch_warnings(record=True):
    images, skipped, seen = validation.scan(Path(sys.argv[1]))
print(len(images), seen, dict(skipped))
"""


def test_a_large_non_image_file_is_skipped_without_being_read_whole(tmp_path):
    root = make_dataset(tmp_path, per_class=2)
    with open(root / "monocyte" / "notes.bin", "wb") as handle:  # sparse: no disk used, 250 MiB to read
        handle.truncate(250 * 2**20)
    huge = root / "platelet" / "huge.jpg"  # a real JPEG's header, then 3 GiB
    huge.write_bytes(sorted((root / "platelet").glob("*.jpg"))[0].read_bytes())
    with open(huge, "r+b") as handle:
        handle.truncate(3 * 2**30)
    done = subprocess.run(
        [sys.executable, "-c", SCAN_UNDER_A_MEMORY_CAP, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},  # the cap is on address space: no 64 MiB arena per thread
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "16 18 {" in done.stdout and "'monocyte/notes.bin': 'not an image'" in done.stdout
    assert "'platelet/huge.jpg': 'too large for an image (3072 MiB; at most 256 MiB read)'" in done.stdout


def test_a_ninth_folder_beside_the_class_folders_is_named_as_ignored(tmp_path):
    root = make_dataset(tmp_path, per_class=6)
    extra = root / "band_neutrophil"
    extra.mkdir()
    shutil.copy(sorted((root / "neutrophil").glob("*.jpg"))[0], extra / "BNE_1.jpg")
    (root / ".thumbnails").mkdir()  # hidden folders are no one's classes: not reported
    with pytest.warns(data.DataWarning) as caught:
        prepared = data.prepare(root, tiers={"all": None})
    line = f"ignoring the folder {extra}: not one of the 8 classes (basophil, eosinophil,"
    assert next(str(w.message) for w in caught if line in str(w.message)).endswith("its 1 file(s) are ignored")
    assert list(dict(prepared.report.skipped)) == ["band_neutrophil/"] and prepared.report.usable == 8 * 6
    assert "skipped band_neutrophil/: not one of the 8 classes" in str(prepared.report)


# ------------------------------------------------------------------------------------------- class folders


def test_an_empty_class_folder_is_refused_in_one_line(tmp_path, capsys):
    root = make_dataset(tmp_path, per_class=6)
    for image in (root / "monocyte").iterdir():
        image.unlink()
    for image in (root / "ig").iterdir():
        image.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError) as caught, warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DataWarning)
        data.prepare(root, tiers={"all": None})
    message = str(caught.value)
    assert f"{root / 'ig'} (none of its 6 files is usable)" in message and f"{root / 'monocyte'} (empty)" in message
    assert "8 outputs" in message and "\n" not in message
    assert main(["prepare", str(root)]) == 2
    assert "monocyte (empty)" in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------------- zips


def test_a_zip_in_a_read_only_folder_is_unpacked_into_the_users_cache(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    made = zip_folder(make_dataset(tmp_path / "src", per_class=6), tmp_path / "PBC_dataset_normal_DIB.zip")
    expected = data.prepare(make_dataset(tmp_path / "plain", per_class=6), tiers={"all": None}).manifest
    with read_only(tmp_path / "ro", [made]) as folder:
        zip_path = folder / made.name
        prepared = data.prepare(zip_path, tiers={"all": None})
        unpacked = tmp_path / "home" / ".cache" / "raybench" / "unpacked"
        assert prepared.root.parent.parent == unpacked and prepared.root.name == "PBC_dataset_normal_DIB"
        assert f"{folder} is read-only: unpacking {made.name} into {prepared.root.parent}" in capfd.readouterr().err
        assert prepared.manifest.equals(expected)
        inode = prepared.root.stat().st_ino
        assert data.prepare(zip_path, tiers={"all": None}).root.stat().st_ino == inode  # unpacked once
        chosen = data.find_root(zip_path, unpack_to=tmp_path / "chosen")  # or where the caller says
        assert chosen == tmp_path / "chosen" / "PBC_dataset_normal_DIB"
        assert data.prepare(chosen, tiers={"all": None}).manifest.equals(expected)
        assert sorted(os.listdir(folder)) == [made.name]  # nothing was written next to the zip


LOCAL, CENTRAL, END = "<4s5H3L2H", "<4s6H3L5H2L", "<4s4H2LH"  # the zip format's three records (APPNOTE 4.3)


def raw_zip(members: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of (name, raw deflate data or b"", crc32, size) written by hand: zipfile cannot store data compressed
    elsewhere, and compressing gigabytes here would take a minute."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, payload, crc, size in members:
        encoded, offset = name.encode(), out.tell()
        common = (0, 8 if payload else 0, 0, 33, crc, len(payload), size, len(encoded))  # flags .. name length
        out.write(struct.pack(LOCAL, b"PK\x03\x04", 20, *common, 0) + encoded + payload)
        central.write(struct.pack(CENTRAL, b"PK\x01\x02", 20, 20, *common, 0, 0, 0, 0, 0o644 << 16, offset) + encoded)
    start, directory = out.tell(), central.getvalue()
    out.write(directory + struct.pack(END, b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), start, 0))
    return out.getvalue()


def zeros_member(name: str, mib: int) -> tuple[str, bytes, int, int]:
    """`mib` MiB of zeros as raw deflate: a 1 MiB block ended by a full flush, repeated, then a final empty block."""
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = block.compress(bytes(1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(bytes(1 << 20), crc)
    return name, chunk * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), crc, mib << 20


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path, capsys):
    member = zeros_member("PBC_dataset_normal_DIB/basophil/BA_0.jpg", 256)
    bomb = [(f"PBC_dataset_normal_DIB/{c}/{c[:2].upper()}_{i}.jpg", *member[1:]) for c in data.CLASSES for i in (0, 1)]
    zip_path = tmp_path / "dl" / "PBC_dataset_normal_DIB.zip"
    zip_path.parent.mkdir()
    zip_path.write_bytes(raw_zip(bomb))  # 16 x 256 MiB = 4.3 GB of zeros in 4.3 MB
    assert zip_path.stat().st_size < 5 * 10**6
    with zipfile.ZipFile(zip_path) as archive, archive.open(archive.infolist()[0]) as first:  # a valid zip
        assert sum(len(b) for b in iter(lambda: first.read(1 << 24), b"")) == 256 << 20  # that really inflates
    with pytest.raises(ValueError, match=r"would unpack to 4\.29 GB, far more than the PBC dataset"):
        data.prepare(zip_path)
    assert os.listdir(zip_path.parent) == [zip_path.name]
    assert main(["prepare", str(zip_path)]) == 2
    assert "refusing to unpack it (a zip bomb, or not the dataset)" in one_line_error(capsys)


def test_a_zip_with_too_many_members_is_refused(tmp_path):
    names = [f"PBC_dataset_normal_DIB/basophil/{i}.jpg" for i in range(source.MAX_MEMBERS + 1)]
    zip_path = tmp_path / "many.zip"
    zip_path.write_bytes(raw_zip([(name, b"", 0, 0) for name in names]))
    with pytest.raises(ValueError, match=rf"holds {source.MAX_MEMBERS + 1} files, far more than the PBC dataset"):
        data.prepare(zip_path)
    assert os.listdir(tmp_path) == [zip_path.name]


@pytest.mark.parametrize("name", ["/tmp/raybench_escape.jpg", "../escape.jpg", "PBC_dataset_normal_DIB/../../x.jpg"])
def test_a_zip_member_outside_the_folder_is_refused(tmp_path, name):
    zip_path = zip_folder(make_dataset(tmp_path / "src", per_class=6), tmp_path / "dl.zip", extra={name: b"payload"})
    with pytest.raises(ValueError, match=re.escape(f"has a member that would land outside its folder ({name!r})")):
        data.prepare(zip_path)
    assert sorted(os.listdir(tmp_path)) == ["dl.zip", "src"]


# ------------------------------------------------------------------------------------------------ download


@pytest.fixture
def payload(tmp_path) -> bytes:
    return zip_folder(make_dataset(tmp_path / "zipsrc", per_class=2), tmp_path / "payload.zip").read_bytes()


def test_a_download_target_that_is_a_file_is_one_line(tmp_path, server, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["download", str(target), "--url", server["url"]]) == 2
    assert f"download target {target} is a file, not a folder" in one_line_error(capsys)
    assert main(["download", str(target / "inside"), "--url", server["url"]]) == 2
    assert f"cannot create the download folder {target / 'inside'}" in one_line_error(capsys)
    assert target.read_text() == "mine" and server["ranges"] == []


def test_a_full_disk_stops_the_download_at_once_and_keeps_the_part(tmp_path, server, payload, capsys):
    server["payload"] = payload
    dest = tmp_path / "dest"
    dest.mkdir()
    part = dest / (data.PBC_ZIP + ".part")
    part.symlink_to("/dev/full")  # every write to it fails with ENOSPC, for real
    with pytest.raises(source.NoSpaceError) as caught:
        data.download(dest, url=server["url"], attempts=3, retry_wait=0)
    error = caught.value
    assert isinstance(error, ValueError) and error.errno == errno.ENOSPC  # run.py and the CLI print ValueErrors
    assert re.match(rf"no space left: need {len(payload) / 1e9:.3g} GB at {re.escape(str(dest))} \(", str(error))
    assert "run the same command again" in str(error)
    assert server["ranges"] == [None]  # not retried as if the network had dropped
    assert part.is_symlink() and not (dest / data.PBC_ZIP).exists()  # the partial file is kept for the resume
    assert main(["download", str(dest), "--url", server["url"]]) == 2
    assert "error: no space left: need" in one_line_error(capsys)


def test_a_download_too_big_for_a_small_disk_is_refused_before_writing(tmp_path, server, payload):
    server["payload"] = payload + bytes(300_000)  # bigger than the disk; never checked as a zip
    with small_disk(tmp_path / "small", "256k") as dest, pytest.raises(source.NoSpaceError, match="no space left"):
        data.download(dest, url=server["url"], attempts=3, retry_wait=0)
    assert server["ranges"] == [None]


def test_the_pinned_sha256_is_checked(tmp_path, server, payload, capsys):
    server["payload"] = payload
    right, wrong = hashlib.sha256(payload).hexdigest(), "0" * 64
    assert source.PBC_SHA256 is None or re.fullmatch(r"[0-9a-f]{64}", source.PBC_SHA256)

    bad = tmp_path / "bad"
    with pytest.raises(data.DownloadError, match=f"the download's SHA-256 is {right}, not the expected {wrong}"):
        data.download(bad, url=server["url"], sha256=wrong, attempts=1)
    assert os.listdir(bad) == []  # neither the zip nor the .part nor an unpacked folder
    assert main(["download", str(bad), "--url", server["url"], "--sha256", wrong]) == 2
    assert "so it was deleted" in one_line_error(capsys)

    good = tmp_path / "good"
    root = data.download(good, url=server["url"], sha256=right.upper(), attempts=1)
    assert root == good / "PBC_dataset_normal_DIB" and (good / data.PBC_ZIP).read_bytes() == payload
    assert f"SHA-256 {right}" in capsys.readouterr().err  # printed, so that it can be pinned
    assert data.download(good, url=server["url"], sha256=right) == root  # the zip there is checked again: fine
    with pytest.raises(data.DownloadError, match=f"{good / data.PBC_ZIP} has SHA-256 {right}, not the expected"):
        data.download(good, url=server["url"], sha256=wrong)
    assert (good / data.PBC_ZIP).read_bytes() == payload  # the user's file is refused, not deleted
    with pytest.raises(ValueError, match="sha256 must be 64 hexadecimal digits"):
        data.download(good, url=server["url"], sha256="abc")
    assert len(server["ranges"]) == 3  # two refused downloads, one good one, then the zip was there


# ------------------------------------------------------------------------------------------- decoded cache


def test_reserving_more_than_the_free_space_is_one_clear_error(tmp_path):
    free = shutil.disk_usage(tmp_path).free
    target = tmp_path / "big.npy.tmp-1"
    with pytest.raises(source.NoSpaceError) as caught:
        cache.reserve(target, free + 10**9)
    message = str(caught.value)
    assert message.startswith(f"no space left: need {(free + 10**9) / 1e9:.3g} GB at {tmp_path} (")
    assert "pass another cache folder" in message and isinstance(caught.value, ValueError)
    assert not target.exists()


def test_reserve_allocates_the_blocks_up_front(tmp_path):
    target = tmp_path / "reserved"
    cache.reserve(target, 8 << 20)
    assert target.stat().st_size == 8 << 20
    assert target.stat().st_blocks * 512 >= 8 << 20  # allocated, not a sparse file that SIGBUSes when filled


CACHE_ON = """
import sys
from raybench import data
prepared = data.prepare(None, tiers={"tenth": 40})
try:
    data.load_split(prepared, "tenth", "train", cache_dir=sys.argv[1])
except ValueError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
"""


def test_a_cache_on_a_full_disk_is_one_line_not_a_sigbus(tmp_path):
    with small_disk(tmp_path / "small", "1m") as disk:
        run = subprocess.run([sys.executable, "-c", CACHE_ON, str(disk)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 3, (run.returncode, run.stderr[-2000:])  # -7 is a SIGBUS
        assert re.search(rf"no space left: need 0\.00\d+ GB at {re.escape(str(disk))} \(", run.stderr)
        assert not list(disk.glob("*.tmp-*"))  # no full-size temporary file keeps the disk full
        assert shutil.disk_usage(disk).used < 100_000


def test_stale_temporary_files_are_removed_under_the_lock(tmp_path):
    prepared = data.prepare(None, tiers={"tenth": 40})
    first, _ = data.load_split(prepared, "tenth", "train", image_size=32, cache_dir=tmp_path)
    first = np.array(first)
    (npy,) = tmp_path.glob("pbc-*.npy")
    npy.unlink()  # needs a rebuild
    stale = [  # what killed or disk-full builds leave: this cache's, and another one's nobody is building
        tmp_path / f"{npy.name}.tmp-999999",
        tmp_path / f"{npy.stem}.json.tmp-999999",
        tmp_path / "pbc-val-32px-8-0123456789abcdef0123.npy.tmp-888888",
    ]
    for file in stale:
        file.write_bytes(bytes(100_000))
    building = tmp_path / "pbc-test-32px-12-fedcba9876543210fedc.npy.tmp-777777"  # its build holds its lock
    building.write_bytes(b"in progress")
    with open(tmp_path / "pbc-test-32px-12-fedcba9876543210fedc.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rebuilt, _ = data.load_split(prepared, "tenth", "train", image_size=32, cache_dir=tmp_path)
    removed = [str(w.message) for w in caught if "left by a cache build that did not finish" in str(w.message)]
    assert len(removed) == 3 and all(issubclass(w.category, data.DataWarning) for w in caught)
    np.testing.assert_array_equal(rebuilt, first)
    assert not any(file.exists() for file in stale)
    assert building.read_bytes() == b"in progress"
