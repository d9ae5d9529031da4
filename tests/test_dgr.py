import math

import pytest
import torch
import torch.nn.functional as F

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.methods import METHODS
from memdistill.methods.dgr import DeepGenerativeReplay
from memdistill.nets.vae import ReplayVAE
from tests.test_abd import SHAPE, _scenario, context, digits, net, task  # noqa: F401  (dgr's no-data check is in test_abd)

SMALL = dict(vae_width=4, vae_z=8)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_vae_decodes_images_in_the_unit_interval_at_the_input_size(shape):
    vae = ReplayVAE(shape, width=4, z_dim=8)
    x = vae.sample(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, *shape) and x.min() >= 0 and x.max() <= 1
    assert vae.nbytes == 4 * sum(p.numel() for p in vae.parameters())
    with pytest.raises(ValueError, match="at least 8x8"):
        ReplayVAE((1, 4, 4))


def test_vae_loss_against_a_direct_computation():
    torch.manual_seed(0)
    vae = ReplayVAE(SHAPE, width=4, z_dim=8)
    x = torch.rand(6, *SHAPE)
    w = torch.tensor([1.0, 0.5, 0.5, 1.0, 0.2, 0.8])
    recon, kl = vae.loss(x, w, torch.Generator().manual_seed(3))
    # the same noise, by hand
    mu, logvar = vae.encode(x)
    z = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(3)) * torch.exp(logvar / 2)
    p = vae.decode_logits(z).sigmoid()
    bce = -(x * p.log() + (1 - x) * (1 - p).log()).mean((1, 2, 3))
    assert recon.item() == pytest.approx((bce * w).mean().item(), rel=1e-4)
    direct_kl = 0.5 * (mu ** 2 + logvar.exp() - 1 - logvar).sum(1).mean() / 64
    assert kl.item() == pytest.approx(direct_kl.item(), rel=1e-5)


def dgr_in_second_task(**options) -> DeepGenerativeReplay:
    """A DGR learner that finished task 0 (classes 0, 1) and began task 1 (classes 2, 3)."""
    torch.manual_seed(0)
    learner = DeepGenerativeReplay(net(), context(), **{**SMALL, **options})
    t0 = task(0, [0, 1])
    learner.begin_task(t0)
    learner.observe(t0.train_images[:8], t0.train_labels[:8], 0)
    learner.end_task(t0)
    learner.begin_task(task(1, [2, 3]))
    return learner


def test_replay_is_decoded_by_the_previous_vae_and_labelled_with_old_classes():
    learner = dgr_in_second_task()
    x, y, previous_logits = learner.replay_batch(16)
    assert x.shape == (16, *SHAPE) and set(y.tolist()) <= {0, 1}
    assert previous_logits.shape == (16, 2) and torch.equal(y, previous_logits.argmax(1))
    # in pixel space the replay is what the frozen VAE decodes
    assert 0 <= learner.to_pixels(x).min() and learner.to_pixels(x).max() <= 1
    assert all(not p.requires_grad for p in learner.previous_vae.parameters())


def test_a_step_weighs_old_and_new_classes_and_trains_classifier_and_vae():
    learner = dgr_in_second_task()
    w = learner.balancing_weights()
    assert w[[0, 1]].tolist() == [0.5, 0.5] and w[[2, 3]].tolist() == [0.5, 0.5]
    # the step's loss: the weighted CE on real + replayed samples, plus the replay's
    # soft-target CE against the previous classifier over the old classes at T = 2
    t = task(1, [2, 3])
    state = torch.get_rng_state(), learner.generator.get_state()
    images, labels = t.train_images[:8], t.train_labels[:8]
    x = learner.preprocess(images, learner.generator)
    x_replay, y_replay, previous_logits = learner.replay_batch(8)
    x, y = torch.cat([x, x_replay]), torch.cat([labels, y_replay])
    with torch.no_grad():
        logits = learner.forward(x)
        ce = (F.cross_entropy(learner.seen_mask(logits), y, reduction="none") * w[y]).mean()
        q = F.softmax(previous_logits / 2, dim=1)
        kd = -(q * F.log_softmax(logits[8:, :2] / 2, dim=1)).sum(1).mean()
    torch.set_rng_state(state[0])
    learner.generator.set_state(state[1])
    vae_before = [p.clone() for p in learner.vae.parameters()]
    previous_before = [p.clone() for p in learner.previous_vae.parameters()]
    losses = learner.observe(images, labels, 1)
    assert losses["ce"] == pytest.approx(ce.item(), rel=1e-5) and losses["kd"] == pytest.approx(kd.item(), rel=1e-5)
    assert losses["loss"] == pytest.approx(ce.item() + kd.item(), rel=1e-5)
    assert losses["vae_recon"] > 0 and losses["vae_kl"] >= 0
    assert any(not torch.equal(a, b) for a, b in zip(vae_before, learner.vae.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(previous_before, learner.previous_vae.parameters()))


def test_bad_options_are_rejected_with_one_line():
    with pytest.raises(ValueError, match="method dgr: option vae_width must be an integer"):
        METHODS["dgr"](net(), context(), vae_width=2.5)
    with pytest.raises(ValueError, match="option vae_lr must be a positive number"):
        METHODS["dgr"](net(), context(), vae_lr=0)
    with pytest.raises(ValueError, match="option balance must be true or false"):
        METHODS["dgr"](net(), context(), balance="yes")
    with pytest.raises(ValueError, match="option vae_optimizer must be adam or sgd"):
        METHODS["dgr"](net(), context(), vae_optimizer="rmsprop")


def test_the_public_codes_vae_optimiser_takes_the_classifiers_settings():
    learner = DeepGenerativeReplay(net(), context(lr=0.05, momentum=0.9), vae_optimizer="sgd", **SMALL)
    group = learner.vae_optimizer.param_groups[0]
    assert isinstance(learner.vae_optimizer, torch.optim.SGD) and (group["lr"], group["momentum"]) == (0.05, 0.9)


def test_dgr_run_resumes_with_the_same_results_and_counts_the_vae(digits, tmp_path):
    cfg = RunConfig(method="dgr", backbone="mlp", epochs=1, batch_size=16, samples_per_task=120, lr=0.05,
                    method_args=SMALL)
    whole = engine.run(cfg, tmp_path / "whole", _scenario(digits), progress=False)
    with pytest.raises(engine.Interrupted):
        engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False, stop_after_task=1)
    resumed = engine.run(cfg, tmp_path / "cut", _scenario(digits), progress=False)
    assert resumed["class_il"] == whole["class_il"]
    b = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["learner"]
    assert whole["memory_bytes"] == sum(t.numel() * t.element_size() for t in b["vae"].values())
    assert whole["memory_bytes_detail"] == {"generator": whole["memory_bytes"]}
    assert whole["class_il"]["acc"] > 0 and all(math.isfinite(v) for v in whole["class_il"].values())
