"""Pictures of a memory: what it recalls, and which classes share bases (Fig. 2)."""
from __future__ import annotations

from pathlib import Path

import torch

from memdistill.distill.memories import AddressableMemory, DistilledMemory


def recalled_grid(memory: DistilledMemory, path: str | Path, per_class: int = 8,
                  class_names: list[str] | None = None) -> Path:
    """One row per class, up to ``per_class`` recalled images each, as pixels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        images, labels = memory.dataset()
        pixels = memory.to_pixels(images).cpu()
    rows = memory.num_classes
    cols = max(1, min(per_class, max(int((labels == c).sum()) for c in range(rows))))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
    for c in range(rows):
        mine = pixels[labels.cpu() == c][:cols]
        for j in range(cols):
            ax = axes[c][j]
            ax.axis("off")
            if j < len(mine):
                img = mine[j].permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        axes[c][0].set_title(class_names[c] if class_names else str(c), fontsize=6, loc="left")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def class_similarity_heatmap(memory: AddressableMemory, path: str | Path,
                             class_names: list[str] | None = None) -> Path:
    """Cosine similarity of the classes' mean addressing coefficients (Sec. 5.1, Fig. 2)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = memory.class_similarity().cpu().numpy()
    names = class_names or [str(c) for c in range(len(sim))]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(sim, vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_title("cosine similarity of mean addressing coefficients", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
