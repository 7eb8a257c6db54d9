"""The resolver: one public name defined in its module, trusted by pattern, JSON-only kwargs."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import prunepilot as pp
from prunepilot import PrunepilotError, UntrustedSourceError
from prunepilot.core import build_source, check_kwargs

from . import _resolve_factories as rf

_MOD = "tests.core._resolve_factories"
_ALL = "*"  # trust everything: what is left to refuse is refused by shape, not by policy


class _MakeDir:
    """A pickle that creates a directory when it is loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def _on_meta(source: str, kwargs: dict[str, Any] | None = None, **kw: Any) -> nn.Module:
    with torch.device("meta"):
        return build_source(source, kwargs, **kw)


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("torchvision:resnet18", "ResNet"),
        ("timm:resnet18", "ResNet"),
        ("prunepilot.demo.models:digits_cnn", "DigitsCNN"),
        ("prunepilot.demo.models:DigitsCNN", "DigitsCNN"),
    ],
)
def test_default_trust_builds_libraries_and_the_zoo(source: str, kind: str) -> None:
    assert type(_on_meta(source)).__name__ == kind


def test_functions_and_module_classes_build_when_allowed() -> None:
    assert isinstance(build_source(f"{_MOD}:small", {"width": 3}, allow=f"{_MOD}:*"), rf.Small)
    assert build_source(f"{_MOD}:Small", allow=f"{_MOD}:*").fc.in_features == 4


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("prunepilot.demo.models:torch.os.mkdir", "not an attribute path"),
        ("prunepilot.demo.models:torch.load", "not an attribute path"),
        (f"{_MOD}:Outer.Inner", "not an attribute path"),
        (f"{_MOD}:_hidden", "private"),
        (f"{_MOD}:small()", "one plain name"),
        (f"{_MOD}:", "one plain name"),
        ("../evil:net", "not a dotted module name"),
        ("no_colon_here", "must be"),
        ("timm:hf-hub:org/repo", "architecture names"),
        ("timm:local-dir:/tmp", "architecture names"),
        ("x" * 300 + ":net", "must be"),
    ],
)
def test_malformed_references_are_refused_before_anything_is_imported(
    source: str, match: str
) -> None:
    with pytest.raises(PrunepilotError, match=match) as info:
        build_source(source, allow=_ALL)
    assert not isinstance(info.value, UntrustedSourceError)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("prunepilot.demo.models:torch", "is a module"),
        ("prunepilot.demo.models:nn", "is a module"),
        (f"{_MOD}:tiny_net", "tests.core._factories:tiny_net, defined elsewhere"),
        (f"{_MOD}:make_small", f"{_MOD}:small, defined elsewhere"),
        (f"{_MOD}:NotAModule", "not an nn.Module"),
        (f"{_MOD}:returns_int", "returned int, not an nn.Module"),
        (f"{_MOD}:missing", "defines no 'missing'"),
        ("os:getcwd", "not a function or class"),  # a builtin
        ("os:environ", "not a function or class"),
        ("json:dumps", "returned str, not an nn.Module"),  # a function, but no module factory
        ("tests.core._no_such_module:net", "cannot import"),
    ],
)
def test_only_functions_and_module_classes_defined_there_are_factories(
    source: str, match: str
) -> None:
    kwargs = {"obj": 1} if source == "json:dumps" else None
    with pytest.raises(PrunepilotError, match=match):
        build_source(source, kwargs, allow=_ALL)


def test_a_class_that_is_no_module_is_refused_before_it_is_called() -> None:
    with pytest.raises(PrunepilotError, match=r"class but not an nn\.Module"):
        build_source("subprocess:Popen", {"args": ["true"]}, allow="subprocess:*")


def test_untrusted_module_is_refused_without_being_imported() -> None:
    source = "tests.core._resolve_untouched:net"
    with pytest.raises(UntrustedSourceError, match="not allowed") as info:
        build_source(source, how_to_allow="ask the operator")
    assert source in str(info.value) and "ask the operator" in str(info.value)
    assert "tests.core._resolve_untouched" not in sys.modules


