"""Coreset rehearsal (ABD's naive-rehearsal and LwF + coreset baselines)."""
import pytest
import torch
from torch import nn

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.data.scenarios import Task, build_scenario
from memdistill.data.sources import load_source
from memdistill.methods import METHODS, LearnerContext
from memdistill.nets import Backbone

SHAPE = (1, 8, 8)


def context(**kw) -> LearnerContext:
    base = dict(num_classes=6, num_tasks=3, input_shape=SHAPE, mean=(0.0,), std=(1.0,), augment=False,
                device=torch.device("cpu"), lr=0.1, batch_size=8, buffer=12, seed=0)
    return LearnerContext(**{**base, **kw})


def net() -> Backbone:
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
    return Backbone(body, 8, 6)


def task(index, classes, per_class=20) -> Task:
    g = torch.Generator().manual_seed(index)
    labels = torch.tensor(classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=g)]
    images = torch.randint(0, 255, (len(labels), *SHAPE), generator=g, dtype=torch.uint8)
    return Task(index, f"t{index}", list(classes), images, labels, images[:4], labels[:4])


@pytest.mark.parametrize("method", ["naive-rehearsal", "lwf-coreset"])
def test_coreset_is_class_balanced_and_holds_only_finished_tasks(method):
    learner = METHODS[method](net(), context())
    seen = []
    for index, classes in enumerate([[0, 1], [2, 3], [4, 5]]):
        t = task(index, classes)
        learner.begin_task(t)
        for start in range(0, len(t.train_labels), 8):
            stored = set(learner.coreset.store.labels[: len(learner.coreset.store)].tolist())
            assert stored <= set(seen)                      # no current-task image is replayed
            learner.observe(t.train_images[start:start + 8], t.train_labels[start:start + 8], index)
        learner.end_task(t)
        seen += classes
        counts = torch.bincount(learner.coreset.store.labels[: len(learner.coreset.store)], minlength=6)
        assert counts[seen].tolist() == [12 // len(seen)] * len(seen)   # 6/6, then 3/3/3/3, then 2 each
        assert len(learner.coreset.staging) == 0
        assert learner.memory_nbytes == 12 * (64 + 16)
    # every stored image is one of the task's images with its label
    t0 = task(0, [0, 1])
    for image, label in zip(learner.coreset.store.images, learner.coreset.store.labels):
        if label in (0, 1):
            match = (t0.train_images == image).flatten(1).all(1)
            assert match.any() and int(t0.train_labels[match][0]) == int(label)


def test_coreset_batch_is_proportional_to_the_coreset_and_the_task():
    learner = METHODS["naive-rehearsal"](net(), context(buffer=12))
    t = task(0, [0, 1], per_class=24)
    learner.begin_task(t)
    assert learner.coreset.batch(8, learner.generator) is None       # empty before the first task ends
    for start in range(0, 48, 8):
        learner.observe(t.train_images[start:start + 8], t.train_labels[start:start + 8], 0)
    learner.end_task(t)
    learner.begin_task(task(1, [2, 3], per_class=24))
    assert len(learner.coreset.batch(8, learner.generator).labels) == round(8 * 12 / 48)   # 2
    learner.begin_task(task(2, [4, 5], per_class=2))
    assert len(learner.coreset.batch(8, learner.generator).labels) == 12                  # the whole coreset


@pytest.fixture(scope="module")
def digits():
    return load_source("digits", progress=False)


def test_naive_rehearsal_beats_finetune_and_resumes(digits, tmp_path):
    def run(method, out=None, **kw):
        cfg = RunConfig(method=method, buffer=100 if method != "finetune" else 0, backbone="mlp", **kw)
        return engine.run(cfg, out, build_scenario("seq-digits", None, source=digits, progress=False),
                          progress=False)
    finetune = run("finetune")["class_il"]["acc"]
    naive = run("naive-rehearsal", tmp_path / "whole")
    assert naive["class_il"]["acc"] > finetune + 20
    assert naive["memory_bytes"] == naive["memory_bytes_detail"]["samples"] <= 100 * (64 + 16)
    lwf = run("lwf-coreset")
    assert lwf["class_il"]["acc"] > finetune + 20
    cfg = RunConfig(method="naive-rehearsal", buffer=100, backbone="mlp")
    scenario = build_scenario("seq-digits", None, source=digits, progress=False)
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path / "cut", scenario, progress=False, stop_after_task=2)
    resumed = engine.run(cfg, tmp_path / "cut", scenario, progress=False)
    assert resumed["class_il"] == naive["class_il"]
