"""Real Flower federations: the same seed gives the same model, Flower's Ray simulation engine
and the in-process grid give the same model, and secure aggregation (Flower's SecAgg+) gives the
plain aggregate while the server only ever receives masked updates."""

import contextlib

import numpy as np
import pytest
import torch
from conftest import pld_reference, server_inbox
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import Key

from fedsafe.defenses import MECHANISMS
from fedsafe.federation.simulation import train_cell

FEDERATION = dict(rounds=2, local_epochs=1, batch_size=32, lr=0.05, momentum=0.0,
                  optimizer="sgd", model="small_cnn", aggregation="weighted",
                  fraction_train=0.67, checkpoint_rounds=[0, 1], device="cpu",
                  observe_rounds=[2])
DATA = ("synthetic_brain_mri", {"image_size": 16, "n_samples": 300, "partition": {"scheme": "iid"},
                                "holdout_fraction": 0.1}, 3, 0)  # prepared once for both fixtures

# one worker trains the federations below once, for all the tests of this module
pytestmark = pytest.mark.xdist_group("federation")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prepared_data):
    """Federations on 3 clients, 2 of them per round: none twice, none on Ray, secagg once
    (recording every message the server receives). In process one torch thread (cpus=1, as the
    test workers run): more only oversubscribes two workers on two cores; Ray gets 2 CPUs."""
    root = tmp_path_factory.mktemp("fed")
    data = prepared_data(*DATA)
    out, received = {}, []
    for name, parts, backend in (("a", ["none"], "inprocess"), ("b", ["none"], "inprocess"),
                                 ("ray", ["none"], "ray"), ("sec", ["secagg"], "inprocess")):
        spec = dict(defense=name, parts=parts, noise=0.0, options={}, seed=0,
                    federation={**FEDERATION, "backend": backend}, model="small_cnn")
        with server_inbox(received) if name == "sec" else contextlib.nullcontext():
            result = train_cell(data, spec, root / name, cpus=2 if backend == "ray" else 1,
                                gpus=0)
        out[name] = (result, *(torch.load(root / name / f, weights_only=True)
                               for f in ("model.pt", "checkpoints.pt", "observed.pt")))
    out["server_received"] = received
    return out


