"""Datasets a job can name, resolved to in-memory tensors and re-iterable batch loaders.

`resolve` is the one resolver: it finds the source the same way in both places (`_locate`:
known built-in, installed, upload of a dataset kind, directory under the data root), then

* with ``meta=True`` (API process, at submit time) reads headers only: the archive is safe,
  and which sample shape and class count the data will yield (`DatasetInfo`), so a job
  whose data cannot fit its model is refused before it is queued;
* with ``meta=False`` (job runner) loads the samples, subsamples, converts channels,
  resizes, normalises and splits them into train / score / validation loaders (`Prepared`).

Sources: ``builtin:digits`` (scikit-learn, no download), ``builtin:fashion-mnist``
(torchvision's files under the data root or ``benchmarks/.cache/data``; never downloaded),
``upload:ID`` (safetensors with ``inputs`` and ``labels``, or a zip/tar ImageFolder) and
``dir:PATH`` (an ImageFolder directory under the operator's data root).
"""

from __future__ import annotations

import importlib
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import numpy as np
import torch
import torch.nn.functional as F

from prunepilot.schemas import DatasetSpec
from prunepilot.search import TensorBatches

from ._archives import IMAGE_SUFFIXES, extract, open_member, scan
from ._images import decode, image_size
from ._rows import UploadRow
from ._settings import Settings
from .errors import ArchiveError, InvalidSpecError

__all__ = ["DatasetInfo", "Prepared", "resolve"]

log = logging.getLogger("prunepilot.service")

UploadLookup = Callable[[str], UploadRow | None]

