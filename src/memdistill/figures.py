"""The figures of a finished run, as CSV and PNG in its folder.

They follow the DDN paper's analysis (any method gets them):

* ``class_probabilities`` - for the test images of each true class, the mean
  predicted probability of every class (Fig. 3: how much probability mass old
  classes keep);
* ``confusion`` - the confusion matrix, rows normalised to 1 (Fig. 5);
* ``task_accuracy`` - accuracy on each task after each training task, one line per
  task (Fig. 6), and ``final_task_accuracy.csv``: a_{t,T} for every task t with
  ACC and FM (Table 5).

Inputs are the final evaluation's probabilities and labels, so drawing costs no
extra pass over the test sets.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from memdistill import metrics
from memdistill.results import atomic_write

FILES = ("class_probabilities.csv", "class_probabilities.png", "confusion.csv", "confusion.png",
         "task_accuracy.png", "final_task_accuracy.csv")


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def class_probabilities(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Row c: the mean predicted distribution over the test images of class c (NaN if none)."""
    out = np.full((num_classes, num_classes), np.nan)
    for c in range(num_classes):
        rows = probs[labels == c]
        if len(rows):
            out[c] = rows.mean(0)
    return out


def _csv(matrix: np.ndarray, row_name: str, fmt: str) -> str:
    buf = io.StringIO()
    n = matrix.shape[1]
    buf.write(",".join([row_name] + [f"class_{j}" for j in range(n)]) + "\n")
    for i, row in enumerate(matrix):
        buf.write(",".join([str(i)] + ["" if np.isnan(v) else format(v, fmt) for v in row.astype(float)]) + "\n")
    return buf.getvalue()


def write_run_figures(folder: Path, probs: np.ndarray, labels: np.ndarray, class_il: list[list[float]],
                      title: str = "") -> None:
    """Write the CSVs and PNGs listed in ``FILES`` into ``folder``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    C = probs.shape[1]
    mean_probs = class_probabilities(probs, labels, C)
    counts = confusion_matrix(probs.argmax(1), labels, C)
    with np.errstate(invalid="ignore"):
        normalised = counts / counts.sum(1, keepdims=True)
    atomic_write(folder / "class_probabilities.csv", _csv(mean_probs, "true_class", ".4f"))
    atomic_write(folder / "confusion.csv", _csv(counts.astype(float), "true_class", ".0f"))

    R = np.array(class_il, dtype=float)
    T = R.shape[0]
    summary = metrics.summarise(R.tolist())
    lines = ["task,final_accuracy"] + [f"{t},{R[-1, t]:.2f}" for t in range(T)]
    lines += [f"ACC,{summary['acc']:.2f}", f"FM,{summary['fm']:.2f}"]
    atomic_write(folder / "final_task_accuracy.csv", "\n".join(lines) + "\n")

    for name, matrix, label in [("class_probabilities", mean_probs, "mean predicted probability"),
                                ("confusion", normalised, "fraction of the true class")]:
        fig, ax = plt.subplots(figsize=(0.45 * C + 2.5, 0.45 * C + 1.8) if C <= 20 else (9, 8))
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        if C <= 20:
            for i in range(C):
                for j in range(C):
                    if not np.isnan(matrix[i, j]):
                        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                                color="white" if matrix[i, j] > 0.6 else "black")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{title} {name.replace('_', ' ')}".strip(), fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8, label=label)
        fig.savefig(folder / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    after = np.arange(1, T + 1)
    for t in range(T):
        ax.plot(after[t:], R[t:, t], marker="o", label=f"task {t + 1}")
    ax.set_xlabel("after training task")
    ax.set_ylabel("class-IL accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(after)
    ax.set_title(f"{title} accuracy per task".strip(), fontsize=9)
    ax.legend(fontsize=7, ncol=2 if T > 5 else 1)
    fig.savefig(folder / "task_accuracy.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
