"""measure_latency and latency_inputs: sane statistics, a private copy, target settings."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from prunepilot.core import PrunepilotError
from prunepilot.search import (
    LatencyError,
    LatencyStats,
    LatencyTarget,
    latency_inputs,
    measure_latency,
    measure_relative,
)
from prunepilot.search.latency._measure import (
    MIN_CUDA_WARMUP,
    _time_cpu,
    _time_cuda,
    _timer,
    time_calls,
)

FAST = {"warmup": 1, "repeats": 3}


class Recorder(nn.Module):
    """Conv + BN that records what its forward saw (class-level, so copies share it)."""

    seen: ClassVar[list[dict[str, object]]] = []

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Recorder.seen.append(
            {
                "threads": torch.get_num_threads(),
                "x_dtype": x.dtype,
                "w_dtype": self.conv.weight.dtype,
                "batch": x.shape[0],
                "x_cl": x.is_contiguous(memory_format=torch.channels_last),
                "w_cl": self.conv.weight.is_contiguous(memory_format=torch.channels_last),
                "training": self.training,
            }
        )
        return self.bn(self.conv(x))


class Crashes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom in forward")


class Inverts(nn.Module):
    """Uses an op without a CPU fp16 kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.inv(self.fc(x).reshape(-1, 2, 2))


class KwModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.fc(a) + b


@pytest.fixture(autouse=True)
def _clear_recorder() -> None:
    Recorder.seen.clear()


def test_stats_are_sane() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))  # materialise the lazy layer
    stats = measure_latency(
        model, torch.randn(1, 3, 8, 8), LatencyTarget(threads=1), warmup=1, repeats=7
    )
    assert isinstance(stats, LatencyStats)
    assert stats.runs == 7
    assert stats.device == "cpu"
    assert 0 < stats.min_ms <= stats.p10_ms <= stats.median_ms <= stats.p90_ms
    assert stats.mean_ms > 0 and stats.std_ms >= 0
    assert stats.spread == pytest.approx((stats.p90_ms - stats.p10_ms) / stats.median_ms)
    assert "ms" in str(stats)


def test_target_defaults_for_warmup_and_repeats() -> None:
    stats = measure_latency(nn.Linear(4, 2), torch.randn(1, 4), LatencyTarget(repeats=4, warmup=0))
    assert stats.runs == 4


def test_model_is_not_modified() -> None:
    model = Recorder().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    target = LatencyTarget(dtype="bf16", memory_format="channels_last", threads=1, batch_size=3)
    measure_latency(model, torch.randn(1, 3, 6, 6), target, **FAST)
    assert model.training and model.bn.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert after[k].dtype == v.dtype
        assert torch.equal(after[k], v), k  # BN running stats untouched too
    assert not model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert Recorder.seen  # the copy ran, in eval mode
    assert all(not s["training"] for s in Recorder.seen)


def test_threads_are_set_and_restored() -> None:
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    measure_latency(Recorder(), torch.randn(1, 3, 6, 6), LatencyTarget(threads=want), **FAST)
    assert {s["threads"] for s in Recorder.seen} == {want}
    assert torch.get_num_threads() == before


def test_threads_restored_after_an_error() -> None:
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    with pytest.raises(LatencyError):
        measure_latency(Crashes(), torch.randn(1, 4), LatencyTarget(threads=want), **FAST)
    assert torch.get_num_threads() == before


def test_bf16_cast_and_batch_on_cpu() -> None:
    target = LatencyTarget(dtype="bf16", batch_size=5, threads=1)
    measure_latency(Recorder(), torch.randn(1, 3, 6, 6), target, **FAST)
    assert Recorder.seen
    for s in Recorder.seen:
        assert s["x_dtype"] == torch.bfloat16 and s["w_dtype"] == torch.bfloat16
        assert s["batch"] == 5


def test_channels_last() -> None:
    target = LatencyTarget(memory_format="channels_last", threads=1)
    measure_latency(Recorder(), torch.randn(2, 3, 6, 6), target, **FAST)
    assert Recorder.seen
    assert all(s["x_cl"] and s["w_cl"] for s in Recorder.seen)


def test_crashing_model_raises_latency_error() -> None:
    with pytest.raises(LatencyError, match="boom in forward") as info:
        measure_latency(Crashes(), torch.randn(1, 4), LatencyTarget(threads=1), **FAST)
    assert isinstance(info.value, PrunepilotError)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_fp16_on_cpu_reports_the_op() -> None:
    with pytest.raises(LatencyError, match="fp16"):
        measure_latency(Inverts(), torch.randn(2, 4), LatencyTarget(dtype="fp16"), **FAST)


