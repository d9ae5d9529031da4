import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical, Normal, kl_divergence

from memdistill.distill.inversion import (BatchNormStatistics, ImageGenerator, SynthesisWeights, batchnorm_kl,
                                          content_loss, gaussian_blur, label_diversity_loss, smoothness_prior,
                                          synthesis_loss, train_generator)
from memdistill.nets import Backbone


def frozen_net(seed=0) -> Backbone:
    """A tiny classifier with a BatchNorm2d and a BatchNorm1d whose running statistics are not (0, 1)."""
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 8 * 8, 5), nn.BatchNorm1d(5), nn.ReLU())
    net = Backbone(body, 5, 6)
    for bn in (body[1], body[5]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return net.eval()


def test_batchnorm_kl_is_the_gaussian_kl_of_eq5():
    g = torch.Generator().manual_seed(0)
    mu_hat, mu = torch.randn(7, generator=g), torch.randn(7, generator=g)
    var_hat, var = torch.rand(7, generator=g) + 0.1, torch.rand(7, generator=g) + 0.1
    # KL(N(mu, sigma^2) || N(mu_hat, sigma_hat^2)): the stored statistics first
    expected = kl_divergence(Normal(mu, var.sqrt()), Normal(mu_hat, var_hat.sqrt())).mean()
    assert batchnorm_kl(mu_hat, var_hat, mu, var, eps=0.0).item() == pytest.approx(expected.item(), rel=1e-5)
    assert batchnorm_kl(mu, var, mu, var).item() == pytest.approx(0.0, abs=1e-6)


def test_batchnorm_statistics_hooks_every_batchnorm_and_average_eq4():
    net = frozen_net()
    x = torch.randn(16, 1, 8, 8)
    with BatchNormStatistics(net) as stats:
        assert len(stats.layers) == 2
        net(x)
        loss = stats.loss()
    # direct computation, layer by layer
    body = net.body
    h1 = body[0](x)
    h2 = body[4](body[3](body[2](body[1](h1))))
    terms = []
    for h, bn, dims in [(h1, body[1], (0, 2, 3)), (h2, body[5], (0,))]:
        mean, var = h.mean(dims), h.var(dims, unbiased=False)
        terms.append(kl_divergence(Normal(bn.running_mean, bn.running_var.sqrt()), Normal(mean, var.sqrt())).mean())
    assert loss.item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-4)
    # hooks are gone afterwards
    assert all(not m._forward_hooks for m in net.modules())


def test_label_diversity_is_normalised_minus_entropy_of_mean_prediction():
    logits = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    mean = logits.softmax(1).mean(0)
    expected = 1 - Categorical(probs=mean).entropy() / math.log(4)
    assert label_diversity_loss(logits).item() == pytest.approx(expected.item(), rel=1e-5)
    # uniform use of the classes: 0; one class always: ~1
    assert label_diversity_loss(torch.eye(4).repeat(3, 1) * 50).item() == pytest.approx(0.0, abs=1e-5)
    assert label_diversity_loss(torch.tensor([[50.0, 0, 0, 0]] * 5)).item() == pytest.approx(1.0, abs=1e-5)


def test_content_loss_is_tempered_ce_against_argmax():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(2)) * 10
    T = 3.0
    logp = torch.log_softmax(logits / T, 1)
    expected = -logp[torch.arange(6), logits.argmax(1)].mean()
    assert content_loss(logits, T).item() == pytest.approx(expected.item(), rel=1e-5)


def test_smoothness_prior_against_a_direct_blur():
    x = torch.randn(2, 3, 6, 7, generator=torch.Generator().manual_seed(3))
    ax = np.arange(5) - 2
    k = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / 2.0)
    k /= k.sum()
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    blurred = np.zeros(x.shape)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            blurred[:, :, i, j] = (xp[:, :, i:i + 5, j:j + 5] * k).sum((2, 3))
    assert np.allclose(gaussian_blur(x).numpy(), blurred, atol=1e-5)
    assert smoothness_prior(x).item() == pytest.approx(float(((x.numpy() - blurred) ** 2).mean()), rel=1e-4)
    assert smoothness_prior(torch.ones(1, 3, 6, 6)).item() == pytest.approx(0.0, abs=1e-10)


def test_generator_shapes_and_sizes():
    g = ImageGenerator((3, 32, 32))
    assert g(torch.randn(2, 1000)).shape == (2, 3, 32, 32)
    # the reference CIFAR generator: 1000 -> 128x8x8 linear dominates (about 8.4 M parameters)
    assert 8.3e6 < sum(p.numel() for p in g.parameters()) < 8.5e6
    n_params = sum(p.numel() for p in g.parameters())
    assert g.nbytes == 4 * n_params + sum(b.numel() * b.element_size() for b in g.buffers())
    assert ImageGenerator((3, 64, 64), width=8).sample(2).shape == (2, 3, 64, 64)
    assert ImageGenerator((1, 8, 8), noise_dim=4, width=4).sample(3).shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        ImageGenerator((3, 30, 30))


def test_train_generator_lowers_eq7_and_leaves_the_model_alone():
    net = frozen_net()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(0)
    gen = ImageGenerator((1, 8, 8), noise_dim=16, width=8)
    weights = SynthesisWeights()

    def eq7():
        gen.train()
        total = 0.0
        for seed in range(4):
            with torch.no_grad():
                total += synthesis_loss(gen, net.eval(), [0, 1, 2], 32, weights,
                                        torch.Generator().manual_seed(seed))[0].item()
        return total / 4

    start = eq7()
    net.train()
    result = train_generator(gen, net, [0, 1, 2], steps=60, batch_size=32,
                             noise=torch.Generator().manual_seed(5), progress=False)
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert result["steps"] == 60 and result["synthesis_s"] > 0
    assert set(result) >= {"content", "diversity", "stat", "prior", "synth_loss"}
    assert not gen.training
    assert eq7() < 0.8 * start


def test_non_finite_steps_are_skipped_not_applied():
    net = frozen_net()
    with torch.no_grad():
        net.head.weight.fill_(3e38)           # logits overflow to inf
    gen = ImageGenerator((1, 8, 8), noise_dim=16, width=8)
    before = [p.clone() for p in gen.parameters()]
    result = train_generator(gen, net, [0, 1], steps=3, batch_size=8, progress=False)
    assert result["skipped_steps"] == 3
    assert all(torch.equal(a, b) for a, b in zip(before, gen.parameters()))
