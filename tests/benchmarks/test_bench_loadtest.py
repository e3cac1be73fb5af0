"""The reports of `make bench` and `make loadtest`, on fake figures (no server, no model)."""

from __future__ import annotations

import pytest

from benchmarks import bench, loadtest

BASE, LEAN, INT8 = "fp32 transformers", "fp32 lean", "int8 lean"


def _fake_bench() -> dict:
    def server(cold, p50, batch, rss, backend, runtime):
        return {"cold_start_s": cold, "single_p50_ms": p50, "single_p95_ms": 2 * p50, "batch_posts_per_s": batch,
                "explain_p50_ms": 900.0, "explain_p95_ms": 1500.0, "server_rss_ready_mb": 500.0,
                "server_rss_mb": rss, "server_peak_rss_mb": rss + 100, "served_backend": backend,
                "served_gap": 0.0, "reported": f"{backend} {runtime}"}

    http = {BASE: server(6.1, 41.0, 20.0, 1000.0, "fp32", "transformers"),
            LEAN: server(3.0, 35.0, 21.0, 900.0, "fp32", "lean"),
            INT8: server(4.2, 11.0, 70.0, 1300.0, "int8", "lean")}
    inproc = {BASE: {"load_s": 2.0, "single_p50_ms": 38.0, "batch_posts_per_s": 19.0},
              LEAN: {"load_s": 1.0, "single_p50_ms": 30.0, "batch_posts_per_s": 19.0},
              INT8: {"load_s": 0.8, "single_p50_ms": 12.0, "batch_posts_per_s": 57.0},
              "pipeline": {"single_p50_ms": 39.0, "batch_posts_per_s": 10.0}}
    aopc = {"fp32": {"attributed": 0.05, "random": 0.01, "ratio": 5.0, "n_texts": 50},
            "int8": {"attributed": 0.05, "random": 0.01, "ratio": None, "n_texts": 50}}
    return {"model": "sharelens v0001-20261123", "posts": 256, "median_chars": 40, "cpu_threads": 2,
            "torch_threads": 2, "configs": [BASE, LEAN, INT8], "load_avg_start": 0.1, "load_avg_end": 0.2,
            "http": http, "inprocess": inproc, "aopc": aopc}


