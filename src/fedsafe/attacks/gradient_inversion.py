"""Gradient inversion of a client's update on the cell's real federation (the server is
honest-but-curious).

Gradient inversion replays the victim client with the deployed code (`local_train` with the cell's
defense), starting from the global checkpoint of the attacked round, so the attacker sees exactly
what this cell's server sees: the update after the client's defense (noise, clipping, DP-SGD).
Under secure aggregation the server only sees the sum, so the attacker gets the mean update of all
clients, each replayed on its own batch.
"""

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedsafe.attacks.context import AttackContext
from fedsafe.config import clients_per_round
from fedsafe.federation.local import TrainSettings, local_train, to_tensor
from fedsafe.metrics import image_metrics

log = logging.getLogger("fedsafe.attack")
def observed_update(ctx: AttackContext, weights: dict, rnd: int, client: int, x, y,
                    settings: TrainSettings) -> list[torch.Tensor]:
    """The update client `client` sends for batch (x, y), after its defense, as a parameter list."""
    model = ctx.new_model(ctx.defense.downlink(weights, rnd, client)).train()
    fed = ctx.spec["federation"]
    sampled = clients_per_round(len(ctx.data.clients), fed["fraction_train"])  # distributed DP
    update, _ = local_train(model, x, y, settings, ctx.defense, ctx.seed, rnd, client, {},
                            ctx.device, round_info={"sampled": sampled})
    names = [n for n, _ in ctx.new_model().named_parameters()]
    return [update[n] for n in names]


def _victim_batches(ctx, client, n_batches, batch_size):
    x, y = ctx.data.clients[client]
    idx = np.random.default_rng([ctx.seed, client]).permutation(len(y))[:n_batches * batch_size]
    return [(x[idx[i:i + batch_size]], y[idx[i:i + batch_size]])
            for i in range(0, len(idx), batch_size)]


def run_inversion(ctx: AttackContext, options: dict, method: str) -> list[dict]:
    from fedsafe.attacks.inversion import reconstruct

    rounds = ctx.spec["federation"]["checkpoint_rounds"]
    rnd = rounds[0] if options.get("round") is None else int(options["round"])
    if rnd not in ctx.checkpoints:
        raise ValueError(f"attacks.<{method}>.options.round: round {rnd} has no checkpoint; add it "
                         f"to federation.checkpoint_rounds (has {sorted(ctx.checkpoints)})")
    bs, victim = int(options.get("batch_size", 1)), int(options.get("victim", 0))
    fed = TrainSettings.from_config(ctx.spec["federation"])
    steps = int(options.get("local_steps", 1))
    if options.get("observation", "gradient") == "gradient":  # FedSGD: the client shares a gradient
        settings, scale = replace(fed, optimizer="sgd", lr=1.0, momentum=0.0, batch_size=bs,
                                  local_epochs=1), 1.0
    else:  # FedAvg: `local_steps` steps of the federation's own optimizer on the batch
        settings = replace(fed, batch_size=bs, local_epochs=steps)
        scale = fed.lr * steps
    secagg = "secagg" in ctx.defense.names
    weights = ctx.checkpoints[rnd]
    model = ctx.new_model(weights)
    m = ctx.data.manifest
    shape = (m["channels"], m["image_size"], m["image_size"])
    originals, recons, label_hits, t0 = [], [], [], time.time()
    for b, (x, y) in enumerate(_victim_batches(ctx, victim, int(options.get("n_batches", 4)), bs)):
        update = observed_update(ctx, weights, rnd, victim, x, y, settings)
        if secagg:  # the server learns only the mean over every client's update
            others = [observed_update(ctx, weights, rnd, c, *_victim_batches(ctx, c, 1, bs)[0],
                                      settings) for c in range(len(ctx.data.clients)) if c != victim]
            update = [sum(t) / (1 + len(others)) for t in zip(update, *others)]
        grads = [-u / scale for u in update]  # an update is minus lr x the (summed) gradient
        rec, labels = reconstruct(
            model, grads, shape, len(m["class_names"]), method=method,
            init=options.get("init", "random"), iterations=int(options.get("iterations", 100)),
            restarts=int(options.get("restarts", 1)), lr=options.get("lr"),
            tv_weight=float(options.get("tv_weight", 1e-4)), seed=ctx.seed * 1000 + b,
            batch_size=bs)
        originals.append(to_tensor(x))
        recons.append(rec.detach().cpu())
        label_hits.append(np.mean(np.sort(labels.cpu().numpy()) == np.sort(y)))
        log.info("batch %d: ssim %.3f", b + 1, image_metrics(originals[-1], recons[-1])["mean_ssim"])
    orig, rec = torch.cat(originals), torch.cat(recons)
    metrics = image_metrics(orig, rec)
    if options.get("save_images", False):
        _save_grid(orig, rec, ctx.out_dir / f"{method}_round{rnd}_reconstructions.png")
    return [{"attack_param": "round", "attack_value": float(rnd), "mse": metrics["mean_mse"],
             "psnr": metrics["mean_psnr"], "ssim": metrics["mean_ssim"],
             "reconstruction_success_rate": metrics["success_rate"],
             "label_accuracy": float(np.mean(label_hits)), "n_images": len(orig),
             "batch_size": bs, "observed": "aggregate" if secagg else "client update",
             "attack_seconds": time.time() - t0}]


def _save_grid(orig: torch.Tensor, rec: torch.Tensor, path: Path) -> None:
    """Originals (top row) over reconstructions (bottom row)."""
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


def run_dlg(ctx, options):
    return run_inversion(ctx, options, "dlg")


def run_idlg(ctx, options):
    return run_inversion(ctx, options, "idlg")


def run_inverting_gradients(ctx, options):
    return run_inversion(ctx, options, "inverting_gradients")
