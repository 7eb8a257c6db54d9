"""A real two-node Ray cluster on this machine, the second node without the server's disk.

Two raylets: a head (``ray start --head``) and a second node started in its own mount
namespace (``unshare -m``) with an empty tmpfs mounted over the server's data directory,
as on a machine that has Ray and the package but not the server's storage. Token
authentication is off (``RAY_AUTH_MODE=disabled``) for both and for their drivers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ._process import free_port

__all__ = ["TwoNodeCluster", "cluster_unavailable"]

_RAY = str(Path(sys.executable).with_name("ray"))
# lost nodes are noticed within a few seconds rather than Ray's default half minute
_SYSTEM_CONFIG = '{"health_check_period_ms":1000,"health_check_failure_threshold":3}'


def cluster_unavailable() -> str | None:
    """Why a two-node cluster cannot be started here (``None``: it can)."""
    if not Path(_RAY).exists():
        return f"no ray executable at {_RAY}"
    if shutil.which("unshare") is None:
        return "no unshare(1) for a second node without the server's disk"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"cannot make a mount namespace (unshare -m): {probe.stderr.decode().strip()}"
    return None


class TwoNodeCluster:
    """Head and second node; the second sees ``hidden`` as an empty tmpfs.

    Args:
        hidden: the server's data directory, empty on the second node.
        logs: where the nodes' output goes.
        cpus: logical CPUs each node declares.
    """

    def __init__(self, hidden: Path, logs: Path, cpus: int = 1) -> None:
        self.hidden, self.logs, self.cpus = hidden, logs, cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "disabled",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        self.head: subprocess.Popen[bytes] | None = None
        self.second: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start both nodes and wait until the cluster has both (90 s at most)."""
        self.hidden.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.head = self._popen(
            [
                _RAY, "start", "--head", f"--port={self.port}", f"--num-cpus={self.cpus}",
                "--include-dashboard=false", "--disable-usage-stats", "--block",
                f"--system-config={_SYSTEM_CONFIG}",
            ],
            "head.log",
        )  # fmt: skip
        join = (
            f"mount -t tmpfs tmpfs '{self.hidden}' && exec '{_RAY}' start "
            f"--address={self.address} --num-cpus={self.cpus} --disable-usage-stats --block"
        )
        self.second = self._popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", join], "second.log"
        )
        self.wait_nodes(2, timeout=90)

    def _popen(self, cmd: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.logs / log).open("ab") as out:
            return subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def nodes(self) -> list[str]:
        """Ids of the live nodes, head first (asked from a separate driver process)."""
        code = (
            "import ray\n"
            f"ray.init(address={self.address!r}, log_to_driver=False, logging_level='error')\n"
            "alive = [n for n in ray.nodes() if n['Alive']]\n"
            "alive.sort(key=lambda n: 'node:__internal_head__' not in n['Resources'])\n"
            "print(' '.join(n['NodeID'] for n in alive))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.split()

    def wait_nodes(self, n: int, timeout: float) -> list[str]:
        """Wait until exactly ``n`` nodes are alive; their ids, head first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ids = self.nodes()
            except subprocess.SubprocessError:
                ids = []
            if len(ids) == n:
                return ids
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids)} nodes alive, not {n}; see {self.logs}")
            time.sleep(1)

    def second_sees(self) -> list[str]:
        """What the second node sees in the server's data directory."""
        assert self.second is not None
        out = subprocess.run(
            ["nsenter", "-t", str(self.second.pid), "-m", "ls", "-A", str(self.hidden)],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()

    def kill_second(self) -> int:
        """SIGKILL every process of the second node (its mount namespace): a lost machine.

        Returns how many processes were killed.
        """
        if self.second is None:
            return 0
        try:
            ns = os.readlink(f"/proc/{self.second.pid}/ns/mnt")
        except OSError:
            return 0
        killed = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns" / "mnt") == ns:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
            except (OSError, ProcessLookupError):
                continue
        self.second.wait(timeout=30)
        self.second = None
        return killed

    def stop(self) -> None:
        """Kill both nodes and forget the cluster ``ray start`` recorded for this machine."""
        self.kill_second()
        if self.head is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.head.pid, signal.SIGKILL)
            self.head.wait(timeout=30)
            self.head = None
        current = Path("/tmp/ray/ray_current_cluster")
        try:
            if current.read_text().strip().endswith(f":{self.port}"):
                current.unlink()
        except OSError:
            pass
