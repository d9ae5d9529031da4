"""Learning distilled memories by back-propagation through time (Sec. 4.2, Algorithm 1).

One outer step: sample a label subset Y', recall the synthetic set for Y' (Eq. 2),
initialise a fresh network θ_0, run T inner SGD steps *with momentum* on minibatches
of the recalled set, take the loss J on a real minibatch with labels in Y', and
back-propagate J through the whole unrolled trajectory to the memory's parameters φ.

Exact reverse mode through momentum SGD.  Forward (Alg. 1 lines 8–12):
    m_t = β m_{t-1} + ∇_θ L_t(θ_{t-1}, x),   θ_t = θ_{t-1} − α m_t.
Backward, with adjoints θ̄_T = ∇J(θ_T), m̄_T = 0, for t = T … 1:
    m̄ ← m̄ − α θ̄                          (θ_t depends on m_t)
    θ̄ ← θ̄ + (∂g_t/∂θ)ᵀ m̄,  x̄ += (∂g_t/∂x)ᵀ m̄   (one vector-Jacobian product of the gradient)
    m̄ ← β m̄                               (m_t depends on m_{t-1})

Memory: the reverse pass needs θ_{t-1} for every t.  Storing them all (what the
public code does, on CPU) costs T × model.  We store (θ, m) only every k steps
(k = ⌈√T⌉ by default) and, walking the segments backwards, recompute each segment's
θs forward from its checkpoint, so at most ⌈T/k⌉ checkpoints + k parameter sets are
alive: O(√T × model) memory for one extra forward pass of the inner loop.  The
minibatch indices and augmentation seed of every step are kept, so the recomputation
is bit-identical.  Functional steps use ``torch.func`` (grad, vjp, functional_call).

Learning the inner learning rate (``learn_inner_lr``, ours; the paper keeps α_θ fixed, while
MTT-style distillers learn it): θ_t = θ_{t-1} − α m_t gives dJ/dα = −Σ_t ⟨θ̄_t, m_t⟩, read off
the same reverse pass (m_t rebuilt from the stored m_{t-1} and the gradient the VJP already
evaluates), and α = exp(log α) is stepped by the outer optimiser beside the memory.

Rolling back a collapse (``collapse_guard``, ours): outer steps can drift a memory to where the
inner steps kill every hidden unit of a fresh network's first layer (an MLP trained 30 steps on a
broken Rotated MNIST memory had none alive, its recalls spread 3x the healthy ones'); the outer loss
then sits at chance, ln |Y'|, the hypergradient through the dead units is zero, and the memory
never comes back.  The drift takes tens of steps, so undoing the last one does not save it (tried).
With the guard the distiller keeps the state (memory, optimiser, α_θ) of the last healthy moment,
taken every ``GUARD_EVERY`` steps while a running mean of the losses is at most 0.8 ln |Y'| and
within 25 % of its lowest such value (so not a state already drifting away); a step
whose loss comes back at chance (>= 0.95 ln |Y'|, or not finite) restores it, takes no update, and
halves the outer rate from then on (on top of any schedule).  A memory that never collapses takes
exactly the steps it takes without the guard.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vjp

from memdistill.distill.augment import AUGMENTATIONS, flip_rotate
from memdistill.distill.memories import DistilledMemory
from memdistill.nets.base import batch_statistics

Params = dict[str, torch.Tensor]
OUTER_OPTIMIZERS = ("adam", "sgd")
OUTER_LR_DECAYS = ("none", "cosine")
INNER_SAMPLINGS = ("uniform", "per-class")


@dataclass
class BPTTConfig:
    unroll: int = 10                   # T, inner steps
    inner_lr: float = 0.01             # α_θ (public code: 0.01)
    inner_momentum: float = 0.9        # β_θ (public code: 0.9)
    inner_batch: int | None = None     # recalled samples per inner step (None: all of Y')
    inner_sampling: str = "per-class"  # per-class (the public code: the same number per class) | uniform
    real_batch_per_class: int = 32     # real samples per sampled class for the outer loss
    classes_per_step: int | None = None  # |Y'| (None: every class)
    outer_optimizer: str = "adam"      # adam | sgd  (public code: sgd lr 0.1 momentum 0.5)
    outer_lr: float = 0.01
    outer_momentum: float = 0.5        # sgd only
    outer_lr_decay: str = "none"       # none | cosine: from outer_lr to 0 over the steps of run()
    clip: float | None = 2.0           # max norm of the outer gradient (public code: 2)
    augment: str = "none"              # none | flip-rotate (same draw for real and synthetic)
    checkpoint_every: int | None = None  # k; None: ceil(sqrt(T)); 1 stores every step
    learn_inner_lr: bool = False       # ours: α_θ = exp(log α) learned by the outer optimiser too
    collapse_guard: bool = False       # ours: roll back to the last healthy state when the loss hits chance
    seed: int = 0

    def validate(self) -> None:
        def positive_int(name, value, allow_none=False):
            if value is None and allow_none:
                return
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
        positive_int("unroll", self.unroll)
        positive_int("inner_batch", self.inner_batch, allow_none=True)
        positive_int("real_batch_per_class", self.real_batch_per_class)
        positive_int("classes_per_step", self.classes_per_step, allow_none=True)
        positive_int("checkpoint_every", self.checkpoint_every, allow_none=True)
        if not self.inner_lr > 0 or not self.outer_lr > 0:
            raise ValueError("inner_lr and outer_lr must be positive")
        if not 0 <= self.inner_momentum < 1 or not 0 <= self.outer_momentum < 1:
            raise ValueError("momentum must be in [0, 1)")
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            raise ValueError(f"outer_optimizer: unknown value {self.outer_optimizer!r}; "
                             f"allowed: {', '.join(OUTER_OPTIMIZERS)}")
        if self.inner_sampling not in INNER_SAMPLINGS:
            raise ValueError(f"inner_sampling: unknown value {self.inner_sampling!r}; "
                             f"allowed: {', '.join(INNER_SAMPLINGS)}")
        if self.outer_lr_decay not in OUTER_LR_DECAYS:
            raise ValueError(f"outer_lr_decay: unknown value {self.outer_lr_decay!r}; "
                             f"allowed: {', '.join(OUTER_LR_DECAYS)}")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment: unknown value {self.augment!r}; allowed: {', '.join(AUGMENTATIONS)}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError("clip must be positive (or None for no clipping)")


def inner_minibatch(labels: torch.Tensor, size: int | None, sampling: str, g: torch.Generator) -> torch.Tensor:
    """Indices into the recalled set for one inner step (Alg. 1 line 9).

    ``per-class`` (the default): the same number from every class, as the public code's
    compressor does (``compressor_minibatch_size`` recalls per class each inner step); when
    ``size`` is not a multiple of the number of classes, randomly chosen classes give one
    more.  ``uniform``: ``size`` samples drawn without replacement from the whole set, so a
    class can be missing from a step (the only draw before 2026-12-06's fourth session; on
    MNIST IPC 1 it cost the addressable memory 6.4 points, docs/benchmarks.md).  ``size``
    None or at least the set's size: the whole set."""
    n = len(labels)
    if size is None or size >= n:
        return torch.arange(n)
    if sampling == "uniform":
        return torch.randperm(n, generator=g)[:size]
    labels = labels.cpu()
    classes = labels.unique()
    per, extra = divmod(size, len(classes))
    one_more = torch.zeros(len(classes), dtype=torch.long)
    one_more[torch.randperm(len(classes), generator=g)[:extra]] = 1
    picked = []
    for c, bonus in zip(classes, one_more.tolist()):
        pool = (labels == c).nonzero().flatten()
        picked.append(pool[torch.randperm(len(pool), generator=g)[:per + bonus]])
    return torch.cat(picked)


