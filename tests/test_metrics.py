import numpy as np
import pytest

from raybench import metrics


def test_worked_example_of_figure_5_3():
    # Thesis fig. 5.3: two classes, AP@5 of 0.6 and 0.8 give mAP@5 = 0.7.
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 1])
    scores = np.zeros((10, 2))
    # class 0's top 5 (in score order): rows 0, 3, 1, 4, 2 -> hits 0, 1, 2 = 3 of 5
    scores[[0, 3, 1, 4, 2], 0] = [0.9, 0.8, 0.7, 0.6, 0.5]
    # class 1's top 5: rows 5, 6, 0, 7, 3 -> hits 5, 6, 7, 3 = 4 of 5
    scores[[5, 6, 0, 7, 3], 1] = [0.95, 0.9, 0.85, 0.8, 0.75]
    assert metrics.ap_at_n(scores, labels, 0, 5) == pytest.approx(0.6)
    assert metrics.ap_at_n(scores, labels, 1, 5) == pytest.approx(0.8)
    assert metrics.map_at_n(scores, labels, 5) == pytest.approx(0.7)


def test_accuracy_and_confusion_rows_are_true_classes():
    labels = np.array([0, 1, 2, 2])
    scores = np.eye(3)[[0, 2, 2, 1]]
    assert metrics.accuracy(scores, labels) == 0.5
    cm = metrics.confusion_matrix(scores, labels, num_classes=3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_map_curve_matches_map_at_n_for_every_n():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 60)
    scores = rng.random((60, 8))
    curve = metrics.map_curve(scores, labels)
    assert len(curve) == 60
    for n in (1, 5, 17, 60):
        assert curve[n - 1] == pytest.approx(metrics.map_at_n(scores, labels, n))


def test_n_must_be_positive():
    with pytest.raises(ValueError, match="N >= 1"):
        metrics.ap_at_n(np.eye(2), np.array([0, 1]), 0, 0)
