"""The fused per-sample gradient engine against Opacus's hooks (the independent reference)."""

import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from fedsafe.defenses import grad_sample
from fedsafe.models import MODELS, build_model


def opacus_grad_samples(model, x, y) -> dict:
    ref = GradSampleModule(model)
    torch.manual_seed(1)  # same dropout masks on both sides
    nn.functional.cross_entropy(ref(x), y).backward()
    out = {n: p.grad_sample.clone() for n, p in model.named_parameters()}
    ref._close()
    for p in model.parameters():
        p.grad, p.grad_sample = None, None
    return out


def fused_grad_samples(model, x, y) -> dict:
    grad_sample.attach(model)
    torch.manual_seed(1)
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is None for p in model.parameters())  # no batch gradient computed
    out = {n: p.grad_sample for n, p in model.named_parameters()}
    grad_sample.detach(model)
    return out


def assert_same(want: dict, got: dict):
    assert want.keys() == got.keys()
    for k, ref in want.items():
        assert got[k].shape == ref.shape, k
        assert (got[k] - ref).abs().max() / (ref.abs().max() + 1e-12) < 1e-4, k


class Mixed(nn.Module):
    """Conv layers of every kind the engine handles: strided, dilated, no bias, rectangular
    kernels, a Linear applied to a 3-d input."""

    sample_independent = True  # its forward reshapes each sample on its own

    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(2, 6, (3, 5), stride=(1, 2), padding=(1, 2)), nn.GroupNorm(3, 6), nn.Tanh(),
            nn.Conv2d(6, 12, 3, stride=2, padding=2, dilation=2, bias=False),
            nn.GroupNorm(4, 12, affine=False), nn.Tanh(),
            nn.Conv2d(12, 8, 1))
        self.mix = nn.Linear(8, 5)
        self.head = nn.Linear(5 * 16, 3)

    def forward(self, x):
        h = self.convs(x).flatten(2).transpose(1, 2)  # (n, 16 positions, 8 channels)
        return self.head(self.mix(h).flatten(1))


@pytest.mark.parametrize("name", MODELS.known())
@pytest.mark.parametrize("im2col", [False, True])  # one conv method for every layer
def test_per_sample_gradients_equal_opacus(name, im2col, monkeypatch):
    monkeypatch.setattr(grad_sample, "uses_im2col", lambda weight, g: im2col)
    torch.manual_seed(0)
    model = build_model(name, 3, 4, 16).train()
    x, y = torch.rand(5, 3, 16, 16), torch.randint(0, 4, (5,))
    assert_same(opacus_grad_samples(model, x, y), fused_grad_samples(model, x, y))


@pytest.mark.parametrize("im2col", [False, True])
def test_per_sample_gradients_of_mixed_layers(im2col, monkeypatch):
    monkeypatch.setattr(grad_sample, "uses_im2col", lambda weight, g: im2col)
    torch.manual_seed(0)
    model = Mixed()
    x, y = torch.rand(4, 2, 8, 16), torch.randint(0, 3, (4,))
    assert_same(opacus_grad_samples(model, x, y), fused_grad_samples(model, x, y))


def test_an_empty_batch_gives_empty_per_sample_gradients():
    model = grad_sample.attach(build_model("small_cnn", 1, 3, 16))
    nn.functional.cross_entropy(model(torch.rand(0, 1, 16, 16)),
                                torch.zeros(0, dtype=torch.long)).backward()
    for p in model.parameters():
        assert p.grad_sample.shape == (0, *p.shape)


def test_detach_restores_the_layers():
    torch.manual_seed(0)
    model = build_model("small_cnn", 1, 3, 16)
    x = torch.rand(3, 1, 16, 16)
    before = model(x)
    grad_sample.detach(grad_sample.attach(model))
    assert torch.equal(model(x), before)
    model(x).sum().backward()
    assert all(p.grad is not None and not hasattr(p, "grad_sample") for p in model.parameters())


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 4, 3, groups=2), nn.LayerNorm(4),
                                   nn.Conv2d(4, 4, 3, padding_mode="reflect", padding=1)])
def test_unsupported_layers_are_named(layer):
    model = nn.Sequential(nn.Conv2d(1, 4, 1), layer)
    with pytest.raises(ValueError, match=r"layer '1'.*use 'hooks'"):
        grad_sample.attach(model)
    assert "forward" not in model[0].__dict__  # nothing half-attached


# ------------------------------------------------------------------ sample independence
def per_sample_grads_of_first(model, x, y) -> dict:
    torch.manual_seed(1)  # same dropout masks
    nn.functional.cross_entropy(model(x), y).backward()
    out = {n: p.grad_sample[0].clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad_sample = None
    return out


def first_sample_independent(model, seed: int = 0) -> bool:
    """Does sample 0's gradient stay the same when the other samples of the batch change?"""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(4, 3, 16, 16, generator=g), torch.randint(0, 4, (4,), generator=g)
    other = x.clone()
    other[1:] = torch.rand(3, 3, 16, 16, generator=g)
    a, b = per_sample_grads_of_first(model, x, y), per_sample_grads_of_first(model, other, y)
    return all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a)


@pytest.mark.parametrize("name", MODELS.known())
def test_a_samples_gradient_ignores_the_other_samples(name):
    """Measured defect 7: DP-SGD's sensitivity needs each sample's gradient to depend on that
    sample only; checked per registered model, in training mode (dropout on)."""
    torch.manual_seed(0)
    model = grad_sample.attach(build_model(name, 3, 4, 16).train())
    assert first_sample_independent(model)


def test_the_independence_check_catches_batchnorm(monkeypatch):
    """The same check fails on a model that normalises over the batch (let through on purpose)."""
    monkeypatch.setattr(grad_sample, "SAMPLE_INDEPENDENT",
                        (*grad_sample.SAMPLE_INDEPENDENT, nn.BatchNorm2d))
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 14 * 14, 4))
    assert not first_sample_independent(grad_sample.attach(model))


class Mixer(nn.Module):
    def forward(self, x):
        return x - x.mean(0, keepdim=True)  # mixes samples, no parameters


@pytest.mark.parametrize("layer,why", [(nn.BatchNorm2d(4, affine=False), "normalises over the batch"),
                                       (nn.BatchNorm2d(4), "normalises over the batch"),
                                       (Mixer(), "Mixer.*not on the allow-list")])
def test_layers_that_may_mix_samples_are_refused_by_name(layer, why):
    model = nn.Sequential(nn.Conv2d(1, 4, 1), layer)
    with pytest.raises(ValueError, match=f"layer '1'.*{why}"):
        grad_sample.attach(model)
    assert "forward" not in model[0].__dict__  # nothing half-attached


def test_a_batch_gradient_is_refused():
    """An operation that bypasses the per-sample path would leave a batch gradient: refused."""
    model = grad_sample.attach(build_model("small_cnn", 1, 3, 16))
    weight = next(model.parameters())
    with pytest.raises(RuntimeError, match="batch gradient"):
        (weight ** 2).sum().backward()  # a use of the weight outside the fused layers
    grad_sample.detach(model)
    (weight ** 2).sum().backward()  # detached: plain autograd again
