"""TensorBoard scalars of a run, read back; W&B through a stand-in module; W&B missing gives a clear error."""
import json
import sys
from pathlib import Path

import pytest

from memdistill.cli import main
from memdistill.results import matrix_from_csv

RUN = ["run", "--scenario", "seq-digits", "--method", "er", "--buffer", "50", "--epochs", "1",
       "--samples-per-task", "40", "--log-every", "2", "--no-progress"]


def test_tensorboard_scalars_hold_the_accuracy_matrix(isolated):
    pytest.importorskip("tensorboard", reason="TensorBoard is in the test extra: pip install -e '.[test]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(RUN + ["--tensorboard", "--out", "tb-run"]) == 0
    events = EventAccumulator("tb-run/tb")
    events.Reload()
    tags = events.Tags()["scalars"]
    R = matrix_from_csv(Path("tb-run/accuracy_class_il.csv").read_text())
    T = len(R)
    for j in range(T):
        logged = [e.value for e in events.Scalars(f"class_il/task_{j}")]
        assert logged == pytest.approx([R[i][j] for i in range(j, T)], abs=1e-3)
    summary = json.loads(Path("tb-run/summary.json").read_text())
    assert events.Scalars("class_il/mean")[-1].value == pytest.approx(summary["class_il"]["acc"], abs=1e-3)
    assert len(events.Scalars("speed/samples_per_s")) == T
    assert "loss/loss" in tags and len(events.Scalars("loss/loss")) > T
    steps = [e.step for e in events.Scalars("class_il/task_0")]
    assert steps == sorted(steps) and steps[-1] == summary["steps"]


def test_logging_is_off_by_default_and_free_to_change_on_resume(isolated):
    assert main(RUN + ["--out", "plain"]) == 0
    assert not Path("plain/tb").exists()
    first = Path("plain/summary.json").read_text()
    assert main(RUN + ["--out", "plain", "--tensorboard"]) == 0   # same run: finished, not redone
    assert Path("plain/summary.json").read_text() == first


def test_missing_wandb_is_a_one_line_error(isolated, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert main(RUN + ["--wandb", "my-project", "--out", "w"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "memdistill run: error: --wandb: needs Weights & Biases: pip install 'memdistill[wandb]'"
    assert not Path("w").exists()


def test_wandb_gets_the_same_scalars(isolated, monkeypatch):
    """The W&B path against a stand-in module: init with the run's config, the scalars, finish."""
    import importlib.machinery
    import types

    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, scalars, step):
            calls["log"].append((step, dict(scalars)))

        def finish(self):
            calls["finish"] += 1

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kw: calls["init"].append(kw) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)

    assert main(RUN + ["--wandb", "my-project", "--out", "w"]) == 0
    (init,) = calls["init"]
    assert init["project"] == "my-project" and init["config"]["method"] == "er" and init["resume"] == "allow"
    assert calls["finish"] == 1
    R = matrix_from_csv(Path("w/accuracy_class_il.csv").read_text())
    logged = [s["class_il/task_0"] for _, s in calls["log"] if "class_il/task_0" in s]
    assert logged == pytest.approx([row[0] for row in R], abs=1e-3)
    steps = [step for step, _ in calls["log"]]
    assert steps == sorted(steps) and any("loss/loss" in s for _, s in calls["log"])
    # the W&B run id depends only on the run folder, so a resumed run continues it
    assert main(RUN + ["--wandb", "my-project", "--out", "w", "--no-resume"]) == 0
    assert calls["init"][1]["id"] == init["id"]
