"""Distribution matching (DM): synthetic images whose random-network embeddings match real ones.

DM (Zhao & Bilen, "Dataset Condensation with Distribution Matching", public code
``main_DM.py``) samples a fresh randomly initialised ConvNet every iteration,
freezes it, embeds a real batch and the synthetic images of each class with its
feature extractor F, and moves the synthetic images so that the two embedding
distributions agree.  Two distances d(F(x), F(x̂)) are offered:

* ``mean``: DM's  ‖mean F(x) − mean F(x̂)‖²  (mean-embedding distance);
* ``mmd``: the squared Gaussian-kernel maximum mean discrepancy, the distance the
  domain-incremental paper uses (its L_plastic / L_stable, Sec. 3):
  MMD²(X, Y) = mean k(x, x') + mean k(y, y') − 2 mean k(x, y),
  k(a, b) = exp(−‖a − b‖² / (2σ²)) (biased V-statistic, diagonal terms included).

Real and synthetic batches are augmented with the *same* random draw
(:func:`memdistill.distill.augment.flip_rotate`, one seed for both), as DSA/DM do.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from memdistill.distill.augment import flip_rotate

DISTANCES = ("mmd", "mean")


def pairwise_sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² for rows of a (n, d) and b (m, d), clamped at 0."""
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


def median_bandwidth(embeddings: torch.Tensor) -> float:
    """σ² for the Gaussian kernel: half the median squared distance between distinct
    rows (so k = exp(−‖a−b‖²/median)); 1.0 when there are no distinct pairs."""
    with torch.no_grad():
        sq = pairwise_sq_distances(embeddings, embeddings)
        n = sq.shape[0]
        off = sq[~torch.eye(n, dtype=torch.bool, device=sq.device)]
        med = float(off.median()) if off.numel() else 0.0
    return med / 2.0 if med > 0 else 1.0


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, sigma_sq: float | None = None) -> torch.Tensor:
    """Squared Gaussian-kernel MMD between rows of x (n, d) and y (m, d) (biased estimate).

    ``sigma_sq`` None: :func:`median_bandwidth` of the pooled rows (detached)."""
    if sigma_sq is None:
        sigma_sq = median_bandwidth(torch.cat([x, y]))
    scale = 1.0 / (2.0 * sigma_sq)
    kxx = torch.exp(-pairwise_sq_distances(x, x) * scale).mean()
    kyy = torch.exp(-pairwise_sq_distances(y, y) * scale).mean()
    kxy = torch.exp(-pairwise_sq_distances(x, y) * scale).mean()
    return kxx + kyy - 2.0 * kxy


def mean_embedding_distance(x: torch.Tensor, y: torch.Tensor, sigma_sq: float | None = None) -> torch.Tensor:
    """DM's ‖mean(x) − mean(y)‖² (``sigma_sq`` is ignored; same signature as MMD)."""
    diff = x.mean(0) - y.mean(0)
    return (diff * diff).sum()


def distance_fn(name: str) -> Callable[..., torch.Tensor]:
    if name == "mmd":
        return gaussian_mmd
    if name == "mean":
        return mean_embedding_distance
    raise ValueError(f"unknown distance {name!r}; choose from {', '.join(DISTANCES)}")


def random_embedder(make_network: Callable[[], nn.Module], seed: int, device: torch.device | str = "cpu"
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A freshly initialised network (under ``seed``), frozen; returns its ``features``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = make_network().to(device)
    net.train()                       # instance norm has no running statistics: same either way
    for p in net.parameters():
        p.requires_grad_(False)
    return net.features


class MatchingStep:
    """One DM draw: a random embedder, one augmentation seed, and per-class distances.

    ``augment`` is ``"none"`` or ``"flip-rotate"``; the same seed transforms every
    batch embedded in this step (real, synthetic, previous synthetic), so the two
    sides of each distance see the identical transform.
    """

    def __init__(self, make_network: Callable[[], nn.Module], seed: int, distance: str = "mmd",
                 augment: str = "flip-rotate", max_degrees: float = 15.0, device="cpu"):
        self.embed = random_embedder(make_network, seed, device)
        self.seed = int(seed)
        self.distance = distance_fn(distance)
        self.augment = augment
        self.max_degrees = max_degrees
        self.sigma_sq: float | None = None   # set from the real batch (shared by every distance)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if self.augment == "flip-rotate":
            # MNIST-like digits: no horizontal flip would be kinder, but DSA flips too;
            # the draw is the same for both sides, so matching stays consistent.
            images = flip_rotate(images, self.seed, self.max_degrees)
        return self.embed(images)

    def real_features(self, real_by_class: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Embeddings of the real batch of each class (no gradient); fixes σ² from them."""
        with torch.no_grad():
            feats = {c: self.features(x) for c, x in real_by_class.items()}
        if feats:
            self.sigma_sq = median_bandwidth(torch.cat(list(feats.values())))
        return feats

    def class_loss(self, target_feats: dict[int, torch.Tensor], images: torch.Tensor,
                   labels: torch.Tensor) -> torch.Tensor:
        """Σ_c d(target_c, F(images of class c)) over the classes present in both."""
        feats = self.features(images)
        total = images.new_zeros(())
        for c, target in target_feats.items():
            mine = labels == c
            if bool(mine.any()):
                total = total + self.distance(target, feats[mine], self.sigma_sq)
        return total

    def set_loss(self, previous: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Σ_c d(F(previous_c), F(images_c)) — the stability loss's form (previous detached,
        same labels, same order)."""
        with torch.no_grad():
            prev_feats = self.features(previous)
        feats = self.features(images)
        total = images.new_zeros(())
        for c in labels.unique().tolist():
            mine = labels == c
            total = total + self.distance(prev_feats[mine], feats[mine], self.sigma_sq)
        return total
