"""Per-sample gradients for DP-SGD in one backward pass, for Opacus's `no_op` grad-sample mode.

Opacus's hook modes let autograd compute the batch gradient of every weight, then compute the
per-sample gradients again from stored activations; the batch gradient is thrown away. Here each
layer with parameters runs through an autograd Function whose backward returns only the input
gradient and writes the per-sample weight gradients to `p.grad_sample`, the attribute Opacus's
DPOptimizer clips, noises and accounts for. Same numbers as Opacus's hooks (tested), without the
wasted batch gradient, and per-sample conv gradients as one grouped convolution (im2col where that
is faster) rather than Opacus's im2col for every layer: 1.5x plain training instead of 2.3x on
the default cell (bench/bench_dpsgd.py).

Per-sample gradients are of each sample's own loss (the batch-mean loss's gradient times the
batch size), as Opacus's hooks give with loss_reduction="mean". Layers: Conv2d (groups 1, zero
padding), Linear, GroupNorm; any other layer with trainable parameters is refused.

Sample independence: DP-SGD's sensitivity bound holds only if one sample's gradient does not
depend on the other samples of the batch. A parameter-free layer can break that silently (BatchNorm
with affine=False normalises over the batch), so every module must be on an allow-list: the layers
above, element-wise or per-sample layers (activations, pooling, dropout, flatten, containers) and
the project's reviewed model blocks; a module class whose forward its author has checked can say
so with `sample_independent = True`. Anything else, any BatchNorm included, is refused by name. A
hook on every parameter raises if autograd ever accumulates a batch gradient (`p.grad`), which
would mean some operation bypassed the per-sample path.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

aten = torch.ops.aten


def _store(p: torch.Tensor, grad_sample: torch.Tensor) -> None:
    if p.requires_grad:  # a layer used twice in one forward sums, as in Opacus
        p.grad_sample = grad_sample if getattr(p, "grad_sample", None) is None \
            else p.grad_sample + grad_sample


# Which per-sample conv method is faster, measured per layer on CPU (bench/bench_dpsgd.py): the
# grouped convolution, except for the image-input layer (few channels, at most IM2COL_MAX im2col
# elements per sample) and for layers with few output positions for their width (8x8 with 64+
# channels, 4x4 with 32+), where im2col + one batched matmul is 1.5-3x faster.
IM2COL_MAX = 1 << 15


def uses_im2col(weight, g) -> bool:
    c_in, kh, kw = weight.shape[1:]
    positions = g.shape[2] * g.shape[3]
    return (c_in < 8 and c_in * kh * kw * positions <= IM2COL_MAX) or 2 * positions < 3 * c_in


def conv_per_sample_im2col(g, x, weight, stride, padding, dilation):
    """Per-sample Conv2d weight gradients (n, *weight.shape): im2col of the input, one bmm."""
    n, (c_out, c_in, kh, kw) = len(g), weight.shape
    x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    windows = x.unfold(2, span_h, stride[0]).unfold(3, span_w, stride[1])
    windows = windows[..., ::dilation[0], ::dilation[1]]  # (n, c_in, H', W', kh, kw)
    positions = g.shape[2] * g.shape[3]
    cols = windows.permute(0, 1, 4, 5, 2, 3).reshape(n, c_in * kh * kw, positions)
    g = g.reshape(n, c_out, positions)
    if weight.numel() <= 4096:  # small: the transposed product and a copy are faster (measured)
        return torch.bmm(cols, g.transpose(1, 2)).transpose(1, 2).reshape(n, *weight.shape)
    return torch.bmm(g, cols.transpose(1, 2)).view(n, *weight.shape)


def conv_per_sample_grouped(g, x, weight, stride, padding, dilation):
    """Per-sample Conv2d weight gradients (n, *weight.shape): one weight-gradient convolution
    with the batch as groups."""
    n, (c_out, c_in) = len(g), weight.shape[:2]
    grads = aten.convolution_backward(
        g.reshape(1, n * c_out, *g.shape[2:]), x.reshape(1, n * c_in, *x.shape[2:]),
        weight.repeat(n, 1, 1, 1), None, stride, padding, dilation, False, [0, 0], n,
        [False, True, False])[1]
    return grads.view(n, *weight.shape)


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conf = stride, padding, dilation
        ctx.bias = bias
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        n = len(g)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = aten.convolution_backward(g, x, weight, None, stride, padding, dilation,
                                               False, [0, 0], 1, [True, False, False])[0]
        if weight.requires_grad and n == 0:
            _store(weight, weight.new_zeros(0, *weight.shape))
        elif weight.requires_grad:
            method = conv_per_sample_im2col if uses_im2col(weight, g) else conv_per_sample_grouped
            if g.numel() < weight.numel() * n:  # scale the smaller tensor
                _store(weight, method(g * n, x, weight, stride, padding, dilation))
            else:
                _store(weight, method(g, x, weight, stride, padding, dilation) * n)
        if ctx.bias is not None:
            _store(ctx.bias, g.sum((2, 3)) * n)
        return grad_x, None, None, None, None, None


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.bias = bias
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        n = len(g)
        grad_x = g @ weight if ctx.needs_input_grad[0] else None
        g = g * n  # before the outer product: g is the smaller tensor
        if g.dim() == 2:
            _store(weight, g.unsqueeze(2) * x.unsqueeze(1))
        else:
            _store(weight, torch.einsum("n...o,n...i->noi", g, x))
        if ctx.bias is not None:
            _store(ctx.bias, g if g.dim() == 2 else g.flatten(1, -2).sum(1))
        return grad_x, None, None


class _GroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps):
        n, c = x.shape[:2]
        y, mean, rstd = aten.native_group_norm(x, weight, bias, n, c, math.prod(x.shape[2:]),
                                               groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups, ctx.bias = groups, bias
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c = x.shape[:2]
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = aten.native_group_norm_backward(
                g, x, mean, rstd, weight, n, c, math.prod(x.shape[2:]), ctx.groups,
                [True, False, False])[0]
        g_sum = g.flatten(2).sum(2)
        if weight is not None:
            # sum over positions of g * x_hat, with x_hat = (x - mean) * rstd of the channel's group
            gx_sum = (g * x).flatten(2).sum(2)  # faster than einsum here
            per_channel = c // ctx.groups
            mean_c = mean.repeat_interleave(per_channel, 1)
            rstd_c = rstd.repeat_interleave(per_channel, 1)
            _store(weight, (gx_sum - mean_c * g_sum) * rstd_c * n)
        if ctx.bias is not None:
            _store(ctx.bias, g_sum * n)
        return grad_x, None, None, None, None


def _conv2d(self, x):
    return _Conv2d.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def _linear(self, x):
    return _Linear.apply(x, self.weight, self.bias)


def _group_norm(self, x):
    return _GroupNorm.apply(x, self.weight, self.bias, self.num_groups, self.eps)


_FORWARDS = (_conv2d, _linear, _group_norm)


def _forward_for(module: nn.Module):
    """The per-sample forward for exactly these layer types (a subclass may compute otherwise)."""
    kind = type(module)
    if kind is nn.Conv2d:
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        return _conv2d
    return {nn.Linear: _linear, nn.GroupNorm: _group_norm}.get(kind)


# Parameter-free modules that act on each sample alone (element-wise, or within one sample).
SAMPLE_INDEPENDENT = (
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.Hardtanh, nn.Mish, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d)


def _check_sample_independent(name: str, module: nn.Module) -> None:
    kind = type(module)
    if (kind in SAMPLE_INDEPENDENT or getattr(module, "sample_independent", False)
            or _forward_for(module) is not None):
        return
    why = ("normalises over the batch, so one sample's gradient depends on the others"
           if isinstance(module, nn.modules.batchnorm._NormBase) else
           "is not on the allow-list of layers known to keep samples independent; if its forward "
           "mixes nothing across the batch, mark its class `sample_independent = True`")
    raise ValueError(f"dp_sgd grad_sample_mode 'fused': layer {name or 'model'!r} "
                     f"({kind.__name__}) {why}")


def _no_batch_gradient(name: str):
    def hook(p):
        if p.grad is None:  # autograd visited the parameter but accumulated nothing
            return
        raise RuntimeError(f"dp_sgd fused engine: a batch gradient reached parameter {name!r}: "
                           "some operation bypassed the per-sample path")
    return hook


def attach(model: nn.Module) -> nn.Module:
    """Make `model`'s layers write per-sample gradients to `p.grad_sample` (in place; returns
    `model`). Raises ValueError naming the first layer it cannot do or that may mix samples."""
    plan = []
    for name, module in model.named_modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)) or isinstance(
                module, nn.modules.batchnorm._NormBase):
            _check_sample_independent(name, module)
            continue
        forward = _forward_for(module)
        if forward is None:
            raise ValueError(f"dp_sgd grad_sample_mode 'fused' cannot compute per-sample "
                             f"gradients of layer {name!r} ({module!r}); use 'hooks'")
        plan.append((module, forward))
    for module, forward in plan:
        module.forward = forward.__get__(module)
    model._fused_hooks = [p.register_post_accumulate_grad_hook(_no_batch_gradient(n))
                          for n, p in model.named_parameters() if p.requires_grad]
    return model


def detach(model: nn.Module) -> nn.Module:
    """Undo `attach`: the layers' own forward again, no batch-gradient guard."""
    for module in model.modules():
        if getattr(module.__dict__.get("forward"), "__func__", None) in _FORWARDS:
            del module.forward
    for handle in model.__dict__.pop("_fused_hooks", []):
        handle.remove()
    return model


def opacus_mode(model: nn.Module, mode: str) -> str:
    """Opacus's grad_sample_mode for dp_sgd's `mode`: `fused` attaches this engine to `model` and
    hands Opacus the per-sample gradients through its `no_op` mode; Opacus's own modes pass."""
    if mode != "fused":
        return mode
    attach(model)
    return "no_op"
