"""The data options of a run: the split rule and duplicates, from the trial's options to its files and the dry run."""

import contextlib
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, dataset_with_duplicates

from raybench import catalog, data, run, spec, train

QUICKSTART = str(ROOT / "grids" / "quickstart.py")


def follows_the_thesis_rule(manifest: pd.DataFrame) -> bool:
    """Every class of every tier split int(t/2) / int(t/5) / int(3t/10) for some t it took (0-3 left unused)."""
    for _, rows in manifest.groupby(["tier", "class_name"]):
        counts = tuple(int((rows.split == s).sum()) for s in data.SPLITS)
        if not any(catalog.class_split(t) == counts for t in range(sum(counts), sum(counts) + 4)):
            return False
    return True


def test_the_default_and_the_thesis_grid_draw_the_thesis_splits_with_duplicates():
    assert (spec.TrainConfig().split_rule, spec.TrainConfig().dedupe) == ("thesis", False)
    from raybench import grid

    thesis = grid.load_grid(ROOT / "grids" / "thesis.py")
    assert {(t.config.split_rule, t.config.dedupe) for t in thesis.trials} == {("thesis", False)}
    prepared = data.prepare(None, tiers={"tiny": 400, "half": 200, "tenth": 40})
    assert follows_the_thesis_rule(prepared.manifest)
    exact = data.prepare(None, tiers={"tiny": 400}, split_rule="exact")
    assert exact.report.tiers["tiny"] == dict(zip(data.SPLITS, catalog.TABLE_4_1["tiny"], strict=True))


def test_tiers_nest_with_kept_duplicates(tmp_path):
    prepared = data.prepare(dataset_with_duplicates(tmp_path, per_class=20, copies=3), tiers={"all": None, "half": 80})
    m = prepared.manifest
    assert follows_the_thesis_rule(m) and not m[m.tier == "all"].sha256.is_unique
    for split in data.SPLITS:
        half, everything = (set(m[(m.tier == t) & (m.split == split)].image) for t in ("half", "all"))
        assert half <= everything


@pytest.mark.parametrize("dedupe", [False, True])
def test_a_trial_records_its_data_options_and_the_duplicates_it_straddles(tmp_path, dedupe):
    root = dataset_with_duplicates(tmp_path / "data", copies=3)
    out = tmp_path / "out"
    argv = ["--model", "lenet5", "--tier", "large", "--data", str(root), "--out", str(out)]
    argv += ["--cache", str(tmp_path / "cache"), "--set", "image_size=32", "--set", "max_epochs=1"]
    with pytest.warns(data.DataWarning, match="dropping") if dedupe else contextlib.nullcontext():
        train.main([*argv, "--set", f"dedupe={str(dedupe).lower()}"])
    trial = pd.read_parquet(out / "trials.parquet").iloc[0]
    manifest = pd.read_parquet(out / "manifest.parquet")
    options = json.loads(trial.options)
    assert (options["dedupe"], options["split_rule"]) == (dedupe, "thesis")
    assert follows_the_thesis_rule(manifest)
    assert manifest.sha256.is_unique == dedupe  # dropped, or kept as the thesis kept them
    assert trial.duplicate_pairs_train_test == data.straddling_pairs(manifest)["train/test"]
    # kept: 84 images, basophil 13 -> 6/2/3 and neutrophil 11 -> 5/2/3 leave 3 out; dropped: 79, eosinophil 9 -> 4/1/2
    assert len(manifest) == (77 if dedupe else 81)


def write_grid(path: Path, options: dict, *, tiers=("tiny",), sweeps=None) -> str:
    sweeps = sweeps or [{"models": ["lenet5"], "tiers": list(tiers)}]
    path.write_text(f"GRID = {{'name': 'g', 'options': {{'image_size': 32, **{options!r}}}, 'sweeps': {sweeps!r}}}\n")
    return str(path)


@pytest.mark.parametrize("option, values", [("dedupe", (False, True)), ("split_rule", ("thesis", "exact"))])
def test_a_grid_that_mixes_data_options_is_refused(tmp_path, capsys, option, values):
    sweeps = [
        {"models": ["lenet5"], "tiers": ["tiny"], "options": {option: values[0]}},
        {"models": ["resnet_18"], "tiers": ["tiny"], "options": {option: values[1]}},
    ]
    grid = write_grid(tmp_path / "mixed.py", {}, sweeps=sweeps)
    with pytest.raises(SystemExit):
        run.main([grid, "--dry-run", "--results", str(tmp_path)])
    assert f"the grid asks for {option}" in capsys.readouterr().err


def test_dry_run_prints_each_tiers_splits_per_class(tmp_path, capsys):
    assert run.main([QUICKSTART, "--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "split rule thesis, duplicates kept" in out and "4 trials planned" in out
    table = out[out.index("images per class") :].splitlines()
    assert table[2].split() == ["basophil", "14", "5", "8"]  # 29 embedded basophils: 14 / 5 / 8
    assert table[10].split() == ["total", "198", "76", "115"]


def test_dry_run_with_data_shows_the_duplicates_and_the_tiers_that_do_not_fit(tmp_path, capsys):
    root = dataset_with_duplicates(tmp_path / "data", copies=3)
    grid = write_grid(tmp_path / "g.py", {}, sweeps=[{"models": ["lenet5"], "tiers": ["large", "tiny"]}])
    assert run.main([grid, "--dry-run", "--data", str(root), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "duplicates kept          4" in out and "kept basophil/ZZ_copy0.jpg" in out
    assert "not drawn (the data is too small): tiny (needs 400)" in out and "a run would stop here" in out
    large = next(line for line in out.splitlines() if line.strip().startswith("large"))
    assert large.split()[1:5] == ["84", "41", "16", "24"]  # size, then the splits of every class's own rule
    with pytest.warns(data.DataWarning, match="dropping"):
        assert (
            run.main([grid, "--dry-run", "--data", str(root), "--results", str(tmp_path), "--set", "dedupe=true"]) == 0
        )
    assert "duplicates dropped       5" in capsys.readouterr().out
