"""Data-Distill-Net (DDN): learned soft labels for the replay buffer, as a plug-in.

Liao, Wang, Wu, Wang, Meng, "Data-Distill-Net: A Data Distillation Approach
Tailored for Reply-based Continual Learning", arXiv 2505.20135 (no public code;
this file follows the paper's text, equations and appendix).

The buffer keeps real images chosen by the method (reservoir sampling); only their
labels are distilled.  A small hyper-network G_w maps the classifier's predicted
probabilities for a buffer sample (gradient stopped) to a soft label (Eq. 5,
Sec. 4.2), and it is trained so that one classifier step on the soft-labelled
buffer lowers the loss on old buffer + current task (the bi-level problem, Eq. 6).

How each piece maps onto this file:

* soft label (Eq. 8 and the end of Sec. 4.2):
  ``y~ = normalise(onehot(y) + (1 - beta) G_w(p) + beta G_old(p))``, with G_old
  the copy of G_w saved at the end of the previous task (no G_old during the first
  task), G_w restricted to the classes seen so far and G_old to the classes seen
  when it was saved (its scores for later classes come from output units that never
  received a gradient: arbitrary, and 90 % of G's share with beta = 0.9);
* classifier loss (Eq. 7): ``L(new) + alpha * L(buffer, y~)``.  The plug-in answers
  the method's ``memory_targets`` with ``alpha * y~``: every method here uses a
  cross-entropy, which is linear in its targets, so this is alpha times the CE
  against y~ in place of the method's hard-label buffer CE (ER, DER++'s beta term,
  ER-ACE's replay term, CLS-ER's CE on the memory part).  By default (``hard=True``,
  the bi-level plug-ins) the hard-label CE is kept beside it, CE(y) + alpha CE(y~),
  as in Alg. 2's inner loss: without it the learned G cost 30 points on seq-digits;
  ``hard=False`` is Eq. 7 read literally;
* G_w's update (Eq. 6, Alg. 2, App. A Eq. 11-12): a look-ahead SGD step
  ``theta'(w) = theta - eta * grad_theta[CE(x_in, y) + alpha CE(x_in, y~(w))]`` on a
  buffer batch, then Adam on w for the hard-label CE of ``theta'(w)`` on a batch
  from buffer + current stream (lr 1e-3 for CIFAR-10; 1e-2 CIFAR-100, 1e-4
  Tiny-ImageNet, App. C.2).

The hypergradient is exact for the one-step look-ahead and needs no double
backward.  The soft labels enter the inner loss linearly, so (B = batch size)

    dL_out / d y~_ic = eta * alpha / B * < grad_theta log p_theta(c | x_i),  g_out >,
    g_out = grad_theta L_out(theta'),

i.e. one forward-mode Jacobian-vector product of the buffer log-probabilities
along g_out (``torch.func.jvp``) gives all B x C entries; w's gradient is then an
ordinary backward through the small G_w.  (Theorem 5.2's inner product of
gradients is the first-order form of the same quantity.)  Cost options:

* ``lookahead="own"``: the look-ahead of Alg. 2 from the current
  parameters on the buffer batch the classifier just replayed (fresh
  augmentation): inner forward+backward, outer forward+backward, one JVP;
* ``lookahead="step"`` (default): the classifier's own step *is* the look-ahead (its buffer
  term used y~(w), so theta_{k+1} = theta_{k+1}(w)); only the outer gradient at
  theta_{k+1} and the JVP at theta_k (a copy of the parameters taken before the
  step) remain.  Differences from the exact derivative of that step: the JVP sees
  the buffer batch alone (batch-norm statistics) with a fresh augmentation, and
  the method's own weight on the buffer CE (e.g. DER++'s beta) is left out,
  a constant factor that Adam does not see, and the log-probabilities run over the
  seen classes (as ER-ACE's buffer CE does; ER's runs over all logits);
* ``every=k``: update G every k-th step (soft labels are produced every step;
  default 2: with ``step``, 1.40x ER's step time, docs/benchmarks.md);
* ``params="head"``: look-ahead and hypergradient over the linear head only
  (features computed once without gradient): far cheaper, an approximation.
* ``center=True`` (ours): G's scores centred on the batch mean before the softmax,
  so G can only tilt samples differently, not give all of them one class prior (the
  collapse measured on CIFAR-10, docs/benchmarks.md).

The outer batch has ``outer_batch`` samples (32), the fraction ``outer_stream``
(0.5) from the stream batch, the rest from the buffer.  ``outer_balance=True`` (ours)
weights its CE so that every class present counts equally: half of an unweighted outer
batch is the current task's two classes, so the look-ahead is scored on a class prior
skewed toward the newest classes, and the labels that lower it are the recency bias
class-IL forgetting is made of (docs/benchmarks.md, "What G learned").  Measured on
CIFAR-10: balancing removes that pull, and G then learns the opposite prior (the oldest
classes), so it is off by default.  The look-ahead forwards use
batch statistics without touching the running averages of batch-norm layers, so the
plug-in leaves the classifier as it found it; the JVP (and the "own" inner step)
runs in fp32 whatever the run's precision.

Table 3's other label sources are small plug-ins beside it: ``random-labels``
(a random distribution added to the one-hot label, normalised), ``label-smoothing``
(eps = 0.1 or 0.5) and ``l2y`` (a per-sample soft-label table trained by the same
bi-level step, without G).
"""
from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from memdistill.memory import MemoryBatch
from memdistill.nets.base import batch_statistics
from memdistill.methods.plugin import Plugin


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """Losses run in fp32 (or fp64) whatever precision the network computes in."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class _Features(nn.Module):
    """``model.features`` as a module, so it can be called with other parameters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


