"""The inversion attack job: the cell's honest-but-curious server inverts what it observed.

Threat model as deployed (`observation: update`, the default): the attacker reads the server's
recorded view of round `round` (`observed.pt`, written by the federation): the victim's update as
received, after the client's defense (under secure aggregation only the aggregate of all
clients), the global model it sent, the client's number of examples, and the training settings
every server knows (optimizer, lr, local epochs, batch size). Nothing is replayed.

- `fedavg` (multi-step, Dimitrov et al. 2022) simulates the client's local training on N dummy
  images and matches the update (`fedavg_update`).
- `dlg` / `idlg` / `inverting_gradients` treat the update as one gradient, -update / (lr x steps)
  (`gradient_matching`).

MedPFL's single-gradient setting (`observation: gradient`) stays as an explicit mode: the victim
shares one gradient of a batch of `batch_size` images (FedSGD), i.e. one SGD step at the
federation's own lr through the deployed client code and defense, with the round's own noise
(seeded by the federation round index), from the global model the server sent in that round.
"""

import json
import logging
import time
from dataclasses import replace

import numpy as np
import torch

from fedsafe.attacks.context import AttackContext
from fedsafe.attacks.inversion.figures import save_curve, save_grid
from fedsafe.federation import clients_per_round
from fedsafe.federation.local import TrainSettings, local_train, to_tensor
from fedsafe.metrics import matched_image_metrics

log = logging.getLogger("fedsafe.attack")
SETTINGS = {"update": "deployed update", "gradient": "single-gradient (FedSGD)"}


def server_view(ctx: AttackContext, rnd: int, victim: int) -> dict:
    """What the server recorded about `victim` in round `rnd`: the update it received (only the
    aggregate under secure aggregation), the global model it sent, the client's example count."""
    if rnd not in ctx.observed:
        raise ValueError(f"round {rnd} was not observed; add it to federation.observe_rounds "
                         f"(observed: {sorted(ctx.observed)})")
    obs = ctx.observed[rnd]
    if victim not in obs["clients"]:
        raise ValueError(f"client {victim} was not sampled in round {rnd} ({obs['clients']})")
    i = obs["clients"].index(victim)
    secure = obs["updates"][i] is None
    return {"update": obs["aggregate"] if secure else obs["updates"][i],
            "global_before": obs["global_before"], "num_examples": int(obs["num_examples"][i]),
            "observed": "aggregate" if secure else "client update"}


def _replayed_update(ctx, weights, rnd, client, x, y, settings):
    """Single-gradient setting: the client's one FedSGD step through the deployed code."""
    model = ctx.new_model(ctx.defense.downlink(weights, rnd, client)).train()
    sampled = clients_per_round(len(ctx.data.clients), ctx.spec["federation"]["fraction_train"])
    update, _ = local_train(model, x, y, settings, ctx.defense, ctx.seed, rnd, client, {},
                            ctx.device, round_info={"sampled": sampled})
    return update


def _shape(ctx) -> tuple:
    m = ctx.data.manifest
    return (m["channels"], m["image_size"], m["image_size"]), len(m["class_names"])


def _single_gradient_targets(ctx, options, rnd, victim):
    """(update, lr, images, labels) per batch: FedSGD steps at the federation's lr."""
    view = server_view(ctx, rnd, victim)
    fed = TrainSettings.from_config(ctx.spec["federation"])
    bs = int(options["batch_size"])
    settings = replace(fed, optimizer="sgd", momentum=0.0, batch_size=bs, local_epochs=1)
    x_all, y_all = ctx.data.clients[victim]
    idx = np.random.default_rng([ctx.seed, victim]).permutation(len(y_all))
    out = []
    for b in range(int(options["n_batches"])):
        sel = idx[b * bs:(b + 1) * bs]
        update = _replayed_update(ctx, view["global_before"], rnd, victim, x_all[sel], y_all[sel],
                                  settings)
        if view["observed"] == "aggregate":  # the server learns only the mean of every client's
            others = []
            for c in ctx.observed[rnd]["clients"]:
                if c != victim:
                    xc, yc = ctx.data.clients[c]
                    others.append(_replayed_update(ctx, view["global_before"], rnd, c, xc[:bs],
                                                   yc[:bs], settings))
            update = {k: sum(u[k] for u in [update, *others]) / (1 + len(others)) for k in update}
        out.append((update, fed.for_round(rnd).lr, x_all[sel], y_all[sel]))
    return out, view


