"""Model-inversion synthesis: a generator F_phi trained against a frozen classifier.

Always Be Dreaming (Smith et al., ICCV 2021), Sec. 4.  After each task a generator
maps noise to images on which the frozen model theta_{n-1} is confident (content
loss, Eq. 2-3), whose predicted classes are spread evenly over the old classes
(label diversity, Eq. 1), whose per-layer batch statistics match the ones stored
in the model's batch-norm layers (Eq. 4-5) and which are locally smooth (Eq. 6).
No real data is used.  The total is Eq. 7 with the weights of Table F.

The generator's output is already in the network's *normalised* input space (its
last layer is a batch norm without affine parameters), so synthetic batches go
straight into the classifier, without ``Preprocess``.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


class ImageGenerator(nn.Module):
    """Noise z -> image, the CIFAR generator of the ABD / DFAD public code.

    z (1000) -> Linear to 2w x s x s -> BN -> [x2 upsample -> conv3x3 -> BN(eps 0.8)
    -> LeakyReLU 0.2] x ``upsamples`` -> conv3x3 to C -> tanh -> BN(C, affine=False).

    With w = 64 and ``upsamples=2`` (s = H / 4 = 8 for 32x32) this is CIFAR_GEN of
    the reference (8.5 M parameters, most of them in the first linear layer); the
    batch norms' eps of 0.8 is the reference's (a positional-argument slip kept from
    DFAD, kept here because the published numbers were obtained with it).  For
    64x64 inputs ``upsamples=3`` starts from 8x8 like the reference's larger
    generator (our layer widths: 2w, 2w, w).
    """

    def __init__(self, image_shape: tuple[int, int, int], noise_dim: int = 1000, width: int = 64,
                 upsamples: int | None = None):
        super().__init__()
        c, h, w = image_shape
        if upsamples is None:
            upsamples = 3 if h >= 64 else 2
        if h != w or h % (2 ** upsamples):
            raise ValueError(f"generator needs square images with side divisible by {2 ** upsamples} "
                             f"(got {h}x{w})")
        self.image_shape = tuple(image_shape)
        self.noise_dim = noise_dim
        self.init_size = h // 2 ** upsamples
        self.project = nn.Linear(noise_dim, 2 * width * self.init_size ** 2)
        self.project_norm = nn.BatchNorm2d(2 * width)
        blocks = []
        channels = 2 * width
        for i in range(upsamples):
            out = width if i == upsamples - 1 else 2 * width
            blocks += [nn.Upsample(scale_factor=2), nn.Conv2d(channels, out, 3, 1, 1),
                       nn.BatchNorm2d(out, 0.8), nn.LeakyReLU(0.2)]
            channels = out
        blocks += [nn.Conv2d(channels, c, 3, 1, 1), nn.Tanh(), nn.BatchNorm2d(c, affine=False)]
        self.blocks = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(len(z), -1, self.init_size, self.init_size)
        return self.blocks(self.project_norm(x))

    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` images from fresh noise (drawn on the CPU from ``generator``: reproducible)."""
        z = torch.randn(n, self.noise_dim, generator=generator).to(device)
        return self(z)

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in (*self.parameters(), *self.buffers()))


# -- the losses of Eq. 1-6 -----------------------------------------------------------------

