"""Item 3: torchattacks PGD with k steps vs (k+1) forward+backward passes of the same model and
batch (forward, cross-entropy, gradient wrt the input only: what one PGD step needs).

Model: the default model on the default cell's data, evaluation mode, one torch thread (attack
jobs run with threads: 1); batch = the evasion code's default batch (250 test images)."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import alternate, median, table, verdict, write
from data import default_config, model_and_data

TARGET = 1.2


def main(argv=None, **_) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    a = ap.parse_args(argv)
    reps = a.reps or (3 if a.quick else 7)
    torch.set_num_threads(1)
    import torchattacks

    from fedsafe.federation.local import to_tensor

    opts = default_config()["attacks"]["pgd"]["options"]
    k, eps = int(opts.get("steps", 10)), float(max(opts["eps"]))
    alpha = eps / float(opts.get("step_fraction", 4))
    make_model, data = model_and_data()
    torch.manual_seed(0)
    model = make_model().eval()
    x = to_tensor(data.test[0][:250])
    y = torch.from_numpy(data.test[1][:250]).long()

    def pgd():
        torch.manual_seed(0)
        torchattacks.PGD(model, eps=eps, alpha=alpha, steps=k, random_start=True)(x, y)

    def manual():
        for _ in range(k + 1):
            xi = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xi), y), [xi])

    frozen = make_model().eval().requires_grad_(False)
    frozen.load_state_dict(model.state_dict())

    def pgd_frozen():  # same attack, model parameters marked requires_grad=False
        torch.manual_seed(0)
        torchattacks.PGD(frozen, eps=eps, alpha=alpha, steps=k, random_start=True)(x, y)

    def manual_backward():  # loss.backward(): also computes the parameters' gradients
        for _ in range(k + 1):
            xi = x.clone().requires_grad_(True)
            F.cross_entropy(model(xi), y).backward()
        model.zero_grad(set_to_none=True)

    times = alternate({"pgd": pgd, "manual": manual, "pgd_frozen": pgd_frozen,
                       "manual_backward": manual_backward}, reps, clock=a.clock)
    ref = median(times["manual"])
    rows = [{"side": name, "seconds (median)": median(t), "ratio vs k+1 fwd+bwd": median(t) / ref}
            for name, t in [("torchattacks.PGD(k)", times["pgd"]),
                            ("torchattacks.PGD(k), params frozen", times["pgd_frozen"]),
                            (f"{k + 1} x (forward + grad wrt input)", times["manual"]),
                            (f"{k + 1} x (forward + loss.backward())", times["manual_backward"])]]
    ratio = median(times["pgd"]) / ref
    body = (f"k = {k} steps (config/config.yaml), eps {eps}, batch {len(y)} images "
            f"{tuple(x.shape[1:])}, model `{default_config()['federation']['model']}`, 1 thread, "
            f"{reps} alternating repetitions, medians of {a.clock} time.\n\n" + table(rows)
            + f"\n- PGD(k) vs (k+1) forward+backward: {verdict(ratio, TARGET)}\n")
    write("pgd", "Item 3: PGD vs plain forward+backward passes", body)
    return {"pgd_ratio": ratio}


if __name__ == "__main__":
    main()