def run(ctx: AttackContext, options: dict, *, method: str) -> list[dict]:
    """Inversion attack `method` (dlg, idlg, inverting_gradients, fedavg: bound by its registry
    entry) on the update the server recorded."""
    from fedsafe.attacks import INVERSION_OPTIONS
    from fedsafe.attacks.inversion.gradient_matching import reconstruct
    from fedsafe.options import resolve

    options = resolve(INVERSION_OPTIONS, options)
    rnd = options["round"] if options.get("round") is not None else min(ctx.observed, default=1)
    mode = options["observation"]
    skipped = {"attack_param": "round", "attack_value": float(rnd), "setting": SETTINGS[mode],
               "n_images": 0}
    stopped = ctx.train_result.get("stopped")
    if rnd not in ctx.observed and stopped and rnd >= stopped["before_round"]:
        # the privacy budget ended training first: the server never saw this round
        return [{**skipped, "skipped": f"training stopped before round {rnd}: "
                                       f"{stopped['reason']}"}]
    if rnd not in ctx.observed:
        raise ValueError(f"round {rnd} was not observed; add it to federation.observe_rounds "
                         f"(observed: {sorted(ctx.observed)})")
    if not ctx.observed[rnd]["clients"]:  # Poisson client sampling drew nobody
        return [{**skipped, "skipped": f"no client took part in round {rnd}"}]
    if ctx.observed[rnd].get("hidden"):  # homomorphic encryption: the server holds ciphertext
        return [{**skipped, "skipped": ctx.observed[rnd]["hidden"]}]
    victim = ctx.observed[rnd]["clients"][0] if options["victim"] is None else int(options["victim"])
    shape, n_classes = _shape(ctx)
    t0 = time.time()
    if mode == "gradient":
        if method == "fedavg":
            raise ValueError("attacks.<fedavg>.options.observation: the multi-step attack inverts "
                             "a FedAvg update; use observation: update")
        targets, view = _single_gradient_targets(ctx, options, rnd, victim)
    else:
        view = server_view(ctx, rnd, victim)
        if view["num_examples"] > int(options["max_images"]):
            return [_skipped(options, rnd, view, mode)]
        if method == "fedavg":
            return _run_fedavg(ctx, options, rnd, victim, view, t0)
        t = _client_training(ctx, view["num_examples"], rnd)
        x_all, y_all = ctx.data.clients[victim]
        targets = [(view["update"], t.lr * t.steps, x_all, y_all)]
    model = ctx.new_model(view["global_before"])
    names = [k for k, _ in model.named_parameters()]
    originals, recons, label_hits, finals, curves = [], [], [], [], []
    for b, (update, scale, x, y) in enumerate(targets):
        grads = [-update[k].to(ctx.device) / scale for k in names]  # update = -lr x gradient
        calls: list[tuple[int, float]] = []
        rec, labels = reconstruct(
            model, grads, shape, n_classes, method=method, init=options["init"],
            iterations=int(options["iterations"]), restarts=int(options["restarts"]),
            lr=options.get("lr"), tv_weight=float(options["tv_weight"]),
            seed=ctx.seed * 1000 + b, batch_size=len(y), progress=lambda i, loss: calls.append((i, loss)))  # noqa: B023 - called now
        originals.append(to_tensor(x))
        recons.append(rec.detach().cpu())
        label_hits.append(np.mean(np.sort(labels.cpu().numpy()) == np.sort(y)))
        iters = int(options["iterations"])  # final loss: the best restart's last one
        finals.append(min(loss for i, loss in calls if (i + 1) % iters == 0))
        curves.append([loss for _, loss in calls])
    return [_row(ctx, options, method, rnd, view, mode, torch.cat(originals), torch.cat(recons),
                 float(np.mean(label_hits)), finals, curves[0], t0)]


