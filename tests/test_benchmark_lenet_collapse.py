"""The LeNet-5 study's report: its interval, and the committed md is what the code writes from the committed rows."""

import pytest

from benchmarks.lenet_collapse import JSONL, REPORT
from benchmarks.lenet_collapse.study import load_rows, report, share_difference


def test_share_difference_is_newcombes_interval():
    # Newcombe (1998), Stat. Med. 17:873, table II example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    d, lo, hi = share_difference(56, 70, 48, 80)
    assert d == pytest.approx(0.2) and lo == pytest.approx(0.0524, abs=1e-4) and hi == pytest.approx(0.3339, abs=1e-4)


def test_committed_report_is_what_the_code_writes_from_the_committed_rows():
    text = report(load_rows(JSONL))
    assert REPORT.read_text() == text
    assert "in 7 of the 11 seeds that both loops ran" in text  # seed 11 has no bare run
    assert "difference +0.02, 95 % interval -0.29 to +0.33" in text
    assert "the tested model was the last epoch trained in 23 of 23 runs" in text
    assert "raybench 6.1-53.5 (mean 20.2), bare 6.8-122.6" in text
    assert "good draw" not in text