def test_same_seed_same_model(runs):
    (ra, ma, ca, _), (rb, mb, cb, _) = runs["a"], runs["b"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert sorted(ca) == [0, 1, 2] and all(torch.equal(ca[1][k], cb[1][k]) for k in ca[1])
    assert ([h["test_accuracy"] for h in ra["history"]]
            == [h["test_accuracy"] for h in rb["history"]])
    assert ra["epsilon"] is None and ra["guarantee"].startswith("none")
    assert len(ra["history"]) == 2 and len(ra["history"][0]["client_train_loss"]) == 2


def test_ray_engine_and_in_process_grid_give_the_same_model(runs):
    (ra, ma, _, oa), (rr, mr, _, orr) = runs["a"], runs["ray"]
    assert oa[2]["clients"] == orr[2]["clients"]
    for k in ma:  # Ray runs the clients in separate processes: float rounding only
        assert torch.allclose(ma[k], mr[k], atol=1e-5)
    assert abs(ra["clean_accuracy"] - rr["clean_accuracy"]) <= 1 / 30


def test_observed_updates_are_what_the_server_aggregates(runs):
    _, model, ckpt, observed = runs["a"]
    obs = observed[2]
    assert list(observed) == [2] and len(obs["clients"]) == 2
    assert all(torch.equal(obs["global_before"][k], ckpt[1][k]) for k in model)
    w = torch.tensor(obs["num_examples"], dtype=torch.float64)
    w = w / w.sum()
    for k in model:  # weighted FedAvg of the observed updates, applied to the global model
        mean = sum(wi * u[k].double() for wi, u in zip(w, obs["updates"]))
        assert torch.allclose(mean.float(), obs["aggregate"][k], atol=1e-6)
        assert torch.allclose(ckpt[1][k] + obs["aggregate"][k], model[k], atol=1e-6)


def test_secagg_federation_gives_the_plain_model_and_hides_updates(runs):
    (_, plain, plain_ckpt, plain_obs), (res, sec, sec_ckpt, sec_obs) = runs["a"], runs["sec"]
    assert sec_obs[2]["updates"] == [None, None]  # the server never held one
    assert sec_obs[2]["clients"] == plain_obs[2]["clients"]
    # SecAgg+ quantises each coordinate to 2 * clipping_range / quantization_range. Round 1
    # starts both runs from the same model with the same clients and batches, so the global
    # models after it differ by that quantisation alone. Round 2 trains from those slightly
    # different models, and one epoch of SGD carries the difference on: there the aggregates
    # and the final models agree to 1e-3 (measured up to about 1e-4 over repeated runs).
    opts = MECHANISMS.options("secagg")
    step = 2 * opts["clipping_range"].default / opts["quantization_range"].default
    for k in plain:
        assert torch.allclose(sec_ckpt[1][k], plain_ckpt[1][k], atol=2 * step, rtol=0)
        assert torch.allclose(sec_obs[2]["aggregate"][k], plain_obs[2]["aggregate"][k],
                              atol=1e-3, rtol=0)
        assert torch.allclose(sec[k], plain[k], atol=1e-3)
    assert res["guarantee"].startswith("none by itself")


def test_secagg_server_receives_only_masked_vectors(runs):
    """Every message that reached the server in the SecAgg+ run: no array records (the mod
    clears the plain update), and each masked vector is uncorrelated with the client's update."""
    replies = runs["server_received"]
    plain = runs["a"][3][2]["updates"]  # the same clients' plain updates in round 2
    flat_plain = [torch.cat([u[k].flatten() for k in u]).numpy() for u in plain]
    masked = []
    for msg in replies:
        assert all(len(r) == 0 for r in msg.content.array_records.values())
        for rec in msg.content.config_records.values():
            if Key.MASKED_PARAMETERS in rec:
                masked.append(np.concatenate([bytes_to_ndarray(b).ravel()
                                              for b in rec[Key.MASKED_PARAMETERS]]))
    assert len(masked) == 2 * 2  # two clients in each of two rounds
    for m in masked[2:]:  # round 2: ring elements spread over [0, 2^32), no trace of an update
        v = m[1:].astype(np.float64)  # the first entry is the masked weight
        assert v.min() >= 0 and v.max() < 2 ** 32 and v.std() > 2 ** 30
        for u in flat_plain:
            assert abs(np.corrcoef(v, u)[0, 1]) < 0.1


# ------------------------------------------------------------------ privacy in real federations
PUBLIC_KEYS = {"partition_id", "num_examples"}


@pytest.fixture(scope="module")
def dp_runs(tmp_path_factory, prepared_data):
    """Federations under formal guarantees, 3 clients, recording every message the server
    receives: dp_sgd (2 of 3 clients per round), dp_fedavg central with a privacy budget,
    distributed dp_fedavg with secagg, and dp_sgd with a budget (one torch thread, as `runs`)."""
    root = tmp_path_factory.mktemp("dp")
    data = prepared_data(*DATA)
    cells = {
        "dp_sgd": (["dp_sgd"], 1.0, {}, 3),
        "fedavg_budget": (["dp_fedavg"], 1.0, {"target_epsilon": 6.0}, 4),
        "dist_secagg": (["dp_fedavg", "secagg"], 1.0, {"mode": "distributed"}, 2),
        "sgd_budget": (["dp_sgd"], 1.0, {"target_epsilon": 5.0}, 3),
    }
    out = {}
    for name, (parts, noise, options, rounds) in cells.items():
        received = []
        spec = dict(defense=name, parts=parts, noise=noise, options=options, seed=12,
                    federation={**FEDERATION, "rounds": rounds, "observe_rounds": [1]},
                    model="small_cnn")
        with server_inbox(received):
            result = train_cell(data, spec, root / name, cpus=1, gpus=0)
        out[name] = (result, received, root / name)
    return out


def _sizes(received):
    return {int(m.content["metrics"]["partition_id"]): int(m.content["metrics"]["num_examples"])
            for m in received if m.metadata.message_type == "query"}


def test_ledger_has_every_client_every_round_and_never_falls(dp_runs):
    """Measured defect 1, end to end: epsilon after every round for all clients, sampled or not,
    as an independent dp_accounting computation gives it; the cell's is their max."""
    import math

    result, received, folder = dp_runs["dp_sgd"]
    sizes, steps = _sizes(received), {c: 0 for c in range(3)}
    previous = 0.0
    own = {}
    for c in range(3):  # each client's own epsilon, from its own Opacus history (its log file)
        for line in (folder / "clients" / f"{c}.jsonl").read_text().splitlines():
            row = __import__("json").loads(line)
            own[(row["round"], c)] = row["epsilon"]
    for row in result["history"]:
        assert len(row["client_epsilon"]) == 3 and len(row["clients"]) == 2
        for c in row["clients"]:
            steps[c] += math.ceil(sizes[c] / 32)  # 1 local epoch
            assert row["client_epsilon"][c] == pytest.approx(own[(row["round"], c)], rel=1e-9)
        for c in range(3):
            if steps[c] == 0:
                assert row["client_epsilon"][c] == 0
                continue
            # dp_accounting's PLD (cached: clients of one size share their (q, steps) values)
            ref = pld_reference(1 / math.ceil(sizes[c] / 32), 1.0, steps[c], 1e-5)
            assert row["client_epsilon"][c] == pytest.approx(ref, rel=0.01)
        assert row["epsilon"] == max(row["client_epsilon"]) >= previous
        previous = row["epsilon"]
    assert result["epsilon"] == previous and result["accountant"] == "pld"
    assert result["stopped"] is None and result["rounds_run"] == 3


@pytest.mark.parametrize("name", ["dp_sgd", "fedavg_budget", "dist_secagg"])
def test_server_receives_nothing_private(dp_runs, name):
    """Measured defect 4: replies carried the client's training loss in the clear, under secagg
    too. Every message the server receives now holds only the update (plain, or masked under
    secagg) and public numbers; the clients logged their diagnostics themselves."""
    result, received, folder = dp_runs[name]
    assert received
    for msg in received:
        for rec in msg.content.metric_records.values():
            assert set(rec) <= PUBLIC_KEYS, (msg.metadata.message_type, dict(rec))
        for key, rec in msg.content.config_records.items():
            if "metrics" in key:  # SecAgg+'s legacy FitRes carries its metrics in the clear
                assert set(rec) <= PUBLIC_KEYS, (key, dict(rec))
            assert not any("loss" in k for k in rec), key
    logs = list((folder / "clients").glob("*.jsonl"))
    assert logs and all("train_loss" in line for p in logs for line in p.read_text().splitlines())
    assert all(row["client_train_loss"] for row in result["history"] if row["clients"])


def test_budget_stops_dp_fedavg_before_exceeding(dp_runs):
    """q = 0.67, z = 1: epsilon 3.9, 5.6, 6.9 after rounds 1-3, so a budget of 6 runs 2 rounds."""
    result, received, _ = dp_runs["fedavg_budget"]
    assert result["stopped"]["reason"].startswith("budget")
    assert result["rounds_run"] == 2 and result["stopped"]["before_round"] == 3
    assert result["epsilon"] <= 6.0 and result["target_epsilon"] == 6.0
    assert len(result["history"]) == 2
    # Flower's loop (`start()`) still runs rounds 3 and 4, empty: no client trains after the stop
    trained = [m for m in received if m.metadata.message_type == "train"]
    assert len(trained) == sum(len(row["clients"]) for row in result["history"])


def test_budget_retires_spent_dp_sgd_clients(dp_runs):
    """A client whose next round would exceed the target takes no further part; the others go on
    until everyone is spent."""
    result, _, _ = dp_runs["sgd_budget"]
    # about 90 examples each: epsilon 4.6 after one round, 6.0 after two; budget 5
    took_part = [c for row in result["history"] for c in row["clients"]]
    assert sorted(took_part) == [0, 1, 2]  # round 1: two clients, round 2: the third alone
    assert result["rounds_run"] == 2 and result["stopped"]["before_round"] == 3
    assert "every client" in result["stopped"]["reason"]
    assert 4 < max(result["history"][-1]["client_epsilon"]) <= 5.0


def test_distributed_dp_fedavg_epsilon_is_against_the_server(dp_runs):
    """Measured defect 5: the server knows who was sampled, so against it a round is one Gaussian
    mechanism (noise z on the sum, no amplification) for each client that took part."""
    result, _, _ = dp_runs["dist_secagg"]
    took_part = {c: 0 for c in range(3)}
    for row in result["history"]:
        for c in row["clients"]:
            took_part[c] += 1
        for c in range(3):
            ref = 0.0
            if took_part[c]:  # dp_accounting's PLD, no sampling (q = 1)
                ref = pld_reference(1.0, 1.0, took_part[c], 1e-5)
            assert row["client_epsilon"][c] == pytest.approx(ref, rel=0.01, abs=1e-9)
    assert sum(took_part.values()) >= 2  # SecAgg+ ran at least one round