@dataclass
class UnrollResult:
    outer_loss: float
    grad_images: torch.Tensor      # dJ/dx for the recalled images (pre-augmentation)
    stored_param_sets: int         # peak number of parameter-sized tensors kept for the reverse pass
    param_bytes: int               # bytes of one parameter set
    grad_lr: float | None = None   # dJ/dα (with lr_grad=True)


def _add(a: Params, b: Params, scale: float = 1.0) -> Params:
    return {k: a[k] + scale * b[k] for k in a}


def _scale(a: Params, s: float) -> Params:
    return {k: s * v for k, v in a.items()}


class MomentumUnroll:
    """T steps of SGD with momentum on a fixed recalled set, differentiated exactly.

    ``model`` only supplies the architecture (``functional_call``); parameters are
    passed explicitly.  ``batches[t]`` are the recalled-set indices of inner step t
    and ``augment(x)`` (optional) is applied to every inner batch and to the real batch.
    """

    def __init__(self, model: nn.Module, lr: float, momentum: float,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 checkpoint_every: int | None = None):
        self.model = model
        self.buffers = dict(model.named_buffers())
        self.lr = lr
        self.momentum = momentum
        self.augment = augment or (lambda x: x)
        self.checkpoint_every = checkpoint_every

    def loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Batch-norm layers (reduced-resnet18) normalise with the batch's statistics: an
        # in-place update of running averages cannot run inside torch.func transforms.
        with batch_statistics(self.model):
            logits = functional_call(self.model, (params, self.buffers), (self.augment(x),))
        return F.cross_entropy(logits, y)

    def _step(self, theta: Params, m: Params, x: torch.Tensor, y: torch.Tensor) -> tuple[Params, Params]:
        # Alg. 1 lines 10–12: m_t = β m_{t-1} + dL/dθ_{t-1};  θ_t = θ_{t-1} − α m_t
        g = grad(self.loss)(theta, x, y)
        m = {k: self.momentum * m[k] + g[k] for k in g}
        theta = {k: theta[k] - self.lr * m[k] for k in theta}
        return theta, m

    def forward(self, theta0: Params, images: torch.Tensor, labels: torch.Tensor,
                batches: list[torch.Tensor]) -> Params:
        """θ_T without any graph (for evaluation and for tests)."""
        theta = {k: v.detach() for k, v in theta0.items()}
        m = {k: torch.zeros_like(v) for k, v in theta.items()}
        with torch.no_grad():
            for idx in batches:
                theta, m = self._step(theta, m, images[idx], labels[idx])
        return theta

    def hypergradient(self, theta0: Params, images: torch.Tensor, labels: torch.Tensor,
                      batches: list[torch.Tensor], real_x: torch.Tensor, real_y: torch.Tensor,
                      lr_grad: bool = False) -> UnrollResult:
        """J(θ_T) on the real batch and dJ/d(images), by checkpointed reverse mode; with
        ``lr_grad`` also dJ/dα (the recomputation then keeps each segment's momenta too)."""
        T = len(batches)
        k = self.checkpoint_every or max(1, math.ceil(math.sqrt(T)))
        images = images.detach()
        theta = {n: v.detach() for n, v in theta0.items()}
        m = {n: torch.zeros_like(v) for n, v in theta.items()}
        checkpoints: dict[int, tuple[Params, Params]] = {}
        with torch.no_grad():
            for t, idx in enumerate(batches):           # state before step t+1
                if t % k == 0:
                    checkpoints[t] = (theta, m)
                theta, m = self._step(theta, m, images[idx], labels[idx])
        # Outer loss (Alg. 1 line 15) and its gradient at θ_T.
        g_theta, outer = grad_and_value(self.loss)(theta, real_x, real_y)
        g_theta = {n: v.detach() for n, v in g_theta.items()}
        g_m = {n: torch.zeros_like(v) for n, v in g_theta.items()}
        g_images = torch.zeros_like(images)
        g_lr = 0.0
        peak_sets = 2 * len(checkpoints) + 2   # checkpoints + the running (θ, m)
        for start in sorted(checkpoints, reverse=True):
            stop = min(start + k, T)
            # Recompute θ_start .. θ_{stop-1} from the checkpoint (same batches, same seeds).
            theta_c, m_c = checkpoints.pop(start)
            thetas, moms = [theta_c], [m_c]
            with torch.no_grad():
                for t in range(start, stop - 1):
                    theta_c, m_c = self._step(theta_c, m_c, images[batches[t]], labels[batches[t]])
                    thetas.append(theta_c)
                    if lr_grad:
                        moms.append(m_c)
            peak_sets = max(peak_sets, 2 * (len(checkpoints) + 1) + len(thetas) + (len(moms) if lr_grad else 0))
            for t in range(stop - 1, start - 1, -1):
                theta_prev = thetas.pop()
                m_prev = moms.pop() if lr_grad else None
                idx = batches[t]
                y = labels[idx]
                g_t, pullback = vjp(lambda p, x: grad(self.loss)(p, x, y), theta_prev, images[idx])
                if lr_grad:                              # dJ/dα += −⟨θ̄_{t+1}, m_{t+1}⟩
                    g_lr -= sum(float((g_theta[n] * (self.momentum * m_prev[n] + g_t[n].detach())).sum())
                                for n in g_theta)
                g_m = _add(g_m, g_theta, -self.lr)     # m̄ ← m̄ − α θ̄
                d_theta, d_x = pullback(g_m)             # (∂g/∂θ)ᵀ m̄, (∂g/∂x)ᵀ m̄
                g_theta = _add(g_theta, d_theta)         # θ̄ ← θ̄ + (∂g/∂θ)ᵀ m̄
                g_images.index_add_(0, idx, d_x)
                g_m = _scale(g_m, self.momentum)         # m̄ ← β m̄
        param_bytes = sum(v.numel() * v.element_size() for v in theta0.values())
        return UnrollResult(float(outer), g_images, peak_sets, param_bytes, g_lr if lr_grad else None)


