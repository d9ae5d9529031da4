import io
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.data.scenarios import build_scenario
from memdistill.memory import MemoryBatch
from memdistill.methods import METHODS, PLUGINS, LearnerContext
from memdistill.methods.ddn import DataDistillNet, LearnedLabels, batch_statistics
from memdistill.methods.er import ExperienceReplay
from memdistill.nets import Backbone
from tests.conftest import make_source

C = 6

# torch warns once, from inside torch.func.jvp, when it loads its forward-mode decompositions
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def context(**kw) -> LearnerContext:
    base = dict(num_classes=C, num_tasks=3, input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,), augment=False,
                device=torch.device("cpu"), lr=0.1, batch_size=4, replay_batch_size=4, buffer=20, seed=0)
    return LearnerContext(**{**base, **kw})


def net(batch_norm=True, act=nn.Tanh) -> Backbone:
    layers = [nn.Flatten(), nn.Linear(16, 10)] + ([nn.BatchNorm1d(10)] if batch_norm else []) + [act()]
    return Backbone(nn.Sequential(*layers), 10, C)


def er_with(plugin, model=None, classes=(0, 1, 2, 3), **ctx) -> ExperienceReplay:
    torch.manual_seed(0)
    er = ExperienceReplay(model or net(), context(**ctx), plugins=[plugin])
    er.begin_task(types.SimpleNamespace(index=0, classes=list(classes)))
    return er


