"""Pictures of a domain-incremental run: the g_S/g_P conflict (Fig. 3) and which samples
lean to stability or plasticity (Fig. 6)."""
from __future__ import annotations

from pathlib import Path

import torch

from memdistill.distill.memories import SyntheticImages


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def cosine_over_time(cosines_per_domain: list[list[float]], path: str | Path) -> Path:
    """mean_i cos(g_S,i, g_P,i) per iteration, domains one after another (Fig. 3)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2.5))
    start = 0
    for d, cos in enumerate(cosines_per_domain):
        if cos:
            ax.plot(range(start, start + len(cos)), cos, lw=0.8, color="C0")
            ax.axvline(start, color="0.85", lw=0.5)
        start += max(1, len(cos))
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("iteration (domains 2..T in turn)")
    ax.set_ylabel("cos(g_S, g_P)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def stability_plasticity_samples(memory: SyntheticImages, alpha: torch.Tensor, beta: torch.Tensor,
                                 path: str | Path, k: int = 8) -> Path:
    """Top row: the k samples with the smallest ᾱ_i − β̄_i (plasticity-leaning); bottom row:
    the k with the largest (stability-leaning) — the paper's Fig. 6 selection."""
    plt = _plt()
    diff = (alpha - beta).cpu()
    order = torch.argsort(diff)
    k = max(1, min(k, len(order)))
    rows = [("plasticity", order[:k]), ("stability", order.flip(0)[:k])]
    with torch.no_grad():
        pixels = memory.to_pixels(memory.images.detach()).cpu()
    labels = memory.labels.cpu()
    fig, axes = plt.subplots(2, k, figsize=(k * 1.0, 2.4), squeeze=False)
    for r, (name, idx) in enumerate(rows):
        for j in range(k):
            ax = axes[r][j]
            ax.axis("off")
            i = int(idx[j])
            img = pixels[i].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
            ax.set_title(f"y{int(labels[i])} {float(diff[i]):+.2f}", fontsize=6)
        axes[r][0].text(-0.1, 0.5, name, transform=axes[r][0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=7)
    fig.suptitle("ᾱ − β̄ per synthetic sample", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