def content_loss(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. 2-3: CE of the temperature-scaled logits against their own argmax."""
    return F.cross_entropy(logits / temperature, logits.argmax(1))


def label_diversity_loss(logits: torch.Tensor) -> torch.Tensor:
    """Eq. 1: minus the entropy of the batch's mean prediction, as 1 - H(p_mean) / log K.

    The public code's normalisation: 0 when the K classes are predicted equally often,
    1 when one class takes all.  Same minimiser as -H, gradient scaled by 1 / log K.
    """
    k = logits.shape[1]
    mean = logits.softmax(1).mean(0)
    entropy = -(mean * torch.log(mean.clamp_min(1e-12))).sum()
    return 1.0 - entropy / math.log(k) if k > 1 else entropy * 0.0


def batchnorm_kl(batch_mean: torch.Tensor, batch_var: torch.Tensor, running_mean: torch.Tensor,
                 running_var: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 5, mean over channels: KL(N(mu, sigma^2) || N(mu_hat, sigma_hat^2)).

    (mu, sigma) are the statistics stored in the batch norm, (mu_hat, sigma_hat) the
    synthetic batch's: log(sigma_hat / sigma) - 1/2 (1 - (sigma^2 + (mu - mu_hat)^2) / sigma_hat^2).
    """
    var_hat = batch_var + eps
    var = running_var + eps
    kl = 0.5 * torch.log(var_hat / var) - 0.5 * (1.0 - (var + (running_mean - batch_mean) ** 2) / var_hat)
    return kl.mean()


class BatchNormStatistics:
    """Forward hooks on every batch norm of a model; ``loss()`` is Eq. 4 for the last forward.

    Use as a context manager so the hooks are removed afterwards::

        with BatchNormStatistics(frozen) as stats:
            frozen(x_hat)
            loss = stats.loss()
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.terms: list[torch.Tensor] = []
        self.handles: list = []

    def _hook(self, module: nn.modules.batchnorm._BatchNorm, inputs, output) -> None:
        x = inputs[0].float()
        dims = [0] + list(range(2, x.dim()))          # all but the channel axis
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        self.terms.append(batchnorm_kl(mean, var, module.running_mean.float(), module.running_var.float()))

    def __enter__(self) -> "BatchNormStatistics":
        self.handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def reset(self) -> None:
        self.terms = []

    def loss(self) -> torch.Tensor:
        """(1/L) sum_l BNS_l over the batch norms the last forward went through (0 if none)."""
        if not self.terms:
            return torch.zeros(())
        return torch.stack(self.terms).mean()


def gaussian_kernel(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-ax ** 2 / (2 * sigma ** 2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Per-channel Gaussian blur with reflect padding (the public code: 5x5, sigma 1)."""
    c = x.shape[1]
    kernel = gaussian_kernel(size, sigma).to(x.device, x.dtype).expand(c, 1, size, size)
    pad = size // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel, groups=c)


def smoothness_prior(x: torch.Tensor) -> torch.Tensor:
    """Eq. 6: squared L2 distance between the images and their blurred copy (mean per pixel)."""
    return F.mse_loss(x, gaussian_blur(x))


# -- training the generator (Eq. 7) ---------------------------------------------------------

@dataclass
class SynthesisWeights:
    """Table F: alpha_con, alpha_div, alpha_stat, alpha_prior and the temperature alpha_temp."""
    content: float = 1.0
    diversity: float = 1.0
    stat: float = 50.0
    prior: float = 1e-3
    temperature: float = 1e3


def synthesis_loss(generator: ImageGenerator, frozen_model: nn.Module, classes: list[int] | torch.Tensor,
                   batch_size: int, weights: SynthesisWeights, noise: torch.Generator | None = None,
                   stats: BatchNormStatistics | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 7 on one batch of synthetic images; logits restricted to ``classes`` (Eq. 3's T_1..T_{n-1})."""
    device = next(generator.parameters()).device
    x = generator.sample(batch_size, noise, device)
    own_stats = stats is None
    if own_stats:
        stats = BatchNormStatistics(frozen_model).__enter__()
    try:
        stats.reset()
        logits = frozen_model(x).float()[:, classes]
        stat = stats.loss().to(device)
    finally:
        if own_stats:
            stats.__exit__(None, None, None)
    con = content_loss(logits, weights.temperature)
    div = label_diversity_loss(logits)
    prior = smoothness_prior(x)
    total = weights.content * con + weights.diversity * div + weights.stat * stat + weights.prior * prior
    parts = {"synth_loss": total.item(), "content": con.item(), "diversity": div.item(),
             "stat": stat.item(), "prior": prior.item()}
    return total, parts


def train_generator(generator: ImageGenerator, frozen_model: nn.Module, classes: list[int],
                    steps: int, batch_size: int, optimizer: torch.optim.Optimizer | None = None,
                    weights: SynthesisWeights | None = None, noise: torch.Generator | None = None,
                    progress: bool | None = None) -> dict[str, float]:
    """Train ``generator`` for ``steps`` Adam steps on Eq. 7 against ``frozen_model``.

    ``frozen_model`` is put in eval mode (its batch norms then hold the statistics to
    match) and is not changed.  ``optimizer`` defaults to Adam, lr 1e-3 (Sec. 7); pass
    the same one again to continue training across tasks as the public code does.
    ``progress=None`` shows a bar only on a terminal.  A step whose loss or gradient
    is not finite is skipped (counted in ``skipped_steps``).  Returns the last losses,
    ``synthesis_s`` (the seconds it took) and ``skipped_steps``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0 (got {steps})")
    weights = weights or SynthesisWeights()
    optimizer = optimizer or torch.optim.Adam(generator.parameters(), lr=1e-3)
    was_training = frozen_model.training
    frozen_model.eval()
    requires = [p.requires_grad for p in frozen_model.parameters()]
    frozen_model.requires_grad_(False)
    generator.train()
    started = time.perf_counter()
    parts: dict[str, float] = {}
    skipped = 0
    bar = tqdm(range(steps), desc="generator", disable=None if progress is None else not progress,
               leave=False, dynamic_ncols=True, file=sys.stderr)
    try:
        with BatchNormStatistics(frozen_model) as stats:
            for step in bar:
                loss, parts = synthesis_loss(generator, frozen_model, classes, batch_size, weights, noise, stats)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grads = [p.grad for p in generator.parameters() if p.grad is not None]
                if torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads):
                    optimizer.step()
                else:       # an overflowing step would leave NaN in Adam's moments for good
                    skipped += 1
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{parts['synth_loss']:.3f}", refresh=False)
    finally:
        bar.close()
        for p, r in zip(frozen_model.parameters(), requires):
            p.requires_grad_(r)
        frozen_model.train(was_training)
    generator.eval()
    return {**parts, "synthesis_s": time.perf_counter() - started, "steps": steps, "skipped_steps": skipped}


__all__ = ["ImageGenerator", "SynthesisWeights", "BatchNormStatistics", "batchnorm_kl", "content_loss",
           "label_diversity_loss", "gaussian_blur", "smoothness_prior", "synthesis_loss", "train_generator"]
