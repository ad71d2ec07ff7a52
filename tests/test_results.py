"""The result files: part files per trial, the consolidated files, their schemas and how they are read back."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import trial_result

from raybench import results
from raybench.catalog import CLASSES


def test_part_files_are_read_before_and_after_consolidating(tmp_path):
    for result in (trial_result("a", epochs=2), trial_result("b", epochs=3), trial_result("c", status="failed")):
        results.write_trial(tmp_path, result)
    assert not (tmp_path / "trials.parquet").exists()  # a run killed here left only its part files
    trials, _ = results.read_table(tmp_path, "trials")
    assert sorted(trials.trial_id) == ["a", "b", "c"] and list(trials.columns) == results.TRIALS_SCHEMA.names
    epochs, _ = results.read_table(tmp_path, "epochs")
    assert len(epochs) == 2 + 3 + 1
    predictions, _ = results.read_table(tmp_path, "predictions")  # the failed trial's part has no rows
    assert len(predictions) == 6 and predictions.label.dtype == np.int64
    assert predictions[f"score_{CLASSES[0]}"].dtype == np.float32

    results.consolidate(tmp_path)
    for path in (tmp_path / "parts").iterdir():
        path.unlink()
    consolidated, _ = results.read_table(tmp_path, "trials")  # now the consolidated file alone
    assert (
        consolidated.sort_values("trial_id")
        .reset_index(drop=True)
        .equals(trials.sort_values("trial_id").reset_index(drop=True))
    )
    assert len(results.read_table(tmp_path, "epochs")[0]) == 6


def test_an_empty_folder_reads_as_no_rows_with_the_schemas_columns(tmp_path):
    for name, schema in results.FILES.items():
        frame, metadata = results.read_table(tmp_path, name)
        assert frame.empty and list(frame.columns) == schema.names and metadata == {}
    assert results.read_plan(tmp_path) is None
    with pytest.raises(ValueError, match="unknown result file 'manifest'"):
        results.read_table(tmp_path, "manifest")


def test_consolidate_keeps_the_last_attempt_of_a_trial(tmp_path):
    results.write_results(tmp_path, [trial_result("a", status="failed"), trial_result("b")])
    assert results.finished_trials(tmp_path) == {"a": "failed", "b": "ok"}
    results.write_results(tmp_path, [trial_result("a", epochs=3)])  # the retry overwrites the failed attempt's parts
    assert results.finished_trials(tmp_path) == {"a": "ok", "b": "ok"}
    trials = pq.read_table(tmp_path / "trials.parquet").to_pandas().set_index("trial_id")
    assert sorted(trials.index) == ["a", "b"] and trials.status.a == "ok" and pd.isna(trials.error.a)
    epochs = pq.read_table(tmp_path / "epochs.parquet").to_pandas()
    assert sorted(epochs[epochs.trial_id == "a"].epoch) == [1, 2, 3]  # each epoch once, from the last attempt


def test_consolidate_replaces_the_files_atomically(tmp_path):
    results.write_results(tmp_path, [trial_result("a")])
    with open(tmp_path / "trials.parquet", "rb") as reader:  # a reader that opened the file before
        results.write_results(tmp_path, [trial_result("b")])
        assert pq.read_table(reader).column("trial_id").to_pylist() == ["a"]  # still sees the whole old file
    assert sorted(pq.read_table(tmp_path / "trials.parquet").column("trial_id").to_pylist()) == ["a", "b"]
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "parts").glob(".*.tmp"))


def test_finished_trials_of_a_folder_without_parts_is_empty(tmp_path):
    assert results.finished_trials(tmp_path) == {}


def test_the_class_names_travel_in_the_metadata(tmp_path):
    results.write_results(tmp_path, [trial_result("a")])
    for name in results.FILES:
        path = tmp_path / f"{name}.parquet"
        assert results.class_names(path) == list(CLASSES)
        _, metadata = results.read_table(tmp_path, name)
        assert results.decode_classes(metadata, []) == CLASSES
    # without the metadata the score columns name the classes, in label order
    assert results.decode_classes({}, ["trial_id", "score_b", "score_a", "label"]) == ("b", "a")
    assert results.decode_classes(None, ["trial_id"]) == ()


def test_the_schemas_refuse_unknown_columns_and_fill_missing_ones(tmp_path):
    with pytest.raises(ValueError, match=r"columns \['accuracy'\] are not in the schema"):
        results.to_table([{"trial_id": "a", "accuracy": 0.5}], results.TRIALS_SCHEMA)
    table = results.to_table([{"trial_id": "a", "status": "ok"}], results.TRIALS_SCHEMA)
    assert table.schema == results.TRIALS_SCHEMA and table.column("test_accuracy").to_pylist() == [None]
    # a part file of another version (a column missing, one unknown) is read into the current schema
    (tmp_path / "parts").mkdir()
    old = pa.table({"trial_id": ["a"], "epoch": [1], "val_loss": [0.5], "retired": ["x"]})
    pq.write_table(old, tmp_path / "parts" / "a.epochs.parquet")
    results.consolidate(tmp_path)
    epochs = pq.read_table(tmp_path / "epochs.parquet")
    assert epochs.schema.names == results.EPOCHS_SCHEMA.names
    assert epochs.to_pylist() == [
        {name: None for name in results.EPOCHS_SCHEMA.names} | {"trial_id": "a", "epoch": 1, "val_loss": 0.5}
    ]


def test_the_plan_is_read_back(tmp_path):
    plan = pd.DataFrame([{"trial_id": "a", "model": "lenet5", "tier": "tiny", "pretrained": False, "seed": 0}])
    results.write_plan(tmp_path, plan)
    assert results.read_plan(tmp_path).equals(plan)


def test_a_failure_never_replaces_a_trials_ok_rows(tmp_path):
    results.write_trial(tmp_path, trial_result("a"))
    results.write_trial(tmp_path, trial_result("a", status="failed"))  # e.g. a copy that failed after training
    assert results.finished_trials(tmp_path) == {"a": "ok"}
    results.write_trial(tmp_path, trial_result("b", status="failed"))
    results.write_trial(tmp_path, trial_result("b"))  # a retry that succeeds replaces the failure
    assert results.finished_trials(tmp_path) == {"a": "ok", "b": "ok"}


def test_the_data_fingerprint_follows_content_class_tier_and_split_not_paths():
    manifest = pd.DataFrame({"image": ["x/1.jpg", "x/2.jpg"], "sha256": ["aa", "bb"], "label": [0, 1],
                             "tier": ["tiny", "tiny"], "split": ["train", "test"]})  # fmt: skip
    same = manifest.assign(image=["y/1.jpg", "y/2.jpg"]).iloc[::-1]
    assert results.data_fingerprint(same) == results.data_fingerprint(manifest)
    assert results.data_fingerprint(manifest.assign(split=["test", "train"])) != results.data_fingerprint(manifest)
