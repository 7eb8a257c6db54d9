"""A few small torchvision models (random init, 64x64): prune for real, outputs match."""

from __future__ import annotations

import pytest
import torch
import torchvision

from ._helpers import find_group, run, zero_check

# model name -> parameter producing the logits
MODELS = {
    "resnet18": "fc.weight",
    "mobilenet_v3_small": "classifier.3.weight",
    "shufflenet_v2_x0_5": "fc.weight",
    "squeezenet1_1": "classifier.1.weight",
    "regnet_x_400mf": "fc.weight",
}


@pytest.mark.parametrize("name", list(MODELS))
def test_torchvision_zero_check(name: str) -> None:
    """Half the channels of every group: same outputs as the zeroed model, fewer MACs."""
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    graph, plan, pruned = zero_check(model, x)

    head = find_group(graph, MODELS[name])
    assert not head.prunable
    assert head.reason and "reaches a model output" in head.reason
    assert head.id not in plan
    assert len(plan) >= len(graph.prunable) // 2
    assert graph.macs(plan) < 0.6 * graph.macs_total
    assert run(pruned, x).shape == (1, 10)
    assert not graph.unknown_ops