_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_BUILTINS = ("digits", "fashion-mnist")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset will yield, known before loading it.

    Attributes:
        sample_shape: one prepared sample's shape (no batch dimension).
        num_classes: label classes (``None`` when unknown until loading).
    """

    sample_shape: tuple[int, ...]
    num_classes: int | None


@dataclass
class Prepared:
    """A loaded, split dataset.

    Attributes:
        train: training batches (shuffled): fine-tuning, calibration, BatchNorm.
        score: held-out batches candidates are scored on during the search.
        val: validation batches the finalists are chosen on.
        sample_shape: one sample's shape.
        num_classes: label classes.
        sizes: samples per split.
    """

    train: TensorBatches
    score: TensorBatches
    val: TensorBatches
    sample_shape: tuple[int, ...]
    num_classes: int
    sizes: dict[str, int]


# ---------------------------------------------------------------------------- helpers


def _fashion_root(settings: Settings) -> Path | None:
    roots: list[Path] = []
    if settings.data_root is not None:
        roots.append(settings.data_root.expanduser())
    roots.append(settings.data_dir.expanduser() / "datasets")
    roots.append(Path(__file__).resolve().parents[2] / "benchmarks" / ".cache" / "data")
    for root in roots:
        raw = root / "FashionMNIST" / "raw"
        if all((raw / f).is_file() for f in _FASHION_FILES):
            return root
    return None


def _out_shape(spec: DatasetSpec, channels: int, hw: tuple[int, int]) -> tuple[int, ...]:
    if spec.channels is not None and spec.channels != channels and channels not in (1, 3):
        raise InvalidSpecError(
            f"the inputs have {channels} channels; only 1- and 3-channel images convert to "
            f"dataset.channels={spec.channels}"
        )
    c = spec.channels or channels
    h, w = (spec.image_size, spec.image_size) if spec.image_size else hw
    return (c, h, w)


def _check_norm(spec: DatasetSpec, channels: int) -> None:
    for name, vals in (("mean", spec.mean), ("std", spec.std)):
        if vals is not None and len(vals) not in (1, channels):
            raise InvalidSpecError(
                f"dataset.{name} has {len(vals)} values but the inputs have {channels} "
                "channels; give one value or one per channel"
            )


def _upload(uploads: UploadLookup, upload_id: str) -> UploadRow:
    row = uploads(upload_id)
    if row is None:
        raise InvalidSpecError(
            f"unknown upload id {upload_id!r}; upload the file with POST /uploads"
        )
    return row


def _dir_root(settings: Settings, rel: str) -> Path:
    if settings.data_root is None:
        raise InvalidSpecError(
            "dir: datasets are disabled: the operator has not set a data root "
            "(PRUNEPILOT_DATA_ROOT)"
        )
    root = settings.data_root.expanduser().resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise InvalidSpecError(
            f"dir:{rel} is outside the server's data root; name a path inside it"
        )
    if not path.is_dir():
        raise InvalidSpecError(f"dir:{rel} is not a directory under the server's data root")
    return path


def _image_folder(paths: Sequence[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and ``(path, class index)`` of image paths laid out as ImageFolder.

    The class is the first directory under the deepest common prefix shared by all images
    (so both ``cat/1.png`` and ``train/cat/1.png`` work).
    """
    images = [p for p in paths if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    images = [p for p in images if not any(part.startswith(".") for part in p.split("/"))]
    if not images:
        raise InvalidSpecError(
            "no images found: an ImageFolder holds CLASS/IMAGE files "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    split = [p.split("/") for p in images]
    prefix = 0
    while all(len(s) > prefix + 2 for s in split) and len({s[prefix] for s in split}) == 1:
        prefix += 1
    if any(len(s) < prefix + 2 for s in split):
        raise InvalidSpecError(
            "images must sit in one directory per class (CLASS/IMAGE); found images outside "
            "any class directory"
        )
    classes = sorted({s[prefix] for s in split})
    index = {c: i for i, c in enumerate(classes)}
    items = sorted((p, index[s[prefix]]) for p, s in zip(images, split, strict=True))
    return classes, items


def _archive_image_size(path: Path, name: str, max_pixels: int, max_files: int) -> tuple[int, int]:
    """``(height, width)`` of an archive member from its header (the member is streamed)."""
    try:
        with open_member(path, name, max_files=max_files) as f:
            return image_size(f, name, max_pixels)
    except ArchiveError as e:
        raise InvalidSpecError(str(e)) from e


def _file_image_size(path: Path, name: str, max_pixels: int) -> tuple[int, int]:
    with path.open("rb") as f:
        return image_size(f, name, max_pixels)


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise InvalidSpecError(f"cannot read the safetensors file: {e}") from e


# ---------------------------------------------------------------------------- locate


@dataclass(frozen=True)
class _Located:
    """A dataset source found and allowed: what it is and where.

    Attributes:
        kind: ``digits``, ``fashion-mnist``, ``safetensors`` or ``archive`` (uploads), ``dir``.
        name: the source without its prefix, for messages.
        path: the upload's file, the ImageFolder directory or FashionMNIST's root.
    """

    kind: Literal["digits", "fashion-mnist", "safetensors", "archive", "dir"]
    name: str
    path: Path | None = None


def _locate(spec: DatasetSpec, settings: Settings, uploads: UploadLookup) -> _Located:
    """Find the source a spec names (no data read).

    Raises:
        InvalidSpecError: unknown built-in, not installed, unknown upload or one that is not
            a dataset, path outside the data root.
    """
    kind, _, rest = spec.source.partition(":")
    if kind == "builtin":
        if rest == "digits":
            return _Located("digits", rest)
        if rest == "fashion-mnist":
            root = _fashion_root(settings)
            if root is None:
                raise InvalidSpecError(
                    "builtin:fashion-mnist is not installed on this server: put torchvision's "
                    "FashionMNIST/raw files under the data root (the server never downloads)"
                )
            return _Located("fashion-mnist", rest, root)
        raise InvalidSpecError(
            f"unknown built-in dataset {rest!r}; available: "
            + ", ".join(f"builtin:{b}" for b in _BUILTINS)
        )
    if kind == "upload":
        row = _upload(uploads, rest)
        path = settings.uploads_path / row.path
        if row.kind == "safetensors":
            return _Located("safetensors", rest, path)
        if row.kind == "archive":
            return _Located("archive", rest, path)
        raise InvalidSpecError(
            f"upload {rest} is a {row.kind} file, not a dataset: upload a safetensors file "
            "with 'inputs' and 'labels', or a zip/tar ImageFolder archive"
        )
    if kind == "dir":
        return _Located("dir", rest, _dir_root(settings, rest))
    # the schema validator rejects other prefixes
    raise InvalidSpecError(f"unsupported dataset source {spec.source!r}")


# ---------------------------------------------------------------------------- meta


def _info(src: _Located, spec: DatasetSpec, settings: Settings) -> DatasetInfo:
    """What the data will yield, from headers alone."""
    if src.kind == "digits":
        info = DatasetInfo(_out_shape(spec, 1, (8, 8)), 10)
    elif src.kind == "fashion-mnist":
        info = DatasetInfo(_out_shape(spec, 1, (28, 28)), 10)
    elif src.kind == "safetensors":
        assert src.path is not None
        shapes = _safetensors_shapes(src.path)
        if "inputs" not in shapes or "labels" not in shapes:
            raise InvalidSpecError(
                f"upload {src.name} must hold tensors 'inputs' and 'labels'; it has "
                f"{sorted(shapes)[:10]}"
            )
        xs, ys = shapes["inputs"], shapes["labels"]
        if len(xs) not in (3, 4) or len(ys) != 1 or xs[0] != ys[0]:
            raise InvalidSpecError(
                f"upload {src.name}: 'inputs' must be [N, C, H, W] or [N, H, W] and 'labels' "
                f"[N]; got inputs {xs} and labels {ys}"
            )
        channels = 1 if len(xs) == 3 else xs[1]
        info = DatasetInfo(_out_shape(spec, channels, (xs[-2], xs[-1])), None)
    elif src.kind == "archive":
        assert src.path is not None
        try:
            summary = scan(
                src.path,
                max_files=settings.archive_max_files,
                max_bytes=settings.archive_max_bytes,
            )
        except ArchiveError as e:
            raise InvalidSpecError(f"upload {src.name}: {e}") from e
        classes, items = _image_folder([n for n, _ in summary.files])
        hw = (
            (spec.image_size, spec.image_size)
            if spec.image_size
            else _archive_image_size(
                src.path, items[0][0], settings.max_image_pixels, settings.archive_max_files
            )
        )
        info = DatasetInfo(_out_shape(spec, spec.channels or 3, hw), len(classes))
    else:  # dir
        root = src.path
        assert root is not None
        files = [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file()]
        classes, items = _image_folder(files)
        hw = (
            (spec.image_size, spec.image_size)
            if spec.image_size
            else _file_image_size(root / items[0][0], items[0][0], settings.max_image_pixels)
        )
        info = DatasetInfo(_out_shape(spec, spec.channels or 3, hw), len(classes))
    _check_norm(spec, info.sample_shape[0])
    return info


# ---------------------------------------------------------------------------- load


def _load_images(
    root: Path, spec: DatasetSpec, max_pixels: int
) -> tuple[torch.Tensor, torch.Tensor, int, tuple[int, int] | None]:
    files = [str(p.relative_to(root)) for p in sorted(root.rglob("*")) if p.is_file()]
    classes, items = _image_folder(files)
    if spec.limit is not None and len(items) > spec.limit:
        g = torch.Generator().manual_seed(spec.seed)
        keep = sorted(torch.randperm(len(items), generator=g)[: spec.limit].tolist())
        items = [items[i] for i in keep]
    mode = "L" if spec.channels == 1 else "RGB"
    size: tuple[int, int] | None = (spec.image_size, spec.image_size) if spec.image_size else None
    arrays = []
    for rel, _ in items:
        img = decode(root / rel, rel, max_pixels).convert(mode)
        if size is None:
            size = (img.size[1], img.size[0])
        if (img.size[1], img.size[0]) != size:
            img = img.resize((size[1], size[0]))
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays)).float() / 255.0
    y = torch.tensor([c for _, c in items], dtype=torch.long)
    return x, y, len(classes), size


