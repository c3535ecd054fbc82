"""Test-time evasion attacks (torchattacks, built in `evasion_suite`) on the models the federation
really produced.

Two white-box threat models, reported separately: (1) the final global model (`robust_accuracy`);
(2) a malicious client attacks the copy of the model it received, noised by any downlink defense
(`client_robust_accuracy`, mean over clients and noise draws); its examples are then transferred
to every other client's copy, as in Fed-Safe.
Metrics: robust accuracy = share of samples classified correctly both clean and under attack
(RobustBench's definition: a misclassified clean sample is never robust); attack success rate
(ASR) = share of correctly classified samples whose prediction flips; transfer rate = share of a
source client's successful examples that also fool a target client that classified the clean
sample correctly, averaged over ordered client pairs.

Every row also carries per-sample masks ('1' = robust) over the cell's fixed test subset, so the
results can take the per-sample worst case over all attacks of a cell (fedsafe.robustness).
The subset depends only on the cell's seed and `n_samples` (a prefix of one seeded permutation),
so every attack of a cell sees the same samples.
"""

import time

import numpy as np
import torch

from fedsafe.attacks.context import AttackContext
from fedsafe.attacks.evasion_suite import autoattack_version, build, predict
from fedsafe.federation.local import to_tensor

BLACK_BOX = {"square"}


def eval_subset(ctx: AttackContext, n: int | None):
    """The first n of one seeded permutation of the test set (n None: all of it)."""
    x, y = ctx.data.test
    idx = np.random.default_rng(ctx.seed).permutation(len(y))[:n]
    return to_tensor(x[idx]).to(ctx.device), torch.from_numpy(y[idx]).long().to(ctx.device)


def bits(mask: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in mask.tolist())


def _craft(make, model, eps, x, y, batch_size, seed):
    if eps == 0:
        return x
    torch.manual_seed(seed)  # random starts
    attack = make(model, eps)
    return torch.cat([attack(x[i:i + batch_size], y[i:i + batch_size])
                      for i in range(0, len(x), batch_size)])


def _random_at_inference(model, x) -> bool:
    """A model whose output differs between two identical queries needs EOT (AutoAttack 'rand')."""
    with torch.no_grad():
        return not torch.equal(model(x[:8]), model(x[:8]))


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def run(ctx: AttackContext, options: dict, *, kind: str) -> list[dict]:
    """Evasion attack `kind` (fgsm, pgd, ...: bound by its registry entry) on the cell."""
    from fedsafe.attacks import ATTACKS

    options = ATTACKS.resolve(kind, options)  # jobs pass them resolved; tests need not
    x, y = eval_subset(ctx, options["n_samples"])
    batch = int(options["batch_size"])
    model = ctx.new_model()
    n_classes = len(ctx.data.manifest["class_names"])
    random_model = _random_at_inference(model, x)
    make = build(kind, options, n_classes, random_model, ctx.seed)
    correct = predict(model, x) == y
    # Randomised (downlink-noised) copies: average over `draws` independent noise draws, so one
    # lucky draw cannot make the defense look robust.
    draws = ([ctx.client_copies(d) for d in range(int(options["draws"]))]
             if options["transfer"] else [])
    test_y = ctx.data.test[1]
    majority = float(np.bincount(test_y).max() / len(test_y))
    rows = []
    for eps in options["eps"]:
        t0 = time.time()
        adv = _craft(make, model, float(eps), x, y, batch, ctx.seed)
        robust = correct & (predict(model, adv) == y)
        delta = (adv - x).flatten(1)
        row = {"attack_param": "eps", "attack_value": float(eps),
               "norm": options.get("norm", "L2" if kind == "cw" else "Linf"),
               "black_box": kind in BLACK_BOX, "clean_accuracy": _share(correct),
               "robust_accuracy": _share(robust),
               "attack_success_rate": _flip_rate(correct, robust),
               "linf_max": delta.abs().max().item(), "l2_max": delta.norm(dim=1).max().item(),
               "n_samples": len(y), "majority_rate": majority, "random_model": random_model,
               "clean_mask": bits(correct), "robust_mask": bits(robust)}
        if kind == "autoattack":
            row["autoattack_version"] = autoattack_version(options, random_model)
        if draws:
            parts = [_client_threat(make, model, adv, copies, x, y, batch,
                                    ctx.seed + 1000 * (d + 1), float(eps))
                     for d, copies in enumerate(draws)]
            masks = [m for p in parts for m in p.pop("masks")]
            row.update({k: _nanmean([p[k] for p in parts]) for k in parts[0]},
                       noise_draws=len(draws), client_robust_masks=masks)
        row["attack_seconds"] = time.time() - t0
        rows.append(row)
    return rows


def _share(mask: torch.Tensor) -> float:
    return int(mask.sum()) / len(mask)


def _nanmean(values) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _flip_rate(correct, robust) -> float:
    n = int(correct.sum())
    return float((correct & ~robust).sum()) / n if n else float("nan")


def _client_threat(make, model, adv_global, copies, x, y, batch, seed, eps) -> dict:
    """White-box on each client's received copy, then transfer to the other copies. A copy equal
    to the global model (no downlink defense) reuses the global model's examples."""
    preds = [predict(m, x) for m in copies]
    advs = [adv_global if _same_weights(m, model) else _craft(make, m, eps, x, y, batch, seed + i)
            for i, m in enumerate(copies)]
    own_asr, own_robust, masks, rates = [], [], [], []
    for i, adv in enumerate(advs):
        own_correct = preds[i] == y
        robust = own_correct & (predict(copies[i], adv) == y)
        own_asr.append(_flip_rate(own_correct, robust))
        own_robust.append(_share(robust))
        masks.append(bits(robust))
        own_fooled = own_correct & ~robust
        for j, target in enumerate(copies):
            if j == i:
                continue
            base = own_fooled & (preds[j] == y)
            if base.any():
                rates.append(float(((predict(target, adv) != y) & base).sum() / base.sum()))
    return {"client_attack_success_rate": _nanmean(own_asr),
            "client_robust_accuracy": float(np.mean(own_robust)),
            "transfer_rate": float(np.mean(rates)) if rates else float("nan"), "masks": masks}
