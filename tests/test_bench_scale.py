"""tools/bench_scale.py --quick: the scale benchmark's phases run end to end on a tiny index."""

from __future__ import annotations

from conftest import load_tool


def test_quick_runs_every_phase(tmp_path, capsys):
    bench = load_tool("bench_scale")
    out = tmp_path / "r.json"
    assert bench.main(["--quick", "--videos", "60", "--out", str(tmp_path / "s"),
                       "--json", str(out)]) == 0
    import json

    record = json.loads(out.read_text())
    (r,) = record["sizes"]
    assert record["kind"] == "bench_scale" and record["conditions"]["load_after"] is not None
    assert r["rows"] == 180
    assert {"index+plan", "write", "read epoch block", "verify", "extend +2"} <= set(r)
    assert "| 60 | 180 |" in capsys.readouterr().out


def test_parquet_adds_the_export_phase_and_its_size(tmp_path, capsys):
    import json

    import pytest

    pytest.importorskip("pyarrow")
    bench = load_tool("bench_scale")
    out = tmp_path / "r.json"
    assert bench.main(["--quick", "--videos", "60", "--parquet", "--out", str(tmp_path / "s"),
                       "--json", str(out)]) == 0
    (r,) = json.loads(out.read_text())["sizes"]
    assert "export parquet" in r and r["parquet_mib"] > 0
    assert "| 60 | 180 |" in capsys.readouterr().out
