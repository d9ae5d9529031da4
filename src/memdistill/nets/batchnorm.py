"""Batch norm for channels-last CPU training with few channels.

PyTorch's CPU batch-norm kernels for channels-last tensors get *slower* with a second
thread when the channel count is not a multiple of 16: on the 2-core Xeon of
docs/benchmarks.md the training backward of a 64x20x32x32 bf16 tensor takes 7.7 ms on 2
threads and 3.8 ms on 1 (``benchmarks/batchnorm_threads.py``), and batch norm was ~40 %
of the bf16 ER step of ``reduced-resnet18`` (C = 20, 40, 80, 160).

A channels-last (N, C, H, W) tensor is an (N*H*W, C) matrix in memory.  Viewed as
(N*H*W/r, r*C) rows, per-channel sums become column sums over long contiguous rows, and
the per-channel affine maps become row-broadcast multiply-adds, which TensorIterator
vectorises and splits across threads well (the same backward: 2.0 ms on 2 threads).
``BatchNorm2d`` takes that route in training mode where it pays (channels-last CPU
input, more than one thread, C < 64 and not a multiple of 16) and PyTorch's kernel
everywhere else, so eval mode, ``torch.func`` transforms and forward-mode AD are
untouched.  The statistics and gradients are the textbook ones (Ioffe & Szegedy 2015,
Alg. 1 and its backward), accumulated in fp32 whatever the input dtype.
"""
from __future__ import annotations

import torch
from torch import nn

# PyTorch's kernel is fast when C is a multiple of 16 (16, 32, 48, 64, 80, 160 measured)
# and 1.5-4x slower than the row path at 12, 20, 24 and 36; at 40 and 60 the two are level
# (`python benchmarks/batchnorm_threads.py --threads 2 --shape 64 C 32 32`).
FAST_MAX_CHANNELS = 64
_ROW_GROUP = 64          # r: rows of C values folded into one long row


def _rows(x: torch.Tensor, r: int) -> torch.Tensor:
    """The (N*H*W/r, r*C) view of a channels-last (N, C, H, W) tensor."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h * w // r, r * c)


def _channel_sums(rows: torch.Tensor, r: int) -> torch.Tensor:
    """Per-channel fp32 sums of the rows view.  Column sums stay in the input dtype (a
    bf16 sum accumulates in fp32 and rounds once per column of N*H*W/r values): a
    ``dtype=torch.float32`` sum would first copy the whole tensor to fp32."""
    return rows.sum(0).float().view(r, -1).sum(0)


def _per_row(v: torch.Tensor, rows: torch.Tensor, r: int) -> torch.Tensor:
    """A per-channel vector repeated along a row of the rows view, in its dtype."""
    return v.to(rows.dtype).repeat(r)


def _unrows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The channels-last (N, C, H, W) tensor behind a rows view."""
    n, c, h, w = shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


class _RowBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float, r: int):
        rows = _rows(x, r)
        m = rows.numel() // x.shape[1]
        mean = _channel_sums(rows, r) / m
        # Centre on the mean as the input dtype holds it (in bf16 it is off by `shift`);
        # the variance then has no E[x^2] - mean^2 cancellation, and x - mean, all that
        # backward needs, is `centred - shift` with `shift` carried exactly in fp32.
        stored_mean = mean.to(x.dtype)
        shift = mean - stored_mean.float()
        centred = rows - stored_mean.repeat(r)
        var = (_channel_sums(centred * centred, r) / m - shift * shift).clamp_(min=0)
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var * (m / max(m - 1, 1)), alpha=momentum)
        scale = weight * invstd
        ctx.save_for_backward(centred, weight, invstd, shift)
        ctx.r, ctx.shape = r, x.shape
        out = torch.addcmul(_per_row(bias - shift * scale, rows, r), centred, _per_row(scale, rows, r))
        return _unrows(out, x.shape)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        centred, weight, invstd, shift = ctx.saved_tensors
        r = ctx.r
        grad_rows = _rows(grad_out.contiguous(memory_format=torch.channels_last), r)
        m = centred.numel() // ctx.shape[1]
        sum_dy = _channel_sums(grad_rows, r)
        dot = _channel_sums(centred * grad_rows, r) - shift * sum_dy   # sum (x - mean) * dy
        # dx = w * invstd * (dy - mean(dy) - (x - mean) * invstd^2 * dot / m)   (Ioffe & Szegedy)
        a = weight * invstd
        b = -a * invstd * invstd * dot / m
        grad_x = torch.addcmul(_per_row(-a * sum_dy / m - b * shift, centred, r), centred,
                               _per_row(b, centred, r))
        grad_x.addcmul_(grad_rows, _per_row(a, centred, r))
        return _unrows(grad_x, ctx.shape), dot * invstd, sum_dy, None, None, None, None, None


def _functorch_or_dual(x: torch.Tensor) -> bool:
    if torch._C._are_functorch_transforms_active():
        return True
    return torch.autograd.forward_ad.unpack_dual(x).tangent is not None


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, buffers and state dict) with the row-view
    training path for channels-last CPU tensors whose channel count is small and not
    a multiple of 16."""

    def _fast(self, x: torch.Tensor) -> bool:
        if not (self.training and self.affine and x.dim() == 4 and x.device.type == "cpu"):
            return False
        c = x.shape[1]
        if c % 16 == 0 or c >= FAST_MAX_CHANNELS or torch.get_num_threads() < 2:
            return False
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return False
        if x.numel() // x.shape[1] % _ROW_GROUP or _functorch_or_dual(x):
            return False
        return x.dtype in (torch.float32, torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fast(x):
            return super().forward(x)
        momentum = 0.0 if self.momentum is None else self.momentum
        tracked = self.track_running_stats
        if tracked and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:   # cumulative moving average, as nn.BatchNorm2d
                momentum = 1.0 / float(self.num_batches_tracked)
        return _RowBatchNorm.apply(x, self.weight, self.bias,
                                   self.running_mean if tracked else None,
                                   self.running_var if tracked else None,
                                   momentum, self.eps, _ROW_GROUP)


__all__ = ["BatchNorm2d", "FAST_MAX_CHANNELS"]