def images(n, seed=0):
    return torch.randint(0, 256, (n, 1, 4, 4), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def batch_of(labels, seed=0) -> MemoryBatch:
    n = len(labels)
    return MemoryBatch(images(n, seed), torch.tensor(labels), torch.zeros(n, dtype=torch.long), torch.arange(n))


def probs(n, seen=4, seed=0):
    p = torch.zeros(n, C)
    p[:, :seen] = torch.randn(n, seen, generator=torch.Generator().manual_seed(seed)).softmax(1)
    return p


# -- soft labels ----------------------------------------------------------------------

@pytest.mark.parametrize("name,args", [("ddn", {}), ("l2y", {}), ("label-smoothing", {"eps": 0.5}),
                                       ("random-labels", {})])
def test_soft_labels_are_distributions_over_seen_classes(name, args):
    plugin = PLUGINS[name](**args)
    er_with(plugin)
    batch = batch_of([0, 1, 2, 3, 3])
    for _ in range(2):
        y = plugin.soft_labels(batch, probs(5))
        assert torch.all(y >= 0) and torch.allclose(y.sum(1), torch.ones(5))
        assert torch.all(y[:, 4:] == 0)                       # classes 4, 5 not seen yet
        assert torch.all(y.argmax(1) == batch.labels)         # the one-hot part dominates here
        if isinstance(plugin, DataDistillNet):
            plugin.end_task(None)                             # and again with G_old


def test_label_smoothing_and_alpha_scaled_targets():
    plugin = PLUGINS["label-smoothing"](eps=0.1, alpha=2.0)
    er_with(plugin)
    batch = batch_of([2])
    expected = torch.tensor([[0.025, 0.025, 0.925, 0.025, 0, 0]])
    assert torch.allclose(plugin.soft_labels(batch, probs(1)), expected)
    # Eq. 7's alpha rides on the targets: CE is linear in them
    assert torch.allclose(plugin.memory_targets(batch, torch.randn(1, C)), 2.0 * expected)


def test_g_old_ema_mixing():
    plugin = DataDistillNet(beta=0.9)
    er_with(plugin)
    p = probs(3)
    g0 = plugin.seen_softmax(plugin.net(p))
    assert torch.allclose(plugin.generate(p), g0)              # no G_old during the first task
    plugin.end_task(None)
    with torch.no_grad():
        for w in plugin.net.parameters():
            w.add_(torch.randn_like(w))
    g1 = plugin.seen_softmax(plugin.net(p))
    assert not torch.allclose(g1, g0)
    assert torch.allclose(plugin.generate(p), 0.1 * g1 + 0.9 * g0, atol=1e-6)   # Eq. 8
    batch = batch_of([0, 3, 1])
    onehot = F.one_hot(batch.labels, C).float()
    assert torch.allclose(plugin.soft_labels(batch, p), (onehot + 0.1 * g1 + 0.9 * g0) / 2, atol=1e-6)
    assert all(not w.requires_grad for w in plugin.old.parameters())


def test_g_old_gives_no_mass_to_classes_it_never_saw():
    plugin = DataDistillNet(beta=1.0)                          # y~'s G part is G_old alone
    er = er_with(plugin, classes=(0, 1))
    plugin.end_task(None)                                      # G_old trained on classes 0, 1
    er.begin_task(types.SimpleNamespace(index=1, classes=[2, 3]))
    with torch.no_grad():
        plugin.old[-1].bias.add_(torch.tensor([0.0, 0.0, 9.0, 9.0, 0.0, 0.0]))   # untrained units, large
    p = probs(5)
    g = plugin.generate(p)
    assert torch.allclose(g.sum(1), torch.ones(5))
    assert torch.all(g[:, 2:] == 0)                            # nothing on the classes G_old never saw
    assert torch.allclose(g[:, :2], plugin.old(p)[:, :2].softmax(1), atol=1e-6)
    # a checkpoint keeps which classes those were
    state = plugin.state_dict()
    plugin.old_classes = None
    plugin.load_state_dict(state)
    assert plugin.old_classes.tolist() == [True, True, False, False, False, False]


def test_centred_scores_cannot_carry_a_class_prior():
    plugin = DataDistillNet(center=True)
    er_with(plugin)
    p = probs(4)
    centred = plugin.generate(p)
    with torch.no_grad():
        plugin.net[-1].bias.add_(torch.tensor([5.0, -3.0, 0.0, 1.0, 0.0, 0.0]))   # a class prior
    assert torch.allclose(plugin.generate(p), centred, atol=1e-6)
    # the scores are the batch-centred ones; uncentred, the prior would show
    z = plugin.net(p)
    assert torch.allclose(centred, plugin.seen_softmax(z - z.mean(0, keepdim=True)), atol=1e-6)
    assert not torch.allclose(plugin.seen_softmax(z), centred, atol=1e-2)


# -- the hypergradient ------------------------------------------------------------------

def unrolled_outer_loss(plugin, model, batch, x_in, x_out, y_out, free_names):
    """L_out(theta'(w)) by autograd through the look-ahead step (create_graph)."""
    learner, alpha, eta = plugin.learner, plugin.opts["alpha"], plugin.inner_lr()
    with batch_statistics(model):
        theta = {k: p.detach() for k, p in model.named_parameters()}
        free = {k: theta[k].clone().requires_grad_() for k in free_names}
        log_p = F.log_softmax(learner.seen_mask(functional_call(model, {**theta, **free}, (x_in,))), 1)
        y = plugin.soft_labels(batch, log_p.detach().exp())
        inner = F.nll_loss(log_p, batch.labels) - alpha * (y * log_p).sum(1).mean()
        grads = torch.autograd.grad(inner, list(free.values()), create_graph=True)
        ahead = {k: free[k] - eta * g for k, g in zip(free, grads)}
        logits = learner.seen_mask(functional_call(model, {**theta, **ahead}, (x_out,)))
        if not plugin.opts["outer_balance"]:
            return F.cross_entropy(logits, y_out)
        # every class present weighs the same: the mean over classes of each class's mean CE
        per_sample = F.cross_entropy(logits, y_out, reduction="none")
        return torch.stack([per_sample[y_out == c].mean() for c in y_out.unique()]).mean()


def hyper_setup(params="all", dtype=torch.float32, act=nn.Tanh, **options):
    plugin = DataDistillNet(params=params, alpha=0.7, **options)
    er = er_with(plugin, net(act=act))
    er.model.to(dtype)
    plugin.net.to(dtype)
    plugin.end_task(None)                     # a G_old as well, so Eq. 8 is in the graph
    with torch.no_grad():
        for w in plugin.net.parameters():
            w.add_(0.3 * torch.randn_like(w))
    g = torch.Generator().manual_seed(1)
    batch = batch_of([0, 1, 2, 3, 1, 0, 2, 3])
    x_in = torch.randn(8, 1, 4, 4, generator=g, dtype=dtype)
    x_out = torch.randn(8, 1, 4, 4, generator=g, dtype=dtype)
    # unbalanced, as an outer batch half from the current task is: class 3 five times
    y_out = torch.tensor([3, 2, 1, 0, 3, 3, 3, 3])
    return plugin, er, batch, x_in, x_out, y_out


@pytest.mark.parametrize("params,balance", [("all", False), ("head", False), ("all", True)])
def test_jvp_hypergradient_equals_unrolled_autograd(params, balance):
    plugin, er, batch, x_in, x_out, y_out = hyper_setup(params, outer_balance=balance)
    state = {k: v.clone() for k, v in er.model.state_dict().items()}
    y_soft, dy, outer = plugin.own_hypergradient(batch, x_in, x_out, y_out)
    ours = torch.autograd.grad(y_soft, plugin.label_parameters(), dy)
    loss = unrolled_outer_loss(plugin, er.model, batch, x_in, x_out, y_out, plugin.free_names())
    ref = torch.autograd.grad(loss, plugin.label_parameters())
    assert torch.allclose(outer, loss.detach(), atol=1e-6)
    scale = max(r.abs().max() for r in ref)
    assert scale > 0
    for a, b in zip(ours, ref):
        assert (a - b).abs().max() <= 1e-5 * scale
    # the look-ahead leaves the classifier (weights and batch-norm statistics) as it was
    assert all(torch.equal(v, state[k]) for k, v in er.model.state_dict().items())


def test_balanced_outer_loss_weighs_each_class_the_same():
    plugin, *_ = hyper_setup(outer_balance=True)
    logits = torch.randn(8, C, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([3, 3, 3, 3, 3, 0, 1, 1])
    ce = F.cross_entropy(logits, y, reduction="none")
    by_class = (ce[y == 3].mean() + ce[y == 0].mean() + ce[y == 1].mean()) / 3
    assert torch.allclose(plugin.outer_loss(logits, y), by_class)
    assert not torch.allclose(by_class, ce.mean())
    plugin.opts["outer_balance"] = False
    assert torch.allclose(plugin.outer_loss(logits, y), ce.mean())


def test_hypergradient_agrees_with_finite_differences():
    plugin, er, batch, x_in, x_out, y_out = hyper_setup(dtype=torch.float64)
    y_soft, dy, _ = plugin.own_hypergradient(batch, x_in, x_out, y_out)
    grads = torch.autograd.grad(y_soft, plugin.label_parameters(), dy)
    g = torch.Generator().manual_seed(2)
    direction = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in plugin.label_parameters()]
    eps = 1e-6

    def loss_at(sign):
        with torch.no_grad():
            for w, d in zip(plugin.label_parameters(), direction):
                w.add_(sign * eps * d)
        out = unrolled_outer_loss(plugin, er.model, batch, x_in, x_out, y_out, plugin.free_names()).item()
        with torch.no_grad():
            for w, d in zip(plugin.label_parameters(), direction):
                w.sub_(sign * eps * d)
        return out
    fd = (loss_at(1) - loss_at(-1)) / (2 * eps)
    analytic = sum((a * d).sum() for a, d in zip(grads, direction)).item()
    assert abs(fd - analytic) <= 1e-6 * max(1.0, abs(analytic)) and abs(analytic) > 1e-8


@pytest.mark.parametrize("hard", [False, True])
def test_step_lookahead_is_the_derivative_of_the_classifier_step(monkeypatch, hard):
    """lookahead='step': with no batch norm and no augmentation the plug-in's hypergradient
    is exactly that of the classifier's own SGD step (ER: CE(stream) + [CE(memory, y)] +
    alpha CE(memory, y~))."""
    plugin = DataDistillNet(lookahead="step", alpha=0.5, every=1, hard=hard)
    # every class seen: ER's CE runs over all logits, the plug-in's over the seen ones
    er = er_with(plugin, net(batch_norm=False), classes=range(C))
    er.observe(images(4, 1), torch.tensor([0, 1, 2, 3]), 0)          # fills the buffer
    x_out, y_out = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 3, 1, 2])
    monkeypatch.setattr(plugin, "outer_batch", lambda stream: (x_out, y_out))
    stream = (images(4, 2), torch.tensor([3, 2, 1, 0]))
    model, eta = er.model, er.ctx.lr
    seen = {}
    original = plugin.step_hypergradient

    def check(batch, probs, theta, x_in, xo, yo):
        y_soft, dy, outer = original(batch, probs, theta, x_in, xo, yo)
        seen["ours"] = torch.autograd.grad(y_soft, plugin.label_parameters(), dy, retain_graph=True)
        # reference: theta_{k+1}(w) = theta_k - eta * grad[CE(stream) + alpha CE(memory, y~(w))]
        free = {k: v.clone().requires_grad_() for k, v in theta.items()}
        z = functional_call(model, free, (er.preprocess(torch.cat([stream[0], batch.images]), train=False),))
        y = plugin.soft_labels(batch, probs)
        loss = F.cross_entropy(z[:4], stream[1]) - plugin.opts["alpha"] * (y * F.log_softmax(z[4:], 1)).sum(1).mean()
        if hard:
            loss = loss + F.cross_entropy(z[4:], batch.labels)
        grads = torch.autograd.grad(loss, list(free.values()), create_graph=True)
        ahead = {k: free[k] - eta * g for k, g in zip(free, grads)}
        outer_ref = F.cross_entropy(er.seen_mask(functional_call(model, ahead, (xo,))), yo)
        seen["ref"] = torch.autograd.grad(outer_ref, plugin.label_parameters())
        assert torch.allclose(outer, outer_ref.detach(), atol=1e-6)
        return y_soft, dy, outer
    monkeypatch.setattr(plugin, "step_hypergradient", check)
    er.observe(*stream, 0)
    scale = max(r.abs().max() for r in seen["ref"])
    assert scale > 0
    for a, b in zip(seen["ours"], seen["ref"]):
        assert (a - b).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("every", [1, 3])
