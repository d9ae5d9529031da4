import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from memdistill.cli import main
from memdistill.distill.bptt import INNER_SAMPLINGS, inner_minibatch
from memdistill.distill import (AddressableMemory, BPTTConfig, BPTTDistiller, MemoryFileError, MomentumUnroll,
                                SyntheticImages, HeldOutImages, TrainSchedule, addressable_budget, evaluate_dataset,
                                load_memory)
from memdistill.distill.augment import flip_rotate, random_crop_scale_rotate
from memdistill.distill.evaluate import train_fresh_network
from memdistill.nets import ConvNet, MLP

from conftest import make_source


# -- memories: recall (Eq. 2) -------------------------------------------------------

def _small_memory(downsample=1):
    g = torch.Generator().manual_seed(0)
    bases = torch.randn(2, 1, 2, 2, generator=g)                  # K = 2
    addressing = torch.randn(3, 4, 2, generator=g)                 # r = 3, d_y = 4
    shape = (1, 2 * downsample, 2 * downsample)
    return AddressableMemory(bases, addressing, shape, downsample), bases, addressing


def test_recall_is_eq2_by_hand():
    memory, bases, A = _small_memory()
    images, labels = memory.recall([1, 3])
    assert images.shape == (2 * 3, 1, 2, 2)
    assert labels.tolist() == [1, 1, 1, 3, 3, 3]
    for n, y in enumerate([1, 3]):
        for i in range(3):
            # x'_i = y^T A_i [b_0; b_1]^T with one-hot y: row y of A_i combines the bases.
            expected = A[i, y, 0] * bases[0] + A[i, y, 1] * bases[1]
            torch.testing.assert_close(images[n * 3 + i], expected)


def test_recall_with_a_soft_query_is_linear_in_y():
    memory, _, _ = _small_memory()
    y = torch.tensor([[0.25, 0.75, 0.0, 0.0]])
    out = memory.recall_queries(y)[0]
    a, _ = memory.recall([0])
    b, _ = memory.recall([1])
    torch.testing.assert_close(out, 0.25 * a + 0.75 * b)