def _row(table: str, metric: str) -> list[str]:
    line = next(x for x in table.splitlines() if x.startswith(f"| {metric}"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_bench_configs_parse_and_refuse_nonsense() -> None:
    assert bench.parse_configs("fp32:transformers, fp32,int8") == [("fp32", "transformers"), ("fp32", "lean"),
                                                                   ("int8", "lean")]
    for bad in ("fp16", "int8:onnx", "fp32,fp32:lean", ""):
        with pytest.raises(ValueError):
            bench.parse_configs(bad)
    assert bench.main(["--configs", "fp16"]) == 2


def test_bench_render_puts_configurations_side_by_side_with_targets() -> None:
    out = bench.render(_fake_bench())
    header = _row(out, "metric")
    assert header == ["metric", f"{BASE} (baseline)", LEAN, INT8, f"{INT8} / baseline", f"target ({INT8})", "met"]
    assert _row(out, "/predict batch throughput") == [
        "/predict batch throughput (32/request)", "20.0 posts/s", "21.0 posts/s", "70.0 posts/s", "x3.50",
        ">= x2 baseline", "yes"]
    assert _row(out, "/predict single p50")[1:] == ["41.0 ms", "35.0 ms", "11.0 ms", "x3.73 faster", "<= 20 ms", "yes"]
    assert _row(out, "cold start")[-1] == "yes"
    assert _row(out, "server memory after the run")[-1] == "NO"  # 1300 MiB > 1.2 GB
    assert _row(out, "what the server ran")[1:4] == [f"{BASE} (verified)", f"{LEAN} (verified)", f"{INT8} (verified)"]
    assert _row(out, "in-process batch throughput")[4] == "x3.00"
    assert "n/a" in _row(out, "AOPC (int8)")[1]
    assert "busy" not in out


def test_bench_render_flags_a_server_that_ran_something_else() -> None:
    r = _fake_bench()
    r["http"][INT8]["reported"] = "int8 transformers"
    assert _row(bench.render(r), "what the server ran")[3] == f"int8 transformers (EXPECTED {INT8})"


def test_bench_render_survives_a_missing_int8_export() -> None:
    r = _fake_bench()
    msg = "Error E241: bundle x has no int8 export; run `make quantize MODEL=sharelens VERSION=v0001-20261123`"
    r["http"][INT8] = {"error": msg}
    r["inprocess"][INT8] = {"error": msg}
    del r["aopc"]["int8"]
    r["load_avg_start"] = 3.0
    out = bench.render(r)
    assert _row(out, "/predict batch throughput")[3] == "unavailable"
    assert _row(out, "/predict batch throughput")[-1] == ""
    assert "make quantize" in out and "busy" in out


def test_served_backend_is_told_by_its_probabilities() -> None:
    refs = {"fp32": {"a": 0.5, "b": 0.5}, "int8": {"a": 0.52, "b": 0.48}}
    assert bench.which_backend({"a": 0.5199, "b": 0.4801}, refs) == ("int8", pytest.approx(1e-4))
    assert bench.which_backend({"a": 0.5, "b": 0.5}, refs)[0] == "fp32"


def test_loadtest_memory_verdict() -> None:
    mib = 2**20
    flat = loadtest.memory_verdict([600 * mib, 700 * mib, 705 * mib, 702 * mib, 706 * mib, 704 * mib])
    assert flat["flat"] is True and flat["start_mb"] == 600 and flat["max_mb"] == 706
    leak = loadtest.memory_verdict([600 * mib + i * 20 * mib for i in range(20)])
    assert leak["flat"] is False and leak["growth_mb"] > 50
    assert loadtest.memory_verdict([])["flat"] is None


def test_loadtest_summary_and_render() -> None:
    w = {"requests": 1000, "duration_us": 10_000_000, "bytes": 1, "non2xx": 3, "connect": 0, "read": 1, "write": 0,
         "timeout": 2, "status_gt399": 3, "p50_us": 150_000, "p95_us": 200_000, "p99_us": 250_000,
         "max_us": 300_000, "mean_us": 155_000.0}
    r = loadtest.summarise(w, loadtest.memory_verdict([700 * 2**20] * 10), clients=16, duration=10)
    assert r["failed"] == 6 and r["socket_errors"] == 3
    assert r["throughput_rps"] == pytest.approx(100.0) and r["ok_rps"] == pytest.approx(99.7)
    assert r["latency_ms"]["p99"] == pytest.approx(250.0)
    out = loadtest.render({**r, "model": "sharelens v1", "backend": "int8", "runtime": "lean",
                           "cold_start_s": 4.0, "distinct_posts": 778})
    assert "6 (3 non-2xx, 3 socket errors)" in out and "150.0 / 200.0 / 250.0 ms" in out and "| memory flat" in out


def test_loadtest_lua_script_cycles_real_posts(tmp_path) -> None:
    bodies = tmp_path / "b.jsonl"
    assert loadtest.write_bodies(["转发 抽奖\n第二行", 'a "quote"'], bodies) == 2
    lines = bodies.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and '"text": "转发 抽奖\\n第二行"' in lines[0]
    lua = loadtest.lua_script(bodies, threads=2)
    assert f'local bodies_path = "{bodies}"' in lua
    assert 'wrk.format(nil, "/predict", nil, bodies[nxt])' in lua and "% #bodies" in lua
    assert loadtest.MARK in lua and "%(" not in lua


def test_mixed_bodies_explain_every_nth_of_long_and_short_posts_in_turn() -> None:
    posts = [f"post {i} " + "长" * i for i in range(40)]
    bodies = loadtest.request_bodies(posts, explain_every=10)
    explained = [i for i, b in enumerate(bodies) if b.get("explain")]
    assert explained == [9, 19, 29, 39]
    lengths = [len(bodies[i]["text"]) for i in explained]
    longest, shortest = max(map(len, posts)), min(map(len, posts))
    assert lengths[0] == longest and lengths[1] == shortest and lengths[2] < longest and lengths[3] > shortest
    assert all("explain" not in b for i, b in enumerate(bodies) if i not in explained)
    assert loadtest.request_bodies(posts, explain_every=0) == [{"text": t} for t in posts]


def test_timings_are_split_by_kind_with_their_failures(tmp_path) -> None:
    (tmp_path / "thread-1.tsv").write_text("plain\t200\t100000\nexplain\t200\t900000\nplain\t429\t5000\n")
    (tmp_path / "thread-2.tsv").write_text("plain\t200\t300000\nbroken line\n")
    t = loadtest.read_timings(tmp_path)
    assert t["plain"]["requests"] == 3 and t["plain"]["failed"] == 1 and t["plain"]["failed_statuses"] == {"429": 1}
    assert t["plain"]["p50_ms"] == pytest.approx(100.0) and t["plain"]["max_ms"] == pytest.approx(300.0)
    assert t["explain"] == {"requests": 1, "failed": 0, "failed_statuses": {}, "p50_ms": 900.0, "p95_ms": 900.0,
                            "p99_ms": 900.0, "max_ms": 900.0}
    out = loadtest.render({**loadtest.summarise(
        {"requests": 4, "duration_us": 1_000_000, "bytes": 1, "non2xx": 1, "connect": 0, "read": 0, "write": 0,
         "timeout": 0, "status_gt399": 1, "p50_us": 1, "p95_us": 1, "p99_us": 1, "max_us": 1, "mean_us": 1.0},
        loadtest.memory_verdict([1]), clients=2, duration=1), "by_kind": t, "explain_every": 10})
    assert "plain p95 while explanations run" in out and "| 300.0 ms: target <= 300 ms met |" in out
    assert "every 10th asks for an explanation" in out


@pytest.mark.skipif(__import__("shutil").which("wrk") is None, reason="wrk is not installed")
def test_the_lua_script_times_each_request_by_kind_against_a_real_server(tmp_path) -> None:
    """wrk and the generated script against a stub HTTP server that answers explain requests
    slowly: every answered request is timed, under its own kind, with its status."""
    import http.server
    import threading

    class Stub(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        answered = 0

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            slow = b'"explain": true' in body
            if slow:
                __import__("time").sleep(0.05)
            Stub.answered += 1
            self.send_response(503 if Stub.answered % 7 == 0 and not slow else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bodies = tmp_path / "b.jsonl"
        loadtest.write_bodies([f"post {i}" for i in range(10)], bodies, explain_every=5)
        timings = tmp_path / "timings"
        timings.mkdir()
        script = tmp_path / "s.lua"
        script.write_text(loadtest.lua_script(bodies, 2, timings), encoding="utf-8")
        w = loadtest.run_wrk(f"http://127.0.0.1:{server.server_address[1]}/predict", script, clients=2, threads=2,
                             duration=1, timeout_s=5)
    finally:
        server.shutdown()
    t = loadtest.read_timings(timings)
    assert t["plain"]["requests"] + t["explain"]["requests"] == w["requests"] - w["read"]  # each answered one
    assert t["explain"]["p50_ms"] >= 50 > t["plain"]["p50_ms"]
    assert t["plain"]["failed"] == t["plain"]["failed_statuses"]["503"] > 0 and t["explain"]["failed"] == 0


def test_the_explanation_method_table_marks_the_default_and_the_targets() -> None:
    def row(method, p50, p95, comp):
        return {"method": method, "p50_ms": p50, "p95_ms": p95, "attributed": comp, "random": 0.07,
                "sufficiency": 0.09, "sufficiency_random": 0.27}

    e = {"config": "int8 lean", "posts": 50, "default": "occlusion", "ig_steps": 16,
         "rows": [row("occlusion", 150.0, 500.0, 0.30), row("integrated_gradients", 600.0, 2000.0, 0.21),
                  row("gradient_x_input", 50.0, 90.0, 0.04)]}
    out = bench.render_explain_methods(e)
    assert out[1].startswith("| method |") and len(out) == 6
    assert "| occlusion (served default) | 150 / 500 ms | 0.300 (0.070) | 0.090 (0.270) | yes |" in out
    assert out[4].endswith("| NO (slow) |") and out[5].endswith("| NO (less faithful) |")
    assert bench.render_explain_methods({"error": "int8 lean could not be loaded"}) == [
        "Explanation methods: unavailable (int8 lean could not be loaded)"]
    assert bench.render_explain_methods(None) == []