class LabelPlugin(Plugin):
    """A plug-in that supplies the memory loss's targets: alpha * y~ (Eq. 7), y~ a
    distribution over the classes seen so far."""
    name = "labels"
    options: dict[str, object] = {"alpha": 1.0, "hard": False}

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"plugin {self.name} has no option {unknown[0]!r}; "
                             f"allowed: {', '.join(self.options)}")
        self.opts = {**self.options, **options}
        self.check_options()

    def check_options(self) -> None:
        self._require("alpha", lambda v: v >= 0, "a number >= 0")
        self._require_bool("hard")

    def _require_bool(self, key: str) -> None:
        if not isinstance(self.opts[key], bool):
            raise ValueError(f"plugin {self.name}: option {key} must be true or false "
                             f"(got {self.opts[key]!r})")

    def _require(self, key: str, ok, what: str) -> None:
        value = self.opts[key]
        valid = False
        try:
            valid = not isinstance(value, bool) and bool(ok(value))
        except TypeError:
            pass
        if not valid:
            raise ValueError(f"plugin {self.name}: option {key} must be {what} (got {value!r})")

    # -- helpers --------------------------------------------------------------------
    def seen(self, device) -> torch.Tensor:
        keep = torch.zeros(self.learner.ctx.num_classes, dtype=torch.bool, device=device)
        keep[self.learner.seen_classes] = True
        return keep

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The classifier's predicted probabilities over the seen classes, gradient stopped."""
        return self.learner.seen_mask(at_least_fp32(logits.detach())).softmax(1)

    def onehot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.learner.ctx.num_classes).float()

    def seen_softmax(self, scores: torch.Tensor) -> torch.Tensor:
        """A distribution over the seen classes (0 elsewhere) from unnormalised scores."""
        return self.learner.seen_mask(scores).softmax(1)

    # -- what a label source defines ------------------------------------------------
    def soft_labels(self, batch: MemoryBatch, probs: torch.Tensor) -> torch.Tensor:
        """y~ for the memory batch: one distribution per sample (rows sum to 1)."""
        raise NotImplementedError

    def memory_targets(self, batch: MemoryBatch, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            y = self.soft_labels(batch, self.probabilities(logits))
        # CE is linear in its targets: CE(z, alpha * y~) = alpha * CE(z, y~), Eq. 7.
        # hard=True keeps the hard-label term beside it, CE(z, y) + alpha * CE(z, y~),
        # the inner loss of Alg. 2 (and Fig. 4's reading that the classifier "still
        # relies on hard labels").
        targets = self.opts["alpha"] * y
        return targets + self.onehot(batch.labels) if self.opts["hard"] else targets


class RandomLabels(LabelPlugin):
    """Table 3 'RANDOM': uniform noise added to the one-hot label, normalised.

    The noise is a random distribution over the seen classes (U(0, 1) per class,
    normalised), weighted by ``noise`` and added to the one-hot label:
    y~ = normalise(onehot + noise * u / sum(u)).  With noise = 1 it has the form of
    DDN's label, G's output replaced by noise; fresh noise at every replay."""
    name = "random-labels"
    options = {**LabelPlugin.options, "noise": 1.0}

    def check_options(self) -> None:
        super().check_options()
        self._require("noise", lambda v: v >= 0, "a number >= 0")

    def soft_labels(self, batch, probs):
        u = torch.rand(probs.shape, generator=self.learner.generator).to(probs.device) * self.seen(probs.device)
        y = self.onehot(batch.labels) + self.opts["noise"] * u / u.sum(1, keepdim=True)
        return y / y.sum(1, keepdim=True)


class LabelSmoothing(LabelPlugin):
    """Table 3 'ER LS': (1 - eps) * one-hot + eps / K over the K seen classes."""
    name = "label-smoothing"
    options = {**LabelPlugin.options, "eps": 0.1}

    def check_options(self) -> None:
        super().check_options()
        self._require("eps", lambda v: 0 <= v <= 1, "a number in [0, 1]")

    def soft_labels(self, batch, probs):
        seen = self.seen(probs.device).float()
        eps = self.opts["eps"]
        return (1 - eps) * self.onehot(batch.labels) + eps * seen / seen.sum()


class BilevelLabels(LabelPlugin):
    """Soft labels with learnable parameters trained by the bi-level problem (Eq. 6)."""
    name = "bilevel"
    # Defaults: the hard-label term kept (Alg. 2's inner loss; without it G learned labels
    # that cost 30 points on seq-digits, docs/benchmarks.md), and the cheap look-ahead
    # (the classifier's own step, G updated every 2nd step: <= 1.5x ER's time).
    options = {**LabelPlugin.options, "hard": True, "lr": 1e-3, "every": 2, "lookahead": "step",
               "params": "all", "outer_batch": 32, "outer_stream": 0.5, "outer_balance": False,
               "inner_lr": None}

    def check_options(self) -> None:
        super().check_options()
        self._require("lr", lambda v: v > 0, "a number > 0")
        self._require("every", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
        self._require("outer_batch", lambda v: isinstance(v, int) and v >= 2, "an integer >= 2")
        self._require("outer_stream", lambda v: 0 <= v <= 1, "a number in [0, 1]")
        self._require_bool("outer_balance")
        self._require("lookahead", lambda v: v in ("own", "step"), "one of: own, step")
        self._require("params", lambda v: v in ("all", "head"), "one of: all, head")
        if self.opts["inner_lr"] is not None:
            self._require("inner_lr", lambda v: v > 0, "a number > 0 (or unset: the classifier's lr)")

    def attach(self, learner) -> None:
        super().attach(learner)
        self.build()
        self.optimizer = torch.optim.Adam(self.label_parameters(), lr=self.opts["lr"])
        self.features_of = _Features(learner.model)
        self.steps = 0
        self._record: dict | None = None

    def build(self) -> None:
        """Create the learnable label parameters (the learner is attached)."""
        raise NotImplementedError

    def label_parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    # -- the classifier's step --------------------------------------------------------
    def memory_targets(self, batch, logits):
        if self.steps % self.opts["every"] == 0:
            record = {"batch": batch}
            if self.opts["lookahead"] == "step":
                # theta_k and the probabilities G saw: the look-ahead is the step about to happen.
                record["probs"] = self.probabilities(logits)
                record["theta"] = {k: p.detach().clone() for k, p in self.learner.model.named_parameters()}
            self._record = record
        return super().memory_targets(batch, logits)

    def after_step(self, stream, batch) -> dict[str, float]:
        record, self._record = self._record, None
        self.steps += 1
        if record is None:
            return {}
        x_out, y_out = self.outer_batch(stream)
        x_in = self.learner.preprocess(record["batch"].images, self.learner.generator)
        if self.opts["lookahead"] == "own":
            y_soft, dy, outer = self.own_hypergradient(record["batch"], x_in, x_out, y_out)
        else:
            y_soft, dy, outer = self.step_hypergradient(record["batch"], record["probs"], record["theta"],
                                                        x_in, x_out, y_out)
        self.optimizer.zero_grad(set_to_none=True)
        y_soft.backward(dy)
        self.optimizer.step()
        return {f"{self.name}_outer": outer}

    def outer_batch(self, stream) -> tuple[torch.Tensor, torch.Tensor]:
        """Alg. 2's batch from M^{n-1} u T^n: the fraction ``outer_stream`` (default half)
        from the stream batch (current task), the rest drawn from the buffer."""
        images, labels = stream
        k = min(len(labels), round(self.opts["outer_batch"] * self.opts["outer_stream"]))
        memory = self.learner.buffer.sample(self.opts["outer_batch"] - k, self.learner.generator)
        x = self.learner.preprocess(torch.cat([images[:k], memory.images]), self.learner.generator)
        return x, torch.cat([labels[:k], memory.labels])

    # -- the hypergradient --------------------------------------------------------------
    def free_names(self) -> list[str]:
        names = [k for k, _ in self.learner.model.named_parameters()]
        return [k for k in names if k.startswith("head.")] if self.opts["params"] == "head" else names

    def logits_fn(self, theta: dict[str, torch.Tensor], x: torch.Tensor, autocast: bool = True):
        """free parameters -> logits on ``x``, the other parameters fixed at ``theta``.

        ``autocast=False`` computes in fp32 whatever the run's precision (forward-mode AD
        does not go through autocast)."""
        model, learner = self.learner.model, self.learner
        precision = learner.autocast if autocast else contextlib.nullcontext
        if self.opts["params"] == "all":
            def logits(free):
                with precision():
                    return at_least_fp32(functional_call(model, free, (x,)))
            return logits
        with torch.no_grad(), precision():
            feats = functional_call(self.features_of, {f"model.{k}": v for k, v in theta.items()}, (x,))
        feats = feats if autocast else at_least_fp32(feats)

        def head_logits(free):
            head = {k[len("head."):]: v for k, v in free.items()}
            with precision():
                return at_least_fp32(functional_call(model.head, head, (feats,)))
        return head_logits

    def outer_loss(self, logits: torch.Tensor, y_out: torch.Tensor) -> torch.Tensor:
        """The hard-label CE of Eq. 6's upper level; with ``outer_balance`` each class present
        in the outer batch weighs the same (the class-IL test set is balanced over seen classes)."""
        if not self.opts["outer_balance"]:
            return F.cross_entropy(logits, y_out)
        counts = torch.bincount(y_out, minlength=logits.shape[1]).to(logits.dtype)
        weight = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        return F.cross_entropy(logits, y_out, weight=weight)

    def outer_gradient(self, theta, x_out, y_out):
        """g_out = grad of the outer loss on the outer batch, at ``theta``."""
        free = {k: theta[k].detach().requires_grad_() for k in self.free_names()}
        loss = self.outer_loss(self.learner.seen_mask(self.logits_fn(theta, x_out)(free)), y_out)
        grads = torch.autograd.grad(loss, list(free.values()))
        return dict(zip(free, grads)), loss.detach()

    def label_cotangent(self, f_in, theta, g_out, eta: float) -> torch.Tensor:
        """dL_out/dy~ = eta * alpha / B * J_theta[log p(x_in)] g_out: one forward-mode JVP at
        ``theta`` (``f_in`` from :meth:`logits_fn` with ``autocast=False``), no double backward."""
        primal = {k: theta[k].detach() for k in g_out}
        _, tangent = jvp(lambda free: F.log_softmax(self.learner.seen_mask(f_in(free)), 1),
                         (primal,), (g_out,))
        return eta * self.opts["alpha"] / len(tangent) * tangent

    def inner_lr(self) -> float:
        lr = self.opts["inner_lr"]
        return float(self.learner.optimizer.param_groups[0]["lr"] if lr is None else lr)

    def own_hypergradient(self, batch, x_in, x_out, y_out):
        """Alg. 2 / App. A: look-ahead from the current parameters on ``x_in`` (Eq. 11),
        outer loss at theta' (Eq. 12).  Returns y~(w) (with its graph), dL_out/dy~ and L_out."""
        model = self.learner.model
        eta = self.inner_lr()
        with batch_statistics(model):
            theta = {k: p.detach() for k, p in model.named_parameters()}
            free = {k: theta[k].clone().requires_grad_() for k in self.free_names()}
            f_in = self.logits_fn(theta, x_in, autocast=False)   # shared with the JVP
            log_p = F.log_softmax(self.learner.seen_mask(f_in(free)), 1)
            y_soft = self.soft_labels(batch, log_p.detach().exp())
            # Alg. 2's inner loss: L(x_in, y) + alpha * L(x_in, y~(w))
            inner = F.nll_loss(log_p, batch.labels) \
                - self.opts["alpha"] * (y_soft.detach() * log_p).sum(1).mean()
            grads = torch.autograd.grad(inner, list(free.values()))
            ahead = dict(theta)
            ahead.update({k: (free[k] - eta * g).detach() for (k, g) in zip(free, grads)})
            g_out, outer = self.outer_gradient(ahead, x_out, y_out)
            dy = self.label_cotangent(f_in, theta, g_out, eta)
        return y_soft, dy, outer

    def step_hypergradient(self, batch, probs, theta_before, x_in, x_out, y_out):
        """The classifier's step theta_k -> theta_{k+1} as the look-ahead: outer gradient at
        theta_{k+1} (the current parameters), JVP at theta_k."""
        model = self.learner.model
        with batch_statistics(model):
            now = {k: p.detach() for k, p in model.named_parameters()}
            g_out, outer = self.outer_gradient(now, x_out, y_out)
            f_in = self.logits_fn(theta_before, x_in, autocast=False)
            dy = self.label_cotangent(f_in, theta_before, g_out, self.inner_lr())
        return self.soft_labels(batch, probs), dy, outer

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])


