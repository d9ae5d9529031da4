import copy
import types

import pytest
import torch
import torch.nn.functional as F

from memdistill import engine
from memdistill.config import ConfigError, RunConfig
from memdistill.methods import METHODS, LearnerContext
from memdistill.nets import MLP


def ctx(glances):
    return LearnerContext(num_classes=4, num_tasks=2, input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,),
                          augment=False, device=torch.device("cpu"), lr=0.1, buffer=20, replay_batch_size=5,
                          glances=glances)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (6, 1, 4, 4), dtype=torch.uint8, generator=g), torch.randint(0, 4, (6,), generator=g)


def test_finetune_takes_one_step_per_glance_on_the_same_batch():
    torch.manual_seed(0)
    learner = METHODS["finetune"](MLP(16, 4, hidden=8), ctx(3))
    by_hand = copy.deepcopy(learner.model)
    opt = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    x, y = batch()
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(by_hand(x.float() / 255), y).backward()
        opt.step()
    learner.observe(x, y, 0)
    for a, b in zip(learner.model.parameters(), by_hand.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("method", ["er", "derpp", "agem"])
def test_replay_steps_per_glance_and_stores_the_batch_once(method):
    torch.manual_seed(0)
    learner = METHODS[method](MLP(16, 4, hidden=8), ctx(4))
    learner.begin_task(types.SimpleNamespace(index=0, classes=[0, 1, 2, 3]))
    steps = []
    original = learner.optimizer.step
    learner.optimizer.step = lambda *a, **k: (steps.append(1), original(*a, **k))[1]
    learner.observe(*batch(1), 0)
    learner.observe(*batch(2), 0)
    assert len(steps) == 8
    assert learner.buffer.seen == 12 and len(learner.buffer) == 12


def test_glances_are_checked_and_recorded(tmp_path):
    with pytest.raises(ConfigError, match="--glances: must be an integer >= 1"):
        engine.check(RunConfig(method="er", glances=0))
    with pytest.raises(ConfigError, match="--glances: method clser takes one step per stream batch; allowed with "
                                          "--glances: finetune, er, derpp, er-ace"):
        engine.check(RunConfig(method="clser", glances=2))
    one = engine.run(RunConfig(method="er", buffer=50, setting="online"), tmp_path / "one", progress=False)
    five = engine.run(RunConfig(method="er", buffer=50, setting="online", glances=5), tmp_path / "five",
                      progress=False)
    assert five["steps"] == one["steps"] and five["memory_bytes"] == one["memory_bytes"]
    assert "glances: 5" in (tmp_path / "five" / "config.yaml").read_text()
    assert five["class_il"] != one["class_il"]
