"""A run whose local results folder is lost: the copy in --storage is never replaced by fewer trials, and
resuming rebuilds the finished trials from it."""

import shutil

import pyarrow.parquet as pq
import pytest
from conftest import run_cli as run
from conftest import trial_result, write_grid

from raybench import results


def test_a_lost_local_folder_never_empties_the_storage_copy_and_is_restored_from_it(tmp_path):
    out, storage = tmp_path / "RESULTS" / "grid", str(tmp_path / "S" / "grid" / "results")
    results.write_results(out, [trial_result("a", epochs=2), trial_result("b", epochs=3)])
    results.mirror(out, storage)
    before = {name: pq.read_table(f"{storage}/{name}.parquet") for name in results.FILES}
    assert before["trials"].num_rows == 2

    shutil.rmtree(out)  # the local folder is gone; a resumed run consolidates what it has: nothing
    results.consolidate(out)
    with pytest.raises(ValueError, match="holds 2 trial"):
        results.mirror(out, storage)
    assert pq.read_table(f"{storage}/trials.parquet").num_rows == 2

    assert sorted(results.restore_from_mirror(out, storage)) == ["a", "b"]
    assert results.finished_trials(out) == {"a": "ok", "b": "ok"}
    results.consolidate(out)
    for name, table in before.items():
        assert pq.read_table(out / f"{name}.parquet").to_pylist() == table.to_pylist()
    results.mirror(out, storage)  # as many trials as there: copied
    assert results.restore_from_mirror(out, storage) == []  # nothing left to restore


@pytest.mark.slow
def test_resume_after_the_local_folder_is_deleted_keeps_every_finished_trial(tmp_path):
    grid = write_grid(tmp_path / "g.py", ["lenet5"], options={"max_epochs": 2})
    storage = tmp_path / "S"
    run(grid, "--storage", storage, cwd=tmp_path)
    copied = pq.read_table(storage / "small" / "results" / "trials.parquet").to_pylist()
    assert len(copied) == 1 and copied[0]["status"] == "ok"

    shutil.rmtree(tmp_path / "results" / "small")
    proc = run(grid, "--storage", storage, "--resume", cwd=tmp_path)
    assert "restored 1 finished trial" in proc.stdout
    assert pq.read_table(tmp_path / "results" / "small" / "trials.parquet").to_pylist() == copied
    assert pq.read_table(storage / "small" / "results" / "trials.parquet").to_pylist() == copied


@pytest.mark.parametrize(
    "storage, expected",
    [
        (
            "s3://bucket/x?endpoint_override=http://127.0.0.1:9000&region=us-east-1",
            "s3://bucket/x/quick/results?endpoint_override=http://127.0.0.1:9000&region=us-east-1",
        ),
        ("s3://bucket/x/?region=us-east-1", "s3://bucket/x/quick/results?region=us-east-1"),
        ("s3://bucket/x", "s3://bucket/x/quick/results"),
        ("/mnt/nfs/runs/", "/mnt/nfs/runs/quick/results"),
    ],
)
def test_the_storage_copy_goes_under_the_storage_path_before_its_query(storage, expected):
    from pyarrow import fs

    from raybench.service.driver import mirror_uri

    assert mirror_uri(storage, "quick") == expected
    if "region=" in storage:  # pyarrow reads the path and the endpoint from it (with the region: no connection)
        filesystem, path = fs.FileSystem.from_uri(mirror_uri(storage, "quick"))
        assert path == "bucket/x/quick/results" and isinstance(filesystem, fs.S3FileSystem)
