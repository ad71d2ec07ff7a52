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
