"""The failure half of docker/smoke.sh: a job that loses a worker, a job whose API restarts.

Run from the host with the project's virtual environment (the SDK only talks HTTP)::

    python docker/smoke_jobs.py kill-worker --url URL --token T --container ID
    python docker/smoke_jobs.py restart-api --url URL --token T --container ID --expect-jobs N

Each command submits a job of the demo model on scikit-learn's digits, waits until it is
well into its search, does its harm with ``docker`` (``docker kill`` of one Ray worker's
container, or ``docker restart`` of the API's), then waits for the job and exits 0 only if it
SUCCEEDED. ``restart-api`` also checks that every earlier job is still listed (PostgreSQL kept
the rows). The last line printed is a JSON summary for smoke.sh's report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from prunepilot.client import Client, ClientError

DOCKER = os.environ.get("DOCKER", "docker")
MODEL_SOURCE = "prunepilot.demo.models:digits_cnn"


def _spec(name: str, trials: int) -> dict[str, Any]:
    return {
        "name": name,
        "model": {"source": MODEL_SOURCE, "input_shape": [1, 8, 8]},
        "dataset": {"source": "builtin:digits", "batch_size": 64},
        "constraints": {"macs": "50%"},
        "search": {"trials": trials, "uniform_seeds": 2, "top_k": 2},
        "finetune": {"steps": 150},
    }


def _poll(client: Client, job_id: str, until: Any, timeout: float) -> dict[str, Any]:
    """Poll the job until ``until(job)``; a restarting API (connection errors) is waited out."""
    deadline = time.monotonic() + timeout
    outage = 0.0
    while True:
        t0 = time.monotonic()
        try:
            job = client.job(job_id).info.model_dump(mode="json")
        except ClientError as e:
            outage += time.monotonic() - t0
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id}: no answer from the API ({e})") from e
            time.sleep(1.0)
            continue
        job["_outage_s"] = round(outage, 1)
        if until(job):
            return job
        if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            raise RuntimeError(f"job {job_id} ended {job['status']} early: {job.get('error')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id}: condition not met in {timeout:.0f} s: {job}")
        time.sleep(1.0)


def _done(job: dict[str, Any]) -> bool:
    return job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED")


def _docker(*args: str) -> None:
    subprocess.run([DOCKER, *args], check=True, stdout=subprocess.DEVNULL)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    client = Client(args.url, args.token, retries=2)
    before = [j.id for j in client.jobs_page(limit=100).items]
    job = client.submit(_spec(f"smoke-{args.command}", args.trials))
    t0 = time.monotonic()
    _poll(client, job.id, lambda j: j["trials_done"] >= args.after_trials, args.timeout)
    harm_at = time.monotonic() - t0
    if args.command == "kill-worker":
        _docker("kill", args.container)
    else:
        _docker("restart", "--time", "5", args.container)
    final = _poll(client, job.id, _done, args.timeout)
    total = time.monotonic() - t0
    listed = {j.id for j in client.jobs_page(limit=100).items}
    logs = client.job(job.id).logs()
    summary = {
        "command": args.command,
        "job": job.id,
        "status": final["status"],
        "trials_done": final["trials_done"],
        "harm_after_s": round(harm_at, 1),
        "total_s": round(total, 1),
        "api_outage_s": final["_outage_s"],
        "earlier_jobs_kept": all(j in listed for j in before),
        "earlier_jobs": len(before),
        "log_mentions": [
            line.split("] ", 1)[-1][:160]
            for line in logs.splitlines()
            if any(w in line for w in ("lost", "re-queued", "resum", "replac", "died"))
        ][:6],
    }
    ok = final["status"] == "SUCCEEDED" and summary["earlier_jobs_kept"]
    if args.command == "restart-api" and len(before) < args.expect_jobs:
        ok = False
        summary["error"] = f"expected at least {args.expect_jobs} earlier jobs, saw {len(before)}"
    summary["ok"] = ok
    return summary


def main() -> int:
    """Parse the command line, run one scenario, print its JSON summary last."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["kill-worker", "restart-api"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--container", required=True, help="the container to kill or restart")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--after-trials", type=int, default=6, help="do the harm after N trials")
    ap.add_argument("--expect-jobs", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args()
    summary = _run(args)
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
