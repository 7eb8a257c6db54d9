"""Datasets resolved to loaders: built-ins, safetensors uploads, ImageFolder dirs and archives."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from prunepilot.service import DatasetSpec, Settings
from prunepilot.service._datasets import resolve
from prunepilot.service.errors import InvalidSpecError

from ._rows import upload_row


def _settings(tmp: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp / "data", tokens={"token-12345": "t"}, **kw)  # type: ignore[arg-type]


def _images(root: Path, classes: int = 2, per: int = 6, size: int = 12) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per):
            arr = rng.integers(0, 255, (size, size + 2, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{i}.png")


def test_digits_split_resize_and_normalise(tmp_path: Path) -> None:
    cfg = _settings(tmp_path)
    spec = DatasetSpec(
        source="builtin:digits",
        limit=200,
        image_size=16,
        channels=3,
        mean=(0.5,),
        std=(0.25,),
        batch_size=32,
    )
    info = resolve(spec, cfg, lambda _: None, meta=True)
    assert info.sample_shape == (3, 16, 16) and info.num_classes == 10
    data = resolve(spec, cfg, lambda _: None, meta=False, work_dir=tmp_path)
    assert data.sample_shape == (3, 16, 16) and data.num_classes == 10
    assert sum(data.sizes.values()) == 200 and data.sizes["val"] == 40
    x, y = next(iter(data.train))
    assert x.shape == (32, 3, 16, 16) and y.dtype == torch.long
    assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6
    # train reshuffles each pass; val is stable
    assert not torch.equal(next(iter(data.train))[1], next(iter(data.train))[1])
    assert torch.equal(next(iter(data.val))[1], next(iter(data.val))[1])


def test_fashion_mnist_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import prunepilot.service._datasets as ds

    monkeypatch.setattr(ds, "_fashion_root", lambda _s: None)
    with pytest.raises(InvalidSpecError, match="not installed"):
        resolve(
            DatasetSpec(source="builtin:fashion-mnist"),
            _settings(tmp_path),
            lambda _: None,
            meta=True,
        )


def test_safetensors_upload(tmp_path: Path) -> None:
    cfg = _settings(tmp_path)
    cfg.ensure_dirs()
    uid = "a" * 24
    save_file(
        {"inputs": (torch.rand(50, 8, 8) * 255).to(torch.uint8), "labels": torch.arange(50) % 5},
        str(cfg.uploads_path / uid),
    )
    uploads = {uid: upload_row(uid, "safetensors")}
    spec = DatasetSpec(source=f"upload:{uid}", batch_size=8)
    assert resolve(spec, cfg, uploads.get, meta=True).sample_shape == (1, 8, 8)
    data = resolve(spec, cfg, uploads.get, meta=False, work_dir=tmp_path)
    assert data.num_classes == 5 and data.sample_shape == (1, 8, 8)
    assert 0.0 <= float(next(iter(data.train))[0].max()) <= 1.0
    bad = "b" * 24
    save_file({"x": torch.zeros(3)}, str(cfg.uploads_path / bad))
    with pytest.raises(InvalidSpecError, match="'inputs' and 'labels'"):
        rows = {bad: upload_row(bad, "safetensors")}
        resolve(DatasetSpec(source=f"upload:{bad}"), cfg, rows.get, meta=True)


def test_image_folder_dir_and_archive(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _images(root / "set" / "train")
    cfg = _settings(tmp_path, data_root=root)
    spec = DatasetSpec(source="dir:set", batch_size=4, channels=1)
    info = resolve(spec, cfg, lambda _: None, meta=True)
    assert info.sample_shape == (1, 12, 14) and info.num_classes == 2
    data = resolve(spec, cfg, lambda _: None, meta=False, work_dir=tmp_path / "w1")
    assert data.sample_shape == (1, 12, 14) and sum(data.sizes.values()) == 12
    with pytest.raises(InvalidSpecError, match="outside the server's data root"):
        resolve(DatasetSpec(source="dir:../"), cfg, lambda _: None, meta=True)
    with pytest.raises(InvalidSpecError, match="data root"):
        resolve(spec, _settings(tmp_path), lambda _: None, meta=True)

    cfg.ensure_dirs()
    uid = "c" * 24
    with zipfile.ZipFile(cfg.uploads_path / uid, "w") as zf:
        for p in sorted((root / "set").rglob("*.png")):
            zf.write(p, str(p.relative_to(root)))
    uploads = {uid: upload_row(uid, "archive")}
    spec = DatasetSpec(source=f"upload:{uid}", image_size=8, batch_size=4)
    assert resolve(spec, cfg, uploads.get, meta=True) == resolve(spec, cfg, uploads.get, meta=True)
    assert resolve(spec, cfg, uploads.get, meta=True).sample_shape == (3, 8, 8)
    work = tmp_path / "w2"
    work.mkdir()
    data = resolve(spec, cfg, uploads.get, meta=False, work_dir=work)
    assert data.sample_shape == (3, 8, 8) and data.num_classes == 2
    assert (work / "data" / "set" / "train" / "class1").is_dir()


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _images(root / "set", size=12)  # 12x14 = 168 pixels each
    cfg = _settings(tmp_path, data_root=root, max_image_pixels=100)
    with pytest.raises(
        InvalidSpecError, match=r"'class0/0.png' is 14x12 = 168 pixels, over .* 100 "
    ):
        resolve(DatasetSpec(source="dir:set"), cfg, lambda _: None, meta=True)
    # with image_size the submit check does not open images; the runner refuses them
    spec = DatasetSpec(source="dir:set", image_size=8)
    assert resolve(spec, cfg, lambda _: None, meta=True).sample_shape == (3, 8, 8)
    with pytest.raises(
        InvalidSpecError, match=r"'class0/0.png' is 14x12 = 168 pixels, over .* 100 "
    ):
        resolve(spec, cfg, lambda _: None, meta=False, work_dir=tmp_path / "w")
    (root / "set" / "class0" / "0.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n")
    with pytest.raises(InvalidSpecError, match=r"cannot read image 'class0/0.png' \(PNG, JPEG"):
        resolve(
            DatasetSpec(source="dir:set"),
            _settings(tmp_path, data_root=root),
            lambda _: None,
            meta=True,
        )


def test_a_prepared_dataset_unpickles_on_a_worker_without_the_service(tmp_path: Path) -> None:
    # batches travel to Ray workers inside a workload: unpickling them there must import
    # nothing of the service (FastAPI, SQLAlchemy), only the search that feeds models
    import pickle
    import subprocess
    import sys

    spec = DatasetSpec(source="builtin:digits", limit=100, batch_size=16)
    data = resolve(spec, _settings(tmp_path), lambda _: None, meta=False, work_dir=tmp_path)
    code = (
        "import pickle, sys; b = pickle.loads(sys.stdin.buffer.read()); n = len(list(b));"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'sqlalchemy')"
        " or m.startswith('prunepilot.service')]; print(n, sorted(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps((data.train, data.score, data.val)),
        capture_output=True,
        check=True,
    )
    assert out.stdout.decode().strip() == "3 []", out.stderr.decode()[-2000:]
