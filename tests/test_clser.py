import io
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from memdistill.memory import MemoryBatch
from memdistill.methods import METHODS, LearnerContext, clser
from memdistill.methods.clser import CLSER
from memdistill.nets import Backbone, MLP

C = 5


def learner(model=None, epochs=1, **options) -> CLSER:
    torch.manual_seed(0)
    ctx = LearnerContext(num_classes=C, num_tasks=2, input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,),
                         augment=False, device=torch.device("cpu"), lr=0.1, batch_size=4,
                         replay_batch_size=4, buffer=20, seed=0, epochs=epochs)
    out = CLSER(model or MLP(16, C, hidden=8), ctx, **options)
    out.begin_task(types.SimpleNamespace(index=0, classes=list(range(C))))
    return out


def images(n, seed=0):
    return torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def params(net):
    return [p.detach().clone() for p in net.parameters()]


def test_registered_with_reference_defaults():
    assert METHODS["clser"] is CLSER
    assert CLSER.options == {"reg_weight": 0.15, "stable_decay": None, "stable_prob": 0.1,
                             "plastic_decay": None, "plastic_prob": 0.3}
    with pytest.raises(ValueError, match="stable_prob"):
        learner(stable_prob=1.5)


@pytest.mark.parametrize("epochs,decay", [(50, 0.999), (1, 0.95), (5, 0.99), (100, 0.9995)])
def test_decays_keep_the_reference_time_constant_in_epochs(epochs, decay):
    cls = learner(epochs=epochs)
    assert cls.opts["stable_decay"] == pytest.approx(decay) and cls.opts["plastic_decay"] == pytest.approx(decay)
    given = learner(epochs=epochs, stable_decay=0.5)
    assert given.opts["stable_decay"] == 0.5 and given.opts["plastic_decay"] == pytest.approx(decay)


def test_ema_warm_up_and_decay():
    cls = learner(stable_prob=1.0, plastic_prob=1.0, stable_decay=0.9, plastic_decay=0.999)
    ema0, net0 = params(cls.stable), params(cls.model)
    x, y = images(4), torch.tensor([0, 1, 2, 3])
    cls.observe(x, y, 0)                     # step 1: decay min(1 - 1/2, .) = 0.5
    for e0, e, p in zip(ema0, cls.stable.parameters(), cls.model.parameters()):
        assert torch.allclose(e, 0.5 * e0 + 0.5 * p, atol=1e-6)
    for _ in range(30):                      # later: min(1 - 1/(t+1), 0.9) = 0.9
        cls.observe(x, y, 0)
    e_before, p_now = params(cls.stable), params(cls.model)
    cls.update_memory(x, y, 0, torch.zeros(4, C))
    for e0, e, p in zip(e_before, cls.stable.parameters(), p_now):
        assert torch.allclose(e, 0.9 * e0 + 0.1 * p, atol=1e-6)


def test_update_probabilities(monkeypatch):
    cls = learner(stable_prob=0.1, plastic_prob=0.6)
    counts = {"stable": 0, "plastic": 0}

    def count(ema, model, decay):
        counts["stable" if ema is cls.stable else "plastic"] += 1
    monkeypatch.setattr(clser, "ema_update", count)
    x, y = images(4), torch.tensor([0, 1, 2, 3])
    n = 2000
    for _ in range(n):
        cls.update_memory(x, y, 0, torch.zeros(4, C))
    # binomial: 6 standard deviations
    assert abs(counts["stable"] - 0.1 * n) < 6 * (n * 0.1 * 0.9) ** 0.5
    assert abs(counts["plastic"] - 0.6 * n) < 6 * (n * 0.6 * 0.4) ** 0.5


def test_batch_norm_statistics_are_not_averaged():
    body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU())
    cls = learner(Backbone(body, 8, C), stable_prob=1.0, plastic_prob=1.0)
    x, y = images(4), torch.tensor([0, 1, 2, 3])
    for _ in range(3):
        cls.observe(x, y, 0)
    # the working model's BN statistics moved; the EMA models keep those of their own forwards
    assert not torch.allclose(cls.model.body[2].running_mean, cls.stable.body[2].running_mean)


def test_consistency_target_is_the_ema_model_more_confident_in_the_true_label():
    cls = learner()
    with torch.no_grad():
        for net, biases in [(cls.stable, {1: 3.0}), (cls.plastic, {2: 3.0, 0: 1.0})]:
            net.head.weight.zero_()
            net.head.bias.zero_()
            for k, v in biases.items():
                net.head.bias[k] = v
    x = torch.rand(3, 1, 4, 4)
    targets = cls.ema_targets(x, torch.tensor([1, 2, 0]))
    stable, plastic = cls.stable(x), cls.plastic(x)
    assert torch.allclose(targets, torch.stack([stable[0], plastic[1], plastic[2]]))


def test_loss_on_a_hand_made_batch():
    cls = learner(reg_weight=0.4)
    x = torch.rand(6, 1, 4, 4)               # 4 stream + 2 memory samples
    logits = cls.forward(x)
    labels = torch.tensor([0, 1, 2, 3])
    batch = MemoryBatch(images(2), torch.tensor([4, 1]), torch.zeros(2, dtype=torch.long), torch.arange(2))
    loss = cls.stream_loss(logits[:4], labels) + cls.memory_loss(logits[4:], batch)
    ema = cls.ema_targets(x[4:], batch.labels)
    expected = F.cross_entropy(logits, torch.cat([labels, batch.labels])) + 0.4 * F.mse_loss(logits[4:], ema)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_stable_model_predicts_and_state_round_trips():
    cls = learner()
    with torch.no_grad():
        cls.stable.head.bias.fill_(0.0)
        cls.stable.head.bias[3] = 100.0
    assert torch.all(cls.predict(images(5)).argmax(1) == 3)
    assert cls.stable.training                         # restored after predicting
    cls.global_step = 7
    buf = io.BytesIO()
    torch.save(cls.state_dict(), buf)
    other = learner()
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert other.global_step == 7 and torch.all(other.predict(images(5)).argmax(1) == 3)
    two_nets = 2 * sum(p.numel() * 4 for p in cls.model.parameters())
    assert cls.memory_nbytes == cls.buffer.nbytes + two_nets
