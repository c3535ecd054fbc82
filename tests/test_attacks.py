"""The attack stage on a real (centrally trained, small) cell: evasion properties, transfer between
noised client copies, gradient inversion through the deployed client code, membership inference."""

import numpy as np
import pytest
import torch
from conftest import cell_context as _ctx

from fedsafe.attacks import ATTACKS, PGD_OPTIONS
from fedsafe.attacks.evasion.suite import build
from fedsafe.federation.local import to_tensor

run_fgsm, run_pgd, run_idlg, run_mia_loss = (
    ATTACKS.load(k) for k in ("fgsm", "pgd", "idlg", "mia_loss"))

# one worker: the trained `cell` (tests/conftest.py) is shared with test_evasion
pytestmark = pytest.mark.xdist_group("attacks")


def test_evasion_properties(cell):
    rows = run_pgd(_ctx(cell), {"eps": [0.0, 0.02, 0.1], "steps": 5, "n_samples": 80})
    by_eps = {r["attack_value"]: r for r in rows}
    assert by_eps[0.0]["robust_accuracy"] == by_eps[0.0]["clean_accuracy"] > 0.5
    for r in rows:
        assert r["robust_accuracy"] <= r["clean_accuracy"]
        assert r["linf_max"] <= r["attack_value"] + 1e-6
    assert by_eps[0.1]["robust_accuracy"] < by_eps[0.0]["robust_accuracy"]
    assert by_eps[0.1]["attack_success_rate"] > 0.5
    fgsm = run_fgsm(_ctx(cell), {"eps": [0.1], "n_samples": 80})[0]
    assert fgsm["robust_accuracy"] >= by_eps[0.1]["robust_accuracy"]  # PGD is at least as strong


def test_pgd_stays_in_ball_and_pixel_range(cell):
    ctx = _ctx(cell)
    x = to_tensor(ctx.data.test[0][:32])
    y = torch.from_numpy(ctx.data.test[1][:32]).long()
    for norm in ("Linf", "L2"):
        opts = {**{k: o.default for k, o in PGD_OPTIONS.items()}, "steps": 5, "norm": norm}
        adv = build("pgd", opts, 3)(ctx.new_model(), 0.05)(x, y)
        assert adv.min() >= 0 and adv.max() <= 1
        dist = (adv - x).flatten(1)
        size = dist.abs().max(1).values if norm == "Linf" else dist.norm(dim=1)
        assert (size <= 0.05 + 1e-5).all()


def test_transfer_between_noised_client_copies(cell):
    row = run_pgd(_ctx(cell, "weight_noise", 0.05),
                  {"eps": [0.05], "steps": 5, "n_samples": 80, "draws": 2})[0]
    assert 0.0 <= row["transfer_rate"] <= 1.0 and row["noise_draws"] == 2
    same = run_pgd(_ctx(cell), {"eps": [0.05], "steps": 5, "n_samples": 80})[0]
    assert np.isnan(same["transfer_rate"]) or same["transfer_rate"] == 1.0  # identical copies


def test_inversion_leaks_and_noise_protects(cell):
    # the single-gradient setting at the federation's own lr (0.003): weight noise 0.02 drowns it
    opts = {"iterations": 30, "n_batches": 2, "round": 1, "observation": "gradient"}
    clear = run_idlg(_ctx(cell), opts)[0]
    noised = run_idlg(_ctx(cell, "weight_noise", 0.02, options={"downlink": False}), opts)[0]
    rng = np.random.default_rng(0)
    from fedsafe.metrics import image_metrics

    x = to_tensor(cell[1].clients[0][0][:8])
    random_ssim = image_metrics(x, torch.from_numpy(rng.random(x.shape)).float())["mean_ssim"]
    assert clear["label_accuracy"] == 1.0
    assert clear["ssim"] > random_ssim + 0.2
    assert noised["ssim"] < clear["ssim"] - 0.1


def test_membership_on_trained_cell(cell):
    row = run_mia_loss(_ctx(cell), {"n_samples": 40})[0]
    assert 0.0 <= row["auc"] <= 1.0 and row["formal_epsilon"] is None
