"""Shared pytest configuration: deterministic seeds and a small CPU thread pool."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)
