"""Defense mechanisms, tested directly on their hooks and on `local_train` (the code the
federation's clients run), without starting Flower."""

import math

import dp_accounting
import numpy as np
import pytest
import torch

from fedsafe.data.synthetic import synthetic_brain_mri
from fedsafe.defenses.adv_training import pgd
from fedsafe.defenses.base import build_defense, l2_norm
from fedsafe.federation.local import TrainSettings, evaluate, local_train, to_tensor
from fedsafe.models import build_model

SETTINGS = TrainSettings(local_epochs=1, batch_size=32, lr=0.05)
ZEROS = {"w": torch.zeros(400, 500), "b": torch.zeros(1000), "steps": torch.zeros(3, dtype=torch.long)}


@pytest.fixture(scope="module")
def data():
    d = synthetic_brain_mri(seed=0, n_samples=600, image_size=16)
    return d.x_train[:384], d.y_train[:384], d.x_test, d.y_test  # 384 = 12 batches of 32


@pytest.fixture(scope="module")
def _plain(data):
    x, y = data[:2]
    return train(["none"], 0, {}, x, y)[0]


@pytest.fixture
def plain(_plain):
    """The undefended update on `data` (the baseline several tests compare with), trained once
    per module; each test gets its own copy."""
    return {k: v.clone() for k, v in _plain.items()}


def model_for(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("small_cnn", 1, 3, 16)


def train(parts, noise, options, x, y, rnd=1, client=0, state=None, info=None, model=None):
    defense = build_defense(parts, noise, options, seed=0, name="d")
    return local_train(model or model_for(), x, y, SETTINGS, defense, 0, rnd, client,
                       {} if state is None else state, round_info=info)


def noise_of(a: dict, b: dict) -> torch.Tensor:
    return torch.cat([(a[k] - b[k]).flatten() for k in a if a[k].is_floating_point()])


def dp_accounting_epsilon(q: float, z: float, steps: int, delta: float) -> float:
    """The independent reference: dp_accounting's PLD accountant at its default resolution."""
    acc = dp_accounting.pld.PLDAccountant()
    acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps)
    return acc.get_epsilon(delta)


# ------------------------------------------------------------------ options
def test_unknown_option_named_and_combinations_share_options():
    with pytest.raises(ValueError, match=r"defenses\.d\.options\.clip_nrom"):
        build_defense(["dp_fedavg"], 1.0, {"clip_nrom": 1.0}, 0, name="d")
    with pytest.raises(ValueError, match=r"defenses\.d\.parts: secagg must be the last"):
        build_defense(["secagg", "dp_fedavg"], 1.0, {}, 0, name="d")
    with pytest.raises(ValueError, match="mode"):
        build_defense(["dp_fedavg"], 1.0, {"mode": "local"}, 0, name="d")
    d = build_defense(["weight_noise", "adv_training"], 0.1, {"uplink": False, "fraction": 0.5}, 0)
    assert d.parts[0].options == {"uplink": False, "downlink": True, "secret_noise": False}
    assert d.parts[1].options["fraction"] == 0.5 and d.parts[1].noise == 0.0


# ------------------------------------------------------------------ noise scale and directions
@pytest.mark.parametrize("uplink,downlink", [(True, True), (True, False), (False, True)])
def test_weight_noise_scale_and_flags(uplink, downlink):
    d = build_defense(["weight_noise"], 0.02, {"uplink": uplink, "downlink": downlink}, 0)
    down, up = d.downlink(ZEROS, 1, 0), d.uplink(ZEROS, 1, 0)
    for out, on in ((down, downlink), (up, uplink)):
        assert torch.equal(out["steps"], ZEROS["steps"])  # integer buffers untouched
        std = noise_of(out, ZEROS).std().item()
        assert (abs(std - 0.02) < 0.02 * 0.01) if on else std == 0
    if downlink:  # each client gets its own independent draw
        assert not torch.equal(d.downlink(ZEROS, 1, 1)["w"], down["w"])


def test_weight_noise_in_local_train_is_the_configured_scale(data, plain):
    x, y = data[:2]
    noisy, _ = train(["weight_noise"], 0.01, {"downlink": False}, x, y)
    assert abs(noise_of(noisy, plain).std().item() - 0.01) < 0.0005


