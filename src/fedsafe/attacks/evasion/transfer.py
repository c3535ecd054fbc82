"""The malicious-client threat model: each client attacks the copy of the model it received
(noised by any downlink defense), and its examples are transferred to every other client's copy,
as in Fed-Safe. Transfer rate = share of a source client's successful examples that also fool a
target client that classified the clean sample correctly, averaged over ordered client pairs.
"""

import numpy as np
import torch

from fedsafe.attacks.evasion.metrics import bits, flip_rate, nanmean, share
from fedsafe.attacks.evasion.suite import craft, predict


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def client_threat(make, model, adv_global, copies, x, y, batch, seed, eps) -> dict:
    """White-box on each client's received copy, then transfer to the other copies. A copy equal
    to the global model (no downlink defense) reuses the global model's examples."""
    preds = [predict(m, x) for m in copies]
    advs = [adv_global if _same_weights(m, model) else craft(make, m, eps, x, y, batch, seed + i)
            for i, m in enumerate(copies)]
    own_asr, own_robust, masks, rates = [], [], [], []
    for i, adv in enumerate(advs):
        own_correct = preds[i] == y
        robust = own_correct & (predict(copies[i], adv) == y)
        own_asr.append(flip_rate(own_correct, robust))
        own_robust.append(share(robust))
        masks.append(bits(robust))
        own_fooled = own_correct & ~robust
        for j, target in enumerate(copies):
            if j == i:
                continue
            base = own_fooled & (preds[j] == y)
            if base.any():
                rates.append(float(((predict(target, adv) != y) & base).sum() / base.sum()))
    return {"client_attack_success_rate": nanmean(own_asr),
            "client_robust_accuracy": float(np.mean(own_robust)),
            "transfer_rate": float(np.mean(rates)) if rates else float("nan"), "masks": masks}
