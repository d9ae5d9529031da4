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


# -- ABD's metrics (Smith et al., ICCV 2021, Sec. 7) ------------------------------------------

def _seen_accuracy(R: np.ndarray, i: int, sizes: np.ndarray) -> float:
    """A_{i,1:i}: accuracy over every class seen up to task i (tasks weighted by size)."""
    return float(np.sum(sizes[: i + 1] * R[i, : i + 1]) / np.sum(sizes[: i + 1]))


def _task_sizes(R: np.ndarray, task_sizes) -> np.ndarray:
    sizes = np.ones(len(R)) if task_sizes is None else np.asarray(task_sizes, dtype=float)
    if sizes.shape != (len(R),) or np.any(sizes <= 0):
        raise ValueError(f"task_sizes must be {len(R)} positive numbers (got {task_sizes!r})")
    return sizes


def final_accuracy_all_classes(R, task_sizes=None) -> float:
    """A_N = A_{N,1:N} (Eq. 16 over the test data of all tasks).

    ``task_sizes`` (|T_n| or test-set sizes) weight the per-task accuracies; with equal
    tasks this is ``final_accuracy``."""
    R = _matrix(R)
    return _seen_accuracy(R, len(R) - 1, _task_sizes(R, task_sizes))


def omega(R, offline, task_sizes=None) -> float:
    """Omega (Eq. 17, in %): mean over i of A_{i,1:i} / A_offline,1:i.

    ``offline`` is the offline upper bound's accuracy (%): one number (its accuracy
    over all classes, as the paper's tables use: 100 for the upper bound itself) or
    one per task i (its accuracy on the classes of tasks 1..i)."""
    R = _matrix(R)
    sizes = _task_sizes(R, task_sizes)
    ref = np.broadcast_to(np.asarray(offline, dtype=float), (len(R),))
    if np.any(ref <= 0):
        raise ValueError(f"offline accuracy must be positive (got {offline!r})")
    return float(100.0 * np.mean([_seen_accuracy(R, i, sizes) / ref[i] for i in range(len(R))]))


def mean_image_distance(reference, other) -> float:
    """MID (Eq. 10): || (mu_a - mu_b) / sigma_a ||_2 between feature samples (n, d) a and b.

    Feature dimensions that are constant over the reference sample (sigma_a = 0, e.g.
    dead ReLU units) are left out: they would divide by zero."""
    a, b = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    sigma = a.std(0)
    keep = sigma > 1e-6
    return float(np.linalg.norm((a.mean(0)[keep] - b.mean(0)[keep]) / sigma[keep]))