def _client_training(ctx, n_examples, rnd):
    from fedsafe.attacks.inversion.fedavg_update import ClientTraining

    f = TrainSettings.from_config(ctx.spec["federation"]).for_round(rnd)
    return ClientTraining(n_examples, f.batch_size, f.local_epochs, f.lr, f.optimizer, f.momentum)


def _run_fedavg(ctx, options, rnd, victim, view, t0):
    from fedsafe.attacks.inversion.fedavg_update import reconstruct_fedavg

    n = view["num_examples"]
    shape, n_classes = _shape(ctx)
    model = ctx.new_model(view["global_before"])
    observed = {k: v.to(ctx.device) for k, v in view["update"].items()}
    res = reconstruct_fedavg(model, observed, _client_training(ctx, n, rnd), shape, n_classes,
                             iterations=int(options["iterations"]),
                             restarts=int(options["restarts"]), lr=options.get("lr") or 0.1,
                             tv_weight=float(options["tv_weight"]), seed=ctx.seed)
    x, y = ctx.data.clients[victim]
    hits = float(np.mean(np.sort(res["labels"].cpu().numpy()) == np.sort(y)))
    return [_row(ctx, options, "fedavg", rnd, view, "update", to_tensor(x),
                 res["images"].detach().cpu(), hits, [res["loss"]], res["losses"], t0)]


def _skipped(options, rnd, view, mode):
    """A cell whose client holds more images than the attack can afford: said, never faked."""
    return {"attack_param": "round", "attack_value": float(rnd), "setting": SETTINGS[mode],
            "observed": view["observed"], "n_images": 0, "num_examples": view["num_examples"],
            "skipped": f"client holds {view['num_examples']} images > max_images "
                       f"{options['max_images']}"}


def _row(ctx, options, method, rnd, view, mode, orig, rec, label_accuracy, final_losses, curve,
         t0):
    m = matched_image_metrics(orig, rec)
    if options["save_images"]:
        from fedsafe.files import private_dir  # patients' images: owner-only

        private_dir(ctx.out_dir)
        save_grid(orig[m["original_index"]], rec[m["reconstruction_index"]], ctx.out_dir /
                   f"{method}_round{rnd}_reconstructions.png")
        save_curve(curve, ctx.out_dir / f"{method}_round{rnd}_loss.png")
    log.info("%s round %d (%s): ssim %.3f, final loss %.4g", method, rnd, SETTINGS[mode],
             m["mean_ssim"], min(final_losses))
    return {"attack_param": "round", "attack_value": float(rnd), "setting": SETTINGS[mode],
            "mse": m["mean_mse"], "psnr": m["mean_psnr"], "ssim": m["mean_ssim"],
            "reconstruction_success_rate": m["success_rate"], "label_accuracy": label_accuracy,
            "n_images": len(rec), "num_examples": view["num_examples"],
            "batch_size": int(options["batch_size"]) if mode == "gradient" else
            ctx.spec["federation"]["batch_size"], "observed": view["observed"],
            "final_loss": float(np.mean(final_losses)), "iterations": int(options["iterations"]),
            # per-image SSIM keyed by the victim's image index: the trade-off table takes the
            # worst case per image over every inversion attack on the cell
            "image_ssim": json.dumps(dict(zip(map(str, m["original_index"]),
                                              np.round(m["ssim"], 4).tolist()))),
            "attack_seconds": time.time() - t0}

