"""Homomorphic-encryption aggregation (`he`): parameters checked at parse time, the decrypted
aggregate of real updates equals the plaintext one, and a real federation trains as plain FedAvg
while the server receives only ciphertexts and holds no key."""

import contextlib

import flwr.common
import numpy as np
import pytest
import tenseal as ts
import torch
from conftest import base_config, server_inbox

from fedsafe import config_check
from fedsafe.config.schema import ConfigError
from fedsafe.defenses import MECHANISMS, check_options, ckks
from fedsafe.defenses.base import build_defense
from fedsafe.defenses.homomorphic import add, decrypt, encrypt, new_context
from fedsafe.federation import he_protocol
from fedsafe.federation.local import TrainSettings, local_train
from fedsafe.federation.simulation import train_cell
from fedsafe.models import build_model_for

FEDERATION = dict(rounds=2, local_epochs=1, batch_size=32, lr=0.05, momentum=0.0,
                  optimizer="sgd", model="small_cnn", aggregation="weighted",
                  fraction_train=0.67, checkpoint_rounds=[0, 1], device="cpu",
                  observe_rounds=[2], backend="inprocess")
DATA = ("synthetic_brain_mri", {"image_size": 16, "n_samples": 300, "partition": {"scheme": "iid"},
                                "holdout_fraction": 0.1}, 3, 0)
DEFAULTS = MECHANISMS.resolve("he", {})

pytestmark = pytest.mark.xdist_group("he")


@pytest.mark.parametrize("parts, options, message", [
    (["he", "weight_noise"], {}, r"defenses\.d\.parts: he must be the last part"),
    (["he", "secagg"], {}, r"defenses\.d\.parts: he with secagg"),
    (["weight_noise", "secagg", "he"], {}, r"defenses\.d\.parts: he with secagg"),
    (["dp_fedavg", "he"], {}, r"defenses\.d\.options\.mode: dp_fedavg central adds its noise"),
    (["he"], {"coeff_mod_bit_sizes": 60}, r"defenses\.d\.options\.coeff_mod_bit_sizes: 60;"),
    (["he"], {"coeff_mod_bit_sizes": [60, 60, 60, 60]},
     r"coeff_mod_bit_sizes: 240 bits in all; poly_modulus_degree 8192 allows at most 218"),
    (["he"], {"scale_bits": 40}, r"defenses\.d\.options\.scale_bits: 40 gives decryption errors"),
    (["he"], {"coeff_mod_bit_sizes": [50, 60], "max_value": 2.0 ** 20},
     r"defenses\.d\.options\.scale_bits: 52 bits of scale \+ values up to max_value"),
    (["he"], {"poly_modulus_degree": 1000}, r"poly_modulus_degree: 1000; expected one of"),
])
def test_bad_parameters_and_combinations_are_refused_naming_the_key(parts, options, message):
    with pytest.raises(ValueError, match=message):
        check_options("d", parts, options)


def test_sensible_combinations_pass():
    check_options("d", ["he"], {})
    check_options("d", ["weight_noise", "he"], {"uplink": True})
    check_options("d", ["dp_fedavg", "he"], {"mode": "distributed"})
    check_options("d", ["he"], {"poly_modulus_degree": 16384,
                                "coeff_mod_bit_sizes": [60, 60, 60, 60]})


def test_model_too_large_for_one_message_is_refused_at_parse_time():
    assert ckks.MAX_MESSAGE_BYTES == flwr.common.GRPC_MAX_MESSAGE_LENGTH
    with pytest.raises(ValueError, match=r"coeff_mod_bit_sizes: the model's update \(40000000 "
                                         r"values\) encrypts to about"):
        ckks.check("defenses.d.options", DEFAULTS, 40_000_000)
    config = base_config(defenses={"he": {}})
    config_check.validate(config)  # the small CNN fits
    config["defenses"]["he"] = {"options": {"poly_modulus_degree": 32768,
                                            "coeff_mod_bit_sizes": [30] * 29}}
    config["datasets"]["mri"]["options"]["image_size"] = 512  # the CNN's head grows with it
    with pytest.raises(ConfigError, match=r"defenses\.he\.options\.coeff_mod_bit_sizes: .*"
                                          r"\(dataset mri, model small_cnn\)"):
        config_check.validate(config)


def test_expected_error_matches_tenseal():
    """The error model the parse-time check uses (N x 2^(1 - scale_bits)) within a factor 4."""
    ctx = new_context(DEFAULTS)
    v = np.random.default_rng(0).standard_normal(4096) * 1e-2
    err = np.abs(np.array(ts.ckks_vector(ctx, v).decrypt()) - v).max()
    assert ckks.expected_error(DEFAULTS) / 4 < err < 4 * ckks.expected_error(DEFAULTS)
    sizes = [len(c) for c in encrypt(ctx, {"w": torch.from_numpy(v)}, 1.0, 4096)]
    assert sizes[0] <= ckks.ciphertext_bytes(DEFAULTS, 4096)