@pytest.mark.parametrize("dist,std_per_b", [("laplace", math.sqrt(2)), ("gaussian", 1.0)])
def test_gradient_noise_scale(dist, std_per_b):
    d = build_defense(["gradient_noise"], 0.005, {"distribution": dist}, 0)
    n = noise_of(d.uplink(ZEROS, 1, 0), ZEROS).double()
    assert abs(n.std().item() - 0.005 * std_per_b) < 0.005 * std_per_b * 0.01
    if dist == "laplace":  # E|X| = b for Laplace(0, b)
        assert abs(n.abs().mean().item() - 0.005) < 0.005 * 0.01
    assert torch.equal(d.downlink(ZEROS, 1, 0)["w"], ZEROS["w"])  # uplink only


def test_dp_fedavg_clips_and_adds_configured_noise():
    big = {"w": torch.full((100,), 1.0), "steps": torch.zeros(1, dtype=torch.long)}  # norm 10
    d = build_defense(["dp_fedavg"], 0.0, {"clip_norm": 2.0}, 0)
    assert abs(l2_norm(d.uplink(big, 1, 0)) - 2.0) < 1e-6
    small = {"w": torch.full((100,), 0.01)}
    assert torch.equal(d.uplink(small, 1, 0)["w"], small["w"])  # under the bound: unchanged
    z, c, k = 1.5, 0.5, 4
    central = build_defense(["dp_fedavg"], z, {"clip_norm": c}, 0)
    central.set_population(k, 1.0)
    assert noise_of(central.uplink(ZEROS, 1, 0), ZEROS).std() == 0  # clients add nothing
    std = noise_of(central.aggregate(ZEROS, 1, k), ZEROS).std().item()
    assert abs(std - z * c / k) < z * c / k * 0.01
    dist = build_defense(["dp_fedavg", "secagg"], z, {"clip_norm": c, "mode": "distributed"}, 0)
    dist.set_population(k, 1.0)
    dist.begin_round({"sampled": k})
    per_client = [noise_of(dist.uplink(ZEROS, 1, i), ZEROS) for i in range(k)]
    assert abs(per_client[0].std().item() - z * c / math.sqrt(k)) < z * c * 0.01
    assert abs(sum(per_client).std().item() - z * c) < z * c * 0.01  # the sum: std z * C
    assert torch.equal(dist.aggregate(ZEROS, 1, k)["w"], ZEROS["w"])


def test_dp_fedavg_divides_by_the_expected_count():
    """McMahan et al. 2018: the noisy sum over the expected number of clients q * n, whatever
    the realised count (the accountant's sensitivity C / (q n) needs it)."""
    d = build_defense(["dp_fedavg"], 0.0, {"clip_norm": 10.0}, 0)
    d.set_population(10, 0.3)
    ones = {"w": torch.ones(5)}
    for k in (1, 3, 5):  # the mean of k updates of ones: the sum is k, divided by 3
        assert torch.allclose(d.aggregate(ones, 1, k)["w"], torch.full((5,), k / 3))


def test_distributed_dp_fedavg_without_secagg_is_refused():
    """Without secagg the server sees each update with only z*C/sqrt(k) of noise: epsilon against
    it is far above the one of z*C on the sum, so the combination is refused."""
    with pytest.raises(ValueError, match="distributed needs secagg"):
        build_defense(["dp_fedavg"], 1.0, {"mode": "distributed"}, 0, name="d")
    with pytest.raises(ValueError, match="different kinds"):
        build_defense(["dp_sgd", "dp_fedavg"], 1.0, {}, 0, name="d")


# ------------------------------------------------------------------ accountants
def test_dp_sgd_epsilon_kept_across_rounds_matches_dp_accounting(data):
    x, y = data[0][:96], data[1][:96]  # q = 32/96, 3 steps per round
    state, eps = {}, []
    for rnd in (1, 2):
        _, m = train(["dp_sgd"], 1.2, {"clip_norm": 1.0}, x, y, rnd=rnd, state=state)
        eps.append(m["epsilon"])
    ref = dp_accounting_epsilon(32 / 96, 1.2, 6, 1e-5)
    assert eps[0] < eps[1] and abs(eps[1] - ref) / ref < 0.01