def _raw(
    src: _Located, spec: DatasetSpec, settings: Settings, work_dir: Path
) -> tuple[torch.Tensor, torch.Tensor, int | None]:
    """Inputs as float [N, C, H, W] in their natural range, labels, classes if known."""
    if src.kind == "digits":
        d = importlib.import_module("sklearn.datasets").load_digits()
        x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
        return x, torch.tensor(d.target, dtype=torch.long), 10
    assert src.path is not None
    if src.kind == "fashion-mnist":
        from torchvision.datasets import FashionMNIST

        parts = [FashionMNIST(str(src.path), train=t, download=False) for t in (True, False)]
        x = torch.cat([p.data for p in parts])[:, None].float() / 255.0
        y = torch.cat([p.targets for p in parts]).long()
        return x, y, 10
    if src.kind == "safetensors":
        from safetensors.torch import load_file

        t = load_file(str(src.path))
        if "inputs" not in t or "labels" not in t:
            raise InvalidSpecError(f"upload {src.name} must hold tensors 'inputs' and 'labels'")
        x, y = t["inputs"], t["labels"]
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.float()
        if x.dim() == 3:
            x = x[:, None]
        if y.is_floating_point() and not torch.equal(y, y.round()):
            raise InvalidSpecError(f"upload {src.name}: 'labels' must be integer class indices")
        return x, y.long(), None
    if src.kind == "archive":
        dest = work_dir / "data"
        if not dest.is_dir():
            tmp = work_dir / "data.partial"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                extract(
                    src.path,
                    tmp,
                    max_files=settings.archive_max_files,
                    max_bytes=settings.archive_max_bytes,
                )
            except ArchiveError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise InvalidSpecError(f"upload {src.name}: {e}") from e
            tmp.rename(dest)
        x, y, n, _ = _load_images(dest, spec, settings.max_image_pixels)
        return x, y, n
    x, y, n, _ = _load_images(src.path, spec, settings.max_image_pixels)  # dir
    return x, y, n


