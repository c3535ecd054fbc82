"""The malicious server's imprint attack on the shared small trained MRI cell (`cell` in
conftest.py: 3 clients of 96 16x16 slices, small_cnn, its recipe Adam lr 0.003, batch 32): exact
from one gradient, stopped by DP-SGD, lost by Adam's local training; through the aggregate of a
real SecAgg+ federation (3 clients, one SGD step each) most images still come back; its
options and its model checked at parse time."""

import json
import re

import pytest
from conftest import base_config
from conftest import cell_context as _ctx

from fedsafe import config_check
from fedsafe.attacks.malicious.imprint import run
from fedsafe.config.schema import ConfigError

pytestmark = pytest.mark.xdist_group("attacks")  # the worker that trains `cell` once


def test_one_gradient_gives_most_images_back(cell, tmp_path):
    ctx = _ctx(cell)
    ctx.out_dir = tmp_path
    row = run(ctx, {"observation": "gradient", "save_images": True})[0]
    assert (row["observed"], row["n_images"], row["bins"]) == ("client update", 32, 256)
    assert len(json.loads(row["image_ssim"])) == 32  # every attacked image, by client:index
    assert [p.name for p in tmp_path.glob("*_reconstructions.png")] == [
        "imprint_round1_client_update_reconstructions.png"]
    # measured: 28 of 32 (the rest share a bin with another image)
    assert row["reconstruction_success_rate"] >= 0.75 and row["ssim"] > 0.8


def test_secagg_encoding_is_simulated():
    """The aggregate a SecAgg+ server sees is made of each client's fixed-point encoding: clipped
    to the range, within one quantisation step, unbiased (stochastic rounding)."""
    import torch

    from fedsafe.attacks.malicious.imprint import _fixed_point

    options = {"clipping_range": 8.0, "quantization_range": 2 ** 24}
    step = 16 / 2 ** 24
    v = torch.linspace(-3e-6, 3e-6, 10_001, dtype=torch.float64)
    q = _fixed_point(v, options, torch.Generator().manual_seed(0))
    assert (q - v).abs().max() <= step and abs(float((q - v).mean())) < step / 20
    assert _fixed_point(torch.tensor([20.0], dtype=torch.float64), options,
                        torch.Generator().manual_seed(0)).item() == 8.0


@pytest.fixture(scope="module")
def secure_federation(tmp_path_factory):
    """A real federation under Flower's SecAgg+: 3 clients of about 10 slices, one round of one
    local epoch of batch 32 (one SGD step each), observed."""
    import fedsafe.federation.simulation as sim
    from fedsafe.attacks.context import load_context
    from fedsafe.data.prepare import prepare

    root = tmp_path_factory.mktemp("malicious")
    prepare("synthetic_brain_mri", {"image_size": 16, "n_samples": 40, "holdout_fraction": 0.1,
                                    "partition": {"scheme": "iid"}}, 3, 0, root / "data")
    fed = dict(rounds=1, local_epochs=1, batch_size=32, lr=0.05, momentum=0.0, optimizer="sgd",
               model="small_cnn", aggregation="weighted", fraction_train=1.0,
               checkpoint_rounds=[0], observe_rounds=[1], device="cpu", backend="inprocess")
    spec = dict(defense="secagg", parts=["secagg"], noise=0.0, options={}, seed=0,
                federation=fed, model="small_cnn")
    result = sim.train_cell(root / "data", spec, root / "secagg", cpus=1)
    return load_context(root / "data", {k: root / "secagg" / f"{k}.pt" for k in (
        "model", "checkpoints", "observed")}, spec, result)


def test_the_secure_aggregate_of_a_real_federation_gives_images_back(secure_federation):
    """The deployed update, asked for one client, is the aggregate the SecAgg+ server holds."""
    row = run(secure_federation, {})[0]
    assert (row["setting"], row["observed"], row["n_images"]) == ("deployed update",
                                                                  "aggregate", 29)
    assert row["reconstruction_success_rate"] >= 0.75  # measured: 25 of 29


def test_dp_sgd_stops_it(cell):
    row = run(_ctx(cell, "dp_sgd", 1.0, options={"clip_norm": 1.0}),
              {"observation": "gradient"})[0]
    assert row["reconstruction_success_rate"] == 0.0 and row["ssim"] < 0.3  # measured: 0.11


def test_adams_local_training_loses_the_images(cell):
    """The cell's own recipe (3 Adam steps): Adam's update is about -lr x sign(gradient), so the
    ratio of a bin's weight and bias updates is no longer an image. Reported, not corrected."""
    row = run(_ctx(cell), {"bins": 1024, "max_images": 128})[0]
    assert (row["setting"], row["observed"], row["n_images"]) == ("deployed update",
                                                                  "client update", 96)
    assert row["reconstruction_success_rate"] == 0.0  # measured: 0 of 96, SSIM 0.08


def test_too_many_images_is_skipped_and_said(cell):
    row = run(_ctx(cell), {"max_images": 50})[0]  # the client holds 96
    assert row["n_images"] == 0 and "max_images 50" in row["skipped"] and "ssim" not in row


@pytest.mark.parametrize("options, key", [
    ({"bins": 1}, "attacks.m.options.bins: 1 out of range"),
    ({"observation": "client"}, "attacks.m.options.observation: 'client'; expected one of"),
    ({"max_images": 2.5}, "attacks.m.options.max_images: 2.5 is not an integer"),
    ({"bins_": 8}, "attacks.m.options.bins_: unknown option"),
    ({"round": 2}, "attacks.m.options.round: round 2 is not observed"),
])
def test_a_wrong_option_fails_at_parse_time_naming_the_key(options, key):
    cfg = base_config(attacks={"m": {"type": "malicious_imprint", "options": options}})
    with pytest.raises(ConfigError, match=re.escape(key)):
        config_check.validate(cfg)


def test_the_model_must_take_images(monkeypatch):
    from fedsafe.models import MODELS

    cfg = base_config(attacks={"m": {"type": "malicious_imprint"}})
    config_check.validate(cfg)  # every registry model takes images
    entry = MODELS.get(cfg["federation"]["model"])
    monkeypatch.setitem(MODELS.entries, cfg["federation"]["model"],
                        type(entry)(entry.impl, meta=object()))  # a model without image input
    with pytest.raises(ConfigError, match=r"attacks\.m: federation\.model .* does not take images"):
        config_check._check_imprint_model(cfg, "m")
