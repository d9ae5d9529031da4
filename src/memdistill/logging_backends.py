"""Where a run's scalars go besides its folder: TensorBoard and Weights & Biases.

The engine calls one object, ``ScalarLog``: ``log_scalars(step, {tag: value})``
and ``close()``.  It knows nothing of the backends, which are optional packages
imported only when a run asks for them (``--tensorboard``, ``--wandb PROJECT``).

Tags written by the engine (``step`` is the optimiser step since the run began):

    loss/<name>            each loss the learner returns, every ``log_every`` steps
    class_il/task_<j>      accuracy (%) on task j after each task (one row of R)
    class_il/mean          mean of that row; ``task_il/...`` likewise
    speed/samples_per_s    training throughput of the task just learned
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from memdistill.config import ConfigError, RunConfig


def check_backends(cfg: RunConfig) -> None:
    """Fail before a run starts if a requested backend is not installed."""
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard", "needs TensorBoard: pip install 'memdistill[tensorboard]'")
    if cfg.wandb is not None:
        if not isinstance(cfg.wandb, str) or not cfg.wandb:
            raise ConfigError("--wandb", f"must be a W&B project name (got {cfg.wandb!r})")
        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("--wandb", "needs Weights & Biases: pip install 'memdistill[wandb]'")


class ScalarLog:
    """Fans scalars out to the enabled backends; does nothing when none is."""

    def __init__(self, cfg: RunConfig, folder: Path | None, start_step: int = 0):
        self._writers = []
        if folder is None:
            return
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            # purge_step hides events a killed run wrote after its last checkpoint.
            self._writers.append(_TensorBoard(SummaryWriter(str(Path(folder) / "tb"),
                                                            purge_step=start_step or None)))
        if cfg.wandb:
            import wandb
            run = wandb.init(project=cfg.wandb, name=str(folder), dir=str(folder),
                             config=cfg.to_dict(), resume="allow", id=_wandb_id(folder))
            self._writers.append(_WandB(run))

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for writer in self._writers:
            writer.log(step, scalars)

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []


class _TensorBoard:
    def __init__(self, writer):
        self.writer = writer

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run):
        self.run = run

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


def _wandb_id(folder: Path) -> str:
    """A stable id per run folder, so a resumed run continues the same W&B run."""
    import hashlib
    return hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:16]
