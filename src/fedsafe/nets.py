"""The models of the registry in fedsafe.models. Every model takes images in [0, 1] and normalises inside, so attacks work in
pixel space; GroupNorm instead of BatchNorm so the same model runs under DP-SGD (Opacus)."""

import torch
from torch import nn


class Normalize(nn.Module):
    sample_independent = True  # reviewed: per-sample affine map (DP-SGD's fused engine checks)

    def __init__(self, mean: float = 0.5, std: float = 0.5):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def _conv_block(c_in: int, c_out: int, groups: int = 8, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, padding=1), nn.GroupNorm(min(groups, c_out), c_out),
            nn.ReLU()]


def small_cnn(channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Three conv blocks (two strided) and a linear head on the flattened features: the default
    for the embedded 32x32 data. No pooling, as in the gradient-inversion literature's models, so
    the model leaks what a typical undefended model leaks."""
    side = -(-image_size // 4)
    return nn.Sequential(
        Normalize(),
        *_conv_block(channels, 16),
        *_conv_block(16, 32, stride=2),
        *_conv_block(32, 64, stride=2),
        nn.Flatten(), nn.Linear(64 * side * side, num_classes),
    )


def fedsafe_cnn(channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Fed-Safe's plain 6-conv CNN (100-250 channels) with a dense head and dropout 0.25."""
    widths = [channels, 100, 150, 150, 200, 200, 250]
    layers: list[nn.Module] = [Normalize()]
    for i in range(6):
        layers += _conv_block(widths[i], widths[i + 1], groups=10)
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.25),
               nn.Linear(250 * 4, 256), nn.ReLU(), nn.Dropout(0.25), nn.Linear(256, num_classes)]
    return nn.Sequential(*layers)


def lenet(channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The DLG/iDLG/MedPFL LeNet: sigmoid convolutions, no pooling, weights U(-0.5, 0.5); smooth and
    twice-differentiable, the setting in which gradient inversion was shown to work."""
    side = -(-image_size // 4)
    model = nn.Sequential(
        Normalize(),
        nn.Conv2d(channels, 12, 5, 2, 2), nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, 2, 2), nn.Sigmoid(),
        nn.Conv2d(12, 12, 5, 1, 2), nn.Sigmoid(),
        nn.Flatten(), nn.Linear(12 * side * side, num_classes),
    )
    for p in model.parameters():
        nn.init.uniform_(p, -0.5, 0.5)
    return model


class _BasicBlock(nn.Module):
    sample_independent = True  # reviewed: convolutions, GroupNorm and a residual sum

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(8, c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.GroupNorm(8, c_out),
        )
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(8, c_out)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


def resnet18(channels: int, num_classes: int, image_size: int) -> nn.Module:
    """ResNet-18 layout (2-2-2-2 basic blocks) with GroupNorm, for larger images (e.g. 224x224)."""
    stem_stride = 2 if image_size >= 96 else 1
    layers: list[nn.Module] = [Normalize(), nn.Conv2d(channels, 64, 3, stem_stride, 1, bias=False),
                               nn.GroupNorm(8, 64), nn.ReLU()]
    c_in = 64
    for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)
