"""The imprint attack of a malicious server ("Robbing the Fed", Fowl et al., ICLR 2022; MedLeak,
arXiv 2407.09972, on medical images).

Threat model: the server is malicious. In round `round` it sends the clients, instead of the
global model, a crafted one: an imprint block in front of the global network. The clients train
on it as deployed: the round's optimiser, lr, local epochs and batch size, and the cell's defense
through its hooks (downlink and uplink noise, DP-SGD's per-sample clipping and noise, DP-FedAvg's
clipping and distributed noise), run by `local_train`, the federation's own client code. The
server adds none of its own server-side defense (central DP-FedAvg's noise) and reads:
- `observation: update`: one client's update (the first client sampled in the round);
- `observation: aggregate`: only the mean of the round's clients' updates, weighted as the
  federation weights them (under `secagg` after SecAgg+'s fixed-point encoding): what secure
  aggregation reveals to the server, and what an aggregate under homomorphic encryption reveals
  to whoever sees it decrypted. Under `secagg`, `update` gets this view too;
- `observation: gradient`: the single-gradient setting (FedSGD), for comparison: the client
  (under `secagg` every sampled client) takes one SGD step at the round's lr on one batch of the
  federation's batch size.

The block: k bins on the image's mean intensity m(x): bin i = relu(GAIN * (m(x) - t_i)) (a linear
layer of k identical rows, bias -GAIN * t_i), and the network sees x + c * sum_i bin_i (every
pixel shifted by at most SHIFT), so it still trains. The thresholds t_i are quantiles of m over
public images: the prepared data's test split, which no client trains on (never the victims'
images), so each bin holds about the same share of images. Every bin passes the same gradient to
its row for a given image, so in one gradient step the gradients of bins i and i + 1 differ by
the images with t_i <= m < t_(i+1) only: a bin holding one image gives it back exactly,
(dW_i - dW_(i+1)) / (db_i - db_(i+1)); a bin holding several gives their weighted mean. One SGD
step's update is -lr x the gradient, so it gives the same images; so does any per-client scaling
(DP-SGD's clipping factor, the aggregation weights, DP-FedAvg's clipping).

What local training does: after the first step the bins have moved (their rows and thresholds
follow the gradient), so several steps mix images across bins; Adam's update, about
-lr x sign(gradient) per weight, loses the ratio from the first step. The rows measure this; it
is not corrected for.
"""

import copy
import json
import logging
import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from fedsafe.attacks.context import AttackContext
from fedsafe.attacks.inversion.figures import save_grid
from fedsafe.attacks.inversion.run import server_view
from fedsafe.federation.local import TrainSettings, local_train, to_tensor
from fedsafe.metrics import matched_image_metrics
from fedsafe.seeding import torch_generator

log = logging.getLogger("fedsafe.attack")
SETTINGS = {"update": "deployed update", "aggregate": "deployed update",
            "gradient": "single-gradient (FedSGD)"}
# The block's scale (breaching's default gain). Its bins' gradients grow as 1 / GAIN while the
# input shift stays below SHIFT, so a small GAIN keeps a bin's update far above float32 rounding
# (the update is new - received weights) and above SecAgg+'s fixed-point step; but one step moves
# the thresholds by about 1 / GAIN^2 bin widths, so over several local steps it scrambles the
# bins. Measured in docs/attacks.md (0.1 recovers more over 3 SGD steps, and less under SecAgg+).
GAIN = 1e-3
SHIFT = 0.1  # the most the block adds to a pixel (images in [0, 1])
EMPTY = 1e-6  # a bin whose bias difference is below this share of the largest holds no image
IMPRINT = "0.bins"  # the block's linear layer in the crafted model's state dict
GRID_MAX = 16  # reconstructions shown in the saved grid


