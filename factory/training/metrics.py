"""Evaluation metrics without scikit-learn: accuracy, macro-F1 and the confusion matrix."""
from __future__ import annotations

import math


def confusion_matrix(y_true: list[int], y_pred: list[int], n: int) -> list[list[int]]:
    """Rows are the true labels, columns the predictions."""
    m = [[0] * n for _ in range(n)]
    for t, p in zip(y_true, y_pred, strict=True):
        m[t][p] += 1
    return m


def classification_metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict:
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    f1s, per_label = [], {}
    for i, name in enumerate(labels):
        tp = cm[i][i]
        fp = sum(cm[r][i] for r in range(n)) - tp
        fn = sum(cm[i]) - tp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[name] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                           "support": sum(cm[i])}
        if sum(cm[i]):  # macro over the labels present in the evaluation set
            f1s.append(f1)
    total = len(y_true)
    return {
        "accuracy": sum(cm[i][i] for i in range(n)) / total if total else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "confusion_matrix": cm,
        "labels": list(labels),
        "per_label": per_label,
    }


def perplexity(mean_loss: float) -> float:
    return math.exp(min(mean_loss, 50.0))
