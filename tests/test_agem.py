import copy
import types

import pytest
import torch
import torch.nn.functional as F

from memdistill.config import ConfigError, RunConfig
from memdistill.engine import check
from memdistill.methods import METHODS, LearnerContext
from memdistill.methods.agem import AGEM, project_gradient
from memdistill.nets import MLP

C = 4


def learner(reference="past", capacity=10, replay=10) -> AGEM:   # replay: the reference batch
    torch.manual_seed(0)
    ctx = LearnerContext(num_classes=C, num_tasks=3, input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,),
                         augment=False, device=torch.device("cpu"), buffer=capacity, lr=0.1)
    return AGEM(MLP(16, C, hidden=8), ctx, reference=reference, reference_batch=replay)


def images(n, seed):
    return torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_registered_and_checked():
    assert METHODS["agem"] is AGEM
    with pytest.raises(ValueError, match="reference must be one of past, all"):
        learner(reference="future")
    with pytest.raises(ValueError, match="reference_batch must be an integer >= 1"):
        learner(replay=0)
    with pytest.raises(ConfigError, match="--plugin: plugin ddn needs a replay method that takes plug-ins"):
        check(RunConfig(method="agem", buffer=10, plugin="ddn"))


def test_projection_removes_only_the_conflicting_component():
    g_ref = torch.tensor([1.0, 0.0, 0.0])
    agreeing = torch.tensor([0.5, 2.0, -1.0])
    assert project_gradient(agreeing, g_ref) is agreeing
    conflicting = torch.tensor([-3.0, 2.0, -1.0])
    projected = project_gradient(conflicting, g_ref)
    assert torch.allclose(projected, torch.tensor([0.0, 2.0, -1.0]))
    g_ref = torch.randn(50)
    g = -g_ref + 0.1 * torch.randn(50)
    projected = project_gradient(g, g_ref)
    assert abs(torch.dot(projected, g_ref)) < 1e-4 * g_ref.norm() * g.norm()
    assert torch.allclose(g - projected, (torch.dot(g, g_ref) / torch.dot(g_ref, g_ref)) * g_ref)


def test_reference_batch_holds_only_earlier_tasks():
    agem = learner(capacity=8, replay=8)
    agem.begin_task(types.SimpleNamespace(index=0, classes=[0, 1]))
    assert agem.reference_batch() is None                       # nothing stored
    agem.buffer.add(images(4, 1), torch.tensor([0, 1, 0, 1]), 0, agem.generator)
    assert agem.reference_batch() is None                       # only the current task's
    agem.begin_task(types.SimpleNamespace(index=1, classes=[2, 3]))
    agem.buffer.add(images(4, 2), torch.tensor([2, 3, 2, 3]), 1, agem.generator)
    batch = agem.reference_batch()
    assert len(batch) == 4 and torch.all(batch.tasks == 0)
    everything = learner(reference="all", capacity=8, replay=8)
    everything.buffer = agem.buffer
    everything.current_task = 1
    assert len(everything.reference_batch()) == 8


def test_step_applies_the_projected_gradient():
    agem = learner()
    agem.begin_task(types.SimpleNamespace(index=0, classes=[0, 1]))
    past_x, past_y = images(10, 3), torch.tensor([0, 1] * 5)
    agem.buffer.add(past_x, past_y, 0, agem.generator)
    agem.begin_task(types.SimpleNamespace(index=1, classes=[2, 3]))
    x, y = images(6, 4), torch.tensor([2, 3, 2, 3, 2, 3])

    reference = copy.deepcopy(agem.model)
    params = list(reference.parameters())

    def flat(loss):
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
    g = flat(F.cross_entropy(reference(agem.preprocess(x, train=False)), y))
    g_ref = flat(F.cross_entropy(reference(agem.preprocess(past_x, train=False)), past_y))
    expected = project_gradient(g, g_ref)
    before = torch.cat([p.detach().flatten() for p in agem.model.parameters()])
    agem.observe(x, y, 1)
    after = torch.cat([p.detach().flatten() for p in agem.model.parameters()])
    assert torch.allclose(before - after, 0.1 * expected, atol=1e-6)
    assert agem.projections + agem.steps >= 1
    assert len(agem.buffer) == 10      # the stream batch was offered to memory after the step


def test_the_step_does_not_raise_the_memory_loss_to_first_order():
    agem = learner()
    agem.begin_task(types.SimpleNamespace(index=0, classes=[0, 1]))
    past_x, past_y = images(10, 5), torch.tensor([0, 1] * 5)
    for _ in range(30):                        # learn task 0 so that task 1 conflicts with it
        agem.observe(past_x, past_y, 0)
    agem.buffer = type(agem.buffer)(100, (1, 4, 4), {}, "cpu")   # room for the stream: the past stays
    agem.buffer.add(past_x, past_y, 0, agem.generator)
    agem.begin_task(types.SimpleNamespace(index=1, classes=[2, 3]))
    memory_loss = lambda: F.cross_entropy(agem.model(agem.preprocess(past_x, train=False)), past_y).item()  # noqa: E731
    agem.optimizer.param_groups[0]["lr"] = 1e-3          # small steps: first order rules
    rises = []
    for seed in range(5):
        before = memory_loss()
        agem.observe(images(6, 10 + seed), torch.tensor([2, 3] * 3), 1)
        rises.append(memory_loss() - before)
    assert agem.projections > 0
    assert max(rises) < 1e-5