def cosine_outer_lr(base_lr: float, progress: float) -> float:
    """The outer rate at ``progress`` in [0, 1] of a cosine decay from ``base_lr`` to 0 (ours; the
    public code keeps its rate constant.  Compress-recall's late, small tasks need it; at MNIST IPC 1
    it did not raise the accuracy, docs/benchmarks.md)."""
    progress = min(max(progress, 0.0), 1.0)
    return base_lr * 0.5 * (1 + math.cos(math.pi * progress))


def set_outer_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + 17) % (2**62)


class BPTTDistiller:
    """Algorithm 1: learns a :class:`DistilledMemory` from a labelled image set.

    ``real_images`` are uint8 (N, C, H, W) on the device; ``mean``/``std`` turn them into
    the network's input space (the memory's space).  ``make_network()`` builds a fresh,
    randomly initialised network (called under a per-step seed).  Every outer step's
    randomness comes from (seed, step), so a run continued from ``state_dict`` repeats.
    """

    def __init__(self, memory: DistilledMemory, make_network: Callable[[], nn.Module],
                 real_images: torch.Tensor, real_labels: torch.Tensor, mean, std,
                 config: BPTTConfig, device: torch.device | str = "cpu",
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        config.validate()
        self.transform = transform      # applied after normalisation (e.g. ZCA whitening)
        self.memory = memory
        self.make_network = make_network
        self.config = config
        self.device = torch.device(device)
        self.real_images = real_images.to(self.device)
        self.real_labels = real_labels.to(self.device)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).reshape(shape)
        self.std = torch.tensor(std, device=self.device).reshape(shape)
        self._index_real()
        if any(len(ix) == 0 for ix in self.class_index):
            raise ValueError("every class of the memory needs real samples")
        params = [p for p in memory.parameters() if p.requires_grad]
        # log α_θ: a parameter of the outer problem only with learn_inner_lr (then stepped by the
        # same optimiser, outside the memory's gradient clipping)
        self.log_inner_lr = torch.nn.Parameter(torch.tensor(math.log(config.inner_lr), dtype=torch.float64),
                                               requires_grad=config.learn_inner_lr)
        if config.learn_inner_lr:
            params = params + [self.log_inner_lr]
        if config.outer_optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=config.outer_lr)
        else:
            self.optimizer = torch.optim.SGD(params, lr=config.outer_lr, momentum=config.outer_momentum)
        self.step = 0
        self.rollbacks = 0                # collapse_guard: collapses rolled back so far
        self.rate_scale = 1.0             # collapse_guard: halved at every rollback
        self._running_loss = None         # collapse_guard: running mean of the accepted losses
        self._healthy = None              # collapse_guard: the state rolled back to
        self._best_running = math.inf     # collapse_guard: the lowest running loss kept as healthy
        self._accepted = 0

    def _index_real(self) -> None:
        self.class_index = [torch.nonzero(self.real_labels == c).flatten()
                            for c in range(self.memory.num_classes)]

    def set_real(self, real_images: torch.Tensor, real_labels: torch.Tensor) -> None:
        """Replace the real set the outer loss draws from, keeping the optimiser's state
        (compress-then-recall distils while a task streams, each step on the stream's
        minibatch and the raw samples held).  A class without real samples here is left out
        of the label subset Y' of the steps that follow."""
        self.real_images = real_images.to(self.device)
        self.real_labels = real_labels.to(self.device)
        self._index_real()
        if all(len(ix) == 0 for ix in self.class_index):
            raise ValueError("the real set holds no sample of the memory's classes")

    @property
    def inner_lr(self) -> float:
        """α_θ of the next outer step (exactly the configured one unless ``learn_inner_lr``)."""
        if not self.config.learn_inner_lr:
            return self.config.inner_lr
        return float(self.log_inner_lr.detach().exp())

    def _to_input(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std
        return x if self.transform is None else self.transform(x)

    def _begin_step(self) -> tuple[torch.Generator, list[int], nn.Module]:
        """This step's random generator, label subset Y' (Alg. 1 line 4) and fresh network θ_0
        (line 6), all determined by (seed, step) so a continued run repeats them."""
        seed = _step_seed(self.config.seed, self.step)
        g = torch.Generator().manual_seed(seed)
        C = self.memory.num_classes
        n_cls = min(self.config.classes_per_step or C, C)
        classes = torch.randperm(C, generator=g)[:n_cls].sort().values.tolist()
        # only classes with real samples (all of them unless set_real left some out)
        classes = [c for c in classes if len(self.class_index[c])] or \
            [c for c in range(C) if len(self.class_index[c])]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self.make_network().to(self.device)
        return g, classes, net

    def outer_step(self) -> dict[str, float]:
        cfg = self.config
        started = time.perf_counter()
        g, classes, net = self._begin_step()
        # Line 5: address the memories (Eq. 2) -> recalled set for Y', with a graph to φ.
        recalled, labels = self.memory.recall(classes)
        theta0 = {n: p.detach() for n, p in net.named_parameters()}
        # Line 9: the minibatch of every inner step, drawn now so recomputation repeats it.
        batches = [inner_minibatch(labels, cfg.inner_batch, cfg.inner_sampling, g).to(self.device)
                   for _ in range(cfg.unroll)]
        # Line 14: a real minibatch with labels in Y'.
        real_idx = torch.cat([ix[torch.randint(len(ix), (cfg.real_batch_per_class,), generator=g)
                                 .to(self.device)] for ix in (self.class_index[c] for c in classes)])
        real_x = self._to_input(self.real_images[real_idx])
        real_y = self.real_labels[real_idx]
        augment = None
        if cfg.augment == "flip-rotate":
            aug_seed = int(torch.randint(2**31 - 1, (), generator=g))
            augment = lambda x: flip_rotate(x, aug_seed)  # noqa: E731 - same draw for real and synthetic
        lr = self.inner_lr
        unroll = MomentumUnroll(net, lr, cfg.inner_momentum, augment, cfg.checkpoint_every)
        result = unroll.hypergradient(theta0, recalled.detach(), labels.to(self.device),
                                      batches, real_x, real_y, lr_grad=cfg.learn_inner_lr)
        # Line 15: chain dJ/dx' through the recall (Eq. 2) into φ and take an outer step.
        self.optimizer.zero_grad(set_to_none=True)
        recalled.backward(result.grad_images)
        params = [p for p in self.memory.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip else float("inf"))
        if cfg.learn_inner_lr:                           # dJ/dlog α = α dJ/dα
            self.log_inner_lr.grad = torch.tensor(lr * result.grad_lr, dtype=torch.float64)
        rolled_back = cfg.collapse_guard and self._collapsed(result.outer_loss, len(classes))
        if rolled_back:
            self._roll_back()
        else:
            self._update()
        self.step += 1
        entry = {"inner_lr": lr} if cfg.learn_inner_lr else {}
        if cfg.collapse_guard:
            entry["rollbacks"] = self.rollbacks
        return {**entry, "step": self.step, "outer_loss": result.outer_loss, "grad_norm": float(norm),
                "seconds": time.perf_counter() - started, "stored_param_sets": result.stored_param_sets,
                "stored_mb": result.stored_param_sets * result.param_bytes / 2**20}

    # -- collapse_guard ---------------------------------------------------------------------
    GUARD_EVERY = 10

    def _update(self) -> None:
        """The optimiser's step at the scheduled rate times ``rate_scale`` (1 until a roll-back)."""
        rates = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] *= self.rate_scale
        self.optimizer.step()
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        self._accepted += 1

    def _collapsed(self, loss: float, n_classes: int) -> bool:
        """Has the loss come back at chance after the memory had learned?  Otherwise keeps the
        running mean of the losses, and a healthy state every ``GUARD_EVERY`` steps."""
        chance = math.log(max(2, n_classes))
        if self._healthy is not None and (not math.isfinite(loss) or loss >= 0.95 * chance):
            return True
        if not math.isfinite(loss):
            return False
        self._running_loss = loss if self._running_loss is None else 0.9 * self._running_loss + 0.1 * loss
        # healthy: learned (<= 0.8 ln |Y'|) and not drifting away (within 25 % of the best so far)
        if self._accepted % self.GUARD_EVERY == 0 and self._running_loss <= min(
                0.8 * chance, 1.25 * self._best_running):
            self._best_running = min(self._best_running, self._running_loss)
            self._healthy = {"memory": copy.deepcopy(self.memory.state_dict()),
                             "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                             "log_inner_lr": self.log_inner_lr.detach().clone(),
                             "running_loss": self._running_loss}
        return False

    def _roll_back(self) -> None:
        rates = [group["lr"] for group in self.optimizer.param_groups]   # a schedule's current rates
        self.memory.load_state_dict(self._healthy["memory"])
        self.optimizer.load_state_dict(self._healthy["optimizer"])
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        with torch.no_grad():
            self.log_inner_lr.copy_(self._healthy["log_inner_lr"])
        self._running_loss = self._healthy["running_loss"]
        self.rate_scale *= 0.5
        self.rollbacks += 1

    def run(self, steps: int, progress: bool = True, log_every: int = 10,
            callback: Callable[[dict], None] | None = None) -> list[dict]:
        """``steps`` outer steps; returns the log (every ``log_every`` steps and the last).
        With ``outer_lr_decay="cosine"`` the outer rate decays to 0 over these ``steps``."""
        from tqdm.auto import tqdm
        import sys
        log = []
        bar = tqdm(total=steps, desc="distill", disable=not progress, dynamic_ncols=True, file=sys.stderr)
        for i in range(steps):
            if self.config.outer_lr_decay == "cosine":
                set_outer_lr(self.optimizer, cosine_outer_lr(self.config.outer_lr, i / steps))
            entry = self.outer_step()
            if self.config.outer_lr_decay != "none":
                entry["outer_lr"] = self.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{entry['outer_loss']:.3f}", refresh=False)
            bar.update(1)
            if i % log_every == 0 or i == steps - 1:
                log.append({k: (round(v, 6) if isinstance(v, float) else v) for k, v in entry.items()})
                if callback is not None:
                    callback(log[-1])
        bar.close()
        return log

    def state_dict(self) -> dict:
        return {"memory": self.memory.state_dict(), "optimizer": self.optimizer.state_dict(),
                "step": self.step, "config": asdict(self.config), "inner_lr": self.inner_lr}

    def load_state_dict(self, state: dict) -> None:
        self.memory.load_state_dict(state["memory"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        if "inner_lr" in state:
            with torch.no_grad():
                self.log_inner_lr.fill_(math.log(state["inner_lr"]))
