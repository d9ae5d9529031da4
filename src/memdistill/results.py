"""Run folders: what a run writes, written atomically, and how it is read back.

A run folder holds::

    config.yaml              the full, resolved configuration
    accuracy_class_il.csv    R[i][j], accuracy (%) on task j after task i (empty: not evaluated)
    accuracy_task_il.csv     the same with logits masked to the task's classes (class-IL scenarios)
    summary.json             metrics and costs; keys listed in docs/results.md
    log.jsonl                per-step losses (every ``log_every`` steps)
    checkpoint.pt            the latest full state, to resume (torch.load(weights_only=True))
    checkpoints/task_K.pt    the network's weights after task K
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def matrix_to_csv(R: list[list[float | None]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    width = max((len(row) for row in R), default=0)
    writer.writerow(["after_task"] + [f"task_{j}" for j in range(width)])
    for i, row in enumerate(R):
        writer.writerow([i] + ["" if v is None or (isinstance(v, float) and math.isnan(v))
                               else f"{v:.4f}" for v in row])
    return out.getvalue()


def matrix_from_csv(text: str) -> list[list[float]]:
    rows = list(csv.reader(io.StringIO(text)))[1:]
    return [[float(v) if v else math.nan for v in row[1:]] for row in rows]


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def write_config(self, config: dict) -> None:
        atomic_write(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))

    def write_matrices(self, class_il: list, task_il: list | None) -> None:
        atomic_write(self.path / "accuracy_class_il.csv", matrix_to_csv(class_il))
        if task_il is not None:
            atomic_write(self.path / "accuracy_task_il.csv", matrix_to_csv(task_il))

    def write_log(self, entries: list[dict]) -> None:
        atomic_write(self.path / "log.jsonl", "".join(json.dumps(e) + "\n" for e in entries))

    def write_summary(self, summary: dict) -> None:
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2) + "\n")

    def save_checkpoint(self, state: dict, task: int, model_state: dict) -> None:
        atomic_torch_save(model_state, self.path / "checkpoints" / f"task_{task}.pt")
        atomic_torch_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> dict | None:
        if not self.checkpoint_path.exists():
            return None
        return torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)

    def read_summary(self) -> dict | None:
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.exists() else None


def find_runs(paths: list[str | os.PathLike]) -> list[Path]:
    """Run folders (holding summary.json) at or below each path, sorted."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "summary.json").exists():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(s.parent for s in p.rglob("summary.json")))
    return found
