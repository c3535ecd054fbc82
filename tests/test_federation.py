"""Real Flower federations (each costs 15-30 s, mostly Ray start-up, so only three): the same
seed gives the same model, and secure aggregation gives the plain aggregate while the server only
ever observes masked updates."""

import pytest
import torch

from fedsafe.data.prepare import prepare
from fedsafe.federation.simulation import train_cell

FEDERATION = dict(rounds=2, local_epochs=1, batch_size=32, lr=0.05, momentum=0.0,
                  optimizer="sgd", model="small_cnn", aggregation="weighted",
                  fraction_train=0.67, checkpoint_rounds=[0, 1], device="cpu",
                  observe_rounds=[2])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three federations on 3 clients, 2 of them per round: none twice and secagg once."""
    root = tmp_path_factory.mktemp("fed")
    data = root / "data"
    prepare("synthetic_brain_mri", {"image_size": 16, "n_samples": 300,
                                    "partition": {"scheme": "iid"}, "holdout_fraction": 0.1},
            3, 0, data)
    out = {}
    for name, parts in (("a", ["none"]), ("b", ["none"]), ("sec", ["secagg"])):
        spec = dict(defense=name, parts=parts, noise=0.0, options={}, seed=0,
                    federation=FEDERATION, model="small_cnn")
        result = train_cell(data, spec, root / name, cpus=2, gpus=0)
        out[name] = (result, *(torch.load(root / name / f, weights_only=True)
                               for f in ("model.pt", "checkpoints.pt", "observed.pt")))
    return out


def test_same_seed_same_model(runs):
    (ra, ma, ca, _), (rb, mb, cb, _) = runs["a"], runs["b"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert sorted(ca) == [0, 1, 2] and all(torch.equal(ca[1][k], cb[1][k]) for k in ca[1])
    assert [h["test_accuracy"] for h in ra["history"]] == [h["test_accuracy"] for h in rb["history"]]
    assert ra["epsilon"] is None and ra["guarantee"].startswith("none")
    assert len(ra["history"]) == 2 and len(ra["history"][0]["client_train_loss"]) == 2


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
    for k in plain:
        assert torch.allclose(sec_obs[2]["aggregate"][k], plain_obs[2]["aggregate"][k], atol=1e-6)
        assert torch.allclose(sec[k], plain[k], atol=1e-5)
    assert res["guarantee"].startswith("none by itself")
