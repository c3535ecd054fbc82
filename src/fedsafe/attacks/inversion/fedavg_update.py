"""Multi-step inversion of a FedAvg update (Dimitrov et al. 2022, "Data leakage in federated
averaging"; the FedAvg cases of Geiping's `breaching`).

A FedAvg client sends w_end - w_start after several local steps of its optimizer, not a gradient.
The server knows what it sent (w_start), the optimizer (SGD with momentum, or Adam), lr, local
epochs, batch size and the client's number of examples N. The attack optimises N dummy images so
that simulating the client's local training on them reproduces the observed update:

    min_x  1 - cos(simulate(w_start, x, labels), observed) + tv_weight * TV(x)

`simulate` is the client's training written with `torch.func`, so it is differentiable in x; the
restarts run as one vectorised problem (`vmap`). Labels: per-class counts are recovered from the
update itself (`recover_label_counts`). What the server cannot know is the order in which the
client shuffled its data each epoch: the simulation uses one fixed batch split in every epoch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap

from fedsafe.attacks.inversion.optimiser import SignedAdam, denormals_flushed
from fedsafe.attacks.inversion.regularisers import total_variation

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class ClientTraining:
    """What the server knows about a client's local training in a round."""

    n_examples: int
    batch_size: int
    local_epochs: int = 1
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.0

    @property
    def steps(self) -> int:
        return self.local_epochs * -(-self.n_examples // self.batch_size)


def _flat(d: dict[str, Tensor]) -> Tensor:
    return torch.cat([t.flatten() for t in d.values()])


def simulate_update(model: nn.Module, params: dict[str, Tensor], x: Tensor, y_soft: Tensor,
                    t: ClientTraining) -> dict[str, Tensor]:
    """The update (w_end - w_start) the client's training on (x, y_soft) produces, as a function
    of x (differentiable). Batches: x[0:B], x[B:2B], ... every epoch (DataLoader, no drop_last)."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def batch_loss(p, xb, yb):
        logits = functional_call(model, (p, buffers), (xb,))
        return -(yb * F.log_softmax(logits, -1)).sum(-1).mean()  # = cross-entropy for one-hot

    p, state, step = dict(params), {}, 0
    b1, b2 = ADAM_BETAS
    for _ in range(t.local_epochs):
        for i in range(0, t.n_examples, t.batch_size):
            g = grad(batch_loss)(p, x[i:i + t.batch_size], y_soft[i:i + t.batch_size])
            step += 1
            if t.optimizer == "adam":  # torch.optim.Adam's update, written out
                m = {k: b1 * state.get(("m", k), 0) + (1 - b1) * g[k] for k in p}
                v = {k: b2 * state.get(("v", k), 0) + (1 - b2) * g[k] ** 2 for k in p}
                state = {**{("m", k): m[k] for k in p}, **{("v", k): v[k] for k in p}}
                # +1e-30 inside the root: d sqrt/dv is infinite at v = 0 (a never-used weight)
                p = {k: p[k] - t.lr * (m[k] / (1 - b1 ** step))
                     / (torch.sqrt(v[k] / (1 - b2 ** step) + 1e-30) + ADAM_EPS) for k in p}
            else:  # torch.optim.SGD (dampening 0): buf = momentum * buf + g
                buf = {k: t.momentum * state[k] + g[k] if k in state else g[k] for k in p}
                state = buf if t.momentum else {}
                p = {k: p[k] - t.lr * buf[k] for k in p}
    return {k: p[k] - params[k] for k in p}


def recover_label_counts(model: nn.Module, update: dict[str, Tensor], t: ClientTraining,
                         num_classes: int, input_shape: tuple, seed: int = 0) -> Tensor:
    """Per-class label counts (summing to N) from the observed update's last-layer bias.

    A start from the FedSGD identity (mean bias gradient = mean softmax - counts / N, the softmax
    estimated on random images at the weights the server sent), then a greedy search that moves
    one label at a time while it brings the bias update of a simulation on random images closer
    to the observed one (Adam's update, and several large SGD steps, are not linear in the
    gradients). Exact on the tests' small clients; a heuristic: with several large local steps
    the softmax along the client's trajectory moves and counts can come out wrong.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}
    bias = list(params)[-1]
    if params[bias].dim() != 1 or len(params[bias]) != num_classes:
        raise ValueError("label counts need a last-layer bias (one entry per class)")
    dev = params[bias].device
    x = torch.rand((t.n_examples, *input_shape),
                   generator=torch.Generator().manual_seed(seed)).to(dev)
    observed = update[bias].to(dev)
    with torch.no_grad():
        p_mean = F.softmax(model(x), -1).mean(0)
    g_mean = -observed / (t.lr * t.steps)
    counts = _round_to_total((p_mean - g_mean).clamp(min=0).cpu() * t.n_examples, t.n_examples)

    def distance(c: Tensor) -> float:
        y = F.one_hot(torch.repeat_interleave(torch.arange(num_classes, device=dev), c.to(dev)),
                      num_classes).float()
        with torch.no_grad():
            return float((simulate_update(model, params, x, y, t)[bias] - observed).norm())

    best = distance(counts)
    for _ in range(t.n_examples):
        scored = []
        for a in range(num_classes):
            for b in range(num_classes):
                if a != b and counts[a] > 0:
                    c = counts.clone()
                    c[a] -= 1
                    c[b] += 1
                    scored.append((distance(c), c))
        d, c = min(scored, key=lambda s: s[0])
        if d >= best:
            break
        best, counts = d, c
    return counts


def _round_to_total(v: Tensor, total: int) -> Tensor:
    """Non-negative integers summing to total, closest to v (largest remainders)."""
    v = v * (total / v.sum()) if v.sum() > 0 else torch.full_like(v, total / len(v))
    c = v.floor().long()
    for i in torch.argsort(v - c, descending=True)[: total - int(c.sum())]:
        c[i] += 1
    return c


def reconstruct_fedavg(model: nn.Module, observed: dict[str, Tensor], t: ClientTraining,
                       input_shape: tuple, num_classes: int, iterations: int = 1000,
                       restarts: int = 1, lr: float = 0.1, tv_weight: float = 1e-3,
                       seed: int = 0, labels: Tensor | None = None, init: Tensor | None = None,
                       progress: Callable[[int, float], None] | None = None) -> dict:
    """Reconstruct the client's N images from its observed FedAvg update.

    observed: {parameter name: update}. Signed Adam on the images with LR / 10 at 3/8, 5/8, 7/8
    of the run and a [0, 1] box (as Inverting Gradients); the restart with the lowest final loss
    wins. init: start images (restarts, N, C, H, W) instead of uniform noise. Returns {"images"
    (N,C,H,W), "labels" (N,), "loss" (final, best restart), "losses" (per iteration, best
    restart), "iterations", "all_images" and "all_losses" (every restart)}.
    """
    dev = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    target = _flat({k: observed[k].to(dev) for k in params})
    if labels is None:
        counts = recover_label_counts(model, observed, t, num_classes, input_shape, seed)
        labels = torch.repeat_interleave(torch.arange(num_classes, device=dev), counts.to(dev))
    y_soft = F.one_hot(labels.to(dev).long(), num_classes).float()
    t_norm = target.norm()

    def loss_fn(x: Tensor) -> Tensor:
        sim = _flat(simulate_update(model, params, x, y_soft, t))
        cos = (sim * target).sum() / (sim.norm() * t_norm + 1e-12)
        return 1 - cos + tv_weight * total_variation(x)

    step_fn = vmap(grad_and_value(loss_fn))  # every restart in one vectorised call
    with denormals_flushed():
        return _optimise(step_fn, init, restarts, t, input_shape, seed, dev, lr, iterations,
                         labels, progress)


def _optimise(step_fn, init, restarts, t, input_shape, seed, dev, lr, iterations, labels,
              progress):
    if init is None:  # drawn on the CPU: the same start on every device
        gen = torch.Generator().manual_seed(seed)
        init = torch.rand((restarts, t.n_examples, *input_shape), generator=gen)
    x = init.detach().clone().to(dev).requires_grad_(True)
    opt = SignedAdam(x, lr, iterations)
    history = []
    for it in range(iterations):
        g, losses = step_fn(x.detach())
        opt.step(g)
        history.append(losses.detach())
        if progress is not None:
            progress(it, float(losses.min()))
    final = step_fn(x.detach())[1].detach()  # the loss of the images returned
    best = int(torch.nan_to_num(final, nan=float("inf")).argmin())
    curve = [float(h[best]) for h in history] + [float(final[best])]
    return {"images": x.detach()[best], "labels": labels, "loss": float(final[best]),
            "losses": curve, "iterations": iterations, "all_images": x.detach(),
            "all_losses": final.tolist()}