def test_decrypted_aggregate_of_real_updates_equals_the_plaintext_one(prepared_data):
    """Three clients' updates after a round of local training, weighted by their sizes,
    encrypted, added as ciphertexts and decrypted: within 1e-6 relative of the plaintext mean."""
    from fedsafe.data.prepare import load_prepared

    data = load_prepared(prepared_data(*DATA))
    defense = build_defense(["he"], 0.0, {}, 0)
    torch.manual_seed(0)
    initial = build_model_for("small_cnn", data.manifest).state_dict()
    updates, sizes = [], []
    for c, (x, y) in enumerate(data.clients):
        model = build_model_for("small_cnn", data.manifest)
        model.load_state_dict(initial)
        update, _ = local_train(model, x, y, TrainSettings(), defense, 0, 1, c, {})
        updates.append(update)
        sizes.append(len(y))
    w = np.array(sizes) / sum(sizes)
    ctx = new_context(DEFAULTS)
    slots = DEFAULTS["poly_modulus_degree"] // 2
    total = add(ctx, [encrypt(ctx, u, wi, slots) for u, wi in zip(updates, w)])
    got = decrypt(ctx, total, initial)
    want = {k: sum(wi * u[k].double() for wi, u in zip(w, updates)) for k in initial}
    flat_got = torch.cat([got[k].flatten() for k in initial])
    flat_want = torch.cat([want[k].flatten() for k in initial])
    assert float((flat_got - flat_want).abs().max()) <= 1e-6 * float(flat_want.abs().max())
    assert float((flat_got - flat_want).norm()) <= 1e-6 * float(flat_want.norm())


def test_distributed_dp_fedavg_weight_is_the_sum_over_the_expected_count():
    defense = build_defense(["dp_fedavg", "he"], 1.0, {"mode": "distributed"}, 0)
    defense.set_population(3, 0.67)
    assert he_protocol.scalar_hook(defense, 1, 2) == pytest.approx(2 / (0.67 * 3))
    assert he_protocol.scalar_hook(build_defense(["weight_noise", "he"], 0.1, {}, 0), 1, 2) == 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prepared_data):
    """The same seed, plain FedAvg and `he`, recording every message the server received in
    the `he` run."""
    root, data = tmp_path_factory.mktemp("he"), prepared_data(*DATA)
    out, received = {}, []
    for name, parts in (("plain", ["none"]), ("he", ["he"])):
        spec = dict(defense=name, parts=parts, noise=0.0, options={}, seed=0,
                    federation=FEDERATION, model="small_cnn")
        with server_inbox(received) if name == "he" else contextlib.nullcontext():
            result = train_cell(data, spec, root / name, cpus=1, gpus=0)
        out[name] = (result, *(torch.load(root / name / f, weights_only=True)
                               for f in ("model.pt", "observed.pt")))
    out["received"] = received
    return out


def test_he_trains_as_plain_fedavg(runs):
    (plain, plain_model, _), (he, he_model, _) = runs["plain"], runs["he"]
    assert abs(plain["clean_accuracy"] - he["clean_accuracy"]) <= 0.02
    for k in plain_model:  # CKKS errors of about 1e-11 and float32 rounding
        assert torch.allclose(plain_model[k], he_model[k], atol=1e-5)
    assert he["guarantee"].startswith("none by itself")
    for row in he["history"]:  # the error bound and the costs, every round
        assert 0 < row["he_error_bound"] < 1e-9
        assert row["bytes_up"] > 10 * row["bytes_up_plain"] > 0
        assert row["he_server_seconds"] > 0 and row["he_client_seconds"] > 0
    assert he["history"][0]["bytes_down"] == 0 < he["history"][1]["bytes_down"]
    assert he["he_bytes_up_per_round"] > 10 * he["he_bytes_up_plain_per_round"]
    assert 0 < he["he_error_bound"] < 1e-9 and he["he_seconds_per_round"] > 0
    assert "he_error_bound" not in plain  # other cells' results are unchanged


def test_server_records_and_receives_only_ciphertexts(runs):
    _, _, observed = runs["he"]
    assert observed[2]["updates"] == [None, None] and observed[2]["aggregate"] is None
    assert observed[2]["global_before"] is None and "ciphertexts" in observed[2]["hidden"]
    contexts, updates = [], 0
    for msg in runs["received"]:
        assert all(len(r) == 0 for r in msg.content.array_records.values())  # no plain arrays
        assert set(msg.content["metrics"]) <= {"partition_id", "num_examples"}
        config = msg.content.config_records.get("config", {})
        if he_protocol.CONTEXT in config:
            contexts.append(ts.context_from(config[he_protocol.CONTEXT]))
        updates += he_protocol.UPDATE in config
    assert len(contexts) == 3 and updates == 2 * 2
    assert not any(c.is_private() or c.has_public_key() for c in contexts)  # no key at all


def test_server_side_attacks_on_an_he_cell_say_why_they_are_skipped(runs, prepared_data):
    """The server's view holds ciphertext only: inversion and the malicious server give a
    skipped row naming homomorphic encryption, instead of attacking nothing."""
    from fedsafe.attacks import ATTACKS
    from fedsafe.attacks.context import AttackContext
    from fedsafe.data.prepare import load_prepared

    result, weights, observed = runs["he"]
    spec = dict(defense="he", parts=["he"], noise=0.0, options={}, seed=0,
                federation=FEDERATION, model="small_cnn")
    ctx = AttackContext(spec, load_prepared(prepared_data(*DATA)), weights, {}, result,
                        observed=observed)
    for kind, options in (("inverting_gradients", {"observation": "update", "round": 2}),
                          ("inverting_gradients", {"observation": "gradient", "round": 2}),
                          ("malicious_imprint", {"observation": "aggregate", "round": 2})):
        rows = ATTACKS.load(kind)(ctx, ATTACKS.resolve(kind, options))
        assert len(rows) == 1 and "homomorphic encryption" in rows[0]["skipped"], (kind, rows)
