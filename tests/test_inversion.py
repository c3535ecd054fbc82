"""Gradient inversion and image metrics on a MedPFL-style sigmoid LeNet (weights U(-0.5, 0.5))."""
import numpy as np
import pytest
import torch
from torch import nn

from fedsafe.attacks.inversion import (gradient_from_update, infer_label_idlg, infer_labels,
                                       observed_gradient, reconstruct)
from fedsafe.metrics import image_metrics

N_CLASSES = 10


class LeNet(nn.Module):
    """DLG/MedPFL LeNet: sigmoid convolutions, no pooling, one linear head."""

    def __init__(self, c=1, hw=16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid())
        self.fc = nn.Linear(12 * (hw // 4) ** 2, N_CLASSES)

    def forward(self, x):
        return self.fc(self.body((x - 0.5) / 0.5).flatten(1))  # normalisation inside the model


def lenet(c=1, hw=16, seed=0):
    torch.manual_seed(seed)
    m = LeNet(c, hw)
    for p in m.parameters():
        nn.init.uniform_(p, -0.5, 0.5)
    return m


def blob_image(c=1, hw=16, seed=0):
    """Smooth structured image (three Gaussian blobs), shape (1, c, hw, hw), max 1."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, hw), torch.linspace(0, 1, hw), indexing="ij")
    img = torch.zeros(c, hw, hw)
    for _ in range(3):
        cx, cy, s = torch.rand(3, generator=g)
        for ch in range(c):
            img[ch] += torch.rand(1, generator=g) * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (0.02 + 0.08 * s))
    return (img / img.max()).unsqueeze(0)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(2)
    model, x, y = lenet(), blob_image(), torch.tensor([3])
    return model, x, y, observed_gradient(model, x, y)


# ---------------------------------------------------------------- metrics

@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 3, 32, 32), (1, 1, 8, 8), (1, 3, 16, 16)])
def test_identical_images_are_perfect(shape):
    x = torch.rand(shape)
    m = image_metrics(x, x)
    assert m["ssim"] == pytest.approx([1.0] * shape[0])
    assert m["mse"] == [0.0] * shape[0] and m["psnr"] == [float("inf")] * shape[0]
    assert m["success_rate"] == 1.0


def test_noise_lowers_ssim_and_psnr():
    x = blob_image(3, 32)
    g = torch.Generator().manual_seed(0)
    light = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    heavy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ml, mh = image_metrics(x, light), image_metrics(x, heavy)
    assert mh["mean_ssim"] < ml["mean_ssim"] - 0.3
    assert mh["mean_psnr"] < ml["mean_psnr"] and mh["mean_mse"] > ml["mean_mse"]
    # PSNR = 10 log10(1 / MSE) for data_range 1
    assert ml["psnr"][0] == pytest.approx(10 * np.log10(1 / ml["mse"][0]))
    assert image_metrics(x, torch.rand_like(x))["mean_ssim"] < 0.1


# ---------------------------------------------------------------- labels and updates

@pytest.mark.parametrize("label", [0, 3, 7, 9])
def test_idlg_label_inference(label):
    for seed in range(3):
        model = lenet(seed=seed)
        g = observed_gradient(model, blob_image(seed=seed), torch.tensor([label]))
        assert infer_label_idlg(g[-2]) == label


def test_batch_label_inference_finds_distinct_labels():
    # The sign heuristic is not exact for batches; at batch 2 it should nearly always work.
    hits = 0
    for s in range(20):
        y = torch.randperm(N_CLASSES, generator=torch.Generator().manual_seed(s))[:2]
        x = torch.cat([blob_image(seed=100 * s + i) for i in range(2)])
        g = observed_gradient(lenet(seed=s), x, y)
        hits += sorted(infer_labels(g[-2], 2).tolist()) == sorted(y.tolist())
    assert hits >= 17


def test_gradient_from_update_inverts_sgd():
    model, x, y = lenet(), blob_image(), torch.tensor([5])
    g = observed_gradient(model, x, y)
    lr = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    delta = [p.detach() - b for p, b in zip(model.parameters(), before)]
    for est, true in zip(gradient_from_update(delta, lr, 1), g):
        torch.testing.assert_close(est, true, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- reconstruction

CASES = [("idlg", "random", 50), ("idlg", "cpl", 50), ("dlg", "random", 50), ("inverting_gradients", "random", 300)]


@pytest.mark.parametrize("method,init,iters", CASES)
def test_reconstruction_recovers_image(setup, method, init, iters):
    model, x, y, g = setup
    calls = []
    x_rec, labels = reconstruct(model, g, x.shape[1:], N_CLASSES, method=method, init=init,
                                iterations=iters, seed=0, progress=lambda i, l: calls.append((i, l)))
    assert x_rec.shape == x.shape and 0 <= x_rec.min() and x_rec.max() <= 1
    assert labels.tolist() == [3]
    assert image_metrics(x, x_rec)["mean_ssim"] > 0.9
    assert image_metrics(x, torch.rand_like(x))["mean_ssim"] < 0.1
    assert calls and calls[-1][0] == iters - 1


@pytest.mark.parametrize("method,iters", [("idlg", 50), ("inverting_gradients", 300)])
def test_laplace_gradient_noise_lowers_ssim(setup, method, iters):
    model, x, y, g = setup
    torch.manual_seed(1)
    noisy = [t + torch.distributions.Laplace(0.0, 0.1).sample(t.shape) for t in g]  # MedPFL defense
    clean = image_metrics(x, reconstruct(model, g, x.shape[1:], N_CLASSES, method=method,
                                         iterations=iters, seed=0)[0])["mean_ssim"]
    noised = image_metrics(x, reconstruct(model, noisy, x.shape[1:], N_CLASSES, method=method,
                                          iterations=iters, seed=0)[0])["mean_ssim"]
    assert noised < clean - 0.3


def test_same_seed_same_reconstruction(setup):
    model, x, y, g = setup
    # few iterations so the runs are far from converged and any randomness would show
    kw = dict(method="inverting_gradients", iterations=20, restarts=2)
    a, _ = reconstruct(model, g, x.shape[1:], N_CLASSES, seed=7, **kw)
    b, _ = reconstruct(model, g, x.shape[1:], N_CLASSES, seed=7, **kw)
    c, _ = reconstruct(model, g, x.shape[1:], N_CLASSES, seed=8, **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_reconstruction_with_known_labels():
    model = lenet()
    x, y = torch.cat([blob_image(seed=0), blob_image(seed=5)]), torch.tensor([2, 7])
    x_rec, labels = reconstruct(model, observed_gradient(model, x, y), (1, 16, 16), N_CLASSES,
                                method="idlg", iterations=100, seed=0, batch_size=2, labels=y)
    assert labels.tolist() == [2, 7]
    assert min(image_metrics(x, x_rec)["ssim"]) > 0.9


def test_progress_spans_restarts(setup):
    model, x, y, g = setup
    its = []
    reconstruct(model, g, x.shape[1:], N_CLASSES, method="inverting_gradients", iterations=40,
                restarts=3, seed=3, progress=lambda i, l: its.append(i))
    assert its == sorted(its) and its[-1] == 3 * 40 - 1
