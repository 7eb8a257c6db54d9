"""Traces running at once in several threads give the groups each gives alone."""

from __future__ import annotations

import threading
from typing import Any

import torch
import torchvision

import prunepilot as pp


def _groups(graph: pp.ChannelGraph) -> list[tuple[Any, ...]]:
    return [(g.id, g.channels, g.prunable, g.reason, len(g.members)) for g in graph.groups]


def test_concurrent_traces_in_threads_match_sequential_ones() -> None:
    torch.manual_seed(0)
    models = {
        "resnet18": torchvision.models.resnet18().eval(),
        "mobilenet_v3_small": torchvision.models.mobilenet_v3_small().eval(),
        "densenet121": torchvision.models.densenet121().eval(),
    }
    x = torch.randn(1, 3, 32, 32)
    alone = {name: _groups(pp.trace(m, x)) for name, m in models.items()}
    found: dict[str, list[Any]] = {name: [] for name in models}

    def work(name: str) -> None:
        for _ in range(4):
            try:
                found[name].append(_groups(pp.trace(models[name], x)))
            except Exception as e:  # reported below, with the thread's model
                found[name].append(repr(e))

    threads = [threading.Thread(target=work, args=(name,)) for name in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, runs in found.items():
        assert runs == [alone[name]] * 4, name
