"""Metrics from an accuracy matrix.

``R[i][j]`` is the accuracy (%) on task j after training task i; entries with
j > i may be NaN (not evaluated).  With T tasks:

* ACC = mean_j R[T-1][j]                                  (final average accuracy)
* FM  = mean_{j<T-1} (max_{j<=i<T-1} R[i][j] - R[T-1][j])  (average forgetting)
* BWT = mean_{j<T-1} (R[T-1][j] - R[j][j])                (backward transfer)
* RA  = ACC, "retained accuracy" (Remember the Past Sec. 5.2, La-MAML)
* BTI = mean_{j<T-1} (R[T-1][j] - R[j][j]), "backward transfer and interference":
  accuracy on a task at the end minus right after it was learned (as BWT)
"""
from __future__ import annotations

import numpy as np


def _matrix(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square and non-empty (got shape {R.shape})")
    return R


def final_accuracy(R) -> float:
    R = _matrix(R)
    return float(np.mean(R[-1]))


def forgetting(R) -> float:
    R = _matrix(R)
    T = len(R)
    if T == 1:
        return 0.0
    best = [np.max(R[j:T - 1, j]) for j in range(T - 1)]
    return float(np.mean([best[j] - R[-1, j] for j in range(T - 1)]))


def backward_transfer(R) -> float:
    R = _matrix(R)
    T = len(R)
    if T == 1:
        return 0.0
    return float(np.mean([R[-1, j] - R[j, j] for j in range(T - 1)]))


def average_incremental_accuracy(R) -> float:
    """Mean over i of the average accuracy on tasks 0..i after task i."""
    R = _matrix(R)
    return float(np.mean([np.mean(R[i, : i + 1]) for i in range(len(R))]))


def retained_accuracy(R) -> float:
    """RA: average accuracy of the final model over all tasks."""
    return final_accuracy(R)


def backward_transfer_interference(R) -> float:
    """BTI: mean change on each earlier task from right after learning it to the end."""
    return backward_transfer(R)


def summarise(R) -> dict[str, float]:
    return {"acc": final_accuracy(R), "fm": forgetting(R), "bwt": backward_transfer(R),
            "avg_inc_acc": average_incremental_accuracy(R),
            "ra": retained_accuracy(R), "bti": backward_transfer_interference(R)}