def test_downsampled_bases_are_upsampled_bilinearly_on_recall():
    memory, bases, A = _small_memory(downsample=2)
    images, _ = memory.recall([2])
    assert images.shape == (3, 1, 4, 4)
    small = A[0, 2, 0] * bases[0] + A[0, 2, 1] * bases[1]
    expected = F.interpolate(small[None], size=(4, 4), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(images[0], expected)
    assert memory.nbytes == 4 * (2 * 1 * 2 * 2 + 3 * 4 * 2)


def test_synthetic_images_recall_by_class_and_count_their_bytes():
    g = torch.Generator().manual_seed(0)
    memory = SyntheticImages.random((1, 4, 4), ipc=2, num_classes=3, generator=g)
    images, labels = memory.recall([2, 0])
    assert sorted(labels.tolist()) == [0, 0, 2, 2]
    assert images.shape == (4, 1, 4, 4)
    assert memory.nbytes == 6 * 16 * 4 + 6 * 8


# -- budget (Eq. 4) ---------------------------------------------------------------------

@pytest.mark.parametrize("ipc,classes,shape,bases,ds,recalls", [
    (1, 10, (1, 28, 28), 16, 2, 29),      # (7840 - 16*196) // 160
    (1, 10, (3, 32, 32), 16, 2, 115),     # the public code's CIFAR-10 IPC 1 setting
    (10, 10, (1, 28, 28), 32, 1, 166),
    (1, 10, (1, 28, 28), 32, 2, 4),
])
def test_budget_fills_the_image_bytes_of_eq4(ipc, classes, shape, bases, ds, recalls):
    b = addressable_budget(ipc, classes, shape, bases, ds)
    c, h, w = shape
    image_floats = ipc * classes * c * h * w
    assert b.recalls == recalls
    assert b.budget_floats == image_floats
    # size(bases) + size(addressing) <= size(images), and within one addressing matrix of it
    assert image_floats - classes * bases < b.floats <= image_floats
    memory = AddressableMemory.initialise(shape, classes, b.num_bases, b.recalls, ds, torch.Generator())
    assert memory.nbytes == b.nbytes


def test_budget_refuses_more_bases_than_fit():
    with pytest.raises(ValueError, match="at most"):
        addressable_budget(1, 10, (1, 28, 28), 100, 2)


def test_real_initialisation_recalls_real_images_of_the_right_class():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(2)
    images = torch.randn(6, 1, 4, 4, generator=g)
    memory = AddressableMemory.from_real(images, labels, 3, num_bases=6, recalls=2, downsample=1,
                                         generator=g, jitter=0.0)
    x, y = memory.recall([1])
    for img in x:
        assert any(torch.allclose(img, images[j]) for j in range(6) if labels[j] == 1)


# -- file round trip ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["images", "addressable"])
def test_memory_round_trips_through_a_weights_only_file(tmp_path, kind):
    g = torch.Generator().manual_seed(0)
    if kind == "images":
        memory = SyntheticImages.random((1, 4, 4), 2, 3, g, mean=(0.5,), std=(0.2,))
    else:
        memory = AddressableMemory.initialise((1, 4, 4), 3, 4, 2, 2, g, mean=(0.5,), std=(0.2,))
    path = memory.save(tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "memdistill.memory" and raw["kind"] == kind
    loaded = load_memory(path)
    assert type(loaded) is type(memory) and loaded.nbytes == memory.nbytes
    assert loaded.mean == (0.5,) and loaded.std == (0.2,)
    a, la = memory.dataset()
    b, lb = loaded.dataset()
    torch.testing.assert_close(a, b)
    assert torch.equal(la, lb)


def test_loading_something_else_is_a_clear_error(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(MemoryFileError, match="not a memdistill memory file"):
        load_memory(tmp_path / "x.pt")
    (tmp_path / "y.pt").write_text("hello")
    with pytest.raises(MemoryFileError, match="not a readable memory file"):
        load_memory(tmp_path / "y.pt")


# -- BPTT through momentum SGD (Alg. 1) ------------------------------------------------

def _tiny_problem():
    torch.manual_seed(0)
    net = ConvNet(1, 8, 3, width=4, depth=2).double()   # conv -> instance norm -> ReLU(inplace) -> pool
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    rx = torch.randn(9, 1, 8, 8, generator=g, dtype=torch.float64)
    ry = torch.tensor([0, 1, 2] * 3)
    batches = [torch.randperm(6, generator=g)[:4] for _ in range(7)]
    theta0 = {n: p.detach() for n, p in net.named_parameters()}
    return net, x, y, rx, ry, batches, theta0


def _naive_unrolled_gradient(net, theta0, x, y, batches, rx, ry, lr, momentum):
    """Autograd through the explicitly unrolled loop (whole graph kept): the outer loss,
    its gradient to the images and to the inner learning rate."""
    xs = x.clone().requires_grad_()
    alpha = torch.tensor(lr, dtype=torch.float64, requires_grad=True)
    theta = {n: v.clone().requires_grad_() for n, v in theta0.items()}
    m = {n: torch.zeros_like(v) for n, v in theta.items()}
    for idx in batches:
        loss = F.cross_entropy(functional_call(net, theta, (xs[idx],)), y[idx])
        grads = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
        m = {n: momentum * m[n] + gr for n, gr in zip(theta, grads)}
        theta = {n: theta[n] - alpha * m[n] for n in theta}
    outer = F.cross_entropy(functional_call(net, theta, (rx,)), ry)
    d_x, d_lr = torch.autograd.grad(outer, (xs, alpha))
    return outer.item(), d_x, float(d_lr)


@pytest.mark.parametrize("momentum,checkpoint_every", [(0.9, None), (0.9, 1), (0.9, 3), (0.9, 7), (0.0, 2)])
def test_bptt_gradient_equals_autograd_through_the_unrolled_loop(momentum, checkpoint_every):
    net, x, y, rx, ry, batches, theta0 = _tiny_problem()
    unroll = MomentumUnroll(net, lr=0.1, momentum=momentum, checkpoint_every=checkpoint_every)
    result = unroll.hypergradient(theta0, x, y, batches, rx, ry)
    loss, expected, _ = _naive_unrolled_gradient(net, theta0, x, y, batches, rx, ry, 0.1, momentum)
    assert result.outer_loss == pytest.approx(loss, rel=1e-12)
    assert expected.abs().max() > 1e-4                       # the gradient is not trivially zero
    torch.testing.assert_close(result.grad_images, expected, rtol=1e-9, atol=1e-12)


def test_bptt_runs_through_batch_norm_with_batch_statistics():
    """reduced-resnet18 has batch norm: the unroll normalises with batch statistics (the
    exact gradient of that loop) and leaves the network's running averages untouched."""
    from memdistill.nets import build_backbone
    from memdistill.nets.base import batch_statistics
    torch.manual_seed(0)
    net = build_backbone("reduced-resnet18", (3, 8, 8), 3).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    rx = torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64)
    batches = [torch.randperm(6, generator=g)[:4] for _ in range(3)]
    theta0 = {n: p.detach() for n, p in net.named_parameters()}
    before = {n: b.clone() for n, b in net.named_buffers()}
    result = MomentumUnroll(net, lr=0.05, momentum=0.9, checkpoint_every=2).hypergradient(
        theta0, x, y, batches, rx, y)
    with batch_statistics(net):
        loss, expected, _ = _naive_unrolled_gradient(net, theta0, x, y, batches, rx, y, 0.05, 0.9)
    assert result.outer_loss == pytest.approx(loss, rel=1e-10)
    torch.testing.assert_close(result.grad_images, expected, rtol=1e-7, atol=1e-10)
    for n, b in net.named_buffers():
        assert torch.equal(b, before[n]), n


def test_bptt_gradient_matches_finite_differences():
    net, x, y, rx, ry, batches, theta0 = _tiny_problem()
    unroll = MomentumUnroll(net, lr=0.1, momentum=0.9)
    g = unroll.hypergradient(theta0, x, y, batches, rx, ry).grad_images

    def outer(xx):
        theta = unroll.forward(theta0, xx, y, batches)
        return float(F.cross_entropy(functional_call(net, theta, (rx,)), ry))

    eps = 1e-6
    for pos in [(0, 0, 3, 4), (2, 0, 1, 1), (5, 0, 7, 2)]:
        plus, minus = x.clone(), x.clone()
        plus[pos] += eps
        minus[pos] -= eps
        assert (outer(plus) - outer(minus)) / (2 * eps) == pytest.approx(float(g[pos]), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("momentum,checkpoint_every", [(0.9, None), (0.9, 1), (0.9, 3), (0.0, 2)])
def test_inner_lr_gradient_equals_autograd_and_finite_differences(momentum, checkpoint_every):
    net, x, y, rx, ry, batches, theta0 = _tiny_problem()
    unroll = MomentumUnroll(net, lr=0.1, momentum=momentum, checkpoint_every=checkpoint_every)
    result = unroll.hypergradient(theta0, x, y, batches, rx, ry, lr_grad=True)
    _, _, expected = _naive_unrolled_gradient(net, theta0, x, y, batches, rx, ry, 0.1, momentum)
    assert abs(expected) > 1e-4
    assert result.grad_lr == pytest.approx(expected, rel=1e-9)
    # the image gradient is the same with or without the lr gradient
    plain = unroll.hypergradient(theta0, x, y, batches, rx, ry)
    torch.testing.assert_close(result.grad_images, plain.grad_images, rtol=0, atol=0)
    assert plain.grad_lr is None

    def outer(lr):
        theta = MomentumUnroll(net, lr=lr, momentum=momentum).forward(theta0, x, y, batches)
        return float(F.cross_entropy(functional_call(net, theta, (rx,)), ry))

    eps = 1e-6
    assert (outer(0.1 + eps) - outer(0.1 - eps)) / (2 * eps) == pytest.approx(expected, rel=1e-5)


def test_learned_inner_lr_moves_is_kept_in_the_state_and_is_off_by_default():
    real_x, real_y = _separable_data()
    real_u8 = ((real_x * 0.2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)

    def make_network():
        return nn.Sequential(nn.Flatten(), nn.Linear(6, 3))

    def distiller(learn):
        memory = SyntheticImages.random((1, 1, 6), 1, 3, torch.Generator().manual_seed(3), (0.5,), (0.2,))
        cfg = BPTTConfig(unroll=4, inner_lr=0.01, real_batch_per_class=8, outer_lr=0.1, seed=0,
                         learn_inner_lr=learn)
        return BPTTDistiller(memory, make_network, real_u8, real_y, (0.5,), (0.2,), cfg)

    fixed = distiller(False)
    log = fixed.run(3, progress=False, log_every=1)
    assert fixed.inner_lr == pytest.approx(0.01) and "inner_lr" not in log[-1]
    learned = distiller(True)
    log = learned.run(3, progress=False, log_every=1)
    # a too-small lr on separable data: the first outer step asks for a larger one (Adam's
    # first step moves log α by exactly its lr)
    assert log[1]["inner_lr"] == pytest.approx(0.01 * math.exp(0.1), abs=1e-6)   # logged to 6 places
    assert learned.inner_lr != pytest.approx(0.01, rel=1e-3)
    state = copy.deepcopy(learned.state_dict())
    learned.run(2, progress=False)
    again = distiller(True)
    again.load_state_dict(state)
    again.run(2, progress=False)
    assert again.inner_lr == learned.inner_lr
    for (_, pa), (_, pb) in zip(learned.memory.named_parameters(), again.memory.named_parameters()):
        assert torch.equal(pa, pb)


def test_checkpointing_keeps_memory_sublinear_in_the_unroll():
    net = MLP(4, 2, hidden=3)
    theta0 = {n: p.detach() for n, p in net.named_parameters()}
    x, y = torch.randn(4, 4), torch.tensor([0, 1, 0, 1])
    for T in (16, 64):
        batches = [torch.arange(4)] * T
        kept = MomentumUnroll(net, 0.1, 0.9).hypergradient(theta0, x, y, batches, x, y).stored_param_sets
        every = MomentumUnroll(net, 0.1, 0.9, checkpoint_every=1).hypergradient(
            theta0, x, y, batches, x, y).stored_param_sets
        assert kept <= 3 * math.isqrt(T) + 2 < every
        assert every >= 2 * T


def _separable_data(n_per_class=30, classes=3, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(classes, 1, 1, dim, generator=g)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    images = centres[labels] + torch.randn(len(labels), 1, 1, dim, generator=g)
    return images, labels


def test_a_few_outer_steps_lower_the_outer_loss():
    real_x, real_y = _separable_data()
    # the distiller takes uint8 images: map the floats into 0..255 (mean 0.5, std 0.2 undoes it)
    real_u8 = ((real_x * 0.2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    real_in = (real_u8.float() / 255 - 0.5) / 0.2
    memory = SyntheticImages.random((1, 1, 6), 1, 3, torch.Generator().manual_seed(3), (0.5,), (0.2,))

    def make_network():
        return nn.Sequential(nn.Flatten(), nn.Linear(6, 3))

    def mean_outer_loss():
        losses = []
        images, labels = memory.dataset()
        for seed in range(8):
            torch.manual_seed(100 + seed)
            net = make_network()
            theta0 = {n: p.detach() for n, p in net.named_parameters()}
            unroll = MomentumUnroll(net, 0.1, 0.9)
            theta = unroll.forward(theta0, images.detach(), labels, [torch.arange(3)] * 5)
            losses.append(float(F.cross_entropy(functional_call(net, theta, (real_in,)), real_y)))
        return sum(losses) / len(losses)

    before = mean_outer_loss()
    cfg = BPTTConfig(unroll=5, inner_lr=0.1, real_batch_per_class=16, outer_lr=0.1, seed=0)
    distiller = BPTTDistiller(memory, make_network, real_u8, real_y, (0.5,), (0.2,), cfg)
    distiller.run(25, progress=False)
    after = mean_outer_loss()
    assert after < 0.7 * before, (before, after)


def test_distillation_continued_from_a_state_dict_repeats():
    real_x, real_y = _separable_data()
    real_u8 = ((real_x * 0.2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)

    def make_network():
        return nn.Sequential(nn.Flatten(), nn.Linear(6, 3))

    def distiller():
        g = torch.Generator().manual_seed(0)
        memory = AddressableMemory.initialise((1, 1, 6), 3, 2, 2, 1, g)
        cfg = BPTTConfig(unroll=3, real_batch_per_class=4, classes_per_step=2, inner_batch=3, seed=5)
        return BPTTDistiller(memory, make_network, real_u8, real_y, (0.5,), (0.2,), cfg)

    a = distiller()
    a.run(2, progress=False)
    state = copy.deepcopy(a.state_dict())      # as a checkpoint on disk would hold it
    a.run(2, progress=False)
    b = distiller()
    b.load_state_dict(state)
    b.run(2, progress=False)
    for (_, pa), (_, pb) in zip(a.memory.named_parameters(), b.memory.named_parameters()):
        assert torch.equal(pa, pb)


def test_set_real_swaps_the_outer_set_and_leaves_out_classes_it_lacks():
    """A class without real samples after set_real gets no gradient (it leaves Y'); an
    empty real set is refused; the optimiser's state carries over."""
    real_x, real_y = _separable_data()
    real_u8 = ((real_x * 0.2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    memory = SyntheticImages.random((1, 1, 6), 1, 3, torch.Generator().manual_seed(3), (0.5,), (0.2,))
    cfg = BPTTConfig(unroll=3, inner_lr=0.1, real_batch_per_class=4, outer_lr=0.1, seed=0)
    distiller = BPTTDistiller(memory, lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 3)), real_u8, real_y,
                              (0.5,), (0.2,), cfg)
    distiller.outer_step()
    adam_state = distiller.optimizer.state[memory.images]["step"].clone()
    keep = real_y != 2
    distiller.set_real(real_u8[keep], real_y[keep])
    before = memory.images.detach().clone()
    distiller.outer_step()
    moved = (memory.images.detach() - before).flatten(1).abs().sum(1)
    # Adam moves every entry with a non-zero running moment: class 2 got a gradient at step 1, so
    # compare with the gradient of this step instead
    assert memory.images.grad[memory.labels == 2].abs().sum() == 0
    assert memory.images.grad[memory.labels != 2].abs().sum() > 0 and bool((moved > 0).all())
    assert distiller.optimizer.state[memory.images]["step"] == adam_state + 1
    with pytest.raises(ValueError, match="no sample of the memory's classes"):
        distiller.set_real(real_u8[:0], real_y[:0])


def test_flip_rotate_is_the_same_draw_for_the_same_seed_and_differentiable():
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    a, b = flip_rotate(x, 7), flip_rotate(x, 7)
    assert torch.equal(a, b)
    assert not torch.equal(flip_rotate(x, 7), flip_rotate(x, 8))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_crop_scale_rotate_shifts_by_whole_pixels_and_is_identity_at_zero_magnitude():
    x = torch.randn(6, 1, 8, 8)
    still = random_crop_scale_rotate(x, torch.Generator().manual_seed(0), crop=0, scale=0.0, max_degrees=0.0)
    assert torch.allclose(still, x, atol=1e-6)
    # shifts only (a zero-size scale and rotation range): every output is the input moved by whole pixels,
    # the uncovered border 0
    moved = random_crop_scale_rotate(x, torch.Generator().manual_seed(1), crop=2, scale=0.0, max_degrees=0.0)
    for out, img in zip(moved, x):
        matches = [(dy, dx) for dy in range(-2, 2) for dx in range(-2, 2)
                   if torch.allclose(out, torch.roll(img, (-dy, -dx), (1, 2)) * _shift_mask(dy, dx), atol=1e-5)]
        assert matches, "not a whole-pixel shift"
    a = random_crop_scale_rotate(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, random_crop_scale_rotate(x, torch.Generator().manual_seed(3)))
    assert a.shape == x.shape and not torch.allclose(a, x)


def _shift_mask(dy, dx, size=8):
    mask = torch.ones(1, size, size)
    if dy > 0:
        mask[:, size - dy:] = 0
    elif dy < 0:
        mask[:, :-dy] = 0
    if dx > 0:
        mask[:, :, size - dx:] = 0
    elif dx < 0:
        mask[:, :, :-dx] = 0
    return mask


# -- evaluation -------------------------------------------------------------------------

def test_evaluation_trains_fresh_networks_and_reports_mean_and_std():
    src = make_source(num_classes=4, train_per_class=10, test_per_class=10, shape=(1, 4, 4))
    mean, std = (0.1,), (0.3,)
    x = (torch.from_numpy(src.train.images).float() / 255 - 0.1) / 0.3
    y = torch.from_numpy(src.train.labels)
    test = HeldOutImages(torch.from_numpy(src.test.images), torch.from_numpy(src.test.labels), mean, std)
    schedule = TrainSchedule(epochs=30, lr=0.05, batch_size=16)

    def make_network():
        return MLP(16, 4, hidden=16)

    result = evaluate_dataset(x, y, make_network, test, n_networks=3, schedule=schedule, seed=0)
    assert len(result["accuracies"]) == 3 and result["n_networks"] == 3
    assert result["mean"] > 60.0                        # chance is 25%
    assert result["std"] == pytest.approx(torch.tensor(result["accuracies"]).std(unbiased=False).item(), abs=1e-3)
    again = evaluate_dataset(x, y, make_network, test, n_networks=3, schedule=schedule, seed=0)
    assert again["accuracies"] == result["accuracies"]
    augmented = TrainSchedule(epochs=30, lr=0.05, batch_size=16, augment="crop-scale-rotate")
    nets = [train_fresh_network(x, y, make_network, s, seed=0) for s in (schedule, augmented)]
    weights = [nn.utils.parameters_to_vector(net.parameters()) for net in nets]
    assert not torch.allclose(weights[0], weights[1])      # the augmented batches changed the training
    with pytest.raises(ValueError, match="unknown evaluation augmentation 'cutout'"):
        train_fresh_network(x, y, make_network, TrainSchedule(epochs=1, augment="cutout"), seed=0)


def _small_distiller(**config):
    """Three classes of 6-pixel images, a linear network, T = 2: fast enough for many outer steps."""
    real_x, real_y = _separable_data()
    real_u8 = ((real_x * 0.2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    memory = SyntheticImages.random((1, 1, 6), 1, 3, torch.Generator().manual_seed(3), (0.5,), (0.2,))
    cfg = BPTTConfig(unroll=2, real_batch_per_class=4, seed=1, **config)
    return BPTTDistiller(memory, lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 3)), real_u8, real_y,
                         (0.5,), (0.2,), cfg)


def test_cosine_decay_takes_the_outer_rate_from_its_start_to_zero_over_the_run():
    def distiller(decay):
        return _small_distiller(outer_lr=0.2, outer_lr_decay=decay)

    cosine = distiller("cosine")
    log = cosine.run(4, progress=False, log_every=1)
    assert [e["outer_lr"] for e in log] == pytest.approx([0.2 * 0.5 * (1 + math.cos(math.pi * i / 4))
                                                          for i in range(4)], abs=1e-6)
    constant = distiller("none")
    log = constant.run(4, progress=False, log_every=1)
    assert "outer_lr" not in log[0] and constant.optimizer.param_groups[0]["lr"] == 0.2
    # the same first step (full rate), different memories after the decayed ones
    assert not torch.equal(cosine.memory.images, constant.memory.images)
    with pytest.raises(ValueError, match="outer_lr_decay"):
        BPTTConfig(outer_lr_decay="linear").validate()


def _guarded_distiller(guard):
    return _small_distiller(outer_lr=0.05, collapse_guard=guard)


def test_collapse_guard_changes_nothing_while_the_loss_stays_below_chance():
    plain, guarded = _guarded_distiller(False), _guarded_distiller(True)
    plain.run(25, progress=False)
    log = guarded.run(25, progress=False, log_every=1)
    assert torch.equal(plain.memory.images, guarded.memory.images)
    assert guarded.rollbacks == 0 and all(e["rollbacks"] == 0 for e in log)


def test_collapse_guard_rolls_back_to_the_last_healthy_state_and_halves_the_rate(monkeypatch):
    from memdistill.distill import bptt
    # 12 healthy steps, 9 that drift (above the 0.8 ln 3 a state needs, but not 25 % above the
    # best), then one at chance: the roll-back goes to the state after 10 updates
    losses = iter([0.5] * 12 + [1.0] * 9 + [math.log(3)] + [0.5] * 3)
    real = bptt.MomentumUnroll.hypergradient

    def scripted(self, *args, **kwargs):      # the real hypergradient, with a scripted loss
        result = real(self, *args, **kwargs)
        result.outer_loss = next(losses)
        return result

    monkeypatch.setattr(bptt.MomentumUnroll, "hypergradient", scripted)
    d = _guarded_distiller(True)
    d.run(10, progress=False)
    after_ten = d.memory.images.detach().clone()
    d.run(11, progress=False)                    # eleven more updates (one state check among them)
    assert not torch.equal(d.memory.images, after_ten)
    entry = d.outer_step()
    assert entry["rollbacks"] == 1 and d.rate_scale == 0.5
    assert torch.equal(d.memory.images, after_ten)
    before = d.memory.images.detach().clone()
    d.outer_step()                               # updates go on, at half the rate
    assert not torch.equal(d.memory.images, before)
    assert d.optimizer.param_groups[0]["lr"] == 0.05   # the schedule's rate is left as it was


# -- CLI ----------------------------------------------------------------------------------



@pytest.mark.parametrize("argv,needle", [
    (["--memory", "hologram"], "--memory: unknown value 'hologram'; allowed: images, addressable"),
    (["--dataset", "svhn"], "--dataset: unknown value 'svhn'; allowed: digits, mnist"),
    (["--method", "dm"], "--method: unknown value 'dm'; allowed: bptt, dc"),
    (["--method", "dc", "--net-steps", "-1"], "--net-steps: must be an integer >= 0"),
    (["--ipc", "0"], "--ipc: must be an integer >= 1"),
    (["--unroll", "0"], "--unroll: must be an integer >= 1"),
    (["--inner-momentum", "1.5"], "--inner-momentum: must be in [0, 1)"),
    (["--outer-optimizer", "lbfgs"], "--outer-optimizer: unknown value 'lbfgs'; allowed: adam, sgd"),
    (["--augment", "cutmix"], "--augment: unknown value 'cutmix'; allowed: none, flip-rotate"),
    (["--inner-sampling", "stratified"], "--inner-sampling: unknown value 'stratified'; allowed: uniform, per-class"),
    (["--outer-lr", "0"], "--outer-lr: must be a positive number"),
    (["--outer-lr-decay", "step"], "--outer-lr-decay: unknown value 'step'; allowed: none, cosine"),
    (["--method", "dc", "--learn-inner-lr"], "--learn-inner-lr: needs --method bptt"),
    (["--eval-augment", "cutout"], "--eval-augment: unknown value 'cutout'; allowed: none, crop-scale-rotate"),
    (["--bases", "100"], "--bases: 100 bases (downsample 2) leave no room"),
])
def test_distill_bad_input_exits_2_and_writes_nothing(isolated, capsys, argv, needle):
    code = main(["distill", "--out", "out", "--no-progress"] + argv)
    assert code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("memdistill distill: error:") and needle in line, line
    assert not (isolated / "out").exists()


def test_distill_and_evaluate_memory_end_to_end_on_digits(isolated, capsys):
    code = main(["distill", "--dataset", "digits", "--memory", "addressable", "--bases", "8", "--backbone", "mlp",
                 "--steps", "2", "--unroll", "2", "--real-batch", "4", "--eval-networks", "2",
                 "--eval-epochs", "3", "--out", "out", "--no-progress"])
    assert code == 0
    summary = json.loads((isolated / "out" / "summary.json").read_text())
    assert summary["memory_bytes"] <= summary["image_budget_bytes"]
    assert len(summary["accuracy"]["per_network"]) == 2
    assert summary["addressable"]["recalls_per_class"] == addressable_budget(1, 10, (1, 8, 8), 8, 2).recalls
    assert len((isolated / "out" / "log.jsonl").read_text().splitlines()) == 2
    assert (isolated / "out" / "recalled.png").stat().st_size > 0
    assert (isolated / "out" / "similarity.png").stat().st_size > 0
    capsys.readouterr()
    code = main(["evaluate-memory", str(isolated / "out" / "memory.pt"), "--dataset", "digits", "--backbone", "mlp",
                 "--eval-networks", "1", "--eval-epochs", "3", "--no-progress"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["kind"] == "addressable" and result["n_networks"] == 1


def test_distill_learns_the_inner_lr_on_request_and_reports_it(isolated):
    base = ["distill", "--dataset", "digits", "--memory", "images", "--backbone", "mlp", "--steps", "2",
            "--unroll", "2", "--real-batch", "4", "--eval-networks", "1", "--eval-epochs", "1", "--no-progress",
            "--log-every", "1"]
    assert main(base + ["--out", "fixed"]) == 0
    assert json.loads((isolated / "fixed" / "summary.json").read_text())["learned_inner_lr"] is None
    assert main(base + ["--learn-inner-lr", "--out", "learned"]) == 0
    summary = json.loads((isolated / "learned" / "summary.json").read_text())
    log = [json.loads(line) for line in (isolated / "learned" / "log.jsonl").read_text().splitlines()]
    assert log[0]["inner_lr"] == pytest.approx(0.01)
    assert summary["config"]["learn_inner_lr"] is True
    assert summary["learned_inner_lr"] != pytest.approx(0.01, rel=1e-3)


def test_a_stopped_distillation_leaves_its_log_and_memory_so_far(isolated, monkeypatch, capsys):
    from memdistill.distill.memories import load_memory
    real_step = BPTTDistiller.outer_step

    def stop_at_step_4(self):
        if self.step == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(BPTTDistiller, "outer_step", stop_at_step_4)
    code = main(["distill", "--dataset", "digits", "--memory", "images", "--backbone", "mlp", "--steps", "10",
                 "--unroll", "2", "--real-batch", "4", "--log-every", "1", "--out", "out", "--no-progress"])
    assert code == 130
    assert "the memory of the last logged step is in out/memory.pt" in capsys.readouterr().err
    out = isolated / "out"
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not (out / "summary.json").exists()
    assert load_memory(out / "memory.pt").num_classes == 10    # the memory after step 3, loadable


def test_validation_split_holds_out_each_class_disjointly_and_depends_on_the_seed_only():
    from memdistill.distill.experiment import _validation_split
    y = torch.arange(4).repeat_interleave(20)                     # 4 classes x 20
    x = torch.arange(80).reshape(80, 1, 1, 1)                     # each image names its index
    tx, ty, vx, vy = _validation_split(x, y, 0.1, seed=3)
    assert len(vy) == 8 and torch.bincount(vy).tolist() == [2, 2, 2, 2]
    assert len(ty) == 72 and set(tx.flatten().tolist()).isdisjoint(vx.flatten().tolist())
    assert torch.equal(y[vx.flatten()], vy)                      # labels travel with their images
    assert torch.equal(_validation_split(x, y, 0.1, seed=3)[2], vx)
    assert not torch.equal(_validation_split(x, y, 0.1, seed=4)[2], vx)


def test_distill_with_a_validation_fraction_scores_on_held_out_training_images(isolated, capsys):
    from memdistill.data.sources import load_source
    argv = ["distill", "--dataset", "digits", "--memory", "images", "--backbone", "mlp", "--steps", "0",
            "--eval-networks", "1", "--eval-epochs", "2", "--no-progress"]
    assert main(argv + ["--validation-fraction", "0.2", "--out", "val"]) == 0
    assert main(argv + ["--out", "test"]) == 0
    val = json.loads((isolated / "val" / "summary.json").read_text())
    test = json.loads((isolated / "test" / "summary.json").read_text())
    source = load_source("digits", progress=False)
    per_class = torch.bincount(torch.from_numpy(source.train.labels.copy()))
    assert val["evaluated_on"] == "validation" and test["evaluated_on"] == "test"
    assert val["evaluation"]["test_samples"] == sum(round(0.2 * int(n)) for n in per_class)
    assert test["evaluation"]["test_samples"] == len(source.test.labels)
    assert main(argv + ["--validation-fraction", "1", "--out", "bad"]) == 2
    assert "--validation-fraction: must be in [0, 1)" in capsys.readouterr().err


def test_distill_goes_on_from_a_saved_memory_and_refuses_one_that_does_not_fit(isolated, capsys):
    base = ["distill", "--dataset", "digits", "--memory", "images", "--backbone", "mlp", "--unroll", "2",
            "--real-batch", "4", "--eval-networks", "1", "--eval-epochs", "1", "--no-progress"]
    assert main(base + ["--steps", "2", "--out", "first"]) == 0
    first = load_memory(isolated / "first" / "memory.pt")
    assert main(base + ["--steps", "0", "--init", "first/memory.pt", "--out", "same"]) == 0
    assert torch.equal(load_memory(isolated / "same" / "memory.pt").images, first.images)
    assert main(base + ["--steps", "1", "--init", "first/memory.pt", "--out", "more"]) == 0
    assert not torch.equal(load_memory(isolated / "more" / "memory.pt").images, first.images)
    capsys.readouterr()
    for argv, needle in [(["--init", "nothing.pt"], "'nothing.pt' is none of real, noise, mean and not a memory file"),
                         (["--init", "first/memory.pt", "--ipc", "2"], "holds 10 images; --ipc 2 makes 20"),
                         (["--init", "first/memory.pt", "--memory", "addressable", "--bases", "8"],
                          "holds a memory of kind 'images'; this run distils --memory addressable")]:
        assert main(base + ["--steps", "1", "--out", "bad"] + argv) == 2
        assert needle in capsys.readouterr().err
        assert not (isolated / "bad").exists()


def test_mean_init_starts_from_the_means_of_disjoint_groups_of_each_class():
    from memdistill.distill.experiment import _starting_images
    images = torch.randint(0, 256, (12, 1, 2, 2), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 6)
    g = torch.Generator().manual_seed(0)
    x, y = _starting_images("mean", images, labels, 1, 2, g, mean=(0.0,), std=(1.0,))
    assert y.tolist() == [0, 1]
    for c in (0, 1):   # one per class: the class mean
        assert torch.allclose(x[c], images[labels == c].float().mean(0) / 255.0)
    x, y = _starting_images("mean", images, labels, 3, 2, g, mean=(0.5,), std=(0.5,))
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    for c in (0, 1):   # three disjoint groups of two: their means average back to the class mean
        assert torch.allclose((x[y == c] * 0.5 + 0.5).mean(0), images[labels == c].float().mean(0) / 255.0)
        assert len({tuple(v.flatten().tolist()) for v in x[y == c]}) == 3
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    real, _ = _starting_images("real", images, labels, 2, 2, g1, mean=(0.0,), std=(1.0,))
    pick = torch.cat([torch.nonzero(labels == c).flatten()[torch.randperm(6, generator=g2)[:2]] for c in (0, 1)])
    assert torch.equal(real, images[pick].float() / 255.0)   # "real" draws as it always did


def test_evaluate_memory_on_a_bad_file_exits_2(isolated, capsys):
    (isolated / "junk.pt").write_text("junk")
    assert main(["evaluate-memory", "junk.pt", "--dataset", "digits", "--no-progress"]) == 2
    assert "not a readable memory file" in capsys.readouterr().err


# -- single-step gradient matching (DC) -----------------------------------------------------------

def test_dc_layer_distance_is_one_minus_cosine_per_output_unit():
    from memdistill.distill.gradient_matching import gradient_distance, layer_distance
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, 3, 3, generator=g), torch.randn(4, 3, 3, 3, generator=g)
    by_hand = sum(1 - F.cosine_similarity(a[i].flatten(), b[i].flatten(), dim=0) for i in range(4))
    assert torch.allclose(layer_distance(a, b), by_hand, atol=1e-5)
    assert float(layer_distance(a, 2.5 * a)) == pytest.approx(0.0, abs=1e-5)     # scale-free
    assert float(layer_distance(torch.randn(5), torch.randn(5))) == 0.0          # biases are skipped
    assert torch.allclose(gradient_distance([a, torch.ones(4)], [b, torch.zeros(4)]), by_hand, atol=1e-5)


def test_a_dc_step_lowers_the_gradient_distance_on_its_network():
    from memdistill.distill.bptt import _step_seed
    from memdistill.distill.gradient_matching import (GradientMatchingConfig, GradientMatchingDistiller,
                                                      gradient_distance)
    real_x, real_y = _separable_data()
    real_u8 = ((real_x * 0.2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    real_in = (real_u8.float() / 255 - 0.5) / 0.2
    memory = SyntheticImages.random((1, 1, 6), 2, 3, torch.Generator().manual_seed(3), (0.5,), (0.2,))

    def make_network():
        return nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))

    def distance_on_step_zero_network():
        torch.manual_seed(_step_seed(0, 0))
        net = make_network()
        params = list(net.parameters())
        images, labels = memory.dataset()
        total = 0.0
        for c in range(3):
            g_real = torch.autograd.grad(F.cross_entropy(net(real_in[real_y == c]), real_y[real_y == c]), params)
            g_syn = torch.autograd.grad(F.cross_entropy(net(images[labels == c]), labels[labels == c]), params)
            total += float(gradient_distance(g_real, g_syn))
        return total

    before = distance_on_step_zero_network()
    cfg = GradientMatchingConfig(real_batch_per_class=30, outer_optimizer="sgd", outer_lr=0.01, clip=None,
                                 match_loops=1, net_steps=0, seed=0)
    distiller = GradientMatchingDistiller(memory, make_network, real_u8, real_y, (0.5,), (0.2,), cfg)
    entry = distiller.outer_step()
    assert entry["step"] == 1 and entry["outer_loss"] > 0
    assert distance_on_step_zero_network() < before
    with pytest.raises(ValueError, match="match_loops must be an integer >= 1"):
        GradientMatchingConfig(match_loops=0).validate()


def test_distill_with_dc_end_to_end_on_digits(isolated, capsys):
    code = main(["distill", "--dataset", "digits", "--memory", "images", "--method", "dc", "--ipc", "2",
                 "--backbone", "mlp", "--steps", "2", "--match-loops", "2", "--net-steps", "2", "--real-batch", "8",
                 "--eval-networks", "1", "--eval-epochs", "3", "--out", "out", "--no-progress"])
    assert code == 0
    summary = json.loads((isolated / "out" / "summary.json").read_text())
    assert summary["method"] == "dc" and summary["bptt_stored_mb"] is None
    assert summary["config"]["match_loops"] == 2 and summary["memory_bytes"] == 20 * (64 * 4 + 8)
    assert len((isolated / "out" / "log.jsonl").read_text().splitlines()) == 2


def test_table_preset_runs_every_row_once_and_writes_the_table(isolated, capsys):
    argv = ["distill", "--preset", "rtp-table1-mnist-ipc1", "--dataset", "digits", "--backbone", "mlp",
            "--steps", "1", "--unroll", "2", "--real-batch", "4", "--bases", "8", "--eval-networks", "1",
            "--eval-epochs", "2", "--eval-test-samples", "100", "--out", "t1", "--no-progress"]
    assert main(argv) == 0
    table = (isolated / "t1" / "table.md").read_text()
    for row in ("random-real", "dc", "bptt-images", "bptt-no-momentum", "bptt-short-unroll", "addressable"):
        summary = json.loads((isolated / "t1" / row / "summary.json").read_text())
        assert f"| {row} | {summary['memory']} |" in table
    rows = {r: json.loads((isolated / "t1" / r / "summary.json").read_text())["config"]
            for r in ("random-real", "dc", "bptt-no-momentum", "addressable")}
    assert rows["random-real"]["steps"] == 0 and rows["dc"]["method"] == "dc" and rows["dc"]["steps"] == 1
    assert rows["bptt-no-momentum"]["inner_momentum"] == 0.0 and rows["addressable"]["bases"] == 8
    assert rows["addressable"]["inner_batch"] == 10
    # equal bytes: the addressable row fits the images' budget
    sizes = {r: json.loads((isolated / "t1" / r / "summary.json").read_text())["memory_bytes"]
             for r in ("bptt-images", "addressable")}
    assert sizes["addressable"] <= sizes["bptt-images"]
    stamps = {p: p.stat().st_mtime_ns for p in (isolated / "t1").rglob("summary.json")}
    assert main(argv) == 0                                   # finished rows are not run again
    assert {p: p.stat().st_mtime_ns for p in (isolated / "t1").rglob("summary.json")} == stamps
    assert main(["distill", "--preset", "rtp-nothing", "--out", "x", "--no-progress"]) == 2
    assert "unknown preset 'rtp-nothing'" in capsys.readouterr().err


# -- ZCA whitening ----------------------------------------------------------------------------------

def test_zca_whitens_and_round_trips(tmp_path):
    from memdistill.distill.zca import ZCA
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(12, 12, generator=g)
    x = (torch.randn(3000, 12, generator=g) @ mixing + 3.0).reshape(3000, 3, 2, 2)
    zca = ZCA.fit(x, eps=1e-6)
    white = zca(x).reshape(3000, -1)
    cov = torch.cov(white.T)
    assert torch.allclose(cov, torch.eye(12), atol=2e-3) and white.mean(0).abs().max() < 1e-4
    assert torch.allclose(zca.whitening, zca.whitening.T, atol=1e-5)            # ZCA, not PCA: symmetric
    chunked = ZCA.fit(x, eps=1e-6, chunk=7)
    assert torch.allclose(chunked.whitening, zca.whitening, atol=1e-4)
    u8 = torch.randint(0, 256, (50, 1, 2, 2), generator=g, dtype=torch.uint8)
    via = ZCA.fit(u8, eps=0.1, to_input=lambda t: (t.float() / 255 - 0.5) / 0.2)
    direct = ZCA.fit((u8.float() / 255 - 0.5) / 0.2, eps=0.1)
    assert torch.allclose(via.whitening, direct.whitening, atol=1e-5)
    zca.save(tmp_path / "zca.pt")
    back = ZCA.load(tmp_path / "zca.pt")
    assert torch.equal(back.whitening, zca.whitening) and back.eps == zca.eps
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ZCA file"):
        ZCA.load(tmp_path / "other.pt")


def test_distill_with_zca_end_to_end_on_digits(isolated, capsys):
    code = main(["distill", "--dataset", "digits", "--memory", "images", "--backbone", "mlp", "--zca",
                 "--steps", "2", "--unroll", "2", "--real-batch", "4", "--eval-networks", "1",
                 "--eval-epochs", "3", "--out", "z", "--no-progress"])
    assert code == 0
    summary = json.loads((isolated / "z" / "summary.json").read_text())
    assert summary["zca"] == {"eps": 0.1, "file": "zca.pt"} and (isolated / "z" / "zca.pt").exists()
    capsys.readouterr()
    base = ["evaluate-memory", "z/memory.pt", "--dataset", "digits", "--backbone", "mlp", "--eval-networks", "1",
            "--eval-epochs", "3", "--no-progress"]
    assert main(base + ["--zca", "z/zca.pt"]) == 0
    assert main(base + ["--zca", "z/memory.pt"]) == 2
    assert "--zca: cannot read z/memory.pt" in capsys.readouterr().err


def test_inner_minibatch_per_class_takes_the_same_number_from_every_class():
    labels = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = inner_minibatch(labels, 6, "per-class", g)
        assert len(idx) == len(set(idx.tolist())) == 6
        assert torch.bincount(labels[idx], minlength=3).tolist() == [2, 2, 2]
        # 7 = 2 per class and one more from a random class
        counts = sorted(torch.bincount(labels[inner_minibatch(labels, 7, "per-class", g)], minlength=3).tolist())
        assert counts == [2, 2, 3]
    # uniform draws leave some class out of some step; per-class never does
    uniform = [torch.bincount(labels[inner_minibatch(labels, 3, "uniform", g)], minlength=3) for _ in range(50)]
    assert any((c == 0).any() for c in uniform)
    per_class = [torch.bincount(labels[inner_minibatch(labels, 3, "per-class", g)], minlength=3) for _ in range(50)]
    assert all(c.tolist() == [1, 1, 1] for c in per_class)
    # no batch size, or one at least the set's size: the whole set, in order, for either sampling
    for sampling in INNER_SAMPLINGS:
        assert torch.equal(inner_minibatch(labels, None, sampling, g), torch.arange(12))
        assert torch.equal(inner_minibatch(labels, 12, sampling, g), torch.arange(12))


def test_inner_sampling_is_checked_and_changes_the_distillation():
    real_x, real_y = _separable_data()
    real_u8 = ((real_x * 0.2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)

    def distilled(sampling):
        g = torch.Generator().manual_seed(0)
        memory = AddressableMemory.initialise((1, 1, 6), 3, 2, 2, 1, g)
        cfg = BPTTConfig(unroll=3, real_batch_per_class=4, inner_batch=3, inner_sampling=sampling, seed=5)
        BPTTDistiller(memory, lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 3)), real_u8, real_y,
                      (0.5,), (0.2,), cfg).run(2, progress=False)
        return torch.cat([p.detach().flatten() for p in memory.parameters()])

    assert not torch.equal(distilled("uniform"), distilled("per-class"))
    with pytest.raises(ValueError, match="inner_sampling: unknown value 'stratified'"):
        BPTTConfig(inner_sampling="stratified").validate()