def label_net(num_classes: int, hidden: int) -> nn.Sequential:
    """G: probabilities -> scores, two hidden layers with ReLU (Sec. 4.2)."""
    return nn.Sequential(nn.Linear(num_classes, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


class DataDistillNet(BilevelLabels):
    """The DDN plug-in: y~ = normalise(onehot + (1 - beta) G_w(p) + beta G_old(p))."""
    name = "ddn"
    # center=True (ours, not the paper's) subtracts the batch mean of G's scores: G can then
    # not learn a sample-independent class prior, the collapse measured on CIFAR-10
    # (docs/benchmarks.md, "What G learned").
    options = {**BilevelLabels.options, "beta": 0.9, "hidden": 200, "center": False}

    def check_options(self) -> None:
        super().check_options()
        self._require("beta", lambda v: 0 <= v <= 1, "a number in [0, 1]")
        self._require("hidden", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
        self._require_bool("center")

    def build(self) -> None:
        ctx = self.learner.ctx
        self.net = label_net(ctx.num_classes, self.opts["hidden"]).to(ctx.device)
        self.old: nn.Module | None = None
        self.old_classes: torch.Tensor | None = None     # the classes G_old was trained on

    def label_parameters(self):
        return list(self.net.parameters())

    def generate(self, probs: torch.Tensor) -> torch.Tensor:
        """(1 - beta) G_w(p) + beta G_old(p) (Eq. 8); G_w alone before a G_old exists."""
        g = self.seen_softmax(self.scores(self.net, probs))
        if self.old is not None:
            beta = self.opts["beta"]
            old = self.scores(self.old, probs).masked_fill(~self.old_classes, torch.finfo(probs.dtype).min)
            g = (1 - beta) * g + beta * old.softmax(1)
        return g

    def scores(self, net: nn.Module, probs: torch.Tensor) -> torch.Tensor:
        """G's unnormalised scores, centred on the batch mean with ``center=True``."""
        z = net(probs)
        return z - z.mean(0, keepdim=True) if self.opts["center"] else z

    def soft_labels(self, batch, probs):
        # "we additionally add the corresponding one-hot label to y~ and then apply
        # normalization" (Sec. 4.2): both are distributions, so the sum is halved.
        return (self.onehot(batch.labels) + self.generate(probs)) / 2

    def end_task(self, task) -> None:
        """G_w of this task becomes the cached checkpoint G_old of the next (Eq. 8)."""
        self.old = copy.deepcopy(self.net).requires_grad_(False)
        self.old_classes = self.seen(self.learner.ctx.device)

    @property
    def nbytes(self) -> int:
        """G_w and G_old: what the buffer keeps besides images and labels."""
        return sum(self.nbytes_detail.values())

    @property
    def nbytes_detail(self) -> dict[str, int]:
        """G_w (``soft_label_net``) and, once a task has ended, G_old (``soft_label_net_old``)."""
        def size(net):
            return sum(p.element_size() * p.numel() for p in net.parameters())
        detail = {"soft_label_net": size(self.net)}
        if self.old is not None:
            detail["soft_label_net_old"] = size(self.old)
        return detail

    def state_dict(self) -> dict:
        return {**super().state_dict(), "net": self.net.state_dict(),
                "old": None if self.old is None else self.old.state_dict(),
                "old_classes": self.old_classes}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.net.load_state_dict(state["net"])
        if state["old"] is None:
            self.old = self.old_classes = None
        else:
            self.old = copy.deepcopy(self.net).requires_grad_(False)
            self.old.load_state_dict(state["old"])
            # checkpoints from before 2026-12-06 lack it: G_old then ran over the seen classes
            self.old_classes = state.get("old_classes")
            if self.old_classes is None:
                self.old_classes = self.seen(self.learner.ctx.device)


class LearnedLabels(BilevelLabels):
    """Table 3 'ER L2Y': a soft-label table, one row of scores per buffer slot, trained
    by the same bi-level step (no G, no G_old).  y~ = normalise(onehot + softmax(row)).

    A row starts at zero (uniform) and is reset when its slot receives a new sample
    (detected by a fingerprint of the stored image).  The default lr (0.1) is ours:
    a row is only updated when its slot is replayed, so 1e-3 would barely move it."""
    name = "l2y"
    options = {**BilevelLabels.options, "lr": 0.1}

    def build(self) -> None:
        buffer, ctx = self.learner.buffer, self.learner.ctx
        self.table = nn.Parameter(torch.zeros(buffer.capacity, ctx.num_classes, device=ctx.device))
        self.fingerprints = torch.full((buffer.capacity,), -1, dtype=torch.long, device=ctx.device)
        pixels = buffer.images[0].numel() if buffer.capacity else 1
        fixed = torch.Generator().manual_seed(0)
        self._weights = torch.randint(1, 2 ** 20, (pixels,), generator=fixed).to(ctx.device)

    def label_parameters(self):
        return [self.table]

    @property
    def nbytes(self) -> int:
        """The soft-label table (and the fingerprints that keep it in step with the buffer)."""
        return sum(t.element_size() * t.numel() for t in (self.table, self.fingerprints))

    def refresh(self, batch: MemoryBatch) -> None:
        """Reset the rows whose slot holds a different sample than when they were last used."""
        prints = (batch.images.reshape(len(batch), -1).long() * self._weights).sum(1)
        stale = batch.indices[prints != self.fingerprints[batch.indices]]
        if len(stale):
            self.table.data[stale] = 0.0
            for moment in self.optimizer.state.get(self.table, {}).values():
                if torch.is_tensor(moment) and moment.shape == self.table.shape:
                    moment[stale] = 0.0
            self.fingerprints[batch.indices] = prints

    def soft_labels(self, batch, probs):
        self.refresh(batch)
        return (self.onehot(batch.labels) + self.seen_softmax(self.table[batch.indices])) / 2

    def state_dict(self) -> dict:
        return {**super().state_dict(), "table": self.table.detach(), "fingerprints": self.fingerprints}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.table.data.copy_(state["table"])
        self.fingerprints.copy_(state["fingerprints"])


PLUGINS: dict[str, type[LabelPlugin]] = {
    "ddn": DataDistillNet,
    "l2y": LearnedLabels,
    "label-smoothing": LabelSmoothing,
    "random-labels": RandomLabels,
}
