import hashlib
import io
import itertools
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SIZE, dataset_with_duplicates, make_dataset
from PIL import Image

from raybench import catalog, data
from raybench.data import cache
from raybench.data.__main__ import main

# Acevedo et al. (2020), table 1: images per class of the published dataset (17,092)
PUBLISHED = [1218, 3117, 1551, 2895, 1214, 1420, 3329, 2348]
CUSTOM = {"all": None, "half": 200, "quarter": 100, "tenth": 40}


def grey_image(values: np.ndarray) -> Image.Image:
    """An RGB image whose three channels are `values` (so its luminance is `values`: 0.9999 v rounds to v)."""
    return Image.fromarray(np.repeat(values.astype(np.uint8)[..., None], 3, axis=2), "RGB")


def position_pattern(width: int, height: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return (3 * rows + 7 * cols) % 256


# --------------------------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "colour, grey",
    [
        ((255, 0, 0), 76),  # 0.2989 * 255 = 76.22
        ((0, 255, 0), 150),  # 0.587 * 255 = 149.69
        ((0, 0, 255), 29),  # 0.114 * 255 = 29.07
        ((255, 255, 255), 255),  # 254.97
        ((0, 0, 0), 0),
        ((10, 20, 30), 18),  # 2.989 + 11.74 + 3.42 = 18.149
        ((200, 100, 50), 124),  # 59.78 + 58.7 + 5.7 = 124.18
    ],
)
def test_luminance_of_known_colours(colour, grey):
    out = data.preprocess(Image.new("RGB", (360, 363), colour))
    assert out.dtype == np.uint8 and out.shape == (352, 352)
    assert (out == grey).all()


@pytest.mark.parametrize(
    "width, height, left, top",
    [
        (360, 363, 4, 6),  # (363 - 352) / 2 = 5.5 rounds to 6
        (366, 369, 7, 8),  # 8.5 rounds to 8 (Python rounds halves to even, as torchvision's CenterCrop does)
        (361, 360, 4, 4),  # 4.5 rounds to 4
        (352, 352, 0, 0),
    ],
)
def test_centre_crop_offsets(width, height, left, top):
    pattern = position_pattern(width, height)
    out = data.preprocess(grey_image(pattern))
    np.testing.assert_array_equal(out, pattern[top : top + 352, left : left + 352])


def test_centre_crop_agrees_with_torchvision():
    from torchvision.transforms import functional

    for size in [(360, 363), (366, 369), (361, 360)]:
        img = grey_image(position_pattern(*size))
        expected = np.asarray(functional.center_crop(img, [352, 352]).convert("L"))
        np.testing.assert_array_equal(data.preprocess(img), expected)


def test_smaller_image_size_crops_352_then_resizes_bilinear():
    img = grey_image(position_pattern(360, 363))
    full = data.preprocess(img)
    small = data.preprocess(img, 64)
    assert small.shape == (64, 64) and small.dtype == np.uint8
    np.testing.assert_array_equal(small, np.asarray(Image.fromarray(full).resize((64, 64), Image.BILINEAR)))
    with pytest.raises(ValueError, match="between 1 and 352"):
        data.preprocess(img, 353)


def test_image_smaller_than_the_crop_is_an_error_naming_it(tmp_path):
    path = tmp_path / "tiny_cell.jpg"
    Image.new("RGB", (300, 400)).save(path)
    with Image.open(path) as img, pytest.raises(ValueError, match=r"tiny_cell\.jpg is 300x400"):
        data.preprocess(img)


def test_to_input_normalises_and_replicates_channels_without_copies():

    from raybench.batches import to_input

    x = torch.tensor([[[0, 255], [51, 128]]], dtype=torch.uint8)
    three = to_input(x, 3)
    assert three.shape == (1, 3, 2, 2) and three.dtype == torch.float32 and three.stride(1) == 0
    expected = (torch.tensor([[0, 255], [51, 128]]) / 255.0 - 0.5) / 0.225
    for channel in range(3):
        torch.testing.assert_close(three[0, channel], expected)
    assert three[0, 0, 0, 0].item() == pytest.approx(-0.5 / 0.225) and three[0, 0, 0, 1].item() == pytest.approx(
        0.5 / 0.225
    )
    assert to_input(x, 1).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="uint8"):
        to_input(x.float(), 3)


