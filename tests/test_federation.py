"""Real Flower federations: the same seed gives the same model, Flower's Ray simulation engine
and the in-process grid give the same model, and secure aggregation (Flower's SecAgg+) gives the
plain aggregate while the server only ever receives masked updates."""

import numpy as np
import pytest
import torch
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import Key

from fedsafe.data.prepare import prepare
from fedsafe.defenses import MECHANISMS
from fedsafe.federation.grid import InProcessGrid
from fedsafe.federation.simulation import train_cell

FEDERATION = dict(rounds=2, local_epochs=1, batch_size=32, lr=0.05, momentum=0.0,
                  optimizer="sgd", model="small_cnn", aggregation="weighted",
                  fraction_train=0.67, checkpoint_rounds=[0, 1], device="cpu",
                  observe_rounds=[2])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Federations on 3 clients, 2 of them per round: none twice, none on Ray, secagg once
    (recording every message the server receives)."""
    root = tmp_path_factory.mktemp("fed")
    data = root / "data"
    prepare("synthetic_brain_mri", {"image_size": 16, "n_samples": 300,
                                    "partition": {"scheme": "iid"}, "holdout_fraction": 0.1},
            3, 0, data)
    out, received = {}, []
    pull = InProcessGrid.pull_messages

    def recording_pull(grid, ids):
        replies = pull(grid, ids)
        received.extend(replies)
        return replies

    for name, parts, backend in (("a", ["none"], "inprocess"), ("b", ["none"], "inprocess"),
                                 ("ray", ["none"], "ray"), ("sec", ["secagg"], "inprocess")):
        spec = dict(defense=name, parts=parts, noise=0.0, options={}, seed=0,
                    federation={**FEDERATION, "backend": backend}, model="small_cnn")
        with pytest.MonkeyPatch.context() as mp:
            if name == "sec":
                mp.setattr(InProcessGrid, "pull_messages", recording_pull)
            result = train_cell(data, spec, root / name, cpus=2, gpus=0)
        out[name] = (result, *(torch.load(root / name / f, weights_only=True)
                               for f in ("model.pt", "checkpoints.pt", "observed.pt")))
    out["server_received"] = received
    return out


def test_same_seed_same_model(runs):
    (ra, ma, ca, _), (rb, mb, cb, _) = runs["a"], runs["b"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert sorted(ca) == [0, 1, 2] and all(torch.equal(ca[1][k], cb[1][k]) for k in ca[1])
    assert [h["test_accuracy"] for h in ra["history"]] == [h["test_accuracy"] for h in rb["history"]]
    assert ra["epsilon"] is None and ra["guarantee"].startswith("none")
    assert len(ra["history"]) == 2 and len(ra["history"][0]["client_train_loss"]) == 2


def test_ray_engine_and_in_process_grid_give_the_same_model(runs):
    (ra, ma, _, oa), (rr, mr, _, orr) = runs["a"], runs["ray"]
    assert oa[2]["clients"] == orr[2]["clients"]
    for k in ma:  # Ray clients use 1 torch thread, in-process 2: float rounding only
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
    (_, plain, _, plain_obs), (res, sec, _, sec_obs) = runs["a"], runs["sec"]
    assert sec_obs[2]["updates"] == [None, None]  # the server never held one
    assert sec_obs[2]["clients"] == plain_obs[2]["clients"]
    # SecAgg+ quantises each coordinate to 2 * clipping_range / quantization_range
    opts = MECHANISMS["secagg"].options
    step = 2 * opts["clipping_range"].default / opts["quantization_range"].default
    for k in plain:
        assert torch.allclose(sec_obs[2]["aggregate"][k], plain_obs[2]["aggregate"][k],
                              atol=2 * step, rtol=0)
        assert torch.allclose(sec[k], plain[k], atol=1e-5)
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
