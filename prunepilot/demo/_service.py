"""``prunepilot demo``: the whole service on one machine, from a trained model to a pruned one.

It starts ``prunepilot serve`` as a subprocess on a free local port (SQLite and files in a
temporary directory, a local Ray, CPU only), and meanwhile trains the built-in
``digits_cnn`` on scikit-learn's bundled 8x8 digits for a few seconds, the way a user brings
a trained model. Then it uploads the weights, submits a job that prunes the model to half
its MACs and 70 % of its CPU latency at batch 64, follows the job, downloads the artifacts
(sha256 checked), loads the pruned checkpoint with `prunepilot.load`, and prints accuracy,
MACs, parameters and measured latency before and after. Finally it stops the server.

With ``--url`` (and a token) it starts nothing and runs the same job on that service, e.g.
a Compose cluster (``docker/smoke.sh`` does so); the latency budget is then measured on the
service's workers.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from prunepilot.client import Client, ClientError
from prunepilot.schemas import JobInfo, JobSpec, JobStatus

from ._timing import latency_ms
from .models import digits_cnn

__all__ = ["DigitsData", "digits_data", "run_demo", "start_server", "train"]

FACTORY = "prunepilot.demo.models:digits_cnn"
INPUT_SHAPE = (1, 8, 8)
LATENCY_BATCH = 64
LATENCY_THREADS = 1


class DigitsData:
    """scikit-learn's digits as the service's ``builtin:digits`` prepares them, split in two.

    Pixels are scaled to [0, 1] (``/ 16``) and samples are shuffled with
    ``torch.randperm(n, generator=manual_seed(seed))``, exactly as the service does, so the
    first ``round(n * val_fraction)`` samples here are the service's validation split for a
    job with the same ``seed`` and ``val_fraction``. The demo trains only on the rest, and
    the service fine-tunes only on its training split: the held-out split is never trained
    on (the service only chooses among its finalists with it).

    Attributes:
        x_train, y_train: the samples the user's model learns from.
        x_test, y_test: the held-out samples.
    """

    def __init__(self, val_fraction: float = 0.2, seed: int = 0) -> None:
        digits = importlib.import_module("sklearn.datasets").load_digits()  # untyped package
        x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, round(len(y) * val_fraction))
        test, train = order[:n_val], order[n_val:]
        self.x_train, self.y_train = x[train].contiguous(), y[train].contiguous()
        self.x_test, self.y_test = x[test].contiguous(), y[test].contiguous()


def digits_data(val_fraction: float = 0.2, seed: int = 0) -> DigitsData:
    """The demo's split of scikit-learn's digits (see `DigitsData`)."""
    return DigitsData(val_fraction, seed)


def train(model: nn.Module, data: DigitsData, epochs: int = 4, batch_size: int = 64) -> int:
    """Train ``model`` with Adam on the training split; returns the optimizer steps run.

    One torch thread: on a small, busy machine (the demo's server starts meanwhile) more
    threads only fight over the cores and run many times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    steps = 0
    model.train()
    try:
        for _ in range(epochs):
            order = torch.randperm(len(data.y_train), generator=g)
            for i in range(0, len(order) - batch_size + 1, batch_size):
                idx = order[i : i + batch_size]
                loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
    finally:
        torch.set_num_threads(threads)
        model.eval()
    return steps


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def start_server(
    data_dir: Path, token: str, *, port: int | None = None, log_path: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``prunepilot serve`` in a subprocess; yields its URL and process, then stops it.

    The server gets its own process group so stopping it also stops the local Ray it
    started. It is asked to stop with SIGINT (uvicorn's graceful shutdown), then SIGTERM,
    then SIGKILL.
    """
    port = port or free_port()
    log_path = log_path or data_dir / "server.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "prunepilot.client",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--token",
        f"{token}=demo",
        "--log-level",
        "info",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            yield f"http://127.0.0.1:{port}", proc
        finally:
            stop_server(proc)


def stop_server(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """Stop a server started by `start_server` and everything in its process group."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (Ray's processes)


def wait_ready(
    client: Client, proc: subprocess.Popen[bytes] | None, timeout: float, log_path: Path
) -> None:
    """Block until the server answers ``/readyz``; raise if it dies or takes too long.

    ``proc`` is the server we started, or ``None`` for a service started elsewhere.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise ClientError(f"the server exited with status {proc.returncode}:\n{tail}")
        if client.ready():
            return
        time.sleep(0.5)
    where = f"log: {log_path}" if proc is not None else client.url
    raise ClientError(f"the server was not ready after {timeout:g} s ({where})")


def _latency_ms(models: list[nn.Module], batch: torch.Tensor) -> list[float]:
    """Median CPU latency of each model on ``batch`` (interleaved, one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(LATENCY_THREADS)
    try:
        return latency_ms(models, batch, repeats=40, warmup=5)
    finally:
        torch.set_num_threads(threads)


def job_spec(weights_id: str, trials: int) -> dict[str, Any]:
    """The demo's job: the trained CNN on built-in digits, half the MACs, 70 % latency."""
    return {
        "name": "demo: digits_cnn to 50% MACs and 70% CPU latency",
        "model": {"source": FACTORY, "weights": weights_id, "input_shape": list(INPUT_SHAPE)},
        # seed and val_fraction as in digits_data(): the same held-out split
        "dataset": {"source": "builtin:digits", "batch_size": 64, "val_fraction": 0.2, "seed": 0},
        "constraints": {
            "macs": "50%",
            "latency_ms": "70%",
            "target": {
                "device": "cpu",
                "batch_size": LATENCY_BATCH,
                "threads": LATENCY_THREADS,
                "repeats": 25,
            },
        },
        "space": {"min_keep": 0.125, "step": 0.125},
        "search": {
            "trials": trials,
            "uniform_seeds": 3,
            "bn_batches": 4,
            "score_batches": 4,
            "top_k": 2,
        },
        "finetune": {"steps": 150, "lr": 0.01},
        "workers": 1,
    }


def _ratio(after: float, before: float) -> str:
    return f"{after / before:.2f}x" if before else "-"


def _server_latency(report: dict[str, Any]) -> tuple[float, float] | None:
    """The job's own median latencies (original, pruned) from its ``report.json``."""
    try:
        return (
            float(report["baseline"]["latency"]["median_ms"]),
            float(report["latency"]["median_ms"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _report(
    console: Console,
    before: dict[str, float],
    after: dict[str, float],
    spec: JobSpec,
    report: dict[str, Any],
    n_test: int,
) -> None:
    c = spec.constraints
    table = Table(title="digits_cnn before and after pruning")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("after / before", justify="right")
    table.add_row(
        f"accuracy ({n_test} held-out digits)",
        f"{before['acc']:.2%}",
        f"{after['acc']:.2%}",
        f"{100 * (after['acc'] - before['acc']):+.1f} points",
    )
    for key, label in (("macs", "MACs per sample"), ("params", "parameters")):
        table.add_row(
            label, f"{before[key]:,.0f}", f"{after[key]:,.0f}", _ratio(after[key], before[key])
        )
    batch = c.target.batch_size
    table.add_row(
        f"CPU latency, batch {batch} (here)",
        f"{before['ms']:.2f} ms",
        f"{after['ms']:.2f} ms",
        _ratio(after["ms"], before["ms"]),
    )
    served = _server_latency(report)
    if served is not None:
        table.add_row(
            f"CPU latency, batch {batch} (job)",
            f"{served[0]:.2f} ms",
            f"{served[1]:.2f} ms",
            _ratio(served[1], served[0]),
        )
    console.print(table)
    macs_ok = after["macs"] <= 0.5 * before["macs"]
    lat_ok = served is not None and served[1] <= 0.7 * served[0]
    console.print(
        f"budgets: MACs <= {c.macs} of the original: {'met' if macs_ok else 'NOT met'}; "
        f"latency <= {c.latency_ms} on {c.target.device} at batch {batch} with "
        f"{c.target.threads} thread(s), as the job measured it: "
        f"{'met' if lat_ok else 'NOT met'}. The two latency rows are separate measurements "
        "(noisy on a busy machine). The pruned model was fine-tuned by the job "
        f"({spec.finetune.steps} steps on the training split), which is why its "
        "accuracy can exceed the briefly trained original's.",
        highlight=False,
    )


def run_demo(
    *,
    data_dir: str | None = None,
    train_epochs: int = 8,
    trials: int = 16,
    keep: bool = False,
    server_timeout: float = 180.0,
    url: str | None = None,
    token: str | None = None,
) -> int:
    """Run the demo end to end; returns the process exit status (0 on success).

    Args:
        data_dir: the server's data directory (default: a temporary one, removed after);
            with ``url``, where the weights and the downloaded artifacts go.
        train_epochs: epochs the user's model trains before pruning.
        trials: search trials of the job.
        keep: keep the temporary directory (server data, log, downloaded artifacts).
        server_timeout: seconds to wait for the server to become ready.
        url: a running service to use instead of starting one.
        token: the bearer token for ``url`` (required with it).
    """
    import prunepilot

    if url is not None and not token:
        raise ClientError("demo --url needs a token (--token or PRUNEPILOT_TOKEN)")

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 100  # logs and pipes: no wrapping at 80 columns
    t_start = time.monotonic()
    root = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="prunepilot-demo-"))
    token = token if url is not None else secrets.token_urlsafe(16)
    assert token is not None
    log_path = root / "server.log"
    console.rule("[bold]prunepilot demo")
    console.print(f"working directory {root}")
    torch.manual_seed(0)
    ok = False
    try:
        server: contextlib.AbstractContextManager[tuple[str, subprocess.Popen[bytes] | None]] = (
            contextlib.nullcontext((url, None))
            if url is not None
            else start_server(root / "service", token, log_path=log_path)
        )
        with server as (url, proc):
            if proc is None:
                console.print(f"using the service at {url}")
            else:
                console.print(f"starting the service at {url} (log: {log_path})")
            # The user's side: a model trained on their data, while the server starts.
            data = digits_data()
            model = digits_cnn()
            t0 = time.monotonic()
            steps = train(model, data, train_epochs)
            acc0 = accuracy(model, data.x_test, data.y_test)
            console.print(
                f"trained digits_cnn for {train_epochs} epochs ({steps} steps, "
                f"{time.monotonic() - t0:.1f} s) on "
                f"{len(data.y_train)} digits: held-out accuracy {acc0:.2%}"
            )
            weights = root / "digits_cnn.safetensors"
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

            with Client(url, token) as client:
                wait_ready(client, proc, server_timeout, log_path)
                console.print(f"service ready after {time.monotonic() - t_start:.1f} s")
                up = client.upload(weights)
                console.print(f"uploaded {weights.name}: id {up.id}, {up.size:,} bytes")
                spec = JobSpec.model_validate(job_spec(up.id, trials))
                job = client.submit(spec)
                console.print(f"submitted job {job.id}: {spec.name}")
                info = job.wait(progress=True, poll=1.0, console=console)
                if info.status is not JobStatus.SUCCEEDED:
                    console.print(f"[red]job {info.status.value}[/]: {info.error or ''}")
                    console.print(job.logs()[-3000:], markup=False)
                    return 1
                page = job.trials()
                feasible = sum(t.feasible for t in page.trials)
                console.print(
                    f"job done in {_seconds(info)}: {len(page.trials)} trials, {feasible} "
                    f"within budget, Pareto front {page.pareto or '-'}"
                )
                paths = job.download(root / "artifacts")
                for p in paths:
                    console.print(f"  downloaded {p.name} ({p.stat().st_size:,} bytes, sha256 ok)")
        # The server is stopped; everything below is the user's machine alone.
        ckpt = root / "artifacts" / "model.safetensors"
        pruned = prunepilot.load(ckpt).eval()
        x1 = torch.zeros(1, *INPUT_SHAPE)
        p0, p1 = prunepilot.profile(model, x1), prunepilot.profile(pruned, x1)
        batch = data.x_test[:LATENCY_BATCH]
        ms0, ms1 = _latency_ms([model, pruned], batch)
        before = {
            "acc": acc0,
            "macs": p0.macs,
            "params": p0.params,
            "ms": ms0,
        }
        after = {
            "acc": accuracy(pruned, data.x_test, data.y_test),
            "macs": p1.macs,
            "params": p1.params,
            "ms": ms1,
        }
        report = json.loads((root / "artifacts" / "report.json").read_text())
        _report(console, before, after, spec, report, len(data.y_test))
        console.print(f"demo finished in {time.monotonic() - t_start:.1f} s")
        ok = True
        return 0
    finally:
        if keep or data_dir or not ok:
            console.print(f"files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _seconds(info: JobInfo) -> str:
    if info.started_at and info.finished_at:
        return f"{(info.finished_at - info.started_at).total_seconds():.1f} s"
    return "?"