# ------------------------------------------------------------------------------------------ tiers (counts)


def test_the_thesis_rule_gives_the_published_splits():
    counts = data.tier_counts(PUBLISHED)  # the default rule
    splits = {t: c.sum(0).tolist() for t, c in counts.items()}
    assert splits["large"] == [8544, 3415, 5125]  # table 4.1's large tier, 17,084 of 17,092
    assert splits["tiny"] == [198, 76, 115]  # every tiny-tier accuracy of the thesis is k/115
    assert splits == {t: list(n) for t, n in catalog.TIER_SPLITS.items()}
    for tier, table in counts.items():  # each class: t images split int(t/2) / int(t/5) / int(3t/10)
        size = catalog.TIERS[tier] or 17092
        for n, taken, row in zip(PUBLISHED, catalog.class_images(PUBLISHED, size), table, strict=True):
            assert taken == round(n * size / 17092)
            assert tuple(row) == (taken // 2, taken // 5, 3 * taken // 10)
    assert sum(catalog.class_images(PUBLISHED, 400)) == 400  # rounded, the tiny tier takes its 400 images
    embedded = [len(list((data.EMBEDDED_DATA / name).glob("*.jpg"))) for name in data.CLASSES]
    assert tuple(embedded) == catalog.class_images(PUBLISHED, 400)  # the embedded sample is the thesis's tiny tier


def test_the_exact_rule_is_table_4_1_as_printed():
    counts = data.tier_counts(PUBLISHED, split_rule="exact")
    splits = {t: c.sum(0).tolist() for t, c in counts.items()}
    assert splits == {
        "large": [8546, 3418, 5128],
        "medium": [4250, 1700, 2550],
        "small": [2100, 840, 1260],
        "tiny": [200, 80, 120],
    }
    assert {t: list(n) for t, n in catalog.TABLE_4_1.items() if t != "large"} == {
        t: n for t, n in splits.items() if t != "large"
    }
    assert counts["large"].sum(1).tolist() == PUBLISHED  # large is every usable image
    with pytest.raises(ValueError, match="unknown split_rule 'floor'; split rules: thesis, exact"):
        data.tier_counts(PUBLISHED, split_rule="floor")


@pytest.mark.parametrize("rule", ["thesis", "exact"])
def test_tier_counts_nest_cell_by_cell_and_are_stratified(rule):
    counts = data.tier_counts(PUBLISHED, split_rule=rule)
    for bigger, smaller in [("large", "medium"), ("medium", "small"), ("small", "tiny")]:
        assert (counts[smaller] <= counts[bigger]).all()
    share = np.asarray(PUBLISHED) / sum(PUBLISHED)
    for tier, table in counts.items():
        size = catalog.TIERS[tier] or sum(PUBLISHED)
        assert np.abs(table.sum(1) - size * share).max() < 4  # classes in proportion (the thesis leaves 0-3 out)
        expected = np.outer(table.sum(1), [0.5, 0.2, 0.3])
        assert np.abs(table - expected).max() < 1.5, tier  # each class split 5:2:3


@pytest.mark.parametrize("rule", ["thesis", "exact"])
def test_a_thesis_tier_is_drawn_the_same_whichever_tiers_are_asked_for(rule):
    alone = data.tier_counts(PUBLISHED, {"tiny": 400}, split_rule=rule)["tiny"]
    np.testing.assert_array_equal(alone, data.tier_counts(PUBLISHED, split_rule=rule)["tiny"])


def test_smaller_data_shares_a_tier_size_in_its_own_proportions():
    sample = [299, 766, 381, 711, 298, 349, 818, 577]  # the thesis's small tier: 4,199 images
    counts = data.tier_counts(sample, {"small": 4200, "tiny": 400, "all": None})
    assert counts["small"].tolist() == counts["all"].tolist()  # 4200 rounds to every image of each class
    assert counts["small"].sum(0).tolist() == list(catalog.TIER_SPLITS["small"])
    assert counts["tiny"].sum(0).tolist() == [198, 76, 115]  # 400 images in the sample's proportions
    with pytest.raises(ValueError, match=r"tier 'medium' needs 8500 images but only 4199 usable"):
        data.tier_counts(sample, {"medium": 8500})


def test_tier_bigger_than_the_data_is_an_error_naming_tier_size_and_available():
    with pytest.raises(ValueError, match=r"tier 'huge' needs 20000 images but only 17092 usable"):
        data.tier_counts(PUBLISHED, {"huge": 20000})
    with pytest.raises(ValueError, match=r"tier 'small' needs 4200 images but only 400 usable"):
        data.prepare(None, tiers={"small": 4200})


@pytest.mark.parametrize(
    "size, message",
    [
        (0, "positive integer"),
        (-5, "positive integer"),
        ("10", "positive integer"),
        (2.5, "positive integer"),
    ],
)
def test_bad_tier_sizes_are_refused(size, message):
    with pytest.raises(ValueError, match=message):
        data.tier_counts(PUBLISHED, {"odd": size})


@pytest.mark.parametrize(
    "rule, size, message",
    [
        ("exact", 2, "leaves the val split empty: use at least 3 images"),
        ("thesis", 10, "leaves the val, test split empty: a class gives"),  # 1 or 2 images of each class
    ],
)
def test_tiers_that_leave_a_split_empty_are_refused(rule, size, message):
    with pytest.raises(ValueError, match=message):
        data.tier_counts(PUBLISHED, {"odd": size}, split_rule=rule)


# ------------------------------------------------------------------------------------ tiers (the images)


@pytest.fixture(scope="module")
def custom() -> data.Prepared:
    return data.prepare(None, tiers=CUSTOM)


def split_sets(prepared, tier):
    m = prepared.manifest
    return {s: set(m[(m.tier == tier) & (m.split == s)].image) for s in data.SPLITS}


def test_embedded_data_default_tiers(embedded):
    report = embedded.report
    assert (report.files_seen, report.usable, report.skipped, report.duplicates_dropped) == (400, 400, (), ())
    assert report.tiers == {
        "large": {"train": 198, "val": 76, "test": 115},
        "tiny": {"train": 198, "val": 76, "test": 115},
    }
    assert report.per_class["tiny"]["basophil"] == (14, 5, 8)  # 29 images: int(29/2), int(29/5), int(87/10)
    assert report.omitted_tiers == {"medium": 8500, "small": 4200}
    assert split_sets(embedded, "tiny") == split_sets(embedded, "large")  # the tiny tier is all of it
    assert "usable images" in str(report) and "medium (needs 8500)" in str(report)
    assert embedded.root == data.EMBEDDED_DATA


def test_manifest_rows_and_columns(custom):
    m = custom.manifest
    assert list(m.columns) == ["image", "sha256", "label", "class_name", "tier", "split"]
    assert m.groupby("tier").size().to_dict() == {"all": 389, "half": 193, "quarter": 92, "tenth": 30}
    assert m.groupby("tier").image.nunique().to_dict() == m.groupby("tier").size().to_dict()  # no image twice in a tier
    assert (m.class_name == [data.CLASSES[i] for i in m.label]).all()
    assert (
        m.image == [f"{c}/{Path(i).name}" for c, i in zip(m.class_name, m.image, strict=True)]
    ).all()  # posix, relative to root
    assert all((custom.root / image).is_file() for image in m.image[:20])
    assert custom.report.tiers["tenth"] == {"train": 18, "val": 4, "test": 8}


def test_tiers_nest_split_by_split(custom):
    names = list(CUSTOM)
    for bigger, smaller in itertools.pairwise(names):
        big, small = split_sets(custom, bigger), split_sets(custom, smaller)
        for split in data.SPLITS:
            assert small[split] <= big[split], (smaller, split)


def test_splits_are_class_stratified(custom):
    m = custom.manifest
    share = np.bincount(m[m.tier == "all"].label, minlength=8) / 400
    for tier, size in [("all", 400), ("half", 200), ("quarter", 100)]:
        rows = m[m.tier == tier]
        for split, fraction in zip(data.SPLITS, [0.5, 0.2, 0.3], strict=True):
            per_class = np.bincount(rows[rows.split == split].label, minlength=8)
            assert np.abs(per_class - size * fraction * share).max() < 2, (tier, split)


def test_same_seed_same_draw_other_seed_another(custom):
    again = data.prepare(None, tiers=CUSTOM)
    pd.testing.assert_frame_equal(again.manifest, custom.manifest)
    other = data.prepare(None, tiers=CUSTOM, seed=1)
    assert split_sets(other, "half")["train"] != split_sets(custom, "half")["train"]
    assert other.report.tiers == custom.report.tiers  # same sizes, other images


def test_thesis_tier_images_do_not_depend_on_the_other_tiers_asked(embedded):
    alone = data.prepare(None, tiers=data.tiers_for("tiny"))
    assert split_sets(alone, "tiny") == split_sets(embedded, "tiny")
    with pytest.raises(ValueError, match="thesis tiers: large, medium, small, tiny"):
        data.tiers_for("huge")


# ------------------------------------------------------------------ broken files, duplicates, input forms


def add_defects(root: Path) -> dict[str, str]:
    """The archive's kinds of defects; returns {file: what should happen to it}."""
    basophil = sorted((root / "basophil").glob("*.jpg"))[0]
    eosinophil = sorted((root / "eosinophil").glob("*.jpg"))[0]
    shutil.copy(basophil, root / "basophil" / "ZZ_copy.jpg")  # same class: one kept (the first by path)
    shutil.copy(eosinophil, root / "neutrophil" / "AA_cross.jpg")  # two labels: both dropped
    (root / "neutrophil" / ".DS_1.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (root / "ig" / "IG_empty.jpg").write_bytes(b"")
    content = sorted((root / "lymphocyte").glob("*.jpg"))[0].read_bytes()
    (root / "lymphocyte" / "LY_truncated.jpg").write_bytes(content[: len(content) // 2])
    Image.new("RGB", (300, 300), (200, 50, 50)).save(root / "monocyte" / "MO_small.jpg")
    return {
        "basophil/ZZ_copy.jpg": "same image as " + f"basophil/{basophil.name}",
        f"eosinophil/{eosinophil.name}": "different labels",
        "neutrophil/AA_cross.jpg": "different labels",
        "neutrophil/.DS_1.jpg": "not an image",
        "ig/IG_empty.jpg": "not an image",
        "lymphocyte/LY_truncated.jpg": "cannot be decoded",
        "monocyte/MO_small.jpg": "too small (300x300",
    }


def test_broken_files_and_duplicates_are_skipped_counted_and_named(tmp_path):
    root = make_dataset(tmp_path)
    expected = add_defects(root)
    with pytest.warns(data.DataWarning) as caught:  # 3 images a class: the thesis's rule would leave val empty
        prepared = data.prepare(root, tiers={"all": None}, dedupe=True, split_rule="exact")
    messages = "\n".join(str(w.message) for w in caught)
    for image in expected:
        assert str(root / image) in messages, image
    report = prepared.report
    assert report.files_seen == 24 + 6
    assert dict(report.skipped).keys() == {
        "neutrophil/.DS_1.jpg",
        "ig/IG_empty.jpg",
        "lymphocyte/LY_truncated.jpg",
        "monocyte/MO_small.jpg",
    }
    reasons = {**dict(report.skipped), **dict(report.duplicates_dropped)}
    for image, reason in expected.items():
        assert reason in reasons[image], (image, reasons[image])
    assert len(report.duplicates_dropped) == 3 and report.usable == 23
    used = set(prepared.manifest.image)
    assert not used & set(expected)
    assert sorted((root / "basophil").glob("*.jpg"))[0].relative_to(root).as_posix() in used  # the kept copy
    assert prepared.manifest.sha256.is_unique
    assert "LY_truncated.jpg" in str(report)
    assert report.straddling["all"] == {"train/val": 0, "train/test": 0, "val/test": 0}


def test_straddling_pairs_counts_identical_images_across_splits():
    rows = pd.DataFrame(
        {
            "sha256": ["a", "a", "a", "a", "a", "b", "b", "c", "c", "c", "d"],
            "split": ["train", "train", "test", "test", "test", "train", "val", "val", "test", "test", "test"],
        }
    )
    assert data.straddling_pairs(rows) == {"train/val": 1, "train/test": 6, "val/test": 2}


def test_duplicates_are_kept_by_default_and_their_straddling_pairs_counted(tmp_path):
    root = dataset_with_duplicates(tmp_path)
    kept = data.prepare(root, tiers={"all": None, "half": 43})  # no warning: keeping them is the thesis's way
    report = kept.report
    assert report.usable == 87 and not report.duplicates_dropped and len(report.duplicates_kept) == 7
    assert dict(report.duplicates_kept)["neutrophil/AA_cross.jpg"].endswith("(different labels)")
    everything = kept.manifest[kept.manifest.tier == "all"]
    assert not everything.sha256.is_unique
    for tier in ("all", "half"):  # each pair of identical images the tier puts in two splits, counted by hand
        rows = kept.manifest[kept.manifest.tier == tier]
        expected = {"train/val": 0, "train/test": 0, "val/test": 0}
        for i, j in itertools.combinations(range(len(rows)), 2):
            a, b = rows.iloc[i], rows.iloc[j]
            if a.sha256 == b.sha256 and a.split != b.split:
                pair = "/".join(s for s in data.SPLITS if s in (a.split, b.split))
                expected[pair] += 1
        assert report.straddling[tier] == expected, tier
    assert report.straddling["all"]["train/test"] > 0  # the 7 copies draw on their own, as in a random split
    assert "identical pairs across" in str(report) and "kept basophil/ZZ_copy0.jpg" in str(report)

    with pytest.warns(data.DataWarning, match="dropping"):
        deduped = data.prepare(root, tiers={"all": None, "half": 43}, dedupe=True)
    assert deduped.report.usable == 87 - 6 - 2 and len(deduped.report.duplicates_dropped) == 8
    assert deduped.manifest.groupby("tier").sha256.apply(lambda s: s.is_unique).all()
    assert all(n == 0 for pairs in deduped.report.straddling.values() for n in pairs.values())
    assert "duplicates dropped" in str(deduped.report)


def test_kept_duplicates_still_load_as_a_view_of_the_cache(tmp_path):
    root = dataset_with_duplicates(tmp_path / "data")
    prepared = data.prepare(root, tiers={"all": None})
    for split in data.SPLITS:
        rows = prepared.manifest[prepared.manifest.split == split]
        x, _ = data.load_split(prepared, "all", split, image_size=32, cache_dir=tmp_path / "cache")
        assert isinstance(x, np.memmap) and len(x) == len(rows)  # the whole split: a prefix, not a copy
        for i in range(len(rows)):
            with Image.open(root / rows.image.iloc[i]) as img:
                np.testing.assert_array_equal(x[i], data.preprocess(img, 32))


def test_zip_and_parent_folder_give_the_same_manifest(tmp_path):
    root = make_dataset(tmp_path / "src")
    zip_path = tmp_path / "dl" / "PBC_dataset_normal_DIB.zip"
    zip_path.parent.mkdir()
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in sorted(root.rglob("*.jpg")):
            archive.write(file, file.relative_to(root.parent).as_posix())
        archive.writestr("__MACOSX/PBC_dataset_normal_DIB/._junk", b"metadata")
    tiers, rule = {"all": None, "some": 10}, "exact"  # 3 images a class: too few for the thesis's per-class rule
    by_folder = data.prepare(root, tiers=tiers, split_rule=rule)
    by_parent = data.prepare(root.parent, tiers=tiers, split_rule=rule)
    by_zip = data.prepare(zip_path, tiers=tiers, split_rule=rule)
    assert by_parent.root == root and by_zip.root == zip_path.parent / "PBC_dataset_normal_DIB"
    assert not (zip_path.parent / "__MACOSX").exists()
    pd.testing.assert_frame_equal(by_zip.manifest, by_folder.manifest)
    pd.testing.assert_frame_equal(by_parent.manifest, by_folder.manifest)
    unpacked = by_zip.root.stat().st_ino, by_zip.root.stat().st_mtime_ns
    data.prepare(zip_path, tiers=tiers, split_rule=rule)  # unpacked once, not again
    assert (by_zip.root.stat().st_ino, by_zip.root.stat().st_mtime_ns) == unpacked


def test_zip_will_not_overwrite_a_folder_it_did_not_unpack(tmp_path):
    root = make_dataset(tmp_path)
    zip_path = tmp_path / "PBC_dataset_normal_DIB.zip"
    shutil.make_archive(str(zip_path.with_suffix("")), "zip", tmp_path, "PBC_dataset_normal_DIB")
    with pytest.raises(ValueError, match="pass that folder instead of the zip"):
        data.prepare(zip_path)
    assert data.prepare(root, split_rule="exact").report.usable == 24


def test_wrong_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.prepare(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no PBC dataset in"):
        data.prepare(tmp_path)
    (tmp_path / "basophil").mkdir()
    with pytest.raises(ValueError, match="lacks eosinophil, erythroblast"):
        data.prepare(tmp_path)


@pytest.mark.skipif(
    not os.environ.get("RAYBENCH_SHARED_DATA"), reason="set RAYBENCH_SHARED_DATA to the real pbc_sample folder"
)
def test_the_real_sample_of_the_archive():
    with pytest.warns(data.DataWarning):
        prepared = data.prepare(os.environ["RAYBENCH_SHARED_DATA"], tiers={"all": None, "tiny": 400}, dedupe=True)
    report = prepared.report
    assert report.files_seen == 4200 and report.skipped == (("neutrophil/.DS_169665.jpg", "not an image"),)
    dropped = dict(report.duplicates_dropped)
    assert {"eosinophil/EO_225902.jpg", "neutrophil/BNE_191112.jpg"} <= dropped.keys()
    assert {k for k, v in dropped.items() if "kept" in v} == {
        "basophil/BA_809918.jpg",
        "basophil/BA_786369.jpg",
        "basophil/BA_988506.jpg",
    }
    assert report.usable == 4194 and report.tiers["tiny"] == {"train": 198, "val": 76, "test": 115}
    kept = data.prepare(os.environ["RAYBENCH_SHARED_DATA"], tiers={"small": 4200, "tiny": 400}).report
    assert kept.usable == 4199 and len(kept.duplicates_kept) == 4  # the thesis's small tier, every image
    assert kept.tiers["small"] == dict(zip(data.SPLITS, catalog.TIER_SPLITS["small"], strict=True))


# ---------------------------------------------------------------------------------- the decode-once cache


@pytest.fixture
def decode_count(monkeypatch):
    calls = []
    real = cache.preprocess

    def counting(img, image_size=352):
        calls.append(image_size)
        return real(img, image_size)

    monkeypatch.setattr(cache, "preprocess", counting)
    return calls


def test_load_split_follows_the_manifest(embedded, decoded_cache):
    x, y = data.load_split(embedded, "tiny", "val", cache_dir=decoded_cache)
    rows = embedded.manifest[(embedded.manifest.tier == "tiny") & (embedded.manifest.split == "val")]
    assert x.shape == (76, 352, 352) and x.dtype == np.uint8 and not x.flags.writeable
    assert y.dtype == np.int64 and (y == rows.label.to_numpy()).all()
    for i in (0, 41, 75):
        with Image.open(embedded.root / rows.image.iloc[i]) as img:
            np.testing.assert_array_equal(x[i], data.preprocess(img))
    with pytest.raises(ValueError, match=r"tier 'small' was not prepared.*needs 4200 images"):
        data.load_split(embedded, "small", "train", cache_dir=decoded_cache)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        data.load_split(embedded, "tiny", "validation", cache_dir=decoded_cache)


def test_images_are_decoded_once(custom, tmp_path, decode_count):
    x, _ = data.load_split(custom, "half", "train", image_size=32, cache_dir=tmp_path)
    assert len(decode_count) == 198  # the biggest tier's train split, which holds every tier's
    again, _ = data.load_split(custom, "half", "train", image_size=32, cache_dir=tmp_path)
    small, small_y = data.load_split(custom, "tenth", "train", image_size=32, cache_dir=tmp_path)
    assert len(decode_count) == 198
    np.testing.assert_array_equal(again, x)
    rows = custom.manifest[(custom.manifest.tier == "tenth") & (custom.manifest.split == "train")]
    assert small.shape == (18, 32, 32) and (small_y == rows.label.to_numpy()).all()
    assert isinstance(small, np.memmap)  # a view of the cache, not a copy
    data.load_split(custom, "half", "train", image_size=16, cache_dir=tmp_path)
    assert len(decode_count) == 2 * 198  # another image size is another cache


def cache_files(folder: Path) -> tuple[Path, Path]:
    (npy,) = folder.glob("*.npy")
    return npy, npy.with_suffix(".json")


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "lose the sidecar", "stale sidecar"])
def test_a_damaged_cache_is_rebuilt_not_used(custom, tmp_path, decode_count, damage):
    tiers_40 = data.prepare(None, tiers={"tenth": 40})  # an 18-image train split: quick to rebuild
    x, _ = data.load_split(tiers_40, "tenth", "train", image_size=64, cache_dir=tmp_path)
    good = np.array(x)
    npy, sidecar = cache_files(tmp_path)
    if damage == "flip a byte":
        with open(npy, "r+b") as handle:
            handle.seek(npy.stat().st_size - 5000)
            byte = handle.read(1)
            handle.seek(-1, io.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "truncate":
        os.truncate(npy, npy.stat().st_size // 2)
    elif damage == "lose the sidecar":
        sidecar.unlink()
    else:
        sidecar.write_text(sidecar.read_text().replace('"shape": [18, 64, 64]', '"shape": [18, 32, 32]'))
    assert len(decode_count) == 18
    with pytest.warns(data.DataWarning, match="rebuilding"):
        rebuilt, _ = data.load_split(tiers_40, "tenth", "train", image_size=64, cache_dir=tmp_path)
    assert len(decode_count) == 36
    np.testing.assert_array_equal(rebuilt, good)
    assert len(list(tmp_path.glob("*.tmp-*"))) == 0


# ---------------------------------------------------------------------------------------------- download


def dataset_zip(tmp_path: Path) -> bytes:
    root = make_dataset(tmp_path / "zipsrc", per_class=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(root.rglob("*.jpg")):
            archive.write(file, file.relative_to(root.parent).as_posix())
    return buffer.getvalue()


def test_download_checks_and_unpacks(tmp_path, server, capsys):
    server["payload"] = dataset_zip(tmp_path)
    dest = tmp_path / "dest"
    assert main(["download", str(dest), "--url", server["url"]]) == 0
    root = dest / "PBC_dataset_normal_DIB"
    assert f"dataset ready at {root}" in capsys.readouterr().out
    assert (dest / data.PBC_ZIP).read_bytes() == server["payload"] and not (dest / (data.PBC_ZIP + ".part")).exists()
    assert data.prepare(dest, tiers={"all": None}, split_rule="exact").report.usable == 16
    assert data.download(dest, url=server["url"]) == root
    assert server["ranges"] == [None]  # done once: the second call fetched nothing


def test_a_cut_download_resumes_on_the_next_call(tmp_path, server):
    server["payload"] = payload = dataset_zip(tmp_path)
    server["cut"] = True
    dest = tmp_path / "dest"
    with pytest.raises(data.DownloadError, match=r"run the same command again to resume"):
        data.download(dest, url=server["url"], attempts=1)
    part = dest / (data.PBC_ZIP + ".part")
    assert part.stat().st_size == len(payload) // 2
    root = data.download(dest, url=server["url"], attempts=1)
    assert server["ranges"] == [None, f"bytes={len(payload) // 2}-"]
    assert (dest / data.PBC_ZIP).read_bytes() == payload and root == dest / "PBC_dataset_normal_DIB"


def test_a_cut_download_is_retried_within_one_call(tmp_path, server):
    server["payload"] = payload = dataset_zip(tmp_path)
    server["cut"] = True
    data.download(tmp_path / "dest", url=server["url"], attempts=2, retry_wait=0)
    assert server["ranges"] == [None, f"bytes={len(payload) // 2}-"]


def test_a_whole_part_file_is_finished_without_refetching(tmp_path, server):
    server["payload"] = payload = dataset_zip(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / (data.PBC_ZIP + ".part")).write_bytes(payload)
    data.download(dest, url=server["url"], attempts=1)
    assert server["ranges"] == [f"bytes={len(payload)}-"]  # answered 416: nothing left to fetch


def test_a_download_that_is_not_the_dataset_is_refused(tmp_path, server):
    server["payload"] = b"<html>Please log in</html>"
    with pytest.raises(data.DownloadError, match="not the PBC dataset"):
        data.download(tmp_path, url=server["url"], attempts=1)
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / data.PBC_ZIP).exists()
    with pytest.raises(data.DownloadError, match="HTTP 404"):
        data.download(tmp_path, url=server["url"].replace("PBC.zip", "gone.zip"), attempts=3)


def test_prepare_command_prints_the_report(capsys):
    assert main(["prepare"]) == 0
    out = capsys.readouterr().out
    assert "usable images" in out and "tiny" in out
    assert main(["prepare", "/nonexistent/folder"]) == 2  # one line, as argparse reports a bad argument


def test_the_colour_cache_is_rgb_and_keyed_apart_from_the_grey_one(embedded, tmp_path):
    assert data.PREPROCESS_VERSION == "pbc-grey(0.2989,0.587,0.114)-round-centercrop352-bilinear-v2"
    grey, y = data.load_split(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    colour, y2 = data.load_split(embedded, "tiny", "val", image_size=SIZE, cache_dir=tmp_path, colour=True)
    assert colour.shape == (76, 3, SIZE, SIZE) and grey.shape == (76, SIZE, SIZE) and (y == y2).all()
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert {k: after[k] for k in files} == files  # the grey cache is untouched, its names and bytes
    assert len(after) == 2 * len(files) and all("-32px-rgb-76-" in name for name in set(after) - set(files))
    # the grey key is the one it always was: its version, the size and the images' content
    block = embedded.manifest.query("tier == 'large' and split == 'val'")
    key = hashlib.sha256("\n".join([data.PREPROCESS_VERSION, str(SIZE), *block.sha256]).encode()).hexdigest()
    assert any(key[:20] in name for name in files)
    rows = embedded.manifest.query("tier == 'tiny' and split == 'val'")
    with Image.open(embedded.root / rows.image.iloc[0]) as img:
        full = cache.preprocess_colour(img).astype(np.float64)
        luminance = np.rint(0.2989 * full[0] + 0.587 * full[1] + 0.114 * full[2])
        np.testing.assert_array_equal(luminance, data.preprocess(img))  # the same crop, before the luminance
        np.testing.assert_array_equal(colour[0], cache.preprocess_colour(img, SIZE))


def test_data_prepare_takes_split_seed_and_keeps_seed_as_a_hidden_alias(capsys):
    from raybench.data.__main__ import main

    assert main(["prepare", "--split-seed", "3"]) == 0
    assert "(split seed 3," in capsys.readouterr().out
    assert main(["prepare", "--seed", "4"]) == 0
    assert "(split seed 4," in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    help_text = capsys.readouterr().out
    assert "--split-seed" in help_text and "--seed " not in help_text


def test_a_trickling_download_shows_progress_and_stops_at_its_deadline_keeping_the_part(
    tmp_path, server, capsys, monkeypatch
):
    import time

    from raybench.data import source

    server["payload"] = payload = dataset_zip(tmp_path)
    server["trickle"] = (len(payload) // 100, 0.05)  # 5 s in all, never silent long enough for a socket's timeout
    monkeypatch.setenv("RAYBENCH_DOWNLOAD_DEADLINE_S", "1.5")
    monkeypatch.setattr(source, "PROGRESS_EVERY_S", 0.3, raising=False)
    dest = tmp_path / "dest"
    started = time.monotonic()
    assert main(["download", str(dest), "--url", server["url"]]) == 2
    assert time.monotonic() - started < 4
    err = capsys.readouterr().err
    part = dest / (data.PBC_ZIP + ".part")
    kept = part.stat().st_size
    assert 0 < kept < len(payload)
    assert f"did not finish within its deadline of 1.5 s (RAYBENCH_DOWNLOAD_DEADLINE_S); {kept} bytes are kept" in err
    progress = [line for line in err.splitlines() if line.startswith("downloaded ")]
    assert len(progress) >= 2 and f" of {len(payload) / 1e6:.1f} MB (" in progress[0] and "MB/s" in progress[0]
    server["trickle"] = None  # the next call resumes from what was kept
    assert main(["download", str(dest), "--url", server["url"], "--deadline", "30"]) == 0
    assert server["ranges"][-1] == f"bytes={kept}-" and (dest / data.PBC_ZIP).read_bytes() == payload
