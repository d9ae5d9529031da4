import json

import numpy as np
import pytest
import torch

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.data.scenarios import build_scenario
from memdistill.data.sources import load_source


@pytest.fixture(scope="module")
def digits():
    return load_source("digits", progress=False)


def _scenario(digits):
    return build_scenario("seq-digits", source=digits, progress=False)


def test_er_beats_finetune_on_digits(digits, tmp_path):
    er = engine.run(RunConfig(method="er", buffer=100), tmp_path / "er", _scenario(digits), progress=False)
    ft = engine.run(RunConfig(method="finetune"), tmp_path / "ft", _scenario(digits), progress=False)
    assert er["class_il"]["acc"] >= ft["class_il"]["acc"] + 20, (er["class_il"], ft["class_il"])
    assert ft["class_il"]["fm"] > er["class_il"]["fm"]
    assert er["wall_s"] < 60
    assert er["memory_bytes"] == 100 * (64 + 8 + 8) and ft["memory_bytes"] == 0 and ft["buffer"] == 0


def test_run_folder_contents(digits, tmp_path):
    summary = engine.run(RunConfig(method="er", buffer=50), tmp_path, _scenario(digits), progress=False)
    for name in ["config.yaml", "accuracy_class_il.csv", "accuracy_task_il.csv", "summary.json",
                 "log.jsonl", "checkpoint.pt", "checkpoints/task_4.pt"]:
        assert (tmp_path / name).exists(), name
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    for key in ["wall_s", "samples_per_s", "peak_mem_mb", "memory_bytes"]:
        assert summary[key] > 0
    assert set(summary["class_il"]) >= {"acc", "fm", "bwt"} and "acc" in summary["task_il"]
    # loadable without unpickling arbitrary objects
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert lines and {"task", "step", "loss", "stream"} <= set(json.loads(lines[-1]))
    csv_rows = (tmp_path / "accuracy_class_il.csv").read_text().splitlines()
    assert len(csv_rows) == 6 and csv_rows[1].endswith(",,,,")    # R[0][1:] not evaluated


