import numpy as np
import pytest

from raybench import metrics

# The tiny tier's test images per class under the thesis's split rule (115 in all, as its accuracies k/115 show).
TINY_TEST = (8, 21, 10, 20, 8, 9, 23, 16)


def outputs(predicted, strength, classes: int = 8) -> np.ndarray:
    """Raw outputs where row i predicts `predicted[i]` with a logit of 10 + strength[i] and every other class 0."""
    logits = np.zeros((len(predicted), classes))
    logits[np.arange(len(predicted)), predicted] = 10 + np.asarray(strength, dtype=float)
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_worked_example_of_figure_5_3():
    # Thesis fig. 5.3: two classes, AP@5 of 0.6 and 0.8 give mAP@5 = 0.7.
    labels = np.array([0, 1, 0, 1, 0, 1, 1, 1, 0, 1])
    predicted = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])  # 3 of the 5 predicted as 0 are; 4 of the 5 as 1
    logits = outputs(predicted, np.arange(10)[::-1], classes=2)
    assert metrics.ap_at_n(logits, labels, 0, 5) == pytest.approx(0.6)
    assert metrics.ap_at_n(logits, labels, 1, 5) == pytest.approx(0.8)
    assert metrics.map_at_n(logits, labels, 5) == pytest.approx(0.7)


def test_only_the_images_predicted_as_the_class_count_and_n_stays_the_divisor():
    labels = np.array([0, 0, 1, 1])
    logits = outputs([0, 1, 1, 1], [0, 0, 0, 0], classes=2)  # class 0 predicted once, correctly
    assert metrics.ap_at_n(logits, labels, 0, 1) == 1.0
    assert metrics.ap_at_n(logits, labels, 0, 5) == pytest.approx(1 / 5)  # 1 true positive, divided by 5
    assert metrics.ap_at_n(logits, labels, 1, 3) == pytest.approx(2 / 3)
    never = outputs([1, 1, 1, 1], [0, 0, 0, 0], classes=2)
    assert metrics.ap_at_n(never, labels, 0, 1) == 0.0  # a class never predicted scores 0


def test_images_are_ranked_by_the_raw_output_not_the_softmax_score():
    # both predicted as class 0; the first has the higher logit for it, the second the higher softmax score
    logits = np.array([[5.0, 4.9, 0.0], [2.0, -10.0, -10.0]])
    labels = np.array([0, 1])
    assert softmax(logits)[1, 0] > softmax(logits)[0, 0]
    assert metrics.ap_at_n(logits, labels, 0, 1) == 1.0
    assert metrics.ap_at_n(softmax(logits), labels, 0, 1) == 0.0


def test_a_one_class_classifier_scores_as_the_thesis_says():
    # 115 tiny-tier test images all predicted as neutrophil (class 6), as the thesis's collapsed MobileNets; the
    # 23 neutrophils rank 6th-25th and last three by the neutrophil logit. The true class has the second-highest
    # logit, so ranking every image by its softmax score would find each class's images first.
    labels = np.repeat(np.arange(8), TINY_TEST)
    neutrophils = np.flatnonzero(labels == 6)
    order = np.concatenate([np.flatnonzero(labels != 6)[:5], neutrophils[:20], np.flatnonzero(labels != 6)[5:]])
    order = np.concatenate([order, neutrophils[20:]])
    strength = np.empty(115)
    strength[order] = np.linspace(0.99, 0.0, 115)  # descending along `order`, below 1
    logits = outputs(np.full(115, 6), strength)
    logits[labels != 6, labels[labels != 6]] = 5.0
    assert metrics.classes_predicted(logits) == 1
    assert metrics.map_at_n(logits, labels, 5) == 0.0  # the thesis's mobilenet_small on tiny: 0.0 ...
    assert metrics.map_at_n(logits, labels, 100) == pytest.approx(20 / 100 / 8)  # ... and 0.025
    everything = np.mean(  # what ranking every test image by its softmax score per class gives instead
        [(labels[np.argsort(-softmax(logits)[:, c], kind="stable")[:100]] == c).mean() for c in range(8)]
    )
    assert everything == pytest.approx(115 / 100 / 8)


def test_the_thesis_tiny_resnet_34_numbers_from_a_constructed_test_set():
    # Thesis tiny resnet_34: accuracy 0.791 (91 of 115), mAP@5 0.75, mAP@100 0.11375 = 91/800: no class has 100
    # predictions, so AP@100 is each class's true positives / 100. 12 eosinophils predicted as basophil and 12
    # neutrophils as lymphocyte, ranked above the true ones: AP@5 = 0 for those two classes, 1 for the six others.
    labels = np.repeat(np.arange(8), TINY_TEST)
    predicted = labels.copy()
    predicted[np.flatnonzero(labels == 1)[:12]] = 0
    predicted[np.flatnonzero(labels == 6)[:12]] = 4
    strength = np.where(predicted != labels, 1.0, 0.0)  # the wrong ones first in their predicted class
    logits = outputs(predicted, strength)
    assert metrics.accuracy(logits, labels) == pytest.approx(91 / 115) and round(91 / 115, 3) == 0.791
    assert metrics.map_at_n(logits, labels, 5) == pytest.approx(0.75)
    assert metrics.map_at_n(logits, labels, 100) == pytest.approx(0.11375)


def test_accuracy_and_confusion_rows_are_true_classes():
    labels = np.array([0, 1, 2, 2])
    scores = np.eye(3)[[0, 2, 2, 1]]
    assert metrics.accuracy(scores, labels) == 0.5
    cm = metrics.confusion_matrix(scores, labels, num_classes=3)
    assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert metrics.classes_predicted(scores) == 3


def test_map_curve_matches_map_at_n_for_every_n():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 60)
    logits = rng.normal(size=(60, 8))
    logits[:, 3] -= 2  # class 3 predicted rarely: N soon passes its predicted images
    curve = metrics.map_curve(logits, labels)
    assert len(curve) == 60
    for n in range(1, 61):
        assert curve[n - 1] == pytest.approx(metrics.map_at_n(logits, labels, n))


def test_n_must_be_positive():
    with pytest.raises(ValueError, match="N >= 1"):
        metrics.ap_at_n(np.eye(2), np.array([0, 1]), 0, 0)
