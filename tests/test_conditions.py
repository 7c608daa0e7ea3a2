"""tools/_conditions.py: every benchmark records the conditions it ran under."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import load_tool

conditions = load_tool("_conditions")
TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_start_and_finish_record_machine_load_openmp_versions_commit(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    cond = conditions.start("bench_x", ["--quick"])
    assert cond["command"] == "python tools/bench_x.py --quick"
    assert cond["openmp_env"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert cond["openmp_env"]["GOMP_SPINCOUNT"] is None
    assert cond["cores"] >= 1 and len(cond["load_before"]) == 3
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=TOOLS, capture_output=True, text=True)
    assert cond["git_commit"] == (git.stdout.strip() if git.returncode == 0 else None)
    assert cond["packages"]["numpy"] and cond["packages"]["click"]
    assert cond["date_utc"].endswith("+00:00") and cond["load_after"] is None
    done = conditions.finish(cond)
    assert len(done["load_after"]) == 3 and done["end_utc"] >= done["date_utc"]
    rec = conditions.record("bench_x", {"speedup": 2.0}, cond)
    assert rec["kind"] == "bench_x" and rec["source"] == "tool" and rec["speedup"] == 2.0
    assert rec["conditions"]["load_after"] is not None
    json.dumps(rec)


def test_cpu_model_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU @ 2.00GHz\n\n"
                    "processor\t: 1\nmodel name\t: Test CPU @ 2.00GHz\n")
    assert conditions.cpu_model(info) == "Test CPU @ 2.00GHz"


def test_unknown_conditions_are_null_not_invented():
    cond = conditions.unknown(date_utc="2026-12-07T09:06Z", cores=2)
    assert cond["cores"] == 2 and cond["cpu_model"] is None and cond["git_commit"] is None
    assert set(cond) == set(conditions.start("bench_x", []))


def test_long_runs_keep_the_conditions_of_every_call(tmp_path):
    stages = load_tool("_stages")
    rec = stages.Stages(tmp_path, tmp_path / "out.json", {"args": {"a": 1}}, kind="bench_y",
                        argv=["--work", str(tmp_path)])
    rec.run("one", lambda: {"x": 1})
    again = stages.Stages(tmp_path, None, {"args": {"a": 1}}, kind="bench_y")
    again.run("two", lambda: None)
    data = json.loads((tmp_path / "progress.json").read_text())
    assert data["kind"] == "bench_y" and data["source"] == "tool"
    assert len(data["calls"]) == 2 and data["calls"][0]["command"].endswith(str(tmp_path))
    assert data["conditions"]["load_after"] is not None
    assert json.loads((tmp_path / "out.json").read_text())["conditions"]["cores"] >= 1


def test_every_benchmark_writes_its_conditions():
    """Each tools/bench_*.py (and gpu_check.py) goes through the one helper: directly, or via
    _stages.Stages with its kind."""
    for path in sorted(TOOLS.glob("bench_*.py")) + [TOOLS / "gpu_check.py"]:
        text = path.read_text()
        direct = "_conditions.start(" in text and "_conditions.record(" in text
        staged = f'kind="{path.stem}"' in text and "Stages(" in text
        assert direct or staged, f"{path.name} does not record its conditions"


def test_bench_codecs_writes_its_numbers_and_conditions(tmp_path):
    bench = load_tool("bench_codecs")
    out = tmp_path / "codecs.json"
    rec = bench.main(["--rows", "300", "--speed-rows", "2000", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["kind"] == "bench_codecs" and data["source"] == "tool"
    assert data["conditions"]["load_after"] is not None and data["rows_per_set"] == 300
    assert len(data["logits"]) == 4 * 6 and {r["form"] for r in data["features"]} == {
        "float16", "q8-affine"}
    assert [s["rows"] for s in data["speed"]] == [2000, 2000]
    assert data["logits"] == json.loads(json.dumps(rec["logits"], default=float))
