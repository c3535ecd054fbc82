"""Image priors shared by the inversion attacks, added to the matching loss."""

from torch import Tensor


def total_variation(x: Tensor) -> Tensor:
    """Anisotropic total variation: mean absolute difference between neighbouring pixels,
    vertically plus horizontally (Geiping et al. 2020)."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())
