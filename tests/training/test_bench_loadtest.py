"""The reports of `make bench` and `make loadtest`, on fake figures (no server, no model)."""

from __future__ import annotations

import pytest

from serving import bench, loadtest

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
