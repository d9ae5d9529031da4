import types

import torch
import torch.nn.functional as F

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.data.scenarios import build_scenario
from memdistill.memory import MemoryBatch
from memdistill.methods import METHODS, LearnerContext
from memdistill.methods.derpp import DERpp
from memdistill.nets import MLP
from tests.conftest import make_source

C = 6


def learner(**options) -> DERpp:
    torch.manual_seed(0)
    ctx = LearnerContext(num_classes=C, num_tasks=3, input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,),
                         augment=False, device=torch.device("cpu"), lr=0.1, batch_size=4,
                         replay_batch_size=4, buffer=20, seed=0)
    out = DERpp(MLP(16, C, hidden=8), ctx, **options)
    out.begin_task(types.SimpleNamespace(index=0, classes=list(range(C))))
    return out


def images(n, seed):
    return torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_registered_with_paper_defaults():
    assert METHODS["derpp"] is DERpp
    assert DERpp.options == {"alpha": 0.1, "beta": 0.5}


def test_memory_loss_on_a_hand_made_batch():
    der = learner(alpha=0.3, beta=0.7)
    stored = torch.randn(4, C)
    labels = torch.tensor([1, 2, 3, 4])
    batch = MemoryBatch(images(4, 0), labels, torch.zeros(4, dtype=torch.long), torch.arange(4),
                        {"logits": stored})
    logits = torch.randn(4, C)
    # first half: logit matching; second half: CE with labels
    expected = 0.3 * ((logits[:2] - stored[:2]) ** 2).mean() \
        + 0.7 * -torch.log_softmax(logits[2:], 1)[[0, 1], [3, 4]].mean()
    assert torch.allclose(der.memory_loss(logits, batch), expected, atol=1e-6)


def test_two_independent_draws_with_their_logits():
    der = learner()
    der.buffer.add(images(10, 1), torch.arange(10) % C, 0, der.generator, extras={"logits": torch.randn(10, C)})
    batch = der.sample_memory()
    assert len(batch) == 8
    for half in (batch.indices[:4], batch.indices[4:]):
        assert len(set(half.tolist())) == 4            # each draw without replacement
    assert torch.equal(batch.extras["logits"], der.buffer.extras["logits"][batch.indices])
    assert torch.equal(batch.labels, der.buffer.labels[batch.indices])


def test_observe_stores_pre_step_logits_and_matches_the_direct_loss():
    a, b = learner(), learner()
    x1, y1 = images(4, 2), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        before = a.model(a.preprocess(x1, train=False))
    a.observe(x1, y1, 0)
    assert torch.allclose(a.buffer.extras["logits"][:4], before, atol=1e-6)
    # second step: the same learner built twice; b's loss computed by hand
    b.observe(x1, y1, 0)
    x2, y2 = images(4, 3), torch.tensor([4, 5, 0, 1])
    out = a.observe(x2, y2, 0)
    batch = b.sample_memory()
    z = b.model(b.preprocess(torch.cat([x2, batch.images]), train=False))
    expected = F.cross_entropy(z[:4], y2) + 0.1 * F.mse_loss(z[4:8], batch.extras["logits"][:4]) \
        + 0.5 * F.cross_entropy(z[8:], batch.labels[4:])
    assert torch.allclose(out["loss"], expected, atol=1e-5)


def test_short_run():
    summary = engine.run(RunConfig(method="derpp", buffer=30, epochs=1), None,
                         build_scenario("seq-digits", source=make_source(), progress=False), progress=False)
    assert summary["memory_bytes"] == 30 * (64 + 8 + 8 + 4 * 10)   # images, label, task, logits
    assert 0 <= summary["class_il"]["acc"] <= 100
