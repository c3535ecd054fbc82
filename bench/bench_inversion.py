"""Item 4: gradient inversion (`reconstruct(method="inverting_gradients")`) optimiser iterations
per second vs a plain PyTorch loop of the same loss (cosine gradient distance + TV prior, signed
Adam, box constraint, same LR schedule), on the same model, target gradient and start image."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import alternate, median, table, verdict, write
from data import model_and_data

TARGET = 1.2


def plain_loop(model, target, x0, probs, iterations, lr=0.1, tv_weight=1e-4):
    params = [p for p in model.parameters() if p.requires_grad]
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)
    tn = sum(t.pow(2).sum() for t in target).sqrt()
    for _ in range(iterations):
        loss = -(probs * F.log_softmax(model(x), -1)).sum(-1).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, target))
        gn = sum(g.pow(2).sum() for g in grads).sqrt()
        tv = ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
              + (x[..., :, 1:] - x[..., :, :-1]).abs().mean())
        total = 1 - dot / (gn * tn + 1e-12) + tv_weight * tv
        (g,) = torch.autograd.grad(total, [x])
        x.grad = g.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


def main(argv=None, **_) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    a = ap.parse_args(argv)
    reps = a.reps or (3 if a.quick else 5)
    iters = a.iterations or (40 if a.quick else 100)
    torch.set_num_threads(1)
    from fedsafe.attacks.inversion import _init_image, observed_gradient, reconstruct
    from fedsafe.federation.local import to_tensor

    make_model, data = model_and_data()
    torch.manual_seed(0)
    model = make_model()
    x = to_tensor(data.clients[0][0][:1])
    y = torch.from_numpy(data.clients[0][1][:1]).long()
    n_classes = len(data.manifest["class_names"])
    target = observed_gradient(model, x, y)
    x0 = _init_image((1, *x.shape[1:]), "random", torch.Generator().manual_seed(0))
    probs = F.one_hot(y, n_classes).float()

    def project():
        reconstruct(model, target, tuple(x.shape[1:]), n_classes, method="inverting_gradients",
                    iterations=iters, seed=0, labels=y)

    def plain():
        torch.set_flush_denormal(True)  # reconstruct does the same
        try:
            plain_loop(model, target, x0, probs, iters)
        finally:
            torch.set_flush_denormal(False)

    # same result check: identical start image, label and math
    torch.set_flush_denormal(True)
    ref = plain_loop(model, target, x0, probs, 10)
    torch.set_flush_denormal(False)
    got, _ = reconstruct(model, target, tuple(x.shape[1:]), n_classes,
                         method="inverting_gradients", iterations=10, seed=0, labels=y)
    diff = float((ref - got).abs().max())

    times = alternate({"project": project, "plain": plain}, reps, clock=a.clock)
    ips = {k: iters / median(t) for k, t in times.items()}
    ratio = ips["plain"] / ips["project"]
    rows = [{"side": "reconstruct(inverting_gradients)", "iterations/s": ips["project"]},
            {"side": "plain PyTorch loop, same loss", "iterations/s": ips["plain"]}]
    body = (f"Model `small_cnn` (default), one {tuple(x.shape[1:])} image, {iters} iterations per "
            f"repetition, 1 thread, {reps} alternating repetitions, medians of {a.clock} time. "
            f"Max |x_project - x_plain| after 10 iterations from the same start: {diff:.2e}.\n\n"
            + table(rows) + f"\n- time ratio project / plain: {verdict(ratio, TARGET)}\n")
    write("inversion", "Item 4: gradient inversion vs a plain PyTorch loop", body)
    return {"inversion_ratio": ratio}


if __name__ == "__main__":
    main()
