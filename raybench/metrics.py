"""Test metrics of thesis §5.1.1: accuracy, confusion matrix, AP@N and mAP@N."""

from __future__ import annotations

import numpy as np


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest score is the true label."""
    return float((np.asarray(scores).argmax(1) == np.asarray(labels)).mean())


def confusion_matrix(scores: np.ndarray, labels: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(scores).argmax(1)), 1)
    return matrix


def ap_at_n(scores: np.ndarray, labels: np.ndarray, cls: int, n: int) -> float:
    """Precision among the n test images scored highest for class `cls` (§5.1.1).

    Ties keep test-set order (stable sort), so the number is reproducible from the stored scores.
    """
    if n < 1:
        raise ValueError(f"AP@N needs N >= 1, got {n}")
    top = np.argsort(-np.asarray(scores)[:, cls], kind="stable")[:n]
    return float((np.asarray(labels)[top] == cls).mean())


def map_at_n(scores: np.ndarray, labels: np.ndarray, n: int) -> float:
    """Mean of AP@n over all classes."""
    scores = np.asarray(scores)
    return float(np.mean([ap_at_n(scores, labels, c, n) for c in range(scores.shape[1])]))


def map_curve(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """mAP@N for every N from 1 to the test size (thesis figure 5.14), in one pass per class."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    ranks = np.arange(1, len(labels) + 1)
    per_class = []
    for c in range(scores.shape[1]):
        hits = labels[np.argsort(-scores[:, c], kind="stable")] == c
        per_class.append(np.cumsum(hits) / ranks)
    return np.mean(per_class, axis=0)
