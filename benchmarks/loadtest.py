"""`make loadtest`: many concurrent clients against a real server on 127.0.0.1, with `wrk`.

    python -m benchmarks.loadtest [--clients 16] [--duration 60] [--explain-every 10] [--backend int8]

Starts `python -m serving.cli serve` as a subprocess (SHARELENS_PORT, SHARELENS_MODELS_DIR,
SHARELENS_MODEL_NAME, SHARELENS_BACKEND), waits for /readyz, then runs wrk (Debian's package:
`apt-get install -y wrk`) with one connection per client for the given duration. A Lua script
POSTs /predict with real posts of the held-out test split, a different post per request (each
wrk thread walks the list from its own offset). The server's resident memory is sampled every
second. Printed: requests, failed requests (non-2xx answers and socket errors), throughput,
latency p50/p95/p99, and RSS at start/end/max with a verdict on whether memory stayed flat
(the peak of the second half of the run against the peak of the first).

Mixed load (the default, `--explain-every 10`): every tenth request asks for an explanation, of
a long and a short post in turn; wrk then runs one thread per connection and the script times
each request by its kind, so plain predictions are judged while explanations run (target: plain
p95 <= 300 ms, 0 failed, memory flat). `--explain-every 0`: plain predictions only.

Traffic goes to 127.0.0.1 only, and the run stops by itself after --duration seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sharelens.paths import BENCH_POSTS, models_dir

MARK = "SHARELENS_WRK "

# wrk runs one Lua state per thread: `setup` sees every thread from the main state, `init` and
# `request`/`response` run in the thread, `done` runs once at the end with the merged statistics.
LUA = r"""
local bodies_path = %(bodies)s
local timings_dir = %(timings)s
local threads = {}
local counter = 1

