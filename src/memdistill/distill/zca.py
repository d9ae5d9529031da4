"""ZCA whitening of the input space, the option dataset-distillation code uses on CIFAR.

Fitted on the (normalised) training images: with the covariance Σ = U diag(s) Uᵀ of the
flattened images and their mean μ,

    zca(x) = (x − μ) W,   W = U diag(1 / sqrt(s + ε)) Uᵀ,

ε added to every eigenvalue (0.1 in the KIP/MTT code, through kornia's ZCAWhitening).
W is symmetric, so whitening keeps images image-like (unlike PCA whitening).  When it
is on, the real images, the memory and the test images all live in the whitened space;
the transform is saved next to the memory (``zca.pt``) because a memory learned in that
space is only meaningful through it (``memdistill evaluate-memory --zca FILE``).
"""
from __future__ import annotations

from pathlib import Path

import torch

FORMAT = "memdistill.zca"


class ZCA:
    def __init__(self, mean: torch.Tensor, whitening: torch.Tensor, eps: float):
        self.mean = mean
        self.whitening = whitening
        self.eps = float(eps)

    @classmethod
    def fit(cls, images: torch.Tensor, eps: float = 0.1, chunk: int = 4096, to_input=None) -> "ZCA":
        """From images (N, C, H, W) in the network's input space (or uint8 images and
        ``to_input`` mapping a chunk of them there); mean and covariance are summed in
        float64 over chunks, so the whole set never has to be held as floats."""
        if not eps > 0:
            raise ValueError(f"ZCA eps must be positive (got {eps!r})")
        n = len(images)
        if n < 2:
            raise ValueError("ZCA needs at least 2 images to fit")
        to_input = to_input or (lambda x: x)

        def chunks():
            for start in range(0, n, chunk):
                yield to_input(images[start:start + chunk]).reshape(-1, images[0].numel()).double()
        mean = sum(x.sum(0) for x in chunks()) / n
        cov = torch.zeros(len(mean), len(mean), dtype=torch.float64)
        for x in chunks():
            x = x - mean
            cov += x.T @ x
        cov /= n - 1
        s, u = torch.linalg.eigh(cov)
        whitening = (u * (s.clamp_min(0) + eps).rsqrt()) @ u.T
        return cls(mean.float(), whitening.float(), eps)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        shape = images.shape
        mean, w = self.mean.to(images.device), self.whitening.to(images.device)
        return ((images.reshape(shape[0], -1) - mean) @ w).reshape(shape)

    def save(self, path: str | Path) -> None:
        torch.save({"format": FORMAT, "mean": self.mean, "whitening": self.whitening, "eps": self.eps}, path)

    @classmethod
    def load(cls, path: str | Path) -> "ZCA":
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{path} is not a ZCA file written by memdistill distill --zca")
        return cls(state["mean"], state["whitening"], state["eps"])
