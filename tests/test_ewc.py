import types

import pytest
import torch
import torch.nn.functional as F

from memdistill.methods import METHODS, LearnerContext
from memdistill.methods.ewc import EWC
from memdistill.nets import MLP

C = 4


def learner(**options) -> EWC:
    torch.manual_seed(0)
    ctx = LearnerContext(num_classes=C, num_tasks=3, input_shape=(1, 4, 4), mean=(0.0,), std=(255.0,),
                         augment=False, device=torch.device("cpu"), lr=0.1)
    return EWC(MLP(16, C, hidden=8), ctx, **options)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=g),
            torch.randint(0, C, (n,), generator=g))


def test_registered_and_options_checked():
    assert METHODS["ewc"] is EWC
    for bad, match in [({"ewc_lambda": -1}, "ewc_lambda"), ({"fisher_samples": 0}, "fisher_samples"),
                       ({"fisher": "exact"}, "fisher must be one of sampled, empirical")]:
        with pytest.raises(ValueError, match=match):
            learner(**bad)


def test_empirical_fisher_is_the_mean_squared_per_sample_gradient():
    ewc = learner(fisher="empirical")
    x, y = data(70, 1)                     # more than one chunk of 64
    fisher = ewc.estimate_fisher(x, y)
    expected = {k: torch.zeros_like(p) for k, p in ewc.model.named_parameters()}
    for i in range(len(y)):
        ewc.model.zero_grad()
        logits = ewc.model(ewc.preprocess(x[i: i + 1], train=False))
        F.log_softmax(logits, 1)[0, y[i]].backward()
        for k, p in ewc.model.named_parameters():
            expected[k] += p.grad ** 2 / len(y)
    for k in expected:
        assert torch.allclose(fisher[k], expected[k], rtol=1e-4, atol=1e-7), k


def test_sampled_fisher_follows_the_model_not_the_labels():
    ewc = learner()
    with torch.no_grad():
        ewc.model.head.bias.copy_(torch.tensor([30.0, 0.0, 0.0, 0.0]))   # the model is sure of class 0
    x, _ = data(40, 2)
    wrong = torch.full((40,), 3)
    sampled = ewc.estimate_fisher(x, wrong)
    empirical = learner(fisher="empirical")
    empirical.model.load_state_dict(ewc.model.state_dict())
    told = empirical.estimate_fisher(x, wrong)
    assert sum(f.sum() for f in sampled.values()) < 1e-6 * sum(f.sum() for f in told.values())


def test_penalty_fisher_accumulation_and_bytes():
    ewc = learner(ewc_lambda=2.0, gamma=0.5, fisher_samples=30)
    ewc.begin_task(types.SimpleNamespace(index=0, classes=[0, 1, 2, 3]))
    assert ewc.penalty().item() == 0 and ewc.memory_nbytes == 0
    for seed in range(5):
        ewc.observe(*data(10, seed), 0)
    assert sum(len(y) for y in ewc.kept_labels) == 30          # only the first 30 stream samples
    kept = torch.cat(ewc.kept_images), torch.cat(ewc.kept_labels)
    state = torch.get_rng_state(), ewc.generator.get_state()
    first = ewc.estimate_fisher(*kept)
    ewc.generator.set_state(state[1])
    ewc.end_task(None)
    assert all(torch.equal(ewc.fisher[k], first[k]) for k in first) and not ewc.kept_labels
    params = sum(p.numel() for p in ewc.model.parameters())
    assert ewc.memory_nbytes == 2 * 4 * params
    assert set(ewc.memory_detail) == {"fisher", "anchor weights"}

    with torch.no_grad():
        for p in ewc.model.parameters():
            p.add_(0.1)
    by_hand = 0.5 * 2.0 * sum((first[k] * 0.01).sum() for k in first)
    assert torch.allclose(ewc.penalty(), by_hand, rtol=1e-5)

    ewc.begin_task(types.SimpleNamespace(index=1, classes=[0, 1, 2, 3]))
    ewc.observe(*data(10, 9), 1)
    generator_state = ewc.generator.get_state()
    second = ewc.estimate_fisher(torch.cat(ewc.kept_images), torch.cat(ewc.kept_labels))
    ewc.generator.set_state(generator_state)
    ewc.end_task(None)
    for k in first:
        assert torch.allclose(ewc.fisher[k], 0.5 * first[k] + second[k])
        assert torch.equal(ewc.anchor[k], dict(ewc.model.named_parameters())[k].detach())


def test_the_penalty_holds_the_weights_near_the_anchor():
    def drift(ewc_lambda):
        ewc = learner(ewc_lambda=ewc_lambda, fisher="empirical")
        ewc.begin_task(types.SimpleNamespace(index=0, classes=[0, 1]))
        x0, y0 = data(40, 3)
        for _ in range(20):
            ewc.observe(x0, y0 % 2, 0)
        ewc.end_task(None)
        ewc.begin_task(types.SimpleNamespace(index=1, classes=[2, 3]))
        x1, y1 = data(40, 4)
        for _ in range(20):
            ewc.observe(x1, 2 + y1 % 2, 1)
        return sum(((p - ewc.anchor[k]) ** 2 * ewc.fisher[k]).sum().item()
                   for k, p in ewc.model.named_parameters())
    assert drift(5.0) < 0.5 * drift(0.0)


def test_a_diverging_penalty_says_what_to_lower():
    ewc = learner(ewc_lambda=1e6, fisher="empirical")
    ewc.begin_task(types.SimpleNamespace(index=0, classes=[0, 1, 2, 3]))
    x, y = data(20, 5)
    ewc.observe(x, y, 0)
    ewc.end_task(None)
    ewc.begin_task(types.SimpleNamespace(index=1, classes=[0, 1, 2, 3]))
    with pytest.raises(FloatingPointError, match="lower ewc_lambda, --lr or gamma"):
        for _ in range(50):
            ewc.observe(*data(20, 6), 1)


def test_fisher_of_a_batch_norm_network_under_bf16_is_finite_and_in_fp32():
    from memdistill.nets import build_backbone
    ctx = LearnerContext(num_classes=C, num_tasks=2, input_shape=(3, 8, 8), mean=(0.0,) * 3, std=(255.0,) * 3,
                         augment=False, device=torch.device("cpu"), precision="bf16")
    ewc = EWC(build_backbone("reduced-resnet18", (3, 8, 8), C), ctx)
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    fisher = ewc.estimate_fisher(x, torch.zeros(5, dtype=torch.long))
    assert all(f.dtype == torch.float32 and torch.isfinite(f).all() for f in fisher.values())
    assert any(f.sum() > 0 for f in fisher.values())
    assert ewc.model.training                      # put back in training mode
