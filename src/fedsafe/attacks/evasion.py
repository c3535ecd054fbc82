"""Test-time evasion attacks with torchattacks, on the models the federation really produced.

Two threat models, as in Fed-Safe: (1) white-box on the final global model; (2) a malicious client
crafts adversarial examples on the copy of the model it received (noised by any downlink defense)
and they are scored on itself and transferred to every other client's copy.
Metrics: robust accuracy; attack success rate (ASR) = share of correctly classified samples whose
prediction flips; transfer rate = share of a source client's successful examples that also fool a
target client that classified the clean sample correctly, averaged over ordered client pairs.
"""

import time

import numpy as np
import torch

from fedsafe.attacks.context import AttackContext
from fedsafe.federation.local import to_tensor


def _attack_factory(kind: str, eps: float, options: dict):
    import torchattacks

    steps = int(options.get("steps", 10))
    step = float(options.get("step_size") or eps / float(options.get("step_fraction", 4)))
    if kind == "fgsm":
        return lambda m: torchattacks.FGSM(m, eps=eps)
    if options.get("norm", "Linf") == "L2":
        return lambda m: torchattacks.PGDL2(m, eps=eps, alpha=step, steps=steps, random_start=True)
    return lambda m: torchattacks.PGD(m, eps=eps, alpha=step, steps=steps, random_start=True)


@torch.no_grad()
def _predict(model, x, batch_size=256):
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def _craft(make_attack, model, x, y, batch_size, seed):
    torch.manual_seed(seed)  # random start
    attack = make_attack(model)
    return torch.cat([attack(x[i:i + batch_size], y[i:i + batch_size])
                      for i in range(0, len(x), batch_size)])


def _test_subset(ctx: AttackContext, n: int):
    x, y = ctx.data.test
    idx = np.random.default_rng(ctx.seed).permutation(len(y))[:n]
    return to_tensor(x[idx]).to(ctx.device), torch.from_numpy(y[idx]).long().to(ctx.device)


def evaluate_evasion(ctx: AttackContext, kind: str, options: dict) -> list[dict]:
    x, y = _test_subset(ctx, int(options.get("n_samples", 500)))
    batch = int(options.get("batch_size", 250))
    model = ctx.new_model()
    clean_pred = _predict(model, x)
    correct = clean_pred == y
    # Randomised (downlink-noised) copies: average over `draws` independent noise draws, so one
    # lucky draw cannot make the defense look robust.
    draws = ([ctx.client_copies(d) for d in range(int(options.get("draws", 1)))]
             if options.get("transfer", True) else [])
    rows = []
    for eps in options.get("eps", [8 / 255]):
        t0 = time.time()
        make = _attack_factory(kind, float(eps), options)
        adv = _craft(make, model, x, y, batch, ctx.seed) if eps > 0 else x
        adv_pred = _predict(model, adv)
        row = {"attack_param": "eps", "attack_value": float(eps),
               "clean_accuracy": correct.float().mean().item(),
               "robust_accuracy": (adv_pred == y).float().mean().item(),
               "attack_success_rate": _flip_rate(correct, adv_pred, y),
               "linf_max": (adv - x).abs().max().item(), "n_samples": len(y)}
        if draws and len(draws[0]) > 1:
            parts = [_transfer(make, copies, x, y, batch, ctx.seed + 1000 * d, eps)
                     for d, copies in enumerate(draws)]
            row.update({k: float(np.nanmean([p[k] for p in parts])) for k in parts[0]},
                       noise_draws=len(draws))
        row["attack_seconds"] = time.time() - t0
        rows.append(row)
    return rows


def _flip_rate(correct, adv_pred, y) -> float:
    n = int(correct.sum())
    return float(((adv_pred != y) & correct).sum()) / n if n else float("nan")


def _transfer(make, copies, x, y, batch, seed, eps) -> dict:
    preds = [_predict(m, x) for m in copies]
    advs = [_craft(make, m, x, y, batch, seed + i) if eps > 0 else x for i, m in enumerate(copies)]
    own_asr, rates = [], []
    for i, adv in enumerate(advs):
        own_correct, own_pred = preds[i] == y, _predict(copies[i], adv)
        own_fooled = (own_pred != y) & own_correct
        own_asr.append(_flip_rate(own_correct, own_pred, y))
        for j, target in enumerate(copies):
            if j == i:
                continue
            base = own_fooled & (preds[j] == y)
            if base.any():
                rates.append(float(((_predict(target, adv) != y) & base).sum() / base.sum()))
    return {"client_attack_success_rate": float(np.nanmean(own_asr)),
            "transfer_rate": float(np.mean(rates)) if rates else float("nan")}


def run_fgsm(ctx: AttackContext, options: dict) -> list[dict]:
    return evaluate_evasion(ctx, "fgsm", options)


def run_pgd(ctx: AttackContext, options: dict) -> list[dict]:
    return evaluate_evasion(ctx, "pgd", options)