-- Per-request wall-clock latency by kind (plain / explain): wrk's own histogram mixes them. LuaJIT's
-- ffi reads CLOCK_MONOTONIC; with one connection per thread (mixed mode), request and response
-- alternate, so the send time of the answered request is the last one taken.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } sharelens_timespec;
int clock_gettime(int clk_id, sharelens_timespec *tp);
]]
local ts = ffi.new("sharelens_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(bodies_path) do
    bodies[#bodies + 1] = line
  end
  -- each thread starts at its own offset, so concurrent requests carry different posts
  nxt = ((id - 1) * math.floor(#bodies / %(threads)d)) %% #bodies
  non2xx = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if timings_dir ~= "" then
    timings = io.open(timings_dir .. "/thread-" .. id .. ".tsv", "w")
    timings:setvbuf("line")
  end
end

function request()
  nxt = nxt %% #bodies + 1
  sent_at = now_us()
  kind = string.find(bodies[nxt], '"explain": true', 1, true) and "explain" or "plain"
  return wrk.format(nil, "/predict", nil, bodies[nxt])
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if timings then
    timings:write(kind, "\t", status, "\t", string.format("%%d", now_us() - sent_at), "\n")
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("non2xx") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests": %%d, "duration_us": %%d, "bytes": %%d, "non2xx": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "timeout": %%d, "status_gt399": %%d, "p50_us": %%d, "p95_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "mean_us": %%.1f}\n',
    summary.requests, summary.duration, summary.bytes, bad, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean))
end
"""


def lua_script(bodies: Path, threads: int, timings: Path | None = None) -> str:
    # a JSON string literal is a valid Lua string literal for any path
    return LUA % {"bodies": json.dumps(str(bodies)), "threads": max(1, threads), "mark": MARK,
                  "timings": json.dumps(str(timings) if timings is not None else "")}


def request_bodies(posts: list[str], explain_every: int = 0) -> list[dict]:
    """One request body per post. With `explain_every` = n, every n-th body asks for an explanation,
    of long and short posts in turn (the longest and the shortest quarter of the posts), so the mix
    holds both kinds of explanation work; the others are plain predictions of the posts in order."""
    bodies: list[dict] = [{"text": t} for t in posts]
    if explain_every <= 0 or len(posts) < explain_every:
        return bodies
    by_length = sorted(posts, key=len)
    quarter = max(1, len(posts) // 4)
    long, short = by_length[-quarter:][::-1], by_length[:quarter]
    for k, i in enumerate(range(explain_every - 1, len(bodies), explain_every)):
        pool = long if k % 2 == 0 else short
        bodies[i] = {"text": pool[(k // 2) % len(pool)], "explain": True}
    return bodies


def write_bodies(posts: list[str], path: Path, explain_every: int = 0) -> int:
    """One JSON request body per line (json.dumps escapes newlines, so a line is a body)."""
    bodies = request_bodies(posts, explain_every)
    with path.open("w", encoding="utf-8") as fh:
        for body in bodies:
            fh.write(json.dumps(body, ensure_ascii=False) + "\n")
    return len(bodies)


def read_timings(folder: Path) -> dict:
    """The per-request lines the Lua script wrote -> per kind: count, failed (non-2xx), p50/p95/p99 ms."""
    by_kind: dict[str, dict[str, list]] = {}
    for path in sorted(folder.glob("thread-*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) != 3:
                continue
            kind, status, us = parts[0], int(parts[1]), float(parts[2])
            entry = by_kind.setdefault(kind, {"ms": [], "failed": [], "status": []})
            entry["ms"].append(us / 1000)
            entry["status"].append(status)
            if not 200 <= status <= 299:
                entry["failed"].append(status)
    out = {}
    for kind, e in by_kind.items():
        ms = sorted(e["ms"])

        def pct(q: float, ms=ms) -> float:
            return ms[min(len(ms) - 1, int(round(q * (len(ms) - 1))))]

        statuses: dict[str, int] = {}
        for st in e["failed"]:
            statuses[str(st)] = statuses.get(str(st), 0) + 1
        out[kind] = {"requests": len(ms), "failed": len(e["failed"]), "failed_statuses": statuses,
                     "p50_ms": pct(0.5), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": ms[-1]}
    return out


def load_posts(path: Path, max_chars: int, n: int) -> list[str]:
    posts = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                text = json.loads(line).get("text") or ""
                if text.strip() and len(text) <= max_chars:  # longer ones would be refused (422), not load
                    posts.append(text)
    return posts[:n]


class RssSampler(threading.Thread):
    """The resident memory of one process, once a second, until stopped."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def sample(self) -> int:
        rss = self.proc.memory_info().rss
        self.samples.append((time.monotonic(), rss))
        return rss

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - the process went away: the run reports it
                return
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


@contextmanager
def duration_bar(seconds: int, disable: bool = False) -> Iterator[None]:
    """A seconds bar while wrk runs (wrk itself prints nothing until it ends)."""
    from tqdm import tqdm

    done = threading.Event()
    with tqdm(total=seconds, desc="load", unit="s", disable=disable, dynamic_ncols=True) as bar:
        def tick() -> None:
            while not done.wait(1.0) and bar.n < seconds:
                bar.update(1)

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            bar.update(max(0, seconds - bar.n))


def memory_verdict(samples: list[int], tolerance_mb: float = 50.0, tolerance_frac: float = 0.05) -> dict:
    """Start/end/max RSS and whether it stayed flat: the highest RSS of the second half of the run
    within max(50 MiB, 5%) of the highest of the first half. The heap grows once in the first
    seconds of load (batches of a new size, allocator arenas); a leak keeps growing."""
    if not samples:
        return {"start_mb": None, "end_mb": None, "max_mb": None, "growth_mb": None, "flat": None, "samples": 0}
    mb = [s / 2**20 for s in samples]
    half = max(1, len(mb) // 2)
    first, second = max(mb[:half]), max(mb[half:] or mb[-1:])
    growth = second - first
    return {"start_mb": mb[0], "end_mb": mb[-1], "max_mb": max(mb), "growth_mb": growth,
            "flat": growth <= max(tolerance_mb, tolerance_frac * first), "samples": len(mb)}


def run_wrk(url: str, script: Path, clients: int, threads: int, duration: int, timeout_s: int) -> dict:
    cmd = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{duration}s", "--timeout", f"{timeout_s}s",
           "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + timeout_s + 60)
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            return {**json.loads(line[len(MARK):]), "wrk_output": out.stdout}
    raise RuntimeError(f"wrk gave no summary (exit {out.returncode}): {out.stdout[-1000:]} {out.stderr[-1000:]}")


def summarise(w: dict, mem: dict, clients: int, duration: int) -> dict:
    seconds = w["duration_us"] / 1e6
    socket_errors = w["connect"] + w["read"] + w["write"] + w["timeout"]
    failed = w["non2xx"] + socket_errors
    return {
        "clients": clients, "duration_s": seconds, "requests": w["requests"], "failed": failed,
        "non2xx": w["non2xx"], "socket_errors": socket_errors,
        "socket_error_detail": {k: w[k] for k in ("connect", "read", "write", "timeout")},
        "throughput_rps": w["requests"] / seconds if seconds else 0.0,
        "ok_rps": (w["requests"] - w["non2xx"]) / seconds if seconds else 0.0,
        "latency_ms": {"p50": w["p50_us"] / 1000, "p95": w["p95_us"] / 1000, "p99": w["p99_us"] / 1000,
                       "max": w["max_us"] / 1000, "mean": w["mean_us"] / 1000},
        "rss": mem,
    }


PLAIN_P95_TARGET_MS = 300.0


def _kind_rows(r: dict) -> list[tuple[str, str]]:
    """Mixed load: latency and failures of plain and explained requests apart, and the target."""
    rows = []
    for kind in ("plain", "explain"):
        k = (r.get("by_kind") or {}).get(kind)
        if not k:
            continue
        failed = f", {k['failed']} failed {k['failed_statuses']}" if k["failed"] else ", 0 failed"
        rows.append((f"{kind}: requests, p50 / p95 / p99", f"{k['requests']}{failed}; {k['p50_ms']:.1f} / "
                     f"{k['p95_ms']:.1f} / {k['p99_ms']:.1f} ms (max {k['max_ms']:.0f} ms)"))
    plain = (r.get("by_kind") or {}).get("plain")
    if plain and "explain" in (r.get("by_kind") or {}):
        ok = plain["p95_ms"] <= PLAIN_P95_TARGET_MS
        rows.append(("plain p95 while explanations run", f"{plain['p95_ms']:.1f} ms: target <= "
                     f"{PLAIN_P95_TARGET_MS:.0f} ms {'met' if ok else 'MISSED'}"))
    return rows


def render(r: dict) -> str:
    lat, mem = r["latency_ms"], r["rss"]
    flat = {True: "yes", False: "NO (grew)", None: "n/a"}[mem["flat"]]

    def mb(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0f} MiB"

    rows = [
        ("server", f"{r.get('model', '?')} backend {r.get('backend', '?')}, runtime {r.get('runtime', '?')}, "
                   f"{r.get('model_threads') or 'one per core'} model thread(s), "
                   f"cold start {r.get('cold_start_s', 0):.1f} s"),
        ("load", f"{r['clients']} concurrent clients for {r['duration_s']:.0f} s (wrk), {r.get('distinct_posts', '?')} "
                 "distinct real posts, one per request"
                 + (f"; every {r['explain_every']}th asks for an explanation (long and short posts in turn)"
                    if r.get("explain_every") else "; no explanations")),
        ("requests", f"{r['requests']}"),
        ("failed requests", f"{r['failed']} ({r['non2xx']} non-2xx, {r['socket_errors']} socket errors)"),
        ("throughput", f"{r['throughput_rps']:.1f} requests/s ({r['ok_rps']:.1f} succeeded/s)"),
        ("latency p50 / p95 / p99", f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} ms (max {lat['max']:.0f} ms)"),
        *_kind_rows(r),
        ("server RSS start / end / max", f"{mb(mem['start_mb'])} / {mb(mem['end_mb'])} / {mb(mem['max_mb'])}"),
        ("memory flat", f"{flat}: peak of the second half vs the first {mem['growth_mb']:+.0f} MiB "
                        f"({mem['samples']} samples, 1/s)"
         if mem["growth_mb"] is not None else flat),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{w}} | {v} |" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.server import free_port, running_server, server_env
    from serving.settings import Settings

    ap = argparse.ArgumentParser(prog="python -m benchmarks.loadtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16, help="concurrent connections (default 16)")
    ap.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    ap.add_argument("--models-dir", type=Path, default=models_dir())
    ap.add_argument("--name", default=os.environ.get("SHARELENS_MODEL_NAME", "sharelens"), help="registry name")
    ap.add_argument("--backend", default=os.environ.get("SHARELENS_BACKEND", "int8"), choices=("fp32", "int8"),
                    help="inference path of the server (default int8: the optimised one)")
    ap.add_argument("--runtime", default=os.environ.get("SHARELENS_RUNTIME", "lean"), choices=("lean", "transformers"))
    ap.add_argument("--posts", type=Path, default=BENCH_POSTS)
    ap.add_argument("--n-posts", type=int, default=1000, help="distinct posts to cycle through")
    ap.add_argument("--threads", type=int, default=None,
                    help="model threads of the server (SHARELENS_MODEL_THREADS; default one per core)")
    ap.add_argument("--wrk-threads", type=int, default=None, help="wrk threads (default: min(clients, 2))")
    ap.add_argument("--timeout", type=int, default=10, help="seconds before wrk counts a request as timed out")
    ap.add_argument("--explain-every", type=int, default=10,
                    help="every n-th request asks for an explanation, of long and short posts in turn "
                    "(default 10; 0: plain predictions only)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    a = ap.parse_args(argv)
    if a.clients < 1 or a.duration < 1 or a.explain_every < 0:
        print("Error E433: --clients and --duration must be at least 1 (--explain-every at least 0)", file=sys.stderr)
        return 2
    if shutil.which("wrk") is None:
        print("Error E432: the load generator `wrk` is not installed; install it with `apt-get install -y wrk`",
              file=sys.stderr)
        return 2
    if not a.posts.exists():
        print(f"Error E430: no posts at {a.posts}; run `make data`", file=sys.stderr)
        return 2
    posts = load_posts(a.posts, Settings().max_text_chars, a.n_posts)
    if not posts:
        print(f"Error E443: no usable posts in {a.posts}", file=sys.stderr)
        return 2
    # Mixed: one connection per wrk thread, so the script can time each request by its kind.
    wrk_threads = a.wrk_threads or (a.clients if a.explain_every else max(1, min(a.clients, 2)))

    import httpx

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sharelens-loadtest-") as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        write_bodies(posts, bodies, a.explain_every)
        timings = Path(tmp) / "timings"
        timings.mkdir()
        script = Path(tmp) / "predict.lua"
        script.write_text(lua_script(bodies, wrk_threads, timings), encoding="utf-8")
        env = server_env(port, a.models_dir, a.name, a.backend, a.threads, a.runtime)
        # Every wrk connection comes from 127.0.0.1: one address standing for many clients, so the
        # per-client share of explanations (a token bucket per address) is off for this server.
        env["SHARELENS_EXPLAIN_CLIENT_RATE"] = "0"
        with ExitStack() as stack:
            try:
                server = stack.enter_context(running_server(env))
            except RuntimeError as exc:
                print(f"Error E434: the server did not become ready: {exc}", file=sys.stderr)
                return 2
            cold = time.perf_counter() - server.started
            with httpx.Client(base_url=server.base, timeout=60) as client:
                try:
                    model = client.get("/models").json().get("serving")
                except (httpx.HTTPError, ValueError, AttributeError):
                    model = None
                for text in posts[:10]:  # warm the HTTP path and the kernels before memory is sampled
                    client.post("/predict", json={"text": text}).raise_for_status()
            sampler = RssSampler(server.pid)
            sampler.sample()
            sampler.start()
            stack.callback(sampler.stop)  # before the server stops (callbacks run last-in, first-out)
            with duration_bar(a.duration, disable=a.no_progress):
                w = run_wrk(f"{server.base}/predict", script, a.clients, wrk_threads, a.duration, a.timeout)
            sampler.stop()
            sampler.sample()
            by_kind = read_timings(timings) if wrk_threads == a.clients else {}
    res = summarise(w, memory_verdict([rss for _, rss in sampler.samples]), a.clients, a.duration)
    res.update({"model": f"{a.name} {model}", "backend": a.backend, "runtime": a.runtime, "cold_start_s": cold,
                "model_threads": a.threads, "distinct_posts": len(posts), "wrk_threads": wrk_threads,
                "explain_every": a.explain_every, "by_kind": by_kind})
    print(render(res))
    if a.json:
        doc = {k: v for k, v in res.items()}
        doc["wrk_output"] = w.get("wrk_output", "")
        doc["rss_samples_mb"] = [round(rss / 2**20, 1) for _, rss in sampler.samples]
        a.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0 if res["requests"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
