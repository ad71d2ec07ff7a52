"""Where `python -m raybench.report --out` writes: only into an empty folder or its own earlier report, and
replacing only the report's own files."""

import pytest

from raybench.report.cli import MARKER, check_out, write_report
from raybench.report.document import Report


def test_a_folder_with_someone_elses_report_md_is_refused_and_kept(tmp_path):
    out = tmp_path / "papers"
    out.mkdir()
    (out / "report.md").write_text("my own notes")
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(ValueError, match="not a raybench report folder"):
        write_report(Report("t", []), out)
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "report.md").read_text() == "my own notes"


def test_a_new_report_replaces_only_its_own_files(tmp_path):
    out = tmp_path / "report"
    write_report(Report("first", []), out)
    assert (out / MARKER).is_file() and "first" in (out / "report.md").read_text()
    (out / "figures" / "stale.png").write_bytes(b"old")
    (out / "notes.txt").write_text("kept")
    write_report(Report("second", []), out)
    assert "second" in (out / "report.md").read_text() and "second" in (out / "report.html").read_text()
    assert not (out / "figures" / "stale.png").exists()  # the report's own folders are replaced whole
    assert (out / "notes.txt").read_text() == "kept"
    check_out(out)  # still recognised as a report folder


def report_refused(argv, capsys) -> str:
    """`python -m raybench.report ARGV` refused: exit code 2 and the one line it prints (no usage, no traceback)."""
    from raybench.report.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("python -m raybench.report: error: ")
    return err[0]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from conftest import synthetic_results

    from raybench import spec

    trials = [spec.Trial("lenet5", "tiny"), spec.Trial("resnet_18", "tiny")]
    return synthetic_results(tmp_path_factory.mktemp("runs") / "run", trials, n_test=16)


def damage_inside(path):
    """Overwrite the start of a Parquet file's data (its footer intact: it still looks readable)."""
    content = bytearray(path.read_bytes())
    content[4:200] = b"\xff" * 196
    path.write_bytes(bytes(content))


def test_the_reports_own_read_and_write_errors_are_one_line(tmp_path, capsys, run_folder):
    import shutil

    from conftest import read_only

    assert "results folder" in report_refused([str(tmp_path / "nowhere")], capsys)
    damaged = shutil.copytree(run_folder, tmp_path / "damaged")
    damage_inside(damaged / "trials.parquet")
    line = report_refused([str(damaged)], capsys)
    assert f"{damaged / 'trials.parquet'} is damaged (OSError:" in line and "restore it from a copy" in line
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "report"
    assert f"cannot write the report to {out}: {tmp_path / 'a_file'} is a file" in report_refused(
        [str(run_folder), "--out", str(out)], capsys
    )
    with read_only(tmp_path / "ro", []) as folder:
        line = report_refused([str(run_folder), "--out", str(folder / "report")], capsys)
        assert f"cannot write the report to {folder / 'report'}: {folder} is not writable" in line


def test_a_damaged_manifest_is_read_as_none_not_a_traceback(tmp_path, capsys, run_folder):
    import shutil

    from raybench.report.cli import main

    folder = shutil.copytree(run_folder, tmp_path / "run")
    (folder / "manifest.parquet").write_bytes(b"PAR1 cut short")
    assert main([str(folder)]) == 0 and (folder / "report" / "report.md").is_file()


def test_report_md_escapes_html_as_report_html_does(tmp_path, capsys, run_folder):
    import shutil

    import pandas as pd

    from raybench.report.cli import main

    folder = shutil.copytree(run_folder, tmp_path / "run<img src=x onerror=alert(1)>")
    trials = pd.read_parquet(folder / "trials.parquet")
    trials.loc[1, ["status", "error"]] = ["diverged", "loss <script>alert(2)</script> at epoch 3 &amp; `<b>`"]
    trials.to_parquet(folder / "trials.parquet")
    assert main([str(folder), "--out", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    html = (tmp_path / "report" / "report.html").read_text()
    for raw in ("<script", "<img", "<b>"):
        assert raw not in markdown and raw not in html.replace("<img src='figures/", "")
    assert "loss &lt;script>alert(2)&lt;/script> at epoch 3 &amp;amp;" in markdown  # shown as written, not run
    assert "run&lt;img src=x onerror=alert(1)>" in markdown