def test_g_is_updated_every_k_steps(every):
    plugin = DataDistillNet(every=every)
    er = er_with(plugin)
    updates = []
    original = plugin.optimizer.step
    plugin.optimizer.step = lambda *a, **k: (updates.append(plugin.steps - 1), original(*a, **k))[1]
    for i in range(7):
        er.observe(images(4, i), torch.tensor([0, 1, 2, 3]), 0)
    # step 0 has an empty buffer, so no memory batch to label
    assert updates == [i for i in range(1, 7) if i % every == 0]
    assert plugin.steps == 7


def test_l2y_rows_reset_when_their_slot_changes():
    plugin = LearnedLabels()
    er = er_with(plugin)
    er.buffer.add(images(3), torch.tensor([0, 1, 2]), 0, er.generator)
    batch = er.buffer.gather(torch.arange(3))
    plugin.soft_labels(batch, probs(3))
    with torch.no_grad():
        plugin.table[:3] = 5.0
    assert torch.equal(plugin.soft_labels(batch, probs(3)), plugin.soft_labels(batch, probs(3)))
    er.buffer.images[1] = images(1, seed=9)[0]                 # slot 1 now holds another sample
    plugin.soft_labels(er.buffer.gather(torch.arange(3)), probs(3))
    assert torch.all(plugin.table[1] == 0) and torch.all(plugin.table[[0, 2]] == 5)