def test_one_string_is_one_pattern_not_its_characters() -> None:
    # iterating "mypkg:*" would give the pattern "*", which trusts everything
    with pytest.raises(UntrustedSourceError):
        build_source(f"{_MOD}:small", allow="mypkg.models:*")
    with pytest.raises(PrunepilotError, match="non-empty strings"):
        build_source(f"{_MOD}:small", allow=["", f"{_MOD}:*"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pretrained": True},
        {"checkpoint_path": "model.pth"},
        {"pretrained_cfg_overlay": {"file": "x"}},
        {"pretrained_cfg": "resnet18.a1_in1k"},
        {"weights": "DEFAULT"},
        {"weights_backbone": "DEFAULT"},
        {"Weights": None},
        {"file": "x"},
        {"f": "x"},
        {"path": "x"},
        {"url": "x"},
        {"model_dir": "x"},
        {"cache_dir": "x"},
        {"hf_hub_id": "x"},
        {"drop_path_rate": "x"},  # a rate must be a number
        {"cfg": {"layers": [{"init": {"checkpoint_path": "x"}}]}},
        {"act_layer": "../../etc/passwd"},
        {"act_layer": "http://example.com/x"},
        {"act_layer": "~/.ssh/id_rsa"},
        {"act_layer": b"gelu"},
        {"layers": {1, 2}},
        {"cfg": {1: 2}},
        {"deep": json.loads("[" * 40 + "]" * 40)},
    ],
    ids=lambda kw: next(iter(kw)),
)
def test_kwargs_that_could_load_anything_or_are_not_json_are_refused(
    kwargs: dict[str, Any],
) -> None:
    with pytest.raises(PrunepilotError, match="kwargs"):
        check_kwargs(kwargs)
    with pytest.raises(PrunepilotError, match="kwargs"):  # for every source
        build_source(f"{_MOD}:small", kwargs, allow=_ALL)


def test_plain_kwargs_pass() -> None:
    kw = {"num_classes": 10, "drop_path_rate": 0.1, "act_layer": "gelu", "dims": [1, 2.5]}
    assert check_kwargs(kw) == kw
    assert check_kwargs(None) == {}
    assert _on_meta("timm:resnet18", {"num_classes": 3, "drop_path_rate": 0.1}).fc.out_features == 3


def test_timm_checkpoint_path_is_refused_before_the_file_is_read(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pth"
    payload.write_bytes(pickle.dumps(_MakeDir(marker)))
    for source, kwargs in [
        ("timm:resnet18", {"checkpoint_path": str(payload)}),
        ("torchvision:resnet18", {"weights": str(payload)}),
    ]:
        with pytest.raises(PrunepilotError, match="kwargs"):
            _on_meta(source, kwargs)
    assert not marker.exists()


def _checkpoint(path: Path, source: str, **meta: str) -> Path:
    torch.manual_seed(0)
    model = rf.small()
    values = {
        "format": "prunepilot/1",
        "source": source,
        "kwargs": "{}",
        "shapes": json.dumps({k: list(v.shape) for k, v in model.state_dict().items()}),
    }
    values.update(meta)
    save_file(model.state_dict(), str(path), metadata=values)
    return path


def test_load_refuses_an_untrusted_factory_and_says_how_to_allow_it(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "m.safetensors", f"{_MOD}:small")
    with pytest.raises(UntrustedSourceError) as info:
        pp.load(path)
    msg = str(info.value)
    assert f"{_MOD}:small" in msg and "allow=" in msg and "factory=" in msg
    assert isinstance(pp.load(path, allow=[f"{_MOD}:*"]), rf.Small)
    assert isinstance(pp.load(path, allow=f"{_MOD}:small"), rf.Small)


def test_load_with_a_factory_ignores_the_named_source(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "m.safetensors", "tests.core._resolve_untouched:net")
    loaded = pp.load(path, factory=rf.Small)
    assert isinstance(loaded, rf.Small)
    torch.manual_seed(0)
    assert torch.equal(loaded.fc.weight, rf.small().fc.weight)  # the file's weights
    assert "tests.core._resolve_untouched" not in sys.modules


def test_load_checks_a_factory_s_kwargs_too(tmp_path: Path) -> None:
    path = _checkpoint(tmp_path / "m.safetensors", f"{_MOD}:small", kwargs='{"path": "x"}')
    with pytest.raises(PrunepilotError, match=r"kwargs\.path is refused"):
        pp.load(path, factory=rf.small)


@pytest.mark.parametrize(
    ("meta", "match"),
    [
        ({"kwargs": "{not json"}, "unreadable 'kwargs'"),
        ({"kwargs": "[1]"}, "malformed 'kwargs'"),
        ({"shapes": json.dumps({"fc.weight": [1 << 20, 1 << 20]})}, "do not back"),
        ({"shapes": json.dumps({"fc.extra": [1 << 30]})}, "do not back"),
        ({"shapes": json.dumps({"fc.weight": ["2", 4]})}, "do not back"),
        ({"num_features": json.dumps({"fc": "x"})}, "malformed num_features"),
    ],
)
def test_load_refuses_metadata_the_file_does_not_back(
    tmp_path: Path, meta: dict[str, str], match: str
) -> None:
    path = _checkpoint(tmp_path / "m.safetensors", f"{_MOD}:small", **meta)
    with pytest.raises(PrunepilotError, match=match):
        pp.load(path, allow=f"{_MOD}:*")


def test_save_refuses_a_factory_load_could_not_name(tmp_path: Path) -> None:
    for factory in (rf.Outer.Inner, lambda: rf.Small()):
        with pytest.raises(PrunepilotError, match="nested or private"):
            pp.save(rf.small(), tmp_path / "m.safetensors", source=factory)
