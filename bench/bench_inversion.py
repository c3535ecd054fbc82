"""Item 4: gradient inversion.

- `reconstruct(method="inverting_gradients")` optimiser iterations per second vs a plain PyTorch
  loop of the same loss (cosine gradient distance + TV prior, signed Adam, box constraint, same
  LR schedule), on the same model, target gradient and start image.
- The multi-step FedAvg attack (`reconstruct_fedavg`): its restarts run as one vectorised
  problem; reconstructions per second vs a plain loop over the restarts (same math, same starts).
- `--quality`: how the multi-step attack's SSIM falls with the client's batch size and local
  epochs (the MedPFL LeNet, 8 MRI slices; SGD).
"""
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
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--quality", action="store_true", help="SSIM vs batch size / local steps")
    ap.add_argument("--quality-iterations", type=int, default=600)
    a = ap.parse_args(argv)
    reps = a.reps or (3 if a.quick else 5)
    iters = a.iterations or (40 if a.quick else 100)
    torch.set_num_threads(1)
    from fedsafe.attacks.inversion.gradient_matching import (
        _init_image,
        observed_gradient,
        reconstruct,
    )
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
    fed = fedavg_restarts(reps, max(5, iters // 10), a.restarts)
    body += fed.pop("body")
    if a.quality:
        body += quality_table(a.quality_iterations)
    write("inversion", "Item 4: gradient inversion vs a plain PyTorch loop", body)
    return {"inversion_ratio": ratio, **fed}


def _fedavg_case(n=4, batch_size=32, epochs=2, lr=0.1, seed=0):
    """The MedPFL LeNet at initialisation and one client's FedAvg update on n MRI slices."""
    from fedsafe.attacks.inversion.fedavg_update import ClientTraining
    from fedsafe.data.synthetic import synthetic_brain_mri
    from fedsafe.defenses.base import Mechanism
    from fedsafe.federation.local import TrainSettings, local_train
    from fedsafe.models import build_model

    data = synthetic_brain_mri(seed, n_samples=80, image_size=16)
    torch.manual_seed(seed)
    model = build_model("lenet", 1, 3, 16)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data.x_train[:n], data.y_train[:n]
    update, _ = local_train(model, x, y, TrainSettings(epochs, batch_size, lr), Mechanism(), 0, 1,
                            0, {})
    model.load_state_dict(start)
    return model.eval(), x, y, update, ClientTraining(n, batch_size, epochs, lr)


def fedavg_restarts(reps: int, iterations: int, restarts: int) -> dict:
    from fedsafe.attacks.inversion.fedavg_update import reconstruct_fedavg

    model, x, y, update, t = _fedavg_case()
    labels = torch.from_numpy(y).long()
    starts = torch.rand((restarts, t.n_examples, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    kw = dict(iterations=iterations, labels=labels)

    def vectorised():
        return reconstruct_fedavg(model, update, t, (1, 16, 16), 3, init=starts, **kw)

    def loop():
        return [reconstruct_fedavg(model, update, t, (1, 16, 16), 3, init=starts[r:r + 1], **kw)
                for r in range(restarts)]

    v, lp = vectorised(), loop()
    diff = max(abs(v["all_losses"][r] - lp[r]["loss"]) for r in range(restarts))
    times = alternate({"vectorised": vectorised, "loop": loop}, reps, clock="cpu")
    rps = {k: restarts * t.n_examples / median(ts) for k, ts in times.items()}
    rows = [{"side": f"reconstruct_fedavg, {restarts} restarts vectorised (vmap)",
             "images reconstructed/s": rps["vectorised"]},
            {"side": "plain loop over the restarts, same math", "images reconstructed/s": rps["loop"]}]
    body = (f"\n### Multi-step (FedAvg) attack: restarts as one vectorised problem\n\n"
            f"LeNet, {t.n_examples} images 16x16, {t.local_epochs} local SGD epochs, {iterations} "
            f"iterations per reconstruction, {restarts} restarts, {reps} alternating repetitions, "
            f"medians of CPU time. Max final-loss difference vectorised vs loop: {diff:.1e}.\n\n"
            + table(rows) + f"\n- speed-up: {rps['vectorised'] / rps['loop']:.2f}x\n")
    return {"body": body, "fedavg_restarts_speedup": rps["vectorised"] / rps["loop"],
            "fedavg_images_per_s": rps["vectorised"]}


def quality_table(iterations: int) -> str:
    """Multi-step attack SSIM vs the client's batch size and local epochs (8 images)."""
    from fedsafe.attacks.inversion.fedavg_update import reconstruct_fedavg
    from fedsafe.federation.local import to_tensor
    from fedsafe.metrics import matched_image_metrics

    rows = []
    for batch_size in (8, 4, 2):
        for epochs in (1, 2, 4):
            model, x, y, update, t = _fedavg_case(8, batch_size, epochs)
            res = reconstruct_fedavg(model, update, t, (1, 16, 16), 3, iterations=iterations,
                                     restarts=2, tv_weight=1e-3)
            m = matched_image_metrics(to_tensor(x), res["images"])
            rows.append({"batch size": batch_size, "local epochs": epochs, "local steps": t.steps,
                         "SSIM": m["mean_ssim"], "success (SSIM>=0.9)": m["success_rate"],
                         "labels right": float((res["labels"].sort().values ==
                                                torch.from_numpy(y).sort().values).float().mean()),
                         "final loss": res["loss"]})
    return (f"\n### Multi-step attack quality vs batch size and local steps\n\nLeNet, one "
            f"client of 8 MRI slices 16x16, SGD lr 0.1, {iterations} iterations, 2 restarts. With "
            f"several batches per epoch the server does not know how the client shuffled them "
            f"after the first epoch.\n\n" + table(rows) + "\n")


if __name__ == "__main__":
    main()
