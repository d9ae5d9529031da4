"""Single-step gradient matching (DC), the baseline of Remember the Past's Tables 1-2.

Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching" (ICLR 2021),
Algorithm 1.  Where BPTT (``bptt.py``) differentiates through T inner steps, DC
matches the gradients of *one* step: one outer step draws a freshly initialised
network θ and, ``match_loops`` times,

1. for every sampled class c, takes the network's gradient on a real batch of c and
   on the recalled images of c, and sums DC's layer-wise distance between them
   (below) over the classes;
2. takes one step of the memory's optimiser on that sum (the gradient reaches the
   memory's parameters through its recall, Eq. 2, so addressable memories can be
   matched too);
3. unless it was the last loop, trains θ for ``net_steps`` SGD steps on the recalled
   set (detached), so later matchings see a network along a training trajectory.

DC's distance between two gradients of one layer (its ``distance_wb``): reshape to
(output units, rest), sum over units of 1 − cos(g_real, g_syn); one-dimensional
parameters (biases, normalisation scales) are skipped, as in the public code.
Public code defaults: ``match_loops``/``net_steps`` = 1/1 (1 image per class),
10/50 (10), 50/10 (50); image SGD lr 0.1 momentum 0.5; 256 real images per class;
network SGD lr 0.01.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memdistill.distill.augment import flip_rotate
from memdistill.distill.bptt import BPTTConfig, BPTTDistiller


def dc_loops(ipc: int) -> tuple[int, int]:
    """(match_loops, net_steps) of the public code (``get_loops``) for ``ipc`` images per class."""
    if ipc <= 1:
        return 1, 1
    if ipc <= 10:
        return 10, 50
    return 50, 10


def layer_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """DC's distance for one parameter's gradients: sum over output units of 1 − cos."""
    if g_real.dim() == 1:
        return g_syn.new_zeros(())
    a = g_real.reshape(g_real.shape[0], -1)
    b = g_syn.reshape(g_syn.shape[0], -1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-6)
    return (1 - cos).sum()


def gradient_distance(g_real: list[torch.Tensor], g_syn: list[torch.Tensor]) -> torch.Tensor:
    return sum(layer_distance(r, s) for r, s in zip(g_real, g_syn))


@dataclass
class GradientMatchingConfig(BPTTConfig):
    """BPTT's options that apply (outer optimiser, lr, clip, real batch, classes per step,
    augmentation, seed) plus DC's loops; ``unroll``/``inner_*``/``checkpoint_every`` are unused."""
    match_loops: int = 1
    net_steps: int = 1
    net_lr: float = 0.01
    net_batch: int = 256

    def validate(self) -> None:
        super().validate()
        for name in ("match_loops", "net_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1 (got {value!r})")
        if not isinstance(self.net_steps, int) or self.net_steps < 0:
            raise ValueError(f"net_steps must be an integer >= 0 (got {self.net_steps!r})")
        if not self.net_lr > 0:
            raise ValueError("net_lr must be positive")


class GradientMatchingDistiller(BPTTDistiller):
    """DC's outer step in place of Algorithm 1's; the rest (optimiser over the memory's
    parameters, the run loop, state) is ``BPTTDistiller``'s."""

    def outer_step(self) -> dict[str, float]:
        cfg: GradientMatchingConfig = self.config
        started = time.perf_counter()
        g, classes, net = self._begin_step()
        params = [p for p in net.parameters() if p.requires_grad]
        net_optimizer = torch.optim.SGD(params, lr=cfg.net_lr)
        losses, norms = [], []
        for loop in range(cfg.match_loops):
            recalled, labels = self.memory.recall(classes)
            labels = labels.to(self.device)
            match = recalled.new_zeros(())
            for c in classes:
                ix = self.class_index[c]
                real_idx = ix[torch.randint(len(ix), (cfg.real_batch_per_class,), generator=g).to(self.device)]
                real_x = self._to_input(self.real_images[real_idx])
                syn_x = recalled[labels == c]
                if cfg.augment == "flip-rotate":     # the same draw for real and synthetic
                    aug_seed = int(torch.randint(2**31 - 1, (), generator=g))
                    real_x, syn_x = flip_rotate(real_x, aug_seed), flip_rotate(syn_x, aug_seed)
                target = torch.full((len(real_x),), c, device=self.device)
                g_real = torch.autograd.grad(F.cross_entropy(net(real_x), target), params)
                g_real = [t.detach() for t in g_real]
                syn_target = torch.full((len(syn_x),), c, device=self.device)
                g_syn = torch.autograd.grad(F.cross_entropy(net(syn_x), syn_target), params, create_graph=True)
                match = match + gradient_distance(g_real, g_syn)
            self.optimizer.zero_grad(set_to_none=True)
            match.backward()
            mem_params = [p for p in self.memory.parameters() if p.grad is not None]
            norms.append(float(torch.nn.utils.clip_grad_norm_(mem_params, cfg.clip if cfg.clip else float("inf"))))
            self.optimizer.step()
            losses.append(float(match.detach()))
            if loop == cfg.match_loops - 1:
                break
            # Train the network on the (now updated) recalled set, detached.
            with torch.no_grad():
                x_all, y_all = self.memory.recall(classes)
            y_all = y_all.to(self.device)
            for _ in range(cfg.net_steps):
                pick = torch.randperm(len(y_all), generator=g)[:cfg.net_batch].to(self.device)
                net_optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(x_all[pick]), y_all[pick]).backward()
                net_optimizer.step()
        self.step += 1
        return {"step": self.step, "outer_loss": sum(losses) / len(losses), "grad_norm": max(norms),
                "seconds": time.perf_counter() - started}
