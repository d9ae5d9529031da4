"""The row-view batch norm (memdistill.nets.batchnorm) against PyTorch's and float64."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from memdistill.nets import build_backbone
from memdistill.nets import batchnorm as bn_module
from memdistill.nets.batchnorm import BatchNorm2d


@pytest.fixture(autouse=True)
def two_threads():
    """The row path runs only with more than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def row_calls(monkeypatch):
    calls = []
    apply = bn_module._RowBatchNorm.apply
    monkeypatch.setattr(bn_module._RowBatchNorm, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


def pair(c: int, momentum: float | None = 0.1, seed: int = 1) -> tuple[BatchNorm2d, nn.BatchNorm2d]:
    torch.manual_seed(seed)
    ours, ref = BatchNorm2d(c, momentum=momentum), nn.BatchNorm2d(c, momentum=momentum)
    ours.weight.data.uniform_(0.5, 1.5)
    ours.bias.data.uniform_(-1, 1)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def run(bn: nn.Module, x: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype, steps: int = 3):
    """Output, input/weight/bias gradients after ``steps`` training forwards, and the state."""
    for _ in range(steps):
        xi = x.to(dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
        bn.zero_grad()
        y = bn(xi)
        y.backward(grad.to(dtype).contiguous(memory_format=torch.channels_last))
    return ([y.double(), xi.grad.double(), bn.weight.grad.double(), bn.bias.grad.double()],
            {k: v.double() for k, v in bn.state_dict().items()})


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("shape,loc,momentum", [((8, 20, 8, 8), 0.0, 0.1), ((4, 12, 16, 16), 5.0, None),
                                               ((16, 36, 4, 4), -2.0, 0.3)])
def test_fp32_matches_pytorch(shape, loc, momentum, row_calls):
    torch.manual_seed(0)
    x, grad = torch.randn(shape) * 2 + loc, torch.randn(shape)
    ours, ref = pair(shape[1], momentum)
    got, got_state = run(ours, x, grad, torch.float32)
    want, want_state = run(ref, x, grad, torch.float32)
    assert len(row_calls) == 3
    for a, b in zip(got, want):
        assert rel(a, b) < 1e-5
    assert got_state.keys() == want_state.keys()
    for k in want_state:
        torch.testing.assert_close(got_state[k], want_state[k], rtol=1e-5, atol=1e-6)


def test_layout_kept():
    x = torch.randn(4, 20, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = BatchNorm2d(20)(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("loc", [0.0, 10.0])
def test_bf16_error_at_rounding_level(loc, row_calls):
    """In bf16 every result is within bf16 rounding (2^-8 relative) of float64 truth."""
    shape = (16, 20, 16, 16)
    torch.manual_seed(0)
    x = (torch.randn(shape) * 2 + loc).bfloat16().float()   # inputs exact in bf16
    grad = torch.randn(shape).bfloat16().float()
    ours, ref = pair(20)
    got, got_state = run(ours, x, grad, torch.bfloat16, steps=1)
    truth, truth_state = run(ref.double(), x.double(), grad.double(), torch.float64, steps=1)
    assert row_calls
    for a, b in zip(got, truth):
        assert rel(a, b) < 2 ** -8
    assert rel(got_state["running_var"], truth_state["running_var"]) < 1e-3
    # the batch mean within bf16 rounding of the data's scale (|loc| + std); the running
    # mean holds 0.1 of it
    error = (got_state["running_mean"] - truth_state["running_mean"]).abs().max()
    assert error < 0.1 * 2 ** -8 * (abs(loc) + 2)


def test_pytorch_kernel_where_it_is_fast_or_required(row_calls):
    x = torch.randn(4, 20, 8, 8)
    BatchNorm2d(20)(x)                                          # NCHW
    BatchNorm2d(32)(x.repeat(1, 2, 1, 1)[:, :32].contiguous(memory_format=torch.channels_last))  # C % 16 == 0
    BatchNorm2d(20).eval()(x.contiguous(memory_format=torch.channels_last))                       # eval mode
    torch.set_num_threads(1)
    BatchNorm2d(20)(x.contiguous(memory_format=torch.channels_last))                              # one thread
    assert row_calls == []


def test_forward_mode_and_func_transforms_fall_back(row_calls):
    """torch.func.jvp (DDN's hypergradient) goes through PyTorch's kernel, with the same result."""
    torch.manual_seed(0)
    x = torch.randn(8, 20, 4, 4).contiguous(memory_format=torch.channels_last)
    tangent = torch.randn_like(x)
    ours, ref = pair(20)
    ours.track_running_stats = ref.track_running_stats = False   # as DDN's look-ahead does
    out, jv = torch.func.jvp(lambda t: ours(t), (x,), (tangent,))
    want_out, want_jv = torch.func.jvp(lambda t: ref(t), (x,), (tangent,))
    assert row_calls == []
    torch.testing.assert_close(jv, want_jv)
    torch.testing.assert_close(out, want_out)


def test_resnet_uses_it_and_keeps_state_dict_keys():
    model = build_backbone("reduced-resnet18", (3, 32, 32), 10)
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert layers and all(type(m) is BatchNorm2d for m in layers)
    plain = build_backbone("reduced-resnet18", (3, 32, 32), 10)
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.__class__ = nn.BatchNorm2d
    plain.load_state_dict(model.state_dict())   # strict: the same keys