def test_dp_sgd_without_noise_or_clipping_is_plain_training(data, plain):
    x, y = data[:2]
    dp, m = train(["dp_sgd"], 0.0, {"clip_norm": 1e6, "poisson_sampling": False}, x, y)
    assert "epsilon" not in m  # no accountant covers shuffled batches
    for k in plain:
        assert torch.allclose(plain[k], dp[k], atol=1e-6), k


@pytest.mark.parametrize("mode", ["fused", "ew", "functorch"])
def test_dp_sgd_grad_sample_modes_agree(data, mode):
    """Every per-sample gradient mode gives Opacus hooks' update and epsilon: the same clipped
    gradients, and (same seed) the same Poisson batches and noise."""
    x, y = data[:2]
    opts = {"clip_norm": 0.5}
    hooks, mh = train(["dp_sgd"], 1.0, {**opts, "grad_sample_mode": "hooks"}, x, y)
    other, mo = train(["dp_sgd"], 1.0, {**opts, "grad_sample_mode": mode}, x, y)
    assert mo["epsilon"] == mh["epsilon"]
    for k in hooks:
        assert torch.allclose(hooks[k], other[k], atol=1e-5), k


def test_dp_sgd_same_seed_same_update(data):
    x, y = data[:2]
    a, ma = train(["dp_sgd"], 1.0, {}, x, y)
    b, mb = train(["dp_sgd"], 1.0, {}, x, y)
    assert ma == mb and all(torch.equal(a[k], b[k]) for k in a)
    c, _ = train(["dp_sgd"], 1.0, {}, x, y, rnd=2)  # another round: other batches and noise
    assert not torch.equal(a["1.weight"], c["1.weight"])


@pytest.mark.parametrize("mode", ["fused", "hooks"])
def test_dp_sgd_counts_empty_poisson_batches(data, mode):
    """With 10 samples and batch 1 a third of Poisson batches are empty; each is still a noisy
    step, so epsilon is that of 10 steps per epoch (an empty batch skipped would leak, and a
    skipped step would be missing from the accountant)."""
    x, y = data[0][:10], data[1][:10]
    defense = build_defense(["dp_sgd"], 1.0, {"grad_sample_mode": mode}, seed=0)
    settings = TrainSettings(local_epochs=3, batch_size=1, lr=0.05)
    _, m = local_train(model_for(), x, y, settings, defense, 0, 1, 0, {})
    assert m["epsilon"] == pytest.approx(dp_accounting_epsilon(0.1, 1.0, 30, 1e-5), rel=0.01)
    assert math.isfinite(m["train_loss"])


# ------------------------------------------------------------------ secure aggregation
def test_secagg_outside_a_federation_is_plain(data, plain):
    x, y = data[:2]
    sec, _ = train(["secagg"], 0, {}, x, y)
    assert all(torch.equal(plain[k], sec[k]) for k in plain)


def test_secagg_refuses_an_update_secaggplus_would_clip(data):
    x, y = data[:2]
    with pytest.raises(ValueError, match="clipping range 1e-06.*clipping_range"):
        train(["secagg"], 0, {"clipping_range": 1e-6}, x, y)


# ------------------------------------------------------------------ adversarial training
def test_pgd_stays_in_the_ball_and_raises_the_loss(data):
    model = model_for()
    x, y = to_tensor(data[0][:64]), torch.from_numpy(data[1][:64])
    adv = pgd(model, x, y, eps=0.03, step_size=0.01, steps=5)
    assert (adv - x).abs().max() <= 0.03 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    loss = torch.nn.functional.cross_entropy
    assert loss(model(adv), y) > loss(model(x), y)
    assert model.training  # mode restored


@pytest.mark.parametrize("mode", ["client", "server"])
def test_adv_training_modes_change_training(data, plain, mode):
    x, y = data[:2]
    adv, m = train(["adv_training"], 0, {"mode": mode, "fraction": 0.25, "steps": 2}, x, y)
    assert not torch.allclose(noise_of(adv, plain), torch.zeros(1))
    if mode == "server":
        assert m["adv_samples"] == 96 and m["adv_loss"] > 0
    else:
        assert "adv_samples" not in m


