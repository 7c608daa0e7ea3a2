"""The speed benchmarks' own arithmetic and plumbing (tools/bench_sweep.py, bench_cache.py,
bench_data.py): closed forms, the split of a run into its phases, and tiny real runs."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from conftest import load_tool
import torch

bench_sweep, bench_cache, bench_data = (load_tool(n) for n in ("bench_sweep", "bench_cache",
                                                              "bench_data"))


def test_sweep_prediction_closed_form():
    # N = 9, V = E: online 9 (D + T + S), cached (D + T) + D + 9 S
    costs = {"D": 1.0, "T": 4.0, "S": 2.0, "D_cpu": 2.0, "T_cpu": 8.0, "S_cpu": 4.0}
    wall = bench_sweep.predicted_speedup(costs, runs=9, views=2, epochs=2)
    assert wall["online_per_clip_epoch_s"] == 63.0 and wall["cached_per_clip_epoch_s"] == 24.0
    assert wall["speedup"] == 63.0 / 24.0
    cpu = bench_sweep.predicted_speedup(costs, runs=9, views=2, epochs=2, suffix="_cpu")
    assert cpu["cached_per_clip_epoch_s"] == 48.0
    # fewer views than epochs: the build's share shrinks
    assert bench_sweep.predicted_speedup(costs, runs=9, views=1, epochs=2)[
        "cached_per_clip_epoch_s"] == 2.5 + 1.0 + 18.0


def test_sweep_phases_split_setup_loops_validation_writes(monkeypatch):
    """Two epochs; the fake clock advances 1 s per reading (CPU 0.5 s): setup is the start to
    the first epoch's start, loops end at each epoch's last step, an epoch end's remainder
    is validation (as the records say, capped) and writes."""
    ticks = itertools.count()
    monkeypatch.setattr(bench_sweep.Phases, "_now",
                        staticmethod(lambda: (float(t := next(ticks)), t / 2)))
    ph = bench_sweep.Phases()                                   # t = 0
    ev = lambda kind, val=None: SimpleNamespace(  # noqa: E731
        kind=kind, records={} if val is None else {"a": {"val_time_s": val}})
    for _ in range(2):
        ph(ev("epoch_start"))                                   # t = 1, 5
        ph(ev("step")), ph(ev("step"))                          # t = 2, 3 / 6, 7
        ph(ev("epoch_end", 0.25))                               # t = 4, 8
    out = ph.split()                                            # t = 9
    assert out["setup"] == 1.0 and out["loop"] == 4.0 and out["validation"] == 0.5
    assert out["writes"] == 1.5 and out["finish"] == 1.0 and out["total"] == 9.0
    assert out["loop_cpu"] == 2.0 and out["epoch_ends_cpu"] == 1.0 and out["total_cpu"] == 4.5
    assert out["setup"] + out["loop"] + out["validation"] + out["writes"] + out["finish"] == 8.0


def test_cache_bound_closed_form():
    b = bench_cache.build_bound(forward=10.0, decode=40.0, workers=2)
    assert b["separate"] == 10.0 and b["shared_cores"] == 8.0
    assert bench_cache.build_bound(forward=100.0, decode=30.0, workers=2)["separate"] == 60.0


def test_cache_clock_excludes_startup_and_tail(monkeypatch):
    times = iter([0.0, 3.0, 4.0, 5.0, 7.0])
    monkeypatch.setattr(bench_cache.time, "perf_counter", lambda: next(times))
    clock = bench_cache.BuildClock()                            # 0
    clock.on_start(12)
    for _ in range(3):
        clock.progress(4)                                       # 3, 4, 5
    out = clock.split(end=next(times))                          # 7
    assert out == {"startup_s": 3.0, "steady_s": 2.0, "tail_s": 2.0, "steady_views": 8,
                   "steady_views_s": 4.0}


def test_cache_bench_build_runs_on_a_tiny_teacher(synth_root, tmp_path):
    torch.set_num_threads(1)
    out = bench_cache.bench_build("vfl-nano", root=synth_root, work=tmp_path, size=32, frames=4,
                                  batch=4, workers=0, views=1, threads=1,
                                  opts={"embed_dim": 8, "depths": [1, 1, 1, 1]})
    assert out["views"] == 8 and out["startup_s"] > 0 and out["steady_s"] > 0
    assert out["bound_views_s"]["shared_cores"] < min(out["forward_only_views_s"],
                                                      out["decode_views_s"])
    assert out["cpu_s_per_view"]["build_steady"] > 0 and out["cpu_efficiency"] > 0
    assert out["threads"] == 1 and len(out["forward_only_before_after_views_s"]) == 2
    assert out["forward_only_views_s"] == pytest.approx(
        sum(out["forward_only_before_after_views_s"]) / 2, abs=0.02)


def test_cache_bench_decode_once_writes_its_numbers_and_conditions(tmp_path):
    import json

    from dvfl_cache.data.synth import h264_available

    if not h264_available():
        pytest.skip("this PyAV has no libx264 encoder")
    out = tmp_path / "r" / "decode_once.json"
    bench_cache.main(["--decode-once", "3", "--quick", "--json", str(out)])
    res = json.loads(out.read_text())
    (run,) = res["result"]["runs"]
    assert run["views_per_video"] == 3 and run["stores_bit_identical"] is True
    assert run["build_per_view"]["rows"] == run["build_once"]["rows"] == 6
    cpu = run["in_process_cpu_s_per_view"]
    assert cpu["per_view"] > 0 and cpu["once"] > 0
    assert cpu["ratio"] == pytest.approx(cpu["once"] / cpu["per_view"], rel=0.01)
    videos = res["result"]["videos"]["each"]
    assert videos[0]["codec"] == "h264" and videos[0]["keyframes_at"][:2] == [0, 30]
    cond = res["conditions"]
    assert cond["cpu_model"] and cond["packages"]["torch"] and "date_utc" in cond
    assert len(res["load_average_start"]) == 3


def test_data_bench_measures_the_trainers_loader(synth_index):
    from dvfl_cache.data.views import ViewSampler

    sampler = ViewSampler(num_frames=4, seed=0)
    items = bench_data.clip_items(len(synth_index), 24)
    raw = bench_data.raw_rate(synth_index, sampler, items, size=None)
    u8 = bench_data.loader_rate(synth_index, sampler, items, workers=0, size=32, batch=2,
                                as_uint8=True)
    u8_w1 = bench_data.loader_rate(synth_index, sampler, items, workers=1, size=32, batch=2,
                                   as_uint8=True)
    # the loader times exactly the clips raw decode does (its warm-up batch apart)
    assert raw["clips"] == u8["clips"] == u8_w1["clips"] == 24
    # the worker's CPU is read while it lives (it ends with the loader)
    assert all(m[k] > 0 for m in (raw, u8, u8_w1) for k in ("clips_per_s", "clips_per_cpu_s",
                                                             "cpu_ms", "main_ms"))


def test_data_bench_clip_items_are_passes_over_the_videos():
    assert bench_data.clip_items(3, 7) == ((0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1),
                                           (0, 2))


def test_data_bench_ratios_are_taken_within_rounds():
    """Two rounds where the machine ran twice as fast in the second: every ratio to raw
    decode is the same within each round, so the summary's ratio has no spread."""
    def m(rate, cpu_rate):
        return {"clips_per_s": rate, "clips_per_cpu_s": cpu_rate, "cpu_ms": 1e3 / cpu_rate,
                "main_ms": 1.0}

    rounds = [{"raw_decode": m(40.0, 40.0), "loader_u8_w1": m(34.0, 36.0),
               "loader_u8_w2": m(60.0, 30.0)},
              {"raw_decode": m(80.0, 80.0), "loader_u8_w1": m(68.0, 72.0),
               "loader_u8_w2": m(120.0, 60.0)}]
    s = bench_data.summarise(rounds)
    assert s["loader_u8_w1"]["per_worker_vs_raw"] == pytest.approx(0.85)
    assert s["loader_u8_w1"]["per_worker_vs_raw_range"] == pytest.approx([0.85, 0.85])
    assert s["loader_u8_w1"]["cpu_vs_raw"] == pytest.approx(0.9)
    assert s["loader_u8_w2"]["per_worker_vs_raw"] == pytest.approx(0.75)  # per worker
    assert s["loader_u8_w1"]["clips_per_s"] == 51.0  # median of the two rounds
    assert s["loader_u8_w1"]["clips_per_s_range"] == [34.0, 68.0]
