"""One way for every benchmark to run a real server: the `make serve` entry point in a subprocess on a
free port, ready when /readyz answers 200, stopped with SIGTERM (the server drains) then SIGKILL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sharelens.paths import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command() -> list[str]:
    """How the benchmarks start a server: the same entry point as `make serve`."""
    return [sys.executable, "-m", "serving.cli", "serve"]


def server_env(port: int, models_dir: Path, model_name: str, backend: str, threads: int | None,
               runtime: str = "lean") -> dict[str, str]:
    env = {**os.environ, "SHARELENS_PORT": str(port), "SHARELENS_MODELS_DIR": str(models_dir),
           "SHARELENS_MODEL_NAME": model_name, "SHARELENS_BACKEND": backend, "SHARELENS_RUNTIME": runtime}
    if threads:
        env["SHARELENS_MODEL_THREADS"] = str(threads)
    return env


def wait_ready(proc: subprocess.Popen, base: str, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=10) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise RuntimeError(f"server exited: {err}")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM (the server drains in-flight requests), then SIGKILL if it outlives the grace period."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_mb(pid: int) -> float | None:
    """The process's high-water resident memory (Linux VmHWM), or None where /proc has none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@dataclass
class RunningServer:
    proc: subprocess.Popen
    base: str
    started: float  # time.perf_counter() when the process was started (cold start is measured from here)

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextmanager
def running_server(env: dict[str, str], ready_timeout: float = 300) -> Iterator[RunningServer]:
    """A server started with `env` (see server_env; its SHARELENS_PORT is the port), ready on entry,
    stopped on exit whatever happens inside. RuntimeError if it never becomes ready."""
    base = f"http://127.0.0.1:{env['SHARELENS_PORT']}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(server_command(), cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(proc, base, ready_timeout)
        yield RunningServer(proc, base, t0)
    finally:
        stop_server(proc)