def test_combination_weight_noise_and_adv_training(data):
    x, y = data[:2]
    adv, m = train(["adv_training"], 0, {"mode": "server", "fraction": 0.5}, x, y)
    both, m2 = train(["weight_noise", "adv_training"], 0.01,
                     {"downlink": False, "mode": "server", "fraction": 0.5}, x, y)
    assert m2["adv_samples"] == m["adv_samples"] == 192
    assert abs(noise_of(both, adv).std().item() - 0.01) < 0.0005  # exactly the weight noise
    assert build_defense(["weight_noise", "adv_training"], 0.01, {}, 0).guarantee.startswith("none")


# ------------------------------------------------------------------ utility falls with noise
def fedavg(defense, clients, rounds, seed, make_model, settings):
    """A minimal FedAvg over the same client code as the federation (downlink, local_train,
    uplink, aggregate), to check a trend quickly without starting Flower."""
    model = make_model(seed)
    glob = {k: v.clone() for k, v in model.state_dict().items()}
    for rnd in range(1, rounds + 1):
        updates = []
        for c, (x, y) in enumerate(clients):
            model.load_state_dict(defense.downlink(glob, rnd, c))
            updates.append(local_train(model, x, y, settings, defense, seed, rnd, c, {})[0])
        mean = defense.aggregate({k: sum(u[k] for u in updates) / len(updates) for k in glob},
                                 rnd, len(updates))
        glob = {k: glob[k] + mean[k] for k in glob}
    model.load_state_dict(glob)
    return model


def blobs(n: int, seed: int):
    """An easy, quickly learnt task (a bright square on noise or not): the benchmark's synthetic
    sets need more rounds than a unit test can afford to rise clearly above chance."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 120, (n, 1, 12, 12))
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, 9, 2)
        x[i, 0, r:r + 4, c:c + 4] = 255
    return x.astype(np.uint8), y.astype(np.int64)


def test_clean_accuracy_falls_as_weight_noise_grows():
    def make_model(seed):
        torch.manual_seed(seed)
        return build_model("small_cnn", 1, 2, 12)

    settings = TrainSettings(batch_size=16, lr=0.02, momentum=0.9)
    (x, y), (xt, yt) = blobs(288, 0), blobs(200, 1)
    clients = [(x[i::3], y[i::3]) for i in range(3)]
    acc = {}
    for sigma in (0.0, 0.1, 1.0):
        d = build_defense(["weight_noise"], sigma, {}, 0)
        acc[sigma] = np.mean([evaluate(fedavg(d, clients, 3, s, make_model, settings), xt, yt)["accuracy"]
                              for s in (0, 1)])
    assert acc[0.0] > 0.95 and acc[0.0] > acc[0.1] + 0.1 and acc[0.1] >= acc[1.0], acc
    assert acc[1.0] < 0.65, acc  # near chance (0.5)


def test_clean_accuracy_falls_as_weight_noise_grows_on_embedded_mri():
    """The same trend on the embedded synthetic MRI set (3 sites = 3 clients), over 2 seeds."""
    data = synthetic_brain_mri(seed=0, n_samples=600, image_size=16, n_sites=3)
    clients = [(data.x_train[data.site_train == s], data.y_train[data.site_train == s])
               for s in range(3)]
    settings = TrainSettings(batch_size=32, local_epochs=2, optimizer="adam", lr=0.003)

    def make_model(seed):
        torch.manual_seed(seed)
        return build_model("small_cnn", 1, 3, 16)

    acc = {}
    for sigma in (0.0, 0.03, 0.3):
        d = build_defense(["weight_noise"], sigma, {}, 0)
        acc[sigma] = np.mean([evaluate(fedavg(d, clients, 4, s, make_model, settings),
                                       data.x_test, data.y_test)["accuracy"] for s in (0, 1)])
    assert acc[0.0] > acc[0.03] > acc[0.3], acc
    assert acc[0.0] > 0.5 and acc[0.3] < 0.45, acc  # 3 classes: chance is about 1/3


def test_dp_sgd_secret_noise_cannot_be_regenerated(data):
    """Measured defect 6 for DP-SGD: with `secret_noise` the Poisson batches and the noise come
    from OS entropy, so the same config seed no longer gives the same update."""
    x, y = data[0][:96], data[1][:96]
    a, ma = train(["dp_sgd"], 1.0, {"secret_noise": True}, x, y)
    b, mb = train(["dp_sgd"], 1.0, {"secret_noise": True}, x, y)
    assert not torch.equal(a["1.weight"], b["1.weight"])
    assert ma["epsilon"] == mb["epsilon"]  # same accounting
