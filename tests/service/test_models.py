"""Model resolution: names, allowlist, weights; untrusted uploads are loaded only by runners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from prunepilot.demo.models import digits_cnn
from prunepilot.service import ModelSpec, Settings, _model_source, _runner
from prunepilot.service.errors import ForbiddenError, InvalidSpecError

from ._rows import upload_row


def _cfg(tmp: Path, **kw: Any) -> Settings:
    cfg = Settings(data_dir=tmp, tokens={"token-12345": "t"}, **kw)
    cfg.ensure_dirs()
    return cfg


def test_untrusted_upload_is_checked_without_loading_and_built_only_by_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path, allow_untrusted_models=True)
    uid = "d" * 24
    torch.save(digits_cnn(width=8), cfg.uploads_path / uid)
    uploads = {uid: upload_row(uid, "pickle")}.get
    spec = ModelSpec(source=f"upload:{uid}", input_shape=(1, 8, 8))

    def no_load(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the API process must not unpickle uploads")

    with monkeypatch.context() as m:
        m.setattr(torch, "load", no_load)
        _model_source.check(spec, cfg, uploads, (1, 8, 8), 10)
    built = _model_source.resolve(spec, cfg, uploads, meta=False)
    assert built.source == "prunepilot.demo.models:DigitsCNN"
    assert built.note and "original code" in built.note
    assert built.model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ForbiddenError, match="ALLOW_UNTRUSTED"):
        _model_source.check(spec, _cfg(tmp_path / "strict"), uploads, (1, 8, 8), 10)


def test_pt2_upload_builds_a_graph_module(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, allow_untrusted_models=True)
    uid = "e" * 24
    model = digits_cnn(width=8).eval()
    program = torch.export.export(model, (torch.zeros(1, 1, 8, 8),))
    with (cfg.uploads_path / uid).open("wb") as f:
        torch.export.save(program, f)
    spec = ModelSpec(source=f"upload:{uid}", input_shape=(1, 8, 8))
    built = _model_source.resolve(spec, cfg, {uid: upload_row(uid, "pt2")}.get, meta=False)
    x = torch.randn(1, 1, 8, 8)
    assert torch.allclose(built.model(x), model(x), atol=1e-5)


def test_names_allowlist_and_weights(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, model_allowlist=("prunepilot.demo.models:digits_*",))
    none: Any = lambda _: None  # noqa: E731
    ok = ModelSpec(
        source="torchvision:mobilenet_v3_small",
        kwargs={"num_classes": 10},
        input_shape=(3, 32, 32),
    )
    _model_source.check(ok, cfg, none, (3, 32, 32), 10)
    with pytest.raises(InvalidSpecError, match="timm has no model"):
        _model_source.check(
            ModelSpec(source="timm:not_a_net", input_shape=(3, 8, 8)), cfg, none, (3, 8, 8), None
        )
    with pytest.raises(ForbiddenError, match="not allowed"):
        _model_source.check(
            ModelSpec(source="prunepilot.demo.models:DigitsCNN", input_shape=(1, 8, 8)),
            cfg,
            none,
            (1, 8, 8),
            None,
        )
    uid = "f" * 24
    state = digits_cnn(width=8).state_dict()
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(cfg.uploads_path / uid))
    spec = ModelSpec(
        source="prunepilot.demo.models:digits_cnn",
        kwargs={"width": 8},
        weights=uid,
        input_shape=(1, 8, 8),
    )
    with pytest.raises(InvalidSpecError, match=r"missing keys \['head.bias'\].*unexpected keys"):
        _model_source.check(spec, cfg, {uid: upload_row(uid, "safetensors")}.get, (1, 8, 8), 10)


def test_onnx_export_failure_is_recorded_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", fail)
    out = _runner._export_onnx(digits_cnn(width=8), torch.zeros(1, 1, 8, 8), tmp_path / "m.onnx")
    assert out["exported"] is False and "unsupported operator" in out["error"]


def test_meta_and_real_resolution_build_the_same_model(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    source = "prunepilot.demo.models:digits_cnn"
    spec = ModelSpec(source=source, kwargs={"width": 8}, input_shape=[1, 8, 8])
    on_meta = _model_source.resolve(spec, cfg, lambda _: None, meta=True)
    real = _model_source.resolve(spec, cfg, lambda _: None, meta=False)
    assert on_meta is not None and next(on_meta.model.parameters()).is_meta
    assert not next(real.model.parameters()).is_meta
    shapes = {k: v.shape for k, v in real.model.state_dict().items()}
    assert {k: v.shape for k, v in on_meta.model.state_dict().items()} == shapes
    assert (on_meta.source, on_meta.kwargs) == (real.source, real.kwargs)