@pytest.mark.parametrize("method", ["er", "finetune", "ewc", "agem"])
def test_resume_gives_the_same_results(digits, tmp_path, method):
    cfg = RunConfig(method=method, buffer=60, setting="offline", epochs=2)
    whole = engine.run(cfg, tmp_path / "whole", _scenario(digits), progress=False)
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False, stop_after_task=1)
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False)
    assert resumed["class_il"] == whole["class_il"] and resumed["task_il"] == whole["task_il"]
    for name in ["accuracy_class_il.csv", "accuracy_task_il.csv", "log.jsonl"]:
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text()
    a = torch.load(tmp_path / "cut" / "checkpoints" / "task_4.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "checkpoints" / "task_4.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_different_config(digits, tmp_path):
    engine.run(RunConfig(method="er", buffer=20), tmp_path, _scenario(digits), progress=False)
    with pytest.raises(engine.ConfigError, match="buffer"):
        engine.run(RunConfig(method="er", buffer=30), tmp_path, _scenario(digits), progress=False)


def test_joint_is_an_upper_bound(digits):
    joint = engine.run(RunConfig(method="joint"), None, _scenario(digits), progress=False)
    ft = engine.run(RunConfig(method="finetune"), None, _scenario(digits), progress=False)
    assert joint["class_il"]["acc"] > 80 > ft["class_il"]["acc"]


def test_online_setting_sees_each_sample_once(digits):
    summary = engine.run(RunConfig(method="er", setting="online", batch_size=10, buffer=50),
                         None, _scenario(digits), progress=False)
    assert summary["steps"] == sum(-(-len(t.train_labels) // 10) for t in _scenario(digits).tasks)


def test_class_balanced_policy_runs(digits):
    s = engine.run(RunConfig(method="er", buffer=40, buffer_policy="class-balanced"), None,
                   _scenario(digits), progress=False)
    assert s["memory_bytes"] == 40 * 80


def test_run_writes_the_papers_figures(digits, tmp_path):
    """Fig. 3 / Fig. 5 / Fig. 6 / Table 5 of the DDN paper, from the final evaluation."""
    from memdistill.figures import FILES
    scenario = _scenario(digits)
    summary = engine.run(RunConfig(method="er", buffer=50, epochs=1), tmp_path, scenario, progress=False)
    for name in FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    rows = [r.split(",") for r in (tmp_path / "confusion.csv").read_text().splitlines()[1:]]
    counts = np.array([[float(v) for v in r[1:]] for r in rows])
    n_test = sum(len(t.test_labels) for t in scenario.tasks)
    assert counts.sum() == n_test
    assert abs(np.trace(counts) / n_test * 100 - summary["class_il"]["acc"]) < 1.0   # balanced test sets
    rows = [r.split(",") for r in (tmp_path / "class_probabilities.csv").read_text().splitlines()[1:]]
    probs = np.array([[float(v) for v in r[1:]] for r in rows])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-3)
    final = (tmp_path / "final_task_accuracy.csv").read_text()
    assert f"ACC,{summary['class_il']['acc']:.2f}" in final


def test_lr_milestones_decay_the_lr_within_each_task(digits, monkeypatch):
    """--lr-milestones: lr x gamma at the start of each listed epoch, back to --lr at the
    start of every task (ER keeps one optimiser across tasks)."""
    from memdistill.methods.er import ExperienceReplay as ER
    seen = []
    observe = ER.observe

    def spy(self, images, labels, task_id):
        seen.append((task_id, self.optimizer.param_groups[0]["lr"]))
        return observe(self, images, labels, task_id)

    monkeypatch.setattr(ER, "observe", spy)
    scenario = _scenario(digits)
    cfg = RunConfig(method="er", buffer=20, setting="offline", epochs=3, lr=0.1, batch_size=64,
                    lr_milestones=[1, 2], lr_gamma=0.5)
    engine.run(cfg, None, scenario, progress=False)
    for task in scenario.tasks:
        per_epoch = -(-len(task.train_labels) // 64)
        lrs = [lr for t, lr in seen if t == task.index]
        assert lrs == pytest.approx([0.1] * per_epoch + [0.05] * per_epoch + [0.025] * per_epoch)


@pytest.mark.parametrize("bad", [[0], [3, 2], [2, 2], "10"])
def test_lr_milestones_are_checked(bad):
    with pytest.raises(engine.ConfigError, match="--lr-milestones"):
        engine.check(RunConfig(method="er", lr_milestones=bad))
    with pytest.raises(engine.ConfigError, match="--lr-gamma"):
        engine.check(RunConfig(method="er", lr_gamma=0))


def test_class_order_seed_can_follow_the_run_seed():
    assert engine.check(RunConfig(method="er", seed=3, class_order_seed="seed")).class_order_seed == 3
    assert engine.check(RunConfig(method="er", seed=3, class_order_seed=5)).class_order_seed == 5
    for bad in ("same", -1, True):
        with pytest.raises(engine.ConfigError, match="--class-order-seed"):
            engine.check(RunConfig(method="er", class_order_seed=bad))


def test_a_run_folder_from_before_an_option_existed_still_resumes(digits, tmp_path):
    """A stored config without a newer option had that option's default: not a change."""
    import yaml
    cfg = RunConfig(method="er", buffer=20)
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path, _scenario(digits), progress=False, stop_after_task=1)
    ckpt_path = tmp_path / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    for key in ("lr_milestones", "lr_gamma"):
        del ckpt["config"][key]
    torch.save(ckpt, ckpt_path)
    resumed = engine.run(cfg, tmp_path, _scenario(digits), progress=False)
    assert resumed["num_tasks"] == 5
    stored = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg.resolved().changed_options({k: v for k, v in stored.items() if k != "lr_gamma"}) == []
    assert cfg.resolved().changed_options({**stored, "lr_gamma": 0.5}) == ["lr_gamma"]
