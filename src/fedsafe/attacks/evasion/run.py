"""An evasion attack job: test-time attacks (torchattacks, built in `suite`) on the models the
federation really produced.

Two white-box threat models, reported separately: (1) the final global model (`robust_accuracy`);
(2) a malicious client attacks the copy of the model it received, noised by any downlink defense
(`client_robust_accuracy`, mean over clients and noise draws), and transfers its examples to every
other client's copy (`transfer`). The metrics are defined in `metrics`.

Every row also carries per-sample masks ('1' = robust) over the cell's fixed test subset, so the
results can take the per-sample worst case over all attacks of a cell (fedsafe.robustness).
The subset depends only on the cell's seed and `n_samples` (a prefix of one seeded permutation),
so every attack of a cell sees the same samples.
"""

import time

import numpy as np
import torch

from fedsafe.attacks.context import AttackContext
from fedsafe.attacks.evasion.metrics import bits, flip_rate, nanmean, share
from fedsafe.attacks.evasion.suite import autoattack_version, build, craft, predict
from fedsafe.attacks.evasion.transfer import client_threat
from fedsafe.federation.local import to_tensor

BLACK_BOX = {"square"}


def eval_subset(ctx: AttackContext, n: int | None):
    """The first n of one seeded permutation of the test set (n None: all of it)."""
    x, y = ctx.data.test
    idx = np.random.default_rng(ctx.seed).permutation(len(y))[:n]
    return to_tensor(x[idx]).to(ctx.device), torch.from_numpy(y[idx]).long().to(ctx.device)


def _random_at_inference(model, x) -> bool:
    """A model whose output differs between two identical queries needs EOT (AutoAttack 'rand')."""
    with torch.no_grad():
        return not torch.equal(model(x[:8]), model(x[:8]))


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
        adv = craft(make, model, float(eps), x, y, batch, ctx.seed)
        robust = correct & (predict(model, adv) == y)
        delta = (adv - x).flatten(1)
        row = {"attack_param": "eps", "attack_value": float(eps),
               "norm": options.get("norm", "L2" if kind == "cw" else "Linf"),
               "black_box": kind in BLACK_BOX, "clean_accuracy": share(correct),
               "robust_accuracy": share(robust),
               "attack_success_rate": flip_rate(correct, robust),
               "linf_max": delta.abs().max().item(), "l2_max": delta.norm(dim=1).max().item(),
               "n_samples": len(y), "majority_rate": majority, "random_model": random_model,
               "clean_mask": bits(correct), "robust_mask": bits(robust)}
        if kind == "autoattack":
            row["autoattack_version"] = autoattack_version(options, random_model)
        if draws:
            parts = [client_threat(make, model, adv, copies, x, y, batch,
                                   ctx.seed + 1000 * (d + 1), float(eps))
                     for d, copies in enumerate(draws)]
            masks = [m for p in parts for m in p.pop("masks")]
            row.update({k: nanmean([p[k] for p in parts]) for k in parts[0]},
                       noise_draws=len(draws), client_robust_masks=masks)
        row["attack_seconds"] = time.time() - t0
        rows.append(row)
    return rows