def _transform(x: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    if spec.channels is not None and x.shape[1] != spec.channels:
        if spec.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif spec.channels == 1 and x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        else:
            raise InvalidSpecError(f"cannot convert {x.shape[1]}-channel inputs to {spec.channels}")
    if spec.image_size is not None and tuple(x.shape[-2:]) != (spec.image_size,) * 2:
        x = F.interpolate(x, size=(spec.image_size,) * 2, mode="bilinear", align_corners=False)
    if spec.mean is not None and spec.std is not None:
        c = x.shape[1]
        mean = torch.tensor(spec.mean).view(1, -1, 1, 1).expand(1, c, 1, 1)
        std = torch.tensor(spec.std).view(1, -1, 1, 1).expand(1, c, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


@overload
def resolve(
    spec: DatasetSpec, settings: Settings, uploads: UploadLookup, *, meta: Literal[True]
) -> DatasetInfo: ...


@overload
def resolve(
    spec: DatasetSpec,
    settings: Settings,
    uploads: UploadLookup,
    *,
    meta: Literal[False],
    work_dir: Path,
) -> Prepared: ...


def resolve(
    spec: DatasetSpec,
    settings: Settings,
    uploads: UploadLookup,
    *,
    meta: bool,
    work_dir: Path | None = None,
) -> DatasetInfo | Prepared:
    """The dataset a spec names: described from headers (``meta``) or loaded and split.

    Args:
        spec: the job's dataset section.
        settings: the settings in force.
        uploads: upload id -> row of the job's owner.
        meta: describe without loading (submit time): sample shape and classes.
            ``False``: load, subsample, convert and split (job runner).
        work_dir: the job's scratch directory (an archive is extracted there); needed
            unless ``meta``.

    Raises:
        InvalidSpecError: the data cannot be used as asked (the message says why): unknown
            built-in, not installed, unknown or unusable upload, unsafe archive, path
            outside the data root, bad normalisation values, too few samples.
    """
    src = _locate(spec, settings, uploads)
    if meta:
        return _info(src, spec, settings)
    if work_dir is None:
        raise TypeError("resolve(meta=False) needs the job's work_dir")
    return _prepare(src, spec, settings, work_dir)


def _prepare(src: _Located, spec: DatasetSpec, settings: Settings, work_dir: Path) -> Prepared:
    """Load, subsample, convert and split the dataset."""
    x, y, classes = _raw(src, spec, settings, work_dir)
    n = len(x)
    if spec.limit is not None and n > spec.limit:
        g = torch.Generator().manual_seed(spec.seed)
        keep = torch.randperm(n, generator=g)[: spec.limit].sort().values
        x, y, n = x[keep], y[keep], spec.limit
    if y.numel() and int(y.min()) < 0:
        raise InvalidSpecError("labels must be non-negative class indices")
    x = _transform(x, spec)
    _check_norm(spec, x.shape[1])
    num_classes = classes or (int(y.max()) + 1 if y.numel() else 0)
    g = torch.Generator().manual_seed(spec.seed)
    order = torch.randperm(n, generator=g)
    n_val = max(1, round(n * spec.val_fraction))
    rest = order[n_val:]
    n_score = max(1, round(len(rest) * spec.score_fraction))
    val_idx, score_idx, train_idx = order[:n_val], rest[:n_score], rest[n_score:]
    if len(train_idx) < 1:
        raise InvalidSpecError(
            f"the dataset has {n} samples: too few to split into train, score and validation "
            "sets; lower val_fraction/score_fraction or use more samples"
        )
    b = spec.batch_size
    return Prepared(
        train=TensorBatches(x[train_idx], y[train_idx], b, shuffle=True, seed=spec.seed),
        score=TensorBatches(x[score_idx], y[score_idx], b, shuffle=False),
        val=TensorBatches(x[val_idx], y[val_idx], b, shuffle=False),
        sample_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
        sizes={"train": len(train_idx), "score": len(score_idx), "val": len(val_idx)},
    )
