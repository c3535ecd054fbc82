"""The search both image-optimising inversion attacks run (Inverting Gradients and the multi-step
FedAvg attack): Geiping et al.'s signed Adam on the dummy images, and the CPU setting it runs under.
"""

from contextlib import contextmanager

import torch
from torch import Tensor


class SignedAdam:
    """Adam on the sign of the gradient, LR / 10 at 3/8, 5/8 and 7/8 of the run, images kept in
    the [0, 1] box (Geiping et al. 2020)."""

    def __init__(self, x: Tensor, lr: float, iterations: int):
        self.x = x
        self.opt = torch.optim.Adam([x], lr=lr)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(
            self.opt, milestones=[int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)

    def step(self, grad: Tensor) -> None:
        self.x.grad = grad.sign()
        self.opt.step()
        self.sched.step()
        with torch.no_grad():
            self.x.clamp_(0, 1)


@contextmanager
def denormals_flushed():
    """Saturated sigmoids produce denormal floats that slow CPU math >10x: flush them during the
    attack (torch has no getter, so the default, off, is restored afterwards)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