def test_not_a_module() -> None:
    with pytest.raises(LatencyError, match=r"nn\.Module"):
        measure_latency(lambda x: x, torch.randn(1, 4))  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_unavailable() -> None:
    with pytest.raises(LatencyError, match="CUDA"):
        measure_latency(nn.Linear(4, 2), torch.randn(1, 4), LatencyTarget(device="cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_alias_unavailable_too() -> None:
    with pytest.raises(LatencyError, match="needs CUDA"):
        measure_latency(nn.Linear(4, 2), torch.randn(1, 4), LatencyTarget(device="cuda:0"))


def test_runs_are_timed_by_the_device_s_clock() -> None:
    assert _timer(torch.device("cpu")) is _time_cpu
    assert _timer(torch.device("cuda", 0)) is _time_cuda
    assert _timer(torch.device("cuda")) is _time_cuda


def test_cpu_runs_exactly_the_warmup_and_repeats_asked() -> None:
    calls: list[int] = []
    times = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=0, repeats=4)
    assert len(times) == 4 and len(calls) == 4 and all(t >= 0 for t in times)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (no GPU here)")


@needs_cuda
def test_cuda_measurement() -> None:
    model = Recorder()
    own = f"cuda:{torch.cuda.current_device()}"
    for name in ("cuda", "cuda:0"):  # the same device: the process's own GPU
        target = LatencyTarget(device=name, dtype="fp16", batch_size=4, warmup=2, repeats=5)
        stats = measure_latency(model, torch.randn(1, 3, 16, 16), target)
        assert stats.device == own and stats.runs == 5 and stats.median_ms > 0
    assert next(model.parameters()).device.type == "cpu"


@needs_cuda
def test_cuda_timing_always_warms_up() -> None:
    calls: list[int] = []
    x = torch.randn(8, 8, device="cuda")
    times = time_calls(lambda: calls.append(1) or x @ x, x.device, warmup=0, repeats=3)
    assert len(times) == 3 and len(calls) == MIN_CUDA_WARMUP + 3 and min(times) > 0


class Sleeps(nn.Module):
    """Queues a GPU kernel that spins for ``cycles`` and returns at once on the host."""

    def __init__(self, cycles: int) -> None:
        super().__init__()
        self.cycles = cycles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.cuda._sleep(self.cycles)
        return x


@needs_cuda
def test_cuda_timing_counts_asynchronous_kernels() -> None:
    # the host returns from forward at once; only GPU-side timing sees the queued kernel
    x = torch.randn(1, 4)
    target = LatencyTarget(device="cuda", warmup=1, repeats=5)
    idle = measure_latency(Sleeps(0), x, target).median_ms
    busy = measure_latency(Sleeps(50_000_000), x, target).median_ms  # tens of ms on any GPU
    assert busy > 10 * max(idle, 0.01)


@needs_cuda
def test_first_cuda_measurement_is_not_inflated_by_first_use() -> None:
    # a fresh model and shape: lazy kernel loading and cuDNN set-up must not be timed
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3))
    target = LatencyTarget(device="cuda", warmup=0, repeats=20)
    first = measure_latency(model, torch.randn(1, 3, 61, 61), target).median_ms
    again = measure_latency(model, torch.randn(1, 3, 61, 61), target).median_ms
    assert first < 3 * again


def test_keyword_inputs() -> None:
    stats = measure_latency(
        KwModel(), {"a": torch.randn(1, 4), "b": torch.randn(1, 2)}, LatencyTarget(batch_size=3)
    )
    assert stats.runs == LatencyTarget().repeats


def test_latency_inputs_tuple() -> None:
    x = torch.arange(6.0).reshape(1, 6)
    y = torch.tensor([[1, 2], [3, 4], [5, 6]])
    out = latency_inputs((x, y, 7, torch.tensor(2.0)), 4)
    assert isinstance(out, tuple) and len(out) == 4
    assert out[0].shape == (4, 6) and out[0].dtype == torch.float32
    assert torch.equal(out[0], x.expand(4, 6))
    assert out[1].shape == (4, 2) and out[1].dtype == torch.int64
    assert torch.equal(out[1], torch.tensor([[1, 2], [3, 4], [5, 6], [1, 2]]))
    assert out[2] == 7 and out[3].ndim == 0


def test_latency_inputs_dict_and_slicing() -> None:
    inputs = {"ids": torch.ones(8, 5, dtype=torch.long), "mask": torch.ones(8, 5, dtype=torch.bool)}
    out = latency_inputs(inputs, 2)
    assert isinstance(out, dict) and set(out) == {"ids", "mask"}
    assert out["ids"].shape == (2, 5) and out["ids"].dtype == torch.long
    assert out["mask"].dtype == torch.bool
    single = torch.randn(3, 3)
    assert latency_inputs(single, 3) is single
    assert latency_inputs([torch.randn(1, 2)], 2)[0].shape == (2, 2)
    with pytest.raises(LatencyError):
        latency_inputs(single, 0)


class Tagged(nn.Module):
    """Logs its tag on every call (class-level, so the private copies log too)."""

    calls: ClassVar[list[str]] = []

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Tagged.calls.append(self.tag)
        return self.lin(x)


def _blocks(calls: list[str]) -> list[str]:
    """The tags of consecutive runs of the same model."""
    return [tag for i, tag in enumerate(calls) if i == 0 or calls[i - 1] != tag]


def test_relative_measurement_interleaves_and_compares() -> None:
    # what the code does, not how fast: timing claims belong in the benchmarks
    Tagged.calls.clear()
    target = LatencyTarget(threads=1, warmup=1, repeats=6)
    x = torch.randn(1, 4)
    small, ref = measure_relative(Tagged("m"), Tagged("r"), x, target, rounds=3)
    assert small.runs == 6 and ref.runs == 6
    # a first run of each, then rounds that flip the order: m r | r m | m r
    assert _blocks(Tagged.calls) == ["m", "r", "m", "r", "m", "r"]
    assert Tagged.calls[:2] == ["m", "r"]
    # each: the first run, one warm-up per round, and its timed runs
    assert Tagged.calls.count("m") == Tagged.calls.count("r") == 1 + 3 + 6
    Tagged.calls.clear()
    same, ref2 = measure_relative(Tagged("m"), Tagged("r"), x, target, repeats=9, rounds=3)
    assert same.runs == ref2.runs == 9
    half = ref.scaled(0.5)
    assert half.median_ms == pytest.approx(ref.median_ms / 2) and half.runs == ref.runs
    with pytest.raises(LatencyError, match="rounds >= 1"):
        measure_relative(Tagged("m"), Tagged("r"), x, target, rounds=0)
