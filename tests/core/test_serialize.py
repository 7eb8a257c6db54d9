"""save/load: pruned checkpoints rebuild the architecture from its source, no pickled code."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import prunepilot as pp
from prunepilot import PrunepilotError

from . import _factories
from ._helpers import run, snapshot, state_equal

_TESTS = ["tests.core._factories:*"]  # the test factories are not trusted by default


def _layer_attrs(model: nn.Module) -> dict[str, tuple[object, ...]]:
    """Size attributes of every standard layer."""
    attrs: dict[str, tuple[object, ...]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            attrs[name] = (m.in_channels, m.out_channels, m.groups)
        elif isinstance(m, nn.Linear):
            attrs[name] = (m.in_features, m.out_features)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            attrs[name] = (m.num_features,)
    return attrs


def test_roundtrip_torchvision(
    pruned_resnet18: tuple[nn.Module, torch.Tensor, pp.PruneReport], tmp_path: Path
) -> None:
    """A pruned resnet18 saved with source torchvision:resnet18 loads back identical."""
    model, x, report = pruned_resnet18
    assert report.params_after < report.params_before
    path = pp.save(model, tmp_path / "m.safetensors", source="torchvision:resnet18")
    assert Path(path).is_file()
    loaded = pp.load(tmp_path / "m.safetensors").eval()
    assert type(loaded) is type(model)
    assert _layer_attrs(loaded) == _layer_attrs(model)
    assert loaded.conv1.out_channels < 64
    assert state_equal(snapshot(model), snapshot(loaded))
    assert torch.equal(run(model, x), run(loaded, x))


@pytest.mark.parametrize("as_callable", [False, True], ids=["string", "callable"])
def test_roundtrip_factory_with_kwargs(tmp_path: Path, as_callable: bool) -> None:
    """A 'package.module:factory' source (or the function itself) with kwargs round-trips."""
    model = _factories.tiny_net(num_classes=10).eval()
    x = torch.randn(2, 3, 16, 16)
    pp.prune(model, x, remove=0.5)
    assert model.conv2.out_channels == 8 and model.dw.groups == 8
    source = _factories.tiny_net if as_callable else "tests.core._factories:tiny_net"
    pp.save(model, tmp_path / "tiny.safetensors", source=source, kwargs={"num_classes": 10})
    loaded = pp.load(tmp_path / "tiny.safetensors", allow=_TESTS).eval()
    assert isinstance(loaded, _factories.TinyNet)
    assert loaded.fc.out_features == 10
    assert _layer_attrs(loaded) == _layer_attrs(model)
    assert torch.equal(run(model, x), run(loaded, x))
    # the loaded model is a plain model again: it can be traced and pruned further
    graph = pp.trace(loaded, x)
    plan = pp.select(loaded, graph, remove=0.5)
    pp.prune_channels(loaded, graph, plan)
    assert run(loaded, x).shape == (2, 10)


def test_roundtrip_unpruned(tmp_path: Path) -> None:
    """An unpruned model round-trips too."""
    model = _factories.tiny_net().eval()
    pp.save(model, tmp_path / "plain.safetensors", source="tests.core._factories:tiny_net")
    loaded = pp.load(tmp_path / "plain.safetensors", allow=_TESTS).eval()
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(run(model, x), run(loaded, x))


def test_save_does_not_modify_model(tmp_path: Path) -> None:
    """save() leaves the model's tensors alone."""
    model = _factories.tiny_net()
    before = snapshot(model)
    pp.save(model, tmp_path / "m.safetensors", source=_factories.tiny_net)
    assert state_equal(before, snapshot(model))


def test_load_plain_safetensors_is_refused(tmp_path: Path) -> None:
    """A safetensors file without prunepilot metadata raises PrunepilotError."""
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(PrunepilotError, match="not a prunepilot checkpoint"):
        pp.load(tmp_path / "plain.safetensors")


def test_load_missing_file(tmp_path: Path) -> None:
    """A missing path raises PrunepilotError."""
    with pytest.raises(PrunepilotError):
        pp.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("kind", ["text", "torch.save"])
def test_load_non_safetensors_file(tmp_path: Path, kind: str) -> None:
    """Any non-prunepilot file (here: not even safetensors) raises PrunepilotError."""
    path = tmp_path / "model.bin"
    if kind == "text":
        path.write_text("hello, not a checkpoint")
    else:
        torch.save(_factories.tiny_net().state_dict(), path)
    with pytest.raises(PrunepilotError):
        pp.load(path)


def test_bad_sources(tmp_path: Path) -> None:
    """Unusable sources raise PrunepilotError at save or load time."""
    model = _factories.tiny_net()
    with pytest.raises(PrunepilotError):
        pp.save(model, tmp_path / "a.safetensors", source="no_colon_here")
    cases = {
        "missing-module": "tests.core._no_such_module:tiny_net",
        "missing-factory": "tests.core._factories:no_such_factory",
        "not-a-module": "tests.core._factories:not_a_model",
        "wrong-architecture": "torchvision:squeezenet1_1",
    }
    for name, source in cases.items():
        path = tmp_path / f"{name}.safetensors"
        pp.save(model, path, source=source)
        with pytest.raises(PrunepilotError):
            pp.load(path, allow="tests.core.*")


def test_loaded_copy_is_independent(tmp_path: Path) -> None:
    """The loaded model owns its tensors: changing it leaves the original alone."""
    model = _factories.tiny_net().eval()
    pp.save(model, tmp_path / "m.safetensors", source=_factories.tiny_net)
    loaded = pp.load(tmp_path / "m.safetensors", allow=_TESTS)
    before = snapshot(copy.deepcopy(model))
    with torch.no_grad():
        for p in loaded.parameters():
            p.add_(1.0)
    assert state_equal(before, snapshot(model))


def test_instance_norm_without_weights_keeps_its_pruned_size(tmp_path: Path) -> None:
    """An instance norm holding no tensor gets its num_features from the trace when pruned,
    and a checkpoint gives it back (no tensor shape does)."""
    model = _factories.style_net().eval()
    x = torch.randn(2, 3, 8, 8)
    graph = pp.trace(model, x)
    plan = {"conv1.weight:0": [0, 3, 5], "conv2.weight:0": [1]}
    pp.prune_channels(model, graph, plan)
    assert (model.in1.num_features, model.in2.num_features) == (5, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stale num_features warns on every forward
        ref = model(x)
    pp.save(model, tmp_path / "style.safetensors", source="tests.core._factories:style_net")
    loaded = pp.load(tmp_path / "style.safetensors", allow=_TESTS).eval()
    assert loaded.in1.num_features == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(loaded(x), ref)
