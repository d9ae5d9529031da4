import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memdistill import engine, metrics
from memdistill.config import RunConfig
from memdistill.data.scenarios import build_scenario
from memdistill.data.sources import load_source
from memdistill.methods import METHODS, LearnerContext
from memdistill.methods.abd import AlwaysBeDreaming
from memdistill.methods.distillation import softened_kl
from memdistill.methods.er import ExperienceReplay
from memdistill.nets import Backbone
from tests.conftest import make_source

C = 6
SHAPE = (1, 8, 8)
FAST = dict(generator_steps=3, generator_width=4, noise_dim=8)


def context(**kw) -> LearnerContext:
    base = dict(num_classes=C, num_tasks=3, input_shape=SHAPE, mean=(0.0,), std=(1.0,), augment=False,
                device=torch.device("cpu"), lr=0.1, batch_size=8, replay_batch_size=8, buffer=20, seed=0)
    return LearnerContext(**{**base, **kw})


def net() -> Backbone:
    body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5), nn.ReLU())
    return Backbone(body, 5, C)


def task(index, classes, n=16, seed=0):
    g = torch.Generator().manual_seed(seed + index)
    labels = torch.tensor(classes).repeat(n // len(classes))
    images = torch.randint(0, 256, (len(labels), *SHAPE), generator=g, dtype=torch.uint8)
    return types.SimpleNamespace(index=index, classes=list(classes), train_images=images, train_labels=labels)


def abd_in_second_task(**options) -> AlwaysBeDreaming:
    """An ABD learner that finished task 0 (classes 0, 1) and began task 1 (classes 2, 3)."""
    torch.manual_seed(0)
    learner = AlwaysBeDreaming(net(), context(), **{**FAST, **options})
    for t in (task(0, [0, 1]), task(1, [2, 3])):
        learner.begin_task(t)
        if t.index == 0:
            learner.observe(t.train_images[:8], t.train_labels[:8], 0)
            learner.end_task(t)
    return learner


def test_local_ce_touches_only_new_class_logits():
    learner = abd_in_second_task()
    logits = torch.randn(8, C, requires_grad=True)
    labels = torch.tensor([2, 3] * 4)
    loss = learner.local_cross_entropy(logits, labels)
    loss.backward()
    assert logits.grad[:, [2, 3]].abs().sum() > 0
    assert torch.all(logits.grad[:, [0, 1, 4, 5]] == 0)
    # it is the CE of the two new logits with the labels shifted to 0, 1
    assert loss.item() == pytest.approx(F.cross_entropy(logits[:, 2:4], labels - 2).item(), rel=1e-6)


def test_head_finetuning_updates_only_the_head():
    learner = abd_in_second_task()
    x = torch.randn(8, *SHAPE)
    feats = learner.model.features(x)
    learner.model.zero_grad(set_to_none=True)
    learner.head_finetune_loss(feats, torch.tensor([0, 1, 2, 3] * 2)).backward()
    assert all(p.grad is None for p in learner.model.body.parameters())
    assert learner.model.head.weight.grad.abs().sum() > 0
    # task-balancing weights (Eq. 14): old classes n_old / n_seen, new classes the rest
    w = learner.class_weights()
    assert w[[0, 1]].tolist() == [0.5, 0.5] and w[[2, 3]].tolist() == [0.5, 0.5]
    learner.old_classes, learner.seen_classes = [0, 1, 2, 3], [0, 1, 2, 3, 4, 5]
    learner.new_classes = [4, 5]
    assert learner.class_weights()[[0, 4]].tolist() == pytest.approx([4 / 6, 2 / 6])
    assert abd_in_second_task(balance=False).class_weights().tolist() == [1.0] * C


def test_feature_distillation_against_direct_computation():
    learner = abd_in_second_task()
    feats, previous = torch.randn(8, 5), torch.randn(8, 5)
    W = learner.previous.head.weight[:2]          # old classes 0, 1
    direct = sum(((W @ (feats[i] - previous[i])) ** 2).sum() / 2 for i in range(8)) / 8
    assert learner.feature_distillation(feats, previous).item() == pytest.approx(direct.item(), rel=1e-5)
    assert learner.feature_distillation(previous, previous).item() == 0.0


def test_softened_kl_pads_the_teacher_with_zeros():
    student, teacher = torch.randn(4, 5), torch.randn(4, 3)
    T = 2.0
    p_t = torch.cat([F.softmax(teacher / T, 1), torch.zeros(4, 2)], 1)
    log_p_s = F.log_softmax(student / T, 1)
    direct = (p_t[:, :3] * (p_t[:, :3].log() - log_p_s[:, :3])).sum(1).mean() * T ** 2
    assert softened_kl(student, teacher, T).item() == pytest.approx(direct.item(), rel=1e-5)


def test_a_step_uses_synthetic_data_and_only_old_pseudo_labels():
    learner = abd_in_second_task()
    x_hat = learner.synthetic_batch(8)
    assert x_hat.shape == (8, *SHAPE)
    old_logits, _ = learner.previous_forward(x_hat)
    assert set(learner.pseudo_labels(old_logits).tolist()) <= {0, 1}
    t = task(1, [2, 3])
    losses = learner.observe(t.train_images[:8], t.train_labels[:8], 1)
    assert set(losses) == {"loss", "ce", "kd", "ft"} and losses["ft"] > 0
    off = abd_in_second_task(kd_real=False, kd_synthetic=False, finetune_head=False)
    assert off.observe(t.train_images[:8], t.train_labels[:8], 1)["kd"] == 0.0


def reachable_tensors(obj, seen=None):
    """Every tensor an object holds, through attributes, containers, modules and optimisers."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from reachable_tensors(k, seen)
            yield from reachable_tensors(v, seen)
    elif isinstance(obj, (list, tuple, set)):
        for v in obj:
            yield from reachable_tensors(v, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.ModuleType, torch.Generator)):
        yield from reachable_tensors(vars(obj), seen)


def images_held(learner) -> list[torch.Tensor]:
    """Tensors shaped like a batch of images (N, C, H, W) in the learner or its checkpoint."""
    tensors = list(reachable_tensors(learner)) + list(reachable_tensors(learner.state_dict()))
    return [t for t in tensors if t.dim() == 4 and tuple(t.shape[1:]) == SHAPE]


@pytest.mark.parametrize("method", ["abd", "deepinversion", "lwf", "lwf-mc", "dgr"])
def test_no_real_data_survives_a_task_boundary(method):
    torch.manual_seed(0)
    options = {"abd": FAST, "deepinversion": FAST, "dgr": dict(vae_width=4, vae_z=8)}.get(method, {})
    learner = METHODS[method](net(), context(), **options)
    for index, classes in enumerate([[0, 1], [2, 3]]):
        t = task(index, classes)
        learner.begin_task(t)
        for start in range(0, len(t.train_labels), 8):
            learner.observe(t.train_images[start:start + 8], t.train_labels[start:start + 8], index)
        learner.end_task(t)
        assert images_held(learner) == []
    # the check finds stored images when there are some (ER keeps a buffer)
    er = ExperienceReplay(net(), context())
    er.begin_task(t)
    er.observe(t.train_images[:8], t.train_labels[:8], 1)
    er.end_task(t)
    assert images_held(er)


def test_bad_options_are_rejected_with_one_line():
    with pytest.raises(ValueError, match="method abd: option lambda_kd must be a number >= 0"):
        AlwaysBeDreaming(net(), context(), lambda_kd=-1)
    with pytest.raises(ValueError, match="option local_ce must be true or false"):
        AlwaysBeDreaming(net(), context(), local_ce="maybe")
    with pytest.raises(ValueError, match="has no option 'temperature'"):
        AlwaysBeDreaming(net(), context(), temperature=2)
    with pytest.raises(ValueError, match="generator_steps must be an integer"):
        METHODS["deepinversion"](net(), context(), generator_steps=1.5)


# -- whole runs on the built-in digits ---------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_source("digits", progress=False)


def _scenario(digits):
    return build_scenario("seq-digits", source=digits, samples_per_task=120, progress=False)


def test_abd_resumes_with_the_same_results(digits, tmp_path):
    cfg = RunConfig(method="abd", backbone="resnet32", epochs=1, batch_size=16, samples_per_task=120, lr=0.05,
                    method_args=dict(generator_steps=10, generator_width=8, noise_dim=16))
    whole = engine.run(cfg, tmp_path / "whole", _scenario(digits), progress=False)
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False, stop_after_task=1)
    resumed = engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False)
    assert resumed["class_il"] == whole["class_il"] and resumed["task_il"] == whole["task_il"]
    a = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["learner"]
    b = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["learner"]
    for part in ("model", "previous", "image_generator"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    # one generator per task boundary (none after the last task); its bytes are the memory
    assert len(whole["synthesis_s_per_task"]) == 4 and all(s > 0 for s in whole["synthesis_s_per_task"])
    assert whole["synthesis_skipped_steps"] == 0
    # the collapse diagnostic: 256 samples labelled among the classes seen at each boundary
    counts = whole["synthesis_class_counts_per_task"]
    assert resumed["synthesis_class_counts_per_task"] == counts
    assert [len(c) for c in counts] == [2, 4, 6, 8] and all(sum(c.values()) == 256 for c in counts)
    assert whole["class_il"]["acc"] > 0 and all(math.isfinite(v) for v in whole["class_il"].values())
    assert whole["memory_bytes"] == sum(t.numel() * t.element_size() for t in b["image_generator"].values())


def test_bad_method_arg_is_a_config_error(digits):
    with pytest.raises(engine.ConfigError, match="--method-arg"):
        engine.run(RunConfig(method="abd", method_args={"lambda_ft": "x"}), None, _scenario(digits),
                   progress=False)


def test_omega_and_a_n():
    R = [[90.0, float("nan")], [40.0, 80.0]]
    assert metrics.final_accuracy_all_classes(R) == pytest.approx(60.0)
    assert metrics.final_accuracy_all_classes(R, task_sizes=[3, 1]) == pytest.approx((3 * 40 + 80) / 4)
    # Eq. 17 with one offline number: mean of A_{i,1:i} / A_offline
    assert metrics.omega(R, 90.0) == pytest.approx(100 * (90 / 90 + 60 / 90) / 2)
    assert metrics.omega(R, [90.0, 60.0]) == pytest.approx(100.0)
    with pytest.raises(ValueError):
        metrics.omega(R, 0.0)
    a = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)).numpy()
    assert metrics.mean_image_distance(a, a) == 0.0
    assert metrics.mean_image_distance(a, a + [2.0, 0, 0]) == pytest.approx(2.0 / a[:, 0].std(), rel=1e-6)
    dead = np.concatenate([a, np.zeros((200, 1))], 1)          # a constant reference feature is left out
    assert metrics.mean_image_distance(dead, dead + [0, 0, 0, 5.0]) == 0.0