class ImprintBlock(nn.Module):
    """k bins on the mean intensity, their sum added to every pixel of the image."""

    sample_independent = True  # reviewed: a linear layer on each image alone, a ReLU, a sum

    def __init__(self, image_shape: tuple, thresholds: torch.Tensor):
        super().__init__()
        pixels, k = int(np.prod(image_shape)), len(thresholds)
        self.bins = nn.Linear(pixels, k)
        with torch.no_grad():
            self.bins.weight.fill_(GAIN / pixels)  # every row: GAIN x the mean intensity
            self.bins.bias.copy_(-GAIN * thresholds)
        self.scale = SHIFT / (GAIN * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bins = torch.relu(self.bins(x.flatten(1))).sum(1)
        return x + self.scale * bins.view(-1, *[1] * (x.dim() - 1))


def public_thresholds(images: torch.Tensor, bins: int) -> torch.Tensor:
    """t_0 below every image (bin 0 holds them all), then the mean intensity's quantiles 1/k,
    ..., (k-1)/k over `images` (public), so the bins hold equal shares of such images."""
    m = images.flatten(1).double().mean(1)
    q = torch.quantile(m, torch.arange(1, bins, dtype=torch.float64) / bins)
    return torch.cat([torch.tensor([-1e-3], dtype=torch.float64), q]).float()


def recover(update: dict, image_shape: tuple) -> torch.Tensor:
    """The image of every filled bin, from the imprint layer's weight and bias updates."""
    dw, db = update[f"{IMPRINT}.weight"].double(), update[f"{IMPRINT}.bias"].double()
    # bin i minus bin i + 1: the images with t_i <= m < t_(i+1) (the last bin: all above t_(k-1))
    dw = dw - torch.cat([dw[1:], torch.zeros_like(dw[:1])])
    db = db - torch.cat([db[1:], torch.zeros_like(db[:1])])
    filled = db.abs() > EMPTY * db.abs().max()
    return (dw[filled] / db[filled, None]).view(-1, *image_shape).clamp(0, 1).float()


def crafted_model(ctx: AttackContext, weights: dict, bins: int) -> nn.Module:
    """The global network `weights` behind an imprint block whose bins come from the test split."""
    m = ctx.data.manifest
    shape = (m["channels"], m["image_size"], m["image_size"])
    block = ImprintBlock(shape, public_thresholds(to_tensor(ctx.data.test[0]), bins))
    return nn.Sequential(block, ctx.new_model(weights)).to(ctx.device)


def client_update(ctx: AttackContext, crafted: nn.Module, rnd: int, client: int, x, y,
                  settings: TrainSettings, sampled: int) -> dict:
    """What `client` returns after training on the crafted model: the deployed client code and
    defense (its downlink on the crafted weights, its training hooks, its uplink)."""
    model = copy.deepcopy(crafted)
    model.load_state_dict(ctx.defense.downlink(crafted.state_dict(), rnd, client))
    update, _ = local_train(model, x, y, settings, ctx.defense, ctx.seed, rnd, client, {},
                            ctx.device, round_info={"sampled": sampled})
    return update


def run(ctx: AttackContext, options: dict) -> list[dict]:
    """The imprint attack in round `round`, observing what `observation` says (module doc)."""
    from fedsafe.attacks import IMPRINT_OPTIONS
    from fedsafe.options import resolve

    options = resolve(IMPRINT_OPTIONS, options)
    rnd = options["round"] if options["round"] is not None else min(ctx.observed, default=1)
    mode, bins = options["observation"], int(options["bins"])
    head = {"attack_param": "round", "attack_value": float(rnd), "setting": SETTINGS[mode],
            "bins": bins}
    stopped = ctx.train_result.get("stopped")
    if rnd not in ctx.observed and stopped and rnd >= stopped["before_round"]:
        # the privacy budget ended training first: the server never sent this round
        return [{**head, "n_images": 0, "skipped": f"training stopped before round {rnd}: "
                                                   f"{stopped['reason']}"}]
    sampled = ctx.observed[rnd]["clients"] if rnd in ctx.observed else []
    if rnd in ctx.observed and not sampled:  # Poisson client sampling drew nobody
        return [{**head, "n_images": 0, "skipped": f"no client took part in round {rnd}"}]
    if ctx.observed.get(rnd, {}).get("hidden"):  # homomorphic encryption: only ciphertext
        return [{**head, "n_images": 0, "skipped": ctx.observed[rnd]["hidden"]}]
    view = server_view(ctx, rnd, sampled[0] if sampled else 0)  # raises if never observed
    observed = "aggregate" if mode == "aggregate" else view["observed"]  # secagg: aggregate
    clients = sampled if observed == "aggregate" else sampled[:1]
    data = {c: _training_data(ctx, c, mode) for c in clients}
    n_images = sum(len(y) for _, y, _ in data.values())
    head = {**head, "observed": observed, "n_images": n_images}
    if n_images > int(options["max_images"]):
        return [{**head, "n_images": 0, "images_held": n_images,
                 "skipped": f"{n_images} images attacked > max_images {options['max_images']}"}]
    t0 = time.time()
    crafted = crafted_model(ctx, view["global_before"], bins)
    settings = TrainSettings.from_config(ctx.spec["federation"])
    if mode == "gradient":  # one step: the whole batch below in one SGD step
        settings = replace(settings, optimizer="sgd", momentum=0.0, local_epochs=1)
    updates = [client_update(ctx, crafted, rnd, c, x, y, settings, len(sampled))
               for c, (x, y, _) in data.items()]
    update = _mean(ctx, updates, [len(y) for _, y, _ in data.values()], rnd, mode)
    orig = torch.cat([to_tensor(x) for x, _, _ in data.values()])
    names = [f"{c}:{i}" for c, (_, _, idx) in data.items() for i in idx]  # client:image
    rec = recover(update, tuple(orig.shape[1:]))
    return [_row(ctx, options, head, orig, names, rec, t0)]


def _training_data(ctx, client, mode):
    """The images, labels and their indices in the client's data that it trains on: all of them,
    or (`gradient`) one batch of the federation's batch size, drawn as the single-gradient
    inversion draws it."""
    x, y = ctx.data.clients[client]
    if mode != "gradient":
        return x, y, np.arange(len(y))
    bs = int(ctx.spec["federation"]["batch_size"])
    sel = np.random.default_rng([ctx.seed, client]).permutation(len(y))[:bs]
    return x[sel], y[sel], sel


def _mean(ctx, updates, sizes, rnd, mode):
    """The imprint layer's part of the mean update the server learns, weighted as the federation
    weights; under secure aggregation, the mean of SecAgg+'s fixed-point encodings."""
    weighted = ctx.spec["federation"].get("aggregation") == "weighted" and \
        not ctx.defense.unweighted
    # SecAgg+'s weight ratio: a client's examples over the most any client trains on
    most = max(len(y) for _, y in ctx.data.clients)
    if mode == "gradient":
        most = min(most, int(ctx.spec["federation"]["batch_size"]))
    w = np.asarray(sizes, float) / most if weighted else np.ones(len(sizes))
    secure = next((p.options for p in ctx.defense.parts if p.secure), None)
    gen = torch_generator(ctx.seed, "imprint_secagg", rnd)
    keys = (f"{IMPRINT}.weight", f"{IMPRINT}.bias")
    return {k: sum(_fixed_point(wi * u[k].double(), secure, gen) if secure else wi * u[k].double()
                   for wi, u in zip(w, updates)) / w.sum() for k in keys}


def _fixed_point(v: torch.Tensor, options: dict, gen: torch.Generator) -> torch.Tensor:
    """What SecAgg+ makes of a client's weighted update (Flower's `quantize`, then the server's
    `dequantize`): clipped to +-clipping_range, rounded stochastically to one of
    quantization_range levels. Flower draws the rounding from numpy's global generator; seeded
    here, so the same config gives the same row."""
    c, levels = float(options["clipping_range"]), int(options["quantization_range"])
    step = 2 * c / levels
    x = (v.clamp(-c, c) + c) / step
    up = torch.rand(x.shape, generator=gen, dtype=x.dtype) < x - x.floor()
    return (x.floor() + up) * step - c


def _row(ctx, options, head, orig, names, rec, t0):
    """Best-match scores; an attacked image left without a reconstruction (fewer filled bins
    than images) is scored against a blank one."""
    filled = len(rec)
    if filled < len(orig):
        rec = torch.cat([rec, torch.zeros(len(orig) - filled, *orig.shape[1:])])
    m = matched_image_metrics(orig, rec)
    if options["save_images"]:
        from fedsafe.files import private_dir  # patients' images: owner-only

        private_dir(ctx.out_dir)
        oi, ri = m["original_index"][:GRID_MAX], m["reconstruction_index"][:GRID_MAX]
        save_grid(orig[oi], rec[ri], ctx.out_dir / f"imprint_round{int(head['attack_value'])}_"
                                                   f"{head['observed'].replace(' ', '_')}_"
                                                   f"reconstructions.png")
    log.info("imprint round %d (%s, %s): %d of %d images recovered, ssim %.3f",
             head["attack_value"], head["setting"], head["observed"],
             round(m["success_rate"] * len(orig)), len(orig), m["mean_ssim"])
    return {**head, "mse": m["mean_mse"], "psnr": m["mean_psnr"], "ssim": m["mean_ssim"],
            "reconstruction_success_rate": m["success_rate"],
            "recovered": int(round(m["success_rate"] * len(orig))), "bins_filled": filled,
            # per attacked image ("client:index") its best match's SSIM: the sampling error
            "image_ssim": json.dumps({names[i]: round(v, 4)
                                      for i, v in zip(m["original_index"], m["ssim"])}),
            "attack_seconds": time.time() - t0}