def test_options_are_checked():
    with pytest.raises(ValueError, match="no option 'gamma'"):
        DataDistillNet(gamma=1)
    with pytest.raises(ValueError, match="lookahead must be one of: own, step"):
        DataDistillNet(lookahead="twice")
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        DataDistillNet(every=0)
    with pytest.raises(ValueError, match="eps"):
        PLUGINS["label-smoothing"](eps=2)
    with pytest.raises(ValueError, match="center must be true or false"):
        DataDistillNet(center="yes")
    with pytest.raises(ValueError, match="outer_balance must be true or false"):
        DataDistillNet(outer_balance=1)


# -- the plug-in in each replay method ----------------------------------------------------

@pytest.mark.parametrize("method", ["er", "derpp", "er-ace", "clser"])
def test_ddn_composes_with_each_replay_method(method, monkeypatch):
    plugin = PLUGINS["ddn"](every=2)
    monkeypatch.setitem(engine.PLUGINS, "ddn", lambda **options: plugin)   # to look inside afterwards
    cfg = RunConfig(method=method, buffer=30, epochs=1, plugin="ddn")
    summary = engine.run(cfg, None, build_scenario("seq-digits", source=make_source(), progress=False),
                         progress=False)
    assert plugin.learner.__class__ is METHODS[method]
    assert plugin.steps > 0 and plugin.old is not None
    assert int(plugin.optimizer.state_dict()["state"][0]["step"]) > 0
    assert 0 <= summary["class_il"]["acc"] <= 100
    # G_w and G_old count as memory
    assert plugin.nbytes == 2 * sum(4 * w.numel() for w in plugin.net.parameters())
    assert summary["memory_bytes"] >= plugin.learner.buffer.nbytes + plugin.nbytes
    # the learner's checkpoint (with the plug-in's state) loads without unpickling objects
    buf = io.BytesIO()
    torch.save(plugin.learner.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    plugin.learner.load_state_dict(state)


@pytest.mark.parametrize("name,args", [("ddn", {"lookahead": "step", "params": "head"}), ("l2y", {}),
                                       ("random-labels", {}), ("label-smoothing", {"eps": 0.5})])
def test_other_label_sources_train(name, args):
    plugin = PLUGINS[name](**args)
    er = er_with(plugin)
    before = [w.detach().clone() for w in getattr(plugin, "label_parameters", list)()]
    for i in range(6):
        losses = er.observe(images(4, i), torch.tensor([0, 1, 2, 3]), 0)
        assert all(torch.isfinite(torch.as_tensor(v)) for v in losses.values())
    after = getattr(plugin, "label_parameters", list)()
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
