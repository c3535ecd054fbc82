"""Adversarial training with L-inf PGD (random start), inputs in [0, 1].

mode "client": Madry et al.: every training batch is replaced by its PGD examples.
mode "server": Fed-Safe's adaptation. In Fed-Safe the server re-trains each client model for one
round on PGD examples made from a fraction p of the samples. A federated server holds no data, so
here the client does that pass itself: after its normal local training it takes one epoch of
steps on PGD examples of a random `fraction` of its own samples, before its update is sent (and
before any uplink noise). Same model, same data, same point in the round; the server never sees
raw data. `fraction` applies to this mode only. Defaults are Fed-Safe's: eps 0.03, step 0.005,
6 steps.
"""

import math

import torch
from torch import nn

from fedsafe.defenses.base import Mechanism


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float,
        steps: int, random_start: bool = True) -> torch.Tensor:
    """L-inf PGD maximising the cross-entropy; only the input gets gradients (so the model's
    parameter gradients, and Opacus's per-sample ones, are untouched)."""
    was_training = model.training
    model.eval()  # attack a fixed function: no dropout noise in the gradient
    x_adv = x.detach().clone()
    if random_start:
        x_adv = (x_adv + torch.empty_like(x_adv).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    model.train(was_training)
    return x_adv.detach()


class AdversarialTraining(Mechanism):
    def __init__(self, noise=0.0, options=None, seed=0, guarantee=""):
        super().__init__(noise, options, seed, guarantee)
        o = self.options
        if not 0 < float(o["fraction"]) <= 1:
            raise ValueError(f"defenses options.fraction: {o['fraction']} not in (0, 1]")

    def _pgd(self, model, x, y):
        o = self.options
        return pgd(model, x, y, float(o["eps"]), float(o["step_size"]), int(o["steps"]),
                   bool(o["random_start"]))

    def training_batch(self, model, x, y):
        return (self._pgd(model, x, y), y) if self.options["mode"] == "client" else (x, y)

    def post_training(self, model, x, y, step, batch_size):
        if self.options["mode"] != "server":
            return {}
        device = next(model.parameters()).device
        chosen = torch.randperm(len(y))[:math.ceil(float(self.options["fraction"]) * len(y))]
        losses = []
        for i in range(0, len(chosen), batch_size):
            idx = chosen[i:i + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            losses.append(step(self._pgd(model, xb, yb), yb))
        return {"adv_loss": sum(losses) / len(losses), "adv_samples": len(chosen)}
