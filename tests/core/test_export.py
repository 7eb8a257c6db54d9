"""A pruned model is a plain model: torch.export and ONNX export work on it."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

import prunepilot as pp

from ._helpers import run


def test_torch_export(pruned_resnet18: tuple[nn.Module, torch.Tensor, pp.PruneReport]) -> None:
    """torch.export.export traces the pruned resnet18 and runs it with the same result."""
    model, x, _ = pruned_resnet18
    program = torch.export.export(model, (x,))
    weights = {k: tuple(v.shape) for k, v in program.state_dict.items()}
    assert weights["conv1.weight"] == tuple(model.conv1.weight.shape)
    assert weights["conv1.weight"][0] < 64
    assert torch.allclose(program.module()(x), run(model, x), atol=1e-5, rtol=1e-4)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export(
    pruned_resnet18: tuple[nn.Module, torch.Tensor, pp.PruneReport],
    tmp_path: Path,
    dynamo: bool,
) -> None:
    """torch.onnx.export writes a valid ONNX file holding the pruned weight shapes."""
    model, x, _ = pruned_resnet18
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=dynamo)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    out = proto.graph.output[0].type.tensor_type.shape
    assert [d.dim_value for d in out.dim] == [1, 1000]
    shapes = {tuple(init.dims) for init in proto.graph.initializer}
    assert tuple(model.conv1.weight.shape) in shapes
    assert (64, 3, 7, 7) not in shapes
