"""Test metrics of thesis §5.1.1: accuracy, confusion matrix, AP@N and mAP@N, and how many classes a model predicts.

`outputs` are a classifier's raw outputs (logits), one row per test image and one column per class. Accuracy
and the confusion matrix depend on the predicted class only, so softmax scores give the same numbers; AP@N
does not: it ranks images by the raw output, as the thesis did.
"""

from __future__ import annotations

import numpy as np

# A trial that predicts at most this many of the 8 classes on the test set has collapsed (the thesis's MobileNets
# on the tiny tier predict one class only).
COLLAPSE_CLASSES = 2


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest output is the true label."""
    return float((np.asarray(outputs).argmax(1) == np.asarray(labels)).mean())


def confusion_matrix(outputs: np.ndarray, labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(outputs).argmax(1)), 1)
    return matrix


def classes_predicted(outputs: np.ndarray) -> int:
    """How many different classes the model predicts for the rows (at most COLLAPSE_CLASSES: collapsed)."""
    return len(np.unique(np.asarray(outputs).argmax(1)))


def ranked_hits(outputs: np.ndarray, labels: np.ndarray, cls: int) -> np.ndarray:
    """§5.1.1: the images predicted as `cls`, in descending order of their raw output for `cls`; True where of `cls`.

    Ties keep test-set order (stable sort), so the ranking is reproducible from the stored outputs.
    """
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    predicted = np.flatnonzero(outputs.argmax(1) == cls)
    return labels[predicted[np.argsort(-outputs[predicted, cls], kind="stable")]] == cls


def ap_at_n(outputs: np.ndarray, labels: np.ndarray, cls: int, n: int) -> float:
    """True positives among the first n images predicted as `cls` (ranked by raw output), divided by n.

    Divided by n also when fewer than n images were predicted as `cls`: a class the model never predicts
    scores 0 (the thesis on its one-class MobileNets: "as neither configuration makes any predictions in other
    classes, the precision scores for those classes are 0").
    """
    if n < 1:
        raise ValueError(f"AP@N needs N >= 1, got {n}")
    return float(ranked_hits(outputs, labels, cls)[:n].sum() / n)


def map_at_n(outputs: np.ndarray, labels: np.ndarray, n: int) -> float:
    """Mean of AP@n over all classes."""
    outputs = np.asarray(outputs)
    return float(np.mean([ap_at_n(outputs, labels, c, n) for c in range(outputs.shape[1])]))


def map_curve(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """mAP@N for every N from 1 to the test size (thesis figure 5.14), in one pass per class."""
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    ranks = np.arange(1, len(labels) + 1)
    per_class = []
    for c in range(outputs.shape[1]):
        hits = np.cumsum(ranked_hits(outputs, labels, c))
        # past the last image predicted as c the true positives stay where they are, and N keeps growing
        found = np.full(len(labels), hits[-1] if len(hits) else 0)
        found[: len(hits)] = hits
        per_class.append(found / ranks)
    return np.mean(per_class, axis=0)
