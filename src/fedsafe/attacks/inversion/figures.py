"""Figures of an inversion attack, written with `save_images`: the reconstructions beside the
originals (patients' images on real data: the caller keeps them owner-only), and the loss curve."""

from pathlib import Path

import torch


def save_grid(orig: torch.Tensor, rec: torch.Tensor, path: Path) -> None:
    """Originals (top row) over their matched reconstructions (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(orig)
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6), squeeze=False)
    for i in range(n):
        for row, img in enumerate((orig[i], rec[i])):
            a = img.permute(1, 2, 0).numpy()
            axes[row][i].imshow(a[..., 0] if a.shape[-1] == 1 else a, cmap="gray", vmin=0, vmax=1)
            axes[row][i].axis("off")
    axes[0][0].set_title("original", fontsize=7, loc="left")
    axes[1][0].set_title("reconstruction", fontsize=7, loc="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def save_curve(losses: list[float], path: Path) -> None:
    """The attack's loss per recorded iteration: flat at the end = converged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.6))
    ax.plot(losses)
    ax.set_yscale("log")
    ax.set_xlabel("recorded step")
    ax.set_ylabel("attack loss")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
