"""Gradient matching by an honest-but-curious server (MedPFL's attacks).

The server sees a client's gradient (or weight update) and the model, and optimises a dummy image
until its gradient matches the observed one:

- ``dlg``  (Zhu et al. 2019): dummy image AND soft dummy label, L2 gradient distance, L-BFGS.
- ``idlg`` (Zhao et al. 2020): label read from the last-layer gradient, then DLG on the image only.
- ``inverting_gradients`` (Geiping et al. 2020): cosine gradient distance + total variation prior,
  Adam on the signed gradient with step decay, image box-constrained to [0,1], restarts.
- ``init="cpl"`` (Wei et al. 2020, used by MedPFL): a small random pattern tiled over the image
  instead of i.i.d. noise, which makes L-BFGS converge more often.

Images live in [0,1]; models normalise internally and return logits. The loss the client used is
mean cross-entropy, so target gradients must come from ``observed_gradient`` (or the equivalent).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedsafe.attacks.inversion.optimiser import SignedAdam, denormals_flushed
from fedsafe.attacks.inversion.regularisers import total_variation

METHODS = ("dlg", "idlg", "inverting_gradients")
CPL_TILE = 4  # side of the random CPL pattern; tiled to fill the image


def _params(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def observed_gradient(model: nn.Module, x: Tensor, y: Tensor) -> list[Tensor]:
    """Gradient of mean cross-entropy wrt the trainable parameters: what one client step shares."""
    loss = F.cross_entropy(model(x), y)
    return [g.detach() for g in torch.autograd.grad(loss, _params(model))]


def gradient_from_update(delta_weights: Sequence[Tensor], lr: float, local_steps: int) -> list[Tensor]:
    """Turn a FedAvg weight update (w_new - w_old) into a gradient proxy -delta / (lr * steps).

    Exact for one plain-SGD step. For several local steps it is the *average* gradient along the
    client's local trajectory, which the attack then treats as one gradient at the round's starting
    weights (Geiping et al. 2020, Sec. 6). Momentum, weight decay, or gradient clipping make it
    a rougher approximation; the attack still runs, it just matches a biased target.
    """
    scale = 1.0 / (lr * local_steps)
    return [-d.detach() * scale for d in delta_weights]


def _last_weight(grads: Sequence[Tensor]) -> Tensor:
    """Gradient of the final fully connected weight (last 2-D tensor; bias may follow it)."""
    return [g for g in grads if g.dim() == 2][-1]


def infer_label_idlg(grads_last_layer_weight: Tensor) -> int:
    """iDLG sign trick for batch 1: with softmax cross-entropy the last FC weight gradient is
    (p - onehot(y)) h^T. With non-negative activations h (sigmoid/ReLU) only the true class row
    has p_y - 1 < 0, so it is the row with the most negative sum."""
    return int(torch.argmin(grads_last_layer_weight.sum(dim=-1)))


def infer_labels(grads_last_layer_weight: Tensor, batch_size: int) -> Tensor:
    """Batch extension: classes whose rows sum negative are present; take them most negative
    first and cycle if the batch has repeated labels (counts are not recoverable this way).
    A heuristic: a present class whose predicted probability is already high can sum positive
    (measured on the test LeNet: all labels right ~97% of the time at batch 2, ~47% at batch 4)."""
    s = grads_last_layer_weight.sum(dim=-1)
    order = torch.argsort(s)
    present = order[s[order] < 0]
    if len(present) == 0:
        present = order[:1]
    return present[torch.arange(batch_size) % len(present)]


def _init_image(shape: tuple, init: str, gen: torch.Generator, device="cpu") -> Tensor:
    # drawn on the CPU generator (same start on every device), then moved to the model's device
    if init == "random":
        return torch.rand(shape, generator=gen).to(device)
    if init == "cpl":
        b, c, h, w = shape
        tile = torch.rand((b, c, CPL_TILE, CPL_TILE), generator=gen)
        reps = (1, 1, -(-h // CPL_TILE), -(-w // CPL_TILE))  # ceil division
        return tile.repeat(reps)[..., :h, :w].contiguous().to(device)
    raise ValueError(f"unknown init {init!r}")


def _dummy_grads(model: nn.Module, x: Tensor, probs: Tensor) -> tuple[Tensor, ...]:
    # Soft-label cross-entropy equals F.cross_entropy for one-hot probs; create_graph lets us
    # differentiate the gradient distance wrt the dummy image (second-order autograd).
    loss = -(probs * F.log_softmax(model(x), dim=-1)).sum(-1).mean()
    return torch.autograd.grad(loss, _params(model), create_graph=True)


def _l2_distance(grads, target) -> Tensor:
    return sum(((g - t) ** 2).sum() for g, t in zip(grads, target))


def _cosine_distance(grads, target) -> Tensor:
    # Geiping et al.: one cosine over all layers concatenated.
    dot = sum((g * t).sum() for g, t in zip(grads, target))
    gn = sum(g.pow(2).sum() for g in grads).sqrt()
    tn = sum(t.pow(2).sum() for t in target).sqrt()
    return 1 - dot / (gn * tn + 1e-12)


def reconstruct(
    model: nn.Module,
    target_grads: Sequence[Tensor],
    input_shape: tuple,
    num_classes: int,
    method: str = "idlg",
    init: str = "random",
    iterations: int = 300,
    restarts: int = 1,
    lr: float | None = None,
    tv_weight: float = 1e-4,
    seed: int = 0,
    batch_size: int = 1,
    progress: Callable[[int, float], None] | None = None,
    labels: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Reconstruct the client batch from its observed gradient.

    input_shape is one image's (C,H,W). lr defaults to 1.0 for L-BFGS (dlg/idlg, as in the DLG
    and iDLG code) and 0.1 for inverting_gradients. For L-BFGS an iteration is one optimizer step
    (up to 20 function evaluations, PyTorch's default), matching MedPFL's "300 iterations".
    tv_weight is used by inverting_gradients only. labels: known labels for batch_size > 1
    (otherwise inferred from the last-layer gradient); ignored by dlg, which optimises labels.
    Restarts use different initialisations; the one with the lowest final loss is kept.
    Returns (images clamped to [0,1], shape (B,C,H,W); labels, shape (B,)).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    device = next(model.parameters()).device
    target = [t.detach().to(device) for t in target_grads]
    shape = (batch_size, *input_shape)
    gen = torch.Generator().manual_seed(seed)
    if method != "dlg":
        if labels is None:
            labels = (torch.tensor([infer_label_idlg(_last_weight(target))]) if batch_size == 1
                      else infer_labels(_last_weight(target), batch_size))
        labels = labels.long().view(batch_size).to(device)
    if lr is None:
        lr = 0.1 if method == "inverting_gradients" else 1.0

    with denormals_flushed():
        return _reconstruct(model, target, shape, num_classes, method, init, iterations, restarts,
                            lr, tv_weight, gen, labels, progress)


def _reconstruct(model, target, shape, num_classes, method, init, iterations, restarts, lr,
                 tv_weight, gen, labels, progress):
    batch_size, every = shape[0], max(1, iterations // 20)
    device = target[0].device
    best = (float("inf"), None, None)
    for r in range(restarts):
        x = _init_image(shape, init, gen, device).requires_grad_(True)
        if method == "dlg":
            label_logits = torch.randn((batch_size, num_classes), generator=gen).to(device)
            label_logits.requires_grad_(True)
            run = _run_lbfgs(model, target, x, label_logits, None, iterations, lr)
        elif method == "idlg":
            run = _run_lbfgs(model, target, x, None, F.one_hot(labels, num_classes).float(), iterations, lr)
        else:
            run = _run_inverting_gradients(model, target, x, F.one_hot(labels, num_classes).float(),
                                           iterations, lr, tv_weight)
        loss = float("inf")
        for it, loss in run:  # generators yield (iteration, loss) so progress reporting stays here
            if progress is not None and (it % every == 0 or it == iterations - 1):
                progress(r * iterations + it, loss)
        loss = loss if loss == loss else float("inf")  # NaN (diverged L-BFGS) never wins
        if best[1] is None or loss < best[0]:
            y_out = label_logits.argmax(-1).detach() if method == "dlg" else labels
            best = (loss, x.detach().clone(), y_out)
    return torch.nan_to_num(best[1], nan=0.0).clamp(0, 1), best[2]  # all restarts diverged -> NaN


def _run_lbfgs(model, target, x, label_logits, probs, iterations, lr):
    """DLG (label_logits given, optimised too) or iDLG (fixed probs) with L-BFGS on L2 distance."""
    variables = [x] + ([label_logits] if label_logits is not None else [])
    opt = torch.optim.LBFGS(variables, lr=lr)

    def closure():
        p = probs if label_logits is None else F.softmax(label_logits, dim=-1)
        loss = _l2_distance(_dummy_grads(model, x, p), target)
        # autograd.grad (not backward) so the model's own .grad buffers are left untouched
        for v, g in zip(variables, torch.autograd.grad(loss, variables)):
            v.grad = g
        return loss.detach()

    for it in range(iterations):
        loss = float(opt.step(closure))
        yield it, loss
        if loss != loss:  # NaN: L-BFGS without line search diverged; stop this restart
            return


def _run_inverting_gradients(model, target, x, probs, iterations, lr, tv_weight):
    """Geiping et al.: cosine distance plus total variation, signed Adam."""
    opt = SignedAdam(x, lr, iterations)
    for it in range(iterations):
        loss = (_cosine_distance(_dummy_grads(model, x, probs), target)
                + tv_weight * total_variation(x))
        (g,) = torch.autograd.grad(loss, [x])
        opt.step(g)
        yield it, loss.item()
