"""The evasion attacks, built from torchattacks: `build(kind, options, ...)` returns
`make(model, eps) -> attack(x, y) -> adversarial x`, with the options already filled with their
registry defaults (fedsafe.attacks); `craft` runs one on a set of samples.

Several attempts (PGD restarts, AutoAttack's ensemble) are combined per sample, as AutoAttack
does: each attempt attacks only the samples that survived the previous ones, and a sample counts
as robust only if it survives all of them.
"""

from collections.abc import Callable

import torch

Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict(model, x, batch_size=256):
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def craft(make, model, eps, x, y, batch_size, seed):
    """The adversarial examples of `make(model, eps)` for x, in batches (eps 0: x itself)."""
    if eps == 0:
        return x
    torch.manual_seed(seed)  # random starts
    attack = make(model, eps)
    return torch.cat([attack(x[i:i + batch_size], y[i:i + batch_size])
                      for i in range(0, len(x), batch_size)])


def worst_of(model, attempts: list[Attack]) -> Attack:
    """Per sample, the first attempt that fools the model; survivors keep the last attempt's
    point (any point of the ball is a valid answer for them)."""
    def attack(x, y):
        adv, alive = x.clone(), torch.ones(len(y), dtype=torch.bool, device=x.device)
        for attempt in attempts:
            idx = alive.nonzero().squeeze(1)
            if not len(idx):
                break
            out = attempt(x[idx], y[idx])
            adv[idx] = out
            alive[idx[predict(model, out) != y[idx]]] = False
        return adv
    return attack


def pgd_step(eps: float, options: dict) -> float:
    """Absolute step size: `step_size`, else eps / `step_fraction`, else 2.5 * eps / steps (Madry
    et al.: enough total travel to cross the ball and come back after the random start)."""
    if options.get("step_size"):
        return float(options["step_size"])
    if options.get("step_fraction"):
        return eps / float(options["step_fraction"])
    return 2.5 * eps / int(options["steps"])


def _needs_classes(loss: str, n_classes: int, need: int) -> None:
    if n_classes < need:
        raise ValueError(f"loss {loss!r} needs at least {need} classes; this dataset has "
                         f"{n_classes} (use loss: ce)")


def build(kind: str, options: dict, n_classes: int, random_model: bool = False, seed: int = 0):
    import torchattacks as ta

    norm = options.get("norm", "Linf")
    if kind == "fgsm":
        return lambda m, eps: ta.FGSM(m, eps=eps)
    if kind == "pgd":
        return lambda m, eps: worst_of(m, _pgd(m, eps, options))
    if kind == "apgd":
        loss = options["loss"]
        if loss == "dlr":
            _needs_classes("dlr", n_classes, 3)
        return lambda m, eps: ta.APGD(m, norm=norm, eps=eps, steps=int(options["steps"]),
                                      n_restarts=int(options["restarts"]), seed=seed, loss=loss,
                                      eot_iter=int(options["eot_iter"]), rho=options["rho"])
    if kind == "square":
        return lambda m, eps: ta.Square(m, norm=norm, eps=eps, n_queries=int(options["n_queries"]),
                                        n_restarts=int(options["restarts"]),
                                        p_init=options["p_init"], seed=seed)
    if kind == "cw":
        return _cw(options)
    if kind == "autoattack":
        version = autoattack_version(options, random_model)
        return lambda m, eps: worst_of(m, _autoattack(m, eps, version, options, n_classes, seed))
    raise ValueError(f"unknown evasion attack {kind!r}")


def autoattack_version(options: dict, random_model: bool) -> str:
    if options["version"] != "auto":
        return options["version"]
    return "rand" if random_model else "standard"


def _pgd(model, eps, options) -> list[Attack]:
    """`restarts` random starts; with `fgsm_first` (L∞) the FGSM point is tried first, so PGD is
    never weaker than FGSM on any sample, for the price of one gradient."""
    import torchattacks as ta

    cls = ta.PGDL2 if options["norm"] == "L2" else ta.PGD
    pgd = cls(model, eps=eps, alpha=pgd_step(eps, options), steps=int(options["steps"]),
              random_start=True)
    first = [ta.FGSM(model, eps=eps)] if options["fgsm_first"] and options["norm"] == "Linf" else []
    return first + [pgd] * int(options["restarts"])


def _autoattack(model, eps, version, options, n_classes, seed) -> list[Attack]:
    """AutoAttack's ensembles (Croce & Hein 2020). standard: APGD-CE, APGD-T (DLR, targeted),
    FAB-T, Square; rand (models random at inference): APGD-CE and APGD-DLR with expectation over
    transformation. With fewer than 4 classes the targeted DLR loss is undefined, so APGD-DLR
    stands in for APGD-T (and is left out with 2 classes)."""
    import torchattacks as ta

    common = {"norm": options["norm"], "eps": eps, "seed": seed}
    steps = int(options["steps"])
    if version == "rand":
        eot = int(options["eot_iter"])
        losses = ["ce", "dlr"] if n_classes >= 3 else ["ce"]
        return [ta.APGD(model, steps=steps, loss=loss, eot_iter=eot, **common) for loss in losses]
    parts = [ta.APGD(model, steps=steps, loss="ce", **common)]
    if n_classes >= 4:
        parts.append(ta.APGDT(model, steps=steps, n_classes=n_classes, **common))
    elif n_classes == 3:
        parts.append(ta.APGD(model, steps=steps, loss="dlr", **common))
    parts.append(ta.FAB(model, multi_targeted=True, n_classes=n_classes, **common))
    parts.append(ta.Square(model, n_queries=int(options["n_queries"]), **common))
    return parts


def _cw(options: dict):
    """Carlini-Wagner L2 finds a minimal perturbation, independent of eps: it is run once per
    model and batch, and each eps (an L2 radius) scores its result projected onto that ball."""
    import torchattacks as ta

    cache: dict = {}

    def make(model, eps):
        def attack(x, y):
            key = (id(model), x.data_ptr(), len(x))
            if key not in cache:
                cache[key] = ta.CW(model, c=options["c"], kappa=options["kappa"],
                                   steps=int(options["steps"]), lr=options["lr"])(x, y)
            delta = (cache[key] - x).flatten(1)
            scale = (eps / delta.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
            return (x + (delta * scale[:, None]).view_as(x)).clamp(0, 1)
        return attack
    return make
